"""Engine self-test: every available backend against the reference and the golden vectors.

`run_selftest` recomputes a few loops (SPEC 1) on each usable backend and compares the
leaves with the slow reference (`reference.py`) and with the four shared golden vectors of
HC-GEMM-v1, embedded below so the check works on an installed package. It returns data;
the CLI decides how to show it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hashcloud.engine.backends import BackendChoice, select_backend
from hashcloud.engine.gemm import compute_leaf
from hashcloud.engine.golden import GOLDEN_LEAVES
from hashcloud.engine.mining import Engine
from hashcloud.engine.reference import reference_leaf
from hashcloud.errors import BackendUnavailable, EngineError
from hashcloud.types import validate_n

__all__ = ["GOLDEN_LEAVES", "SELFTEST_SEED", "SelftestResult", "run_selftest"]

SELFTEST_SEED = "5e1f7e57c0ffee"
# Above this size the pure-Python reference is too slow; the plain NumPy path stands in.
_REFERENCE_MAX_N = 256


@dataclass(frozen=True, slots=True)
class SelftestResult:
    """Outcome for one backend: `ok` iff every check passed (or it was skipped under
    "auto"); `failures` says which did not."""

    backend: str
    device: str
    reason: str
    ok: bool
    checks: int
    failures: tuple[str, ...]
    seconds: float
    skipped: bool = False
    """True when "auto" could not run this backend; `reason` says why and the fix."""


def _backends(backend: str) -> list[BackendChoice | SelftestResult]:
    """What to check: "numpy" or "cupy" alone (an unusable cupy raises
    `BackendUnavailable` with the reason and the fix), or for "auto" NumPy plus CuPy when a
    device works, else a skipped CuPy entry saying why."""
    if backend == "numpy":
        return [select_backend("numpy")]
    if backend == "cupy":
        return [select_backend("cupy")]
    if backend != "auto":
        raise EngineError(f"unknown backend {backend!r} (choose from auto, numpy, cupy)")
    choices: list[BackendChoice | SelftestResult] = [select_backend("numpy")]
    try:
        choices.append(select_backend("cupy"))
    except BackendUnavailable as exc:
        choices.append(SelftestResult("cupy", "-", str(exc), True, 0, (), 0.0, skipped=True))
    return choices


def _check_backend(choice: BackendChoice, n: int, loops: int,
                   explicit: bool) -> SelftestResult:
    """Run the golden vectors and `loops` loops of size n on one backend. A backend that
    cannot start is a failure (explicit request) or a skip with the reason ("auto")."""
    t0 = time.perf_counter()
    failures: list[str] = []
    checks = 0
    try:
        engine = Engine(choice, n=n)
    except BackendUnavailable as exc:
        if explicit:
            raise
        return SelftestResult(choice.name, choice.device, str(exc), True, 0, (), 0.0,
                              skipped=True)
    reason = engine.reason
    for seed, i, size, leaf_hex in GOLDEN_LEAVES:
        with Engine(choice, n=size) as golden_engine:
            got = golden_engine.compute_batch(seed, i, 1)[0].hex()
        checks += 1
        if got != leaf_hex:
            failures.append(f"golden vector {seed[:8]}..:{i} n={size}: leaf mismatch")
    with engine:
        leaves = engine.compute_batch(SELFTEST_SEED, 0, loops)
    for i, got in enumerate(leaves):
        want = (reference_leaf(SELFTEST_SEED, i, n) if n <= _REFERENCE_MAX_N
                else compute_leaf(SELFTEST_SEED, i, n))
        checks += 1
        if got != want:
            failures.append(f"loop {i} n={n}: leaf differs from the reference")
    return SelftestResult(choice.name, choice.device, reason, not failures, checks,
                          tuple(failures), time.perf_counter() - t0)


def run_selftest(n: int = 64, loops: int = 4, backend: str = "auto") -> list[SelftestResult]:
    """Check backends (SPEC 1): golden vectors plus `loops` loops of size n.

    `backend` "auto" checks NumPy and, when a device works, CuPy (else a skipped CuPy
    entry with the reason); "numpy" or "cupy" checks that one and raises
    `BackendUnavailable` (reason and fix) if it cannot run. Raises `EngineError` for an
    invalid `n` or `loops`; a wrong leaf is reported in the result, not raised.
    """
    n = validate_n(n)
    if isinstance(loops, bool) or not isinstance(loops, int) or loops < 1:
        raise EngineError(f"loops must be a positive integer, got {loops!r}")
    out = []
    for item in _backends(backend):
        if isinstance(item, SelftestResult):
            out.append(item)
        else:
            out.append(_check_backend(item, n, loops, explicit=backend != "auto"))
    return out

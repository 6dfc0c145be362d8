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
from hashcloud.engine.mining import Engine
from hashcloud.engine.reference import reference_leaf
from hashcloud.errors import BackendUnavailable, EngineError
from hashcloud.types import validate_n

__all__ = ["GOLDEN_LEAVES", "SELFTEST_SEED", "SelftestResult", "run_selftest"]

# (seed, i, n, leaf) from the shared vectors `spec_v1.json`, key "gemm" (SPEC 1).
_ZERO_SEED = "0" * 64
_SHA_TEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
GOLDEN_LEAVES: tuple[tuple[str, int, int, str], ...] = (
    (_ZERO_SEED, 0, 64, "5add7eac8d79372f49b36d59ae2f5aaee3cdf42467526ed0dd228b82234d9c91"),
    (_ZERO_SEED, 1, 64, "5429718d15f99ace6a683ec4e86b62df1c2c6ea3070d7e9783e2cdc2945cca69"),
    (_SHA_TEST, 7, 128, "e4f3f646ef741dee3073e40beab61c87b8558d4d5633fc128e6a83ade18b0a67"),
    (_SHA_TEST, 12345, 256, "23c61fc3e07f087472cf0f29460b3512dabca12a37c7775c41406f9658298b64"),
)
SELFTEST_SEED = "5e1f7e57c0ffee"
# Above this size the pure-Python reference is too slow; the plain NumPy path stands in.
_REFERENCE_MAX_N = 256


@dataclass(frozen=True, slots=True)
class SelftestResult:
    """Outcome for one backend: `ok` iff every check passed; `failures` says which did not."""

    backend: str
    device: str
    reason: str
    ok: bool
    checks: int
    failures: tuple[str, ...]
    seconds: float


def _available_backends() -> list[BackendChoice]:
    """NumPy always, CuPy when `select_backend("cupy")` finds a working device."""
    choices = [select_backend("numpy")]
    try:
        choices.append(select_backend("cupy"))
    except BackendUnavailable:
        pass
    return choices


def _check_backend(choice: BackendChoice, n: int, loops: int) -> SelftestResult:
    """Run the golden vectors and `loops` loops of size n on one backend."""
    t0 = time.perf_counter()
    failures: list[str] = []
    checks = 0
    for seed, i, size, leaf_hex in GOLDEN_LEAVES:
        with Engine(choice, n=size) as engine:
            got = engine.compute_batch(seed, i, 1)[0].hex()
        checks += 1
        if got != leaf_hex:
            failures.append(f"golden vector {seed[:8]}..:{i} n={size}: leaf mismatch")
    with Engine(choice, n=n) as engine:
        leaves = engine.compute_batch(SELFTEST_SEED, 0, loops)
    for i, got in enumerate(leaves):
        want = (reference_leaf(SELFTEST_SEED, i, n) if n <= _REFERENCE_MAX_N
                else compute_leaf(SELFTEST_SEED, i, n))
        checks += 1
        if got != want:
            failures.append(f"loop {i} n={n}: leaf differs from the reference")
    return SelftestResult(choice.name, choice.device, choice.reason, not failures, checks,
                          tuple(failures), time.perf_counter() - t0)


def run_selftest(n: int = 64, loops: int = 4) -> list[SelftestResult]:
    """Check every available backend (SPEC 1): golden vectors plus `loops` loops of size n.

    Returns one `SelftestResult` per backend (NumPy first). Raises `EngineError` for an
    invalid `n` or `loops`; a wrong leaf is reported in the result, not raised.
    """
    n = validate_n(n)
    if isinstance(loops, bool) or not isinstance(loops, int) or loops < 1:
        raise EngineError(f"loops must be a positive integer, got {loops!r}")
    return [_check_backend(choice, n, loops) for choice in _available_backends()]

"""Stratified sample indices for the M-PoC audit (SPEC 3).

After a commitment the verifier draws `s` indices, one uniformly from each of `s` equal strata
`[floor(j*L/s), floor((j+1)*L/s))` of `[0, L)`. A node draws them from a CSPRNG
(`random_indices`); an offline self-benchmark derives them from its own Merkle root
(`offline_indices`, grindable, so never rewarded). `check_stratified` is what verifiers run on
any list of indices they are handed.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from random import Random

from hashcloud.errors import ProofError
from hashcloud.params import MAX_S_MAX

__all__ = [
    "DEFAULT_S_MAX",
    "MIN_SAMPLES",
    "SAMPLE_FRACTION_DENOMINATOR",
    "check_stratified",
    "offline_indices",
    "random_indices",
    "sample_count",
    "strata",
]

#: Default cap on `s`; bounds the reveal's bandwidth (SPEC 3).
DEFAULT_S_MAX = MAX_S_MAX
#: Floor on `s` for runs of at least this many loops (SPEC 3: `max(10, ...)`).
MIN_SAMPLES = 10
#: `s` is at least 1% of the loops: `ceil(loops / 100)` (SPEC 3: `ceil(0.01 * loops)`).
SAMPLE_FRACTION_DENOMINATOR = 100

# Domain tag of the offline (Fiat-Shamir) index derivation (SPEC 3).
_OFFLINE_TAG = "hc-fs:"


def _require_int(value: object, what: str, minimum: int) -> int:
    """Return `value` if it is an int (not bool) at least `minimum`, else raise ProofError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{what} must be an integer")
    if value < minimum:
        raise ProofError(f"{what} must be at least {minimum}")
    return value


def _check_loops_and_s(loops: int, s: int) -> None:
    """Require `1 <= s <= loops` so that every stratum is non-empty."""
    _require_int(loops, "loops", 1)
    _require_int(s, "sample count", 1)
    if s > loops:
        raise ProofError(f"sample count {s} exceeds loops {loops}")


def sample_count(loops: int, s_max: int = DEFAULT_S_MAX) -> int:
    """Default number of samples `s = min(loops, max(10, ceil(0.01 * loops)), s_max)` (SPEC 3).

    The ceiling is taken in exact integer arithmetic (`0.01 * loops` is not exact in binary
    floating point).
    """
    _require_int(loops, "loops", 1)
    _require_int(s_max, "s_max", 1)
    one_percent = -(-loops // SAMPLE_FRACTION_DENOMINATOR)  # ceil(loops / 100)
    return min(loops, max(MIN_SAMPLES, one_percent), s_max)


def strata(loops: int, s: int) -> list[tuple[int, int]]:
    """The `s` strata `[floor(j*L/s), floor((j+1)*L/s))` of `[0, loops)` (SPEC 3).

    With `1 <= s <= loops` every stratum is non-empty and they tile `[0, loops)` in order.
    """
    _check_loops_and_s(loops, s)
    return [(j * loops // s, (j + 1) * loops // s) for j in range(s)]


def offline_indices(merkle_root: bytes, loops: int, s: int) -> list[int]:
    """Indices of an offline proof, derived from its own root (SPEC 3).

    For stratum j: `lo_j + int.from_bytes(SHA256(ascii("hc-fs:" + merkle_root_hex + ":" +
    str(j))), "big") % (hi_j - lo_j)`, with `merkle_root_hex` the root's `"0x"` hex. A miner
    can grind these by re-rolling its root, which is why nodes never reward offline proofs.
    """
    if not isinstance(merkle_root, bytes) or len(merkle_root) != 32:
        raise ProofError("merkle root must be 32 bytes")
    merkle_root_hex = "0x" + merkle_root.hex()
    indices = []
    for j, (lo, hi) in enumerate(strata(loops, s)):
        digest = hashlib.sha256(f"{_OFFLINE_TAG}{merkle_root_hex}:{j}".encode("ascii")).digest()
        indices.append(lo + int.from_bytes(digest, "big") % (hi - lo))
    return indices


def random_indices(loops: int, s: int, rng: Random | None = None) -> list[int]:
    """One uniformly random index per stratum, in stratum order (SPEC 3).

    `rng` defaults to a fresh `secrets.SystemRandom()` (the OS CSPRNG): the node's challenge
    indices must be unpredictable to the miner. Tests may pass a seeded `random.Random`.
    """
    rng = secrets.SystemRandom() if rng is None else rng
    return [rng.randrange(lo, hi) for lo, hi in strata(loops, s)]


def check_stratified(indices: Sequence[int], loops: int, s: int) -> None:
    """Raise ProofError unless `indices` holds exactly one index per stratum, in order (SPEC 3).

    This rejects a wrong count, out-of-range or non-integer entries, duplicates and any
    ordering other than stratum order (strata are disjoint and increasing, so one-per-stratum
    in order also means strictly increasing and duplicate-free).
    """
    bounds = strata(loops, s)
    if len(indices) != s:
        raise ProofError(f"expected {s} sample indices, got {len(indices)}")
    for j, (index, (lo, hi)) in enumerate(zip(indices, bounds, strict=True)):
        if isinstance(index, bool) or not isinstance(index, int):
            raise ProofError(f"sample index {j} is not an integer")
        if not lo <= index < hi:
            raise ProofError(f"sample index {j} = {index} outside its stratum [{lo}, {hi})")

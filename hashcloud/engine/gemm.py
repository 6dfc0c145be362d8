"""HC-GEMM-v1, the deterministic work of one loop (SPEC 1), over an array module `xp`.

Every step is written once against an array module `xp` (NumPy or CuPy) with in-place
ufuncs on preallocated buffers, so the NumPy test-suite exercises the same lines the GPU
runs. The pipeline of one loop `i` is:

1. `loop_seed` / `loop_key` (SPEC 1.1-1.2), on the host with `hashlib`;
2. SplitMix64 words in uint64 (SPEC 1.3), entries `(b & 0x7F) - 64` written straight into
   float32 (SPEC 1.4-1.5);
3. `C = A @ B` in float32, exact by SPEC 1.6, then converted to int32;
4. fmix32 row digests in uint32, summed as uint64 (SPEC 1.7);
5. `output = u64le(d_0) || ...` (SPEC 1.8) and `leaf = SHA256(loop_seed || output)`
   (SPEC 1.9), on the host.

This module holds the formulas only: the building blocks plus simple allocating wrappers
(`generate_operands`, `row_digests`, `compute_leaf`, the reference every
backend is compared with). The mining pipelines live in the backend modules
(`numpy_backend`, `cupy_backend`), chosen through the registry in `backends`, and
`mining.Engine` drives them. The chunked CPU pipeline and the SPEC 3 v1.1 row-audit paths
(`loop_output`, `row_digests_of`) live in `rows`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from hashcloud.errors import EngineError
from hashcloud.params import DEFAULT_N
from hashcloud.types import validate_n, validate_seed

__all__ = [
    "column_mix",
    "compute_leaf",
    "digests_to_output",
    "entries_into",
    "generate_operands",
    "leaf_hash",
    "loop_key",
    "loop_keys",
    "loop_seed",
    "row_digests",
    "row_digests_into",
    "splitmix64_into",
    "validate_range",
    "word_counters",
]


# SplitMix64 constants (SPEC 1.3).
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
SPLITMIX_M1 = 0xBF58476D1CE4E5B9
SPLITMIX_M2 = 0x94D049BB133111EB
# fmix32 constants (SPEC 1.7).
FMIX_COLUMN = 0x9E3779B1
FMIX_M1 = 0x85EBCA6B
FMIX_M2 = 0xC2B2AE35

# Each uint64 byte b becomes (b & 0x7F) - 64 (SPEC 1.4): mask all 8 bytes of a word at once.
_BYTE_MASK = 0x7F7F7F7F7F7F7F7F
_BYTE_ADD = 0x4040404040404040
_BYTE_SIGN = 0x8080808080808080

_U64 = np.uint64
_U32 = np.uint32


def validate_range(start: int, count: int) -> None:
    """Check a loop-index range [start, start+count) (SPEC 1: 0-based loop indices)."""
    for name, value in (("start", start), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise EngineError(f"{name} must be a non-negative integer, got {value!r}")


def loop_seed(seed: str, i: int) -> str:
    """`loop_seed_i = seed + ":" + str(i)` (SPEC 1.1), decimal without padding."""
    validate_seed(seed)
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
        raise EngineError(f"loop index must be a non-negative integer, got {i!r}")
    return f"{seed}:{int(i)}"


def loop_key(seed: str, i: int) -> int:
    """`key = int.from_bytes(SHA256(ascii(loop_seed_i))[0:8], "little")` (SPEC 1.2)."""
    digest = hashlib.sha256(loop_seed(seed, i).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little")


def loop_keys(seed: str, start: int, count: int) -> np.ndarray:
    """SPEC 1.2 keys of loops [start, start+count) as a host uint64 array of shape (count,)."""
    validate_range(start, count)
    return np.array([loop_key(seed, i) for i in range(start, start + count)], dtype=_U64)


def word_counters(xp: Any, n_words: int) -> Any:
    """The loop-independent SplitMix64 increments `(t + 1) * gamma mod 2^64`, t < n_words.

    SPEC 1.3's `z = key + (t+1) * gamma` only depends on the loop through `key`, so this
    array is computed once per `n` and each loop costs one add.
    """
    t = xp.arange(1, n_words + 1, dtype=_U64)
    return xp.multiply(t, _U64(SPLITMIX_GAMMA), out=t)


def splitmix64_into(xp: Any, key: Any, counters: Any, out: Any, tmp: Any) -> Any:
    """Write SplitMix64 words `word_t` (SPEC 1.3) for `counters = (t+1)*gamma` into `out`.

    `key` is a uint64 scalar or an array broadcasting against `counters` (e.g. shape
    (b, 1) for a batch of loops); `out` and `tmp` are uint64 buffers of the broadcast
    shape. All arithmetic wraps mod 2^64 in uint64; no allocation happens.
    """
    z = xp.add(counters, key, out=out)
    for shift, mult in ((30, SPLITMIX_M1), (27, SPLITMIX_M2)):
        xp.right_shift(z, _U64(shift), out=tmp)
        xp.bitwise_xor(z, tmp, out=z)
        xp.multiply(z, _U64(mult), out=z)
    xp.right_shift(z, _U64(31), out=tmp)
    return xp.bitwise_xor(z, tmp, out=z)


def entries_into(xp: Any, words: Any, out: Any) -> Any:
    """Turn SplitMix64 words into float32 matrix entries `(b & 0x7F) - 64` (SPEC 1.4).

    Works 8 bytes at a time on `words` (uint64, C-contiguous, last axis of w words, in
    place): with v = b & 0x7F, the byte (v + 0x40) ^ 0x80 is v - 64 as an int8 (v + 0x40
    <= 0xBF never carries into the next byte). Its little-endian bytes (SPEC 1.4's `u64le`
    stream) are then cast as int8 straight into float32 `out` (last axis 8*w): one pass
    over the entries. `words` is clobbered.
    """
    xp.bitwise_and(words, _U64(_BYTE_MASK), out=words)
    xp.add(words, _U64(_BYTE_ADD), out=words)
    xp.bitwise_xor(words, _U64(_BYTE_SIGN), out=words)
    as_int8 = words.view(xp.int8)
    if as_int8.shape != out.shape:
        as_int8 = as_int8.reshape(out.shape)
    xp.copyto(out, as_int8, casting="unsafe")
    return out


def generate_operands(xp: Any, seed: str, start: int, count: int, n: int) -> tuple[Any, Any]:
    """Return the operands `A, B` of loops [start, start+count) (SPEC 1.3-1.5).

    Both are float32 arrays of shape (count, n, n) on `xp`'s device: A is the first n*n
    entries of each loop's stream and B the next n*n, row-major. Allocating; the engine
    uses the same steps on reused buffers.
    """
    n = validate_n(n)
    validate_seed(seed)
    keys = xp.asarray(loop_keys(seed, start, count)).reshape(count, 1)
    n_words = 2 * n * n // 8
    counters = word_counters(xp, n_words)
    words = xp.empty((count, n_words), dtype=_U64)
    tmp = xp.empty_like(words)
    splitmix64_into(xp, keys, counters, words, tmp)
    entries = xp.empty((count, 2 * n * n), dtype=np.float32)
    entries_into(xp, words, entries)
    ab = entries.reshape(count, 2, n, n)
    return ab[:, 0], ab[:, 1]


def column_mix(xp: Any, n: int) -> Any:
    """The per-column term `j * 0x9E3779B1 mod 2^32` of SPEC 1.7, as uint32 of shape (n,)."""
    j = xp.arange(n, dtype=_U32)
    return xp.multiply(j, _U32(FMIX_COLUMN), out=j)


def row_digests_into(
    xp: Any, c: Any, colmix: Any, out: Any, work: Any, tmp: Any, sums: Any = None
) -> Any:
    """Row digests `d_r` (SPEC 1.7) of the exact product `c` written into uint64 `out`.

    `c` is the float32 (or int32) product with rows on the second-to-last axis; `work`
    and `tmp` are uint32 buffers of `c`'s shape, `out` has `c`'s shape without the last
    axis and `sums` (optional) is uint32 of shape (2,) + out.shape. Steps: float32 ->
    int32 (exact integers) reinterpreted as uint32 (two's complement), xor the column
    term, fmix32 in uint32, then the exact uint64 row sum from two uint32 reductions.
    """
    # float32 -> int32 is exact (|C| <= 2^24); the uint32 view is SPEC 1.7's uint32(v).
    xp.copyto(work.view(xp.int32), c, casting="unsafe")
    x = work
    xp.bitwise_xor(x, colmix, out=x)
    xp.multiply(x, _U32(FMIX_M1), out=x)
    xp.right_shift(x, _U32(13), out=tmp)
    xp.bitwise_xor(x, tmp, out=x)
    xp.multiply(x, _U32(FMIX_M2), out=x)
    xp.right_shift(x, _U32(16), out=tmp)
    # Exact sum without widening every element: the final x is (h << 16) | (l ^ h) with
    # h = tmp, so sum(x) = (H << 16) + L where H = sum(h) < 2^28 and L = sum(l ^ h) < 2^28
    # (n <= 4096 terms below 2^16). Both fit uint32, and L = (sum(x) mod 2^32) - (H << 16)
    # mod 2^32, so two wrapping uint32 reductions give the uint64 d_r.
    if sums is None:
        sums = xp.empty((2,) + out.shape, dtype=_U32)
    high, total = sums[0], sums[1]
    xp.add.reduce(tmp, axis=-1, out=high)
    xp.bitwise_xor(x, tmp, out=x)
    xp.add.reduce(x, axis=-1, out=total)
    xp.left_shift(high, _U32(16), out=tmp[..., 0])  # (H << 16) mod 2^32
    xp.subtract(total, tmp[..., 0], out=total)  # L, exactly (wraps back into range)
    xp.copyto(out, high)
    xp.left_shift(out, _U64(16), out=out)
    return xp.add(out, total, out=out)


def row_digests(xp: Any, c: Any) -> Any:
    """Row digests (SPEC 1.7) of product(s) `c` of shape (..., n, n); uint64 (..., n).

    Allocating convenience wrapper around `row_digests_into`.
    """
    work = xp.empty(c.shape, dtype=_U32)
    tmp = xp.empty_like(work)
    out = xp.empty(c.shape[:-1], dtype=_U64)
    return row_digests_into(xp, c, column_mix(xp, c.shape[-1]), out, work, tmp)


def digests_to_output(digests: np.ndarray) -> bytes:
    """`output_i = u64le(d_0) || ... || u64le(d_{n-1})` (SPEC 1.8) from host uint64 digests."""
    return np.ascontiguousarray(digests, dtype="<u8").tobytes()


def leaf_hash(loop_seed_i: str, output: bytes) -> bytes:
    """`leaf_i = SHA256(ascii(loop_seed_i) || output_i)` (SPEC 1.9)."""
    h = hashlib.sha256(loop_seed_i.encode("ascii"))
    h.update(output)
    return h.digest()


def compute_leaf(seed: str, i: int, n: int = DEFAULT_N) -> bytes:
    """Recompute one leaf (SPEC 1) with NumPy: what verifiers and auditors call.

    Simple and allocation-based on purpose (one loop, no threads, no cached state).
    """
    n = validate_n(n)
    ls = loop_seed(seed, i)
    a, b = generate_operands(np, seed, i, 1, n)
    c = np.matmul(a[0], b[0])
    digests = row_digests(np, c)
    return leaf_hash(ls, digests_to_output(digests))

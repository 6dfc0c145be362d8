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

`Engine` chains these steps over preallocated buffers for mining; the module-level
functions are the building blocks plus simple allocating wrappers (`generate_operands`,
`row_digests`, `compute_leaves`, `compute_leaf`).
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from hashcloud.engine.backends import BackendChoice, cpu_core_count, select_backend
from hashcloud.errors import EngineError

__all__ = [
    "DEFAULT_N",
    "Engine",
    "MAX_N",
    "MIN_N",
    "column_mix",
    "compute_leaf",
    "compute_leaves",
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
    "suggested_batch_size",
    "validate_n",
    "validate_seed",
    "word_counters",
]

DEFAULT_N = 1024
MIN_N = 64
MAX_N = 4096

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
_SEED_RE = re.compile(r"[0-9a-f]+")


def validate_n(n: int) -> int:
    """Return `n` if it is a legal matrix size (SPEC 1: multiple of 64, 64..4096).

    Raises `EngineError` otherwise (including for bools and non-integers).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise EngineError(f"n must be an integer, got {type(n).__name__}")
    n = int(n)
    if n < MIN_N or n > MAX_N or n % 64:
        raise EngineError(f"n must be a multiple of 64 in [{MIN_N}, {MAX_N}], got {n}")
    return n


def validate_seed(seed: str) -> str:
    """Return `seed` if it is a non-empty lower-case hex string (SPEC 1 inputs).

    Raises `EngineError` otherwise.
    """
    if not isinstance(seed, str) or not _SEED_RE.fullmatch(seed):
        raise EngineError("seed must be a non-empty lower-case hex string")
    return seed


def _validate_range(start: int, count: int) -> None:
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
    _validate_range(start, count)
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


def compute_leaves(
    seed: str, start: int, count: int, n: int = DEFAULT_N, backend: str = "numpy"
) -> list[bytes]:
    """Leaves of loops [start, start+count) (SPEC 1) on `backend` ("auto"/"numpy"/"cupy").

    Runs the batched `Engine` pipeline; returns `count` 32-byte leaves in loop order.
    """
    validate_seed(seed)
    _validate_range(start, count)
    engine = Engine(backend, n=n)
    try:
        return engine.compute_batch(seed, start, count)
    finally:
        engine.close()


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


def suggested_batch_size(n: int, backend: str) -> int:
    """Loops per `Engine.compute_batch` call: about 0.1 s of work on CPU, more on GPU.

    Large enough to amortise per-call overhead, small enough that a mining round stops
    close to its deadline. On CuPy it is also the number of loops per device batch.
    """
    n = validate_n(n)
    target_flop = 1e10 if backend == "numpy" else 2e11
    per_loop = 2.0 * n**3
    return int(min(256, max(1, target_flop // per_loop)))


class _NumpyPipeline:
    """CPU pipeline for SPEC 1 on preallocated buffers, element-wise work in cache-sized chunks.

    One pipeline runs whole loops on one thread; generation and digests run in chunks
    whose scratch stays in cache. (Splitting one loop's element-wise work over threads was
    measured slower: GIL hand-offs between microsecond-scale ufuncs eat the gain. Running
    one pipeline per core, see `_NumpyLanes`, is what overlaps them with GEMMs.) Memory
    is fixed at construction; nothing grows with the number of loops.
    """

    # Measured sweet spots at n=1024 (smaller chunks pay per-ufunc call overhead, larger
    # ones spill out of L2): 32768 words = 256 KiB of uint64 scratch (1 MiB of entries),
    # 128K product elements = 512 KiB of uint32 scratch per digest chunk.
    WORDS_PER_CHUNK = 32768
    DIGEST_ELEMENTS = 131072

    def __init__(self, n: int) -> None:
        self.n = n
        self.n_words = 2 * n * n // 8
        self.counters = word_counters(np, self.n_words)
        self.entries = np.empty(2 * n * n, dtype=np.float32)
        self.a = self.entries[: n * n].reshape(n, n)
        self.b = self.entries[n * n :].reshape(n, n)
        self.c = np.empty((n, n), dtype=np.float32)
        self.digests = np.empty(n, dtype=_U64)
        w = min(self.WORDS_PER_CHUNK, self.n_words)
        self.words = np.empty(w, dtype=_U64)
        self.words_tmp = np.empty(w, dtype=_U64)
        rows = max(1, min(n, self.DIGEST_ELEMENTS // n))
        self.rows_per_chunk = rows
        # Column term tiled to the chunk's shape: a same-shape xor beats a broadcast one.
        self.colmix = np.tile(column_mix(np, n), (rows, 1))
        self.work = np.empty((rows, n), dtype=_U32)
        self.tmp = np.empty((rows, n), dtype=_U32)
        self.sums = np.empty((2, rows), dtype=_U32)

    def generate(self, key: np.uint64) -> None:
        """SPEC 1.3-1.5 into `self.entries`, chunk by chunk."""
        step = len(self.words)
        for w0 in range(0, self.n_words, step):
            w1 = min(self.n_words, w0 + step)
            words = self.words[: w1 - w0]
            splitmix64_into(np, key, self.counters[w0:w1], words, self.words_tmp[: w1 - w0])
            entries_into(np, words, self.entries[8 * w0 : 8 * w1])

    def digest(self) -> None:
        """SPEC 1.7 digests of `self.c` into `self.digests`, chunk by chunk."""
        step = self.rows_per_chunk
        for r0 in range(0, self.n, step):
            r1 = min(self.n, r0 + step)
            k = r1 - r0
            row_digests_into(np, self.c[r0:r1], self.colmix[:k], self.digests[r0:r1],
                             self.work[:k], self.tmp[:k], self.sums[:, :k])

    def leaf(self, seed: str, i: int) -> bytes:
        """Leaf of loop `i` (SPEC 1) on the reused buffers."""
        ls = loop_seed(seed, i)
        self.generate(_U64(loop_key(seed, i)))
        np.matmul(self.a, self.b, out=self.c)  # SPEC 1.6: float32 is exact here
        self.digest()
        return leaf_hash(ls, digests_to_output(self.digests))

    def close(self) -> None:
        """Nothing to release: buffers go with the object."""


LANES_MIN_N = 256
"""Below this size a loop is too short for per-lane thread hand-offs to pay off."""


def default_lanes(n: int) -> int:
    """CPU lanes for size `n`: one per core from `LANES_MIN_N` up, else one."""
    return cpu_core_count() if n >= LANES_MIN_N else 1


class _NumpyLanes:
    """Several `_NumpyPipeline`s, one per core, each running whole loops with a
    single-threaded BLAS, so one lane's generation and digests overlap the others' GEMMs.

    With one lane this is the plain pipeline on the calling thread (the BLAS keeps all its
    threads). With several, BLAS threads are limited to one (threadpoolctl) only while a
    batch runs, so other code in the process keeps the default. Loops are split into
    contiguous ranges, one per lane; leaves come back in loop order.
    """

    def __init__(self, n: int, lanes: int) -> None:
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise EngineError(f"lanes must be a positive integer, got {lanes!r}")
        self.lanes = lanes
        self.pipes = [_NumpyPipeline(n) for _ in range(lanes)]
        self.pool = ThreadPoolExecutor(lanes, "hc-lane") if lanes > 1 else None

    def leaves(self, seed: str, start: int, count: int) -> list[bytes]:
        """Leaves of loops [start, start+count), split over the lanes."""
        if self.pool is None or count == 1:
            pipe = self.pipes[0]
            return [pipe.leaf(seed, i) for i in range(start, start + count)]
        parts = _split(count, min(self.lanes, count))

        def run(k: int) -> list[bytes]:
            lo, hi = parts[k]
            return [self.pipes[k].leaf(seed, i) for i in range(start + lo, start + hi)]

        with threadpool_limits(limits=1, user_api="blas"):
            results = list(self.pool.map(run, range(len(parts))))
        return [leaf for part in results for leaf in part]

    def close(self) -> None:
        """Stop the lane threads."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    """Cut [0, total) into `parts` contiguous, near-equal, non-empty ranges."""
    bounds = [total * k // parts for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts) if bounds[k + 1] > bounds[k]]


class Engine:
    """Mining engine: leaves of consecutive loops of one `n` on one backend (SPEC 1).

    Attributes: `backend` ("numpy" or "cupy"), `device` (human name), `peak_flops`
    (conservative upper bound of the device's FLOP/s, for SPEC 3's rate sanity check),
    `reason` (why this backend), `n`, and `batch_size` (suggested loops per
    `compute_batch` call). Buffers are allocated once, so memory stays bounded however
    many loops a round runs; only the returned 32-byte leaves accumulate at the caller.
    Use as a context manager or call `close()` to release device resources.
    """

    def __init__(
        self,
        backend: str | BackendChoice = "auto",
        n: int = DEFAULT_N,
        batch_size: int | None = None,
        lanes: int | None = None,
    ) -> None:
        choice = backend if isinstance(backend, BackendChoice) else select_backend(backend)
        self.n = validate_n(n)
        self.backend = choice.name
        self.device = choice.device
        self.peak_flops = choice.peak_flops
        self.reason = choice.reason
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise EngineError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size or suggested_batch_size(self.n, self.backend)
        if self.backend == "cupy":
            from hashcloud.engine import cupy_backend  # lazy: CuPy-only module

            self._impl: Any = cupy_backend.CupyPipeline(self.n, self.batch_size)
        else:
            self._impl = _NumpyLanes(self.n, default_lanes(self.n) if lanes is None else lanes)
        self.lanes = getattr(self._impl, "lanes", 1)

    def compute_batch(self, seed: str, start: int, count: int) -> list[bytes]:
        """Leaves of loops [start, start+count) in order (SPEC 1), reusing the buffers."""
        validate_seed(seed)
        _validate_range(start, count)
        return self._impl.leaves(seed, start, count)

    def close(self) -> None:
        """Release device buffers and streams; the engine is unusable afterwards."""
        self._impl.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

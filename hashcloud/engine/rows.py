"""Chunked CPU building blocks of HC-GEMM-v1 (SPEC 1) and the row-audit paths (SPEC 3 v1.1).

SPEC 3 v1.1 replaces the node's whole-leaf recomputation (`O(n^3)`) by a row audit: the
miner reveals a loop's whole `output_i` (SPEC 1.8), the node checks it against the leaf and
recomputes only `k` drawn row digests `d_r` (`O(n^2)` generation plus `O(k n^2)` products).
This module provides both sides:

- `loop_output(seed, i, n)`: the whole `8n`-byte `output_i`, which the miner sends for each
  audited sample (`leaf_hash(loop_seed(seed, i), loop_output(seed, i, n)) ==
  compute_leaf(seed, i, n)`);
- `row_digests_of(seed, i, n, rows)`: `d_r` for the drawn rows only, which the node compares
  with the `r`-th u64 of the revealed output.

Both are built from the same cache-friendly pieces the CPU miner uses (`ChunkScratch`,
`LoopPipeline`; `numpy_backend.NumpyPipeline` is a `LoopPipeline`), so the audit recomputes
exactly what the miner computed, with no second implementation of SPEC 1. The formulas
themselves stay in `gemm`. Every GEMM here runs with a single-threaded BLAS
(`single_threaded_blas`): auditors run many audits in parallel threads, where spinning
multi-threaded BLAS workers only waste CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from threadpoolctl import threadpool_limits

from hashcloud.engine.gemm import (
    SPLITMIX_GAMMA,
    column_mix,
    digests_to_output,
    entries_into,
    leaf_hash,
    loop_key,
    loop_seed,
    row_digests_into,
    splitmix64_into,
    word_counters,
)
from hashcloud.engine.kernels import cpu_accelerator
from hashcloud.errors import EngineError
from hashcloud.types import validate_n

__all__ = [
    "DIGEST_ELEMENTS",
    "WORDS_PER_CHUNK",
    "ChunkScratch",
    "LoopPipeline",
    "chunk_key",
    "loop_leaf",
    "loop_output",
    "row_digests_of",
    "single_threaded_blas",
]

_U64 = np.uint64
_U32 = np.uint32
_MASK64 = (1 << 64) - 1

WORDS_PER_CHUNK = 32768
"""SplitMix64 words per generation chunk: 256 KiB of uint64 scratch, 1 MiB of float32
entries. Measured sweet spot at n=1024..4096: smaller chunks pay per-ufunc call overhead,
larger ones spill out of L2."""

DIGEST_ELEMENTS = 131072
"""Product elements per digest chunk (SPEC 1.7): 512 KiB of uint32 scratch per buffer."""


def chunk_key(key: int, first_word: int) -> np.uint64:
    """`key + first_word * gamma mod 2^64`: the SplitMix64 key of a chunk (SPEC 1.3).

    SPEC 1.3's `z = key + (t + 1) * gamma` equals `chunk_key(key, t0) + (t - t0 + 1) *
    gamma`, so any run of words `t0, t0 + 1, ...` is generated from the small,
    cache-resident counters `(1, 2, ...) * gamma` of one chunk: no stream-sized counter
    array, and a row of A or B (which starts on a word boundary, n being a multiple of 64)
    costs only its own words.
    """
    return _U64((int(key) + int(first_word) * SPLITMIX_GAMMA) & _MASK64)


class ChunkScratch:
    """Chunk-sized scratch buffers for SPEC 1.3-1.5 generation and SPEC 1.7 digests of size n.

    Why: the element-wise passes of SPEC 1 are memory-bound; running them over chunks whose
    scratch stays in L2 (instead of over whole matrices) is what makes the CPU miner and
    the row audit fast. Memory is a few MiB whatever `n` is; nothing grows per call.
    """

    def __init__(self, n: int, words_per_chunk: int | None = None,
                 digest_elements: int | None = None, use_accel: bool = True) -> None:
        # Module defaults are read per construction (tests shrink them for ragged chunks).
        words_per_chunk = WORDS_PER_CHUNK if words_per_chunk is None else words_per_chunk
        digest_elements = DIGEST_ELEMENTS if digest_elements is None else digest_elements
        self.n = n
        w = max(1, min(words_per_chunk, 2 * n * n // 8))
        self.counters = word_counters(np, w)  # (1, 2, ..., w) * gamma; see `chunk_key`
        self.words = np.empty(w, dtype=_U64)
        self.words_tmp = np.empty(w, dtype=_U64)
        rows = max(1, min(n, digest_elements // n))
        self.rows_per_chunk = rows
        # Column term tiled to the chunk's shape: a same-shape xor beats a broadcast one.
        self.colmix = np.tile(column_mix(np, n), (rows, 1))
        self.work = np.empty((rows, n), dtype=_U32)
        self.tmp = np.empty((rows, n), dtype=_U32)
        self.sums = np.empty((2, rows), dtype=_U32)
        # The same C as the GPU kernels, built for this CPU: one fused pass per stage, no
        # temporaries. Optional: None keeps the ufunc chunks below (identical results).
        self.accel = cpu_accelerator() if use_accel else None

    @property
    def words_per_chunk(self) -> int:
        """How many SplitMix64 words one generation chunk holds."""
        return len(self.words)

    def generate_into(self, key: int, first_word: int, out: np.ndarray) -> np.ndarray:
        """Entries of stream words `first_word ..` (SPEC 1.3-1.4) into flat float32 `out`.

        `out` (C-contiguous, length a multiple of 8) receives the `8 * len(out) // 8`
        entries starting at entry `8 * first_word` of loop key `key`'s stream, chunk by
        chunk.
        """
        flat = out.reshape(-1)
        n_words = len(flat) // 8
        if self.accel is not None and flat.dtype == np.float32 and flat.flags.c_contiguous:
            self.accel.hc_cpu_generate_f32(int(key), int(first_word), n_words, flat.ctypes.data)
            return out
        step = self.words_per_chunk
        for w0 in range(0, n_words, step):
            w1 = min(n_words, w0 + step)
            words = self.words[: w1 - w0]
            splitmix64_into(np, chunk_key(key, first_word + w0), self.counters[: w1 - w0],
                            words, self.words_tmp[: w1 - w0])
            entries_into(np, words, flat[8 * w0 : 8 * w1])
        return out

    def digests_into(self, c: np.ndarray, out: np.ndarray) -> np.ndarray:
        """SPEC 1.7 digests of the rows of the exact float32 product `c` (rows x n) into
        uint64 `out`, chunk by chunk (column term from the real column index 0..n-1)."""
        step = self.rows_per_chunk
        rows = c.shape[0]
        if (self.accel is not None and c.dtype == np.float32 and c.flags.c_contiguous
                and out.dtype == _U64 and out.flags.c_contiguous):
            self.accel.hc_cpu_digest_f32(c.ctypes.data, self.n, rows, out.ctypes.data)
            return out
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            k = r1 - r0
            row_digests_into(np, c[r0:r1], self.colmix[:k], out[r0:r1],
                             self.work[:k], self.tmp[:k], self.sums[:, :k])
        return out


class LoopPipeline:
    """One whole loop of SPEC 1 at a time on preallocated buffers, element-wise work in chunks.

    The CPU miner's pipeline (`numpy_backend.NumpyPipeline` subclasses it) and
    `loop_output`'s: generation (SPEC 1.3-1.5) and digests (SPEC 1.7) run over
    `ChunkScratch` chunks, the product (SPEC 1.6) is one float32 GEMM into a reused buffer.
    It leaves the BLAS thread count alone: callers choose (`single_threaded_blas`).
    `WORDS_PER_CHUNK` / `DIGEST_ELEMENTS` are read at construction (tests shrink them to
    exercise ragged chunks). Memory is fixed at construction: `10 n^2` float32-sized bytes.
    """

    WORDS_PER_CHUNK = WORDS_PER_CHUNK
    DIGEST_ELEMENTS = DIGEST_ELEMENTS

    def __init__(self, n: int, use_accel: bool = True) -> None:
        self.n = n
        self.scratch = ChunkScratch(n, self.WORDS_PER_CHUNK, self.DIGEST_ELEMENTS, use_accel)
        self.entries = np.empty(2 * n * n, dtype=np.float32)
        self.a = self.entries[: n * n].reshape(n, n)
        self.b = self.entries[n * n :].reshape(n, n)
        self.c = np.empty((n, n), dtype=np.float32)
        self.digests = np.empty(n, dtype=_U64)

    def generate(self, key: int) -> None:
        """SPEC 1.3-1.5: A and B of the loop with key `key` into `self.entries`."""
        self.scratch.generate_into(key, 0, self.entries)

    def digest(self) -> None:
        """SPEC 1.7 digests of `self.c` into `self.digests`."""
        self.scratch.digests_into(self.c, self.digests)

    def output(self, seed: str, i: int) -> bytes:
        """`output_i` of loop `i` (SPEC 1.8): generate, multiply (exact, SPEC 1.6), digest."""
        key = loop_key(seed, i)
        self.generate(key)
        np.matmul(self.a, self.b, out=self.c)  # SPEC 1.6: float32 is exact here
        self.digest()
        return digests_to_output(self.digests)

    def leaf(self, seed: str, i: int) -> bytes:
        """`leaf_i` of loop `i` (SPEC 1.9) on the reused buffers."""
        return leaf_hash(loop_seed(seed, i), self.output(seed, i))

    def close(self) -> None:
        """Nothing to release: buffers go with the object."""


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: threadpool_limits | None = None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread while any caller is inside; restore it when the last leaves.

    Why: audits (SPEC 3 v1.1) run in many threads at once, where multi-threaded OpenBLAS
    workers spin and waste CPU. The BLAS thread count is process-wide, so a plain
    `threadpool_limits` per thread would race (a thread that entered second saves the
    limited value and restores it last, leaking the limit); this guard counts its users and
    saves / restores the original limits once, under a lock.
    """
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def loop_output(seed: str, i: int, n: int) -> bytes:
    """The whole `8n`-byte `output_i` of loop `i` (SPEC 1.8), as a row audit reveals it.

    Why: in the SPEC 3 v1.1 `rows` audit the miner sends `output` for each audited sample
    after the node names them; it must be what the leaf hashes, i.e.
    `leaf_hash(loop_seed(seed, i), loop_output(seed, i, n)) == compute_leaf(seed, i, n)`.
    Runs the miner's chunked pipeline (`LoopPipeline`) with a single-threaded BLAS.
    Raises `EngineError` for a bad seed, loop index or `n`.
    """
    n = validate_n(n)
    loop_seed(seed, i)  # validates seed and i before any allocation
    pipe = LoopPipeline(n)
    with single_threaded_blas():
        return pipe.output(seed, i)


def loop_leaf(seed: str, i: int, n: int) -> bytes:
    """`leaf_i` recomputed whole (SPEC 1) through the miner's chunked pipeline with one BLAS
    thread: the recompute path of `full` audits and `verify --full` (SPEC 3), so auditors
    running in parallel threads neither oversubscribe the CPU nor spin idle BLAS workers."""
    return leaf_hash(loop_seed(seed, i), loop_output(seed, i, n))


def _validate_rows(rows: Sequence[int], n: int) -> list[int]:
    """`rows` as a list of distinct Python ints in [0, n) (SPEC 3 v1.1), else EngineError."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence | np.ndarray):
        raise EngineError(f"rows must be a sequence of row numbers, got {type(rows).__name__}")
    out = []
    for r in rows:
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)):
            raise EngineError(f"row numbers must be integers, got {r!r}")
        if not 0 <= r < n:
            raise EngineError(f"row {int(r)} is out of range [0, {n})")
        out.append(int(r))
    if len(set(out)) != len(out):
        raise EngineError("row numbers must be distinct")
    return out


def row_digests_of(seed: str, i: int, n: int, rows: Sequence[int]) -> list[int]:
    """Row digests `d_r` (SPEC 1.7) of loop `i` for the given `rows` only, in their order.

    The node's side of the SPEC 3 v1.1 row audit: each must equal the `r`-th u64 of the
    revealed output. Cost `O(n^2)` generation plus `O(k n^2)` arithmetic (k = len(rows))
    instead of a whole `O(n^3)` loop:

    - only the drawn rows of A are generated (row r is entries `r n .. (r+1) n - 1`, i.e.
      words `r n / 8 ..`: n is a multiple of 64, so every row starts on a word boundary);
    - B is generated block by block of rows (one `ChunkScratch` chunk each) and each block
      is multiplied at once into the `(k x n)` float32 accumulator: `C[rows] = sum over
      blocks of A[rows, blk] @ B[blk, :]`. B never exists whole, the block is still in
      cache when it is multiplied, and memory is `O(k n)`. Exact in float32 in any
      summation order (SPEC 1.6), so it equals the miner's one-GEMM product bit for bit.

    BLAS runs single-threaded (`single_threaded_blas`). Raises `EngineError` for a bad
    seed, loop index or `n`, or rows that are not distinct integers in [0, n).
    """
    n = validate_n(n)
    key = loop_key(seed, i)  # validates seed and i
    drawn = _validate_rows(rows, n)
    if not drawn:
        return []
    k = len(drawn)
    row_words = n // 8
    scratch = ChunkScratch(n)
    # Rows of A: one broadcast SplitMix64 call over (k, n/8) words, one key per row.
    keys = np.array([int(chunk_key(key, r * row_words)) for r in drawn], dtype=_U64)
    a_words = np.empty((k, row_words), dtype=_U64)
    a_tmp = np.empty_like(a_words)
    splitmix64_into(np, keys.reshape(k, 1), scratch.counters[:row_words], a_words, a_tmp)
    a_rows = np.empty((k, n), dtype=np.float32)
    entries_into(np, a_words, a_rows)
    # B, one cache-sized block of whole rows at a time, multiplied as it is made.
    block_rows = max(1, scratch.words_per_chunk // row_words)
    block = np.empty(block_rows * n, dtype=np.float32)
    acc = np.empty((k, n), dtype=np.float32)
    part = np.empty((k, n), dtype=np.float32)
    b_first_word = n * n // 8
    with single_threaded_blas():
        for r0 in range(0, n, block_rows):
            r1 = min(n, r0 + block_rows)
            b_blk = block[: (r1 - r0) * n]
            scratch.generate_into(key, b_first_word + r0 * row_words, b_blk)
            b_blk = b_blk.reshape(r1 - r0, n)
            if r0 == 0:
                np.matmul(a_rows[:, r0:r1], b_blk, out=acc)
            else:
                np.matmul(a_rows[:, r0:r1], b_blk, out=part)
                np.add(acc, part, out=acc)
    digests = np.empty(k, dtype=_U64)
    scratch.digests_into(acc, digests)
    return [int(d) for d in digests]

"""The NumPy backend of HC-GEMM-v1 (SPEC 1): CPU pipelines on preallocated buffers.

Always available. `create_pipeline` is the registry's entry point (`backends.load_pipeline`);
the formulas come from `gemm`, so this module adds only buffers, chunking and lanes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from hashcloud.engine.backends import cpu_core_count
from hashcloud.engine.gemm import (
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
from hashcloud.errors import EngineError

__all__ = ["LANES_MIN_N", "NumpyLanes", "NumpyPipeline", "create_pipeline", "default_lanes"]

_U64 = np.uint64
_U32 = np.uint32


class NumpyPipeline:
    """CPU pipeline for SPEC 1 on preallocated buffers, element-wise work in cache-sized chunks.

    One pipeline runs whole loops on one thread; generation and digests run in chunks
    whose scratch stays in cache. (Splitting one loop's element-wise work over threads was
    measured slower: GIL hand-offs between microsecond-scale ufuncs eat the gain. Running
    one pipeline per core, see `NumpyLanes`, is what overlaps them with GEMMs.) Memory
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


class NumpyLanes:
    """Several `NumpyPipeline`s, one per core, each running whole loops with a
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
        self.pipes = [NumpyPipeline(n) for _ in range(lanes)]
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


def create_pipeline(n: int, batch_size: int, lanes: int | None = None) -> NumpyLanes:
    """The registry entry point: `lanes` CPU lanes (default: one per core from n=256)."""
    del batch_size  # CPU lanes take any count per call
    return NumpyLanes(n, default_lanes(n) if lanes is None else lanes)

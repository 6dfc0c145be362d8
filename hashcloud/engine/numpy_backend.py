"""The NumPy backend of HC-GEMM-v1 (SPEC 1): CPU pipelines on preallocated buffers.

Always available. `create_pipeline` is the registry's entry point (`backends.load_pipeline`);
the formulas come from `gemm` and the chunked whole-loop pipeline from `rows` (shared with
the SPEC 3 v1.1 row audit's `loop_output`), so this module adds only lanes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from hashcloud.engine.device import cpu_core_count
from hashcloud.engine.rows import LoopPipeline, single_threaded_blas
from hashcloud.errors import EngineError

__all__ = ["LANES_MIN_N", "NumpyLanes", "NumpyPipeline", "create_pipeline", "default_lanes"]


class NumpyPipeline(LoopPipeline):
    """CPU pipeline for SPEC 1 on preallocated buffers, element-wise work in cache-sized chunks.

    One pipeline runs whole loops on one thread; generation and digests run as one fused C
    pass each where the host kernels build (`kernels.cpu_accelerator`, the GPU kernels'
    source), else in ufunc chunks whose scratch stays in cache (`rows.LoopPipeline`, the
    same code `rows.loop_output` runs for a row audit, SPEC 3 v1.1). (Splitting one loop's
    element-wise work over threads was measured slower: GIL hand-offs between microsecond-
    scale ufuncs eat the gain. Running one pipeline per core, see `NumpyLanes`, is what
    overlaps them with GEMMs.) Memory is fixed at construction; nothing grows with the
    number of loops. Chunk sizes (`WORDS_PER_CHUNK`, `DIGEST_ELEMENTS`) are measured sweet
    spots at n=1024: smaller chunks pay per-ufunc call overhead, larger ones spill out of
    L2.
    """


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
    batch runs (`rows.single_threaded_blas`, safe against concurrent audits), so other code
    in the process keeps the default. Loops are split into contiguous ranges, one per lane;
    leaves come back in loop order.
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
            if self.pool is None:
                return [pipe.leaf(seed, i) for i in range(start, start + count)]
            # A round's first call is one loop: with one BLAS thread too, or the idle
            # OpenBLAS workers would spin for ~100 ms of CPU after it.
            with single_threaded_blas():
                return [pipe.leaf(seed, i) for i in range(start, start + count)]
        parts = _split(count, min(self.lanes, count))

        def run(k: int) -> list[bytes]:
            lo, hi = parts[k]
            return [self.pipes[k].leaf(seed, i) for i in range(start + lo, start + hi)]

        with single_threaded_blas():
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


def create_pipeline(n: int, batch_size: int | None, lanes: int | None = None) -> NumpyLanes:
    """The registry entry point: `lanes` CPU lanes (default: one per core from n=256)."""
    del batch_size  # CPU lanes take any count per call
    return NumpyLanes(n, default_lanes(n) if lanes is None else lanes)

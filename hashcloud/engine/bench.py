"""Engine benchmark: mining rate of HC-GEMM-v1 (SPEC 1) against the bare GEMM it wraps.

`bench` alternates windows of real mining (`Engine.compute_batch`) and of the same float32
n x n GEMM alone on the same device, so both see the same machine state; the ratio says how
much of the device's GEMM speed the full loop (generation, GEMM, digests, hashing) keeps.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from hashcloud.engine.backends import select_backend
from hashcloud.engine.gemm import generate_operands
from hashcloud.engine.mining import Engine
from hashcloud.errors import EngineError
from hashcloud.types import validate_n

__all__ = ["BENCH_SEED", "bench"]

BENCH_SEED = "be7c4"
_WINDOWS = 4


def _synchronize(xp: Any) -> None:
    """Wait for queued device work (no-op on NumPy)."""
    if xp is not np:
        xp.cuda.Device().synchronize()


def _raw_gemm_lanes(a: Any, b: Any, c: Any, lanes: int, window: float) -> int:
    """GEMMs done in `window` s by `lanes` threads, each with a one-thread BLAS."""
    counts = [0] * lanes
    deadline = time.perf_counter() + window

    def run(k: int) -> None:
        out = np.empty_like(c[0])
        while time.perf_counter() < deadline:
            np.matmul(a[0], b[0], out=out)
            counts[k] += 1

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(lanes) as pool:
        list(pool.map(run, range(lanes)))
    return sum(counts)


def bench(backend: str = "auto", n: int = 1024, seconds: float = 10.0,
          lanes: int | None = None) -> dict:
    """Measure mining loops/s and raw GEMM FLOP/s at size n for about `seconds` in total.

    Returns {backend, device, reason, n, lanes, loops, mining_seconds, loops_per_s,
    effective_gflops (2*n^3 per loop), raw_gemm_gflops, ratio}. Mining and the bare GEMM
    alternate in windows. On the CPU the raw GEMM is measured both ways, one GEMM with every
    BLAS thread and one single-threaded GEMM per lane, and the faster one is the baseline, so
    the ratio never flatters the miner.
    """
    n = validate_n(n)
    if not seconds > 0:
        raise EngineError(f"seconds must be positive, got {seconds!r}")
    choice = select_backend(backend)
    if choice.name != "numpy":
        return _bench_gpu(choice, n, seconds)
    xp = choice.xp
    flop = 2.0 * n**3
    with Engine(choice, n=n, lanes=lanes) as engine:
        lanes_used = engine.lanes
        baselines = 2 if (xp is np and lanes_used > 1) else 1
        window = seconds / ((1 + baselines) * _WINDOWS)
        batch = engine.batch_size
        a, b = generate_operands(xp, BENCH_SEED, 0, batch, n)
        c = xp.empty_like(a)
        engine.compute_batch(BENCH_SEED, 0, batch)  # warm-up: caches, kernels, pools
        xp.matmul(a, b, out=c)
        _synchronize(xp)
        loops = gemms = lane_gemms = 0
        mine_time = gemm_time = lane_time = 0.0
        for _ in range(_WINDOWS):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < window:
                engine.compute_batch(BENCH_SEED, loops, batch)
                loops += batch
            mine_time += time.perf_counter() - t0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < window:
                xp.matmul(a, b, out=c)
                _synchronize(xp)
                gemms += batch
            gemm_time += time.perf_counter() - t0
            if baselines == 2:
                t0 = time.perf_counter()
                lane_gemms += _raw_gemm_lanes(a, b, c, lanes_used, window)
                lane_time += time.perf_counter() - t0
    loops_per_s = loops / mine_time
    raw_all = gemms * flop / gemm_time
    raw_lanes = lane_gemms * flop / lane_time if lane_time else 0.0
    raw = max(raw_all, raw_lanes)
    effective = loops_per_s * flop
    return {
        "backend": choice.name,
        "device": choice.device,
        "reason": choice.reason,
        "n": n,
        "lanes": lanes_used,
        "batch_size": batch,
        "loops": loops,
        "mining_seconds": mine_time,
        "loops_per_s": loops_per_s,
        "effective_gflops": effective / 1e9,
        "raw_gemm_gflops": raw / 1e9,
        "raw_gemm_all_threads_gflops": raw_all / 1e9,
        "raw_gemm_per_lane_gflops": raw_lanes / 1e9 if lane_time else None,
        "ratio": effective / raw,
        "peak_gflops": choice.peak_flops / 1e9,
        "percent_of_peak": _percent_of_peak(effective, choice.peaks),
    }


def _percent_of_peak(effective: float, peaks: dict | None) -> dict[str, float]:
    """Effective op/s as a percentage of each path's dense peak (`device.gpu_peaks`)."""
    return {path: 100.0 * effective / peak for path, peak in (peaks or {}).items() if peak}


def _bench_gpu(choice: Any, n: int, seconds: float) -> dict:
    """GPU bench: mine consecutive calls (the ring stays full) for `seconds`, and time the
    chosen GEMM path alone with CUDA events as the raw baseline."""
    flop = 2.0 * n**3
    with Engine(choice, n=n) as engine:
        impl = engine._impl
        batch = engine.batch_size
        engine.compute_batch(BENCH_SEED, 0, batch)  # warm-up (path choice already done)
        loops = batch
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            engine.compute_batch(BENCH_SEED, loops, batch)
            loops += batch
        mine_time = time.perf_counter() - t0
        loops -= batch
        raw_ms = impl.time_gemm(impl.path, n, reps=5)
        stages = impl.stage_report()
        path = impl.path.name
    loops_per_s = loops / mine_time
    effective = loops_per_s * flop
    raw = flop / (raw_ms / 1e3)
    return {
        "backend": choice.name, "device": choice.device, "reason": engine.reason, "n": n,
        "lanes": 1, "batch_size": batch, "loops": loops, "mining_seconds": mine_time,
        "loops_per_s": loops_per_s, "effective_gflops": effective / 1e9,
        "raw_gemm_gflops": raw / 1e9, "ratio": effective / raw,
        "peak_gflops": choice.peak_flops / 1e9, "gemm_path": path,
        "percent_of_peak": _percent_of_peak(effective, choice.peaks),
        "stage_ms": stages["stage_ms"],
    }

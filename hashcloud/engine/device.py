"""Device probes of the engine: CPU cores and name, a usable CUDA device, peak estimates.

This module imports no backend, so both the registry (`backends`) and the backends themselves
(`numpy_backend`) can import it without a cycle. CuPy is only imported here through
`importlib`, lazily, by `probe_cupy`.

GPU peaks come from a per-architecture table (compute capability -> dense ops per clock per
SM for the fp32, tf32, bf16 and int8 paths, checked against published peaks of reference
parts): `hashcloud bench` and scripts/gpu_check.py report percent of peak from it, and the
node's claimed-rate bound (`hashcloud.poc.audit.DEVICE_PEAK_FLOPS`, SPEC 3) is derived from
its fastest entry, so it is never below a real device (a B200's INT8 rate).
"""

from __future__ import annotations

import importlib
import os
import platform
from dataclasses import dataclass
from types import ModuleType

__all__ = [
    "CPU_FLOP_PER_CYCLE",
    "CPU_MAX_HZ",
    "GPU_OPS_PER_CLOCK_PER_SM",
    "REFERENCE_GPUS",
    "CudaDevice",
    "cpu_core_count",
    "cpu_device_name",
    "cpu_peak_flops",
    "fix_for",
    "gpu_arch_ops",
    "gpu_peak_flops",
    "gpu_peaks",
    "max_gpu_peak",
    "probe_cupy",
]

# Estimates for display, generous so that a measured rate reads as a fraction of them.
# CPU: 2 AVX-512 FMA units x 16 float32 lanes x 2 FLOP = 64 FLOP/cycle/core, at 5 GHz
# (above any all-core turbo). AMX/BF16 is not exact for these entries, so it is not counted.
CPU_FLOP_PER_CYCLE = 64
"""Float32 FLOP per cycle per core assumed by `cpu_peak_flops`."""
CPU_MAX_HZ = 5.0e9
"""Clock (Hz) assumed by `cpu_peak_flops`."""
# GPU: dense ops per clock per streaming multiprocessor, by compute capability (major,
# minor), for each exact path of SPEC 1.6: (fp32 CUDA cores, tf32, bf16, int8) tensor cores,
# FP32/INT32 accumulate, no sparsity. 0: the path has no tensor-core support there. Derived
# from the vendor's published dense peaks of the flagship of each architecture (see
# REFERENCE_GPUS): peak = SMs * clock * ops-per-clock-per-SM.
GPU_OPS_PER_CLOCK_PER_SM: dict[tuple[int, int], dict[str, int]] = {
    (7, 0): {"fp32": 128, "tf32": 0, "bf16": 0, "int8": 512},  # V100 (INT8 via dp4a)
    (7, 2): {"fp32": 128, "tf32": 0, "bf16": 0, "int8": 512},  # Xavier
    (7, 5): {"fp32": 128, "tf32": 0, "bf16": 0, "int8": 2048},  # T4, RTX 20
    (8, 0): {"fp32": 128, "tf32": 1024, "bf16": 2048, "int8": 4096},  # A100, A30
    (8, 6): {"fp32": 256, "tf32": 512, "bf16": 1024, "int8": 2048},  # A10, A40, RTX 30
    (8, 7): {"fp32": 256, "tf32": 512, "bf16": 1024, "int8": 2048},  # Orin
    (8, 9): {"fp32": 256, "tf32": 512, "bf16": 1024, "int8": 2048},  # L4, L40, RTX 40
    (9, 0): {"fp32": 256, "tf32": 2048, "bf16": 4096, "int8": 8192},  # H100, H200, GH200
    (10, 0): {"fp32": 256, "tf32": 4096, "bf16": 8192, "int8": 16384},  # B200, GB200
    (10, 3): {"fp32": 256, "tf32": 4096, "bf16": 8192, "int8": 16384},  # B300
    (12, 0): {"fp32": 256, "tf32": 512, "bf16": 1024, "int8": 2048},  # RTX 50, RTX PRO
}
"""Dense ops/clock/SM per path by compute capability (display, bench, sanity bounds)."""

REFERENCE_GPUS: dict[str, tuple[tuple[int, int], int, float, dict[str, float]]] = {
    # name: (compute capability, SMs, boost GHz, published dense peaks in op/s)
    "Tesla V100 SXM2": ((7, 0), 80, 1.53, {"fp32": 15.7e12, "int8": 62.8e12}),
    "Tesla T4": ((7, 5), 40, 1.59, {"fp32": 8.1e12, "int8": 130e12}),
    "A100 SXM": ((8, 0), 108, 1.41, {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12,
                                     "int8": 624e12}),
    "A10": ((8, 6), 72, 1.695, {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12,
                                "int8": 250e12}),
    "L4": ((8, 9), 58, 2.04, {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12,
                              "int8": 242e12}),
    "GeForce RTX 4090": ((8, 9), 128, 2.52, {"fp32": 82.6e12, "int8": 660e12}),
    "H100 SXM": ((9, 0), 132, 1.83, {"tf32": 494e12, "bf16": 989e12, "int8": 1979e12}),
    "H200": ((9, 0), 132, 1.83, {"tf32": 494e12, "bf16": 989e12, "int8": 1979e12}),
    "B200": ((10, 0), 148, 1.86, {"tf32": 1.1e15, "bf16": 2.25e15, "int8": 4.5e15}),
}
"""Published dense peaks of reference parts; the tests check the per-clock table against
them (and the node's claimed-rate bound against the fastest)."""

GPU_PATHS = ("fp32", "tf32", "bf16", "int8")


def gpu_arch_ops(capability: tuple[int, int]) -> dict[str, int]:
    """Ops/clock/SM of `capability`; an unknown one gets the largest known rates (an
    upper-bound estimate: the bound must never be below a real device)."""
    if capability in GPU_OPS_PER_CLOCK_PER_SM:
        return GPU_OPS_PER_CLOCK_PER_SM[capability]
    return {p: max(t[p] for t in GPU_OPS_PER_CLOCK_PER_SM.values()) for p in GPU_PATHS}


def gpu_peaks(capability: tuple[int, int], multiprocessors: int,
              clock_khz: float) -> dict[str, float]:
    """Dense peak op/s per exact path (fp32, tf32, bf16, int8) of one GPU."""
    ops = gpu_arch_ops(capability)
    return {p: float(multiprocessors * clock_khz * 1e3 * ops[p]) for p in GPU_PATHS}


def max_gpu_peak() -> float:
    """The fastest dense exact-GEMM rate among the reference parts (a B200's INT8)."""
    return max(max(peaks.values()) for *_, peaks in REFERENCE_GPUS.values())


@dataclass(frozen=True, slots=True)
class CudaDevice:
    """A CUDA device that answered `probe_cupy`: the CuPy module, a human name, a peak
    estimate (fastest exact path), and per-path dense peaks (`gpu_peaks`)."""

    xp: ModuleType
    name: str
    peak_flops: float
    capability: tuple[int, int] = (0, 0)
    peaks: dict | None = None


def cpu_core_count() -> int:
    """Number of CPU cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cpu_device_name() -> str:
    """A human name for the CPU, e.g. "Intel(R) Xeon(R) Processor (2 cores)"."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "CPU"
    return f"{model} ({cpu_core_count()} cores)"


def cpu_peak_flops(cores: int | None = None) -> float:
    """The engine's estimate of float32 FLOP/s: cores * 64 FLOP/cycle * 5 GHz (for display)."""
    return float((cores or cpu_core_count()) * CPU_FLOP_PER_CYCLE * CPU_MAX_HZ)


def gpu_peak_flops(multiprocessors: int, clock_khz: int,
                   capability: tuple[int, int] = (0, 0)) -> float:
    """The engine's estimate of a GPU's exact-GEMM op/s: its fastest path's dense peak."""
    return max(gpu_peaks(capability, multiprocessors, clock_khz).values())


def probe_cupy() -> tuple[CudaDevice | None, str]:
    """Try CuPy: import, `cuda.is_available()`, a tiny allocation. Returns (device, why-not).

    Never raises: a missing or broken CuPy, no device or a failing CUDA runtime give
    `(None, one-line reason)`; a working device gives `(CudaDevice, "")`.
    """
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        return None, "cupy not installed"
    except Exception as exc:  # a broken CuPy install must not crash "auto"
        return None, f"cupy failed to import ({type(exc).__name__})"
    try:
        if not cupy.cuda.is_available():
            return None, "no CUDA device"
        # A tiny allocation and kernel prove the driver and runtime really work.
        probe = cupy.arange(4, dtype=cupy.float32)
        if float((probe * 2).sum()) != 12.0:
            return None, "CUDA device gave a wrong result"
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        capability = (int(props["major"]), int(props["minor"]))
        peaks = gpu_peaks(capability, int(props["multiProcessorCount"]),
                          _clock_khz(cupy, dev.id, props))
    except Exception as exc:  # CUDARuntimeError & co. have no common base
        return None, f"CUDA not usable ({type(exc).__name__}: {exc})".splitlines()[0]
    return CudaDevice(cupy, f"{name} (GPU {dev.id}, sm_{capability[0]}{capability[1]})",
                      max(peaks.values()), capability, peaks), ""


_ATTR_CLOCK_RATE = 13  # cudaDevAttrClockRate (kHz)
_DEFAULT_CLOCK_KHZ = 2_000_000  # when the runtime no longer reports it


def _clock_khz(cupy: ModuleType, device_id: int, props: dict) -> float:
    """The SM boost clock in kHz (CUDA 13 dropped `clockRate` from the properties)."""
    if props.get("clockRate"):
        return float(props["clockRate"])
    try:
        return float(cupy.cuda.runtime.deviceGetAttribute(_ATTR_CLOCK_RATE, device_id))
    except Exception:
        return float(_DEFAULT_CLOCK_KHZ)


GPU_EXTRA_FIX = "pip install 'hashcloud[gpu]'"
"""The install that brings CuPy and the CUDA libraries a driver-only machine lacks."""


def fix_for(why_not: str) -> str:
    """What a GPU owner should do about a `probe_cupy` / pipeline failure reason."""
    if "not installed" in why_not or "failed to import" in why_not:
        return f"install the GPU extra: {GPU_EXTRA_FIX}"
    if why_not.startswith("no CUDA device"):
        return "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"
    return (f"install the CUDA libraries with the GPU extra ({GPU_EXTRA_FIX}, which pulls "
            "cupy-cuda12x[ctk]) and check the driver (nvidia-smi)")

"""Device probes of the engine: CPU cores and name, a usable CUDA device, peak estimates.

This module imports no backend, so both the registry (`backends`) and the backends themselves
(`numpy_backend`) can import it without a cycle. CuPy is only imported here through
`importlib`, lazily, by `probe_cupy`.

The peak figures are the engine's own estimate of a device's float32/exact-GEMM FLOP/s, shown
to the user (`BackendChoice.peak_flops`, `hashcloud bench`). They are NOT the validator's
bound: the "claimed rate not above the device's peak" check of SPEC 3 uses
`hashcloud.poc.audit.DEVICE_PEAK_FLOPS`.
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
    "GPU_FLOP_PER_CYCLE_PER_SM",
    "CudaDevice",
    "cpu_core_count",
    "cpu_device_name",
    "cpu_peak_flops",
    "gpu_peak_flops",
    "probe_cupy",
]

# Estimates for display, generous so that a measured rate reads as a fraction of them.
# CPU: 2 AVX-512 FMA units x 16 float32 lanes x 2 FLOP = 64 FLOP/cycle/core, at 5 GHz
# (above any all-core turbo). AMX/BF16 is not exact for these entries, so it is not counted.
CPU_FLOP_PER_CYCLE = 64
"""Float32 FLOP per cycle per core assumed by `cpu_peak_flops`."""
CPU_MAX_HZ = 5.0e9
"""Clock (Hz) assumed by `cpu_peak_flops`."""
# GPU: 8192 FLOP/cycle/SM covers every exact path of SPEC 1.6 (dense int8 tensor cores of
# current parts do at most 4096 "ops"/cycle/SM; the factor 2 is head-room), at the boost clock.
GPU_FLOP_PER_CYCLE_PER_SM = 8192
"""Exact-GEMM FLOP per cycle per streaming multiprocessor assumed by `gpu_peak_flops`."""


@dataclass(frozen=True, slots=True)
class CudaDevice:
    """A CUDA device that answered `probe_cupy`: the CuPy module, a human name, a peak estimate."""

    xp: ModuleType
    name: str
    peak_flops: float


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


def gpu_peak_flops(multiprocessors: int, clock_khz: int) -> float:
    """The engine's estimate of exact-GEMM FLOP/s of a GPU: SMs * 8192 FLOP/cycle * clock."""
    return float(multiprocessors * GPU_FLOP_PER_CYCLE_PER_SM * clock_khz * 1e3)


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
        peak = gpu_peak_flops(int(props["multiProcessorCount"]), int(props["clockRate"]))
    except Exception as exc:  # CUDARuntimeError & co. have no common base
        return None, f"CUDA not usable ({type(exc).__name__}: {exc})".splitlines()[0]
    return CudaDevice(cupy, f"{name} (GPU {dev.id})", peak), ""

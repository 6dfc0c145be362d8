"""The backend registry of HC-GEMM-v1 (SPEC 1): NumPy always, CuPy if usable.

`BACKEND_MODULES` names the module of each backend; `load_pipeline` imports it by name, so
no other engine module imports a backend (the core never depends on CuPy).

`select_backend` never lets an import error or a CUDA runtime error escape as a traceback:
"auto" falls back to NumPy with a reason, an explicit "cupy" raises `BackendUnavailable`
with a one-line message. CuPy is only imported here and in `cupy_backend`, lazily.
"""

from __future__ import annotations

import importlib
import os
import platform
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from hashcloud.errors import BackendUnavailable, EngineError

__all__ = [
    "BACKEND_NAMES",
    "BackendChoice",
    "cpu_core_count",
    "cpu_device_name",
    "cpu_peak_flops",
    "gpu_peak_flops",
    "load_pipeline",
    "select_backend",
]

BACKEND_NAMES = ("auto", "numpy", "cupy")

BACKEND_MODULES: dict[str, str] = {
    "numpy": "hashcloud.engine.numpy_backend",
    "cupy": "hashcloud.engine.cupy_backend",
}
"""Module of each concrete backend; each exposes `create_pipeline(n, batch_size, lanes)`."""

# Conservative upper bounds used for the validator's "claimed rate not above the device's
# peak" check (SPEC 3): they must never be below what an honest miner achieves.
# CPU: 2 AVX-512 FMA units x 16 float32 lanes x 2 FLOP = 64 FLOP/cycle/core, at 5 GHz
# (above any all-core turbo). AMX/BF16 is not exact for these entries, so it is not counted.
CPU_FLOP_PER_CYCLE = 64
CPU_MAX_HZ = 5.0e9
# GPU: 8192 FLOP/cycle/SM bounds every exact path of SPEC 1.6 (dense int8 tensor cores of
# current parts do at most 4096 "ops"/cycle/SM; the factor 2 is head-room), at the boost clock.
GPU_FLOP_PER_CYCLE_PER_SM = 8192


@dataclass(frozen=True, slots=True)
class BackendChoice:
    """The backend chosen to run SPEC 1: its name, array module, device and why.

    `peak_flops` is a conservative upper bound of achievable FLOP/s on `device` (SPEC 3
    sanity check); `reason` says which backend was chosen and why, for the CLI to show.
    """

    name: str
    xp: ModuleType
    device: str
    reason: str
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
    """Upper bound of float32 FLOP/s: cores * 64 FLOP/cycle * 5 GHz (see constants)."""
    return float((cores or cpu_core_count()) * CPU_FLOP_PER_CYCLE * CPU_MAX_HZ)


def gpu_peak_flops(multiprocessors: int, clock_khz: int) -> float:
    """Upper bound of exact-GEMM FLOP/s of a GPU: SMs * 8192 FLOP/cycle * clock."""
    return float(multiprocessors * GPU_FLOP_PER_CYCLE_PER_SM * clock_khz * 1e3)


def _numpy_choice(reason: str) -> BackendChoice:
    """The always-available NumPy backend."""
    return BackendChoice("numpy", np, cpu_device_name(), reason, cpu_peak_flops())


def _probe_cupy() -> tuple[BackendChoice | None, str]:
    """Try CuPy: import, `cuda.is_available()`, a tiny allocation. Returns (choice, why-not)."""
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
    return BackendChoice("cupy", cupy, f"{name} (GPU {dev.id})", "cupy: CUDA device found",
                         peak), ""


def select_backend(name: str = "auto") -> BackendChoice:
    """Pick the backend for SPEC 1 work: "auto", "numpy" or "cupy".

    "auto" picks CuPy only when it imports, CUDA reports a device and a tiny allocation
    works; otherwise NumPy, with the reason (e.g. "cupy not installed"). An explicit
    "cupy" that is not usable raises `BackendUnavailable`; an unknown name `EngineError`.
    """
    if name not in BACKEND_NAMES:
        raise EngineError(f"unknown backend {name!r} (choose from {', '.join(BACKEND_NAMES)})")
    if name == "numpy":
        return _numpy_choice("numpy: requested")
    choice, why_not = _probe_cupy()
    if choice is not None:
        if name == "auto":
            return BackendChoice(choice.name, choice.xp, choice.device,
                                 "auto: cupy with a working CUDA device", choice.peak_flops)
        return choice
    if name == "cupy":
        raise BackendUnavailable(f"backend cupy unavailable: {why_not}")
    return _numpy_choice(f"auto: numpy ({why_not})")


def load_pipeline(name: str, n: int, batch_size: int, lanes: int | None = None) -> Any:
    """Create the pipeline of backend `name` (a key of `BACKEND_MODULES`).

    The pipeline has `leaves(seed, start, count) -> list[bytes]` and `close()`. The module
    is imported here, by name, only when that backend is used.
    """
    try:
        module_name = BACKEND_MODULES[name]
    except KeyError:
        raise EngineError(f"unknown backend {name!r}") from None
    return importlib.import_module(module_name).create_pipeline(n, batch_size, lanes)

"""The backend registry of HC-GEMM-v1 (SPEC 1): NumPy always, CuPy if usable.

`BACKEND_MODULES` names the module of each backend; `load_pipeline` imports it by name, so
no other engine module imports a backend (the core never depends on CuPy). The device probes
(CPU cores and name, the CuPy probe, peak estimates) live in `device`, which imports no
backend, so a backend may use them without an import cycle.

`select_backend` never lets an import error or a CUDA runtime error escape as a traceback:
"auto" falls back to NumPy with a reason, an explicit "cupy" raises `BackendUnavailable`
with a one-line message. CuPy is only imported lazily, by `device.probe_cupy` and by
`cupy_backend`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from hashcloud.engine.device import cpu_device_name, cpu_peak_flops, fix_for, probe_cupy
from hashcloud.errors import BackendUnavailable, EngineError

__all__ = [
    "BACKEND_MODULES",
    "BACKEND_NAMES",
    "BackendChoice",
    "load_pipeline",
    "numpy_choice",
    "select_backend",
]

BACKEND_NAMES = ("auto", "numpy", "cupy")
"""Names `select_backend` accepts."""

BACKEND_MODULES: dict[str, str] = {
    "numpy": "hashcloud.engine.numpy_backend",
    "cupy": "hashcloud.engine.cupy_backend",
}
"""Module of each concrete backend; each exposes `create_pipeline(n, batch_size, lanes)`."""


@dataclass(frozen=True, slots=True)
class BackendChoice:
    """The backend chosen to run SPEC 1: its name, array module, device and why.

    `peak_flops` is the engine's own estimate of the FLOP/s of `device` (`device.
    cpu_peak_flops` / `gpu_peak_flops`), for display only; the validator's bound of SPEC 3
    is `poc.audit.DEVICE_PEAK_FLOPS`. `reason` says which backend was chosen and why, for
    the CLI to show.
    """

    name: str
    xp: ModuleType
    device: str
    reason: str
    peak_flops: float
    peaks: dict | None = None
    """Dense peak op/s per exact GEMM path (`device.gpu_peaks`; "fp32" only on a CPU)."""


def numpy_choice(reason: str) -> BackendChoice:
    """The always-available NumPy backend, with the reason it was chosen."""
    return BackendChoice("numpy", np, cpu_device_name(), reason, cpu_peak_flops(),
                         {"fp32": cpu_peak_flops()})


def select_backend(name: str = "auto") -> BackendChoice:
    """Pick the backend for SPEC 1 work: "auto", "numpy" or "cupy".

    "auto" picks CuPy only when it imports, CUDA reports a device and a tiny allocation
    works; otherwise NumPy, with the reason (e.g. "cupy not installed"). An explicit
    "cupy" that is not usable raises `BackendUnavailable`; an unknown name `EngineError`.
    """
    if name not in BACKEND_NAMES:
        raise EngineError(f"unknown backend {name!r} (choose from {', '.join(BACKEND_NAMES)})")
    if name == "numpy":
        return numpy_choice("numpy: requested")
    cuda, why_not = probe_cupy()
    if cuda is not None:
        reason = "auto: cupy with a working CUDA device" if name == "auto" else (
            "cupy: CUDA device found")
        return BackendChoice("cupy", cuda.xp, cuda.name, reason, cuda.peak_flops, cuda.peaks)
    if name == "cupy":
        raise BackendUnavailable(f"backend cupy unavailable: {why_not}; {fix_for(why_not)}")
    return numpy_choice(f"auto: numpy ({why_not}; for a GPU: {fix_for(why_not)})")


def load_pipeline(name: str, n: int, batch_size: int | None,
                  lanes: int | None = None) -> Any:
    """Create the pipeline of backend `name` (a key of `BACKEND_MODULES`).

    The pipeline has `leaves(seed, start, count) -> list[bytes]` and `close()`. The module
    is imported here, by name, only when that backend is used.
    """
    try:
        module_name = BACKEND_MODULES[name]
    except KeyError:
        raise EngineError(f"unknown backend {name!r}") from None
    return importlib.import_module(module_name).create_pipeline(n, batch_size, lanes)

"""Backend selection (no device needed): auto falls back to NumPy, explicit CuPy refuses."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from hashcloud.engine import backends
from hashcloud.engine.backends import select_backend
from hashcloud.errors import BackendUnavailable, EngineError


def _cupy_usable() -> bool:
    try:
        select_backend("cupy")
    except BackendUnavailable:
        return False
    return True


def test_numpy_always_available() -> None:
    choice = select_backend("numpy")
    assert choice.name == "numpy" and choice.xp is np
    assert "cores" in choice.device
    assert choice.peak_flops == backends.cpu_peak_flops()


@pytest.mark.skipif(_cupy_usable(), reason="a CUDA device answers here")
def test_auto_falls_back_to_numpy_with_reason() -> None:
    choice = select_backend("auto")
    assert choice.name == "numpy" and choice.xp is np
    assert choice.reason.startswith("auto: numpy (")
    assert "cupy" in choice.reason or "CUDA" in choice.reason


@pytest.mark.skipif(_cupy_usable(), reason="a CUDA device answers here")
def test_explicit_cupy_raises_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="backend cupy unavailable: "):
        select_backend("cupy")


def test_missing_cupy_module(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def fake_import(name: str, *args: object) -> object:
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args)

    monkeypatch.setattr(backends.importlib, "import_module", fake_import)
    assert select_backend("auto").reason == "auto: numpy (cupy not installed)"
    with pytest.raises(BackendUnavailable, match="cupy not installed"):
        select_backend("cupy")


class _FakeCudaRuntimeError(RuntimeError):
    """Stands in for cupy_backends.cuda.api.runtime.CUDARuntimeError."""


class _FakeCupy:
    """A cupy-cuda12x installed on a machine without a GPU (or with a broken driver)."""

    def __init__(self, available: bool) -> None:
        self.cuda = type("cuda", (), {"is_available": staticmethod(lambda: available)})

    float32 = "float32"

    def arange(self, *args: object, **kwargs: object) -> object:
        raise _FakeCudaRuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")


@pytest.mark.parametrize("available,why", [(False, "no CUDA device"),
                                           (True, "CUDA not usable (_FakeCudaRuntimeError")])
def test_cupy_without_device(monkeypatch: pytest.MonkeyPatch, available: bool,
                             why: str) -> None:
    real_import = importlib.import_module

    def fake_import(name: str, *args: object) -> object:
        return _FakeCupy(available) if name == "cupy" else real_import(name, *args)

    monkeypatch.setattr(backends.importlib, "import_module", fake_import)
    choice = select_backend("auto")
    assert choice.name == "numpy" and why in choice.reason
    with pytest.raises(BackendUnavailable) as info:
        select_backend("cupy")
    assert why in str(info.value) and "\n" not in str(info.value)


def test_unknown_backend_raises() -> None:
    with pytest.raises(EngineError, match="unknown backend"):
        select_backend("tpu")


def test_peak_bounds() -> None:
    assert backends.cpu_peak_flops(2) == 2 * 64 * 5e9
    # An H100 SXM (132 SMs, 1.98 GHz boost) must stay above its ~1979 dense int8 TOPS.
    assert backends.gpu_peak_flops(132, 1_980_000) > 1.98e15

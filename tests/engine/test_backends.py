"""Backend selection (no device needed): auto falls back to NumPy, explicit CuPy refuses."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest

from hashcloud.engine import device
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
    assert choice.peak_flops == device.cpu_peak_flops()


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

    monkeypatch.setattr(device.importlib, "import_module", fake_import)
    assert select_backend("auto").reason == (
        "auto: numpy (cupy not installed; for a GPU: install the GPU extra: "
        "pip install 'hashcloud[gpu]')")
    with pytest.raises(BackendUnavailable, match=r"cupy not installed; .*hashcloud\[gpu\]"):
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

    monkeypatch.setattr(device.importlib, "import_module", fake_import)
    choice = select_backend("auto")
    assert choice.name == "numpy" and why in choice.reason
    with pytest.raises(BackendUnavailable) as info:
        select_backend("cupy")
    assert why in str(info.value) and "\n" not in str(info.value)


def test_unknown_backend_raises() -> None:
    with pytest.raises(EngineError, match="unknown backend"):
        select_backend("tpu")


def test_peak_bounds() -> None:
    assert device.cpu_peak_flops(2) == 2 * 64 * 5e9
    # An H100 SXM (132 SMs, 1.98 GHz boost) must stay above its ~1979 dense int8 TOPS.
    assert device.gpu_peak_flops(132, 1_980_000) > 1.98e15


def test_numpy_backend_does_not_load_the_registry() -> None:
    """The device probes live in `device`: a backend never imports the registry that loads it."""
    code = (
        "import sys, hashcloud.engine.numpy_backend, hashcloud.engine.device\n"
        "assert 'hashcloud.engine.backends' not in sys.modules, 'numpy_backend -> backends'\n"
        "assert 'hashcloud.engine.numpy_backend' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_device_imports_no_backend() -> None:
    """`device` is below the registry and the backends: importing it loads neither."""
    code = (
        "import sys, hashcloud.engine.device\n"
        "loaded = [m for m in ('hashcloud.engine.backends', 'hashcloud.engine.numpy_backend',"
        " 'hashcloud.engine.cupy_backend', 'cupy') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_peak_table_reproduces_published_peaks() -> None:
    for name, (cc, sms, ghz, published) in device.REFERENCE_GPUS.items():
        peaks = device.gpu_peaks(cc, sms, ghz * 1e6)
        for path, value in published.items():
            assert peaks[path] == pytest.approx(value, rel=0.03), (name, path)


def test_unknown_architecture_gets_the_largest_rates() -> None:
    unknown = device.gpu_peaks((99, 0), 100, 2e6)
    for cc in device.GPU_OPS_PER_CLOCK_PER_SM:
        known = device.gpu_peaks(cc, 100, 2e6)
        assert all(unknown[p] >= known[p] for p in device.GPU_PATHS)


def test_node_rate_bound_is_above_every_reference_gpu() -> None:
    from hashcloud.poc.audit import DEVICE_PEAK_FLOPS

    assert DEVICE_PEAK_FLOPS["cupy"] >= 4.5e15  # a B200's dense INT8 rate
    for _cc, _sms, _ghz, published in device.REFERENCE_GPUS.values():
        assert max(published.values()) < DEVICE_PEAK_FLOPS["cupy"]

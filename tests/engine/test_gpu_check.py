"""scripts/gpu_check.py: one JSON object; NO_DEVICE (exit 2) with the host-kernel result on a
CPU-only machine; the full device path run on the NumPy-backed CuPy stand-in."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hashcloud.engine.kernels import find_c_compiler

from .fake_cupy import fake_cuda

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_cpu_only_machine_prints_no_device_and_exits_2(monkeypatch) -> None:
    module = _load_script()
    monkeypatch.setattr(module, "probe_cupy", lambda: (None, "cupy not installed"))
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = module.main()
    obj = json.loads(buf.getvalue())
    assert code == 2 and obj["verdict"] == "NO_DEVICE" and obj["device"] is None
    assert "hashcloud[gpu]" in obj["fix"]
    if find_c_compiler() is not None:
        assert obj["host_kernels"]["ok"] is True and obj["host_kernels"]["checks"] == 5


@pytest.mark.timeout(60)
def test_script_runs_as_one_command() -> None:
    p = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                       timeout=60)
    obj = json.loads(p.stdout)  # exactly one JSON object on stdout
    assert obj["verdict"] in ("NO_DEVICE", "PASS", "FAIL")
    assert p.returncode == {"PASS": 0, "FAIL": 1, "NO_DEVICE": 2}[obj["verdict"]]


@pytest.mark.timeout(300)
@pytest.mark.skipif(find_c_compiler() is None, reason="no C compiler here")
def test_device_path_on_the_stand_in(monkeypatch) -> None:
    from hashcloud.engine import cupy_backend
    from hashcloud.engine.device import CudaDevice, gpu_peaks

    module = _load_script()
    cuda = fake_cuda()
    peaks = gpu_peaks((9, 0), 132, 1.83e6)
    monkeypatch.setattr(module, "probe_cupy",
                        lambda: (CudaDevice(cuda.cp, "stand-in", max(peaks.values()),
                                            (9, 0), peaks), ""))
    monkeypatch.setattr(cupy_backend, "load_cuda", lambda: cuda)
    monkeypatch.setattr(cupy_backend, "MEMORY_BUDGET", 64 << 20)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--max-n", "256", "--seconds", "0.05"])
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = module.main()
    obj = json.loads(buf.getvalue())
    assert code == 0 and obj["verdict"] == "PASS", obj
    for name, check in obj["paths"].items():
        assert check["exact"], name
        assert [c["n"] for c in check["cases"]] == [64, 256]
        assert all(c["batches"] == 3 for c in check["cases"])  # 3 + 3 + 1: ragged
        assert check["crafted"]["max_positive"] == {"n": 256, "want": 64 * 64 * 256,
                                                    "exact": True}
        assert check["golden"] == {"vectors": 5, "exact": True}  # incl. gemm_large n=1024
    assert obj["chosen"]["path"] in obj["paths"]
    mining = obj["mining"]["int8"]
    assert mining["loops"] > 0 and set(mining["percent_of_peak"]) == {"int8", "bf16"}
    assert set(mining["stage_us_per_loop"]) == set(cupy_backend.CupyPipeline.STAGES)
    assert np.isfinite(mining["loops_per_s"])

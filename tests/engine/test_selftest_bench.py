"""Self-test and benchmark return data (SPEC 1); no timing assertions."""

from __future__ import annotations

import pytest

from hashcloud.engine.bench import bench
from hashcloud.engine.selftest import run_selftest
from hashcloud.errors import EngineError


def test_selftest_passes_on_every_backend() -> None:
    results = run_selftest(n=64, loops=3)
    assert results[0].backend == "numpy"
    for r in results:
        assert r.ok, r.failures
        assert r.checks == (0 if r.skipped else 4 + 3)


def test_selftest_rejects_bad_arguments() -> None:
    with pytest.raises(EngineError):
        run_selftest(n=65)
    with pytest.raises(EngineError):
        run_selftest(loops=0)


def test_bench_returns_consistent_numbers() -> None:
    result = bench("numpy", 64, 0.2)
    assert result["backend"] == "numpy" and result["n"] == 64
    assert result["loops"] > 0 and result["raw_gemm_gflops"] > 0
    flop = 2 * 64**3
    assert result["effective_gflops"] == pytest.approx(result["loops_per_s"] * flop / 1e9)
    assert result["ratio"] == pytest.approx(
        result["effective_gflops"] / result["raw_gemm_gflops"])


def test_bench_rejects_bad_arguments() -> None:
    with pytest.raises(EngineError):
        bench("numpy", 64, 0)


def _no_cupy(monkeypatch) -> None:
    from hashcloud.engine import device

    monkeypatch.setattr(device, "probe_cupy", lambda: (None, "cupy not installed"))
    from hashcloud.engine import backends

    monkeypatch.setattr(backends, "probe_cupy", lambda: (None, "cupy not installed"))


def test_selftest_auto_reports_a_skipped_cupy_with_the_fix(monkeypatch) -> None:
    _no_cupy(monkeypatch)
    results = run_selftest(n=64, loops=1)
    assert [r.backend for r in results] == ["numpy", "cupy"]
    assert results[1].skipped and results[1].ok and results[1].checks == 0
    assert "pip install 'hashcloud[gpu]'" in results[1].reason


def test_selftest_explicit_cupy_fails_with_reason_and_fix(monkeypatch) -> None:
    from hashcloud.errors import BackendUnavailable

    _no_cupy(monkeypatch)
    with pytest.raises(BackendUnavailable, match=r"cupy not installed; .*hashcloud\[gpu\]"):
        run_selftest(n=64, loops=1, backend="cupy")


def test_cli_selftest_backend_cupy_exits_1(monkeypatch) -> None:
    from typer.testing import CliRunner

    from hashcloud.cli.main import app

    _no_cupy(monkeypatch)
    r = CliRunner().invoke(app, ["selftest", "--backend", "cupy"])
    assert r.exit_code == 1
    assert "cupy not installed" in r.stderr and "hashcloud[gpu]" in r.stderr
    r = CliRunner().invoke(app, ["selftest", "--backend", "numpy", "--json"])
    assert r.exit_code == 0 and '"skipped": false' in r.stdout


def test_auto_falls_back_when_the_gpu_pipeline_cannot_start(monkeypatch) -> None:
    """CuPy answers but the pipeline fails (e.g. NVRTC or cuBLAS missing): auto mines on the
    CPU and says why; an explicit cupy request refuses with the fix."""
    import numpy as np

    from hashcloud.engine import backends, cupy_backend
    from hashcloud.engine.device import CudaDevice
    from hashcloud.engine.mining import Engine
    from hashcloud.errors import BackendUnavailable

    fake = CudaDevice(np, "stand-in GPU", 1e15, (9, 0), {"int8": 1e15})
    monkeypatch.setattr(backends, "probe_cupy", lambda: (fake, ""))

    def broken():
        raise OSError("libnvrtc.so.12: cannot open shared object file")

    monkeypatch.setattr(cupy_backend, "load_cuda", broken)
    with Engine("auto", n=64) as engine:
        assert engine.backend == "numpy"
        assert "libnvrtc" in engine.reason and "hashcloud[gpu]" in engine.reason
    with pytest.raises(BackendUnavailable, match="could not start.*libnvrtc"):
        Engine("cupy", n=64)

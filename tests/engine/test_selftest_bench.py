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
        assert r.checks == 4 + 3


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

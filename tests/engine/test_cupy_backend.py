"""The CuPy pipeline (SPEC 1) on a NumPy-backed stand-in for CuPy and cuBLAS (fake_cupy):
real kernel arithmetic (the host build of hc_kernels.h), cuBLAS argument semantics, deferred
streams. Checks slots, events, ordering, ragged batches, path choice and exact equality with
the NumPy backend. Real-device runs are the `gpu` tests at the end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hashcloud.engine import cupy_backend, gemm
from hashcloud.engine.cupy_backend import GEMM_PATHS, MEMORY_BUDGET, CupyPipeline, max_batch
from hashcloud.engine.kernels import find_c_compiler
from hashcloud.errors import EngineError

from .fake_cupy import FakeCublas, NotSupportedError, fake_cuda

pytestmark = pytest.mark.skipif(find_c_compiler() is None, reason="no C compiler here")

SEED = "5eed"


def _want(start: int, count: int, n: int, seed: str = SEED) -> list[bytes]:
    return [gemm.compute_leaf(seed, i, n) for i in range(start, start + count)]


def test_cupy_code_is_imported_lazily() -> None:
    # The core engine modules never pull in the CuPy-only module, CuPy, typer or rich.
    code = (
        "import sys\n"
        "import hashcloud.engine.gemm, hashcloud.engine.bench, hashcloud.engine.selftest\n"
        "import hashcloud.engine.reference, hashcloud.engine.backends\n"
        "bad = {'hashcloud.engine.cupy_backend', 'cupy', 'typer', 'rich'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("path", list(GEMM_PATHS))
@pytest.mark.parametrize("n", [64, 128])
def test_every_path_equals_numpy_with_a_ragged_last_batch(path: str, n: int) -> None:
    pipe = CupyPipeline(n, 3, path=path, cuda=fake_cuda())
    assert pipe.leaves(SEED, 10, 7) == _want(10, 7, n)  # batches 3 + 3 + 1
    assert pipe.stage_report()["batches"] == 3
    calls = pipe.cuda.cublas.calls
    assert [c["batch"] for c in calls] == [3, 3, 1]
    assert all((c["transa"], c["transb"]) == (1, 0) for c in calls)  # TN


def test_streaming_calls_keep_the_ring_full_and_leaves_in_order() -> None:
    pipe = CupyPipeline(64, 4, path="int8", cuda=fake_cuda())
    got, start = [], 0
    for count in (1, 3, 4, 9, 2, 5, 4):
        got += pipe.leaves(SEED, start, count)
        start += count
        if count > 1:  # from the second call on, the ring runs ahead of the caller
            assert len(pipe._queue) == len(pipe.slots) == 3
    assert got == _want(0, start, 64)


def test_host_never_waits_on_a_batch_with_an_empty_ring(monkeypatch) -> None:
    pipe = CupyPipeline(64, 2, path="int8", cuda=fake_cuda())
    depths = []
    real = pipe._collect

    def spy():
        depths.append(len(pipe._queue))
        return real()

    monkeypatch.setattr(pipe, "_collect", spy)
    pipe.leaves(SEED, 0, 1)
    pipe.leaves(SEED, 1, 12)
    # Streaming: every wait happens with all 3 slots queued (two batches behind the one
    # being waited for keep the GPU busy).
    assert depths[1:] and all(d == 3 for d in depths[1:]), depths


def test_a_different_call_drops_speculative_batches() -> None:
    pipe = CupyPipeline(64, 2, path="bf16", cuda=fake_cuda())
    assert pipe.leaves(SEED, 0, 2) + pipe.leaves(SEED, 2, 3) == _want(0, 5, 64)
    assert pipe._queue  # ran ahead
    assert pipe.leaves("77", 0, 3) == _want(0, 3, 64, "77")  # another seed
    assert pipe.leaves(SEED, 40, 2) == _want(40, 2, 64)  # a jump
    assert pipe.leaves(SEED, 42, 1) == _want(42, 1, 64)  # continues: from the ring


def test_the_stand_in_catches_a_host_read_without_waiting(monkeypatch) -> None:
    """The stand-in is not lenient: reading pinned leaves before the event is wrong."""
    pipe = CupyPipeline(64, 2, path="int8", cuda=fake_cuda())

    def no_wait(self=pipe):
        batch = self._queue.popleft()
        host = self.slots[batch.slot].host
        if not self._ready:
            self._ready_lo, self._ready_seed = batch.lo, batch.seed
        self._ready.extend(bytes(host[k]) for k in range(batch.count))
        return batch

    monkeypatch.setattr(pipe, "_collect", no_wait)
    assert pipe.leaves(SEED, 0, 4) != _want(0, 4, 64)


def test_start_up_picks_the_fastest_exact_path_and_says_so(monkeypatch) -> None:
    times = {"int8": 0.1, "bf16": 0.2, "tf32": 0.3, "fp32": 0.4}
    monkeypatch.setattr(CupyPipeline, "time_gemm", lambda self, path, n: times[path.name])
    pipe = CupyPipeline(64, cuda=fake_cuda())
    assert pipe.path.name == "int8"
    assert all(pipe.path_report[p]["exact"] for p in GEMM_PATHS)
    assert "GEMM path int8" in pipe.describe() and "fp32 0.400 ms/loop" in pipe.describe()
    assert pipe.leaves(SEED, 0, 3) == _want(0, 3, 64)


class _WrongBf16(FakeCublas):
    """A device whose BF16 path is off by one in one element (not exact)."""

    def gemmStridedBatchedEx(self, *args):  # noqa: N802
        super().gemmStridedBatchedEx(*args)
        if args[8] == cupy_backend.CUDA_R_16BF:
            c_ptr = args[16]
            from . import fake_cupy

            fake_cupy.current_stream().enqueue(
                lambda: np.ctypeslib.as_array(
                    (fake_cupy.ctypes.c_float * 1).from_address(c_ptr))[:].__iadd__(1))


class _NoInt8(FakeCublas):
    """A device where cuBLAS refuses 8-bit GEMMs (CUBLAS_STATUS_NOT_SUPPORTED)."""

    def gemmStridedBatchedEx(self, *args):  # noqa: N802
        if args[8] == cupy_backend.CUDA_R_8I:
            raise NotSupportedError("CUBLAS_STATUS_NOT_SUPPORTED")
        super().gemmStridedBatchedEx(*args)


def test_inexact_and_unsupported_paths_are_never_chosen(monkeypatch) -> None:
    times = {"int8": 0.1, "bf16": 0.2, "tf32": 0.3, "fp32": 0.4}
    monkeypatch.setattr(CupyPipeline, "time_gemm", lambda self, path, n: times[path.name])
    cuda = fake_cuda()
    cuda.cublas = _WrongBf16()
    cuda.cublas.__class__ = type("Both", (_NoInt8, _WrongBf16), {})
    pipe = CupyPipeline(64, cuda=cuda)
    assert pipe.path.name == "tf32"
    assert pipe.path_report["int8"]["error"].startswith("NotSupportedError")
    assert pipe.path_report["bf16"]["exact"] is False
    assert "int8 unusable" in pipe.describe() and "bf16 NOT exact" in pipe.describe()
    assert pipe.leaves(SEED, 0, 2) == _want(0, 2, 64)


def test_no_exact_path_is_an_engine_error() -> None:
    class Broken(FakeCublas):
        def gemmStridedBatchedEx(self, *args):  # noqa: N802
            raise NotSupportedError("CUBLAS_STATUS_NOT_INITIALIZED")

    cuda = fake_cuda()
    cuda.cublas = Broken()
    with pytest.raises(EngineError, match="no GEMM path gave the golden leaves"):
        CupyPipeline(64, cuda=cuda)


def test_int8_refuses_a_non_tn_layout() -> None:
    cuda = fake_cuda()
    one = np.ones(1, np.int32)
    zero = np.zeros(1, np.int32)
    a = cuda.cp.empty(64 * 64, np.int8)
    with pytest.raises(NotSupportedError, match="TN"):
        cuda.cublas.gemmStridedBatchedEx(0, 0, 0, 64, 64, 64, one.ctypes.data, a.data.ptr, 3,
                                         64, 0, a.data.ptr, 3, 64, 0, zero.ctypes.data,
                                         a.data.ptr, 10, 64, 0, 1, 72, -1)


def test_batch_size_follows_gemm_time_and_memory_stays_bounded(monkeypatch) -> None:
    monkeypatch.setattr(CupyPipeline, "time_gemm", lambda self, path, n: 0.5)  # ms/loop
    pipe = CupyPipeline(64, path="int8", cuda=fake_cuda())
    assert pipe.batch_size == int(cupy_backend.TARGET_BATCH_SECONDS * 1e3 / 0.5)
    for path in GEMM_PATHS.values():
        b = max_batch(path, 4096, 3, MEMORY_BUDGET)
        assert 1 <= b and 3 * b * path.loop_bytes(4096) <= MEMORY_BUDGET
    # Half the free memory caps the budget on a small card.
    small = CupyPipeline(64, 1, path="int8", cuda=fake_cuda(free_bytes=1 << 20))
    assert small.memory_budget == 1 << 19


def test_ring_needs_three_slots() -> None:
    with pytest.raises(EngineError, match="at least 3"):
        CupyPipeline(64, 2, path="int8", slots=2, cuda=fake_cuda())


def test_golden_large_n1024_on_the_int8_path() -> None:
    from hashcloud.engine.golden import GOLDEN_LARGE

    pipe = CupyPipeline(64, 1, path="int8", cuda=fake_cuda())
    assert pipe.check_golden(GEMM_PATHS["int8"], GOLDEN_LARGE[:1])


def test_engine_runs_the_pipeline_through_the_registry(monkeypatch) -> None:
    from hashcloud.engine.backends import BackendChoice
    from hashcloud.engine.mining import Engine

    monkeypatch.setattr(cupy_backend, "load_cuda", fake_cuda)
    monkeypatch.setattr(CupyPipeline, "time_gemm", lambda self, path, n: 0.05)
    choice = BackendChoice("cupy", np, "stand-in GPU", "test", 1e15)
    with Engine(choice, n=64) as engine:
        assert engine.batch_size == engine._impl.batch_size
        assert "GEMM path" in engine.reason
        got = engine.compute_batch(SEED, 0, 1) + engine.compute_batch(SEED, 1, 30)
    with Engine("numpy", n=64) as cpu:
        assert got == cpu.compute_batch(SEED, 0, 31)


# ---- real device -----------------------------------------------------------------------


def _device_or_skip() -> None:
    from hashcloud.engine.device import probe_cupy

    cuda, why = probe_cupy()
    if cuda is None:
        pytest.skip(f"no CUDA device: {why}")


@pytest.mark.gpu
@pytest.mark.parametrize("path", list(GEMM_PATHS))
def test_gpu_every_path_equals_numpy(path: str) -> None:
    _device_or_skip()
    for n in (64, 256):
        pipe = CupyPipeline(n, 3, path=path)
        assert pipe.leaves(SEED, 5, 8) == _want(5, 8, n), (path, n)
        pipe.close()


@pytest.mark.gpu
def test_gpu_start_up_choice_and_golden_large() -> None:
    _device_or_skip()
    from hashcloud.engine.golden import GOLDEN_LARGE

    pipe = CupyPipeline(1024)
    assert pipe.path_report[pipe.path.name]["exact"]
    assert pipe.check_golden(pipe.path, GOLDEN_LARGE)
    pipe.close()


@pytest.mark.timeout(120)
def test_any_sequence_of_calls_returns_the_right_leaves() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    calls = st.lists(st.tuples(st.sampled_from(["a1", "b2"]), st.booleans(),
                               st.integers(0, 9), st.integers(0, 40)), min_size=1, max_size=8)
    cache: dict[tuple[str, int], bytes] = {}

    def want(seed: str, start: int, count: int) -> list[bytes]:
        for i in range(start, start + count):
            if (seed, i) not in cache:
                cache[(seed, i)] = gemm.compute_leaf(seed, i, 64)
        return [cache[(seed, i)] for i in range(start, start + count)]

    @settings(max_examples=8, deadline=None, derandomize=True)
    @given(calls)
    def run(sequence) -> None:
        pipe = CupyPipeline(64, 4, path="int8", cuda=fake_cuda())
        nxt = {"a1": 0, "b2": 0}
        for seed, jump, count, offset in sequence:
            start = nxt[seed] + (offset if jump else 0)
            assert pipe.leaves(seed, start, count) == want(seed, start, count)
            nxt[seed] = start + count

    run()

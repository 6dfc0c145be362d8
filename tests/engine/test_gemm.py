"""HC-GEMM-v1 fast path (SPEC 1) against the int64 reference, batching and validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.engine import gemm, numpy_backend
from hashcloud.engine.mining import Engine, compute_leaves
from hashcloud.engine.reference import reference_leaf, reference_loop
from hashcloud.errors import EngineError

seeds = st.text(alphabet="0123456789abcdef", min_size=1, max_size=64)


@settings(settings.get_profile("engine"))
@given(seed=seeds, i=st.integers(min_value=0, max_value=2**40), n=st.sampled_from([64, 128]))
def test_fast_path_equals_int64_reference(seed: str, i: int, n: int) -> None:
    ref = reference_loop(seed, i, n)
    a, b = gemm.generate_operands(np, seed, i, 1, n)
    assert np.array_equal(a[0].astype(np.int64), ref["A"])
    assert np.array_equal(b[0].astype(np.int64), ref["B"])
    c = np.matmul(a[0], b[0])
    assert np.array_equal(c.astype(np.int64), ref["C"])
    assert gemm.row_digests(np, c).tolist() == ref["digests"]
    assert gemm.compute_leaf(seed, i, n) == ref["leaf"]


def test_entries_cover_the_whole_range() -> None:
    a, b = gemm.generate_operands(np, "ab", 0, 1, 128)
    values = np.unique(np.concatenate([a.ravel(), b.ravel()]))
    assert values.dtype == np.float32
    assert values.min() == -64 and values.max() == 63 and len(values) == 128


def test_digests_of_negative_and_extreme_products() -> None:
    # The int32 -> uint32 two's-complement step (SPEC 1.7) on hand-picked values.
    n = 64
    c = np.zeros((n, n), dtype=np.float32)
    c[0, :4] = [-1, -(2**24), 2**24, 12345]
    c[1, :] = -7
    from hashcloud.engine.reference import _fmix_row

    want = [_fmix_row([int(x) for x in row]) for row in c.astype(np.int64)]
    assert gemm.row_digests(np, c).tolist() == want


def test_digests_at_the_largest_n() -> None:
    # n = 4096 with extreme products stresses the exact split uint32 row sum (SPEC 1.7).
    from hashcloud.engine.reference import _fmix_row

    rng = np.random.default_rng(7)
    c = rng.integers(-(2**24), 2**24 + 1, size=(3, 4096)).astype(np.float32)
    c[2, :] = -(2**24)
    want = [_fmix_row([int(x) for x in row]) for row in c.astype(np.int64)]
    assert gemm.row_digests(np, c).tolist() == want


def test_batch_equals_one_at_a_time() -> None:
    seed, n = "c0ffee", 64
    singles = [gemm.compute_leaf(seed, i, n) for i in range(5, 12)]
    with Engine("numpy", n=n) as engine:
        assert engine.compute_batch(seed, 5, 7) == singles
        assert engine.compute_batch(seed, 5, 3) + engine.compute_batch(seed, 8, 4) == singles
    assert compute_leaves(seed, 5, 7, n) == singles
    a, b = gemm.generate_operands(np, seed, 5, 7, n)
    batched = gemm.row_digests(np, np.matmul(a, b))
    for k in range(7):
        leaf = gemm.leaf_hash(gemm.loop_seed(seed, 5 + k), gemm.digests_to_output(batched[k]))
        assert leaf == singles[k]


def test_engine_chunking_does_not_change_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ragged chunks (not dividing the word / row counts) must give the same leaves.
    monkeypatch.setenv("HASHCLOUD_NO_C_KERNELS", "1")  # the NumPy ufunc chunks, not fused C
    monkeypatch.setattr(numpy_backend.NumpyPipeline, "WORDS_PER_CHUNK", 1000)
    monkeypatch.setattr(numpy_backend.NumpyPipeline, "DIGEST_ELEMENTS", 128 * 5)
    seed, n = "abc", 128
    with Engine("numpy", n=n) as engine:
        assert engine.compute_batch(seed, 0, 2) == [reference_leaf(seed, i, n) for i in (0, 1)]


def test_engine_attributes_and_empty_batch() -> None:
    with Engine("numpy", n=64) as engine:
        assert engine.backend == "numpy"
        assert engine.device and engine.reason
        assert engine.peak_flops >= 1e9
        assert engine.batch_size >= 1
        assert engine.compute_batch("ab", 0, 0) == []


def test_loop_seed_and_key() -> None:
    assert gemm.loop_seed("ab", 0) == "ab:0"
    assert gemm.loop_seed("ab", 12345) == "ab:12345"
    key = gemm.loop_key("ab", 3)
    assert 0 <= key < 2**64
    assert gemm.loop_keys("ab", 3, 2).tolist() == [key, gemm.loop_key("ab", 4)]


@pytest.mark.parametrize("n", [0, 32, 63, 65, 100, 4160, 8192, -64, 64.0, True, "64"])
def test_invalid_n_raises(n: object) -> None:
    with pytest.raises(EngineError):
        gemm.validate_n(n)
    with pytest.raises(EngineError):
        gemm.compute_leaf("ab", 0, n)


@pytest.mark.parametrize("n", [64, 128, 1024, 4096])
def test_valid_n(n: int) -> None:
    assert gemm.validate_n(n) == n


@pytest.mark.parametrize("seed", ["", "AB", "0xab", "xyz", "ab cd", "ab\n", None, 12])
def test_invalid_seed_raises(seed: object) -> None:
    with pytest.raises(EngineError):
        gemm.loop_seed(seed, 0)
    with pytest.raises(EngineError):
        gemm.compute_leaf(seed, 0, 64)
    with pytest.raises(EngineError), Engine("numpy", n=64) as engine:
        engine.compute_batch(seed, 0, 1)


@pytest.mark.parametrize("start,count", [(-1, 1), (0, -1), (1.5, 1), (True, 1)])
def test_invalid_range_raises(start: object, count: object) -> None:
    with pytest.raises(EngineError):
        compute_leaves("ab", start, count, 64)


def test_invalid_loop_index_raises() -> None:
    with pytest.raises(EngineError):
        gemm.loop_key("ab", -1)


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_lanes_give_the_same_leaves_in_order(lanes):
    from hashcloud.engine.gemm import compute_leaf
    from hashcloud.engine.mining import Engine

    with Engine("numpy", n=64, lanes=lanes) as engine:
        assert engine.lanes == lanes
        leaves = engine.compute_batch("c0ffee", 10, 7)
        assert engine.compute_batch("c0ffee", 16, 1) == leaves[-1:]
    assert leaves == [compute_leaf("c0ffee", i, 64) for i in range(10, 17)]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_bad_lanes_are_refused(bad):
    from hashcloud.engine.mining import Engine
    from hashcloud.errors import EngineError

    with pytest.raises(EngineError, match="lanes"):
        Engine("numpy", n=64, lanes=bad)


def test_threadpool_limit_is_restored_after_a_batch():
    from threadpoolctl import threadpool_info

    from hashcloud.engine.mining import Engine

    before = [i["num_threads"] for i in threadpool_info()]
    with Engine("numpy", n=64, lanes=2) as engine:
        engine.compute_batch("ab", 0, 4)
    assert [i["num_threads"] for i in threadpool_info()] == before


def test_first_one_loop_call_runs_with_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A round starts with a 1-loop call: with several lanes it must also limit BLAS to one
    thread, or idle OpenBLAS workers spin after the multi-threaded GEMM (issue 10)."""
    from contextlib import contextmanager

    entered = []

    @contextmanager
    def counting():
        entered.append(1)
        yield

    monkeypatch.setattr(numpy_backend, "single_threaded_blas", counting)
    lanes = numpy_backend.NumpyLanes(64, 2)
    try:
        assert lanes.leaves("ab", 0, 1) == [reference_leaf("ab", 0, 64)]
        assert entered == [1]
        lanes.leaves("ab", 1, 3)
        assert entered == [1, 1]
    finally:
        lanes.close()

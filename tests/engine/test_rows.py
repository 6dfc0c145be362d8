"""Row audits of SPEC 3 v1.1 (`engine.rows`): `row_digests_of` and `loop_output` against the
full product, the int64 reference and the golden vectors; argument checks; the BLAS limit."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from hashcloud.engine import gemm, rows
from hashcloud.engine.reference import reference_loop, reference_row_digests
from hashcloud.errors import EngineError

seeds = st.text(alphabet="0123456789abcdef", min_size=1, max_size=64)


def full_digests(seed: str, i: int, n: int) -> list[int]:
    """Every d_r of loop i through gemm's allocating wrappers (one full GEMM)."""
    a, b = gemm.generate_operands(np, seed, i, 1, n)
    return gemm.row_digests(np, np.matmul(a[0], b[0])).tolist()


@st.composite
def loops_and_rows(draw: st.DrawFn, sizes: tuple[int, ...] = (64, 128)) -> tuple:
    """A loop (seed, i, n) and a list of distinct rows of it, in a random order."""
    n = draw(st.sampled_from(sizes))
    drawn = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=min(n, 20), unique=True))
    return draw(seeds), draw(st.integers(0, 2**40)), n, drawn


@settings(settings.get_profile("engine"))
@given(case=loops_and_rows())
def test_row_digests_equal_the_full_product(case: tuple) -> None:
    seed, i, n, drawn = case
    full = full_digests(seed, i, n)
    assert rows.row_digests_of(seed, i, n, drawn) == [full[r] for r in drawn]


def test_row_digests_at_n256_and_all_rows() -> None:
    seed, i, n = "5eed", 99, 256
    full = full_digests(seed, i, n)
    drawn = [255, 0, 128, 17, 64, 191, 1, 254]
    assert rows.row_digests_of(seed, i, n, drawn) == [full[r] for r in drawn]
    assert rows.row_digests_of(seed, i, n, range(n)) == full
    assert rows.row_digests_of(seed, i, n, np.arange(n - 1, -1, -1)) == full[::-1]


def test_row_digests_equal_the_int64_reference() -> None:
    seed, i, n = "c0ffee", 3, 128
    ref = reference_loop(seed, i, n)["digests"]
    drawn = [0, 1, 63, 64, 127]
    assert rows.row_digests_of(seed, i, n, drawn) == [ref[r] for r in drawn]
    assert reference_row_digests(seed, i, n, drawn) == [ref[r] for r in drawn]


def test_row_digests_equal_the_row_reference_at_n1024() -> None:
    # Many B blocks and a ragged last one would show here; the reference skips nothing.
    seed, i, n = "ab", 5, 1024
    drawn = [1023, 0, 513]
    assert rows.row_digests_of(seed, i, n, drawn) == reference_row_digests(seed, i, n, drawn)


def test_row_digests_with_ragged_b_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # A chunk holding 3 rows of B (n=128: 16 words a row) and digests in chunks of 5 rows.
    monkeypatch.setenv("HASHCLOUD_NO_C_KERNELS", "1")  # the NumPy ufunc chunks, not fused C
    monkeypatch.setattr(rows, "WORDS_PER_CHUNK", 48)
    monkeypatch.setattr(rows, "DIGEST_ELEMENTS", 5 * 128)
    seed, i, n = "abc", 1, 128
    scratch = rows.ChunkScratch(n)
    assert (scratch.words_per_chunk, scratch.rows_per_chunk) == (48, 5)
    full = full_digests(seed, i, n)
    drawn = list(range(127, 100, -2))
    assert rows.row_digests_of(seed, i, n, drawn) == [full[r] for r in drawn]


def test_row_digests_and_output_match_the_golden_vectors(gemm_vectors: list[dict]) -> None:
    for v in gemm_vectors:
        seed, i, n = v["seed"], v["i"], v["n"]
        assert rows.row_digests_of(seed, i, n, [0, 1, 2, 3]) == v["row_digests_first4"]
        output = rows.loop_output(seed, i, n)
        assert len(output) == 8 * n
        assert hashlib.sha256(output).hexdigest() == v["output_sha256"]
        assert "0x" + gemm.leaf_hash(gemm.loop_seed(seed, i), output).hex() == v["leaf"]


def test_loop_output_matches_the_large_vector(vectors: dict) -> None:
    v = next(v for v in vectors["gemm_large"] if v["n"] == 1024)
    output = rows.loop_output(v["seed"], v["i"], v["n"])
    assert gemm.leaf_hash(v["loop_seed"], output).hex() == v["leaf"]


@settings(settings.get_profile("engine"))
@given(seed=seeds, i=st.integers(0, 2**40), n=st.sampled_from([64, 128]))
def test_loop_output_is_what_the_leaf_hashes(seed: str, i: int, n: int) -> None:
    output = rows.loop_output(seed, i, n)
    assert gemm.leaf_hash(gemm.loop_seed(seed, i), output) == gemm.compute_leaf(seed, i, n)
    # ...and a row audit of it passes: every drawn row is the r-th u64 of output.
    words = np.frombuffer(output, dtype="<u8")
    drawn = [n - 1, 0, n // 2]
    assert rows.row_digests_of(seed, i, n, drawn) == [int(words[r]) for r in drawn]


def test_a_wrong_output_fails_the_row_check() -> None:
    seed, i, n = "ab", 0, 64
    output = bytearray(rows.loop_output(seed, i, n))
    output[8 * 10] ^= 1
    words = np.frombuffer(bytes(output), dtype="<u8")
    assert rows.row_digests_of(seed, i, n, [10]) != [int(words[10])]
    assert rows.row_digests_of(seed, i, n, [11]) == [int(words[11])]


def test_empty_rows_give_no_digests() -> None:
    assert rows.row_digests_of("ab", 0, 64, []) == []


@pytest.mark.parametrize(
    "bad_rows",
    [[0, 0], [64], [-1], [1.0], [True], ["1"], [None], "01", b"\x00", 3, {1, 2}, None],
)
def test_bad_rows_are_refused(bad_rows: object) -> None:
    with pytest.raises(EngineError):
        rows.row_digests_of("ab", 0, 64, bad_rows)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, 32, 65, 8192, 64.0, True, "64"])
def test_bad_n_is_refused(n: object) -> None:
    with pytest.raises(EngineError):
        rows.row_digests_of("ab", 0, n, [0])  # type: ignore[arg-type]
    with pytest.raises(EngineError):
        rows.loop_output("ab", 0, n)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed,i", [("", 0), ("AB", 0), ("0xab", 0), ("ab", -1), ("ab", True)])
def test_bad_seed_or_index_is_refused(seed: str, i: int) -> None:
    with pytest.raises(EngineError):
        rows.row_digests_of(seed, i, 64, [0])
    with pytest.raises(EngineError):
        rows.loop_output(seed, i, 64)


def test_chunk_key_skips_words() -> None:
    key = gemm.loop_key("ab", 0)
    counters = gemm.word_counters(np, 40)
    whole, tmp = np.empty(40, np.uint64), np.empty(40, np.uint64)
    gemm.splitmix64_into(np, np.uint64(key), counters, whole, tmp)
    part = np.empty(8, np.uint64)
    gemm.splitmix64_into(np, rows.chunk_key(key, 32), counters[:8], part, tmp[:8])
    assert part.tolist() == whole[32:].tolist()


def _blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_blas_is_single_threaded_inside_and_restored_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = _blas_threads()
    seen: list[list[int]] = []
    real_matmul = np.matmul

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(_blas_threads())
        return real_matmul(*args, **kwargs)

    monkeypatch.setattr(rows.np, "matmul", spy)
    rows.row_digests_of("ab", 0, 64, [1, 2])
    rows.loop_output("ab", 0, 64)
    monkeypatch.undo()
    assert seen and all(threads and set(threads) == {1} for threads in seen)
    assert _blas_threads() == before


def test_blas_limit_does_not_leak_from_concurrent_audits() -> None:
    before = _blas_threads()
    errors: list[BaseException] = []

    def audit(k: int) -> None:
        try:
            for j in range(3):
                rows.row_digests_of("ab", k * 10 + j, 128, [k, 100 - k])
                rows.loop_output("ab", k, 64)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=audit, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _blas_threads() == before


def test_blas_limit_is_restored_after_an_error() -> None:
    before = _blas_threads()
    with pytest.raises(RuntimeError), rows.single_threaded_blas():
        assert set(_blas_threads()) == {1}
        raise RuntimeError("boom")
    assert _blas_threads() == before

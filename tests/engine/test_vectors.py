"""Golden vectors of HC-GEMM-v1 (SPEC 1): every intermediate, on the fast path and the reference."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from hashcloud.engine import gemm
from hashcloud.engine.mining import Engine
from hashcloud.engine.reference import reference_loop
from hashcloud.engine.selftest import GOLDEN_LEAVES

from .conftest import EXPECTED_GEMM_VECTORS


def _fast_intermediates(v: dict) -> dict:
    """Every checked quantity of one vector computed with the NumPy fast path."""
    seed, i, n = v["seed"], v["i"], v["n"]
    key = gemm.loop_key(seed, i)
    words = np.empty((1, 4), dtype=np.uint64)
    gemm.splitmix64_into(np, np.uint64(key), gemm.word_counters(np, 4), words,
                         np.empty_like(words))
    a, b = gemm.generate_operands(np, seed, i, 1, n)
    c = np.matmul(a[0], b[0])
    digests = gemm.row_digests(np, c)
    output = gemm.digests_to_output(digests)
    return {
        "loop_seed": gemm.loop_seed(seed, i),
        "key": key,
        "words_0_3": [int(w) for w in words[0]],
        "A_row0_first8": [int(x) for x in a[0, 0, :8]],
        "B_row0_first8": [int(x) for x in b[0, 0, :8]],
        "C_row0_first4": [int(x) for x in c[0, :4]],
        "C_sum": int(c.astype(np.int64).sum()),
        "row_digests_first4": [int(d) for d in digests[:4]],
        "output_sha256": hashlib.sha256(output).hexdigest(),
        "leaf": "0x" + gemm.leaf_hash(gemm.loop_seed(seed, i), output).hex(),
    }


def test_fast_path_matches_every_vector_field(gemm_vectors: list[dict]) -> None:
    ran = 0
    for v in gemm_vectors:
        got = _fast_intermediates(v)
        for field, value in got.items():
            assert value == v[field], (field, v["loop_seed"], v["n"])
        ran += 1
    assert ran >= EXPECTED_GEMM_VECTORS


def test_reference_matches_every_vector(gemm_vectors: list[dict]) -> None:
    ran = 0
    for v in gemm_vectors:
        ref = reference_loop(v["seed"], v["i"], v["n"])
        assert ref["loop_seed"] == v["loop_seed"]
        assert ref["key"] == v["key"]
        assert ref["words"] == v["words_0_3"]
        assert ref["A"][0, :8].tolist() == v["A_row0_first8"]
        assert ref["B"][0, :8].tolist() == v["B_row0_first8"]
        assert ref["C"][0, :4].tolist() == v["C_row0_first4"]
        assert int(ref["C"].sum()) == v["C_sum"]
        assert ref["digests"][:4] == v["row_digests_first4"]
        assert hashlib.sha256(ref["output"]).hexdigest() == v["output_sha256"]
        assert "0x" + ref["leaf"].hex() == v["leaf"]
        ran += 1
    assert ran >= EXPECTED_GEMM_VECTORS


def test_compute_leaf_and_engine_match_vectors(gemm_vectors: list[dict]) -> None:
    ran = 0
    for v in gemm_vectors:
        assert "0x" + gemm.compute_leaf(v["seed"], v["i"], v["n"]).hex() == v["leaf"]
        with Engine("numpy", n=v["n"]) as engine:
            assert "0x" + engine.compute_batch(v["seed"], v["i"], 1)[0].hex() == v["leaf"]
        ran += 1
    assert ran >= EXPECTED_GEMM_VECTORS


def test_embedded_selftest_leaves_equal_shared_vectors(gemm_vectors: list[dict]) -> None:
    shared = {(v["seed"], v["i"], v["n"], v["leaf"][2:]) for v in gemm_vectors}
    assert len(GOLDEN_LEAVES) == EXPECTED_GEMM_VECTORS
    assert set(GOLDEN_LEAVES) <= shared


@pytest.mark.parametrize("seed,i,n,leaf_hex", GOLDEN_LEAVES)
def test_embedded_golden_leaves_without_shared_dir(seed: str, i: int, n: int,
                                                   leaf_hex: str) -> None:
    assert gemm.compute_leaf(seed, i, n).hex() == leaf_hex


def test_large_vectors_n1024_and_n4096(vectors: dict) -> None:
    """SPEC v1.1 `gemm_large`: the n=1024 and n=4096 leaves, through the engine and the
    auditor's one-leaf path (a few seconds of CPU at n=4096)."""
    large = vectors["gemm_large"]
    assert sorted(v["n"] for v in large) == [1024, 4096]
    for v in large:
        assert gemm.loop_seed(v["seed"], v["i"]) == v["loop_seed"]
        assert gemm.compute_leaf(v["seed"], v["i"], v["n"]).hex() == v["leaf"]
        if v["n"] == 1024:
            with Engine("numpy", n=v["n"]) as engine:
                assert engine.compute_batch(v["seed"], v["i"], 1)[0].hex() == v["leaf"]


def test_embedded_large_vectors_match_the_file(vectors: dict) -> None:
    from hashcloud.engine.golden import GOLDEN_LARGE

    shared = {(v["seed"], v["i"], v["n"], v["leaf"].removeprefix("0x"))
              for v in vectors["gemm_large"]}
    assert set(GOLDEN_LARGE) == shared and len(GOLDEN_LARGE) == 2

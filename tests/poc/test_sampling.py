"""Stratified sample indices (SPEC 3): counts, strata, offline derivation, checks."""

from __future__ import annotations

import hashlib
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.errors import ProofError
from hashcloud.poc.sampling import (
    check_stratified,
    offline_indices,
    random_indices,
    sample_count,
    strata,
)

DERANDOMIZED = settings(derandomize=True, deadline=None, max_examples=100)
loops_and_s = st.integers(min_value=1, max_value=10**7).flatmap(
    lambda loops: st.tuples(st.just(loops), st.integers(min_value=1, max_value=min(loops, 300)))
)


def test_offline_indices_vector(vectors) -> None:
    offline = vectors["offline_indices"]
    cases = offline if isinstance(offline, list) else [offline]
    ran = 0
    for case in cases:
        got = offline_indices(bytes.fromhex(case["merkle_root"][2:]), case["loops"], case["s"])
        assert got == case["indices"]
        check_stratified(got, case["loops"], case["s"])
        ran += 1
    assert ran >= 1


def test_offline_indices_formula_independently() -> None:
    root, loops, s = "0x" + "12" * 32, 12345, 37
    for j, index in enumerate(offline_indices(b"\x12" * 32, loops, s)):
        lo, hi = math.floor(j * loops / s), math.floor((j + 1) * loops / s)
        digest = hashlib.sha256(("hc-fs:" + root + ":" + str(j)).encode("ascii")).digest()
        assert index == lo + int.from_bytes(digest, "big") % (hi - lo)


@pytest.mark.parametrize(
    ("loops", "expected"),
    [
        (1, 1),
        (5, 5),
        (9, 9),
        (10, 10),
        (11, 10),
        (999, 10),
        (1000, 10),
        (1001, 11),
        (1100, 11),
        (1101, 12),
        (25_600, 256),
        (25_601, 256),
        (100_000, 256),
    ],
)
def test_sample_count(loops: int, expected: int) -> None:
    assert sample_count(loops) == expected


def test_sample_count_s_max_and_bad_args() -> None:
    assert sample_count(100_000, s_max=1000) == 1000
    assert sample_count(100_000, s_max=3) == 3
    assert sample_count(2, s_max=3) == 2
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ProofError):
            sample_count(bad)  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        sample_count(10, s_max=0)


@DERANDOMIZED
@given(st.integers(min_value=1, max_value=10**12), st.integers(min_value=1, max_value=10**4))
def test_sample_count_matches_float_formula_where_exact(loops: int, s_max: int) -> None:
    # Integer ceil agrees with the exact rational ceil(loops / 100).
    expected = min(loops, max(10, -(-loops // 100)), s_max)
    assert sample_count(loops, s_max) == expected
    assert 1 <= sample_count(loops, s_max) <= min(loops, s_max)


@DERANDOMIZED
@given(loops_and_s)
def test_strata_tile_the_range(args: tuple[int, int]) -> None:
    loops, s = args
    bounds = strata(loops, s)
    assert len(bounds) == s
    assert bounds[0][0] == 0 and bounds[-1][1] == loops
    for (_, hi), (next_lo, _) in zip(bounds, bounds[1:], strict=False):
        assert hi == next_lo
    assert all(hi > lo for lo, hi in bounds)
    # Equal strata: sizes differ by at most one.
    sizes = {hi - lo for lo, hi in bounds}
    assert max(sizes) - min(sizes) <= 1


@DERANDOMIZED
@given(loops_and_s, st.integers(min_value=0, max_value=2**32))
def test_random_indices_one_per_stratum(args: tuple[int, int], seed: int) -> None:
    loops, s = args
    indices = random_indices(loops, s, random.Random(seed))
    check_stratified(indices, loops, s)
    assert indices == sorted(set(indices))


def test_random_indices_default_csprng() -> None:
    indices = random_indices(10_000, 100)
    check_stratified(indices, 10_000, 100)
    # Two independent CSPRNG draws over 100 strata of 100 coincide with probability 1e-200.
    assert indices != random_indices(10_000, 100)


def test_random_indices_cover_each_stratum_uniformly() -> None:
    # 3 strata of sizes 3, 3, 4 (loops=10); 4000 draws, fixed seed; every value is hit.
    rng = random.Random(1234)
    counts: dict[int, int] = {}
    for _ in range(4000):
        for index in random_indices(10, 3, rng):
            counts[index] = counts.get(index, 0) + 1
    assert sorted(counts) == list(range(10))
    for index, count in counts.items():
        expected = 4000 / (4 if index >= 6 else 3)
        assert abs(count - expected) < 0.15 * expected


@DERANDOMIZED
@given(loops_and_s, st.data())
def test_check_stratified_rejects_tampering(args: tuple[int, int], data: st.DataObject) -> None:
    loops, s = args
    good = random_indices(loops, s, random.Random(s))
    check_stratified(good, loops, s)
    j = data.draw(st.integers(min_value=0, max_value=s - 1), label="stratum")
    lo, hi = strata(loops, s)[j]
    bad_value = data.draw(
        st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi)), label="value"
    )
    candidates = [
        good[:j] + [bad_value] + good[j + 1 :],  # outside its stratum / out of range
        good[:-1],  # missing one
        good + [good[-1]],  # extra duplicate
    ]
    if s > 1:
        candidates.append(good[::-1] if good[0] != good[-1] else good[1:] + good[:1])
        candidates.append([good[0]] + good[:-1])  # duplicate, shifted
    for bad in candidates:
        with pytest.raises(ProofError):
            check_stratified(bad, loops, s)


def test_check_stratified_rejects_types_and_bad_parameters() -> None:
    with pytest.raises(ProofError):
        check_stratified([0.0], 1, 1)  # type: ignore[list-item]
    with pytest.raises(ProofError):
        check_stratified([True], 2, 1)  # type: ignore[list-item]
    for loops, s in ((0, 1), (5, 0), (5, 6), (5, -1)):
        with pytest.raises(ProofError):
            check_stratified([], loops, s)
        with pytest.raises(ProofError):
            strata(loops, s)
        with pytest.raises(ProofError):
            offline_indices(b"\x00" * 32, loops, s)
    for root in ("0x" + "00" * 32, b"\x00" * 31):  # the root is 32 bytes, not its hex
        with pytest.raises(ProofError):
            offline_indices(root, 10, 2)  # type: ignore[arg-type]

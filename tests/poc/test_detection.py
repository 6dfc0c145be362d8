"""Detection probability of the audit (SPEC 3, paper section 7)."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.errors import ProofError
from hashcloud.poc.detection import detection_table, min_audits_for, p_detect, p_detect_exact

DERANDOMIZED = settings(derandomize=True, deadline=None, max_examples=150)
s_x_m = st.integers(min_value=1, max_value=300).flatmap(
    lambda s: st.tuples(
        st.just(s), st.integers(min_value=0, max_value=s), st.integers(min_value=0, max_value=s)
    )
)


def miss_probability_by_product(s: int, forged: int, m: int) -> Fraction:
    """P(no forged sample among m drawn without replacement), drawn one at a time."""
    p = Fraction(1)
    for k in range(m):
        honest_left = s - forged - k
        if honest_left <= 0:
            return Fraction(0)
        p *= Fraction(honest_left, s - k)
    return p


def test_known_values() -> None:
    assert p_detect(10, 0, 3) == 0.0
    assert p_detect(10, 10, 1) == 1.0
    assert p_detect(10, 1, 3) == pytest.approx(0.3)
    assert p_detect(10, 2, 3) == pytest.approx(1 - 56 / 120)
    assert p_detect(256, 26, 3) == pytest.approx(1 - (230 * 229 * 228) / (256 * 255 * 254))
    assert p_detect(5, 3, 0) == 0.0
    assert p_detect(1, 1, 1) == 1.0


@DERANDOMIZED
@given(s_x_m)
def test_matches_independent_computation(args: tuple[int, int, int]) -> None:
    s, forged, m = args
    exact = p_detect_exact(s, forged, m)
    assert exact == 1 - miss_probability_by_product(s, forged, m)
    assert p_detect(s, forged, m) == float(exact)
    assert 0.0 <= p_detect(s, forged, m) <= 1.0
    if forged == 0 or m == 0:
        assert exact == 0
    if forged == s and m > 0:
        assert exact == 1
    if m >= s - forged + 1:
        assert exact == 1


def test_matches_enumeration_of_audit_sets() -> None:
    for s in range(1, 8):
        for forged in range(s + 1):
            for m in range(s + 1):
                sets = list(combinations(range(s), m))
                hits = sum(1 for chosen in sets if any(i < forged for i in chosen))
                assert p_detect_exact(s, forged, m) == Fraction(hits, len(sets))


@DERANDOMIZED
@given(s_x_m)
def test_monotone_in_m_and_forged(args: tuple[int, int, int]) -> None:
    s, forged, m = args
    if m < s:
        assert p_detect_exact(s, forged, m + 1) >= p_detect_exact(s, forged, m)
    if forged < s:
        assert p_detect_exact(s, forged + 1, m) >= p_detect_exact(s, forged, m)


@pytest.mark.parametrize(
    "args", [(0, 0, 0), (-1, 0, 0), (5, 6, 1), (5, -1, 1), (5, 1, 6), (5, 1, -1), (True, 0, 0)]
)
def test_bad_arguments_raise_proof_error(args: tuple[int, int, int]) -> None:
    with pytest.raises(ProofError):
        p_detect(*args)


def test_detection_table() -> None:
    rows = detection_table(256, 3)
    assert [x for x, _ in rows] == [1, 3, 13, 26, 64, 128, 256]
    assert all(p == p_detect(256, x, 3) for x, p in rows)
    assert [p for _, p in rows] == sorted(p for _, p in rows)
    assert detection_table(10, 2, [0, 5]) == [(0, 0.0), (5, p_detect(10, 5, 2))]
    assert [x for x, _ in detection_table(10, 3)] == [1, 3, 5, 10]
    with pytest.raises(ProofError):
        detection_table(10, 11)
    with pytest.raises(ProofError):
        detection_table(10, 3, [11])


@DERANDOMIZED
@given(
    st.integers(min_value=1, max_value=200).flatmap(
        lambda s: st.tuples(st.just(s), st.integers(min_value=1, max_value=s))
    ),
    st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 1.0]),
)
def test_min_audits_for_is_smallest(args: tuple[int, int], target: float) -> None:
    s, forged = args
    m = min_audits_for(s, forged, target)
    assert p_detect_exact(s, forged, m) >= Fraction(target)
    if m > 0:
        assert p_detect_exact(s, forged, m - 1) < Fraction(target)


def test_min_audits_for_edges() -> None:
    assert min_audits_for(10, 0, 0.0) == 0
    assert min_audits_for(10, 1, 1.0) == 10
    assert min_audits_for(10, 10, 1.0) == 1
    with pytest.raises(ProofError):
        min_audits_for(10, 0, 0.5)
    for bad in (-0.1, 1.1, float("nan"), "0.5", True):
        with pytest.raises(ProofError):
            min_audits_for(10, 1, bad)  # type: ignore[arg-type]

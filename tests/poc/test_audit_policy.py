"""Adaptive audit policy (SPEC 3 "Adaptive audit"): pure, deterministic, monotone."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hashcloud.errors import AuditError
from hashcloud.poc.audit_policy import DEFAULT_POLICY, AuditPolicy, WorkerHistory, claimed_rate

DERANDOMIZED = settings(derandomize=True, deadline=None, max_examples=150)
POLICY = DEFAULT_POLICY
PEAK = 100e12
NOW = 1_700_000_000.0
DAY = 24 * 3600.0

histories = st.builds(
    WorkerHistory,
    accepted=st.integers(min_value=0, max_value=200),
    failed=st.integers(min_value=0, max_value=20),
    failure_times=st.lists(st.floats(min_value=NOW - 30 * DAY, max_value=NOW), max_size=10).map(
        lambda xs: tuple(sorted(xs))
    ),
    mean_rate=st.one_of(st.none(), st.floats(min_value=1e9, max_value=PEAK)),
)
rates = st.floats(min_value=1e6, max_value=PEAK)
sample_counts = st.integers(min_value=1, max_value=256)


def history_of(accepted: int = 0, failures: tuple[float, ...] = (), rate: float | None = None):
    """A history with `accepted` rounds at `rate` and failures at the given times."""
    return WorkerHistory(
        accepted=accepted, failed=len(failures), failure_times=failures, mean_rate=rate
    )


def test_defaults() -> None:
    new = WorkerHistory()
    assert POLICY.base_m == 3 and POLICY.trusted_m == 2
    assert POLICY.choose_m(256, 1e12, PEAK, new, NOW) == 3
    assert POLICY.choose_m(2, 1e12, PEAK, new, NOW) == 2  # never above s
    assert POLICY.choose_m(256, 0.9 * PEAK, PEAK, new, NOW) == 6  # near the peak
    steady = history_of(accepted=10, rate=1e12)
    assert POLICY.choose_m(256, 1.5e12, PEAK, steady, NOW) == 3
    assert POLICY.choose_m(256, 2.5e12, PEAK, steady, NOW) == 6  # departs upward
    assert POLICY.choose_m(256, 0.4e12, PEAK, steady, NOW) == 6  # departs downward
    one_failure = history_of(accepted=10, failures=(NOW - 10,), rate=1e12)
    assert POLICY.choose_m(256, 1e12, PEAK, one_failure, NOW) == 6
    two_failures = history_of(accepted=10, failures=(NOW - 20, NOW - 10), rate=1e12)
    assert POLICY.choose_m(256, 1e12, PEAK, two_failures, NOW) == 256  # audit everything
    old_failures = history_of(accepted=10, failures=(NOW - 30 * DAY,), rate=1e12)
    assert POLICY.choose_m(256, 1e12, PEAK, old_failures, NOW) == 3  # forgotten, not forgiven
    trusted = history_of(accepted=50, rate=1e12)
    assert POLICY.choose_m(256, 1e12, PEAK, trusted, NOW) == 2
    assert POLICY.choose_m(256, 0.9 * PEAK, PEAK, trusted, NOW) == 9  # near peak + departs
    fast_trusted = history_of(accepted=50, rate=0.85 * PEAK)
    assert POLICY.choose_m(256, 0.9 * PEAK, PEAK, fast_trusted, NOW) == 6  # triggers beat trust
    ever_failed = trusted.model_copy(update={"failed": 1})
    assert POLICY.choose_m(256, 1e12, PEAK, ever_failed, NOW) == 3


def test_never_below_one() -> None:
    lenient = AuditPolicy(base_m=1, trusted_m=1)
    assert lenient.choose_m(1, 1e12, PEAK, history_of(accepted=100, rate=1e12), NOW) == 1


@DERANDOMIZED
@given(sample_counts, rates, histories)
def test_m_in_range(s: int, rate: float, history: WorkerHistory) -> None:
    assert 1 <= POLICY.choose_m(s, rate, PEAK, history, NOW) <= s


@DERANDOMIZED
@given(sample_counts, rates, rates)
def test_monotone_in_claimed_rate_without_history(s: int, a: float, b: float) -> None:
    low, high = sorted((a, b))
    new = WorkerHistory()
    assert POLICY.choose_m(s, low, PEAK, new, NOW) <= POLICY.choose_m(s, high, PEAK, new, NOW)


@DERANDOMIZED
@given(sample_counts, rates, histories)
def test_a_new_failure_never_lowers_m(s: int, rate: float, history: WorkerHistory) -> None:
    worse = POLICY.record_result(history, False, None, NOW)
    assert POLICY.choose_m(s, rate, PEAK, worse, NOW) >= POLICY.choose_m(
        s, rate, PEAK, history, NOW
    )


@DERANDOMIZED
@given(sample_counts, sample_counts, rates, histories)
def test_monotone_in_s(s1: int, s2: int, rate: float, history: WorkerHistory) -> None:
    small, large = sorted((s1, s2))
    assert POLICY.choose_m(small, rate, PEAK, history, NOW) <= POLICY.choose_m(
        large, rate, PEAK, history, NOW
    )


@DERANDOMIZED
@given(sample_counts, rates, histories)
def test_pure_and_deterministic(s: int, rate: float, history: WorkerHistory) -> None:
    before = history.model_dump_json()
    first = POLICY.choose_m(s, rate, PEAK, history, NOW)
    assert first == POLICY.choose_m(s, rate, PEAK, history, NOW)
    POLICY.record_result(history, True, rate, NOW)
    POLICY.record_result(history, False, None, NOW)
    assert history.model_dump_json() == before


@DERANDOMIZED
@given(st.lists(rates, min_size=1, max_size=30))
def test_record_result_mean_rate(values: list[float]) -> None:
    history = WorkerHistory()
    for value in values:
        history = POLICY.record_result(history, True, value, NOW)
    assert history.accepted == len(values) and history.failed == 0
    assert history.mean_rate == pytest.approx(sum(values) / len(values), rel=1e-9)


def test_record_result_failures() -> None:
    history = history_of(accepted=3, rate=1e12)
    for k in range(20):
        history = POLICY.record_result(history, False, 5e13, NOW + k)
    assert history.failed == 20 and history.accepted == 3 and history.mean_rate == 1e12
    assert len(history.failure_times) == POLICY.failure_memory
    assert history.failure_times[-1] == NOW + 19
    earlier = POLICY.record_result(history, False, None, NOW - 5)  # clock stepped back
    assert list(earlier.failure_times) == sorted(earlier.failure_times)
    with pytest.raises(AuditError):
        POLICY.record_result(history, True, None, NOW)
    with pytest.raises(AuditError):
        POLICY.record_result(history, True, float("inf"), NOW)
    with pytest.raises(AuditError):
        POLICY.record_result(history, False, None, float("nan"))


def test_cooldown() -> None:
    assert POLICY.cooldown_until(WorkerHistory(), NOW) is None
    two = history_of(failures=(NOW - 20, NOW - 10))
    assert POLICY.cooldown_until(two, NOW) is None
    three = history_of(failures=(NOW - 30, NOW - 20, NOW - 10))
    assert POLICY.cooldown_until(three, NOW) == NOW - 10 + 3600
    four = POLICY.record_result(three, False, None, NOW)
    assert POLICY.cooldown_until(four, NOW) == NOW + 7200
    assert POLICY.cooldown_until(four, NOW + 7200) is None  # served
    many = history_of(failures=tuple(NOW - k for k in range(16, 0, -1)))
    assert POLICY.cooldown_until(many, NOW) == NOW - 1 + POLICY.cooldown_max
    stale = history_of(failures=(NOW - 30 * DAY, NOW - 29 * DAY, NOW - 28 * DAY))
    assert POLICY.cooldown_until(stale, NOW) is None


@DERANDOMIZED
@given(histories, st.floats(min_value=0, max_value=10 * DAY))
def test_cooldown_never_shortened_by_more_failures(history: WorkerHistory, later: float) -> None:
    now = NOW + later
    before = POLICY.cooldown_until(history, now)
    after = POLICY.cooldown_until(POLICY.record_result(history, False, None, now), now)
    if before is not None:
        assert after is not None and after >= before


def test_bad_arguments() -> None:
    new = WorkerHistory()
    for args in (
        (0, 1e12, PEAK),
        (True, 1e12, PEAK),
        (10, 0.0, PEAK),
        (10, float("nan"), PEAK),
        (10, 1e12, -1.0),
        (10, 2 * PEAK, PEAK),  # above the device peak: refused by the sanity checks
    ):
        with pytest.raises(AuditError):
            POLICY.choose_m(*args, new, NOW)  # type: ignore[arg-type]


def test_claimed_rate() -> None:
    assert claimed_rate(10, 1024, 2.0) == 10 * 2 * 1024**3 / 2.0
    for args in ((0, 64, 1.0), (1, 0, 1.0), (1, 64, 0.0), (1, 64, float("inf"))):
        with pytest.raises(AuditError):
            claimed_rate(*args)  # type: ignore[arg-type]


@DERANDOMIZED
@given(histories)
def test_history_json_round_trip(history: WorkerHistory) -> None:
    text = history.model_dump_json()
    assert json.loads(text)["accepted"] == history.accepted
    assert WorkerHistory.model_validate_json(text) == history


def test_history_and_policy_validation() -> None:
    with pytest.raises(ValidationError):
        WorkerHistory(accepted=-1)
    with pytest.raises(ValidationError):
        WorkerHistory(failure_times=(2.0, 1.0))
    with pytest.raises(ValidationError):
        WorkerHistory.model_validate_json('{"accepted": "3"}')
    with pytest.raises(ValidationError):
        WorkerHistory.model_validate_json('{"mean_rate": 0}')
    with pytest.raises(ValidationError):
        WorkerHistory.model_validate_json('{"unknown": 1}')
    with pytest.raises(ValidationError):
        WorkerHistory().accepted = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        AuditPolicy(trusted_m=0)
    policy = AuditPolicy(base_m=5)
    assert AuditPolicy.model_validate_json(policy.model_dump_json()) == policy

"""Adaptive audit policy: how many revealed samples to recompute (SPEC 3, paper section 8).

The node verifies every inclusion proof but recomputes only `m` of the `s` samples. `m`
starts at `base_m` and grows when the claimed rate is near the device's peak, when the rate
departs from the worker's own history, and when the worker recently failed audits; it shrinks
(never below 1) for a long clean history. Repeated failures also put the worker in a cooldown
during which no new challenge is issued.

Everything here is pure and deterministic: the caller passes `now` and persists the
`WorkerHistory` records (JSON via `model_dump_json` / `model_validate_json`).

Rates: any one unit used consistently for `claimed_rate`, `device_peak` and `record_result`;
SPEC 3's claimed rate `loops * 2 * n^3 / compute_time` (FLOP/s, see `claimed_rate`) is
the natural choice since device peaks are quoted in FLOP/s.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hashcloud.errors import AuditError

__all__ = ["DEFAULT_POLICY", "AuditPolicy", "WorkerHistory", "claimed_rate"]


def claimed_rate(loops: int, n: int, compute_time: float) -> float:
    """SPEC 3's claimed rate `loops * 2 * n^3 / compute_time` in FLOP/s."""
    if isinstance(loops, bool) or not isinstance(loops, int) or loops < 1:
        raise AuditError("loops must be a positive integer")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise AuditError("n must be a positive integer")
    if not math.isfinite(compute_time) or compute_time <= 0:
        raise AuditError("compute_time must be a positive number")
    return loops * 2 * n**3 / compute_time


def _check_rate(rate: float, what: str) -> float:
    """Require a finite, strictly positive rate."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise AuditError(f"{what} must be a number")
    if not math.isfinite(rate) or rate <= 0:
        raise AuditError(f"{what} must be finite and positive")
    return float(rate)


class WorkerHistory(BaseModel):
    """What the node remembers about one worker (SPEC 3 adaptive audit). Immutable.

    `mean_rate` is the arithmetic mean of the rates of accepted rounds only (a failed round's
    claim is untrusted). `failure_times` keeps the timestamps of the most recent failed audits,
    oldest first, at most `AuditPolicy.failure_memory` of them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    #: Rounds whose audit passed.
    accepted: int = Field(default=0, ge=0)
    #: Audits failed over the worker's whole life (never forgotten).
    failed: int = Field(default=0, ge=0)
    #: Unix times of the latest failed audits, oldest first.
    failure_times: tuple[float, ...] = ()
    #: Mean rate of accepted rounds, or None before the first one.
    mean_rate: float | None = Field(default=None, gt=0)

    @field_validator("failure_times")
    @classmethod
    def _sorted_finite(cls, times: tuple[float, ...]) -> tuple[float, ...]:
        """Failure times are finite and oldest first."""
        if any(not math.isfinite(t) for t in times) or list(times) != sorted(times):
            raise ValueError("failure_times must be finite and sorted")
        return times

    @field_validator("mean_rate")
    @classmethod
    def _finite_rate(cls, rate: float | None) -> float | None:
        """A mean rate is finite."""
        if rate is not None and not math.isfinite(rate):
            raise ValueError("mean_rate must be finite")
        return rate


class AuditPolicy(BaseModel):
    """The adaptive rule for `m` and the failure cooldown (SPEC 3 "Adaptive audit"). Immutable.

    Each field is one documented knob; the defaults are the node's policy.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: `m` for an ordinary round (SPEC 3 default `m = 3`).
    base_m: int = Field(default=3, ge=1)
    #: `m` for a long clean history; still at least 1 (SPEC 3: "never below 1").
    trusted_m: int = Field(default=2, ge=1)
    #: Accepted rounds, with no failure ever, that earn `trusted_m`.
    trusted_after: int = Field(default=50, ge=1)
    #: A claim above this fraction of the device peak is "near the limit": add `base_m`.
    near_peak_fraction: float = Field(default=0.8, gt=0, le=1)
    #: A rate above this multiple of the worker's mean departs from history: add `base_m`.
    departure_high: float = Field(default=2.0, gt=1)
    #: A rate below this fraction of the worker's mean departs from history: add `base_m`.
    departure_low: float = Field(default=0.5, gt=0, lt=1)
    #: Accepted rounds needed before the mean rate is trusted as a baseline.
    history_min_rounds: int = Field(default=3, ge=1)
    #: How long (seconds) a failed audit counts as "recent".
    recent_window: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: Extra samples recomputed per recent failure.
    per_failure_m: int = Field(default=3, ge=0)
    #: With this many recent failures, recompute every sample (`m = s`).
    audit_all_after: int = Field(default=2, ge=1)
    #: With this many recent failures, refuse new challenges for a while.
    cooldown_after: int = Field(default=3, ge=1)
    #: Cooldown after the `cooldown_after`-th recent failure; doubles with each further one.
    cooldown_base: float = Field(default=3600.0, gt=0)
    #: Upper bound on one cooldown (seconds).
    cooldown_max: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: Failure timestamps kept in a history (enough to evaluate the rules above).
    failure_memory: int = Field(default=16, ge=1)

    def recent_failures(self, history: WorkerHistory, now: float) -> int:
        """Failed audits within `recent_window` before `now` (SPEC 3)."""
        return sum(1 for t in history.failure_times if t > now - self.recent_window)

    def choose_m(
        self,
        s: int,
        claimed_rate: float,
        device_peak: float,
        history: WorkerHistory,
        now: float,
    ) -> int:
        """Number of the `s` samples to recompute for this commitment (SPEC 3).

        Starts at `base_m`; adds `base_m` for a claim above `near_peak_fraction` of the peak,
        `base_m` for a rate outside `[departure_low, departure_high]` times the worker's
        mean, and `per_failure_m` per recent failure; `audit_all_after` recent failures mean
        all `s`. A clean history of `trusted_after` rounds with none of these triggers gets
        `trusted_m`. The result is clamped to `[1, s]`. A claim above the peak must have
        been refused by the sanity checks, so it raises AuditError here.
        """
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise AuditError("sample count s must be a positive integer")
        rate = _check_rate(claimed_rate, "claimed rate")
        peak = _check_rate(device_peak, "device peak")
        if rate > peak:
            raise AuditError("claimed rate above the device peak")

        recent = self.recent_failures(history, now)
        if recent >= self.audit_all_after:
            return s

        m = self.base_m
        raised = False
        if rate > self.near_peak_fraction * peak:
            m += self.base_m
            raised = True
        if history.mean_rate is not None and history.accepted >= self.history_min_rounds:
            ratio = rate / history.mean_rate
            if ratio > self.departure_high or ratio < self.departure_low:
                m += self.base_m
                raised = True
        if recent:
            m += self.per_failure_m * recent
            raised = True
        clean = history.failed == 0 and history.accepted >= self.trusted_after
        if clean and not raised:
            m = self.trusted_m
        return max(1, min(m, s))

    def cooldown_until(self, history: WorkerHistory, now: float) -> float | None:
        """Time before which the worker gets no new challenge, or None (SPEC 3 rate limits).

        After `cooldown_after` recent failures the worker waits `cooldown_base` from its
        latest failure, doubled for each further recent failure, at most `cooldown_max`.
        """
        recent = self.recent_failures(history, now)
        if recent < self.cooldown_after:
            return None
        extra = recent - self.cooldown_after
        # min() on the exponent first so a long failure list cannot overflow the float.
        length = min(self.cooldown_base * 2.0 ** min(extra, 64), self.cooldown_max)
        until = history.failure_times[-1] + length
        return until if until > now else None

    def record_result(
        self, history: WorkerHistory, accepted: bool, rate: float | None, now: float
    ) -> WorkerHistory:
        """The worker's history after one audited round (SPEC 3); `history` is unchanged.

        An accepted round updates the mean rate with `rate` (required); a failed round adds
        the failure at `now` (its `rate` is untrusted and ignored) and keeps only the latest
        `failure_memory` failure times.
        """
        if not math.isfinite(now):
            raise AuditError("now must be finite")
        if accepted:
            value = _check_rate(rate, "rate")  # type: ignore[arg-type]
            k = history.accepted
            mean = value if history.mean_rate is None else (history.mean_rate * k + value) / (k + 1)
            return history.model_copy(update={"accepted": k + 1, "mean_rate": mean})
        # Keep timestamps sorted even if the clock stepped back.
        times = sorted((*history.failure_times, float(now)))[-self.failure_memory :]
        return history.model_copy(
            update={"failed": history.failed + 1, "failure_times": tuple(times)}
        )


#: The node's default policy.
DEFAULT_POLICY = AuditPolicy()

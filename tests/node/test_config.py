"""`ValidatorConfig`: the validator's typed, frozen options (SPEC 3 knobs) and their checks.

Defaults are the documented policy; every bad value is refused at construction with an
InvalidOption naming the field (CLI exit 2), so a misconfigured node never starts. The
config reaches the validator through `NodeService` unchanged.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from hashcloud.api.models import ChallengeRequest
from hashcloud.crypto.signatures import sign
from hashcloud.errors import InvalidOption
from hashcloud.node.config import DEFAULT_VALIDATOR_CONFIG, ValidatorConfig
from hashcloud.node.service import NodeService
from hashcloud.poc.audit_policy import DEFAULT_POLICY, AuditPolicy
from hashcloud.poc.challenge import challenge_request_bytes
from hashcloud.poc.sampling import DEFAULT_S_MAX
from tests.node.conftest import IP, WORKER_KEY, FakeClock, N, NodeDir

ME = WORKER_KEY.public_key.address

POSITIVE = ["challenge_ttl_ms", "max_open_per_worker", "requests_per_minute_per_address",
            "requests_per_minute_per_ip", "s_max", "max_n", "ip_failures_per_hour"]


def test_defaults_are_the_documented_policy():
    c = ValidatorConfig()
    assert c == DEFAULT_VALIDATOR_CONFIG
    assert (c.challenge_ttl_ms, c.max_open_per_worker, c.requests_per_minute_per_address,
            c.requests_per_minute_per_ip, c.request_time_skew_ms, c.s_max, c.max_n,
            c.ip_failures_per_hour) == (600_000, 4, 60, 240, 120_000, DEFAULT_S_MAX, 4096, 20)
    assert c.policy is DEFAULT_POLICY
    # Unset derived knobs: one more TTL of reveal grace; one audit slot per CPU, 4 waiting each.
    assert c.effective_reveal_grace_ms == 600_000
    assert c.effective_audit_slots == (os.cpu_count() or 1)
    assert c.effective_audit_queue == 4 * c.effective_audit_slots


def test_explicit_derived_knobs_win():
    c = ValidatorConfig(challenge_ttl_ms=300, reveal_grace_ms=0, audit_slots=2, audit_queue=0)
    assert (c.effective_reveal_grace_ms, c.effective_audit_slots, c.effective_audit_queue) == (
        0, 2, 0)
    assert ValidatorConfig(challenge_ttl_ms=300).effective_reveal_grace_ms == 300


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ValidatorConfig().max_n = 64  # type: ignore[misc]
    assert dataclasses.replace(ValidatorConfig(), max_n=128).max_n == 128


@pytest.mark.parametrize("name", POSITIVE)
@pytest.mark.parametrize("value", [0, -1, 1.5, "5", True, None])
def test_positive_integers_refused_otherwise(name, value):
    with pytest.raises(InvalidOption, match=f"{name} must be a positive integer, got"):
        ValidatorConfig(**{name: value})


@pytest.mark.parametrize("name", ["request_time_skew_ms", "reveal_grace_ms", "audit_queue"])
@pytest.mark.parametrize("value", [-1, 0.5, "0", False])
def test_non_negative_integers_refused_otherwise(name, value):
    with pytest.raises(InvalidOption, match=f"{name} must be a non-negative integer"):
        ValidatorConfig(**{name: value})


def test_skew_may_be_zero_but_not_unset():
    assert ValidatorConfig(request_time_skew_ms=0).request_time_skew_ms == 0
    with pytest.raises(InvalidOption, match="request_time_skew_ms"):
        ValidatorConfig(request_time_skew_ms=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -2, 1.0])
def test_audit_slots_refused_otherwise(value):
    with pytest.raises(InvalidOption, match="audit_slots must be a positive integer"):
        ValidatorConfig(audit_slots=value)


def test_policy_must_be_an_audit_policy():
    assert ValidatorConfig(policy=AuditPolicy(base_m=5)).policy.base_m == 5
    with pytest.raises(InvalidOption, match="policy must be an AuditPolicy, got dict"):
        ValidatorConfig(policy={"base_m": 5})  # type: ignore[arg-type]


def test_invalid_option_is_an_input_error():
    """The CLI maps InputError to exit 2: a bad option is unusable input, not a refusal."""
    from hashcloud.errors import InputError

    assert issubclass(InvalidOption, InputError)


def test_node_service_passes_config_and_clock_to_its_validator(node_dir: NodeDir):
    config = ValidatorConfig(max_open_per_worker=7, challenge_ttl_ms=1234)
    clock = FakeClock(1_800_000_000.0)
    svc = NodeService(node_dir.files, config, clock=clock)
    try:
        assert svc.validator.config is config
        t_ms = int(clock() * 1000)  # a request at the fake time is fresh, whatever the date
        sig = sign(WORKER_KEY, challenge_request_bytes(svc.domain, ME, N, t_ms))
        req = ChallengeRequest(worker_address=ME, public_key=WORKER_KEY.public_key.hex(), n=N,
                               request_time_ms=t_ms, signature=sig.hex())
        assert svc.issue_challenge(req, IP).challenge.expiry == t_ms + 1234
    finally:
        svc.close()
    with pytest.raises(TypeError, match="ValidatorConfig"):
        NodeService(node_dir.files, {"max_n": 64})  # type: ignore[arg-type]


def test_s_max_is_bounded_by_what_a_reveal_can_carry():
    from hashcloud.params import MAX_S_MAX

    assert ValidatorConfig(s_max=MAX_S_MAX).s_max == MAX_S_MAX
    with pytest.raises(InvalidOption, match="s_max must be at most"):
        ValidatorConfig(s_max=MAX_S_MAX + 1)

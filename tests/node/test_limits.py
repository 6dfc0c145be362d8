"""Abuse bounds of the validator (SPEC 3 "rate limits"): the limiters alone, then in use.

`SlidingWindow`, `RequestLimits`, `check_open_bound` and `AuditGate` are tested with `now`
passed in; then the same bounds through `PocValidator` with a fake clock: per-address and
per-IP request rates, the replay guard, the open-challenge bound, `max_n`, the bounded
audit queue and failed audits per client IP.
"""

from __future__ import annotations

import math
import threading

import pytest

from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import MerkleTree
from hashcloud.errors import InvalidTransaction, RateLimited, RequestRefused, ValidatorError
from hashcloud.node.app import http_status
from hashcloud.node.config import ValidatorConfig
from hashcloud.node.limits import (
    FAILURE_WINDOW,
    RATE_WINDOW,
    AuditGate,
    RequestLimits,
    SlidingWindow,
    WriteLimits,
    check_open_bound,
)
from tests.node.conftest import (
    HEAD_HASH,
    HEAD_HEIGHT,
    IP,
    OTHER_KEY,
    WORKER_KEY,
    challenge_request,
    committed_challenge,
    honest_reveal,
    issue,
    make_validator,
    reveal_request,
)

T = 1_000.0


# --------------------------------------------------------------------- the limiters alone


def test_sliding_window_counts_per_key_and_slides():
    w = SlidingWindow(limit=2, window=60.0)
    assert w.take("a", T) is None and w.take("a", T + 10) is None
    assert w.take("a", T + 20) == pytest.approx(40.0)  # the first event leaves at T + 60
    assert w.take("b", T + 20) is None  # keys are independent
    assert w.retry_after("a", T + 59.9) == pytest.approx(0.1)
    assert w.take("a", T + 60) is None  # exactly one window later the first one is gone
    assert w.retry_after("a", T + 60) == pytest.approx(10.0)


def test_sliding_window_record_counts_beyond_the_limit_and_retry_is_exact():
    w = SlidingWindow(limit=2, window=100.0)
    for t in (0.0, 10.0, 20.0, 30.0):
        w.record("ip", T + t)  # failures always count, even above the limit
    # Below the limit again only once three of the four have left: at T + 20 + 100.
    assert w.retry_after("ip", T + 30) == pytest.approx(90.0)
    assert w.retry_after("ip", T + 120) is None


def test_sliding_window_prune_forgets_idle_keys():
    w = SlidingWindow(limit=5, window=60.0)
    w.take("old", T)
    w.take("new", T + 30)
    w.prune(T + 60)
    assert len(w) == 1
    with pytest.raises(ValueError):
        SlidingWindow(limit=0, window=60.0)


def test_request_limits_messages_and_retry_hints():
    limits = RequestLimits(per_address=1, per_ip=1, ip_failures=1)
    limits.take_ip(IP, T)
    with pytest.raises(RateLimited, match=f"1 requests per minute for IP {IP}") as exc:
        limits.take_ip(IP, T + 1)
    assert exc.value.retry_after == pytest.approx(RATE_WINDOW - 1)
    limits.take_address("addr", T)
    with pytest.raises(RateLimited, match="for address addr exceeded; retry in 60 s"):
        limits.take_address("addr", T + 0.5)
    limits.check_ip_failures(IP, T)
    limits.record_failure(IP, T)
    with pytest.raises(RateLimited, match=f"too many failed audits from IP {IP}") as exc:
        limits.check_ip_failures(IP, T + 1)
    assert exc.value.retry_after == pytest.approx(FAILURE_WINDOW - 1)
    limits.check_ip_failures(IP, T + FAILURE_WINDOW)


def test_request_limits_replay_guard_forgets_after_its_time():
    limits = RequestLimits(per_address=1, per_ip=1, ip_failures=1)
    limits.check_fresh("addr", 5)
    limits.remember_request("addr", 5, forget_at=T + 240)
    with pytest.raises(RequestRefused, match="already used"):
        limits.check_fresh("addr", 5)
    limits.check_fresh("addr", 6)
    limits.prune(T + 239)
    with pytest.raises(RequestRefused):
        limits.check_fresh("addr", 5)
    limits.prune(T + 240)
    limits.check_fresh("addr", 5)


def test_open_bound():
    check_open_bound(1, 2, T + 50, T)
    with pytest.raises(RateLimited, match=r"too many open challenges \(2 of 2\); finish one "
                                          r"or retry in 50 s") as exc:
        check_open_bound(2, 2, T + 50, T)
    assert exc.value.retry_after == 50


def test_audit_gate_admits_slots_plus_queue():
    gate = AuditGate(slots=1, queue=1)
    gate.admit()
    gate.admit()
    assert gate.pending == 2
    with pytest.raises(RateLimited, match="audit queue is full") as exc:
        gate.admit()
    assert exc.value.retry_after == 1.0
    gate.release()
    gate.admit()
    with pytest.raises(ValueError):
        AuditGate(slots=0, queue=0)


def test_audit_gate_slot_bounds_concurrency():
    gate = AuditGate(slots=1, queue=4)
    inside = threading.Event()

    def second_audit() -> None:
        with gate.slot():
            inside.set()

    with gate.slot():
        t = threading.Thread(target=second_audit)
        t.start()
        assert not inside.wait(0.1)  # the only slot is held
    t.join(5)
    assert inside.is_set()


# --------------------------------------------------------- bounds through the validator


def test_replayed_challenge_request_refused(validator, clock):
    req = challenge_request(WORKER_KEY, clock)
    validator.issue(req, HEAD_HEIGHT, HEAD_HASH, IP)
    with pytest.raises(RequestRefused, match="already used"):
        validator.issue(req, HEAD_HEIGHT, HEAD_HASH, "198.51.100.9")


def test_open_challenge_bound(tmp_path, clock):
    v = make_validator(tmp_path, clock, ValidatorConfig(max_open_per_worker=2))
    issue(v, clock)
    clock.advance(1)
    issue(v, clock)
    clock.advance(1)
    with pytest.raises(RateLimited, match="too many open challenges") as exc:
        issue(v, clock)
    assert http_status(exc.value) == 429
    assert 0 < exc.value.retry_after <= 600
    assert v.open_challenges(WORKER_KEY.public_key.address) == 2
    # Another worker is not affected.
    issue(v, clock, OTHER_KEY)
    # Expired challenges do not count.
    clock.advance(10 * 60)
    assert v.open_challenges(WORKER_KEY.public_key.address) == 0
    issue(v, clock)
    assert v.stats()["rate_limited"] == 1


def test_rate_limit_per_address_and_ip(tmp_path, clock):
    v = make_validator(tmp_path, clock, ValidatorConfig(
        requests_per_minute_per_address=3, requests_per_minute_per_ip=5, max_open_per_worker=100))
    for _ in range(3):
        issue(v, clock, WORKER_KEY, ip="198.51.100.1")
        clock.advance(1)
    with pytest.raises(RateLimited, match="address") as exc:
        issue(v, clock, WORKER_KEY, ip="198.51.100.2")
    assert http_status(exc.value) == 429 and 0 < exc.value.retry_after <= 60
    assert "retry in" in str(exc.value)
    # Per IP: 5 per minute whoever asks (the refused request above counted for its IP).
    for _ in range(2):
        issue(v, clock, OTHER_KEY, ip="198.51.100.1")
        clock.advance(0.5)
    with pytest.raises(RateLimited, match="IP"):
        issue(v, clock, OTHER_KEY, ip="198.51.100.1")
    clock.advance(61)
    issue(v, clock, WORKER_KEY, ip="198.51.100.1")
    assert v.stats()["rate_limited"] == 2


def test_n_above_the_node_maximum_is_refused(tmp_path, clock):
    v = make_validator(tmp_path, clock, ValidatorConfig(max_n=128))
    with pytest.raises(RequestRefused, match="maximum of 128"):
        v.issue(challenge_request(WORKER_KEY, clock, n=256), HEAD_HEIGHT, HEAD_HASH, IP)
    assert v.issue(challenge_request(WORKER_KEY, clock, n=128), HEAD_HEIGHT, HEAD_HASH, IP)


def test_full_audit_queue_is_429_and_the_challenge_can_be_revealed_later(tmp_path, clock,
                                                                        engine):
    """Recomputation is bounded: beyond slots + queue a reveal gets 429 without penalty."""
    v = make_validator(tmp_path, clock, ValidatorConfig(audit_slots=1, audit_queue=0))
    ch, work, com = committed_challenge(v, clock, engine)
    v.audit_gate.admit()  # one audit already running and no queue left
    with pytest.raises(RateLimited, match="audit queue is full"):
        v.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    assert v.history(WORKER_KEY.public_key.address).failed == 0
    v.audit_gate.release()
    receipt, resp = v.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    assert resp.accepted and v.audit_gate.pending == 0
    assert v.stats()["rate_limited"] == 1


def test_failed_audits_from_one_ip_block_fresh_addresses(tmp_path, clock, engine):
    """Fresh keys cost nothing, so failures also count per client IP."""
    v = make_validator(tmp_path, clock, ValidatorConfig(ip_failures_per_hour=2))
    for secret in (0xA1, 0xA2):
        key = PrivateKey(secret)
        ch, work, com = committed_challenge(v, clock, engine, key)
        garbage = [b"\x00" * 32] * len(work.leaves)  # paths that do not match the root
        with pytest.raises(ValidatorError):
            v.reveal(ch.challenge_id, reveal_request(ch, MerkleTree(garbage), garbage,
                                                     com.indices, com.audit, key=key,
                                                     root=work.merkle_root))
    with pytest.raises(RateLimited, match="failed audits from IP"):
        issue(v, clock, PrivateKey(0xA3))
    assert issue(v, clock, PrivateKey(0xA3), ip="198.51.100.7")  # another IP is fine
    clock.advance(3601)
    assert issue(v, clock, PrivateKey(0xA4))


# ---------------------------------------------------------------- write limits (issue 11)


def test_write_limits_count_per_address_and_route() -> None:
    """Transactions and reveals have their own per-address windows (node.edge checks them
    before the body is read)."""
    limits = WriteLimits(transactions_per_minute=2, reveals_per_minute=1)
    limits.take("transactions", "a", 0.0)
    limits.take("transactions", "a", 1.0)
    with pytest.raises(RateLimited, match="2 requests per minute for transactions from IP a") \
            as info:
        limits.take("transactions", "a", 2.0)
    assert info.value.retry_after == pytest.approx(58.0)
    limits.take("transactions", "b", 2.0)
    limits.take("reveals", "a", 2.0)
    with pytest.raises(RateLimited):
        limits.take("reveals", "a", 3.0)
    limits.take("transactions", "a", 60.0)  # the first one left the window


def test_write_limits_charge_a_batch_its_transaction_count() -> None:
    """A batch takes one place per transaction, all or none, in the same window as single
    submissions; its request needs room for one before its body is read."""
    limits = WriteLimits(transactions_per_minute=5, reveals_per_minute=1)
    limits.take("transactions", "a", 0.0)
    limits.take("batches", "a", 1.0)
    limits.take_transactions("a", 3, 1.0)
    with pytest.raises(RateLimited, match="room needed for 2") as info:
        limits.take_transactions("a", 2, 2.0)  # 4 + 2 > 5: none counted
    assert info.value.retry_after == pytest.approx(58.0)  # when the first one leaves
    limits.take_transactions("a", 1, 2.0)
    with pytest.raises(RateLimited):
        limits.take("batches", "a", 3.0)  # no room for one: refused before the body
    with pytest.raises(RateLimited):
        limits.take("transactions", "a", 3.0)
    with pytest.raises(InvalidTransaction, match="smaller batches"):
        limits.take_transactions("b", 6, 3.0)  # more than the window ever holds
    limits.take_transactions("a", 4, 61.0)  # the batch of 3 at 1.0 and the one at 0.0 left
    assert limits.windows["transactions"].retry_after("a", 61.0) is not None


def test_sliding_window_counts_many_events_at_once() -> None:
    w = SlidingWindow(limit=4, window=10.0)
    assert w.take("k", 0.0, count=3) is None
    assert w.take("k", 1.0, count=2) == pytest.approx(9.0)  # the 3 at 0.0 must leave
    assert w.take("k", 1.0) is None
    assert w.retry_after("k", 1.0, count=5) == math.inf  # never fits
    assert w.take("k", 10.0, count=3) is None


def test_write_limits_forget_departed_clients() -> None:
    limits = WriteLimits(transactions_per_minute=5, reveals_per_minute=5)
    for i in range(100):
        limits.take("transactions", f"10.0.0.{i}", 0.0)
    assert len(limits.windows["transactions"]) == 100
    limits.take("transactions", "x", RATE_WINDOW + 1)  # a window later: pruned first
    assert len(limits.windows["transactions"]) == 1

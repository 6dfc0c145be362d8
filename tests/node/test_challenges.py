"""The challenge life cycle (SPEC 3): `ChallengeTable` alone, then through `PocValidator`.

The table is pure bookkeeping with `now_ms` passed in, so its tests build entries by hand
(`issue_challenge` with a test key) and walk them through every transition. The validator
tests drive the same rules end to end with a fake clock: expiry of commits, the reveal grace,
used-up challenges, the idempotent accepted reveal.
"""

from __future__ import annotations

import pytest

from hashcloud.api.models import DeviceModel, RevealRequest, RevealResponse, SampleModel
from hashcloud.errors import ChallengeExpired, ChallengeNotFound, ChallengeUsed
from hashcloud.node.app import http_status
from hashcloud.node.challenges import (
    ChallengeEntry,
    ChallengeState,
    ChallengeTable,
    CommittedWork,
)
from hashcloud.poc.challenge import issue_challenge
from hashcloud.poc.plan import AuditPlan
from hashcloud.poc.sampling import sample_count
from tests.node.conftest import (
    CHAIN,
    HEAD_HASH,
    HEAD_HEIGHT,
    LOOPS,
    NODE_KEY,
    OTHER_KEY,
    WORKER_KEY,
    commit_request,
    committed_challenge,
    honest_reveal,
    issue,
    mine,
    reveal_request,
)

TTL_MS = 60_000
GRACE_MS = 30_000
NOW_MS = 1_700_000_000_000


def entry(cid: str, *, key=WORKER_KEY, issued_ms: int = NOW_MS) -> ChallengeEntry:
    """A challenge `cid` (32 hex digits) issued at `issued_ms`, expiring one TTL later."""
    ch = issue_challenge(NODE_KEY, CHAIN, key.public_key.address, 64, HEAD_HEIGHT, HEAD_HASH,
                         issued_ms + TTL_MS, challenge_id=cid)
    return ChallengeEntry(ch, key.public_key, issued_ms / 1000, client_ip="192.0.2.9")


def committed_work() -> CommittedWork:
    """A commitment as the validator records it."""
    return CommittedWork(10, 1.0, "0x" + "11" * 32, DeviceModel(name="cpu", backend="numpy"),
                         1e9, 20e12, tuple(range(10)),
                         AuditPlan(mode="rows", audited=[1, 4, 7], rows=[[0, 5], [1, 2], [3, 9]]))


def outcome() -> tuple:
    """A stand-in accepted outcome (the table only stores it)."""
    return ("receipt", RevealResponse(accepted=True, receipt="00", audited=3, samples=10,
                                      reward_estimate=0))


# ------------------------------------------------------------------- the table alone


def begin_reveal(table: ChallengeTable, challenge_id: str, now_ms: int) -> ChallengeEntry:
    """What the validator does on a reveal: `for_reveal`, then `claim` unless accepted."""
    entry = table.for_reveal(challenge_id, now_ms)
    if entry.state is not ChallengeState.ACCEPTED:
        table.claim(entry, now_ms)
    return entry


def test_transitions_issue_commit_reveal_accept():
    table = ChallengeTable(GRACE_MS)
    e = entry("01" * 16)
    table.add(e)
    assert table.lookup("01" * 16) is e and e.state is ChallengeState.ISSUED
    assert table.for_commit("01" * 16, NOW_MS) is e
    table.commit(e, committed_work())
    assert e.state is ChallengeState.COMMITTED and e.commitment == committed_work()
    assert begin_reveal(table, "01" * 16, NOW_MS) is e and e.state is ChallengeState.AUDITING
    result = outcome()
    table.finish(e, result)
    assert e.state is ChallengeState.ACCEPTED
    # An accepted challenge is handed back unchanged: the caller answers with its outcome.
    again = begin_reveal(table, "01" * 16, NOW_MS + TTL_MS + GRACE_MS + 1)
    assert again is e and again.outcome is result and e.state is ChallengeState.ACCEPTED


def test_rejected_challenge_is_used_up():
    table = ChallengeTable(GRACE_MS)
    e = entry("02" * 16)
    table.add(e)
    table.commit(table.for_commit("02" * 16, NOW_MS), committed_work())
    begin_reveal(table, "02" * 16, NOW_MS)
    table.finish(e, None)
    assert e.state is ChallengeState.REJECTED
    for call in (lambda: table.for_commit("02" * 16, NOW_MS),
                 lambda: begin_reveal(table, "02" * 16, NOW_MS)):
        with pytest.raises(ChallengeUsed, match="rejected and is used up"):
            call()


def test_release_returns_an_audit_to_committed():
    table = ChallengeTable(GRACE_MS)
    e = entry("03" * 16)
    table.add(e)
    table.commit(e, committed_work())
    begin_reveal(table, "03" * 16, NOW_MS)
    with pytest.raises(ChallengeUsed, match="being audited"):
        begin_reveal(table, "03" * 16, NOW_MS)
    table.release(e)
    assert begin_reveal(table, "03" * 16, NOW_MS) is e


def test_wrong_state_refusals_name_the_state():
    table = ChallengeTable(GRACE_MS)
    e = entry("04" * 16)
    table.add(e)
    with pytest.raises(ChallengeUsed, match="cannot reveal: .* is not committed yet"):
        begin_reveal(table, "04" * 16, NOW_MS)
    table.commit(e, committed_work())
    with pytest.raises(ChallengeUsed, match="cannot commit: .* is already committed"):
        table.for_commit("04" * 16, NOW_MS)
    with pytest.raises(ChallengeUsed, match="already committed"):
        table.commit(e, committed_work())


def test_unknown_id_and_id_collision():
    table = ChallengeTable(GRACE_MS)
    with pytest.raises(ChallengeNotFound, match="unknown challenge"):
        table.lookup("05" * 16)
    table.add(entry("05" * 16))
    with pytest.raises(ChallengeUsed, match="collision"):
        table.add(entry("05" * 16, key=OTHER_KEY))


def test_commit_before_expiry_reveal_before_expiry_plus_grace():
    table = ChallengeTable(GRACE_MS)
    e = entry("06" * 16)
    table.add(e)
    expiry = e.challenge.expiry
    with pytest.raises(ChallengeExpired, match="expired"):
        table.for_commit("06" * 16, expiry)
    table.commit(table.for_commit("06" * 16, expiry - 1), committed_work())
    with pytest.raises(ChallengeExpired, match="reveal deadline"):
        begin_reveal(table, "06" * 16, expiry + GRACE_MS)
    assert begin_reveal(table, "06" * 16, expiry + GRACE_MS - 1) is e


def test_open_counts_and_next_expiry():
    table = ChallengeTable(GRACE_MS)
    first, second = entry("07" * 16), entry("08" * 16, issued_ms=NOW_MS + 5_000)
    other = entry("09" * 16, key=OTHER_KEY)
    for e in (first, second, other):
        table.add(e)
    me = WORKER_KEY.public_key.address
    assert table.open_count(me, NOW_MS) == 2 and table.open_total(NOW_MS) == 3
    assert table.next_open_expiry(me, NOW_MS) == (NOW_MS + TTL_MS) / 1000
    first.state = ChallengeState.ACCEPTED  # finished challenges are not open
    assert table.open_count(me, NOW_MS) == 1
    assert table.next_open_expiry(me, NOW_MS) == (NOW_MS + 5_000 + TTL_MS) / 1000
    # Past expiry nothing is open; with none open the hint is "now".
    late = NOW_MS + 5_000 + TTL_MS
    assert table.open_count(me, late) == 0 and table.open_total(late) == 0
    assert table.next_open_expiry(me, late) == late / 1000


def test_expire_drops_in_issue_order_and_keeps_running_audits():
    table = ChallengeTable(GRACE_MS)
    old, auditing, young = (entry("0a" * 16), entry("0b" * 16, issued_ms=NOW_MS + 1),
                            entry("0c" * 16, issued_ms=NOW_MS + 10_000))
    for e in (old, auditing, young):
        table.add(e)
    table.commit(auditing, committed_work())
    begin_reveal(table, "0b" * 16, NOW_MS)
    deadline = NOW_MS + 1 + TTL_MS + GRACE_MS
    assert table.expire(deadline - 2) == 0
    assert table.expire(deadline) == 1  # `old` only: the running audit stays
    assert len(table) == 2
    with pytest.raises(ChallengeNotFound):
        table.lookup("0a" * 16)
    table.finish(auditing, None)
    assert table.expire(deadline) == 1 and len(table) == 1
    assert table.open_count(WORKER_KEY.public_key.address, NOW_MS) == 1  # `young`


# ----------------------------------------------------- life cycle through the validator


def test_repeated_reveal_after_acceptance_returns_same_receipt(validator, clock, engine):
    ch, work, com = committed_challenge(validator, clock, engine)
    req = honest_reveal(ch, work, com)
    first = validator.reveal(ch.challenge_id, req)
    clock.advance(3)
    again = validator.reveal(ch.challenge_id, req)
    assert again == first
    assert validator.stats()["accepted"] == 1
    assert validator.history(WORKER_KEY.public_key.address).accepted == 1


def test_unknown_challenge_is_404(validator):
    req = commit_request(WORKER_KEY, "00" * 16, "ab" * 32, loops=10, merkle_root="0x" + "11" * 32)
    with pytest.raises(ChallengeNotFound) as exc:
        validator.commit("00" * 16, req)
    assert http_status(exc.value) == 404
    with pytest.raises(ChallengeNotFound):
        validator.reveal(
            "00" * 16,
            RevealRequest(samples=[SampleModel(index=0, leaf="0x" + "11" * 32, proof=[])],
                          signature="00" * 64),
        )


def test_expired_challenge_refused(validator, clock):
    ch = issue(validator, clock).challenge
    clock.advance(10 * 60 + 1)
    req = commit_request(WORKER_KEY, ch.challenge_id, ch.seed, loops=10,
                         merkle_root="0x" + "11" * 32)
    with pytest.raises(ChallengeExpired) as exc:
        validator.commit(ch.challenge_id, req)
    assert http_status(exc.value) == 410
    # Forgotten once past expiry + grace: then unknown.
    clock.advance(10 * 60)
    assert validator.expire() == 1
    with pytest.raises(ChallengeNotFound):
        validator.commit(ch.challenge_id, req)


def test_reveal_allowed_within_grace_then_expired(validator, clock, engine):
    ch, work, com = committed_challenge(validator, clock, engine)
    req = honest_reveal(ch, work, com)
    clock.t = ch.expiry / 1000 + 10 * 60 + 1  # past expiry + grace (one TTL)
    with pytest.raises(ChallengeExpired):
        validator.reveal(ch.challenge_id, req)

    ch, work, com = committed_challenge(validator, clock, engine)
    clock.t = ch.expiry / 1000 + 60  # past expiry, within grace
    _, out = validator.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    assert out.accepted


def test_commit_twice_and_reveal_before_commit_are_409(validator, clock, engine):
    ch = issue(validator, clock).challenge
    work = mine(engine, ch.seed)
    clock.advance(5)
    early = reveal_request(ch, work.tree, work.leaves, list(range(sample_count(LOOPS))))
    with pytest.raises(ChallengeUsed, match="not committed") as exc:
        validator.reveal(ch.challenge_id, early)
    assert http_status(exc.value) == 409
    req = commit_request(
        WORKER_KEY, ch.challenge_id, ch.seed, loops=work.loops, merkle_root=work.merkle_root
    )
    validator.commit(ch.challenge_id, req)
    with pytest.raises(ChallengeUsed, match="already committed"):
        validator.commit(ch.challenge_id, req)

"""The challenge journal (SPEC 3 v1.1 "Durable challenges"): real files, real fsync.

Records use the block log's framing (`fsutil.frame`, magic `HCCJ`). A torn tail is ignored
with a WARNING and later appends stay readable; damage is reported at ERROR, the records
before it are restored and the damaged file is moved aside; replay tolerates duplicate and
unreadable records; expired challenges are compacted away. The restart of a real node
process is in `test_e2e_v11`.
"""

from __future__ import annotations

import logging
import random
import threading

import pytest

from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.signatures import sign
from hashcloud.fsutil import frame
from hashcloud.node.challenge_log import CHALLENGE_LOG_MAGIC, ChallengeLog, challenge_log_path
from hashcloud.node.challenges import ChallengeState
from hashcloud.poc.challenge import commit_message
from hashcloud.poc.receipt import decode_receipt
from tests.node.conftest import (
    OTHER_KEY,
    WORKER_KEY,
    N,
    commit_request,
    committed_challenge,
    honest_reveal,
    issue,
    make_validator,
    mine,
)

pytestmark = pytest.mark.timeout(60)
LOGGER = "hashcloud.node"


def test_every_step_is_on_disk_before_the_answer(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock)
    path = challenge_log_path(tmp_path)
    assert path == tmp_path / "validator" / "challenges.journal"
    ch, work, com = committed_challenge(v, clock, engine)
    assert v.challenge_log.records == 2  # issued, committed
    v.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    assert v.challenge_log.records == 3  # accepted
    # What a crash right now would leave: read the file with a fresh log.
    entries = ChallengeLog(tmp_path).load(int(clock() * 1000), 600_000)
    assert [e.challenge.challenge_id for e in entries] == [ch.challenge_id]
    e = entries[0]
    assert e.state is ChallengeState.ACCEPTED and e.outcome is not None
    assert e.commitment is not None and e.commitment.plan == com.audit
    assert list(e.commitment.indices) == com.indices
    assert e.worker_key == WORKER_KEY.public_key and e.client_ip == "192.0.2.1"


def test_torn_tail_is_ignored_and_later_appends_stay_readable(tmp_path, clock, engine, caplog):
    v = make_validator(tmp_path, clock)
    ch, work, com = committed_challenge(v, clock, engine)
    v.close()
    path = challenge_log_path(tmp_path)
    with open(path, "ab") as fh:  # a crash mid-append: half a record
        fh.write(frame(CHALLENGE_LOG_MAGIC, b'{"kind": "rejected"}')[:20])
    with caplog.at_level(logging.WARNING, logger=LOGGER):  # a fresh CSPRNG after a restart
        again = make_validator(tmp_path, clock, rng=random.Random(2))
    assert "torn record" in caplog.text
    other = issue(again, clock, PrivateKey(0xD1)).challenge
    again.close()
    third = make_validator(tmp_path, clock)
    assert third.open_challenges(WORKER_KEY.public_key.address) == 1
    assert third.open_challenges(PrivateKey(0xD1).public_key.address) == 1
    assert third.reveal(ch.challenge_id, honest_reveal(ch, work, com))[1].accepted
    assert other.challenge_id


def test_damage_is_reported_and_the_file_moved_aside(tmp_path, clock, engine, caplog):
    v = make_validator(tmp_path, clock)
    first = issue(v, clock).challenge
    size_one = challenge_log_path(tmp_path).stat().st_size
    issue(v, clock, PrivateKey(0xD2))
    v.close()
    path = challenge_log_path(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[size_one + 40] ^= 0xFF  # inside the second record's body
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = make_validator(tmp_path, clock)
    assert "damaged" in caplog.text
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    aside = list(path.parent.glob("challenges.journal.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == bytes(raw)
    # The record before the damage is restored; the file is whole again.
    assert again.open_challenges(WORKER_KEY.public_key.address) == 1
    assert again.open_challenges(PrivateKey(0xD2).public_key.address) == 0
    again.close()
    entries = ChallengeLog(tmp_path).load(int(clock() * 1000), 600_000)
    assert [e.challenge.challenge_id for e in entries] == [first.challenge_id]


def test_replay_skips_unreadable_and_duplicate_records(tmp_path, clock, engine, caplog):
    v = make_validator(tmp_path, clock)
    ch, work, com = committed_challenge(v, clock, engine)
    v.close()
    path = challenge_log_path(tmp_path)
    raw = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(frame(CHALLENGE_LOG_MAGIC, b'{"kind": "nonsense"}'))
        fh.write(raw)  # every record again: replay is forward-only
        fh.write(frame(CHALLENGE_LOG_MAGIC, b'{"kind": "rejected", "challenge_id": "ff"}'))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = make_validator(tmp_path, clock)
    assert "unreadable record skipped" in caplog.text
    assert again.challenge_log.records == 2  # rewritten: issued, committed
    assert again.reveal(ch.challenge_id, honest_reveal(ch, work, com))[1].accepted


def test_expired_challenges_are_compacted_away(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock)
    v.challenge_log.compact_min = 3
    keys = [PrivateKey(0xE0 + k) for k in range(4)]
    for key in keys:
        issue(v, clock, key)
    clock.advance(10)
    ch, work, com = committed_challenge(v, clock, engine)  # issued 10 s later
    assert v.challenge_log.records == 6
    size_before = challenge_log_path(tmp_path).stat().st_size
    clock.advance(20 * 60 - 10)  # the four issued ones are past expiry + grace, not the last
    assert v.expire() == 4
    assert v.challenge_log.records == 2
    assert challenge_log_path(tmp_path).stat().st_size < size_before
    v.close()
    again = make_validator(tmp_path, clock)
    assert again.challenge_log.records == 2
    # Past its expiry but within the reveal grace: the live round is still there.
    assert again.reveal(ch.challenge_id, honest_reveal(ch, work, com))[1].accepted


def test_compaction_waits_until_forgotten_records_dominate(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock)
    v.challenge_log.compact_min = 1
    issue(v, clock, PrivateKey(0xF1))
    clock.advance(10)
    committed_challenge(v, clock, engine)
    committed_challenge(v, clock, engine, PrivateKey(0xF2))
    clock.advance(20 * 60 - 15)  # only the first is past its deadline
    assert v.expire() == 1
    assert v.challenge_log.records == 5  # 1 forgotten record vs 4 live: not yet


def test_concurrent_appends_are_all_durable(tmp_path, clock):
    v = make_validator(tmp_path, clock)
    keys = [PrivateKey(0x5000 + k) for k in range(24)]
    errors: list[BaseException] = []

    def ask(j: int, key: PrivateKey) -> None:
        try:
            issue(v, clock, key, ip=f"10.9.0.{j}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(j, k)) for j, k in enumerate(keys)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    entries = ChallengeLog(tmp_path).load(int(clock() * 1000), 600_000)
    assert len(entries) == len(keys)


def test_the_last_commitment_wins_on_replay(tmp_path, clock, engine):
    """A commit undone after its fsync failed may leave its record on disk; the worker then
    commits again. Replay must restore the second commitment, whose indices the worker holds."""
    import dataclasses

    v = make_validator(tmp_path, clock)
    ch, work, com = committed_challenge(v, clock, engine)
    first = v._table.lookup(ch.challenge_id).commitment
    assert first is not None and len(first.indices) > 1
    second = dataclasses.replace(first, indices=tuple(reversed(first.indices)))
    v.challenge_log.committed(ch.challenge_id, second)
    v.close()
    entries = ChallengeLog(tmp_path).load(int(clock() * 1000), 600_000)
    assert entries[0].state is ChallengeState.COMMITTED
    assert entries[0].commitment.indices == second.indices != first.indices


def test_the_payout_address_survives_a_restart(tmp_path, clock, engine):
    """SPEC 6 v1.1: a restart between commit and reveal keeps the signed commit's payout
    address, so the receipt signed after the restart pays it (not the worker's own address)."""
    v = make_validator(tmp_path, clock)
    payout = OTHER_KEY.public_key.address
    ch = issue(v, clock).challenge
    work = mine(engine, ch.seed)
    clock.advance(5)
    plain = commit_request(WORKER_KEY, ch.challenge_id, ch.seed, loops=work.loops,
                           merkle_root=work.merkle_root)
    msg = commit_message(ch.challenge_id, ch.seed, N, WORKER_KEY.public_key.address,
                         work.loops, plain.compute_time, work.merkle_root, payout)
    com = v.commit(ch.challenge_id, plain.model_copy(
        update={"payout_address": payout, "device_signature": sign(WORKER_KEY, msg)}))
    v.close()
    entries = ChallengeLog(tmp_path).load(int(clock() * 1000), 600_000)
    assert entries[0].commitment.payout_address == payout
    restarted = make_validator(tmp_path, clock)
    receipt, resp = restarted.reveal(ch.challenge_id, honest_reveal(ch, work, com), "192.0.2.1")
    assert resp.accepted and decode_receipt(resp.receipt).payout_address == payout
    assert receipt.payout_address == payout

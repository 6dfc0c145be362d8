"""Per-worker audit histories across restarts (SPEC 3 adaptive audit): `HistoryStore` alone,
then through the validator.

The store is real I/O in a temp directory: one appended record per save (issue 11 item 5:
the cost of an audit does not grow with the workers), a newer update never overridden by an
older one, compaction within a constant factor, the retention bound, write failures logged
and survived, a torn record dropped, a damaged log or a corrupt v1 file moved aside so the
node still starts, and the v1 `history.json` migrated.
"""

from __future__ import annotations

import json
import logging

import pytest

from hashcloud.crypto.keys import PrivateKey
from hashcloud.errors import ChallengeUsed, RevealRefused
from hashcloud.node.history import HistoryStore, history_path, legacy_history_path
from hashcloud.poc.audit_policy import WorkerHistory
from tests.node.conftest import (
    OTHER_KEY,
    WORKER_KEY,
    N,
    committed_challenge,
    honest_reveal,
    issue,
    make_validator,
    reveal_request,
)

ME = WORKER_KEY.public_key.address
YOU = OTHER_KEY.public_key.address


# ---------------------------------------------------------------------- the store alone


def test_new_store_is_empty_and_round_trips(tmp_path):
    store = HistoryStore(tmp_path)
    assert len(store) == 0 and store.get(ME) == WorkerHistory()
    assert not history_path(tmp_path).exists()  # nothing written until a change
    snap = store.put(ME, WorkerHistory(accepted=2, mean_rate=1e9))
    store.save(snap)
    path = history_path(tmp_path)
    assert path == tmp_path / "validator" / "history.log"
    assert not list(path.parent.glob(".*tmp*"))
    again = HistoryStore(tmp_path)
    assert again.get(ME) == WorkerHistory(accepted=2, mean_rate=1e9) and len(again) == 1


def test_each_save_appends_one_record_not_the_whole_file(tmp_path):
    store = HistoryStore(tmp_path, compact_min=10_000)
    keys = [PrivateKey(0x200 + i).public_key.address for i in range(40)]
    sizes = []
    for i, address in enumerate(keys):
        store.save(store.put(address, WorkerHistory(accepted=i)))
        sizes.append(history_path(tmp_path).stat().st_size)
    steps = [b - a for a, b in zip(sizes, sizes[1:], strict=False)]
    assert max(steps) < 300 < sizes[-1] // 20  # one record per save, not every worker
    assert store.records == 40
    store.save(store.put(keys[0], WorkerHistory(accepted=99)))
    again = HistoryStore(tmp_path)
    assert again.get(keys[0]).accepted == 99 and again.get(keys[-1]).accepted == 39


def test_an_older_update_never_overrides_a_newer_one(tmp_path):
    store = HistoryStore(tmp_path)
    older = store.put(ME, WorkerHistory(accepted=1, mean_rate=1e9))
    newer = store.put(ME, WorkerHistory(accepted=2, mean_rate=1e9))
    store.save(newer)
    store.save(older)  # a racing audit that finished writing last
    assert HistoryStore(tmp_path).get(ME).accepted == 2


def test_log_is_compacted_within_a_constant_factor(tmp_path):
    store = HistoryStore(tmp_path, compact_min=8)
    for i in range(100):
        store.save(store.put(ME, WorkerHistory(accepted=i)))
    assert store.records <= 8 and len(store) == 1
    assert HistoryStore(tmp_path).get(ME).accepted == 99


def test_retention_forgets_idle_workers_and_caps_the_count(tmp_path):
    now = [1_000_000.0]
    store = HistoryStore(tmp_path, clock=lambda: now[0], retention_s=100.0, compact_min=4,
                         max_workers=3)
    store.save(store.put(ME, WorkerHistory(accepted=1)))
    now[0] += 500  # ME idle beyond the retention bound
    keys = [PrivateKey(0x100 + i).public_key.address for i in range(5)]
    for k in keys:
        store.save(store.put(k, WorkerHistory(accepted=7)))
    assert len(store) == 3 and store.get(ME) == WorkerHistory()  # capped: oldest went first
    again = HistoryStore(tmp_path, clock=lambda: now[0], retention_s=100.0, max_workers=3)
    assert {a for a in keys if again.get(a).accepted == 7} == set(keys[-3:])
    now[0] += 500
    store.save(store.put(YOU, WorkerHistory(accepted=1)))
    for _ in range(4):  # enough records to compact: the idle ones are forgotten
        store.save(store.put(YOU, WorkerHistory(accepted=2)))
    assert len(HistoryStore(tmp_path, clock=lambda: now[0], retention_s=100.0)) == 1


def test_write_failure_is_logged_and_the_next_change_rewrites(tmp_path, caplog):
    (tmp_path / "validator").write_text("a file where the directory should be")
    store = HistoryStore(tmp_path)
    with caplog.at_level(logging.ERROR, logger="hashcloud.node.history"):
        store.save(store.put(ME, WorkerHistory(accepted=1, mean_rate=1e9)))
    assert "cannot write audit histories" in caplog.text
    (tmp_path / "validator").unlink()
    store.save(store.put(YOU, WorkerHistory(accepted=1, mean_rate=2e9)))
    assert len(HistoryStore(tmp_path)) == 2


def test_torn_last_record_is_dropped_and_the_log_repaired(tmp_path, caplog):
    store = HistoryStore(tmp_path)
    store.save(store.put(ME, WorkerHistory(accepted=1)))
    store.save(store.put(YOU, WorkerHistory(accepted=2)))
    path = history_path(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])  # a crash during the second append
    with caplog.at_level(logging.WARNING, logger="hashcloud.node.history"):
        again = HistoryStore(tmp_path)
    assert "torn" in caplog.text
    assert again.get(ME).accepted == 1 and again.get(YOU) == WorkerHistory()
    again.save(again.put(YOU, WorkerHistory(accepted=3)))
    assert HistoryStore(tmp_path).get(YOU).accepted == 3  # appended after a clean end


def test_damaged_record_keeps_the_prefix_and_moves_the_file_aside(tmp_path, caplog):
    store = HistoryStore(tmp_path)
    store.save(store.put(ME, WorkerHistory(accepted=1)))
    first = history_path(tmp_path).stat().st_size
    store.save(store.put(YOU, WorkerHistory(accepted=2)))
    path = history_path(tmp_path)
    data = bytearray(path.read_bytes())
    data[first + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="hashcloud.node.history"):
        again = HistoryStore(tmp_path)
    assert "damaged" in caplog.text
    assert again.get(ME).accepted == 1 and again.get(YOU) == WorkerHistory()
    assert len(list(path.parent.glob("history.log.corrupt-*"))) == 1
    assert HistoryStore(tmp_path).get(ME).accepted == 1


def test_version_1_file_is_migrated(tmp_path):
    legacy = legacy_history_path(tmp_path)
    legacy.parent.mkdir(parents=True)
    hist = WorkerHistory(accepted=4, failed=1, failure_times=(5.0,), mean_rate=3e9)
    legacy.write_text(json.dumps({"version": 1, "workers": {ME: hist.model_dump()}}))
    store = HistoryStore(tmp_path)
    assert store.get(ME) == hist and not legacy.exists()
    assert HistoryStore(tmp_path).get(ME) == hist


# ---------------------------------------------------- persistence through the validator


def test_history_persists_across_restart(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock)
    ch, work, com = committed_challenge(v, clock, engine)
    v.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    ch, work, com = committed_challenge(v, clock, engine)
    with pytest.raises(RevealRefused):  # well-shaped, but the outputs are garbage
        v.reveal(ch.challenge_id, reveal_request(
            ch, work.tree, work.leaves, com.indices, com.audit,
            outputs={i: bytes(8 * N) for i in com.audit.audited}))
    before = v.history(WORKER_KEY.public_key.address)
    path = history_path(tmp_path)
    assert path.exists() and not list(path.parent.glob(".*tmp*"))

    v.close()
    restarted = make_validator(tmp_path, clock)
    assert restarted.history(WORKER_KEY.public_key.address) == before
    assert before.accepted == 1 and before.failed == 1
    # Challenges are durable too (SPEC 3 v1.1): the burned round stays burned.
    with pytest.raises(ChallengeUsed, match="rejected"):
        restarted.reveal(ch.challenge_id, honest_reveal(ch, work, com))


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"version": 2, "workers": {}}',
        b'{"version": 1, "workers": {"cpc1bad": {}}}',
        b"\xff\xfe",
    ],
)
def test_corrupt_history_file_tolerated(tmp_path, clock, caplog, content):
    path = legacy_history_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="hashcloud.node.history"):
        v = make_validator(tmp_path, clock)
    assert "corrupt" in caplog.text
    assert v.history(WORKER_KEY.public_key.address).failed == 0
    aside = list(path.parent.glob("history.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert not path.exists()
    issue(v, clock)  # still serving

"""Per-worker audit histories across restarts (SPEC 3 adaptive audit): `HistoryStore` alone,
then through the validator.

The store is real I/O in a temp directory: atomic rewrites (no temp file left behind), a
newer snapshot never overwritten by an older one, write failures logged and survived, a
corrupt file moved aside so the node still starts.
"""

from __future__ import annotations

import json
import logging

import pytest

from hashcloud.errors import ChallengeUsed, RevealRefused
from hashcloud.node.history import HistoryStore, history_path
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
    assert path == tmp_path / "validator" / "history.json"
    assert json.loads(path.read_text())["version"] == 1
    assert not list(path.parent.glob(".*tmp*"))
    again = HistoryStore(tmp_path)
    assert again.get(ME) == WorkerHistory(accepted=2, mean_rate=1e9) and len(again) == 1


def test_an_older_snapshot_never_overwrites_a_newer_one(tmp_path):
    store = HistoryStore(tmp_path)
    older = store.put(ME, WorkerHistory(accepted=1, mean_rate=1e9))
    newer = store.put(YOU, WorkerHistory(failed=1, failure_times=(5.0,)))
    store.save(newer)
    store.save(older)  # a racing audit that finished writing last
    on_disk = HistoryStore(tmp_path)
    assert on_disk.get(YOU).failed == 1 and on_disk.get(ME).accepted == 1


def test_write_failure_is_logged_and_the_next_change_rewrites(tmp_path, caplog):
    (tmp_path / "validator").write_text("a file where the directory should be")
    store = HistoryStore(tmp_path)
    with caplog.at_level(logging.ERROR, logger="hashcloud.node.history"):
        store.save(store.put(ME, WorkerHistory(accepted=1, mean_rate=1e9)))
    assert "cannot write audit histories" in caplog.text
    (tmp_path / "validator").unlink()
    store.save(store.put(YOU, WorkerHistory(accepted=1, mean_rate=2e9)))
    assert len(HistoryStore(tmp_path)) == 2


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
    path = tmp_path / "validator" / "history.json"
    assert json.loads(path.read_text())["version"] == 1
    assert not list(path.parent.glob(".*tmp*"))

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
    path = tmp_path / "validator" / "history.json"
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

"""Mempool journal: every acknowledged transaction survives a crash (real files, real fsync).

`TxJournal` records use the block log's framing (`fsutil.frame`, magic `HCTJ`); a torn tail
is ignored, a damaged record stops the load (both logged at WARNING), `rewrite` replaces the
file atomically (`rewrite_pending`: led by the head mark of the block it follows). A failed
fsync cuts the unsynced records off again. The legacy format (`u32 length || sha256 ||
bytes`) is still read. `NodeService` replays the journal on start, so transactions
acknowledged but not yet in a block are pending again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import zlib
from pathlib import Path

import pytest

from hashcloud.chain.tx import decode_tx, encode_tx, tx_id
from hashcloud.errors import StorageUnavailable
from hashcloud.node.journal import JOURNAL_MAGIC, MAX_RECORD, TxJournal
from hashcloud.node.service import NodeService
from tests.node.conftest import NodeDir, transfer

pytestmark = pytest.mark.timeout(30)

RECORDS = [b"first", b"", b"\x00\xff" * 40, bytes(range(256))]
HEAD = 4 + 4 + 4  # magic, length, header CRC
TAIL = 32  # SHA-256 digest
LOGGER = "hashcloud.node.journal"


def size(record: bytes) -> int:
    """On-disk size of one current-format record."""
    return HEAD + len(record) + TAIL


def legacy(records: list[bytes]) -> bytes:
    """The legacy on-disk form: u32 length, SHA-256, bytes, record after record."""
    return b"".join(struct.pack(">I", len(r)) + hashlib.sha256(r).digest() + r for r in records)


def write_journal(path: Path, records: list[bytes]) -> None:
    journal = TxJournal(path)
    for data in records:
        journal.append(data)
    journal.close()


def test_append_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "mempool.journal"  # parent is created
    write_journal(path, RECORDS)
    assert TxJournal(path).load() == RECORDS
    # The on-disk form is the block log's framing with the journal's magic.
    raw = path.read_bytes()
    head = JOURNAL_MAGIC + struct.pack(">I", 5)
    assert raw[:HEAD] == head + struct.pack(">I", zlib.crc32(head))
    assert raw[HEAD : HEAD + 5] == b"first"
    assert raw[HEAD + 5 : size(b"first")] == hashlib.sha256(raw[: HEAD + 5]).digest()
    assert len(raw) == sum(size(r) for r in RECORDS)


def test_missing_or_empty_journal_loads_nothing(tmp_path: Path) -> None:
    assert TxJournal(tmp_path / "j").load() == []  # created empty
    assert (tmp_path / "j").exists() and (tmp_path / "j").read_bytes() == b""


def test_reopen_appends_after_existing_records(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write_journal(path, RECORDS[:2])
    write_journal(path, RECORDS[2:])
    assert TxJournal(path).load() == RECORDS


def test_torn_tail_at_every_offset_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j"
    write_journal(path, RECORDS)
    full = path.read_bytes()
    last_start = len(full) - size(RECORDS[-1])
    for cut in range(last_start, len(full)):
        path.write_bytes(full[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert TxJournal(path).load() == RECORDS[:-1], f"cut at {cut}"
        assert ("torn record" in caplog.text) == (cut > last_start), f"cut at {cut}"


def test_damaged_record_stops_the_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "j"
    write_journal(path, RECORDS)
    full = bytearray(path.read_bytes())
    third = size(RECORDS[0]) + size(RECORDS[1])
    cases = [
        (third + HEAD + 7, 0x01, RECORDS[:2]),  # a body byte of record 3
        (third + HEAD + len(RECORDS[2]) + 10, 0x80, RECORDS[:2]),  # a digest byte
        (third + 9, 0x80, RECORDS[:2]),  # a header-CRC byte
        (third + 1, 0x20, RECORDS[:2]),  # a magic byte
        (len(full) - 1, 0x01, RECORDS[:3]),  # the last byte: damage, not a torn tail
    ]
    for offset, mask, expected in cases:
        damaged = bytearray(full)
        damaged[offset] ^= mask
        path.write_bytes(bytes(damaged))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert TxJournal(path).load() == expected, offset
        assert "damaged record" in caplog.text
    damaged = bytearray(full)
    damaged[4:8] = struct.pack(">I", 2**31)  # absurd length of record 1
    path.write_bytes(bytes(damaged))
    assert TxJournal(path).load() == []


def test_legacy_journal_is_read_and_upgraded_on_rewrite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal written by an older node (no magic) loses no acknowledged record."""
    path = tmp_path / "j"
    path.write_bytes(legacy(RECORDS))
    journal = TxJournal(path)
    assert journal.load() == RECORDS
    journal.append(b"new")  # appended in the current format behind the legacy records
    assert TxJournal(path).load() == [*RECORDS, b"new"]
    journal.rewrite(journal.load())
    journal.close()
    raw = path.read_bytes()
    assert raw.startswith(JOURNAL_MAGIC) and len(raw) == sum(size(r) for r in RECORDS) + size(
        b"new"
    )
    assert TxJournal(path).load() == [*RECORDS, b"new"]
    # Legacy torn tail and legacy damage: what precedes is kept, with a WARNING.
    full = legacy(RECORDS)
    for data, expected, words in (
        (full[:-3], RECORDS[:-1], "torn record"),
        (full[: len(full) - len(RECORDS[-1]) - 10], RECORDS[:-1], "torn record"),
        (full[:-1] + bytes([full[-1] ^ 1]), RECORDS[:-1], "damaged record"),
        (struct.pack(">I", MAX_RECORD + 1) + full[4:], [], "damaged record"),
    ):
        path.write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert TxJournal(path).load() == expected
        assert words in caplog.text


def test_oversized_record_is_damage(tmp_path: Path) -> None:
    from hashcloud.fsutil import frame

    path = tmp_path / "j"
    path.write_bytes(frame(JOURNAL_MAGIC, b"ok") + frame(JOURNAL_MAGIC, b"x" * (MAX_RECORD + 1)))
    assert TxJournal(path).load() == [b"ok"]


def test_rewrite_replaces_the_content_atomically(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = TxJournal(path)
    for data in RECORDS:
        journal.append(data)
    journal.rewrite([b"kept-1", b"kept-2"])
    assert TxJournal(path).load() == [b"kept-1", b"kept-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j"]  # no temp file left
    journal.append(b"after")  # appends go to the new file
    journal.rewrite([])
    journal.append(b"only")
    journal.close()
    assert TxJournal(path).load() == [b"only"]


def test_failed_rewrite_keeps_the_old_journal(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = TxJournal(path)
    journal.append(b"old-1")
    journal.append(b"old-2")

    def records():
        yield b"new-1"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        journal.rewrite(records())
    assert TxJournal(path).load() == [b"old-1", b"old-2"]
    journal.append(b"old-3")  # the journal still works
    journal.close()
    assert TxJournal(path).load() == [b"old-1", b"old-2", b"old-3"]


# ------------------------------------------------------------------ through NodeService


@pytest.mark.timeout(60)
def test_restart_restores_acknowledged_pending_transactions(node_dir: NodeDir) -> None:
    svc = NodeService(node_dir.files)
    included = transfer(node_dir, 0)
    svc.submit_transaction(included)
    assert svc.produce_block() is not None
    pending = [transfer(node_dir, n, amount=n) for n in (1, 2, 3)]
    for tx in pending:
        svc.submit_transaction(tx)
    # The journal holds exactly the acknowledged, not yet included transactions.
    assert [tx_id(decode_tx(r)) for r in svc.journal.load()] == [tx_id(t) for t in pending]
    svc.close()

    svc = NodeService(node_dir.files)
    try:
        assert len(svc.mempool) == 3
        for tx in pending:
            assert svc.tx_status(tx_id(tx)).status == "pending"
        assert svc.tx_status(tx_id(included)).status == "included"
        assert svc.pending_nonce(node_dir.funded.public_key.address) == 4
        block = svc.produce_block()
        assert block is not None
        assert [tx_id(t) for t in block.transactions] == [tx_id(t) for t in pending]
        assert svc.journal.load() == []  # rewritten after the block
    finally:
        svc.close()


@pytest.mark.timeout(60)
def test_restart_after_crash_between_block_and_journal_rewrite(node_dir: NodeDir) -> None:
    """A journal still listing transactions that made it into a block (crash before the
    rewrite) restores only the ones that are not included."""
    svc = NodeService(node_dir.files)
    txs = [transfer(node_dir, n) for n in range(3)]
    for tx in txs[:2]:
        svc.submit_transaction(tx)
    stale = svc.journal.load()
    svc.produce_block()
    svc.submit_transaction(txs[2])
    svc.close()
    # Simulate the crash window: the journal as it was before the post-block rewrite.
    journal = TxJournal(node_dir.files.journal_path)
    journal.rewrite([*stale, encode_tx(txs[2])])
    journal.close()

    svc = NodeService(node_dir.files)
    try:
        assert [tx_id(t) for t in svc.mempool.candidates()] == [tx_id(txs[2])]
        assert [tx_id(decode_tx(r)) for r in svc.journal.load()] == [tx_id(txs[2])]
    finally:
        svc.close()


@pytest.mark.timeout(60)
def test_restart_with_torn_journal_tail_keeps_later_acknowledgements(node_dir: NodeDir) -> None:
    """A torn tail from a crash mid-append must not hide transactions acknowledged after
    the restart (appending behind garbage would make them unreadable)."""
    svc = NodeService(node_dir.files)
    first = transfer(node_dir, 0)
    svc.submit_transaction(first)
    svc.close()
    path = node_dir.files.journal_path
    with open(path, "ab") as fh:  # half a record: the crash happened mid-append
        fh.write(struct.pack(">I", 200) + b"\x01" * 20)

    svc = NodeService(node_dir.files)
    second = transfer(node_dir, 1)
    svc.submit_transaction(second)
    svc.close()

    svc = NodeService(node_dir.files)
    try:
        assert [tx_id(t) for t in svc.mempool.candidates()] == [tx_id(first), tx_id(second)]
    finally:
        svc.close()


def test_head_mark_round_trips_and_is_not_a_transaction(tmp_path: Path) -> None:
    journal = TxJournal(tmp_path / "j")
    journal.rewrite_pending([b"tx-a", b"tx-b"], (7, b"\xab" * 32))
    journal.append(b"tx-c")
    journal.close()
    again = TxJournal(tmp_path / "j")
    assert again.load() == [b"tx-a", b"tx-b", b"tx-c"]
    assert again.head_mark == (7, b"\xab" * 32)
    again.close()


def test_failed_fsync_cuts_every_unsynced_record_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11 item 4: an append answered with an error must not survive to be replayed
    after a restart (that would include a transaction the client was told was refused)."""
    journal = TxJournal(tmp_path / "j")
    journal.append(b"kept")
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageUnavailable, match="nothing was changed"):
        journal.append(b"refused")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (tmp_path / "j").stat().st_size == size(b"kept")
    journal.append(b"later")
    journal.close()
    assert TxJournal(tmp_path / "j").load() == [b"kept", b"later"]

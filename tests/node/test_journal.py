"""Mempool journal: every acknowledged transaction survives a crash (real files, real fsync).

`TxJournal` records are `u32 length || sha256 || bytes`; a torn tail is ignored, a damaged
record stops the load, `rewrite` replaces the file atomically. `NodeService` replays the
journal on start, so transactions acknowledged but not yet in a block are pending again.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from hashcloud.chain.tx import decode_tx, encode_tx, tx_id
from hashcloud.node.journal import TxJournal
from hashcloud.node.service import NodeService
from tests.node.conftest import NodeDir, transfer

pytestmark = pytest.mark.timeout(30)

RECORDS = [b"first", b"", b"\x00\xff" * 40, bytes(range(256))]
HEAD = 4 + 32


def write_journal(path: Path, records: list[bytes]) -> None:
    journal = TxJournal(path)
    for data in records:
        journal.append(data)
    journal.close()


def test_append_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "mempool.journal"  # parent is created
    write_journal(path, RECORDS)
    assert TxJournal(path).load() == RECORDS
    # The on-disk form is length, SHA-256, bytes, record after record.
    raw = path.read_bytes()
    assert raw[:HEAD] == struct.pack(">I", 5) + hashlib.sha256(b"first").digest()
    assert len(raw) == sum(HEAD + len(r) for r in RECORDS)


def test_missing_or_empty_journal_loads_nothing(tmp_path: Path) -> None:
    assert TxJournal(tmp_path / "j").load() == []  # created empty
    assert (tmp_path / "j").exists() and (tmp_path / "j").read_bytes() == b""


def test_reopen_appends_after_existing_records(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write_journal(path, RECORDS[:2])
    write_journal(path, RECORDS[2:])
    assert TxJournal(path).load() == RECORDS


def test_torn_tail_at_every_offset_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write_journal(path, RECORDS)
    full = path.read_bytes()
    last_start = len(full) - (HEAD + len(RECORDS[-1]))
    for cut in range(last_start, len(full)):
        path.write_bytes(full[:cut])
        assert TxJournal(path).load() == RECORDS[:-1], f"cut at {cut}"


def test_damaged_record_stops_the_load(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write_journal(path, RECORDS)
    full = bytearray(path.read_bytes())
    third = 2 * HEAD + len(RECORDS[0]) + len(RECORDS[1])
    damaged = bytearray(full)
    damaged[third + HEAD + 7] ^= 0x01  # a body byte of record 3
    path.write_bytes(bytes(damaged))
    assert TxJournal(path).load() == RECORDS[:2]
    damaged = bytearray(full)
    damaged[third + 10] ^= 0x80  # a digest byte of record 3
    path.write_bytes(bytes(damaged))
    assert TxJournal(path).load() == RECORDS[:2]
    damaged = bytearray(full)
    damaged[0:4] = struct.pack(">I", 2**31)  # absurd length of record 1
    path.write_bytes(bytes(damaged))
    assert TxJournal(path).load() == []


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

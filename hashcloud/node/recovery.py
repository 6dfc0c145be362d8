"""The node's guard against silently losing acknowledged data, and `node reindex` (SPEC 6).

A node acknowledges blocks (its head, `included` statuses) and transactions (a 200 from
`POST /v1/transactions`). The block log cannot tell on its own that it was rolled back (an
older copy, a log cut at a record boundary, a deleted `chain/`), so the node keeps two
records of what it acknowledged that such a rollback does not undo:

- the watermark `DATA_DIR/chain.watermark` (`chain.store.watermark`), outside `chain/`:
  the highest block appended, moved forward durably by the store before each new head is
  visible (`ChainStore.guard`);
- the head mark of the mempool journal (`TxJournal.head_mark`): the block whose inclusion
  took transactions out of the journal.

On start, `check_chain_present` refuses a data dir that held a chain but no longer has its
block log, and `guard_store` / `check_journal_head` refuse a store that is behind either
record, each with exit 1, what is missing, and how to recover: restore the files, or
`hashcloud node start --accept-rollback`, which resets the watermark to the store's head and
logs at ERROR what was given up.

`reindex` (`hashcloud node reindex`, like bitcoind `-reindex`) rebuilds the derived files of
the store, the block index and the state snapshot, from the block log, re-validating every
block through `chain.ledger.replay` (the ledger's one replay path).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hashcloud.chain.genesis import genesis_hash
from hashcloud.chain.ledger import Ledger
from hashcloud.chain.store import (
    INDEX_NAME,
    LOG_NAME,
    META_NAME,
    SNAPSHOT_NAME,
    WATERMARK_NAME,
    ChainStore,
    Watermark,
)
from hashcloud.errors import StoreError, StoreRolledBack
from hashcloud.node.config import NodeFiles
from hashcloud.node.journal import TxJournal

log = logging.getLogger(__name__)

__all__ = ["ReindexReport", "check_chain_present", "check_journal_head", "guard_store",
           "reindex", "watermark_of", "watermark_problem"]


def watermark_of(files: NodeFiles) -> Watermark:
    """The watermark of the node on `files` (`DATA_DIR/chain.watermark`)."""
    return Watermark(files.data_dir / WATERMARK_NAME)


def _rollback_hint(files: NodeFiles, keep: str) -> str:
    """How to recover from a refused rollback."""
    return (f"Restore {files.chain_dir} from a backup (with the node stopped), or run "
            f"`hashcloud node start --data-dir {files.data_dir} --accept-rollback` to "
            f"{keep}, giving up the acknowledged blocks the store lacks and their "
            f"transactions")


def check_chain_present(files: NodeFiles, *, accept_rollback: bool = False) -> None:
    """Refuse (StoreRolledBack) to start when the block log is gone from a data dir that
    held a chain: a watermark, a mempool journal or leftover store files show it did.

    Runs before the store is opened, so a refused start creates and changes nothing. A data
    dir fresh from `node init` has none of them: its first start creates the chain."""
    log_path = files.chain_dir / LOG_NAME
    if log_path.is_file():
        return
    evidence: list[str] = []
    wm = watermark_of(files)
    try:
        mark = wm.read()
    except StoreError as exc:
        evidence.append(str(exc))
    else:
        if mark is not None:
            evidence.append(f"{wm.path.name} records acknowledged blocks up to "
                            f"{mark.describe()}")
    if files.journal_path.exists():
        evidence.append(f"{files.journal_path.name} exists (a node ran here)")
    left = [n for n in (META_NAME, INDEX_NAME, SNAPSHOT_NAME) if (files.chain_dir / n).exists()]
    if left:
        evidence.append(f"{files.chain_dir.name}/ still holds {', '.join(left)}")
    if not evidence:
        return
    what = (f"the chain directory {files.chain_dir} is missing" if not files.chain_dir.exists()
            else f"the block log {log_path} is missing")
    problem = f"{what}, but this data dir held a chain ({'; '.join(evidence)})"
    if accept_rollback:
        log.error("ACCEPTING ROLLBACK (--accept-rollback): %s; starting a new chain from "
                  "genesis: every acknowledged block and transaction is given up", problem)
        return
    raise StoreRolledBack(f"{problem}. " + _rollback_hint(files, "start a new chain from "
                                                                 "genesis"))


def guard_store(store: ChainStore, files: NodeFiles, *, accept_rollback: bool = False) -> None:
    """Attach the node's watermark to its open store (`ChainStore.guard`), adding the way
    out to a refusal."""
    try:
        store.guard(watermark_of(files), accept_rollback=accept_rollback)
    except StoreRolledBack as exc:
        raise StoreRolledBack(
            f"chain store refused: {exc}. "
            + _rollback_hint(files, f"continue from height {store.height}")) from None


def check_journal_head(journal: TxJournal, store: ChainStore, files: NodeFiles, *,
                       accept_rollback: bool = False) -> None:
    """Refuse a store without the block the journal's head mark names (`journal.load` must
    have run): the transactions that block took out of the journal would be lost."""
    if journal.head_mark is None:
        return
    height, block = journal.head_mark
    if store.find_block_hash(height) == block:
        return
    problem = (f"the mempool journal was last rewritten after block {height} "
               f"({block.hex()[:16]}), which the block log (height {store.height}) does not "
               f"hold: the transactions of the missing blocks would be lost")
    if accept_rollback:
        log.error("ACCEPTING ROLLBACK (--accept-rollback): %s", problem)
        return
    raise StoreRolledBack(f"chain store refused: {problem}. "
                          + _rollback_hint(files, f"continue from height {store.height}"))


def watermark_problem(files: NodeFiles) -> str | None:
    """Why the node would refuse its chain store (missing, or behind its watermark), or None;
    for `hashcloud audit --chain`, which opens the store read-only."""
    try:
        check_chain_present(files)
        mark = watermark_of(files).read()
        if mark is None or not (files.chain_dir / LOG_NAME).is_file():
            return None
        with ChainStore(files.chain_dir, readonly=True, verify=False) as store:
            problem = store.rollback_problem(mark)
    except StoreError as exc:
        return str(exc)
    return None if problem is None else f"chain store behind its watermark: {problem}"


@dataclass(frozen=True, slots=True)
class ReindexReport:
    """What `reindex` rebuilt: the head it replayed to and where the snapshot now is; the
    watermark's complaint, if the store is behind it (the node will refuse to start)."""

    height: int
    head_hash: str
    snapshot_height: int | None
    rollback_problem: str | None


def reindex(files: NodeFiles) -> ReindexReport:
    """Rebuild `blocks.idx` and `state.snap` from `blocks.log` (see module doc).

    Takes the store's writer lock (StoreLocked while a node runs on it), verifies every
    record, rewrites the index whole, deletes the snapshot, then opens the ledger, which
    replays every block from genesis through `ledger.replay`, and snapshots the head.
    Raises StoreError for a missing or corrupt log, ChainError for an invalid block.
    """
    log_path = files.chain_dir / LOG_NAME
    if not log_path.is_file():
        raise StoreError(f"no block log at {log_path}: nothing to reindex from (restore it "
                         "from a backup, or see `hashcloud node start --accept-rollback`)")
    bound = bytes.fromhex(genesis_hash(files.genesis))
    with ChainStore(files.chain_dir, genesis_hash=bound) as store:
        store.reset_derived()
    with Ledger.open(files.chain_dir, files.genesis) as ledger:
        ledger.snapshot()
        snap = ledger.store.read_snapshot()
        try:
            mark = watermark_of(files).read()
            problem = None if mark is None else ledger.store.rollback_problem(mark)
        except StoreError as exc:
            problem = str(exc)
        return ReindexReport(ledger.height, ledger.head_hash,
                             None if snap is None else snap[0], problem)

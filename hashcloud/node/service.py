"""The node's services behind the HTTP API: chain, mempool, PoC validator (SPEC 3, 6).

`NodeService` owns the ledger (single writer of the chain store), the mempool with its
durable journal, and the PoC validator. Every chain-mutating call holds one lock, so
handlers running in FastAPI's thread pool never interleave a block with a mempool change.
CPU-heavy audit recomputation (`reveal`) runs outside that lock.

The validator's operator options come as one typed `ValidatorConfig`; its clock, CSPRNG and
leaf / row functions are explicit keyword arguments, so tests drive expiry with a fake clock.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hashcloud import __version__
from hashcloud.api.models import (
    MAX_BATCH,
    AccountInfo,
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    CommitResponse,
    HeadInfo,
    NodeInfo,
    RevealRequest,
    RevealResponse,
    TxBatchResponse,
    TxBatchResult,
    TxStatus,
)
from hashcloud.chain.block import Block, block_hash, block_to_json
from hashcloud.chain.epoch import claim_work
from hashcloud.chain.genesis import chain_domain, genesis_block, genesis_hash
from hashcloud.chain.ledger import Ledger
from hashcloud.chain.rewards import account_rewards, epoch_view, expected_payout
from hashcloud.chain.state import EpochRecord, State, get_account, get_epoch_record
from hashcloud.chain.tx import Transaction, decode_tx, encode_tx, tx_from_json, tx_id
from hashcloud.engine.rows import loop_leaf, row_digests_of
from hashcloud.errors import (
    DuplicateTransaction,
    HashCloudError,
    InvalidTransaction,
    NotFound,
    StorageUnavailable,
    StoreError,
)
from hashcloud.node.config import DEFAULT_VALIDATOR_CONFIG, NodeFiles, ValidatorConfig
from hashcloud.node.intake import prevalidate
from hashcloud.node.journal import TxJournal
from hashcloud.node.mempool import Mempool
from hashcloud.node.recovery import check_chain_present, check_journal_head, guard_store
from hashcloud.node.round_log import RoundLog
from hashcloud.node.validator import REVEAL_OUTCOMES, PocValidator, reveal_outcome
from hashcloud.params import AUDIT_MODES, DEFAULT_EPOCH_ROWS
from hashcloud.poc.audit import LeafFn, RowFn

log = logging.getLogger(__name__)

MAX_TXS_PER_BLOCK = 5000
"""Most transactions the producer puts in one block (`transition.MAX_BLOCK_TRANSACTIONS`):
large blocks leave fewer pooled transactions to re-validate after each block."""


HISTORY_SCAN_BLOCKS = 1000
"""Most blocks one `address_history` call reads (SPEC 7 v1.1 `history`): an address's history
is found by walking blocks back from the head (no per-address index yet), so each call is
bounded and pages on with `before`."""


def address_history(ledger: Ledger, address: str, *, before: int | None = None,
                    limit: int = 50, max_blocks: int = HISTORY_SCAN_BLOCKS) -> dict:
    """Transactions sent or received by `address`, newest first (SPEC 7 v1.1 `history`).

    Walks blocks `before - 1` down to 1 (default: from the head), reading at most
    `max_blocks` blocks and stopping once `limit` transactions are found (a block is never
    split: all its matches are returned). `next_before` is the height to pass as `before` to
    continue, or None when the walk reached the genesis block. Amounts stay base units."""
    top = ledger.height if before is None else min(before - 1, ledger.height)
    found: list[dict] = []
    height = top
    while height >= 1 and top - height < max_blocks and len(found) < limit:
        blk = ledger.get_block(height)
        if blk is None:
            break
        for index, tx in enumerate(blk.transactions):
            if address in (tx.from_address, tx.to_address):
                found.append({"tx_id": tx_id(tx), "height": height, "index": index,
                              "timestamp": blk.header.timestamp, "tx_type": tx.tx_type,
                              "from_address": tx.from_address, "to_address": tx.to_address,
                              "amount": tx.amount, "fee": tx.fee, "nonce": tx.nonce})
        height -= 1
    return {"address": address, "transactions": found,
            "next_before": height + 1 if height >= 1 else None}

#: Buckets (thread CPU seconds) of `hc_audit_seconds`: a row audit at n = 64 takes well under
#: a millisecond, a full audit of m = 256 leaves at n = 4096 minutes.
AUDIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                         2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


#: `hc_reveals_total` outcomes that are audited rounds, and their `hc_rounds_total` label.
_ROUND_OUTCOMES = {"accepted": "accepted", "failed": "rejected"}


@dataclass
class NodeMetrics:
    """Prometheus metrics of one node (own registry, so several nodes can share a process).

    Also the PoC validator's `ValidatorMetrics`: `hc_audit_seconds{n, mode}` is the thread CPU
    time of each audit's recomputation (SPEC 3 v1.1 rows or full), `hc_reveals_total{outcome}`
    counts reveals by how they ended (`validator.REVEAL_OUTCOMES`), `hc_rounds_total{outcome}`
    only the audited ones (accepted, rejected)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        """Register every metric on `registry`."""
        r = self.registry
        self.challenges = Counter("hc_challenges_issued", "Challenges issued", registry=r)
        self.rounds = Counter("hc_rounds", "Audited rounds by outcome", ["outcome"], registry=r)
        for label in _ROUND_OUTCOMES.values():
            self.rounds.labels(label)
        self.txs = Counter("hc_transactions", "Submitted transactions by outcome", ["outcome"],
                           registry=r)
        self.blocks = Counter("hc_blocks_produced", "Blocks produced", registry=r)
        self.height = Gauge("hc_head_height", "Height of the chain head", registry=r)
        self.mempool = Gauge("hc_mempool_size", "Pending transactions", registry=r)
        self.commit_seconds = Histogram("hc_commit_seconds", "Commit handling time",
                                        registry=r)
        self.reveal_seconds = Histogram("hc_reveal_seconds", "Reveal (audit) handling time",
                                        registry=r)
        self.audit_seconds = Histogram(
            "hc_audit_seconds", "Thread CPU seconds of the audit work per audited reveal",
            ["n", "mode"], buckets=AUDIT_SECONDS_BUCKETS, registry=r)
        self.reveals = Counter("hc_reveals", "Reveals by outcome", ["outcome"], registry=r)
        for outcome in REVEAL_OUTCOMES:  # every outcome shows (at 0) from the start
            self.reveals.labels(outcome)

    def observe_audit(self, n: int, mode: str, cpu_seconds: float) -> None:
        """Record one audit's CPU time (`ValidatorMetrics`)."""
        if mode in AUDIT_MODES:
            self.audit_seconds.labels(str(n), mode).observe(max(0.0, cpu_seconds))

    def count_reveal(self, outcome: str) -> None:
        """Count one reveal by outcome (`ValidatorMetrics`), and a real audit outcome as a
        round: `accepted` or `rejected` (a failed audit). Refusals that audit nothing
        (unauthorized, malformed, busy, unknown, ...) and repeated reveals are no rounds:
        third parties could inflate them."""
        self.reveals.labels(outcome).inc()
        if outcome in _ROUND_OUTCOMES:
            self.rounds.labels(_ROUND_OUTCOMES[outcome]).inc()


class NodeService:
    """Chain + mempool + PoC validator of one node, on one data directory.

    `validator_config` holds the PoC validator's options (SPEC 3); `clock` (unix seconds),
    `rng` (CSPRNG), `leaf_fn` and `row_fn` are the validator's injectables (real ones by
    default).
    """

    #: Whether PoC requests go to another node (a follower that is no validator).
    relays_poc = False

    def __init__(
        self,
        files: NodeFiles,
        validator_config: ValidatorConfig = DEFAULT_VALIDATOR_CONFIG,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        leaf_fn: LeafFn = loop_leaf,
        row_fn: RowFn = row_digests_of,
        accept_rollback: bool = False,
    ) -> None:
        """Open the chain store, replay the mempool journal and start the validator (which
        restores its open challenges).

        A store that is missing or behind what the node acknowledged (its watermark or the
        journal's head mark) raises StoreRolledBack unless `accept_rollback`
        (`node.recovery`, `node start --accept-rollback`)."""
        self.files = files
        self.genesis = files.genesis
        self.key = files.key
        self.chain_id = files.genesis.chain_id
        self.genesis_hash = genesis_hash(files.genesis)
        self.genesis_block_hash = block_hash(genesis_block(files.genesis).header)
        self.domain = chain_domain(files.genesis)  # every signature's chain (SPEC 5 v1.1)
        self.lock = threading.RLock()
        self.closed = False
        # Decoded closed-epoch records, most recent use last: a record never changes once
        # written, and decoding one checks every payout address (tens of microseconds each).
        self._epoch_records: OrderedDict[int, EpochRecord] = OrderedDict()
        self._epoch_records_lock = threading.Lock()
        self.metrics = NodeMetrics()
        self.round_log = RoundLog(self.metrics.registry)  # one line per audited round
        check_chain_present(files, accept_rollback=accept_rollback)
        self.ledger = Ledger.open(files.chain_dir, files.genesis)
        self._storage_logged: str | None = None
        try:
            guard_store(self.ledger.store, files, accept_rollback=accept_rollback)
            self.mempool = Mempool(self.genesis, self.ledger.state, self.key.public_key.address)
            self.journal = TxJournal(files.journal_path)
            self._replay_journal(accept_rollback)
            self.validator = PocValidator(self.key, self.domain, files.validator_dir,
                                          validator_config, clock=clock, rng=rng,
                                          leaf_fn=leaf_fn, row_fn=row_fn,
                                          metrics=self.metrics)
        except BaseException:
            self.ledger.close()
            raise
        self.metrics.height.set(self.ledger.height)

    def _replay_journal(self, accept_rollback: bool = False) -> None:
        """Re-admit acknowledged transactions that were pending at the last stop; refuse a
        store behind the journal's head mark (`recovery.check_journal_head`). A dropped
        entry is an acknowledged transaction that will not be included: WARNING, with its
        id."""
        kept = 0
        records = self.journal.load()
        check_journal_head(self.journal, self.ledger.store, self.files,
                           accept_rollback=accept_rollback)
        for raw in records:
            try:
                tx = decode_tx(raw)
            except HashCloudError as exc:
                log.warning("journal entry dropped on replay: undecodable record (sha256 "
                            "%s): %s", hashlib.sha256(raw).hexdigest(), exc)
                continue
            txid = tx_id(tx)
            if self.ledger.find_tx(txid) is not None:
                continue  # included in a block since it was journaled
            try:
                self.mempool.add(tx, txid)
                kept += 1
            except DuplicateTransaction:
                continue  # journaled twice (an append racing a rewrite)
            except HashCloudError as exc:
                log.warning("journal entry dropped on replay: transaction %s: %s", txid, exc)
        try:
            self._rewrite_journal()
        except OSError as exc:  # a full disk: the old journal still replays the same way
            log.error("mempool journal rewrite at start failed: %s", exc)
        if kept:
            log.info("mempool: %d pending transactions restored from the journal", kept)

    # ------------------------------------------------------------------ chain queries

    def head_info(self) -> HeadInfo:
        """Height, hash and timestamp of the head."""
        head = self.ledger.head
        return HeadInfo(height=head.height, hash=block_hash(head), timestamp=head.timestamp)

    def info(self) -> NodeInfo:
        """`GET /v1/info`."""
        return NodeInfo(
            chain_id=self.chain_id, genesis_hash=self.genesis_hash,
            genesis_block_hash=self.genesis_block_hash,
            node_public_key=self.key.public_key.data, node_address=self.key.public_key.address,
            head=self.head_info(), block_time_ms=self.genesis.block_time_ms,
            mempool_size=len(self.mempool), version=__version__,
        )

    def account(self, address: str) -> AccountInfo:
        """Balance and nonce at the head (SPEC 7 `balance`), with the open epoch's pending
        work and estimated payout of `address` (SPEC 6 v1.1)."""
        with self.lock:  # state and height of one head
            state, height = self.ledger.state, self.ledger.height
        acct = get_account(state, address)
        return AccountInfo(address=address, balance=acct.balance, nonce=acct.nonce,
                           **account_rewards(self.genesis, state, height, address))

    def epoch(self, number: int | None = None, after: str | None = None,
              limit: int = DEFAULT_EPOCH_ROWS) -> dict:
        """One page of the epoch view (SPEC 6 v1.1, `hashcloud epoch [N]`,
        `chain.rewards.epoch_view`); NotFound for a future epoch."""
        with self.lock:
            state, height = self.ledger.state, self.ledger.height
        return epoch_view(self.genesis, state, height, number, after=after, limit=limit,
                          record_of=self._epoch_record)

    #: Closed-epoch records kept decoded (`epoch`): the pages of a few epochs being read.
    EPOCH_RECORD_CACHE = 8

    def _epoch_record(self, state: State, epoch: int) -> EpochRecord | None:
        """Closed epoch `epoch`'s record, decoded once and kept (`EPOCH_RECORD_CACHE`)."""
        with self._epoch_records_lock:
            record = self._epoch_records.get(epoch)
            if record is not None:
                self._epoch_records.move_to_end(epoch)
                return record
        record = get_epoch_record(state, epoch)
        if record is not None:
            with self._epoch_records_lock:
                self._epoch_records[epoch] = record
                while len(self._epoch_records) > self.EPOCH_RECORD_CACHE:
                    self._epoch_records.popitem(last=False)
        return record

    def pending_nonce(self, address: str) -> int:
        """The nonce a new transaction from `address` must use (counts pooled ones)."""
        with self.lock:
            return self.mempool.pending_nonce(address)

    def block(self, ref: str) -> dict:
        """SPEC 7 inspect-block JSON of `latest`, a height or a block hash."""
        blk = self.ledger.find_block(ref)
        if blk is None:
            raise NotFound(f"no block {ref!r}")
        return block_to_json(blk)

    def history(self, address: str, before: int | None = None, limit: int = 50) -> dict:
        """`address_history` at this node's head (SPEC 7 v1.1 `history`)."""
        return address_history(self.ledger, address, before=before, limit=limit)

    def tx_status(self, txid: str) -> TxStatus:
        """Pending, included (height, index, block hash), dropped (with reason) or unknown."""
        with self.lock:
            where = self.ledger.find_tx(txid)
            if where is not None:
                blk = self.ledger.get_block(where[0])
                return TxStatus(tx_id=txid, status="included", height=where[0], index=where[1],
                                block_hash=block_hash(blk.header) if blk else None)
            if txid in self.mempool:
                return TxStatus(tx_id=txid, status="pending")
            reason = self.mempool.dropped_reason(txid)
            if reason is not None:
                return TxStatus(tx_id=txid, status=f"dropped: {reason}")
        raise NotFound(f"unknown transaction {txid}")

    # ------------------------------------------------------------------ transactions

    def submit_transaction(self, tx: Transaction) -> str:
        """Validate `tx` into the mempool and journal it durably before acknowledging.

        While the chain store cannot write (disk full), refused with StorageUnavailable."""
        txid = tx_id(tx)
        with self.lock:
            self._refuse_while_storage_down("new transactions")
            if self.ledger.find_tx(txid) is not None:
                raise DuplicateTransaction(f"transaction {txid} is already included")
            try:
                self.mempool.add(tx, txid)
            except InvalidTransaction:
                self.metrics.txs.labels("rejected").inc()
                raise
            self.metrics.txs.labels("accepted").inc()
            self.metrics.mempool.set(len(self.mempool))
        # Durable before acknowledged, but fsynced outside the node lock (group commit).
        # A block or rewrite racing in between is harmless: replay skips included and
        # duplicate entries.
        try:
            self.journal.append(encode_tx(tx))
        except StorageUnavailable as exc:
            with self.lock:
                # Never report failure for something kept: a block may have included it.
                if not self.mempool.withdraw(txid, "not acknowledged: the journal write "
                                                   "failed") and self._is_included(txid):
                    return txid
                self.metrics.mempool.set(len(self.mempool))
            raise StorageUnavailable(
                f"{exc}: the transaction was not accepted") from None
        return txid

    def submit_batch(self, bodies: list[dict], status_of: Callable[[HashCloudError], int]
                     ) -> TxBatchResponse:
        """`POST /v1/transactions/batch`: admit each transaction as `submit_transaction`
        would, in order, under one hold of the node lock, then journal every admitted one
        with a single write and fsync before answering (acknowledged means durable). One
        result per body: `pending` with its id, or `rejected` with the HTTP status a single
        submission would get (`status_of`) and the reason. Signatures are checked on
        `VERIFY_THREADS` threads before the lock (libsecp256k1 releases the GIL; the
        verification cache makes the mempool's own check a lookup)."""
        if len(bodies) > MAX_BATCH:
            raise InvalidTransaction(f"a batch holds at most {MAX_BATCH} transactions")
        results: list[TxBatchResult | None] = [None] * len(bodies)

        def refuse(i: int, exc: HashCloudError) -> None:
            results[i] = TxBatchResult(status="rejected", code=status_of(exc), detail=str(exc))

        parsed: list[tuple[int, Transaction, str]] = []
        for i, body in enumerate(bodies):
            try:
                tx = tx_from_json(body)
            except HashCloudError as exc:
                refuse(i, exc)
                continue
            parsed.append((i, tx, tx_id(tx)))
        prevalidate(self.genesis, [tx for _, tx, _ in parsed])
        admitted: list[tuple[int, str, bytes]] = []
        with self.lock:
            self._refuse_while_storage_down("new transactions")
            for i, tx, txid in parsed:
                try:
                    if self.ledger.find_tx(txid) is not None:
                        raise DuplicateTransaction(f"transaction {txid} is already included")
                    self.mempool.add(tx, txid)
                except InvalidTransaction as exc:
                    self.metrics.txs.labels("rejected").inc()
                    refuse(i, exc)
                    continue
                admitted.append((i, txid, encode_tx(tx)))
            self.metrics.txs.labels("accepted").inc(len(admitted))
            self.metrics.mempool.set(len(self.mempool))
        if admitted:
            try:
                self.journal.append(*(enc for _, _, enc in admitted))
            except StorageUnavailable as exc:
                with self.lock:
                    for i, txid, _ in admitted:
                        if (self.mempool.withdraw(txid, "not acknowledged: the journal write "
                                                        "failed")
                                or not self._is_included(txid)):
                            refuse(i, StorageUnavailable(
                                f"{exc}: the transaction was not accepted"))
                    self.metrics.mempool.set(len(self.mempool))
        for i, txid, _ in admitted:
            if results[i] is None:
                results[i] = TxBatchResult(status="pending", tx_id=txid)
        done = [r for r in results if r is not None]
        return TxBatchResponse(results=done,
                               accepted=sum(1 for r in done if r.status == "pending"))

    def _rewrite_journal(self) -> None:
        """Replace the journal with the pending transactions, led by the head mark."""
        head = (self.ledger.height, bytes.fromhex(self.ledger.head_hash))
        self.journal.rewrite_pending((encode_tx(c) for c in self.mempool.candidates()), head)

    def storage_problem(self) -> str | None:
        """Why the chain store cannot write now (its last append failed), or None."""
        return self.ledger.store.write_problem

    def _refuse_while_storage_down(self, what: str) -> None:
        """StorageUnavailable (503) naming the reason while the store cannot write."""
        problem = self.storage_problem()
        if problem is not None:
            raise StorageUnavailable(
                f"the node cannot write its chain store ({problem}): {what} are refused until "
                "it can, retry later")

    def _is_included(self, txid: str) -> bool:
        """Whether `txid` is in a block of the chain."""
        return self.ledger.find_tx(txid) is not None

    def produce_block(self, now_ms: int | None = None) -> Block | None:
        """Make the next block if transactions are pending, or if the open epoch holds work
        that its close must pay (SPEC 6 v1.1: a quiet chain still reaches the epoch's end);
        otherwise none (no empty-block flood).

        A block the store cannot append (disk full) is not made: None, the mempool keeps its
        transactions and the next call tries again, so production resumes by itself once
        the store can write (`storage_problem` says why meanwhile)."""
        with self.lock:
            if not len(self.mempool) and not self.ledger.state.totals.epoch_work:
                return None
            try:
                built = self.ledger.produce_block(self.mempool.candidates(MAX_TXS_PER_BLOCK),
                                                  self.key, now_ms)
            except StoreError:
                if self.storage_problem() is None:
                    raise
                return None  # the store logged why; the head and the mempool are unchanged
            included = [tx_id(t) for t in built.block.transactions]
            self.mempool.on_new_head(self.ledger.state, included)
            try:
                self._rewrite_journal()
            except OSError as exc:  # the block is stored; the old journal still replays
                log.error("mempool journal rewrite after block %d failed: %s",
                          built.block.header.height, exc)
            self.metrics.blocks.inc()
            self.metrics.height.set(self.ledger.height)
            self.metrics.mempool.set(len(self.mempool))
            header = built.block.header
            log.info("produced block %d %s: %d txs (%d claims), %d pending", header.height,
                     block_hash(header)[:16], len(included),
                     sum(1 for t in built.block.transactions if t.payload is not None),
                     len(self.mempool))
            for tx, reason in built.rejected:
                log.info("block %d: skipped %s: %s", built.block.header.height, tx_id(tx),
                         reason)
            return built.block

    # ------------------------------------------------------------------ PoC validator

    def issue_challenge(self, req: ChallengeRequest, client_ip: str) -> ChallengeResponse:
        """Issue a challenge bound to the current head (SPEC 3); refused (503) while the
        chain store cannot write: the round's reward could not be claimed."""
        self._refuse_while_storage_down("new rounds")
        head = self.head_info()
        resp = self.validator.issue(req, head.height, head.hash, client_ip)
        self.metrics.challenges.inc()
        self.round_log.issued(resp.challenge.challenge_id, req.worker_address, req.n)
        return resp

    def commit(self, challenge_id: str, req: CommitRequest) -> CommitResponse:
        """Accept a commitment and return the signed sample indices (SPEC 3)."""
        t0 = time.perf_counter()
        try:
            resp = self.validator.commit(challenge_id, req)
        finally:
            self.metrics.commit_seconds.observe(time.perf_counter() - t0)
        self.round_log.committed(challenge_id, req.loops)
        return resp

    def reveal(self, challenge_id: str, req: RevealRequest,
               client_ip: str | None = None) -> RevealResponse:
        """Audit the revealed samples (SPEC 3 v1.1); on success the receipt carries the
        reward estimate. `client_ip` is the socket peer (charged a failed audit)."""
        t0 = time.perf_counter()
        try:  # rounds are counted by outcome through the validator's metrics
            receipt, resp = self.validator.reveal(challenge_id, req, client_ip)
        except HashCloudError as exc:
            self.round_log.finished(challenge_id, reveal_outcome(exc), reason=str(exc))
            raise
        finally:
            self.metrics.reveal_seconds.observe(time.perf_counter() - t0)
        self.round_log.finished(challenge_id, "accepted",
                                audited=f"{receipt.audited}/{receipt.samples}")
        work = claim_work(receipt.loops, receipt.n)
        with self.lock:
            state, height = self.ledger.state, self.ledger.height
        return resp.model_copy(update={
            "reward_estimate": expected_payout(self.genesis, state, height, work),
            "work": work, "payout_address": receipt.payout_address})

    def close(self) -> None:
        """Persist and release everything (the store's writer lock included); idempotent."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.journal.close()
            self.validator.close()
            self.ledger.close()
            log.info("node closed: journal and chain store closed, writer lock released")

"""The node's services behind the HTTP API: chain, mempool, PoC validator (SPEC 3, 6).

`NodeService` owns the ledger (single writer of the chain store), the mempool with its
durable journal, and the PoC validator. Every chain-mutating call holds one lock, so
handlers running in FastAPI's thread pool never interleave a block with a mempool change.
CPU-heavy audit recomputation (`reveal`) runs outside that lock.

The validator's operator options come as one typed `ValidatorConfig`; its clock, CSPRNG and
leaf / row functions are explicit keyword arguments, so tests drive expiry with a fake clock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hashcloud import __version__
from hashcloud.api.models import (
    AccountInfo,
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    CommitResponse,
    HeadInfo,
    NodeInfo,
    RevealRequest,
    RevealResponse,
    TxStatus,
)
from hashcloud.chain.block import Block, block_hash, block_to_json
from hashcloud.chain.genesis import genesis_hash, reward_for
from hashcloud.chain.ledger import Ledger
from hashcloud.chain.state import get_account
from hashcloud.chain.tx import Transaction, decode_tx, encode_tx, tx_id
from hashcloud.engine.rows import loop_leaf, row_digests_of
from hashcloud.errors import (
    DuplicateTransaction,
    HashCloudError,
    InvalidTransaction,
    NotFound,
    StorageUnavailable,
)
from hashcloud.node.config import DEFAULT_VALIDATOR_CONFIG, NodeFiles, ValidatorConfig
from hashcloud.node.journal import TxJournal
from hashcloud.node.mempool import Mempool
from hashcloud.node.validator import REVEAL_OUTCOMES, PocValidator
from hashcloud.params import AUDIT_MODES
from hashcloud.poc.audit import LeafFn, RowFn

log = logging.getLogger(__name__)

MAX_TXS_PER_BLOCK = 2000

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

    def __init__(
        self,
        files: NodeFiles,
        validator_config: ValidatorConfig = DEFAULT_VALIDATOR_CONFIG,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        leaf_fn: LeafFn = loop_leaf,
        row_fn: RowFn = row_digests_of,
    ) -> None:
        """Open the chain store, replay the mempool journal and start the validator (which
        restores its open challenges)."""
        self.files = files
        self.genesis = files.genesis
        self.key = files.key
        self.chain_id = files.genesis.chain_id
        self.genesis_hash = genesis_hash(files.genesis)
        self.lock = threading.RLock()
        self.closed = False
        self.metrics = NodeMetrics()
        self.ledger = Ledger.open(files.chain_dir, files.genesis)
        try:
            self.mempool = Mempool(self.genesis, self.ledger.state, self.key.public_key.address)
            self.journal = TxJournal(files.journal_path)
            self._replay_journal()
            self.validator = PocValidator(self.key, self.chain_id, files.validator_dir,
                                          validator_config, clock=clock, rng=rng,
                                          leaf_fn=leaf_fn, row_fn=row_fn,
                                          metrics=self.metrics)
        except BaseException:
            self.ledger.close()
            raise
        self.metrics.height.set(self.ledger.height)

    def _replay_journal(self) -> None:
        """Re-admit acknowledged transactions that were pending at the last stop."""
        kept = 0
        for raw in self.journal.load():
            try:
                tx = decode_tx(raw)
                if self.ledger.find_tx(tx_id(tx)) is None:
                    self.mempool.add(tx)
                    kept += 1
            except HashCloudError as exc:
                log.info("journal entry dropped on replay: %s", exc)
        self.journal.rewrite(encode_tx(c) for c in self.mempool.candidates())
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
            node_public_key=self.key.public_key.data, node_address=self.key.public_key.address,
            head=self.head_info(), block_time_ms=self.genesis.block_time_ms,
            mempool_size=len(self.mempool), version=__version__,
        )

    def account(self, address: str) -> AccountInfo:
        """Balance and nonce at the head (SPEC 7 `balance`)."""
        acct = get_account(self.ledger.state, address)
        return AccountInfo(address=address, balance=acct.balance, nonce=acct.nonce)

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
        """Validate `tx` into the mempool and journal it durably before acknowledging."""
        txid = tx_id(tx)
        with self.lock:
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

    def _is_included(self, txid: str) -> bool:
        """Whether `txid` is in a block of the chain."""
        return self.ledger.find_tx(txid) is not None

    def produce_block(self, now_ms: int | None = None) -> Block | None:
        """Make the next block if transactions are pending (no empty-block flood)."""
        with self.lock:
            if not len(self.mempool):
                return None
            built = self.ledger.produce_block(self.mempool.candidates(MAX_TXS_PER_BLOCK),
                                              self.key, now_ms)
            included = [tx_id(t) for t in built.block.transactions]
            self.mempool.on_new_head(self.ledger.state, included)
            try:
                self.journal.rewrite(encode_tx(c) for c in self.mempool.candidates())
            except OSError as exc:  # the block is stored; the old journal still replays
                log.error("mempool journal rewrite after block %d failed: %s",
                          built.block.header.height, exc)
            self.metrics.blocks.inc()
            self.metrics.height.set(self.ledger.height)
            self.metrics.mempool.set(len(self.mempool))
            for tx, reason in built.rejected:
                log.info("block %d: skipped %s: %s", built.block.header.height, tx_id(tx),
                         reason)
            return built.block

    # ------------------------------------------------------------------ PoC validator

    def issue_challenge(self, req: ChallengeRequest, client_ip: str) -> ChallengeResponse:
        """Issue a challenge bound to the current head (SPEC 3)."""
        head = self.head_info()
        resp = self.validator.issue(req, head.height, head.hash, client_ip)
        self.metrics.challenges.inc()
        return resp

    def commit(self, challenge_id: str, req: CommitRequest) -> CommitResponse:
        """Accept a commitment and return the signed sample indices (SPEC 3)."""
        t0 = time.perf_counter()
        try:
            return self.validator.commit(challenge_id, req)
        finally:
            self.metrics.commit_seconds.observe(time.perf_counter() - t0)

    def reveal(self, challenge_id: str, req: RevealRequest,
               client_ip: str | None = None) -> RevealResponse:
        """Audit the revealed samples (SPEC 3 v1.1); on success the receipt carries the
        reward estimate. `client_ip` is the socket peer (charged a failed audit)."""
        t0 = time.perf_counter()
        try:  # rounds are counted by outcome through the validator's metrics
            receipt, resp = self.validator.reveal(challenge_id, req, client_ip)
        finally:
            self.metrics.reveal_seconds.observe(time.perf_counter() - t0)
        return resp.model_copy(update={
            "reward_estimate": reward_for(self.genesis, receipt.loops, receipt.n)})

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

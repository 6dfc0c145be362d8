"""The mempool: transactions validated on entry, nonce-ordered per sender, bounded (SPEC 6).

Entry validation is the real state transition: the pool keeps a *pending state* (head state
plus every pooled transaction applied in order), and a new transaction is accepted only if
`apply_transaction` succeeds on it. So a pooled transaction has the exact next nonce of its
sender, is funded, and (for SUBMIT_RESULT) claims a task nobody else has pending.
After each block the pool drops what was included and re-validates the rest.

Bounds: `per_sender` pending transactions per address, `max_size` in total; when full, a
transaction paying a higher gas price evicts the cheapest sender-tail transaction.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from hashcloud.chain.genesis import Genesis
from hashcloud.chain.state import State
from hashcloud.chain.transition import apply_transaction
from hashcloud.chain.tx import Transaction, tx_id
from hashcloud.errors import InvalidTransaction

log = logging.getLogger(__name__)


class MempoolFull(InvalidTransaction):
    """The pool (or this sender's share of it) is full; retry later (HTTP 429)."""

    http_status = 429


class DuplicateTransaction(InvalidTransaction):
    """The transaction is already pooled or included (HTTP 409)."""

    http_status = 409


@dataclass(frozen=True, slots=True)
class PoolEntry:
    """A pooled transaction and its id."""

    tx_id: str
    tx: Transaction


class Mempool:
    """Pending transactions for the next blocks; not thread-safe (the node holds a lock)."""

    def __init__(self, genesis: Genesis, head_state: State, proposer: str, *,
                 max_size: int = 10_000, per_sender: int = 64, remember: int = 10_000) -> None:
        self.genesis = genesis
        self.proposer = proposer
        self.max_size = max_size
        self.per_sender = per_sender
        self._entries: OrderedDict[str, PoolEntry] = OrderedDict()
        self._pending = head_state.copy()
        self._head_state_for_rebuild = head_state
        self._dropped: OrderedDict[str, str] = OrderedDict()  # tx_id -> reason (bounded)
        self._remember = remember

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, txid: str) -> bool:
        return txid in self._entries

    def _sender_count(self, sender: str) -> int:
        return sum(1 for e in self._entries.values() if e.tx.from_address == sender)

    def add(self, tx: Transaction) -> str:
        """Validate `tx` against the pending state and pool it; return its id or raise."""
        txid = tx_id(tx)
        if txid in self._entries:
            raise DuplicateTransaction(f"transaction {txid} is already pending")
        if self._sender_count(tx.from_address) >= self.per_sender:
            raise MempoolFull(f"sender {tx.from_address} already has {self.per_sender} "
                              "pending transactions")
        if len(self._entries) >= self.max_size:
            victim = self._eviction_victim(tx)
            if victim is None:
                raise MempoolFull("mempool is full; raise the gas price or retry later")
            # Validate before evicting, so invalid transactions cannot flush the pool.
            apply_transaction(self._pending.copy(), tx, self.genesis, self.proposer)
            del self._entries[victim.tx_id]
            self._remember_drop(victim.tx_id, "evicted by a higher-paying transaction")
            self._rebuild(self._head_state_for_rebuild)
        # apply_transaction leaves the state untouched when it raises.
        apply_transaction(self._pending, tx, self.genesis, self.proposer)
        self._entries[txid] = PoolEntry(txid, tx)
        self._dropped.pop(txid, None)
        return txid

    def _eviction_victim(self, tx: Transaction) -> PoolEntry | None:
        """The cheapest other sender's tail transaction if `tx` pays more, else None."""
        tails: dict[str, PoolEntry] = {}
        for e in self._entries.values():
            if e.tx.from_address != tx.from_address:
                tails[e.tx.from_address] = e  # last entry per sender = its highest nonce
        victim = min(tails.values(), key=lambda e: e.tx.gas_price, default=None)
        if victim is None or victim.tx.gas_price >= tx.gas_price:
            return None
        return victim

    def _remember_drop(self, txid: str, reason: str) -> None:
        self._dropped[txid] = reason
        while len(self._dropped) > self._remember:
            self._dropped.popitem(last=False)

    def dropped_reason(self, txid: str) -> str | None:
        """Why `txid` left the pool without being included, if it did recently."""
        return self._dropped.get(txid)

    def candidates(self, limit: int | None = None) -> list[Transaction]:
        """Transactions for the next block: highest gas price first among each sender's
        next transaction, so every sender's nonces stay in order."""
        queues: dict[str, list[Transaction]] = {}
        for e in self._entries.values():
            queues.setdefault(e.tx.from_address, []).append(e.tx)
        out: list[Transaction] = []
        heads = {s: 0 for s in queues}
        while heads and (limit is None or len(out) < limit):
            sender = max(heads, key=lambda s: queues[s][heads[s]].gas_price)
            out.append(queues[sender][heads[sender]])
            heads[sender] += 1
            if heads[sender] == len(queues[sender]):
                del heads[sender]
        return out

    def on_new_head(self, head_state: State, included: Iterable[str]) -> None:
        """Drop included transactions and re-validate the rest on the new head state."""
        for txid in included:
            self._entries.pop(txid, None)
        self._rebuild(head_state)

    def _rebuild(self, head_state: State) -> None:
        self._head_state_for_rebuild = head_state
        pending = head_state.copy()
        kept: OrderedDict[str, PoolEntry] = OrderedDict()
        for txid, e in self._entries.items():
            try:
                apply_transaction(pending, e.tx, self.genesis, self.proposer)
            except InvalidTransaction as exc:
                log.info("mempool: dropped %s: %s", txid, exc)
                self._remember_drop(txid, str(exc))
                continue
            kept[txid] = e
        self._entries = kept
        self._pending = pending

    def pending_nonce(self, address: str) -> int:
        """The next nonce `address` should use, counting its pooled transactions."""
        acct = self._pending.accounts.get(address)
        return acct.nonce if acct else 0

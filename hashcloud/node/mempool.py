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

import heapq
import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from hashcloud.chain.genesis import Genesis
from hashcloud.chain.state import State
from hashcloud.chain.transition import apply_transaction
from hashcloud.chain.tx import Transaction, tx_id
from hashcloud.errors import DuplicateTransaction, InvalidTransaction, MempoolFull

log = logging.getLogger(__name__)


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
        self._per_sender: Counter[str] = Counter()
        self._pending = head_state.copy()
        self._head_state = head_state
        self._dropped: OrderedDict[str, str] = OrderedDict()  # tx_id -> reason (bounded)
        self._remember = remember

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, txid: str) -> bool:
        return txid in self._entries

    def _sender_count(self, sender: str) -> int:
        return self._per_sender.get(sender, 0)

    def _set_entries(self, entries: OrderedDict[str, PoolEntry]) -> None:
        """Replace the entries and recount transactions per sender."""
        self._entries = entries
        self._per_sender = Counter(e.tx.from_address for e in entries.values())

    def add(self, tx: Transaction, txid: str | None = None) -> str:
        """Validate `tx` against the pending state and pool it; return its id or raise.

        `txid` may be passed when the caller already computed `tx_id(tx)`."""
        txid = txid or tx_id(tx)
        if txid in self._entries:
            raise DuplicateTransaction(f"transaction {txid} is already pending")
        if self._sender_count(tx.from_address) >= self.per_sender:
            raise MempoolFull(f"sender {tx.from_address} already has {self.per_sender} "
                              "pending transactions")
        if len(self._entries) >= self.max_size:
            self._add_by_eviction(txid, tx)
        else:
            # apply_transaction leaves the state untouched when it raises.
            apply_transaction(self._pending, tx, self.genesis, self.proposer)
            self._entries[txid] = PoolEntry(txid, tx)
            self._per_sender[tx.from_address] += 1
        self._dropped.pop(txid, None)
        return txid

    def withdraw(self, txid: str, reason: str) -> bool:
        """Take `txid` back out of the pool (it could not be made durable), with whatever
        depended on it (later nonces of its sender); False if it is no longer pending."""
        if txid not in self._entries:
            return False
        others = OrderedDict((k, e) for k, e in self._entries.items() if k != txid)
        kept, pending, dropped = self._replay(self._head_state, others)
        self._set_entries(kept)
        self._pending = pending
        self._remember_drop(txid, reason)
        for k, why in dropped:
            # Acknowledged earlier, but its sender's lower nonce never became durable: it
            # cannot be included until that nonce is sent again. Say so loudly.
            log.warning("dropping acknowledged transaction %s: it depended on %s, which "
                        "could not be made durable (%s)", k, txid, why)
            self._remember_drop(k, why)
        return True

    def _add_by_eviction(self, txid: str, tx: Transaction) -> None:
        """Make room by evicting the cheapest sender tail, all or nothing: the pool changes
        only if `tx` is valid on the pool without the victim (and whatever depended on it),
        so invalid transactions cannot flush the pool."""
        victim = self._eviction_victim(tx)
        if victim is None:
            raise MempoolFull("mempool is full; raise the gas price or retry later")
        others = OrderedDict((k, e) for k, e in self._entries.items() if k != victim.tx_id)
        kept, pending, dropped = self._replay(self._head_state, others)
        apply_transaction(pending, tx, self.genesis, self.proposer)  # raises: pool unchanged
        kept[txid] = PoolEntry(txid, tx)
        self._set_entries(kept)
        self._pending = pending
        self._remember_drop(victim.tx_id, "evicted by a higher-paying transaction")
        for k, reason in dropped:
            self._remember_drop(k, reason)

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
        next transaction, so every sender's nonces stay in order (ties: the sender that
        entered the pool first). A heap of each sender's next transaction: O(n log senders)."""
        queues: dict[str, list[Transaction]] = {}
        for e in self._entries.values():
            queues.setdefault(e.tx.from_address, []).append(e.tx)
        # (-gas price, sender's first-seen rank, position in its queue, sender)
        heap = [(-q[0].gas_price, rank, 0, sender)
                for rank, (sender, q) in enumerate(queues.items())]
        heapq.heapify(heap)
        out: list[Transaction] = []
        while heap and (limit is None or len(out) < limit):
            _, rank, pos, sender = heapq.heappop(heap)
            queue = queues[sender]
            out.append(queue[pos])
            if pos + 1 < len(queue):
                heapq.heappush(heap, (-queue[pos + 1].gas_price, rank, pos + 1, sender))
        return out

    def on_new_head(self, head_state: State, included: Iterable[str]) -> None:
        """Drop included transactions and re-validate the rest on the new head state."""
        included = set(included)
        self._entries = OrderedDict((k, e) for k, e in self._entries.items()
                                    if k not in included)
        self._rebuild(head_state)

    def _replay(self, head_state: State, entries: OrderedDict[str, PoolEntry]
                ) -> tuple[OrderedDict[str, PoolEntry], State, list[tuple[str, str]]]:
        """Apply `entries` in order on a copy of `head_state`: (kept, state, dropped)."""
        pending = head_state.copy()
        kept: OrderedDict[str, PoolEntry] = OrderedDict()
        dropped: list[tuple[str, str]] = []
        for txid, e in entries.items():
            try:
                apply_transaction(pending, e.tx, self.genesis, self.proposer)
            except InvalidTransaction as exc:
                dropped.append((txid, str(exc)))
                continue
            kept[txid] = e
        return kept, pending, dropped

    def _rebuild(self, head_state: State) -> None:
        self._head_state = head_state
        kept, self._pending, dropped = self._replay(head_state, self._entries)
        self._set_entries(kept)
        for txid, reason in dropped:
            log.warning("mempool: dropped acknowledged transaction %s: %s", txid, reason)
            self._remember_drop(txid, reason)

    def pending_nonce(self, address: str) -> int:
        """The next nonce `address` should use, counting its pooled transactions."""
        acct = self._pending.accounts.get(address)
        return acct.nonce if acct else 0

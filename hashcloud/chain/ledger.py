"""The ledger: a genesis, its chain store and the current state, kept consistent (SPEC 6).

`Ledger.open` binds the store to the genesis (its hash is recorded in the store), writes
the deterministic genesis block at height 0 on first use, then restores the state from the
latest snapshot that checks out (its block's `state_root` must match) or by replaying every
block from genesis, through the same `apply_block` that validates new blocks. Every
`snapshot_interval` blocks the state is snapshotted atomically by the store.

`replay` is the one loop that re-applies stored blocks: the ledger's open and refresh use it,
and so does the offline audit (`hashcloud.chain.audit.audit_chain`), so a chain the audit
accepts is exactly a chain the ledger opens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from hashcloud.chain.block import (
    Block,
    BlockHeader,
    block_hash,
    block_tx_ids_from_payload,
    decode_block,
    encode_block,
)
from hashcloud.chain.genesis import Genesis, genesis_block, genesis_hash, genesis_state
from hashcloud.chain.state import (
    Account,
    State,
    decode_state,
    encode_state,
    get_account,
    state_root,
)
from hashcloud.chain.store import ChainStore
from hashcloud.chain.transition import BuiltBlock, apply_block, build_block
from hashcloud.chain.tx import Transaction, tx_id
from hashcloud.crypto.keys import PrivateKey
from hashcloud.errors import ChainError, DecodeError, InvalidBlock, StoreError

logger = logging.getLogger(__name__)

__all__ = [
    "SNAPSHOT_INTERVAL",
    "Ledger",
    "ReplayStep",
    "check_genesis_block",
    "check_supply",
    "decode_stored_block",
    "replay",
]

SNAPSHOT_INTERVAL = 100
"""Default number of blocks between state snapshots."""


def _now_ms() -> int:
    """The local clock in unix milliseconds."""
    return int(time.time() * 1000)


def check_supply(state: State, initial_supply: int) -> str | None:
    """The supply counters' invariant (SPEC 6 v1.1): `total_supply == genesis supply +
    emitted - pool`; a description of the break, or None when it holds. O(1): the balances
    themselves are summed by `decode_state` and, at epoch boundaries, by `chain.audit`."""
    totals = state.totals
    if totals.total_supply != initial_supply + totals.emitted - totals.pool:
        return (f"total supply {totals.total_supply} is not genesis supply {initial_supply} "
                f"+ emitted {totals.emitted} - pool {totals.pool}")
    return None


def decode_stored_block(height: int, stored_hash: bytes, payload: bytes) -> Block:
    """Decode a stored block and check it is the block its record claims, or raise.

    InvalidBlock's message says what is wrong without naming the height (callers add it).
    """
    try:
        block = decode_block(payload)
    except DecodeError as exc:
        raise InvalidBlock(f"does not decode: {exc}") from None
    if block.header.height != height:
        raise InvalidBlock(f"has header height {block.header.height}")
    if block_hash(block.header) != stored_hash.hex():
        raise InvalidBlock("does not hash to its recorded hash")
    return block


def check_genesis_block(store: ChainStore, genesis: Genesis) -> Block:
    """Return the genesis block of `genesis` if block 0 of `store` is exactly it, else raise.

    The one block-0 check, used by `Ledger.open` and by `chain.audit`: the stored hash and
    the stored bytes must both be those of `genesis_block(genesis)` (so block 0 also decodes,
    has height 0 and hashes to its record). Raises StoreError when they differ or block 0 is
    missing.
    """
    block = genesis_block(genesis)
    if (store.find_block_hash(0) != bytes.fromhex(block_hash(block.header))
            or store.get_block(0) != encode_block(block)):
        raise StoreError("block 0 of the store is not this genesis's block")
    return block


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """One block re-applied by `replay`: the block and the state after it."""

    height: int
    block: Block
    state: State


def replay(store: ChainStore, genesis: Genesis, state: State,
           parent: BlockHeader) -> Iterator[ReplayStep]:
    """Re-apply the stored blocks after `parent` (whose post-state is `state`), in order.

    Each block is decoded and checked against its record, then validated and applied by the
    same `apply_block` that imports new blocks (SPEC 6). Raises InvalidBlock (or StoreError
    from the store) at the first block that fails; the failing height is the height after
    the last step yielded. Used by the ledger's open/refresh and by `chain.audit`.
    """
    for height, digest, payload in store.iter_blocks(parent.height + 1):
        block = decode_stored_block(height, digest, payload)
        state = apply_block(state, block, parent, genesis)
        parent = block.header
        yield ReplayStep(height, block, state)


class Ledger:
    """Genesis + chain store + current state. Use `Ledger.open`; one writer per store.

    The state object is replaced, never mutated, when a block is added, so a reader holding
    `ledger.state` always sees one consistent height.
    """

    def __init__(self, genesis: Genesis, store: ChainStore, state: State, head: BlockHeader,
                 tx_index: dict[str, tuple[int, int]], snapshot_interval: int) -> None:
        self.genesis = genesis
        self.store = store
        self._state = state
        self._head = head
        self._tx_index = tx_index
        self.snapshot_interval = snapshot_interval
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, data_dir: Path | str, genesis: Genesis, readonly: bool = False,
             snapshot_interval: int = SNAPSHOT_INTERVAL) -> Ledger:
        """Open (creating in writer mode) the ledger in `data_dir` for `genesis`.

        Raises StoreError if the store belongs to another genesis, is locked or corrupt, and
        ChainError if a stored block does not validate.
        """
        if snapshot_interval < 1:
            raise ChainError("snapshot_interval must be at least 1")
        store = ChainStore(data_dir, readonly=readonly,
                           genesis_hash=bytes.fromhex(genesis_hash(genesis)))
        try:
            genesis_header = cls._ensure_genesis_block(store, genesis)
            if store.genesis_hash is None and not readonly:
                store.bind_genesis(bytes.fromhex(genesis_hash(genesis)))  # block 0 matched
            ledger = cls(genesis, store, genesis_state(genesis), genesis_header, {},
                         snapshot_interval)
            ledger._restore()
        except BaseException:
            store.close()
            raise
        return ledger

    @staticmethod
    def _ensure_genesis_block(store: ChainStore, genesis: Genesis) -> BlockHeader:
        """Write the genesis block into an empty store, or check the stored one."""
        if store.height >= 0:
            return check_genesis_block(store, genesis).header
        if store.readonly:
            raise StoreError(f"chain store at {store.data_dir} has no genesis block")
        block = genesis_block(genesis)
        store.append_block(0, bytes.fromhex(block_hash(block.header)), encode_block(block))
        return block.header

    def _restore(self) -> None:
        """Load the latest usable snapshot, index the blocks it covers, replay the rest."""
        start = self._load_snapshot()
        if start > 0:
            for height, _, payload in self.store.iter_blocks(1):
                if height > start:
                    break
                self._index(height, block_tx_ids_from_payload(payload))
        self._replay()

    def _load_snapshot(self) -> int:
        """Adopt the store's snapshot if it matches its block; return its height (0 if none)."""
        snapshot = self.store.read_snapshot()
        if snapshot is None:
            return 0
        height, digest, data = snapshot
        try:
            state = decode_state(data)
            block = decode_stored_block(height, digest, self.store.get_block(height))
        except (DecodeError, InvalidBlock, StoreError) as exc:
            logger.warning("ignoring state snapshot at height %d: %s", height, exc)
            return 0
        problem = check_supply(state, self.genesis.initial_supply)
        if block.header.state_root != state_root(state) or problem:
            logger.warning("ignoring state snapshot at height %d: it does not match block %d",
                           height, height)
            return 0
        self._state, self._head = state, block.header
        return height

    def _replay(self) -> None:
        """Apply the stored blocks after the head on top of the current state (`replay`)."""
        height = self._head.height + 1
        try:
            for step in replay(self.store, self.genesis, self._state, self._head):
                self._state, self._head = step.state, step.block.header
                self._index(step.height, [tx_id(tx) for tx in step.block.transactions])
                height = step.height + 1
        except InvalidBlock as exc:
            raise ChainError(f"stored block {height} is invalid: {exc}") from None

    def _index(self, height: int, ids: list[str]) -> None:
        """Record where each transaction of block `height` lives."""
        for position, txid in enumerate(ids):
            self._tx_index[txid] = (height, position)

    # ------------------------------------------------------------------ state

    @property
    def head(self) -> BlockHeader:
        """Header of the latest block."""
        return self._head

    @property
    def head_hash(self) -> str:
        """Hash (hex) of the latest block."""
        return block_hash(self._head)

    @property
    def height(self) -> int:
        """Height of the latest block."""
        return self._head.height

    @property
    def state(self) -> State:
        """The state after the latest block (treat as read-only)."""
        return self._state

    def account(self, address: str) -> Account:
        """Balance and next nonce of `address` at the head."""
        return get_account(self._state, address)

    # ------------------------------------------------------------------ writing

    def add_block(self, block: Block, now_ms: int | None = None) -> None:
        """Validate `block` on the head (clock `now_ms`, default now), then store it.

        Raises InvalidBlock (nothing stored, state unchanged) or StoreError.
        """
        with self._lock:
            state = apply_block(self._state, block, self._head, self.genesis,
                                now_ms=_now_ms() if now_ms is None else now_ms)
            self._commit(block, state)

    def add_blocks(self, blocks: Sequence[Block], now_ms: int | None = None) -> int:
        """Validate `blocks` in order on the head (clock `now_ms`, default now), store the
        ones that validate with one write and one fsync, and return the new head height.

        For a follower's catch-up: an imported block is acknowledged to nobody, so one fsync
        per range is as safe as one per block, and the store still advances its watermark
        after that fsync (`ChainStore.append_blocks`); a kill during the write leaves a
        prefix of whole, valid blocks. Each block goes through the same `apply_block` as
        `add_block`. At the first block that does not validate, the blocks before it are
        stored and made the head, nothing after it, and its InvalidBlock is raised. A
        StoreError stores nothing and leaves the head as it was.
        """
        with self._lock:
            now = _now_ms() if now_ms is None else now_ms
            state, head = self._state, self._head
            valid: list[Block] = []
            snapshot: tuple[BlockHeader, State] | None = None
            error: InvalidBlock | None = None
            for block in blocks:
                try:
                    state = apply_block(state, block, head, self.genesis, now_ms=now)
                except InvalidBlock as exc:
                    error = exc
                    break
                head = block.header
                valid.append(block)
                if head.height % self.snapshot_interval == 0:
                    snapshot = (head, state)
            if valid:
                self.store.append_blocks(
                    (b.header.height, bytes.fromhex(block_hash(b.header)), encode_block(b))
                    for b in valid)
                self._state, self._head = state, head
                for b in valid:
                    self._index(b.header.height, [tx_id(tx) for tx in b.transactions])
                if snapshot is not None:
                    self._write_snapshot(*snapshot)
            if error is not None:
                raise error
            return self._head.height

    def produce_block(self, txs: list[Transaction], key: PrivateKey,
                      now_ms: int | None = None) -> BuiltBlock:
        """Build, sign and store the next block from the candidates that validate."""
        with self._lock:
            built = build_block(self._state, self._head, txs, self.genesis, key,
                                _now_ms() if now_ms is None else now_ms)
            self._commit(built.block, built.state)
            return built

    def _commit(self, block: Block, state: State) -> None:
        """Append a validated block durably, then make it the head; snapshot periodically."""
        header = block.header
        digest = block_hash(header)
        self.store.append_block(header.height, bytes.fromhex(digest), encode_block(block))
        self._state, self._head = state, header
        self._index(header.height, [tx_id(tx) for tx in block.transactions])
        if header.height % self.snapshot_interval == 0:
            self.snapshot()

    def snapshot(self) -> None:
        """Snapshot the head state now (a failure is logged: replay can always rebuild it)."""
        with self._lock:
            self._write_snapshot(self._head, self._state)

    def _write_snapshot(self, header: BlockHeader, state: State) -> None:
        """Snapshot `state`, the state after the stored block `header` (a failure is
        logged)."""
        try:
            self.store.write_snapshot(header.height, bytes.fromhex(block_hash(header)),
                                      encode_state(state))
        except StoreError as exc:
            logger.warning("could not write state snapshot: %s", exc)

    def refresh(self) -> int:
        """Readers: pick up and validate blocks the writer appended; return the head height."""
        with self._lock:
            self.store.refresh()
            self._replay()
            return self._head.height

    # ------------------------------------------------------------------ reading

    def get_block(self, height: int) -> Block | None:
        """The block at `height`, or None beyond the head."""
        payload = self.store.find_block(height) if height >= 0 else None
        return None if payload is None else decode_block(payload)

    def get_block_by_hash(self, hash_hex: str) -> Block | None:
        """The block whose hash is `hash_hex` (64 hex digits), or None."""
        try:
            digest = bytes.fromhex(hash_hex)
        except ValueError:
            return None
        if len(digest) != 32:
            return None
        found = self.store.find_by_hash(digest)
        return None if found is None else decode_block(found[1])

    def find_block(self, ref: str) -> Block | None:
        """The block named by `latest`, a decimal height or a 64-hex-digit hash (SPEC 7)."""
        if ref == "latest":
            return self.get_block(self.height)
        if ref.isascii() and ref.isdigit() and len(ref) < 20:
            return self.get_block(int(ref))
        return self.get_block_by_hash(ref.lower())

    def find_tx(self, txid: str) -> tuple[int, int] | None:
        """`(height, index in block)` of a stored transaction, or None."""
        return self._tx_index.get(txid)

    def get_transaction(self, txid: str) -> Transaction | None:
        """The stored transaction with id `txid`, or None."""
        where = self.find_tx(txid)
        if where is None:
            return None
        block = self.get_block(where[0])
        return None if block is None else block.transactions[where[1]]

    def close(self) -> None:
        """Close the store (persisting its index and releasing the writer lock)."""
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

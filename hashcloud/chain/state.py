"""The consensus state and the small named functions that change it (SPEC 6, 6 v1.1).

`State` is the one mutable object of the chain. Every entry lives in one sparse Merkle tree
(`crypto.smt`), keyed by `SHA256(encode_canonical([kind, key]))`, whose leaf value is the
canonical record `[kind, key, fields...]`:

- `account` (address): balance, next nonce;
- `task` (task id): the challenge was claimed, so it can never be claimed again;
- `work` (payout address): the open epoch's work and deferred claim fees;
- `worker` (worker address): lifetime audited work and accepted claims (the worker record);
- `epoch` (number): a closed epoch's pool, total work, carried remainder and payouts;
- `totals` (""): open epoch, its pool, the amount carried into it, its total work, the total
  supply and every subsidy ever added (`emitted`).

Only the functions below change a state, so every mutation of consensus state is easy to find
and review, and each touches only its own keys: `state_root` is the tree's cached root, and a
block costs O(keys touched * depth) hashes, never time proportional to the history.

Invariant at every height: `sum(balances) == total_supply == sum(genesis allocations) +
emitted - pool`. Transfers and fees only move coins; subsidies enter the open epoch's pool,
and coins enter balances only when `close_epoch` pays a pool out.

Blocks are applied to a `copy()` that replaces the current state only when the whole block is
valid (copy-on-apply). The tree is persistent (an update copies only its path), so a copy
shares it and duplicates only the open epoch's payee index and the write-back overlay.

Write-back overlay: a change is not put into the tree at once. `State` keeps the records
written since the last fold in a dict (path -> record, None for a deleted entry), reads check
it first, and `state_root` (or anything that walks the tree) folds it in with one batch
update (`SparseMerkleTree.update`), which hashes each changed node once. A block's thousands
of changes to a few hundred keys thus cost one path update per key, and the mempool's entry
validation, which never needs a root, costs no hashing at all. The root is the same as if
every change had gone into the tree one by one.

`encode_state` (snapshots) is canonical: the leaf records in path order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from hashcloud.chain.epoch import split_pool
from hashcloud.codec import (
    decode_amount,
    decode_canonical,
    decode_trusted,
    encode_amount,
    encode_canonical,
    expect_array,
    expect_bytes,
    expect_int,
    expect_str,
)
from hashcloud.crypto.hashing import sha256
from hashcloud.crypto.smt import SparseMerkleTree
from hashcloud.errors import (
    DecodeError,
    InsufficientBalance,
    InvalidAddress,
    InvalidComputeResult,
    InvalidTransaction,
    SupplyOverflow,
)
from hashcloud.types import HEX_ID16_PATTERN, MAX_AMOUNT, MAX_U64, matches, validate_address

__all__ = [
    "EMPTY_ACCOUNT",
    "MAX_WORK",
    "Account",
    "EpochRecord",
    "EpochWork",
    "Payout",
    "State",
    "Totals",
    "WorkerRecord",
    "add_subsidy",
    "balances_total",
    "close_epoch",
    "credit",
    "debit",
    "decode_state",
    "encode_state",
    "get_account",
    "get_epoch_record",
    "get_worker",
    "increment_nonce",
    "is_task_rewarded",
    "mark_task_rewarded",
    "new_state",
    "pending_work",
    "record_work",
    "state_root",
    "state_with",
]

STATE_FORMAT = 2
"""Version tag at the start of the encoded state (2: the v1.1 tree of records)."""

MAX_WORK = 2**128
"""Work counters (`loops * n^3` summed) stay below this; encoded as 16 bytes."""
_WORK_BYTES = 16

_ACCOUNT, _TASK, _WORK, _WORKER, _EPOCH, _TOTALS = (
    "account", "task", "work", "worker", "epoch", "totals")


@dataclass(frozen=True, slots=True)
class Account:
    """One account: spendable balance (base units) and the next expected nonce."""

    balance: int = 0
    nonce: int = 0


EMPTY_ACCOUNT = Account()


@dataclass(frozen=True, slots=True)
class EpochWork:
    """A payout address's work in the open epoch and the claim fees deferred to its payout."""

    work: int = 0
    fees: int = 0


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """Per worker address: lifetime audited work and accepted claims (SPEC 6 v1.1)."""

    work: int = 0
    claims: int = 0


@dataclass(frozen=True, slots=True)
class Payout:
    """One address's share of a closed epoch: its work, the gross pro-rata share, and the
    deferred fees charged against it (paid to the closing block's proposer)."""

    address: str
    work: int
    amount: int
    fees: int


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """A closed epoch: its pool, total work, the remainder carried on, and its payouts
    (sorted by address)."""

    epoch: int
    pool: int
    work: int
    carried: int
    payouts: tuple[Payout, ...]


@dataclass(frozen=True, slots=True)
class Totals:
    """Chain-wide counters: the open epoch, its pool (carried + subsidies so far), what was
    carried into it, its total work, the total supply and every subsidy ever added."""

    epoch: int = 0
    pool: int = 0
    carried: int = 0
    epoch_work: int = 0
    total_supply: int = 0
    emitted: int = 0


@lru_cache(maxsize=1 << 16)
def _path(kind: str, key: Any) -> bytes:
    """The tree key of entry `(kind, key)` (cached: the same accounts recur block after
    block)."""
    return sha256(encode_canonical([kind, key]))


_TOTALS_PATH = _path(_TOTALS, "")


def _work_bytes(work: int) -> bytes:
    return work.to_bytes(_WORK_BYTES, "big")


def _decode_work(raw: Any, what: str) -> int:
    if not isinstance(raw, bytes) or len(raw) != _WORK_BYTES:
        raise DecodeError(f"{what} must be {_WORK_BYTES} bytes")
    return int.from_bytes(raw, "big")


class State:
    """All consensus state after some block: one sparse Merkle tree of records, the chain
    totals (also a record in it) and an index of the open epoch's payees."""

    __slots__ = ("_tree", "_overlay", "totals", "epoch_work")

    def __init__(self, tree: SparseMerkleTree | None = None, totals: Totals | None = None,
                 epoch_work: dict[str, EpochWork] | None = None,
                 overlay: dict[bytes, list | None] | None = None) -> None:
        self._tree = SparseMerkleTree() if tree is None else tree
        # Records written since the last fold (module doc): path -> [kind, key, *fields],
        # or None for a deleted entry. The records are never mutated once stored.
        self._overlay: dict[bytes, list | None] = {} if overlay is None else overlay
        self.totals = Totals() if totals is None else totals
        self.epoch_work: dict[str, EpochWork] = {} if epoch_work is None else epoch_work

    @property
    def tree(self) -> SparseMerkleTree:
        """The state's tree with every pending write folded in."""
        if self._overlay:
            tree = self._tree.update({
                path: None if record is None else encode_canonical(record)
                for path, record in self._overlay.items()})
            # Tree first, then the overlay: a concurrent reader sees each record in one.
            self._tree = tree
            self._overlay = {}
        return self._tree

    def copy(self) -> State:
        """An independent copy: the tree and totals are immutable and shared; the overlay
        and the payee index (both bounded by the keys touched since the last fold) are
        duplicated."""
        return State(self._tree, self.totals, dict(self.epoch_work), dict(self._overlay))

    @property
    def total_supply(self) -> int:
        """Sum of all balances (the carried pool is not in it)."""
        return self.totals.total_supply

    @property
    def accounts(self) -> Mapping[str, Account]:
        """Read-only view of the accounts by address (a lookup walks the tree)."""
        return _AccountsView(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return self.tree.root == other.tree.root

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"State(entries={len(self.tree)}, totals={self.totals})"


class _AccountsView(Mapping[str, Account]):
    """`State.accounts`: accounts by address, read through the tree."""

    __slots__ = ("_state",)

    def __init__(self, state: State) -> None:
        self._state = state

    def __getitem__(self, address: str) -> Account:
        account = get_account(self._state, address)
        if account == EMPTY_ACCOUNT:
            raise KeyError(address)
        return account

    def __iter__(self) -> Iterator[str]:
        for record in _records(self._state):
            if record[0] == _ACCOUNT:
                yield record[1]

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _decode_leaf(value: bytes) -> list:
    """A record of the tree. Its bytes were encoded by this process or checked strictly
    when the state was loaded (`decode_state`), so `decode_trusted` skips the re-encode
    check of `decode_canonical` (about ten times slower: every balance and nonce read of a
    transaction goes through here)."""
    return decode_trusted(value)


def _records(state: State) -> Iterator[list]:
    """Every leaf record of the state, decoded, in path order."""
    for _, value in state.tree.items():
        yield _decode_leaf(value)


def _put(state: State, kind: str, key: Any, fields: list | None) -> None:
    """Store record `[kind, key, *fields]`, or delete the entry when `fields` is None
    (into the overlay; the tree takes it at the next fold)."""
    state._overlay[_path(kind, key)] = None if fields is None else [kind, key, *fields]


def _lookup(state: State, path: bytes) -> list | None:
    """The record at `path` (`[kind, key, *fields]`), or None: the overlay, else the tree."""
    overlay = state._overlay
    if path in overlay:
        return overlay[path]
    value = state._tree.get(path)
    return None if value is None else _decode_leaf(value)


def _get(state: State, kind: str, key: Any) -> list | None:
    """The fields of record `(kind, key)`, or None."""
    record = _lookup(state, _path(kind, key))
    return None if record is None else record[2:]


def _set_totals(state: State, totals: Totals) -> None:
    """Replace the totals and their record."""
    state.totals = totals
    state._overlay[_TOTALS_PATH] = _totals_record(totals)


def _totals_record(t: Totals) -> list:
    return [_TOTALS, "", t.epoch, encode_amount(t.pool), encode_amount(t.carried),
            _work_bytes(t.epoch_work), encode_amount(t.total_supply), encode_amount(t.emitted)]


def _encode_totals(t: Totals) -> bytes:
    return encode_canonical(_totals_record(t))


# ------------------------------------------------------------------ accounts


def new_state(allocations: Mapping[str, int]) -> State:
    """The state before block 1: the allocations, epoch 0 open with an empty pool."""
    return state_with({a: Account(v, 0) for a, v in allocations.items() if v})


def state_with(accounts: Mapping[str, Account], rewarded_tasks: Iterable[str] = ()) -> State:
    """A state in epoch 0 (empty pool) holding exactly `accounts` (none empty) and
    `rewarded_tasks`, its total supply their balances; the tree is built bottom-up in
    O(n log n) rather than by n path updates (a large genesis, a benchmark's state)."""
    items = {}
    for address, account in accounts.items():
        if account.balance == 0 and account.nonce == 0:
            raise ValueError(f"account {address} is empty")
        items[_path(_ACCOUNT, address)] = encode_canonical(
            [_ACCOUNT, address, encode_amount(account.balance), account.nonce])
    for task in rewarded_tasks:
        items[_path(_TASK, task)] = encode_canonical([_TASK, task])
    totals = Totals(total_supply=sum(account.balance for account in accounts.values()))
    items[_TOTALS_PATH] = _encode_totals(totals)
    return State(SparseMerkleTree.from_items(items), totals, {})


def get_account(state: State, address: str) -> Account:
    """The account at `address` (an empty account if it was never touched)."""
    fields = _get(state, _ACCOUNT, address)
    return EMPTY_ACCOUNT if fields is None else Account(int.from_bytes(fields[0], "big"),
                                                        fields[1])


def _set_account(state: State, address: str, account: Account) -> None:
    """Store `account`, dropping it when empty so the state has one canonical form."""
    if account.balance == 0 and account.nonce == 0:
        _put(state, _ACCOUNT, address, None)
    else:
        _put(state, _ACCOUNT, address, [encode_amount(account.balance), account.nonce])


def credit(state: State, address: str, amount: int) -> None:
    """Add `amount` to the balance of `address` (moves coins; the supply is unchanged)."""
    account = get_account(state, address)
    balance = account.balance + amount
    if balance >= MAX_AMOUNT:
        raise SupplyOverflow(f"balance of {address} would exceed 2**96")
    _set_account(state, address, Account(balance, account.nonce))


def debit(state: State, address: str, amount: int) -> None:
    """Subtract `amount` from the balance of `address`; InsufficientBalance if it is short."""
    account = get_account(state, address)
    if account.balance < amount:
        raise InsufficientBalance(
            f"balance {account.balance} of {address} is below the {amount} needed"
        )
    _set_account(state, address, Account(account.balance - amount, account.nonce))


def increment_nonce(state: State, address: str) -> None:
    """Advance the next expected nonce of `address` by one."""
    account = get_account(state, address)
    if account.nonce + 1 >= MAX_U64:
        raise InvalidTransaction(f"nonce of {address} is exhausted")
    _set_account(state, address, Account(account.balance, account.nonce + 1))


def balances_total(state: State) -> int:
    """Sum of all balances (equals `total_supply` in every valid state). O(entries): one
    pass over the records."""
    return sum(int.from_bytes(r[2], "big") for r in _records(state) if r[0] == _ACCOUNT)


# ------------------------------------------------------------------ tasks and work


def mark_task_rewarded(state: State, task_id: str) -> None:
    """Record that the challenge `task_id` was claimed, so it can never be claimed again."""
    _put(state, _TASK, task_id, [])


def is_task_rewarded(state: State, task_id: str) -> bool:
    """True if the challenge `task_id` was already claimed."""
    return _lookup(state, _path(_TASK, task_id)) is not None


def pending_work(state: State, address: str) -> EpochWork:
    """The open epoch's work and deferred fees of payout address `address`."""
    return state.epoch_work.get(address, EpochWork())


def get_worker(state: State, address: str) -> WorkerRecord:
    """The lifetime record of worker address `address`."""
    fields = _get(state, _WORKER, address)
    return WorkerRecord() if fields is None else WorkerRecord(
        int.from_bytes(fields[0], "big"), fields[1])


def record_work(state: State, payout_address: str, worker_address: str, work: int,
                fee: int) -> None:
    """Credit `work` to `payout_address` in the open epoch with its deferred `fee`, and add
    one accepted claim of `work` to the worker's record (SPEC 6 v1.1).

    InvalidComputeResult if a work counter would reach 2**128 (nothing changed then)."""
    entry = pending_work(state, payout_address)
    worker = get_worker(state, worker_address)
    totals = state.totals
    if max(entry.work, worker.work, totals.epoch_work) + work >= MAX_WORK:
        raise InvalidComputeResult("work counters would pass 2**128")
    if entry.fees + fee >= MAX_AMOUNT or worker.claims + 1 >= MAX_U64:
        raise InvalidComputeResult("deferred fees or claim count out of range")
    entry = EpochWork(entry.work + work, entry.fees + fee)
    state.epoch_work[payout_address] = entry
    _put(state, _WORK, payout_address, [_work_bytes(entry.work), encode_amount(entry.fees)])
    _put(state, _WORKER, worker_address, [_work_bytes(worker.work + work), worker.claims + 1])
    _set_totals(state, replace(totals, epoch_work=totals.epoch_work + work))


# ------------------------------------------------------------------ epochs


def add_subsidy(state: State, amount: int) -> None:
    """Add one block's scheduled subsidy to the open epoch's pool (no coin is spendable yet)."""
    totals = state.totals
    if totals.emitted + amount >= MAX_AMOUNT:
        raise SupplyOverflow("the emission schedule would pass 2**96")
    _set_totals(state, replace(totals, pool=totals.pool + amount, emitted=totals.emitted + amount))


def close_epoch(state: State, proposer: str) -> EpochRecord:
    """Pay the open epoch's pool pro rata to its work, then open the next epoch.

    Each payout address gets `floor(pool * W_a / sum(W))` minus its deferred claim fees
    (the fees go to `proposer`; a payout below its fees pays what it has and the rest is
    forgiven); the remainder carries into the next epoch's pool. The closed epoch is kept as
    an `epoch` record (SPEC 6 v1.1)."""
    totals = state.totals
    works = {address: entry.work for address, entry in state.epoch_work.items()}
    shares, remainder = split_pool(totals.pool, works)
    payouts = []
    fees_paid = 0
    for address in sorted(shares):
        gross = shares[address]
        fee = min(state.epoch_work[address].fees, gross)
        credit(state, address, gross - fee)
        fees_paid += fee
        payouts.append(Payout(address, works[address], gross, fee))
        _put(state, _WORK, address, None)
    if fees_paid:
        credit(state, proposer, fees_paid)
    record = EpochRecord(totals.epoch, totals.pool, totals.epoch_work, remainder,
                         tuple(payouts))
    _put(state, _EPOCH, record.epoch, [
        encode_amount(record.pool), _work_bytes(record.work), encode_amount(remainder),
        [[p.address, _work_bytes(p.work), encode_amount(p.amount), encode_amount(p.fees)]
         for p in payouts]])
    state.epoch_work = {}
    _set_totals(state, Totals(
        epoch=totals.epoch + 1, pool=remainder, carried=remainder, epoch_work=0,
        total_supply=totals.total_supply + totals.pool - remainder, emitted=totals.emitted))
    return record


def get_epoch_record(state: State, epoch: int) -> EpochRecord | None:
    """The record of closed epoch `epoch`, or None if it is not closed."""
    fields = _get(state, _EPOCH, epoch)
    return None if fields is None else _epoch_record(epoch, fields)


def _epoch_record(epoch: int, fields: list) -> EpochRecord:
    """Build an EpochRecord from its stored fields (DecodeError when malformed)."""
    pool, work, carried, raw_payouts = fields
    if not isinstance(raw_payouts, list):
        raise DecodeError("epoch payouts must be an array")
    payouts = []
    for raw in raw_payouts:
        address, p_work, amount, fees = expect_array(raw, 4, "payout")
        payouts.append(Payout(_decode_address(address), _decode_work(p_work, "payout work"),
                              decode_amount(amount, "payout"), decode_amount(fees, "fees")))
    return EpochRecord(epoch, decode_amount(pool, "pool"), _decode_work(work, "epoch work"),
                       decode_amount(carried, "carried"), tuple(payouts))


# ------------------------------------------------------------------ encoding


def encode_state(state: State) -> bytes:
    """Canonical bytes: `[2, [record...]]`, the tree's leaf records in path order."""
    return encode_canonical([STATE_FORMAT, [value for _, value in state.tree.items()]])


def _decode_address(raw: Any) -> str:
    try:
        return validate_address(expect_str(raw, "address"))
    except InvalidAddress as exc:
        raise DecodeError(f"state address invalid: {exc}") from None


def _check_record(kind: Any, key: Any, fields: list) -> None:
    """Validate one decoded record's shape and ranges, raising DecodeError."""
    if kind == _ACCOUNT:
        _decode_address(key)
        balance, nonce = decode_amount(fields[0], "balance"), expect_int(fields[1], "nonce")
        if balance == 0 and nonce == 0:
            raise DecodeError("state holds an empty account")
        if not 0 <= nonce < MAX_U64:
            raise DecodeError("account nonce out of range")
    elif kind == _TASK:
        if not matches(HEX_ID16_PATTERN, expect_str(key, "task id")) or fields:
            raise DecodeError("task record is not a 32-hex-digit task id")
    elif kind == _WORK:
        _decode_address(key)
        work, fees = fields
        if _decode_work(work, "work") == 0:
            raise DecodeError("state holds an empty work entry")
        decode_amount(fees, "fees")
    elif kind == _WORKER:
        _decode_address(key)
        work, claims = fields
        _decode_work(work, "worker work")
        if not 0 < expect_int(claims, "claims") < MAX_U64:
            raise DecodeError("worker claims out of range")
    elif kind == _EPOCH:
        if expect_int(key, "epoch") < 0 or len(fields) != 4:
            raise DecodeError("malformed epoch record")
        _epoch_record(key, fields)
    elif kind == _TOTALS:
        if key != "" or len(fields) != 6:
            raise DecodeError("malformed totals record")
    else:
        raise DecodeError(f"unknown state record kind {kind!r}")


_FIELD_COUNTS = {_ACCOUNT: 2, _TASK: 0, _WORK: 2, _WORKER: 2, _EPOCH: 4, _TOTALS: 6}


def decode_state(data: bytes) -> State:
    """Decode `encode_state` bytes strictly, raising DecodeError (also on broken invariants
    that the encoding alone can show: order, duplicates, balances summing to the supply)."""
    fmt, raw_records = expect_array(decode_canonical(data), 2, "state")
    if fmt != STATE_FORMAT:
        raise DecodeError(f"unknown state format {fmt!r}")
    if not isinstance(raw_records, list):
        raise DecodeError("state records must be an array")
    items: dict[bytes, bytes] = {}
    previous = b""
    totals: Totals | None = None
    epoch_work: dict[str, EpochWork] = {}
    balances = 0
    for value in raw_records:
        record = decode_canonical(expect_bytes(value, "state record"))
        if not isinstance(record, list) or len(record) < 2 or not isinstance(record[0], str):
            raise DecodeError("state record must be [kind, key, fields...]")
        kind, key, fields = record[0], record[1], record[2:]
        if len(fields) != _FIELD_COUNTS.get(kind, -1):
            raise DecodeError(f"state record {kind!r} has the wrong number of fields")
        _check_record(kind, key, fields)
        path = _path(kind, key)
        if path <= previous:
            raise DecodeError("state records are not strictly sorted by path")
        previous = path
        items[path] = value
        if kind == _ACCOUNT:
            balances += int.from_bytes(fields[0], "big")
        elif kind == _WORK:
            epoch_work[key] = EpochWork(int.from_bytes(fields[0], "big"),
                                        int.from_bytes(fields[1], "big"))
        elif kind == _TOTALS:
            epoch, pool, carried, work, supply, emitted = fields
            totals = Totals(expect_int(epoch, "epoch"), decode_amount(pool, "pool"),
                            decode_amount(carried, "carried"), _decode_work(work, "work"),
                            decode_amount(supply, "supply"), decode_amount(emitted, "emitted"))
    if totals is None:
        raise DecodeError("state has no totals record")
    if balances != totals.total_supply:
        raise DecodeError("state balances do not add up to the total supply")
    if sum(entry.work for entry in epoch_work.values()) != totals.epoch_work:
        raise DecodeError("state epoch work does not add up to its total")
    if totals.pool > totals.emitted:
        raise DecodeError("state pool exceeds everything ever emitted")
    return State(SparseMerkleTree.from_items(items), totals, epoch_work)


def state_root(state: State) -> str:
    """Hex root of the state tree: the header's commitment to the whole state (cached; the
    pending writes are folded in first)."""
    return state.tree.root.hex()

"""The account state and the small named functions that change it (SPEC 6).

`State` is the one mutable object of the chain. It holds the accounts (balance and nonce by
address), the set of task ids already rewarded, and two supply counters. Only the functions
below change it, so every mutation of consensus state is easy to find and review.

Invariant at every height: `sum(balances) == total_supply == sum(genesis allocations) +
minted`. Transfers and fees only move coins; SUBMIT_RESULT rewards are the only mint.

Blocks are applied to a `copy()` that replaces the current state only when the whole block is
valid (copy-on-apply). Accounts are immutable records, so a copy is two shallow container
copies.

`encode_state` is canonical (accounts sorted by address, empty accounts omitted, rewarded
task ids sorted) and `state_root(state) = sha256(encode_state(state))`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hashcloud.codec import (
    decode_amount,
    decode_canonical,
    encode_amount,
    encode_canonical,
    expect_array,
    expect_int,
    expect_str,
)
from hashcloud.crypto.hashing import sha256
from hashcloud.errors import (
    DecodeError,
    InsufficientBalance,
    InvalidAddress,
    InvalidTransaction,
    SupplyOverflow,
)
from hashcloud.types import HEX_ID16_PATTERN, MAX_AMOUNT, MAX_U64, matches, validate_address

__all__ = [
    "Account",
    "State",
    "EMPTY_ACCOUNT",
    "balances_total",
    "credit",
    "debit",
    "decode_state",
    "encode_state",
    "get_account",
    "increment_nonce",
    "is_task_rewarded",
    "mark_task_rewarded",
    "mint",
    "state_root",
]

STATE_FORMAT = 1
"""Version tag at the start of the encoded state."""

@dataclass(frozen=True, slots=True)
class Account:
    """One account: spendable balance (base units) and the next expected nonce."""

    balance: int = 0
    nonce: int = 0


EMPTY_ACCOUNT = Account()


class State:
    """All consensus state after some block: accounts, rewarded tasks, supply counters."""

    __slots__ = ("accounts", "rewarded_tasks", "total_supply", "minted")

    def __init__(
        self,
        accounts: dict[str, Account] | None = None,
        rewarded_tasks: set[str] | None = None,
        total_supply: int = 0,
        minted: int = 0,
    ) -> None:
        self.accounts: dict[str, Account] = {} if accounts is None else accounts
        self.rewarded_tasks: set[str] = set() if rewarded_tasks is None else rewarded_tasks
        self.total_supply = total_supply
        self.minted = minted

    def copy(self) -> State:
        """An independent copy (accounts are immutable, so containers are copied shallowly)."""
        return State(dict(self.accounts), set(self.rewarded_tasks), self.total_supply,
                     self.minted)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return encode_state(self) == encode_state(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (f"State(accounts={len(self.accounts)}, rewarded={len(self.rewarded_tasks)}, "
                f"total_supply={self.total_supply}, minted={self.minted})")


def get_account(state: State, address: str) -> Account:
    """The account at `address` (an empty account if it was never touched)."""
    return state.accounts.get(address, EMPTY_ACCOUNT)


def _set_account(state: State, address: str, account: Account) -> None:
    """Store `account`, dropping it when empty so the state has one canonical form."""
    if account.balance == 0 and account.nonce == 0:
        state.accounts.pop(address, None)
    else:
        state.accounts[address] = account


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


def mint(state: State, address: str, amount: int) -> None:
    """Create `amount` new coins at `address` (a compute reward): supply and minted grow."""
    if state.total_supply + amount >= MAX_AMOUNT:
        raise SupplyOverflow("mint would push the total supply past 2**96")
    credit(state, address, amount)
    state.total_supply += amount
    state.minted += amount


def increment_nonce(state: State, address: str) -> None:
    """Advance the next expected nonce of `address` by one."""
    account = get_account(state, address)
    if account.nonce + 1 >= MAX_U64:
        raise InvalidTransaction(f"nonce of {address} is exhausted")
    _set_account(state, address, Account(account.balance, account.nonce + 1))


def mark_task_rewarded(state: State, task_id: str) -> None:
    """Record that the challenge `task_id` was paid, so it can never be paid again."""
    state.rewarded_tasks.add(task_id)


def is_task_rewarded(state: State, task_id: str) -> bool:
    """True if the challenge `task_id` was already paid."""
    return task_id in state.rewarded_tasks


def balances_total(state: State) -> int:
    """Sum of all balances (equals `total_supply` in every valid state)."""
    return sum(account.balance for account in state.accounts.values())


def encode_state(state: State) -> bytes:
    """Canonical bytes: `[1, [[address, balance, nonce]...], [task_id...], supply, minted]`.

    Accounts sorted by address (empty ones never stored), task ids sorted, amounts as
    12-byte big-endian.
    """
    accounts = [
        [address, encode_amount(acc.balance), acc.nonce]
        for address, acc in sorted(state.accounts.items())
    ]
    return encode_canonical([
        STATE_FORMAT,
        accounts,
        sorted(state.rewarded_tasks),
        encode_amount(state.total_supply),
        encode_amount(state.minted),
    ])


def decode_state(data: bytes) -> State:
    """Decode `encode_state` bytes strictly, raising DecodeError (also on broken invariants
    that the encoding alone can show: order, duplicates, balances summing to the supply)."""
    fmt, raw_accounts, raw_tasks, raw_supply, raw_minted = expect_array(
        decode_canonical(data), 5, "state"
    )
    if fmt != STATE_FORMAT:
        raise DecodeError(f"unknown state format {fmt!r}")
    if not isinstance(raw_accounts, list) or not isinstance(raw_tasks, list):
        raise DecodeError("state accounts and tasks must be arrays")
    accounts: dict[str, Account] = {}
    previous = ""
    for entry in raw_accounts:
        address, raw_balance, nonce = expect_array(entry, 3, "account")
        expect_str(address, "account address")
        if address <= previous:
            raise DecodeError("state accounts are not strictly sorted")
        previous = address
        try:
            validate_address(address)
        except InvalidAddress as exc:
            raise DecodeError(f"state account address invalid: {exc}") from None
        balance = decode_amount(raw_balance, "balance")
        if not 0 <= expect_int(nonce, "nonce") < MAX_U64:
            raise DecodeError("account nonce out of range")
        if balance == 0 and nonce == 0:
            raise DecodeError("state holds an empty account")
        accounts[address] = Account(balance, nonce)
    previous = ""
    for task in raw_tasks:
        if not matches(HEX_ID16_PATTERN, expect_str(task, "task id")):
            raise DecodeError("rewarded task id is not 32 lower-case hex digits")
        if task <= previous:
            raise DecodeError("rewarded task ids are not strictly sorted")
        previous = task
    state = State(accounts, set(raw_tasks), decode_amount(raw_supply, "total_supply"),
                  decode_amount(raw_minted, "minted"))
    if balances_total(state) != state.total_supply:
        raise DecodeError("state balances do not add up to the total supply")
    if state.minted > state.total_supply:
        raise DecodeError("state minted more than its total supply")
    return state


def state_root(state: State) -> str:
    """Hex `sha256(encode_state(state))`: the header's commitment to the whole state."""
    return sha256(encode_state(state)).hex()

"""The state's write-back overlay (chain/state.py): records written since the last fold live
in a dict and reach the tree only when a root (or a walk of the tree) is needed. Whatever
the interleaving of writes, root calls and copies, the root must be the root of a tree built
from scratch of the same records (SPEC 6 v1.1 state commitment)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.chain.state import (
    Account,
    State,
    credit,
    debit,
    encode_state,
    get_account,
    increment_nonce,
    is_task_rewarded,
    mark_task_rewarded,
    new_state,
    state_root,
)
from hashcloud.codec import encode_amount, encode_canonical
from hashcloud.crypto.hashing import sha256
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.smt import SparseMerkleTree
from hashcloud.errors import InsufficientBalance

PROPS = settings(derandomize=True, deadline=None, max_examples=80)

ADDRESSES = [PrivateKey(0x5EED + i).public_key.address for i in range(6)]
TASKS = [f"{i:032x}" for i in range(4)]
START = {ADDRESSES[0]: 1_000, ADDRESSES[1]: 50}


class Model:
    """The expected records, kept as plain values and hashed from scratch."""

    def __init__(self) -> None:
        self.accounts = {a: (b, 0) for a, b in START.items()}
        self.tasks: set[str] = set()

    def clone(self) -> Model:
        other = Model()
        other.accounts, other.tasks = dict(self.accounts), set(self.tasks)
        return other

    def items(self) -> dict[bytes, bytes]:
        def path(kind: str, key: object) -> bytes:
            return sha256(encode_canonical([kind, key]))

        items = {path("totals", ""): encode_canonical(
            ["totals", "", 0, encode_amount(0), encode_amount(0), bytes(16),
             encode_amount(sum(START.values())), encode_amount(0)])}
        for address, (balance, nonce) in self.accounts.items():
            if balance or nonce:
                items[path("account", address)] = encode_canonical(
                    ["account", address, encode_amount(balance), nonce])
        for task in self.tasks:
            items[path("task", task)] = encode_canonical(["task", task])
        return items

    def root(self) -> str:
        return SparseMerkleTree.from_items(self.items()).root.hex()


ops = st.lists(st.one_of(
    st.tuples(st.just("credit"), st.integers(0, 5), st.integers(0, 400)),
    st.tuples(st.just("debit"), st.integers(0, 5), st.integers(0, 400)),
    st.tuples(st.just("drain"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("nonce"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("task"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("root"), st.just(0), st.just(0)),
    st.tuples(st.just("copy"), st.just(0), st.just(0)),
), max_size=60)


@PROPS
@given(ops)
def test_root_matches_a_tree_built_from_scratch(sequence):
    state, model = new_state(START), Model()
    copies: list[tuple[State, Model]] = []
    for op, i, amount in sequence:
        address = ADDRESSES[i]
        balance, nonce = model.accounts.get(address, (0, 0))
        if op == "credit":
            credit(state, address, amount)
            model.accounts[address] = (balance + amount, nonce)
        elif op == "debit":
            if amount > balance:
                try:
                    debit(state, address, amount)
                except InsufficientBalance:
                    pass
                else:
                    raise AssertionError("overdraft accepted")
            else:
                debit(state, address, amount)
                model.accounts[address] = (balance - amount, nonce)
        elif op == "drain":  # with nonce 0 the entry is deleted
            debit(state, address, balance)
            model.accounts[address] = (0, nonce)
        elif op == "nonce":
            increment_nonce(state, address)
            model.accounts[address] = (balance, nonce + 1)
        elif op == "task":
            mark_task_rewarded(state, TASKS[i])
            model.tasks.add(TASKS[i])
        elif op == "root":
            assert state_root(state) == model.root()
        else:
            copies.append((state.copy(), model.clone()))
        # reads go through the overlay before any fold
        assert get_account(state, address) == Account(*model.accounts.get(address, (0, 0)))
    assert state_root(state) == model.root()
    assert all(is_task_rewarded(state, t) == (t in model.tasks) for t in TASKS)
    # A copy is independent of later writes to the original (and folding either is local).
    for copy, at_copy in copies:
        assert state_root(copy) == at_copy.root()
    # Walking the tree (encoding, the accounts view) folds first and sees every write.
    expected = model.items()
    assert encode_state(state) == encode_canonical([2, [expected[p] for p in sorted(expected)]])
    assert dict(state.accounts) == {a: Account(*v) for a, v in model.accounts.items() if any(v)}


def test_copy_then_write_both_sides():
    state = new_state(START)
    credit(state, ADDRESSES[2], 5)  # pending in the overlay
    copy = state.copy()
    credit(copy, ADDRESSES[3], 7)
    debit(state, ADDRESSES[2], 5)
    assert get_account(copy, ADDRESSES[2]).balance == 5
    assert get_account(state, ADDRESSES[2]) == Account()
    assert get_account(state, ADDRESSES[3]) == Account()
    assert state_root(state) == Model().root()
    assert state_root(copy) != state_root(state)
    assert state == new_state(START) and copy != state

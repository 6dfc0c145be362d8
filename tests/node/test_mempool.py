"""Mempool (SPEC 6): entry validation, nonce order, bounds and eviction, new-head handling.

The pool runs over a real genesis state (`make_local_genesis`) and validates with the real
state transition; transactions are really signed. No disk, no clock.
"""

from __future__ import annotations

import pytest

from hashcloud.chain.genesis import chain_domain, genesis_state, make_local_genesis
from hashcloud.chain.state import get_account
from hashcloud.chain.transition import apply_transaction
from hashcloud.chain.tx import (
    TRANSFER,
    TRANSFER_GAS,
    Transaction,
    make_transfer,
    tx_id,
    tx_signing_bytes,
)
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.signatures import ChainDomain, sign
from hashcloud.errors import DuplicateTransaction, InvalidTransaction, MempoolFull
from hashcloud.node.app import http_status
from hashcloud.node.mempool import Mempool

pytestmark = pytest.mark.timeout(30)

NODE = PrivateKey(0xC0FFEE)
ALICE = PrivateKey(0xA11CE)
BOB = PrivateKey(0xB0B)
CAROL = PrivateKey(0xCA201)
DAVE = PrivateKey(0xDA7E)
POOR = PrivateKey(0x9002)
SPENDER = PrivateKey(0x5BE4D)
SINK = PrivateKey(0x5111C).public_key.address
RICH = 10**15
POOR_BALANCE = 30_000_000  # one min-gas transfer costs 21,000,000 in fees
SPENDER_BALANCE = 50_000_000  # two min-gas transfers fit, not three
GENESIS = make_local_genesis(
    NODE,
    {k.public_key.address: RICH for k in (ALICE, BOB, CAROL, DAVE)}
    | {POOR.public_key.address: POOR_BALANCE, SPENDER.public_key.address: SPENDER_BALANCE},
)
CHAIN = chain_domain(GENESIS)
PROPOSER = NODE.public_key.address


def pay(key: PrivateKey, nonce: int, *, amount: int = 1, gas_price: int = 1000,
        to: str = SINK) -> Transaction:
    return make_transfer(key, to, amount, nonce, gas_price, domain=CHAIN)


def new_pool(**bounds: int) -> Mempool:
    return Mempool(GENESIS, genesis_state(GENESIS), PROPOSER, **bounds)


def ids(txs: list[Transaction]) -> list[str]:
    return [tx_id(t) for t in txs]


# --------------------------------------------------------------------- entry validation


def test_valid_transfer_is_pooled_and_advances_pending_nonce() -> None:
    pool = new_pool()
    tx = pay(ALICE, 0)
    assert pool.add(tx) == tx_id(tx)
    assert tx_id(tx) in pool and len(pool) == 1
    assert pool.pending_nonce(ALICE.public_key.address) == 1
    assert pool.pending_nonce(BOB.public_key.address) == 0


def test_bad_signature_is_refused() -> None:
    pool = new_pool()
    good = pay(ALICE, 0)
    # Bob's signature over Alice's transaction: well-formed, low-S, but not Alice's.
    forged = good.model_copy(update={"signature": sign(BOB, tx_signing_bytes(good, CHAIN)).hex()})
    with pytest.raises(InvalidTransaction, match="signature does not verify"):
        pool.add(forged)
    assert len(pool) == 0


def test_signature_for_another_chain_is_refused() -> None:
    pool = new_pool()
    other_chain = make_transfer(ALICE, SINK, 1, 0,
                                domain=ChainDomain("some-other-chain", CHAIN.genesis))
    with pytest.raises(InvalidTransaction, match=f"does not verify for chain {CHAIN}"):
        pool.add(other_chain)


def test_public_key_of_someone_else_is_refused() -> None:
    pool = new_pool()
    tx = pay(ALICE, 0)
    with pytest.raises(InvalidTransaction, match="public key does not match from_address"):
        pool.add(tx.model_copy(update={"public_key": BOB.public_key.hex()}))


def test_nonce_gap_is_refused() -> None:
    pool = new_pool()
    with pytest.raises(InvalidTransaction, match="nonce 1 but account expects 0"):
        pool.add(pay(ALICE, 1))
    pool.add(pay(ALICE, 0))
    with pytest.raises(InvalidTransaction, match="nonce 5 but account expects 1"):
        pool.add(pay(ALICE, 5))


def test_nonce_replay_is_refused() -> None:
    pool = new_pool()
    pool.add(pay(ALICE, 0))
    # Same nonce, different content (not a duplicate id): a replayed nonce.
    with pytest.raises(InvalidTransaction, match="nonce 0 but account expects 1"):
        pool.add(pay(ALICE, 0, amount=2))
    assert len(pool) == 1


def test_insufficient_balance_is_refused() -> None:
    pool = new_pool()
    with pytest.raises(InvalidTransaction, match="insufficient balance"):
        pool.add(pay(POOR, 0, amount=POOR_BALANCE))
    assert len(pool) == 0


def test_balance_counts_pooled_transactions() -> None:
    """The pool validates against the pending state: two transfers that each fit the
    balance alone but not together are not both accepted."""
    pool = new_pool()
    fee = TRANSFER_GAS * 1000
    pool.add(pay(POOR, 0, amount=POOR_BALANCE - fee - 1))
    with pytest.raises(InvalidTransaction, match="insufficient balance: 1 <"):
        pool.add(pay(POOR, 1, amount=1))


def test_gas_price_below_minimum_is_refused() -> None:
    """The record type already forbids gas_price < 1000; the pool re-checks anyway (a
    transaction built without validation must not slip in)."""
    pool = new_pool()
    draft = Transaction.model_construct(
        tx_type=TRANSFER, from_address=ALICE.public_key.address, to_address=SINK, amount=1,
        fee=TRANSFER_GAS * 999, nonce=0, gas_price=999, gas_limit=TRANSFER_GAS, payload=None,
        public_key=ALICE.public_key.hex(), signature="00" * 64)
    tx = draft.model_copy(update={"signature": sign(ALICE, tx_signing_bytes(draft, CHAIN)).hex()})
    with pytest.raises(InvalidTransaction, match="gas_price 999 is below the minimum 1000"):
        pool.add(tx)
    assert len(pool) == 0


def test_wrong_fee_is_refused() -> None:
    pool = new_pool()
    tx = make_transfer(ALICE, SINK, 1, 0, domain=CHAIN)
    draft = tx.model_copy(update={"fee": tx.fee - 1})
    signature = sign(ALICE, tx_signing_bytes(draft, CHAIN)).hex()
    signed = draft.model_copy(update={"signature": signature})
    with pytest.raises(InvalidTransaction, match="is not gas_limit \\* gas_price"):
        pool.add(signed)


def test_duplicate_is_refused_as_duplicate() -> None:
    pool = new_pool()
    tx = pay(ALICE, 0)
    pool.add(tx)
    with pytest.raises(DuplicateTransaction, match="already pending") as info:
        pool.add(tx)
    assert http_status(info.value) == 409
    assert len(pool) == 1


# ----------------------------------------------------------------------- nonce ordering


def test_several_transactions_of_one_sender_chain_their_nonces() -> None:
    pool = new_pool()
    txs = [pay(ALICE, i) for i in range(5)]
    for tx in txs:
        pool.add(tx)
    assert ids(pool.candidates()) == ids(txs)
    assert pool.pending_nonce(ALICE.public_key.address) == 5
    state = genesis_state(GENESIS)
    for tx in pool.candidates():  # the candidates apply in order to the head state
        apply_transaction(state, tx, GENESIS, PROPOSER)
    assert get_account(state, ALICE.public_key.address).nonce == 5


def test_candidates_keep_nonce_order_and_prefer_higher_gas() -> None:
    pool = new_pool()
    a0 = pay(ALICE, 0, gas_price=1000)
    a1 = pay(ALICE, 1, gas_price=9000)  # pays most, but must wait for a0
    b0 = pay(BOB, 0, gas_price=3000)
    b1 = pay(BOB, 1, gas_price=1500)
    c0 = pay(CAROL, 0, gas_price=2000)
    for tx in (a0, a1, b0, b1, c0):
        pool.add(tx)
    # Heads: a0 1000, b0 3000, c0 2000 -> b0; then b1 1500, c0 2000 -> c0; then a0 1000 vs
    # b1 1500 -> b1; then a0, a1.
    assert ids(pool.candidates()) == ids([b0, c0, b1, a0, a1])
    assert ids(pool.candidates(limit=2)) == ids([b0, c0])


# -------------------------------------------------------------------------------- bounds


def test_per_sender_limit_raises_mempool_full() -> None:
    pool = new_pool(per_sender=3)
    for i in range(3):
        pool.add(pay(ALICE, i))
    with pytest.raises(MempoolFull, match="already has 3 pending") as info:
        pool.add(pay(ALICE, 3))
    assert http_status(info.value) == 429
    pool.add(pay(BOB, 0))  # other senders are unaffected
    assert len(pool) == 4


def test_global_limit_evicts_cheapest_for_higher_gas_price() -> None:
    pool = new_pool(max_size=3)
    a0, b0, c0 = pay(ALICE, 0, gas_price=3000), pay(BOB, 0, gas_price=1000), pay(CAROL, 0,
                                                                                 gas_price=2000)
    for tx in (a0, b0, c0):
        pool.add(tx)
    d0 = pay(DAVE, 0, gas_price=1500)
    pool.add(d0)
    assert len(pool) == 3
    assert tx_id(b0) not in pool and tx_id(d0) in pool
    assert pool.dropped_reason(tx_id(b0)) == "evicted by a higher-paying transaction"
    assert ids(pool.candidates()) == ids([a0, c0, d0])


def test_global_limit_refuses_when_not_paying_more() -> None:
    pool = new_pool(max_size=2)
    pool.add(pay(ALICE, 0, gas_price=2000))
    pool.add(pay(BOB, 0, gas_price=2000))
    with pytest.raises(MempoolFull, match="mempool is full"):
        pool.add(pay(CAROL, 0, gas_price=2000))  # equal price: no eviction
    with pytest.raises(MempoolFull, match="mempool is full"):
        pool.add(pay(CAROL, 0, gas_price=1000))
    assert len(pool) == 2


def test_eviction_takes_a_sender_tail_so_nonces_stay_gapless() -> None:
    pool = new_pool(max_size=3)
    a = [pay(ALICE, i, gas_price=1000) for i in range(2)]
    b0 = pay(BOB, 0, gas_price=5000)
    for tx in (*a, b0):
        pool.add(tx)
    pool.add(pay(CAROL, 0, gas_price=2000))
    assert tx_id(a[0]) in pool and tx_id(a[1]) not in pool  # the tail, never the head
    assert pool.pending_nonce(ALICE.public_key.address) == 1


def test_invalid_transaction_does_not_evict_anything() -> None:
    """A full pool must not lose a valid transaction to one that is then refused: an
    attacker could otherwise flush the pool with high-priced invalid transactions."""
    pool = new_pool(max_size=2)
    a0, b0 = pay(ALICE, 0), pay(BOB, 0)
    pool.add(a0)
    pool.add(b0)
    with pytest.raises(InvalidTransaction, match="nonce 7 but account expects 0"):
        pool.add(pay(CAROL, 7, gas_price=50_000))  # bad nonce, high price
    assert len(pool) == 2
    assert tx_id(a0) in pool and tx_id(b0) in pool


# ------------------------------------------------------------------------------ new head


def test_on_new_head_drops_included_and_keeps_the_rest() -> None:
    pool = new_pool()
    a0, a1, b0 = pay(ALICE, 0), pay(ALICE, 1), pay(BOB, 0)
    for tx in (a0, a1, b0):
        pool.add(tx)
    head = genesis_state(GENESIS)
    apply_transaction(head, a0, GENESIS, PROPOSER)  # a block with a0 only
    pool.on_new_head(head, [tx_id(a0)])
    assert tx_id(a0) not in pool
    assert ids(pool.candidates()) == ids([a1, b0]) or ids(pool.candidates()) == ids([b0, a1])
    assert len(pool) == 2
    assert pool.dropped_reason(tx_id(a0)) is None  # included, not dropped
    assert pool.pending_nonce(ALICE.public_key.address) == 2


def test_on_new_head_drops_transactions_the_new_state_invalidates() -> None:
    pool = new_pool()
    pooled = pay(POOR, 0, amount=1)
    other = pay(ALICE, 0)
    pool.add(pooled)
    pool.add(other)
    # Another node's block spends POOR's nonce 0 differently (a conflicting transaction).
    conflicting = pay(POOR, 0, amount=5)
    head = genesis_state(GENESIS)
    apply_transaction(head, conflicting, GENESIS, PROPOSER)
    pool.on_new_head(head, [tx_id(conflicting)])
    assert tx_id(pooled) not in pool
    assert pool.dropped_reason(tx_id(pooled)) == "nonce 0 but account expects 1"
    assert tx_id(other) in pool and len(pool) == 1
    assert pool.pending_nonce(POOR.public_key.address) == 1


def test_on_new_head_drops_a_transfer_the_sender_can_no_longer_fund() -> None:
    fee = TRANSFER_GAS * 1000
    pool = new_pool()
    p0, p1 = pay(SPENDER, 0, amount=1), pay(SPENDER, 1, amount=1)
    pool.add(p0)
    pool.add(p1)  # 2 fees + 2 fit in SPENDER_BALANCE
    # The block holds a different nonce-0 transfer that leaves too little for p1.
    big0 = pay(SPENDER, 0, amount=SPENDER_BALANCE - 2 * fee)
    head = genesis_state(GENESIS)
    apply_transaction(head, big0, GENESIS, PROPOSER)
    pool.on_new_head(head, [tx_id(big0)])
    assert len(pool) == 0
    assert pool.dropped_reason(tx_id(p0)) == "nonce 0 but account expects 1"
    reason = pool.dropped_reason(tx_id(p1))
    assert reason is not None and reason.startswith("insufficient balance")


def test_a_senders_next_transaction_does_not_evict_its_own_tail() -> None:
    """Evicting the sender's own tail would open a nonce gap under the new transaction, so
    it is refused after all and the pool has silently lost the tail."""
    pool = new_pool(max_size=3)
    a0, a1 = pay(ALICE, 0, gas_price=1000), pay(ALICE, 1, gas_price=1000)
    b0 = pay(BOB, 0, gas_price=4000)
    for tx in (a0, a1, b0):
        pool.add(tx)
    a2 = pay(ALICE, 2, gas_price=8000)
    try:
        pool.add(a2)
    except InvalidTransaction as exc:  # refusing is fine, if nothing was evicted for it
        assert ids(pool.candidates()) == ids([b0, a0, a1]), (
            f"a2 was refused ({exc}) but the pool lost {3 - len(pool)} valid entry")
    else:
        assert tx_id(a1) in pool, "a2 was pooled above a nonce gap"


def test_eviction_does_not_drop_the_transaction_that_funds_the_newcomer() -> None:
    """The victim may be what makes the new transaction valid (it funds its sender): then
    evicting it and refusing the newcomer loses a valid transaction for nothing."""
    newbie = PrivateKey(0x9E3B1E)
    pool = new_pool(max_size=2)
    funding = pay(ALICE, 0, amount=100_000_000, to=newbie.public_key.address, gas_price=1000)
    b0 = pay(BOB, 0, gas_price=5000)
    pool.add(funding)
    pool.add(b0)
    spend = pay(newbie, 0, amount=10_000_000, gas_price=2000)  # valid on the pending state
    try:
        pool.add(spend)
    except InvalidTransaction as exc:
        assert tx_id(funding) in pool and len(pool) == 2, (
            f"the newcomer was refused ({exc}) after its funding transaction was evicted")
    else:
        assert tx_id(funding) in pool, "the newcomer was pooled without its funding"


def test_withdrawing_a_transaction_drops_its_dependents_with_a_warning(caplog) -> None:
    """A transaction whose journal write failed is withdrawn; later nonces of its sender that
    were already acknowledged can no longer be included: they are dropped, each named at
    WARNING (review finding: it was silent), and the rest of the pool is untouched."""
    import logging

    pool = new_pool()
    alice = [pay(ALICE, i) for i in range(3)]
    bob = pay(BOB, 0)
    for tx in [*alice, bob]:
        pool.add(tx)
    with caplog.at_level(logging.WARNING, logger="hashcloud.node.mempool"):
        assert pool.withdraw(tx_id(alice[1]), "journal write failed")
    assert ids(pool.candidates()) == ids([alice[0], bob])
    assert pool.pending_nonce(ALICE.public_key.address) == 1
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert tx_id(alice[2]) in warned and tx_id(alice[1]) in warned
    assert not pool.withdraw(tx_id(alice[1]), "again")  # no longer pending

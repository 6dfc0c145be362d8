"""The state transition (SPEC 6): one test per validation rule, application, invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.chain.genesis import chain_domain, genesis_block, genesis_state
from hashcloud.chain.state import (
    EpochWork,
    State,
    WorkerRecord,
    add_subsidy,
    balances_total,
    close_epoch,
    credit,
    debit,
    decode_state,
    encode_state,
    get_account,
    get_worker,
    increment_nonce,
    is_task_rewarded,
    mark_task_rewarded,
    new_state,
    pending_work,
    record_work,
    state_root,
)
from hashcloud.chain.transition import apply_transaction, build_block, validate_transaction
from hashcloud.chain.tx import (
    SUBMIT_RESULT,
    TRANSFER,
    ComputeResult,
    Transaction,
    compute_result_signing_bytes,
    make_submit_result,
    sign_compute_result,
    sign_transaction,
    tx_signing_bytes,
)
from hashcloud.codec import (
    decode_canonical,
    encode_amount,
    encode_canonical,
)
from hashcloud.crypto.keys import CURVE_ORDER, PrivateKey
from hashcloud.crypto.signatures import ChainDomain, sign
from hashcloud.errors import (
    DecodeError,
    FeeMismatch,
    GasMismatch,
    InsufficientBalance,
    InvalidComputeResult,
    InvalidTransaction,
    InvalidTxSignature,
    NonceMismatch,
    TaskAlreadyRewarded,
)
from hashcloud.poc.receipt import encode_receipt, sign_receipt
from hashcloud.types import MAX_AMOUNT
from tests.chain.test_tx import (
    ALICE,
    AUTHORITY,
    BOB,
    CHAIN,
    START_BALANCE,
    VALIDATOR,
    WORKER,
    make_genesis,
    make_receipt,
    submit,
    transfer,
)

GENESIS = make_genesis()
PROPOSER = AUTHORITY.public_key.address


@pytest.fixture
def state():
    return genesis_state(GENESIS)


def refused(state, tx, error=InvalidTransaction, match=None):
    """Assert `tx` is refused with `error` (message matching) and the state is untouched."""
    before = encode_state(state)
    with pytest.raises(error, match=match):
        apply_transaction(state, tx, GENESIS, PROPOSER)
    assert encode_state(state) == before


# ---------------------------------------------------------------------- signatures, keys


def test_valid_transfer_applies(state):
    tx = transfer(amount=5000)
    validate_transaction(state, tx, GENESIS)
    apply_transaction(state, tx, GENESIS, PROPOSER)
    assert get_account(state, ALICE.public_key.address).balance == START_BALANCE - 5000 - tx.fee
    assert get_account(state, ALICE.public_key.address).nonce == 1
    assert get_account(state, BOB.public_key.address).balance == START_BALANCE + 5000
    assert get_account(state, PROPOSER).balance == tx.fee == 21_000 * 1000
    assert balances_total(state) == state.total_supply


def test_bad_signature(state):
    tx = transfer().model_copy(update={"signature": sign(ALICE, b"something else").hex()})
    refused(state, tx, InvalidTxSignature, "transaction signature does not verify")


def test_high_s_signature(state):
    tx = transfer()
    raw = bytes.fromhex(tx.signature)
    s = int.from_bytes(raw[32:], "big")
    high = raw[:32] + (CURVE_ORDER - s).to_bytes(32, "big")
    refused(state, tx.model_copy(update={"signature": high.hex()}), InvalidTxSignature,
            "not low-S")


def test_public_key_not_matching_from_address(state):
    tx = transfer()
    forged = tx.model_copy(update={"public_key": BOB.public_key.hex()})
    forged = forged.model_copy(
        update={"signature": sign(BOB, tx_signing_bytes(forged, CHAIN)).hex()}
    )
    refused(state, forged, InvalidTxSignature, "public key does not match from_address")


def test_invalid_public_key_point(state):
    tx = transfer().model_copy(update={"public_key": "02" + "00" * 32})
    refused(state, tx, InvalidTxSignature, "public key is invalid")


def test_signature_for_another_chain(state):
    tx = transfer(chain_id="other-chain")
    refused(state, tx, InvalidTxSignature, "signature does not verify for chain test-chain")


def test_receipt_signature_replayed_as_tx_signature(state):
    receipt = make_receipt()
    genesis = make_genesis(allocations={VALIDATOR.public_key.address: START_BALANCE})
    tx = transfer(key=VALIDATOR).model_copy(update={"signature": receipt.signature.hex()})
    with pytest.raises(InvalidTxSignature, match="does not verify"):
        validate_transaction(genesis_state(genesis), tx, genesis)


TRANSFER_ALTERATIONS = {
    "tx_type": SUBMIT_RESULT,
    "from_address": BOB.public_key.address,
    "to_address": WORKER.public_key.address,
    "amount": 1001,
    "fee": 21_000 * 1000 + 1,
    "nonce": 1,
    "gas_price": 1001,
    "gas_limit": 21_001,
    "payload": None,  # replaced below for SUBMIT_RESULT
    "public_key": BOB.public_key.hex(),
    "signature": "11" * 64,
}


@pytest.mark.parametrize("field", [f for f in Transaction.model_fields if f != "payload"])
def test_transfer_field_altered_after_signing_refused(state, field):
    tx = transfer()
    refused(state, tx.model_copy(update={field: TRANSFER_ALTERATIONS[field]}))


@pytest.mark.parametrize("field", list(ComputeResult.model_fields))
def test_compute_result_field_altered_after_signing_refused(state, field):
    tx = submit()
    cr = tx.payload
    other = {
        "task_id": "2f" * 16, "worker_address": BOB.public_key.address,
        "result_hash": "ce" * 32, "proof": cr.proof[:-2] + "00", "nonce": cr.nonce + 1,
        "signature": "11" * 64,
    }[field]
    altered = tx.model_copy(update={"payload": cr.model_copy(update={field: other})})
    refused(state, altered)


def test_valid_signed_transfer_of_other_chain_id_is_not_valid_here(state):
    # Same fields, two chains: two different signatures, each valid only on its own chain.
    here, there = transfer(), transfer(chain_id="other-chain")
    assert here.signature != there.signature
    validate_transaction(state, here, GENESIS)


# ---------------------------------------------------------------------- nonce, gas, fee


def test_nonce_must_be_next(state):
    refused(state, transfer(nonce=5), NonceMismatch, "nonce 5 but account expects 0")


def test_replayed_transaction_refused(state):
    tx = transfer()
    apply_transaction(state, tx, GENESIS, PROPOSER)
    refused(state, tx, NonceMismatch, "nonce 0 but account expects 1")


def test_gas_price_below_minimum(state):
    tx = Transaction.model_construct(**{**transfer().model_dump(), "gas_price": 999,
                                        "fee": 999 * 21_000, "payload": None})
    refused(state, tx, GasMismatch, "gas_price 999 is below the minimum 1000")


def test_gas_limit_must_match_type(state):
    tx = sign_transaction(ALICE, CHAIN, tx_type=TRANSFER, to_address=BOB.public_key.address,
                          amount=1, nonce=0, gas_price=1000, gas_limit=30_000)
    refused(state, tx, GasMismatch, "gas_limit 30000 but TRANSFER needs 21000")


def test_fee_must_equal_gas_limit_times_price(state):
    tx = sign_transaction(ALICE, CHAIN, tx_type=TRANSFER, to_address=BOB.public_key.address,
                          amount=1, nonce=0, gas_price=1000, fee=20_000_000)
    refused(state, tx, FeeMismatch, "fee 20000000 is not gas_limit \\* gas_price = 21000000")


def test_insufficient_balance_for_amount_plus_fee(state):
    tx = transfer(amount=START_BALANCE - 21_000 * 1000 + 1)
    refused(state, tx, InvalidTransaction, "insufficient balance")
    exact = transfer(amount=START_BALANCE - 21_000 * 1000)
    apply_transaction(state, exact, GENESIS, PROPOSER)
    assert get_account(state, ALICE.public_key.address).balance == 0


def test_amount_out_of_range_defended(state):
    tx = Transaction.model_construct(**{**transfer().model_dump(), "amount": MAX_AMOUNT,
                                        "payload": None})
    refused(state, tx, InvalidTransaction, "amount")


# ---------------------------------------------------------------------- SUBMIT_RESULT


def test_valid_submit_result_records_work_and_defers_fee(state):
    # SPEC 6 v1.1: a claim mints nothing; it records W = loops * n^3 for the payout address
    # (default: the worker) in the open epoch, with its fee deferred to that payout.
    tx = submit(loops=1000, n=64)
    work = 1000 * 64**3
    assert validate_transaction(state, tx, GENESIS) == work
    supply = state.total_supply
    apply_transaction(state, tx, GENESIS, PROPOSER)
    worker = get_account(state, WORKER.public_key.address)
    assert worker.balance == 0 and worker.nonce == 1
    assert get_account(state, PROPOSER).balance == 0
    assert pending_work(state, WORKER.public_key.address) == EpochWork(work, 80_000 * 1000)
    assert get_worker(state, WORKER.public_key.address) == WorkerRecord(work, 1)
    assert state.totals.epoch_work == work
    assert state.total_supply == supply == balances_total(state)
    assert is_task_rewarded(state, "1f" * 16)


def test_claim_credits_the_receipts_payout_address(state):
    payout = BOB.public_key.address
    receipt = sign_receipt(
        domain=CHAIN, task_id="3f" * 16, worker_address=WORKER.public_key.address,
        payout_address=payout, seed="ab" * 32, n=64, loops=7, merkle_root=bytes(32),
        compute_time_ms=10, samples=3, audited=1, issued_height=1, accepted_at=1, key=VALIDATOR)
    tx = make_submit_result(WORKER, receipt, 0, domain=CHAIN)
    apply_transaction(state, tx, GENESIS, PROPOSER)
    assert pending_work(state, payout).work == 7 * 64**3
    assert pending_work(state, WORKER.public_key.address) == EpochWork()
    assert get_worker(state, WORKER.public_key.address) == WorkerRecord(7 * 64**3, 1)
    assert get_worker(state, payout) == WorkerRecord()


def _submit_with_payload(payload: ComputeResult, key: PrivateKey = WORKER) -> Transaction:
    return sign_transaction(key, CHAIN, tx_type=SUBMIT_RESULT, to_address=None, amount=0,
                            nonce=0, gas_price=1000, payload=payload)


def _payload(receipt=None, key: PrivateKey = WORKER, **changes) -> ComputeResult:
    """A ComputeResult for `receipt` with `changes`, correctly signed by `key`."""
    cr = sign_compute_result(key, receipt or make_receipt(), CHAIN).model_copy(update=changes)
    return cr.model_copy(
        update={"signature": sign(key, compute_result_signing_bytes(cr, CHAIN)).hex()}
    )


def test_worker_address_must_be_sender(state):
    refused(state, _submit_with_payload(_payload(), key=ALICE), InvalidComputeResult,
            "payload worker_address is not the sender")


def test_compute_result_signature_must_verify(state):
    cr = _payload().model_copy(update={"signature": sign(WORKER, b"other").hex()})
    refused(state, _submit_with_payload(cr), InvalidTxSignature,
            "compute result signature does not verify for chain test-chain")


def test_compute_result_signed_for_other_chain(state):
    cr = sign_compute_result(WORKER, make_receipt(), ChainDomain("other-chain", CHAIN.genesis))
    refused(state, _submit_with_payload(cr), InvalidTxSignature,
            "compute result signature does not verify for chain test-chain")


def test_receipt_must_decode(state):
    refused(state, _submit_with_payload(_payload(proof="00")), InvalidComputeResult,
            "receipt does not decode")


def test_receipt_signed_by_non_validator(state):
    receipt = make_receipt(key=BOB)
    refused(state, _submit_with_payload(_payload(receipt)), InvalidComputeResult,
            "is not a PoC validator of this chain")


def test_receipt_signature_must_verify(state):
    receipt = make_receipt()
    forged = receipt.model_copy(update={"loops": 2000})
    cr = _payload(forged, proof=encode_receipt(forged).hex(), nonce=2000)
    refused(state, _submit_with_payload(cr), InvalidComputeResult,
            "receipt signature is invalid")


def test_receipt_for_other_chain(state):
    receipt = make_receipt(chain_id="other-chain")
    refused(state, _submit_with_payload(_payload(receipt)), InvalidComputeResult,
            "receipt is for chain other-chain, not test-chain")


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"task_id": "2f" * 16}, "task_id"),
        ({"result_hash": "ce" * 32}, "merkle_root"),
        ({"nonce": 999}, "loops"),
    ],
)
def test_receipt_must_match_result(state, changes, needle):
    refused(state, _submit_with_payload(_payload(**changes)), InvalidComputeResult,
            f"receipt does not match the round's {needle}")


def test_receipt_must_match_worker(state):
    receipt = make_receipt(worker=BOB)  # BOB's receipt claimed by WORKER
    refused(state, _submit_with_payload(_payload(receipt)), InvalidComputeResult,
            "receipt does not match the round's worker_address")


def test_task_rewarded_only_once(state):
    apply_transaction(state, submit(), GENESIS, PROPOSER)
    again = submit(nonce=1)  # a fresh tx for the same task id
    refused(state, again, TaskAlreadyRewarded, f"task {'1f' * 16} was already rewarded")


def test_claim_worth_less_than_its_fee_is_valid(state):
    # v1 refused it (reward below fee); v1.1 defers the fee to the epoch payout instead.
    apply_transaction(state, submit(loops=10, n=64), GENESIS, PROPOSER)
    assert pending_work(state, WORKER.public_key.address).work == 10 * 64**3


def test_zero_balance_worker_can_claim(state):
    assert get_account(state, WORKER.public_key.address).balance == 0
    apply_transaction(state, submit(), GENESIS, PROPOSER)


# ---------------------------------------------------------------------- invariants


ops = st.lists(
    st.tuples(st.sampled_from(["transfer", "submit"]), st.integers(0, 2),
              st.integers(0, 2), st.integers(0, START_BALANCE * 2)),
    min_size=1, max_size=6,
)


@settings(max_examples=8)
@given(ops)
def test_supply_invariant_over_random_blocks(sequence):
    keys = [ALICE, BOB, WORKER]
    state = genesis_state(GENESIS)
    parent = genesis_block(GENESIS).header
    initial = state.total_supply
    nonces = {k.public_key.address: 0 for k in keys}
    txs = []
    for i, (kind, sender, receiver, amount) in enumerate(sequence):
        key = keys[sender]
        nonce = nonces[key.public_key.address]
        if kind == "transfer":
            tx = transfer(key, keys[receiver], amount, nonce)
        else:
            tx = submit(key, nonce, task_id=f"{i:032x}", loops=1000 + amount % 5000)
        txs.append(tx)
        nonces[key.public_key.address] += 1
    # Two blocks: the candidates split in half (some may be refused, e.g. overdrafts).
    for chunk in (txs[: len(txs) // 2], txs[len(txs) // 2 :]):
        built = build_block(state, parent, chunk, GENESIS, AUTHORITY,
                            parent.timestamp + 2000)
        state, parent = built.state, built.block.header
        totals = state.totals
        assert balances_total(state) == state.total_supply
        assert state.total_supply == initial + totals.emitted - totals.pool
        assert decode_state(encode_state(state)) == state
        assert len(built.block.transactions) + len(built.rejected) == len(chunk)


# ---------------------------------------------------------------------- state encoding

ADDRS = [PrivateKey(i).public_key.address for i in range(1, 6)]


@given(
    st.dictionaries(st.sampled_from(ADDRS),
                    st.tuples(st.integers(1, 2**90), st.integers(0, 2**64 - 2)), max_size=5),
    st.sets(st.integers(0, 2**128 - 1).map(lambda i: f"{i:032x}"), max_size=4),
    st.lists(st.tuples(st.sampled_from(ADDRS), st.integers(1, 2**100), st.integers(0, 10**12)),
             max_size=4),
    st.integers(0, 2**80), st.booleans(),
)
def test_state_encoding_round_trip(accounts, tasks, claims, subsidy, close):
    state = new_state({address: balance for address, (balance, _) in accounts.items()})
    for address, (_, nonce) in accounts.items():
        for _ in range(min(nonce, 3)):
            increment_nonce(state, address)
    for task in tasks:
        mark_task_rewarded(state, task)
    add_subsidy(state, subsidy)
    for address, work, fee in claims:
        record_work(state, address, ADDRS[0], work, fee)
    if close:
        close_epoch(state, ADDRS[1])
    data = encode_state(state)
    decoded = decode_state(data)
    assert encode_state(decoded) == data and state_root(decoded) == state_root(state)
    assert decoded.epoch_work == state.epoch_work and decoded.totals == state.totals
    with pytest.raises(DecodeError):
        decode_state(data + b"\x00")


def _state_fields():
    state = genesis_state(GENESIS)
    mark_task_rewarded(state, "ab" * 16)
    record_work(state, ADDRS[0], ADDRS[1], 5, 0)
    return decode_canonical(encode_state(state))


def _records(fields):
    return [decode_canonical(value) for value in fields[1]]


def _with_record(fields, kind, change):
    """`fields` with the first record of `kind` replaced by `change(record)`, re-encoded."""
    for i, record in enumerate(_records(fields)):
        if record[0] == kind:
            fields[1][i] = encode_canonical(change(record))
            return
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda f: f[1].reverse(), "sorted"),
        (lambda f: f[1].append(f[1][-1]), "sorted"),
        (lambda f: _with_record(f, "account", lambda r: [*r[:2], encode_amount(0), r[3]]),
         "add up|empty"),
        (lambda f: _with_record(f, "task", lambda r: [r[0], "AB" * 16]), "task id"),
        (lambda f: _with_record(f, "totals", lambda r: [*r[:6], encode_amount(5), r[7]]),
         "add up"),
        (lambda f: _with_record(f, "work", lambda r: [*r[:2], (6).to_bytes(16, "big"), r[3]]),
         "epoch work"),
        (lambda f: _with_record(f, "worker", lambda r: [*r[:3], 0]), "claims"),
        (lambda f: _with_record(f, "totals", lambda r: r[:3]), "number of fields"),
        (lambda f: _with_record(f, "task", lambda r: ["nope", r[1]]), "number of fields"),
        (lambda f: f[1].pop(next(i for i, r in enumerate(_records(f)) if r[0] == "totals")),
         "totals"),
        (lambda f: f.__setitem__(0, 1), "format"),
    ],
)
def test_state_decoder_rejects_inconsistent_forms(mutate, needle):
    fields = _state_fields()
    decode_state(encode_canonical(fields))  # the unmutated form decodes
    mutate(fields)
    with pytest.raises(DecodeError, match=needle):
        decode_state(encode_canonical(fields))


def test_empty_accounts_are_not_stored_and_copy_is_independent():
    state = State()
    credit(state, ADDRS[0], 0)
    assert dict(state.accounts) == {}
    credit(state, ADDRS[0], 5)
    copy = state.copy()
    debit(copy, ADDRS[0], 5)
    assert get_account(state, ADDRS[0]).balance == 5 and dict(copy.accounts) == {}
    with pytest.raises(InsufficientBalance):
        debit(state, ADDRS[0], 6)


def test_a_transfer_that_would_overflow_the_recipient_leaves_the_state_untouched():
    """Review finding: the sender was debited before the recipient's credit raised
    SupplyOverflow, so a refused transfer half-applied (and a block built on that state never
    re-validated: production stalled). The credits are now checked before any debit."""
    from hashcloud.chain.state import state_root
    from hashcloud.errors import SupplyOverflow
    from hashcloud.types import MAX_AMOUNT
    from tests.chain.test_tx import ALICE, BOB, transfer

    genesis = make_genesis()
    domain = chain_domain(genesis)
    state = genesis_state(genesis)
    # Epoch payouts (emission on top of the allocations) can bring one balance near 2**96.
    credit(state, BOB.public_key.address,
           MAX_AMOUNT - 10**6 - get_account(state, BOB.public_key.address).balance)
    before = state_root(state)
    tx = transfer(ALICE, BOB, amount=10**7, domain=domain)
    with pytest.raises(SupplyOverflow):
        apply_transaction(state, tx, genesis, AUTHORITY.public_key.address)
    assert state_root(state) == before
    assert get_account(state, ALICE.public_key.address).balance == 10**12

"""Transactions and ComputeResult (SPEC 6): records, signing bytes, encodings, ids.

Also holds the small fixtures the other chain tests import (keys, genesis, receipts).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hashcloud.chain.block import block_hash
from hashcloud.chain.genesis import Genesis, chain_domain, genesis_block
from hashcloud.chain.tx import (
    ComputeResult,
    Transaction,
    compute_result_hash,
    compute_result_signing_bytes,
    decode_tx,
    encode_tx,
    make_submit_result,
    make_transfer,
    tx_from_json,
    tx_id,
    tx_signing_bytes,
    tx_to_json,
)
from hashcloud.codec import decode_canonical, encode_canonical
from hashcloud.crypto.hashing import sha256
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.signatures import ChainDomain
from hashcloud.errors import DecodeError
from hashcloud.poc.receipt import Receipt, sign_receipt
from hashcloud.types import MAX_AMOUNT

CHAIN_ID = "test-chain"
AUTHORITY = PrivateKey(0xA0)
VALIDATOR = PrivateKey(0xA11CE)
ALICE = PrivateKey(0xA11)
BOB = PrivateKey(0xB0B)
WORKER = PrivateKey(0x3D)
START_BALANCE = 10**12


def make_genesis(**overrides) -> Genesis:
    """A chain where ALICE and BOB hold START_BALANCE each; WORKER starts with nothing."""
    fields = dict(
        chain_id=CHAIN_ID,
        timestamp=1_000_000,
        allocations={ALICE.public_key.address: START_BALANCE,
                     BOB.public_key.address: START_BALANCE},
        authorities=(AUTHORITY.public_key.hex(),),
        validators=(VALIDATOR.public_key.hex(),),
    )
    fields.update(overrides)
    return Genesis(**fields)


CHAIN = chain_domain(make_genesis())
"""The signing domain of `make_genesis()` (SPEC 5 v1.1: chain id + genesis block hash)."""


def _domain(chain_id: str | None, domain: ChainDomain) -> ChainDomain:
    """`domain`, or the same genesis under another chain id (tests of foreign chains)."""
    return domain if chain_id is None else ChainDomain(chain_id, domain.genesis)


def make_receipt(worker: PrivateKey = WORKER, task_id: str = "1f" * 16, loops: int = 1000,
                 n: int = 64, chain_id: str | None = None, key: PrivateKey = VALIDATOR,
                 merkle_root: str = "cd" * 32, domain: ChainDomain = CHAIN) -> Receipt:
    """A validator receipt for `loops` loops of size `n` by `worker`."""
    return sign_receipt(
        domain=_domain(chain_id, domain), task_id=task_id, worker_address=worker.public_key.address,
        seed="ab" * 32, n=n, loops=loops, merkle_root=merkle_root, compute_time_ms=4000,
        samples=10, audited=3, issued_height=1, accepted_at=1_700_000_000_000, key=key,
    )


def transfer(key: PrivateKey = ALICE, to: PrivateKey = BOB, amount: int = 1000, nonce: int = 0,
             gas_price: int = 1000, chain_id: str | None = None,
             domain: ChainDomain = CHAIN) -> Transaction:
    """A signed TRANSFER between two test keys (on `domain`, or `chain_id` with its genesis)."""
    return make_transfer(key, to.public_key.address, amount, nonce, gas_price,
                         domain=_domain(chain_id, domain))


def submit(worker: PrivateKey = WORKER, nonce: int = 0, chain_id: str | None = None,
           domain: ChainDomain = CHAIN, **receipt_args) -> Transaction:
    """A signed SUBMIT_RESULT for a fresh receipt."""
    return make_submit_result(worker, make_receipt(worker, domain=domain, **receipt_args),
                              nonce, domain=_domain(chain_id, domain))


# ---------------------------------------------------------------------- ComputeResult


def test_compute_result_json_is_compact_and_in_field_order():
    cr = submit().payload
    text = cr.model_dump_json()
    assert text.startswith('{"task_id":"' + "1f" * 16 + '","worker_address":"')
    assert list(json.loads(text)) == [
        "task_id", "worker_address", "result_hash", "proof", "nonce", "signature"
    ]
    assert " " not in text
    assert compute_result_hash(cr) == sha256(text.encode())


def test_compute_result_signing_bytes():
    cr = submit().payload
    fields = decode_canonical(compute_result_signing_bytes(cr, CHAIN))
    assert fields == [f"hc/result/v1/test-chain/{CHAIN.genesis}".encode(), cr.task_id,
                      cr.worker_address, cr.result_hash, cr.proof, cr.nonce]


@pytest.mark.parametrize(
    "field,value",
    [("result_hash", "0x" + "cd" * 31), ("proof", "abc"), ("proof", ""), ("nonce", 0),
     ("signature", "00" * 63), ("task_id", "1F" * 16)],
)
def test_compute_result_field_validation(field, value):
    values = submit().payload.model_dump()
    values[field] = value
    with pytest.raises(ValidationError):
        ComputeResult(**values)


# ---------------------------------------------------------------------- Transaction


def test_signing_bytes_are_tagged_and_exclude_signature():
    tx = transfer()
    fields = decode_canonical(tx_signing_bytes(tx, CHAIN))
    assert fields[0] == f"hc/tx/v1/test-chain/{CHAIN.genesis}".encode()
    assert CHAIN.genesis == block_hash(genesis_block(make_genesis()).header)[:16]
    assert fields[1:4] == ["TRANSFER", tx.from_address, tx.to_address]
    assert fields[-1] == tx.public_key
    assert tx.signature not in fields


def test_tx_id_is_hash_of_full_encoding_not_signing_hash():
    tx = transfer()
    assert tx_id(tx) == sha256(encode_tx(tx)).hex()
    assert tx_id(tx) != sha256(tx_signing_bytes(tx, CHAIN)).hex()
    other = tx.model_copy(update={"signature": "11" * 64})
    assert tx_id(other) != tx_id(tx)


@given(
    amount=st.integers(0, MAX_AMOUNT - 1), nonce=st.integers(0, 2**64 - 1),
    gas_price=st.integers(1000, 2**64 - 1),
)
def test_transfer_encoding_round_trip(amount, nonce, gas_price):
    tx = Transaction(
        tx_type="TRANSFER", from_address=ALICE.public_key.address,
        to_address=BOB.public_key.address, amount=amount, fee=21_000 * gas_price,
        nonce=nonce, gas_price=gas_price, gas_limit=21_000, payload=None,
        public_key=ALICE.public_key.hex(), signature="ab" * 64,
    )
    data = encode_tx(tx)
    assert decode_tx(data) == tx
    assert tx_from_json(json.loads(json.dumps(tx_to_json(tx)))) == tx
    with pytest.raises(DecodeError, match="trailing"):
        decode_tx(data + b"\xc0")


@given(loops=st.integers(10, 10**9), nonce=st.integers(0, 2**32))
def test_submit_result_encoding_round_trip(loops, nonce):
    tx = submit(loops=loops, nonce=nonce)
    assert decode_tx(encode_tx(tx)) == tx
    obj = json.loads(json.dumps(tx_to_json(tx)))
    assert isinstance(obj["payload"], dict)
    assert tx_from_json(obj) == tx


def test_decode_rejects_plain_int_amount():
    fields = decode_canonical(encode_tx(transfer()))
    fields[3] = 1000  # amount as a msgpack int instead of its 12-byte form
    with pytest.raises(DecodeError, match="amount"):
        decode_tx(encode_canonical(fields))


def test_decode_rejects_non_canonical_form():
    data = encode_tx(transfer())
    # Same array, header re-written as array16: a second byte form of the same record.
    assert data[0] == 0x9B
    with pytest.raises(DecodeError, match="non-canonical"):
        decode_tx(b"\xdc\x00\x0b" + data[1:])


@pytest.mark.parametrize("cut", [1, 5, 40])
def test_decode_rejects_truncation(cut):
    with pytest.raises(DecodeError):
        decode_tx(encode_tx(transfer())[:-cut])


def test_decode_rejects_wrong_field_count_and_bad_values():
    fields = decode_canonical(encode_tx(transfer()))
    with pytest.raises(DecodeError):
        decode_tx(encode_canonical(fields[:-1]))
    fields[1] = fields[1].upper()
    with pytest.raises(DecodeError, match="from_address"):
        decode_tx(encode_canonical(fields))


def _transfer_fields(**overrides):
    values = transfer().model_dump()
    values.update(overrides)
    return values


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"to_address": None}, "TRANSFER needs a to_address"),
        ({"payload": submit().payload.model_dump()}, "TRANSFER must not carry a payload"),
        ({"tx_type": "MINT"}, "tx_type"),
        ({"gas_price": 999}, "gas_price"),
        ({"amount": MAX_AMOUNT}, "amount"),
        ({"amount": -1}, "amount"),
        ({"fee": MAX_AMOUNT}, "fee"),
        ({"nonce": 2**64}, "nonce"),
        ({"amount": True}, "amount"),
        ({"amount": 10.0}, "amount"),
        ({"public_key": "04" + "ab" * 32}, "public_key"),
        ({"signature": "AB" * 64}, "signature"),
        ({"to_address": "cpc1notanaddress"}, "to_address"),
        ({"from_address": ALICE.public_key.address.upper()}, "from_address"),
        ({"extra": 1}, "extra"),
    ],
)
def test_transaction_field_validation(overrides, needle):
    with pytest.raises(ValidationError, match=needle):
        Transaction(**_transfer_fields(**overrides))


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"to_address": BOB.public_key.address}, "to_address null"),
        ({"amount": 1}, "amount 0"),
        ({"payload": None}, "needs a ComputeResult payload"),
    ],
)
def test_submit_result_shape(overrides, needle):
    values = submit().model_dump()
    values.update(overrides)
    with pytest.raises(ValidationError, match=needle):
        Transaction(**values)


def test_tx_from_json_errors_are_decode_errors():
    with pytest.raises(DecodeError):
        tx_from_json([1, 2])
    obj = tx_to_json(transfer())
    obj["amount"] = "1000"
    with pytest.raises(DecodeError, match="amount"):
        tx_from_json(obj)


def test_transaction_is_frozen():
    tx = transfer()
    with pytest.raises(ValidationError):
        tx.amount = 5  # type: ignore[misc]

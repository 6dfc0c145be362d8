"""The PoC validator's acceptance receipt (SPEC 3, 6): signing, encoding, verification."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hashcloud.codec import decode_canonical, encode_canonical
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.signatures import ChainDomain, sign
from hashcloud.errors import DecodeError, InvalidReceipt, InvalidSignature
from hashcloud.poc.receipt import (
    Receipt,
    decode_receipt,
    encode_receipt,
    receipt_signing_bytes,
    sign_receipt,
    verify_receipt,
)

VALIDATOR = PrivateKey(0xA11CE)
WORKER = PrivateKey(0xB0B)
CHAIN = ChainDomain("test-chain", "0123456789abcdef")


def make_receipt(**overrides) -> Receipt:
    fields = dict(
        domain=CHAIN, task_id="1f" * 16, worker_address=WORKER.public_key.address,
        seed="ab" * 32, n=64, loops=1000, merkle_root="cd" * 32, compute_time_ms=4000,
        samples=10, audited=3, issued_height=7, accepted_at=1_700_000_000_000, key=VALIDATOR,
    )
    fields.update(overrides)
    return sign_receipt(**fields)


def test_sign_and_verify():
    r = make_receipt()
    verify_receipt(r, {VALIDATOR.public_key.hex()}, CHAIN)
    assert r.chain_id == CHAIN.chain_id
    assert r.validator_public_key == VALIDATOR.public_key.data


def test_signer_not_allowed():
    r = make_receipt()
    with pytest.raises(InvalidReceipt, match="not a PoC validator"):
        verify_receipt(r, {WORKER.public_key.hex()}, CHAIN)


@pytest.mark.parametrize(
    "field,value",
    [("loops", 1001), ("n", 128), ("merkle_root", b"\xce" * 32), ("task_id", "2f" * 16),
     ("worker_address", PrivateKey(5).public_key.address), ("issued_height", 8),
     ("chain_id", "other-chain")],
)
def test_altered_field_refused(field, value):
    r = make_receipt().model_copy(update={field: value})
    # Another chain id is named as such (InvalidReceipt); other fields fail the signature.
    with pytest.raises((InvalidSignature, InvalidReceipt)):
        verify_receipt(r, {VALIDATOR.public_key.hex()}, CHAIN)


def test_receipt_of_same_chain_id_other_genesis_refused():
    """SPEC 5 v1.1: a receipt made on one chain does not verify on another chain that shares
    its chain id but not its genesis."""
    with pytest.raises(InvalidSignature):
        verify_receipt(make_receipt(), {VALIDATOR.public_key.hex()},
                       ChainDomain(CHAIN.chain_id, "fedcba9876543210"))


def test_signing_bytes_are_domain_tagged():
    r = make_receipt()
    fields = decode_canonical(receipt_signing_bytes(r, CHAIN))
    assert fields[0] == b"hc/receipt/v1/test-chain/0123456789abcdef"
    # Byte fields are signed as their hex text: the v1 wire form, unchanged by bytes inside.
    assert fields[1:] == list(r.model_dump(mode="json").values())[:-1]
    assert fields[8] == "cd" * 32 and fields[-1] == VALIDATOR.public_key.hex()


def test_signature_over_untagged_fields_refused():
    r = make_receipt()
    untagged = encode_canonical(list(r.model_dump(mode="json").values())[:-1])
    forged = sign(VALIDATOR, untagged)
    with pytest.raises(InvalidSignature):
        verify_receipt(r.model_copy(update={"signature": forged}),
                       {VALIDATOR.public_key.hex()}, CHAIN)


@given(
    loops=st.integers(10, 2**64 - 1), n=st.sampled_from([64, 1024, 4096]),
    height=st.integers(0, 2**64 - 1), ms=st.integers(0, 2**64 - 1),
)
def test_encoding_round_trip(loops, n, height, ms):
    r = make_receipt(loops=loops, n=n, issued_height=height, compute_time_ms=ms)
    data = encode_receipt(r)
    assert decode_receipt(data) == r
    with pytest.raises(DecodeError):
        decode_receipt(data + b"\x00")


def test_decode_rejects_wrong_shapes():
    data = encode_receipt(make_receipt())
    with pytest.raises(DecodeError):
        decode_receipt(data[:-1])
    with pytest.raises(DecodeError):
        decode_receipt(b"\x90")  # empty array


@pytest.mark.parametrize(
    "field,value",
    [("n", 100), ("n", 8192), ("loops", 0), ("audited", 11), ("samples", 1001),
     ("seed", "AB" * 32), ("merkle_root", "0x" + "ab" * 31), ("task_id", "ab"),
     ("worker_address", "cpc1xyz")],
)
def test_field_validation(field, value):
    with pytest.raises(ValidationError):
        make_receipt(**{field: value})


def test_chain_id_validation():
    with pytest.raises(ValidationError):
        Receipt(**{**make_receipt().model_dump(), "chain_id": "Bad Chain"})
    with pytest.raises(ValueError):  # nor can a receipt be signed for one
        ChainDomain("Bad Chain", CHAIN.genesis)


def test_receipt_is_frozen():
    r = make_receipt()
    with pytest.raises(ValidationError):
        r.loops = 5  # type: ignore[misc]

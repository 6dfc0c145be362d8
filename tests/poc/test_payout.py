"""Payout addresses (SPEC 6 v1.1) in the signed commit, the receipt and the receipt match."""

from __future__ import annotations

import pytest

from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.signatures import ChainDomain, sign
from hashcloud.errors import AuditError, CommitRefused, InvalidSignature
from hashcloud.poc.audit import Commitment, check_commitment, check_receipt
from hashcloud.poc.challenge import commit_message
from hashcloud.poc.receipt import decode_receipt, encode_receipt, sign_receipt

CHAIN = ChainDomain("test-chain", "0123456789abcdef")
WORKER = PrivateKey(0x51)
VALIDATOR = PrivateKey(0x52)
PAYOUT = PrivateKey(0x53).public_key.address
ROOT = bytes(range(32))


def commitment(payout: str | None) -> Commitment:
    return Commitment("ab" * 16, "cd" * 32, 64, WORKER.public_key.address, 10, 1.0, ROOT,
                      "numpy", payout)


def test_default_payout_keeps_the_spec4_message():
    worker = WORKER.public_key.address
    plain = commit_message("ab" * 16, "cd" * 32, 64, worker, 10, 1.0, ROOT)
    assert plain == commit_message("ab" * 16, "cd" * 32, 64, worker, 10, 1.0, ROOT, worker)
    assert plain.endswith(b"|0x" + ROOT.hex().encode())  # SPEC 4 form, unchanged
    named = commit_message("ab" * 16, "cd" * 32, 64, worker, 10, 1.0, ROOT, PAYOUT)
    assert named == plain + b"|" + PAYOUT.encode()


def test_payout_is_covered_by_the_device_signature():
    signed = sign(WORKER, commitment(PAYOUT).message())
    check_commitment(commitment(PAYOUT), WORKER.public_key, signed)
    # Another payout (or the default) under the same signature is refused.
    for other in (None, PrivateKey(0x54).public_key.address):
        with pytest.raises(CommitRefused, match="device_signature"):
            check_commitment(commitment(other), WORKER.public_key, signed)


def receipt(payout: str | None):
    return sign_receipt(
        domain=CHAIN, task_id="ab" * 16, worker_address=WORKER.public_key.address,
        payout_address=payout, seed="cd" * 32, n=64, loops=10, merkle_root=ROOT,
        compute_time_ms=1000, samples=3, audited=1, issued_height=0, accepted_at=1,
        key=VALIDATOR)


def test_receipt_carries_the_payout_default_worker():
    assert receipt(None).payout_address == WORKER.public_key.address
    r = receipt(PAYOUT)
    assert r.payout_address == PAYOUT and decode_receipt(encode_receipt(r)) == r


def test_receipt_match_checks_the_payout():
    kwargs = dict(domain=CHAIN, task_id="ab" * 16, worker_address=WORKER.public_key.address,
                  merkle_root=ROOT, loops=10)
    keys = [VALIDATOR.public_key.hex()]
    check_receipt(receipt(PAYOUT), keys, payout_address=PAYOUT, **kwargs)
    with pytest.raises(AuditError, match="payout_address"):
        check_receipt(receipt(None), keys, payout_address=PAYOUT, **kwargs)
    # A receipt whose payout was altered after signing does not verify.
    forged = receipt(None).model_copy(update={"payout_address": PAYOUT})
    with pytest.raises(InvalidSignature, match="signature"):
        check_receipt(forged, keys, **kwargs)

"""The PoC validator's acceptance receipt (SPEC 3, 6).

After a challenge's commitment passed the audit, the validator (a node whose public key is
listed in genesis as a PoC validator) signs a `Receipt`. The worker carries its canonical
encoding, hex, in `ComputeResult.proof`; the chain checks the signature against the genesis
validator keys and credits `loops * n**3` of audited work to the receipt's `payout_address`
(SPEC 6 v1.1: named in the worker's signed commit, default the worker address).

Signing bytes are the canonical msgpack array `[domain_tag("receipt", domain), every field
except signature, in declaration order]`, the domain naming the chain id and its genesis
(SPEC 5 v1.1), so a receipt signature can be neither replayed on another chain (even one
sharing the chain id) nor reused as any other kind of signed message.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hashcloud.codec import decode_canonical, encode_canonical, expect_array
from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.crypto.signatures import ChainDomain, domain_tag, sign, verify
from hashcloud.errors import DecodeError, InvalidKey, InvalidReceipt, InvalidSignature
from hashcloud.types import (
    U64,
    AddressStr,
    ChainId,
    Hash32,
    Hex32,
    MatrixSize,
    PublicKeyBytes,
    Signature,
    TaskId,
    describe_validation_error,
)

__all__ = [
    "Receipt",
    "decode_receipt",
    "encode_receipt",
    "receipt_signing_bytes",
    "sign_receipt",
    "verify_receipt",
]

_UNSIGNED = bytes(64)


class Receipt(BaseModel):
    """A PoC validator's signed statement that one challenge's work passed its audit."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    chain_id: ChainId
    task_id: TaskId
    worker_address: AddressStr
    payout_address: AddressStr  # SPEC 6 v1.1: who the chain credits the work to
    seed: Hex32
    n: MatrixSize
    loops: Annotated[int, Field(ge=1, lt=2**64)]
    merkle_root: Hash32
    compute_time_ms: U64
    samples: Annotated[int, Field(ge=1, lt=2**64)]
    audited: Annotated[int, Field(ge=1, lt=2**64)]
    issued_height: U64
    accepted_at: U64
    validator_public_key: PublicKeyBytes
    signature: Signature

    @model_validator(mode="after")
    def _check_counts(self) -> Receipt:
        """SPEC 3: 1 <= audited (m) <= samples (s) <= loops."""
        if not self.audited <= self.samples <= self.loops:
            raise ValueError("receipt needs audited <= samples <= loops")
        return self


RECEIPT_FIELDS: tuple[str, ...] = tuple(Receipt.model_fields)
"""Field names in encoding order."""


_HEX_TEXT_FIELDS = frozenset({"merkle_root", "validator_public_key", "signature"})
"""Byte fields that the canonical encoding carries as their hex text (the v1 wire form)."""


def _field_values(receipt: Receipt) -> list:
    """All field values in declaration order, in their canonical-encoding form."""
    return [
        getattr(receipt, name).hex() if name in _HEX_TEXT_FIELDS else getattr(receipt, name)
        for name in RECEIPT_FIELDS
    ]


def receipt_signing_bytes(receipt: Receipt, domain: ChainDomain) -> bytes:
    """The bytes the validator signs: tag, then every field but the signature (SPEC 5).

    InvalidReceipt when the receipt names another chain id than `domain`."""
    if receipt.chain_id != domain.chain_id:
        raise InvalidReceipt(f"receipt is for chain {receipt.chain_id}, not {domain.chain_id}")
    values = _field_values(receipt)[:-1]
    return encode_canonical([domain_tag("receipt", domain), *values])


def sign_receipt(
    *,
    domain: ChainDomain,
    task_id: str,
    worker_address: str,
    seed: str,
    n: int,
    loops: int,
    merkle_root: bytes,
    compute_time_ms: int,
    samples: int,
    audited: int,
    issued_height: int,
    accepted_at: int,
    key: PrivateKey,
    payout_address: str | None = None,
) -> Receipt:
    """Build and sign a receipt with the validator's `key` (fields validated first);
    `payout_address` defaults to the worker's (SPEC 6 v1.1)."""
    draft = Receipt(
        chain_id=domain.chain_id,
        task_id=task_id,
        worker_address=worker_address,
        payout_address=worker_address if payout_address is None else payout_address,
        seed=seed,
        n=n,
        loops=loops,
        merkle_root=merkle_root,
        compute_time_ms=compute_time_ms,
        samples=samples,
        audited=audited,
        issued_height=issued_height,
        accepted_at=accepted_at,
        validator_public_key=key.public_key.data,
        signature=_UNSIGNED,
    )
    signature = sign(key, receipt_signing_bytes(draft, domain))
    return draft.model_copy(update={"signature": signature})


def verify_receipt(receipt: Receipt, allowed_validator_keys: Collection[str],
                   domain: ChainDomain) -> None:
    """Raise unless `receipt` is signed by one of `allowed_validator_keys` (SPEC 6; hex, as
    genesis lists them) for the chain `domain`.

    InvalidReceipt when the signer is not an allowed validator, InvalidSignature when the
    signature does not verify.
    """
    signer = receipt.validator_public_key.hex()
    if signer not in allowed_validator_keys:
        raise InvalidReceipt(f"receipt signer {signer} is not a PoC validator of this chain")
    try:
        public_key = PublicKey(receipt.validator_public_key)
    except InvalidKey as exc:
        raise InvalidReceipt(f"receipt validator key is invalid: {exc}") from None
    try:
        verify(public_key, receipt_signing_bytes(receipt, domain), receipt.signature)
    except InvalidSignature as exc:
        raise InvalidSignature(f"receipt signature is invalid: {exc}") from None


def encode_receipt(receipt: Receipt) -> bytes:
    """Canonical msgpack array of every field, signature last."""
    return encode_canonical(_field_values(receipt))


def receipt_from_fields(values: list) -> Receipt:
    """Build a receipt from its field array (decoded msgpack), raising DecodeError."""
    expect_array(values, len(RECEIPT_FIELDS), "receipt")
    try:
        return Receipt(**dict(zip(RECEIPT_FIELDS, values, strict=True)))
    except ValidationError as exc:
        raise DecodeError(f"invalid receipt: {describe_validation_error(exc)}") from None


def decode_receipt(data: bytes) -> Receipt:
    """Decode `encode_receipt` bytes strictly, raising DecodeError."""
    return receipt_from_fields(decode_canonical(data))

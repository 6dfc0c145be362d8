"""Transactions and the ComputeResult payload (SPEC 6).

Records are frozen, strictly validated pydantic models: a `Transaction` that exists has
well-formed fields (hex widths, canonical addresses, integer ranges, type-specific shape);
whether it is *valid against the state* is decided by `transition.validate_transaction`.

Three byte forms, each a canonical msgpack array (never string concatenation):

- `tx_signing_bytes(tx, domain)`: `[domain_tag("tx", domain), tx_type, from, to, amount,
  fee, nonce, gas_price, gas_limit, payload fields | None, public_key]`, what the sender
  signs;
- `encode_tx(tx)`: every field including the signature, what blocks carry;
- `tx_id(tx) = sha256(encode_tx(tx))`, distinct from the signing hash.

Amounts and fees are 12-byte big-endian byte strings in the msgpack forms (see
`encoding`), plain integers everywhere else.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hashcloud.codec import (
    decode_amount,
    decode_canonical,
    encode_amount,
    encode_canonical,
    expect_array,
)
from hashcloud.crypto.hashing import sha256
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.signatures import ChainDomain, domain_tag, sign
from hashcloud.errors import DecodeError
from hashcloud.poc.receipt import Receipt, encode_receipt
from hashcloud.types import (
    U64,
    AddressStr,
    Amount,
    Hex32,
    HexBytesStr,
    PublicKeyHex,
    SignatureHex,
    TaskId,
    describe_validation_error,
)

__all__ = [
    "GAS_BY_TYPE",
    "MAX_PROOF_HEX",
    "MIN_GAS_PRICE",
    "SUBMIT_RESULT",
    "SUBMIT_RESULT_GAS",
    "TRANSFER",
    "TRANSFER_GAS",
    "ComputeResult",
    "Transaction",
    "compute_result_hash",
    "compute_result_signing_bytes",
    "decode_tx",
    "encode_tx",
    "make_submit_result",
    "make_transfer",
    "sign_compute_result",
    "sign_transaction",
    "tx_from_json",
    "tx_from_obj",
    "tx_id",
    "tx_signing_bytes",
    "tx_to_json",
    "tx_to_obj",
]

TRANSFER = "TRANSFER"
SUBMIT_RESULT = "SUBMIT_RESULT"
TRANSFER_GAS = 21_000
SUBMIT_RESULT_GAS = 80_000
GAS_BY_TYPE = {TRANSFER: TRANSFER_GAS, SUBMIT_RESULT: SUBMIT_RESULT_GAS}
"""The exact gas_limit each transaction type must declare (SPEC 6)."""
MIN_GAS_PRICE = 1000
"""Lowest accepted gas price (SPEC 6)."""
MAX_PROOF_HEX = 8192
"""Longest accepted `ComputeResult.proof` (hex digits); a receipt is about 900."""

_UNSIGNED = "00" * 64

ProofHex = Annotated[HexBytesStr, Field(min_length=2, max_length=MAX_PROOF_HEX)]
"""The receipt bytes of a SUBMIT_RESULT as lower-case hex text (`HexBytesStr`), bounded."""


class ComputeResult(BaseModel):
    """A worker's claim for one audited challenge (SPEC 6 SUBMIT_RESULT payload).

    Field order is part of the protocol: `compute_result_hash` hashes `model_dump_json()`.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    task_id: TaskId
    worker_address: AddressStr
    result_hash: Hex32
    proof: ProofHex
    nonce: Annotated[int, Field(ge=1, lt=2**64)]
    signature: SignatureHex


COMPUTE_RESULT_FIELDS: tuple[str, ...] = tuple(ComputeResult.model_fields)


class Transaction(BaseModel):
    """A signed chain transaction with the ComputeChain field set (SPEC 6)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    tx_type: Literal["TRANSFER", "SUBMIT_RESULT"]
    from_address: AddressStr
    to_address: AddressStr | None
    amount: Amount
    fee: Amount
    nonce: U64
    gas_price: Annotated[int, Field(ge=MIN_GAS_PRICE, lt=2**64)]
    gas_limit: U64
    payload: ComputeResult | None
    public_key: PublicKeyHex
    signature: SignatureHex

    @model_validator(mode="after")
    def _check_shape(self) -> Transaction:
        """Type-specific shape: TRANSFER moves coins, SUBMIT_RESULT carries a payload."""
        if self.tx_type == TRANSFER:
            if self.to_address is None:
                raise ValueError("TRANSFER needs a to_address")
            if self.payload is not None:
                raise ValueError("TRANSFER must not carry a payload")
        else:
            if self.to_address is not None:
                raise ValueError("SUBMIT_RESULT must have to_address null")
            if self.amount != 0:
                raise ValueError("SUBMIT_RESULT must have amount 0")
            if self.payload is None:
                raise ValueError("SUBMIT_RESULT needs a ComputeResult payload")
        return self


TX_FIELDS: tuple[str, ...] = tuple(Transaction.model_fields)


# ------------------------------------------------------------------ ComputeResult forms


def compute_result_signing_bytes(result: ComputeResult, domain: ChainDomain) -> bytes:
    """What the worker signs: `[tag("result", domain), task_id, worker, hash, proof, nonce]`."""
    return encode_canonical(
        [
            domain_tag("result", domain),
            result.task_id,
            result.worker_address,
            result.result_hash,
            result.proof,
            result.nonce,
        ]
    )


def compute_result_hash(result: ComputeResult) -> bytes:
    """`SHA256(json(ComputeResult))`, compact JSON in field order: a compute_root leaf."""
    return sha256(result.model_dump_json().encode("utf-8"))


def _compute_result_to_obj(result: ComputeResult) -> list:
    """The field array of a ComputeResult (all fields, signature last)."""
    return [getattr(result, name) for name in COMPUTE_RESULT_FIELDS]


def sign_compute_result(
    key: PrivateKey, receipt: Receipt, domain: ChainDomain
) -> ComputeResult:
    """The worker's signed ComputeResult claiming the work a receipt attests (SPEC 6)."""
    draft = ComputeResult(
        task_id=receipt.task_id,
        worker_address=key.public_key.address,
        result_hash=receipt.merkle_root.hex(),  # chain records keep the hex form (SPEC 6)
        proof=encode_receipt(receipt).hex(),
        nonce=receipt.loops,
        signature=_UNSIGNED,
    )
    signature = sign(key, compute_result_signing_bytes(draft, domain))
    return draft.model_copy(update={"signature": signature.hex()})


# ------------------------------------------------------------------ Transaction forms


def _common_fields(tx: Transaction) -> list:
    """The fields shared by the signing and the full encoding, in order (no tag, no sig)."""
    return [
        tx.tx_type,
        tx.from_address,
        tx.to_address,
        encode_amount(tx.amount),
        encode_amount(tx.fee),
        tx.nonce,
        tx.gas_price,
        tx.gas_limit,
        None if tx.payload is None else _compute_result_to_obj(tx.payload),
        tx.public_key,
    ]


def tx_signing_bytes(tx: Transaction, domain: ChainDomain) -> bytes:
    """What the sender signs: tag `hc/tx/v1/<chain_id>/<g>` (SPEC 5 v1.1), then every field
    but the signature."""
    return encode_canonical([domain_tag("tx", domain), *_common_fields(tx)])


def tx_to_obj(tx: Transaction) -> list:
    """The msgpack field array of a transaction (every field, signature last)."""
    return [*_common_fields(tx), tx.signature]


def encode_tx(tx: Transaction) -> bytes:
    """Canonical msgpack of every field, signature included."""
    return encode_canonical(tx_to_obj(tx))


def tx_id(tx: Transaction) -> str:
    """Transaction id: hex `sha256(encode_tx(tx))` (not the signing hash)."""
    return sha256(encode_tx(tx)).hex()


def tx_from_obj(obj: Any) -> Transaction:
    """Build a transaction from its decoded msgpack field array, raising DecodeError."""
    fields = expect_array(obj, len(TX_FIELDS), "transaction")
    values = dict(zip(TX_FIELDS, fields, strict=True))
    values["amount"] = decode_amount(values["amount"], "amount")
    values["fee"] = decode_amount(values["fee"], "fee")
    payload = values["payload"]
    try:
        if payload is not None:
            expect_array(payload, len(COMPUTE_RESULT_FIELDS), "payload")
            values["payload"] = ComputeResult(
                **dict(zip(COMPUTE_RESULT_FIELDS, payload, strict=True))
            )
        return Transaction(**values)
    except ValidationError as exc:
        raise DecodeError(f"invalid transaction: {describe_validation_error(exc)}") from None


def decode_tx(data: bytes) -> Transaction:
    """Decode `encode_tx` bytes strictly (canonical, no trailing bytes), raising DecodeError."""
    return tx_from_obj(decode_canonical(data))


def tx_to_json(tx: Transaction) -> dict[str, Any]:
    """JSON object of every field, payload as an object (HTTP API, SPEC 7)."""
    return tx.model_dump(mode="json")


def tx_from_json(obj: Any) -> Transaction:
    """Parse `tx_to_json` output (e.g. an HTTP request body), raising DecodeError."""
    if not isinstance(obj, dict):
        raise DecodeError("transaction must be a JSON object")
    try:
        return Transaction.model_validate(obj)
    except ValidationError as exc:
        raise DecodeError(f"invalid transaction: {describe_validation_error(exc)}") from None


# ------------------------------------------------------------------ signing helpers


def sign_transaction(
    key: PrivateKey,
    domain: ChainDomain,
    *,
    tx_type: str,
    to_address: str | None,
    amount: int,
    nonce: int,
    gas_price: int,
    payload: ComputeResult | None = None,
    gas_limit: int | None = None,
    fee: int | None = None,
) -> Transaction:
    """Build and sign a transaction from `key` (gas_limit and fee default to the rule)."""
    gas_limit = GAS_BY_TYPE[tx_type] if gas_limit is None else gas_limit
    draft = Transaction(
        tx_type=tx_type,
        from_address=key.public_key.address,
        to_address=to_address,
        amount=amount,
        fee=gas_limit * gas_price if fee is None else fee,
        nonce=nonce,
        gas_price=gas_price,
        gas_limit=gas_limit,
        payload=payload,
        public_key=key.public_key.hex(),
        signature=_UNSIGNED,
    )
    signature = sign(key, tx_signing_bytes(draft, domain))
    return draft.model_copy(update={"signature": signature.hex()})


def make_transfer(
    key: PrivateKey,
    to: str,
    amount: int,
    nonce: int,
    gas_price: int = MIN_GAS_PRICE,
    *,
    domain: ChainDomain,
) -> Transaction:
    """A signed TRANSFER of `amount` from `key`'s address to `to` on the chain `domain`."""
    return sign_transaction(
        key, domain, tx_type=TRANSFER, to_address=to, amount=amount, nonce=nonce,
        gas_price=gas_price,
    )


def make_submit_result(
    key: PrivateKey,
    receipt: Receipt,
    nonce: int,
    gas_price: int = MIN_GAS_PRICE,
    *,
    domain: ChainDomain,
) -> Transaction:
    """A signed SUBMIT_RESULT claiming the reward for the work `receipt` attests."""
    payload = sign_compute_result(key, receipt, domain)
    return sign_transaction(
        key, domain, tx_type=SUBMIT_RESULT, to_address=None, amount=0, nonce=nonce,
        gas_price=gas_price, payload=payload,
    )

"""Block headers, blocks and their encodings (SPEC 6).

- `header_hash_bytes(header)`: canonical msgpack array of every header field but the
  signature; `block_hash(header) = sha256(header_hash_bytes(header))`, hex.
- The proposer signs `domain_tag("block", domain) || block_hash_bytes` (SPEC 5 v1.1: the
  domain names the chain id and its genesis block hash).
- `tx_root`: RFC 6962 MTH (SPEC 2) of the 32-byte tx ids in block order; `sha256(b"")` for
  a block without transactions.
- `compute_root`: MTH of `compute_result_hash(payload)` of the block's SUBMIT_RESULT
  transactions in block order; the empty string when there are none (ComputeChain's rule).
- `encode_block(block)`: canonical msgpack `[header fields incl. signature, [tx arrays]]`;
  this is the payload the chain store keeps.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hashcloud.chain.tx import (
    SUBMIT_RESULT,
    Transaction,
    compute_result_hash,
    tx_from_obj,
    tx_id,
    tx_to_json,
    tx_to_obj,
)
from hashcloud.codec import decode_canonical, encode_canonical, expect_array
from hashcloud.crypto.hashing import sha256
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import merkle_root
from hashcloud.crypto.signatures import ChainDomain, domain_tag, sign
from hashcloud.errors import DecodeError
from hashcloud.types import U64, AddressStr, Hex32, SignatureHex, describe_validation_error

__all__ = [
    "EMPTY_TX_ROOT",
    "ZERO_HASH",
    "Block",
    "BlockHeader",
    "block_hash",
    "block_signing_bytes",
    "block_to_json",
    "compute_root",
    "decode_block",
    "encode_block",
    "header_hash_bytes",
    "sign_header",
    "tx_root",
]

ZERO_HASH = "00" * 32
"""The all-zero 32-byte hash (hex)."""

EMPTY_TX_ROOT = sha256(b"").hex()
"""`tx_root` of a block without transactions (`MTH({})`, SPEC 2)."""


class BlockHeader(BaseModel):
    """A block header (SPEC 6). `proposer` and `signature` are "" only in genesis."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    height: U64
    prev_hash: Hex32
    timestamp: U64
    proposer: AddressStr | Annotated[str, Field(max_length=0)]
    tx_root: Hex32
    state_root: Hex32
    compute_root: Hex32 | Annotated[str, Field(max_length=0)]
    signature: SignatureHex | Annotated[str, Field(max_length=0)]


HEADER_FIELDS: tuple[str, ...] = tuple(BlockHeader.model_fields)


class Block(BaseModel):
    """A header and its transactions, in application order."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    header: BlockHeader
    transactions: tuple[Transaction, ...] = ()

    @field_validator("transactions", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        """Accept a list of transactions (stored as an immutable tuple)."""
        return tuple(value) if isinstance(value, list) else value


def _header_values(header: BlockHeader) -> list:
    """All header field values in declaration order (signature last)."""
    return [getattr(header, name) for name in HEADER_FIELDS]


def header_hash_bytes(header: BlockHeader) -> bytes:
    """Canonical msgpack of the header without its signature: what the block hash covers."""
    return encode_canonical(_header_values(header)[:-1])


def block_hash(header: BlockHeader) -> str:
    """Hex `sha256(header_hash_bytes(header))` (SPEC 6 block hash)."""
    return sha256(header_hash_bytes(header)).hex()


def block_signing_bytes(header: BlockHeader, domain: ChainDomain) -> bytes:
    """What the proposer signs: `domain_tag("block", domain) || block hash bytes`."""
    return domain_tag("block", domain) + bytes.fromhex(block_hash(header))


def sign_header(header: BlockHeader, key: PrivateKey, domain: ChainDomain) -> BlockHeader:
    """Return `header` signed by the proposer `key` (its `proposer` field is not changed)."""
    signature = sign(key, block_signing_bytes(header, domain))
    return header.model_copy(update={"signature": signature.hex()})


def tx_root(tx_ids: list[str]) -> str:
    """MTH over the 32-byte tx ids in block order (`sha256(b"")` when there are none)."""
    return merkle_root([bytes.fromhex(t) for t in tx_ids], workers=1).hex()


def compute_root(transactions: tuple[Transaction, ...] | list[Transaction]) -> str:
    """MTH over `compute_result_hash` of the SUBMIT_RESULT payloads; "" when none (SPEC 6)."""
    leaves = [
        compute_result_hash(tx.payload)
        for tx in transactions
        if tx.tx_type == SUBMIT_RESULT and tx.payload is not None
    ]
    return merkle_root(leaves, workers=1).hex() if leaves else ""


def block_to_obj(block: Block) -> list:
    """The msgpack array form of a block: `[header fields, [tx field arrays]]`."""
    return [_header_values(block.header), [tx_to_obj(tx) for tx in block.transactions]]


def encode_block(block: Block) -> bytes:
    """Canonical msgpack of a block (the chain store payload)."""
    return encode_canonical(block_to_obj(block))


def header_from_obj(obj: Any) -> BlockHeader:
    """Build a header from its field array, raising DecodeError."""
    values = expect_array(obj, len(HEADER_FIELDS), "block header")
    try:
        return BlockHeader(**dict(zip(HEADER_FIELDS, values, strict=True)))
    except ValidationError as exc:
        raise DecodeError(f"invalid block header: {describe_validation_error(exc)}") from None


def block_from_obj(obj: Any) -> Block:
    """Build a block from its decoded msgpack array, raising DecodeError."""
    raw_header, raw_txs = expect_array(obj, 2, "block")
    if not isinstance(raw_txs, list):
        raise DecodeError("block transactions must be an array")
    header = header_from_obj(raw_header)
    transactions = tuple(tx_from_obj(raw) for raw in raw_txs)
    return Block(header=header, transactions=transactions)


def decode_block(data: bytes) -> Block:
    """Decode `encode_block` bytes strictly (canonical, no trailing bytes)."""
    return block_from_obj(decode_canonical(data))


def block_tx_ids_from_payload(data: bytes) -> list[str]:
    """Tx ids of a stored block without building its records (fast index rebuild).

    A canonical block payload holds each transaction's canonical array, so re-encoding that
    array gives exactly `encode_tx(tx)`.
    """
    _, raw_txs = expect_array(decode_canonical(data), 2, "block")
    if not isinstance(raw_txs, list):
        raise DecodeError("block transactions must be an array")
    return [sha256(encode_canonical(raw)).hex() for raw in raw_txs]


def block_to_json(block: Block) -> dict[str, Any]:
    """SPEC 7 inspect-block object: `{"hash", "header": {...}, "transactions": [...]}`."""
    return {
        "hash": block_hash(block.header),
        "header": block.header.model_dump(mode="json"),
        "transactions": [{"tx_id": tx_id(tx), **tx_to_json(tx)} for tx in block.transactions],
    }


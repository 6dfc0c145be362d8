"""Canonical msgpack encoding of chain records, and the field forms they share (SPEC 6).

Every chain record (transaction, receipt, block, state, genesis) has exactly one byte form:
`msgpack.packb(obj, use_bin_type=True)` of a plain array of its fields, in declaration
order. msgpack-python always writes the shortest form of each integer, string, binary and
container header, so "canonical" means: decode strictly, re-encode, and require the very
same bytes. Hashes are always `sha256(encode(x))` of that form.

Only `None`, `bool`, `int`, `str` (UTF-8), `bytes`, arrays and string-keyed maps may appear.
Floats and extension types never do: consensus code uses integers only.

msgpack integers stop at 2**64 - 1, but amounts and balances range over [0, 2**96)
(`Amount`). They are therefore always written as exactly 12 big-endian bytes
(`encode_amount`), a single fixed-width form, in every record.

This module also names the string forms (hex widths, addresses, chain ids) and integer
ranges shared by the chain records, so that each record module declares its fields with
the same validated aliases.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

import msgpack
from pydantic import AfterValidator, Field, StringConstraints, ValidationError

from hashcloud.crypto.address import validate_address
from hashcloud.errors import DecodeError, InvalidAddress

__all__ = [
    "AMOUNT_BYTES",
    "MAX_AMOUNT",
    "MAX_U64",
    "AddressStr",
    "Amount",
    "ChainId",
    "Hex32",
    "PublicKeyHex",
    "SignatureHex",
    "TaskId",
    "U64",
    "decode_amount",
    "decode_canonical",
    "describe_validation_error",
    "encode_amount",
    "encode_canonical",
    "expect_array",
    "expect_bytes",
    "expect_int",
    "expect_str",
]

MAX_U64 = 2**64
"""Exclusive bound of nonces, gas fields and other counters."""

MAX_AMOUNT = 2**96
"""Exclusive bound of every amount, fee, balance and supply counter (base units)."""

AMOUNT_BYTES = 12
"""Width of the fixed big-endian byte form of an amount (96 bits)."""


@lru_cache(maxsize=1 << 16)
def _check_address(value: str) -> str:
    """Pydantic hook: a canonical `cpc1...` address (SPEC 5), as a ValueError if not.

    Cached: bech32 checksums are pure Python and the same addresses recur in every block.
    """
    try:
        return validate_address(value)
    except InvalidAddress as exc:
        raise ValueError(str(exc)) from None


Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A 32-byte hash as 64 lower-case hex digits, no prefix (SPEC: chain hex form)."""

SignatureHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]
"""A 64-byte `r || s` signature as 128 lower-case hex digits (SPEC 5)."""

PublicKeyHex = Annotated[str, StringConstraints(pattern=r"^0[23][0-9a-f]{64}$")]
"""A 33-byte compressed secp256k1 public key as 66 lower-case hex digits (SPEC 5)."""

TaskId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
"""A challenge id: 16 bytes as 32 lower-case hex digits (SPEC 3)."""

ChainId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")]
"""A chain id: 1-32 characters of `a-z`, `0-9` and `-` (it appears in domain tags)."""

AddressStr = Annotated[str, AfterValidator(_check_address)]
"""A canonical lower-case `cpc1...` address (SPEC 5)."""

Amount = Annotated[int, Field(ge=0, lt=MAX_AMOUNT)]
"""An amount of base units in [0, 2**96)."""

U64 = Annotated[int, Field(ge=0, lt=MAX_U64)]
"""An unsigned 64-bit integer."""


def encode_canonical(obj: Any) -> bytes:
    """Return the canonical msgpack bytes of `obj` (arrays, ints, str, bytes, None)."""
    return msgpack.packb(obj, use_bin_type=True)


def _check_types(obj: Any) -> None:
    """Raise DecodeError if `obj` holds anything but the permitted msgpack types."""
    if obj is None or isinstance(obj, (bool, int, str, bytes)):
        return
    if isinstance(obj, list):
        for item in obj:
            _check_types(item)
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_types(key)
            _check_types(value)
        return
    raise DecodeError(f"type {type(obj).__name__} is not allowed in a chain record")


def decode_canonical(data: bytes) -> Any:
    """Decode canonical msgpack bytes, raising DecodeError on anything else.

    Rejects trailing bytes, invalid UTF-8, non-string map keys, floats, extension types and
    every non-shortest or otherwise non-canonical form (by re-encoding and comparing).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("expected bytes")
    data = bytes(data)
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except msgpack.ExtraData:
        raise DecodeError("trailing bytes after the record") from None
    except (ValueError, TypeError, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"not valid msgpack ({exc.__class__.__name__})") from None
    _check_types(obj)
    if encode_canonical(obj) != data:
        raise DecodeError("non-canonical encoding")
    return obj


def encode_amount(value: int) -> bytes:
    """The 12-byte big-endian form of an amount in [0, 2**96)."""
    if type(value) is not int or not 0 <= value < MAX_AMOUNT:
        raise ValueError(f"amount {value!r} outside [0, 2**96)")
    return value.to_bytes(AMOUNT_BYTES, "big")


def decode_amount(raw: Any, what: str = "amount") -> int:
    """Parse the 12-byte big-endian form of an amount, raising DecodeError."""
    if not isinstance(raw, bytes) or len(raw) != AMOUNT_BYTES:
        raise DecodeError(f"{what} must be {AMOUNT_BYTES} bytes")
    return int.from_bytes(raw, "big")


def expect_array(obj: Any, length: int, what: str) -> list:
    """Return `obj` if it is an array of exactly `length` items, else raise DecodeError."""
    if not isinstance(obj, list) or len(obj) != length:
        raise DecodeError(f"{what} must be an array of {length} fields")
    return obj


def expect_int(obj: Any, what: str) -> int:
    """Return `obj` if it is an integer (not a bool), else raise DecodeError."""
    if type(obj) is not int:
        raise DecodeError(f"{what} must be an integer")
    return obj


def expect_str(obj: Any, what: str) -> str:
    """Return `obj` if it is a string, else raise DecodeError."""
    if not isinstance(obj, str):
        raise DecodeError(f"{what} must be a string")
    return obj


def expect_bytes(obj: Any, what: str) -> bytes:
    """Return `obj` if it is a byte string, else raise DecodeError."""
    if not isinstance(obj, bytes):
        raise DecodeError(f"{what} must be bytes")
    return obj


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line summary (`field: problem`) of the first error pydantic found."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']}"

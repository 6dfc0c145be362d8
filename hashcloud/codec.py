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

The string forms (hex widths, addresses, chain ids) and integer ranges shared by the chain
records live in `hashcloud.types`; import them from there.
"""

from __future__ import annotations

from typing import Any

import msgpack

from hashcloud.errors import DecodeError
from hashcloud.types import MAX_AMOUNT

__all__ = [
    "AMOUNT_BYTES",
    "decode_amount",
    "decode_canonical",
    "decode_trusted",
    "encode_amount",
    "encode_canonical",
    "expect_array",
    "expect_bytes",
    "expect_int",
    "expect_str",
]

AMOUNT_BYTES = 12
"""Width of the fixed big-endian byte form of an amount (96 bits)."""


def encode_canonical(obj: Any) -> bytes:
    """Return the canonical msgpack bytes of `obj` (arrays, ints, str, bytes, None).

    A value msgpack cannot carry (an integer outside [-2**63, 2**64), an unknown type) is a
    DecodeError naming it, never a bare OverflowError/TypeError: such values arrive from
    untrusted proof files and HTTP bodies."""
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as exc:
        raise DecodeError(f"value cannot be encoded canonically: {exc}") from None


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


def decode_trusted(data: bytes) -> Any:
    """Decode msgpack bytes that this process encoded itself or already checked with
    `decode_canonical` (a state tree's records): the same values, without the checks."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)


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


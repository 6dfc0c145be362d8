"""Named string forms shared by records (STYLE 2): hex widths with and without `0x`.

SPEC notation: hex in proof files is lower-case with a `0x` prefix; hex in chain objects is
lower-case without prefix. Readers accept exactly these forms, so each alias below is a
pydantic-validated string with one allowed spelling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

from hashcloud.crypto.address import validate_address
from hashcloud.errors import InvalidAddress

MAX_U64 = 2**64
"""Exclusive bound of nonces, gas fields and other counters."""

MAX_AMOUNT = 2**96
"""Exclusive bound of every amount, fee, balance and supply counter (base units)."""


@lru_cache(maxsize=1 << 16)
def _address(value: str) -> str:
    """Pydantic hook: a canonical `cpc1...` address (SPEC 5), as a ValueError if not.

    Cached: bech32 checksums are pure Python and the same addresses recur in every block.
    """
    try:
        return validate_address(value)
    except InvalidAddress as exc:
        raise ValueError(str(exc)) from None

HexId16 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
"""16 bytes as 32 lower-case hex digits, no prefix (challenge ids)."""

Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""32 bytes, lower-case hex, no prefix (chain objects)."""

SignatureHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]
"""A 64-byte `r || s` signature as 128 lower-case hex digits (SPEC 5)."""

PublicKeyHex = Annotated[str, StringConstraints(pattern=r"^0[23][0-9a-f]{64}$")]
"""A 33-byte compressed secp256k1 public key as 66 lower-case hex digits (SPEC 5)."""

TaskId = HexId16
"""A challenge id used as a task id (SPEC 6)."""

ChainId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")]
"""A chain id: 1-32 characters of `a-z`, `0-9` and `-` (it appears in domain tags)."""

Amount = Annotated[int, Field(ge=0, lt=MAX_AMOUNT)]
"""An amount of base units in [0, 2**96)."""

U64 = Annotated[int, Field(ge=0, lt=MAX_U64)]
"""An unsigned 64-bit integer."""

PHex32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{64}$")]
"""32 bytes, lower-case hex with `0x` (proof files)."""

PHexPubKey = Annotated[str, StringConstraints(pattern=r"^0x0[23][0-9a-f]{64}$")]
"""33-byte compressed public key, `0x` hex (proof files)."""

PHexSig = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{128}$")]
"""64-byte r||s signature, `0x` hex (proof files)."""

PHexBytes = Annotated[str, StringConstraints(pattern=r"^0x(?:[0-9a-f]{2})+$")]
"""Non-empty bytes, `0x` hex (proof files)."""

AddressStr = Annotated[str, AfterValidator(_address)]
"""A canonical `cpc1...` address (SPEC 5)."""


def from_phex(text: str) -> bytes:
    """Bytes of a `0x` hex string already validated by one of the aliases above."""
    return bytes.fromhex(text[2:])


def to_phex(data: bytes) -> str:
    """`0x` + lower-case hex (proof-file form)."""
    return "0x" + data.hex()


def describe_errors(errors: Iterable[Mapping[str, Any]], limit: int = 5) -> str:
    """`field.path: message; ...` for pydantic-style error dicts (at most `limit` shown).

    One wording for every boundary: proof files, chain records and HTTP bodies."""
    errors = list(errors)
    parts = []
    for e in errors[:limit]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "value"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "") or "invalid value"


def describe_validation_error(exc: Any) -> str:
    """`describe_errors` of a pydantic ValidationError."""
    return describe_errors(exc.errors())

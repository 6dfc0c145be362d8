"""Named string forms shared by records (STYLE 2): hex widths with and without `0x`.

SPEC notation: hex in proof files is lower-case with a `0x` prefix; hex in chain objects is
lower-case without prefix. Readers accept exactly these forms, so each alias below is a
pydantic-validated string with one allowed spelling.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints

from hashcloud.crypto.address import validate_address
from hashcloud.errors import InvalidAddress


def _address(value: str) -> str:
    # pydantic turns ValueError into a ValidationError naming the field.
    try:
        return validate_address(value)
    except InvalidAddress as exc:
        raise ValueError(str(exc)) from None

HexId16 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
"""16 bytes as 32 lower-case hex digits, no prefix (challenge ids)."""

HexStr = Annotated[str, StringConstraints(pattern=r"^(?:[0-9a-f]{2})+$")]
"""Non-empty lower-case hex of whole bytes, no prefix (seeds)."""

Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""32 bytes, lower-case hex, no prefix (chain objects)."""

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

"""The protocol's field types (STYLE 2): bytes inside, one hex spelling at each edge.

SPEC notation: hex in proof files is lower-case with a `0x` prefix; hex in chain objects is
lower-case without prefix. Readers accept exactly these forms.

- Byte fields (`Hash32`, `PHash32`, `Signature`, `PSignature`, `PublicKeyBytes`, ...) are
  `bytes` inside the program: a record built from JSON holds bytes, and its JSON form
  (`model_dump(mode="json")`, `model_dump_json`) writes the one hex spelling of its edge.
- `Address` (bech32 `cpc1...`), the n-range rule (`validate_n`, `MatrixSize`), chain ids and
  integer ranges are defined here once, for every layer.
- The hex-string aliases (`Hex32`, `SignatureHex`, `PublicKeyHex`, ...) remain for the chain
  records of SPEC 6, whose canonical encodings sign the hex text itself (see `chain/tx.py`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from typing import Annotated, Any

from bech32 import bech32_decode, bech32_encode, convertbits
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

from hashcloud.errors import EngineError, InvalidAddress
from hashcloud.params import MAX_N, MIN_N, N_STEP

HRP = "cpc"
"""Human-readable part of every HashCloud address."""

Address = str
"""Alias for a canonical, lower-case `cpc1...` address string."""


def address_from_payload(payload20: bytes) -> Address:
    """Encode a 20-byte hash160 payload as a `cpc1...` address."""
    if len(payload20) != 20:
        raise InvalidAddress("address payload must be 20 bytes")
    return bech32_encode(HRP, convertbits(payload20, 8, 5))


def decode_address(address: object) -> bytes:
    """Return the 20-byte payload of `address`, raising InvalidAddress with the reason."""
    if not isinstance(address, str):
        raise InvalidAddress("address must be a string")
    if address != address.lower():
        # bech32 allows all-upper, but a signed record must have one form only.
        raise InvalidAddress("address must be lower-case")
    if not address.startswith(HRP + "1"):
        raise InvalidAddress(f"address must start with '{HRP}1'")
    hrp, data = bech32_decode(address)
    if hrp is None or data is None:
        raise InvalidAddress("address has a bad bech32 checksum or characters")
    if hrp != HRP:
        raise InvalidAddress(f"address hrp is {hrp!r}, expected {HRP!r}")
    payload = convertbits(data, 5, 8, False)
    if payload is None or len(payload) != 20:
        raise InvalidAddress("address payload is not 20 bytes")
    return bytes(payload)


def validate_address(address: object) -> Address:
    """Return `address` unchanged if it is a canonical valid address, else raise."""
    decode_address(address)
    return address  # type: ignore[return-value]

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


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    """The compiled form of one of the patterns below (each compiled once)."""
    return re.compile(pattern)


def matches(pattern: str, text: object) -> bool:
    """True if `text` is a `str` matching `pattern` as a whole (one of the `*_PATTERN`s).

    The plain-Python twin of the pydantic aliases: `matches(HEX_ID16_PATTERN, x)` accepts
    exactly the strings a `HexId16` field accepts.
    """
    return isinstance(text, str) and _compiled(pattern).fullmatch(text) is not None


SEED_PATTERN = r"^[0-9a-f]+$"
"""A SPEC 1 seed: a non-empty lower-case hex string (any length, odd lengths included)."""

Seed = Annotated[str, StringConstraints(pattern=SEED_PATTERN)]
"""A SPEC 1 seed in a record: a non-empty lower-case hex string, no prefix."""


def is_seed(text: object) -> bool:
    """True if `text` is a SPEC 1 seed (non-empty lower-case hex, no prefix)."""
    return matches(SEED_PATTERN, text)


def validate_seed(seed: object) -> str:
    """Return `seed` if it is a SPEC 1 seed (`is_seed`), else raise `EngineError`.

    The one place of the seed rule for plain Python callers (the engine); records use `Seed`.
    """
    if not is_seed(seed):
        raise EngineError("seed must be a non-empty lower-case hex string")
    return seed  # type: ignore[return-value]


HEX_BYTES_PATTERN = r"^(?:[0-9a-f]{2})+$"
"""Non-empty bytes as lower-case hex, no prefix: an even, non-zero number of digits."""

HexBytesStr = Annotated[str, StringConstraints(pattern=HEX_BYTES_PATTERN)]
"""Non-empty bytes kept as their lower-case hex text, no prefix (signed as text, SPEC 6)."""

HEX_ID16_PATTERN = r"^[0-9a-f]{32}$"
"""16 bytes as 32 lower-case hex digits, no prefix."""

HexId16 = Annotated[str, StringConstraints(pattern=HEX_ID16_PATTERN)]
"""16 bytes as 32 lower-case hex digits, no prefix (challenge ids)."""

Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""32 bytes, lower-case hex, no prefix (chain objects)."""

SignatureHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]
"""A 64-byte `r || s` signature as 128 lower-case hex digits (SPEC 5)."""

PUBLIC_KEY_HEX_PATTERN = r"^0[23][0-9a-f]{64}$"
"""A compressed secp256k1 public key: 66 lower-case hex digits starting `02` or `03`."""

PublicKeyHex = Annotated[str, StringConstraints(pattern=PUBLIC_KEY_HEX_PATTERN)]
"""A 33-byte compressed secp256k1 public key as 66 lower-case hex digits (SPEC 5)."""

TaskId = HexId16
"""A challenge id used as a task id (SPEC 6)."""

ChainId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")]
"""A chain id: 1-32 characters of `a-z`, `0-9` and `-` (it appears in domain tags)."""

GenesisPrefix = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
"""The first 16 hex digits of a genesis block hash: with the chain id, the chain a domain
tag names (SPEC 5 v1.1, `crypto.signatures.ChainDomain`)."""

Amount = Annotated[int, Field(ge=0, lt=MAX_AMOUNT)]
"""An amount of base units in [0, 2**96)."""

U64 = Annotated[int, Field(ge=0, lt=MAX_U64)]
"""An unsigned 64-bit integer."""

AddressStr = Annotated[str, AfterValidator(_address)]
"""A canonical `cpc1...` address (SPEC 5)."""



def validate_n(n: object) -> int:
    """Return `n` if it is a legal matrix size (SPEC 1: a multiple of 64 in 64..4096).

    The one place of the n-range rule: `MatrixSize` (records), the engine and the CLI use it.
    Raises `EngineError` otherwise (including for bools and non-integers).
    """
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise EngineError(f"n must be an integer, got {type(n).__name__}")
    n = int(n)  # type: ignore[call-overload]
    if n < MIN_N or n > MAX_N or n % N_STEP:
        raise EngineError(f"n must be a multiple of {N_STEP} in [{MIN_N}, {MAX_N}], got {n}")
    return n


MatrixSize = Annotated[int, Field(ge=MIN_N, le=MAX_N, multiple_of=N_STEP)]
"""A matrix size n of SPEC 1 in a record (same rule as `validate_n`)."""


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


# ------------------------------------------------------------------------ byte fields


def hex_bytes(size: int | None, prefix: str, what: str, *, first: str = "") -> Any:
    """A pydantic type holding `bytes`, read from and written as lower-case hex.

    `size` fixes the length (None: any non-empty length); `prefix` is `"0x"` (proof files,
    SPEC 4) or `""` (chain objects, SPEC 6); `first` restricts the first hex digits (e.g.
    `"0[23]"` for compressed public keys). Python callers may also pass `bytes` directly.
    The JSON form is always `prefix + data.hex()`.
    """
    digits = rf"(?:[0-9a-f]{{2}}){{{size}}}" if size is not None else HEX_BYTES_PATTERN[1:-1]
    if first:
        digits = rf"(?={first}){digits}"
    pattern = rf"^{re.escape(prefix)}{digits}$"
    compiled = re.compile(pattern)
    spelled = f"{size}-byte {what}" if size is not None else what

    def parse(value: object) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            if compiled.match(prefix + data.hex()) is None:
                raise ValueError(f"must be a {spelled}")
            return data
        if isinstance(value, str) and compiled.match(value):
            return bytes.fromhex(value[len(prefix):])
        raise ValueError(f"must be a {spelled} as lower-case hex{' with 0x' if prefix else ''}")

    return Annotated[
        bytes,
        BeforeValidator(parse),
        PlainSerializer(lambda data: prefix + data.hex(), return_type=str, when_used="json"),
        WithJsonSchema({"type": "string", "pattern": pattern, "description": spelled}),
    ]


Hash32 = hex_bytes(32, "", "hash")
"""32 bytes (a SHA-256 digest or Merkle root); hex without prefix at the edge (chain)."""

PHash32 = hex_bytes(32, "0x", "hash")
"""32 bytes; `0x` hex at the edge (proof files, PoC HTTP bodies)."""

Signature = hex_bytes(64, "", "signature")
"""A 64-byte `r || s` signature (SPEC 5); hex without prefix at the edge."""

PSignature = hex_bytes(64, "0x", "signature")
"""A 64-byte `r || s` signature; `0x` hex at the edge."""

PublicKeyBytes = hex_bytes(33, "", "compressed public key", first="0[23]")
"""A 33-byte compressed secp256k1 public key (SPEC 5); hex without prefix at the edge."""

PPublicKeyBytes = hex_bytes(33, "0x", "compressed public key", first="0[23]")
"""A 33-byte compressed public key; `0x` hex at the edge."""

PBytes = hex_bytes(None, "0x", "non-empty byte string")
"""Non-empty bytes of any length; `0x` hex at the edge."""

HexBytes = hex_bytes(None, "", "non-empty byte string")
"""Non-empty bytes of any length; hex without prefix at the edge."""

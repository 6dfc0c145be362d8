"""secp256k1 private and public keys (SPEC 5).

Keys are created and checked with the `ecdsa` package; public keys travel in the 33-byte
compressed form. `PublicKey` instances are always valid curve points, so code holding one
never re-checks it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import cached_property, lru_cache

from ecdsa import SECP256k1, SigningKey, VerifyingKey
from ecdsa.errors import MalformedPointError

from hashcloud.crypto.address import address_from_public_key
from hashcloud.errors import InvalidKey
from hashcloud.types import PUBLIC_KEY_HEX_PATTERN, Address, matches

CURVE_ORDER = SECP256k1.order
"""n, the order of the secp256k1 group."""

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A validated 33-byte compressed secp256k1 public key."""

    data: bytes

    def __post_init__(self) -> None:
        _check_compressed_point(self.data)

    @classmethod
    def from_hex(cls, text: object) -> PublicKey:
        """Parse lower-case hex (66 digits, no prefix, `PublicKeyHex`), raising InvalidKey."""
        if not matches(PUBLIC_KEY_HEX_PATTERN, text):
            raise InvalidKey(
                "public key must be 66 lower-case hex digits (33 bytes, compressed: 02 or 03 first)"
            )
        return cls(bytes.fromhex(text))

    def hex(self) -> str:
        """Lower-case hex of the 33 compressed bytes."""
        return self.data.hex()

    @property
    def address(self) -> Address:
        """The `cpc1...` address of this key (SPEC 5)."""
        return address_from_public_key(self.data)


@lru_cache(maxsize=4096)
def _check_compressed_point(data: bytes) -> None:
    """Raise InvalidKey unless `data` is a compressed encoding of a curve point."""
    if not isinstance(data, bytes) or len(data) != 33 or data[0] not in (2, 3):
        raise InvalidKey("public key must be 33 bytes, compressed (0x02/0x03 prefix)")
    try:
        VerifyingKey.from_string(data, curve=SECP256k1, valid_encodings=("compressed",))
    except (MalformedPointError, ValueError, AssertionError) as exc:
        raise InvalidKey("public key is not a point on secp256k1") from exc


@dataclass(frozen=True)
class PrivateKey:
    """A secp256k1 private key: a scalar in [1, n-1]. Its repr never shows the secret."""

    secret: int

    def __post_init__(self) -> None:
        if not isinstance(self.secret, int) or not 1 <= self.secret < CURVE_ORDER:
            raise InvalidKey("private key must be an integer in [1, n-1]")

    def __repr__(self) -> str:
        return f"PrivateKey(address={self.public_key.address})"

    @classmethod
    def generate(cls) -> PrivateKey:
        """A fresh key from the OS CSPRNG."""
        return cls(secrets.randbelow(CURVE_ORDER - 1) + 1)

    @classmethod
    def from_hex(cls, text: object) -> PrivateKey:
        """Parse 64 hex digits (optional surrounding whitespace), raising InvalidKey."""
        if not isinstance(text, str) or not _HEX64.fullmatch(text.strip()):
            raise InvalidKey("private key must be exactly 64 hex digits")
        return cls(int(text.strip(), 16))

    def to_bytes(self) -> bytes:
        """32-byte big-endian secret."""
        return self.secret.to_bytes(32, "big")

    def hex(self) -> str:
        """64 lower-case hex digits of the secret."""
        return self.to_bytes().hex()

    @cached_property
    def signing_key(self) -> SigningKey:
        """The `ecdsa` signing key object (cached)."""
        return SigningKey.from_secret_exponent(self.secret, curve=SECP256k1)

    @cached_property
    def public_key(self) -> PublicKey:
        """The matching compressed public key."""
        return PublicKey(self.signing_key.get_verifying_key().to_string("compressed"))

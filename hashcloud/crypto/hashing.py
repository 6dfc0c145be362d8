"""Hash functions used across the protocol (SPEC 1, 2, 5).

RIPEMD-160 comes from pycryptodome, a vetted implementation that works where OpenSSL 3
no longer provides the algorithm through `hashlib` (SPEC 5 addresses). Digests are plain
`bytes`; the field type of a 32-byte hash in a record is `hashcloud.types.Hash32`.
"""

import hashlib

from Crypto.Hash import RIPEMD160

__all__ = ["hash160", "ripemd160", "sha256"]


def sha256(data: bytes) -> bytes:
    """Return SHA-256 of `data` (32 bytes)."""
    return hashlib.sha256(data).digest()


def ripemd160(data: bytes) -> bytes:
    """Return RIPEMD-160 of `data` (20 bytes), independent of OpenSSL's provider set."""
    return RIPEMD160.new(data).digest()


def hash160(data: bytes) -> bytes:
    """Return RIPEMD160(SHA256(data)), the address payload of SPEC 5."""
    return ripemd160(sha256(data))

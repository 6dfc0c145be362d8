"""ECDSA signatures over SHA-256 with RFC 6979 nonces, 64-byte r||s, low-S (SPEC 5).

This module alone signs and verifies, so a faster backend can be swapped in without
touching callers. Signing uses the `ecdsa` package (deterministic RFC 6979 nonces, then
low-S canonicalisation). Verification first applies the strict SPEC 5 rules (length 64,
0 < r, s < n, s <= n/2), then checks the curve equation with libsecp256k1 (`coincurve`)
when it is installed, else with `ecdsa`; tests cross-check the two verifiers.

Every protocol message is domain-tagged by its record module (see `domain_tag`), so a
signature can never be replayed as another kind of message or on another chain: since
SPEC 5 v1.1 the tag names the chain by a `ChainDomain`, its chain id and the first 16 hex
digits of its genesis block hash, so two chains that share a chain id still differ.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from ecdsa import BadSignatureError, SECP256k1, VerifyingKey
from ecdsa.util import sigencode_string_canonize

from hashcloud.crypto.keys import CURVE_ORDER, PrivateKey, PublicKey
from hashcloud.errors import InvalidSignature

try:  # libsecp256k1 fast path
    import coincurve as _coincurve
    from coincurve.ecdsa import cdata_to_der as _cdata_to_der
    from coincurve.ecdsa import deserialize_compact as _deserialize_compact
except ImportError:  # pragma: no cover - coincurve is a declared dependency
    _coincurve = None

SIGNATURE_SIZE = 64
_HALF_ORDER = CURVE_ORDER // 2


GENESIS_PREFIX_HEX = 16
"""Hex digits of the genesis block hash that name a chain in every domain tag (SPEC 5)."""

_CHAIN_ID = re.compile(r"[a-z0-9-]{1,32}")  # types.ChainId
_GENESIS_PREFIX = re.compile(f"[0-9a-f]{{{GENESIS_PREFIX_HEX}}}")


@dataclass(frozen=True, slots=True)
class ChainDomain:
    """The chain a signature belongs to (SPEC 5 v1.1): its chain id and `genesis`, the first
    16 hex digits of its genesis block hash. Every chain-bound signature is made and checked
    under one; `chain.genesis.chain_domain` derives it from a genesis, and a node publishes
    its genesis block hash in `/v1/info` so clients derive the same."""

    chain_id: str
    genesis: str

    def __post_init__(self) -> None:
        """Refuse a malformed id or prefix (a tag must never be ambiguous)."""
        if not isinstance(self.chain_id, str) or not _CHAIN_ID.fullmatch(self.chain_id):
            raise ValueError(f"chain id {self.chain_id!r} is not 1-32 of [a-z0-9-]")
        if not isinstance(self.genesis, str) or not _GENESIS_PREFIX.fullmatch(self.genesis):
            raise ValueError(f"genesis prefix {self.genesis!r} is not {GENESIS_PREFIX_HEX} "
                             "lower-case hex digits")

    @classmethod
    def of(cls, chain_id: str, genesis_block_hash: str) -> ChainDomain:
        """The domain of the chain `chain_id` whose genesis block hash is
        `genesis_block_hash` (64 hex digits)."""
        if not isinstance(genesis_block_hash, str) or len(genesis_block_hash) != 64:
            raise ValueError("a genesis block hash is 64 hex digits")
        return cls(chain_id, genesis_block_hash[:GENESIS_PREFIX_HEX])

    def __str__(self) -> str:
        """`<chain_id>/<g>`, as the domain tag carries it."""
        return f"{self.chain_id}/{self.genesis}"


def domain_tag(kind: str, domain: ChainDomain) -> bytes:
    """The prefix `hc/<kind>/v1/<chain_id>/<g>` that starts every chain-bound signed
    message (SPEC 5 v1.1). The SPEC 4 commit message has its own fixed form and offline
    proofs sign nothing chain-bound, so every caller names a chain."""
    if not isinstance(domain, ChainDomain):
        raise TypeError("domain_tag needs a ChainDomain (chain id + genesis), not "
                        f"{type(domain).__name__}")
    return f"hc/{kind}/v1/{domain}".encode("ascii")


def sign(private_key: PrivateKey, message: bytes) -> bytes:
    """Sign SHA256(message): RFC 6979 nonce, low-S, 64 bytes r||s.

    libsecp256k1 when available (about 20x faster), else `ecdsa`; both implement RFC 6979
    with low-S output, so they produce identical bytes (cross-checked in the tests)."""
    if _coincurve is not None:
        return sign_libsecp256k1(private_key, message)
    return sign_ecdsa(private_key, message)  # pragma: no cover


def sign_ecdsa(private_key: PrivateKey, message: bytes) -> bytes:
    """Reference signer with the pure-Python `ecdsa` package."""
    digest = hashlib.sha256(message).digest()
    return private_key.signing_key.sign_digest_deterministic(
        digest, hashfunc=hashlib.sha256, sigencode=sigencode_string_canonize
    )


def sign_libsecp256k1(private_key: PrivateKey, message: bytes) -> bytes:
    """Signer with libsecp256k1 (`coincurve`): RFC 6979 nonces, normalised to low-S."""
    digest = hashlib.sha256(message).digest()
    key = _coincurve.PrivateKey(private_key.to_bytes())
    return key.sign_recoverable(digest, hasher=None)[:64]


def check_signature_encoding(signature: object) -> tuple[int, int]:
    """Return (r, s) if `signature` is a canonical 64-byte low-S signature, else raise."""
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise InvalidSignature("signature must be exactly 64 bytes (r || s)")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < CURVE_ORDER and 0 < s < CURVE_ORDER):
        raise InvalidSignature("signature r or s is out of range")
    if s > _HALF_ORDER:
        raise InvalidSignature("signature is not low-S")
    return r, s


def verify(public_key: PublicKey, message: bytes, signature: bytes) -> None:
    """Raise InvalidSignature unless `signature` is valid for `message` under `public_key`."""
    check_signature_encoding(signature)
    if not _verify_cached(public_key, hashlib.sha256(message).digest(), signature):
        raise InvalidSignature("signature does not verify")


def clear_verification_cache() -> None:
    """Forget every memoised curve check of `verify`.

    `verify` remembers the answer for each (key, digest, signature) it has checked, since a
    pooled transaction is checked on entry, at block building and at block import. Results
    never go stale, so protocol code never needs this: benchmarks and tests call it to time
    or exercise verification from scratch.
    """
    _verify_cached.cache_clear()


@lru_cache(maxsize=1 << 16)
def _verify_cached(public_key: PublicKey, digest: bytes, signature: bytes) -> bool:
    """Curve check of (key, digest, signature), memoised: a pooled transaction is checked on
    entry, at block building and at block import, and the answer cannot change."""
    if _coincurve is not None:
        der = _cdata_to_der(_deserialize_compact(signature))
        return _coincurve.PublicKey(public_key.data).verify(der, digest, hasher=None)
    vk = VerifyingKey.from_string(public_key.data, curve=SECP256k1)  # pragma: no cover
    try:  # pragma: no cover
        return vk.verify_digest(signature, digest)
    except BadSignatureError:  # pragma: no cover
        return False


def verify_libsecp256k1(public_key: PublicKey, message: bytes, signature: bytes) -> bool:
    """Curve check with libsecp256k1 (encoding must already be checked)."""
    digest = hashlib.sha256(message).digest()
    der = _cdata_to_der(_deserialize_compact(signature))
    return _coincurve.PublicKey(public_key.data).verify(der, digest, hasher=None)


def verify_ecdsa(public_key: PublicKey, message: bytes, signature: bytes) -> bool:
    """Curve check with the pure-Python `ecdsa` package (encoding must already be checked)."""
    vk = VerifyingKey.from_string(public_key.data, curve=SECP256k1)
    try:
        return vk.verify_digest(signature, hashlib.sha256(message).digest())
    except BadSignatureError:
        return False

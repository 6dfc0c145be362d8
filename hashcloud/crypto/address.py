"""Deriving `cpc1...` addresses from public keys (SPEC 5, BIP-173 bech32 as ComputeChain).

Address = bech32_encode("cpc", convertbits(RIPEMD160(SHA256(pubkey33)), 8, 5)). The address
form itself (strict parsing, canonical lower case) is a protocol type and lives in
`hashcloud.types` (import `HRP`, `Address`, `decode_address`, `validate_address` from
there); this module adds the hash that needs the crypto layer.
"""

from hashcloud.crypto.hashing import hash160
from hashcloud.types import Address, address_from_payload

__all__ = ["address_from_public_key"]


def address_from_public_key(public_key33: bytes) -> Address:
    """Derive the address of a 33-byte compressed public key (SPEC 5)."""
    return address_from_payload(hash160(public_key33))

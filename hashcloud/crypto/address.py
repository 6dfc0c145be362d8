"""Bech32 `cpc1...` addresses (SPEC 5, BIP-173 bech32 as ComputeChain derives them).

Address = bech32_encode("cpc", convertbits(RIPEMD160(SHA256(pubkey33)), 8, 5)).
Parsing is strict: a wrong hrp, a bad checksum, mixed or upper case and a payload that is not
20 bytes are all errors. Only the canonical lower-case form is accepted, so an address has a
single string form wherever it appears in signed records.
"""

from bech32 import bech32_decode, bech32_encode, convertbits

from hashcloud.crypto.hashing import hash160
from hashcloud.errors import InvalidAddress

HRP = "cpc"
"""Human-readable part of every HashCloud address."""

Address = str
"""Alias for a canonical, lower-case `cpc1...` address string."""


def address_from_payload(payload20: bytes) -> Address:
    """Encode a 20-byte hash160 payload as a `cpc1...` address."""
    if len(payload20) != 20:
        raise InvalidAddress("address payload must be 20 bytes")
    return bech32_encode(HRP, convertbits(payload20, 8, 5))


def address_from_public_key(public_key33: bytes) -> Address:
    """Derive the address of a 33-byte compressed public key (SPEC 5)."""
    return address_from_payload(hash160(public_key33))


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

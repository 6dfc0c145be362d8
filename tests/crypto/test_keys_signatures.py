"""SPEC 5: keys, addresses and signatures against the shared vectors and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashcloud.crypto import signatures as sig
from hashcloud.crypto.hashing import ripemd160
from hashcloud.crypto.keys import CURVE_ORDER, PrivateKey, PublicKey
from hashcloud.errors import InvalidAddress, InvalidKey, InvalidSignature
from hashcloud.types import address_from_payload, decode_address, validate_address

secrets_ = st.integers(min_value=1, max_value=CURVE_ORDER - 1)
messages = st.binary(max_size=200)


def test_key_vectors(vectors):
    ran = 0
    for v in vectors["keys"]:
        key = PrivateKey.from_hex(v["private_key"])
        assert key.public_key.hex() == v["public_key"]
        assert key.public_key.address == v["address"]
        s = sig.sign(key, v["message_ascii"].encode())
        assert s.hex() == v["signature_over_sha256_of_message"]
        sig.verify(key.public_key, v["message_ascii"].encode(), s)
        ran += 1
    assert ran >= 2


def test_ripemd160_known_answer():
    # RFC/ISO test vector: RIPEMD-160("abc").
    assert ripemd160(b"abc").hex() == "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"


@given(secrets_, messages)
def test_sign_verify_round_trip_and_backends_agree(secret, msg):
    key = PrivateKey(secret)
    s = sig.sign(key, msg)
    assert len(s) == 64
    assert int.from_bytes(s[32:], "big") <= CURVE_ORDER // 2
    sig.verify(key.public_key, msg, s)
    assert sig.verify_libsecp256k1(key.public_key, msg, s)
    assert sig.verify_ecdsa(key.public_key, msg, s)
    assert s == sig.sign(key, msg)  # RFC 6979: deterministic
    assert s == sig.sign_ecdsa(key, msg) == sig.sign_libsecp256k1(key, msg)


@given(secrets_, st.binary(min_size=1, max_size=64), st.data())
def test_any_bit_flip_fails(secret, msg, data):
    key = PrivateKey(secret)
    s = sig.sign(key, msg)
    bit = data.draw(st.integers(0, len(msg) * 8 - 1))
    flipped = bytearray(msg)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidSignature):
        sig.verify(key.public_key, bytes(flipped), s)
    sbit = data.draw(st.integers(0, 511))
    bad = bytearray(s)
    bad[sbit // 8] ^= 1 << (sbit % 8)
    with pytest.raises(InvalidSignature):
        sig.verify(key.public_key, msg, bytes(bad))
    assert not sig.verify_ecdsa(key.public_key, bytes(flipped), s)


@given(secrets_, messages)
def test_high_s_twin_is_rejected(secret, msg):
    key = PrivateKey(secret)
    s = sig.sign(key, msg)
    r, low = int.from_bytes(s[:32], "big"), int.from_bytes(s[32:], "big")
    twin = r.to_bytes(32, "big") + (CURVE_ORDER - low).to_bytes(32, "big")
    # The twin is mathematically valid ECDSA, so only the low-S rule refuses it.
    assert sig.verify_ecdsa(key.public_key, msg, twin)
    with pytest.raises(InvalidSignature, match="low-S"):
        sig.verify(key.public_key, msg, twin)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x01" * 63,
        b"\x01" * 65,
        bytes(32) + b"\x01" * 32,  # r = 0
        b"\x01" * 32 + bytes(32),  # s = 0
        CURVE_ORDER.to_bytes(32, "big") + b"\x01" * 32,  # r = n
        b"\x01" * 32 + CURVE_ORDER.to_bytes(32, "big"),  # s = n
        "not bytes",
    ],
)
def test_malformed_signatures_rejected(bad):
    key = PrivateKey(7)
    with pytest.raises(InvalidSignature):
        sig.verify(key.public_key, b"m", bad)


def test_wrong_key_fails():
    s = sig.sign(PrivateKey(5), b"m")
    with pytest.raises(InvalidSignature):
        sig.verify(PrivateKey(6).public_key, b"m", s)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(33),
        b"\x04" + bytes(32),
        b"\x02" + b"\xff" * 32,  # x >= p
        b"\x02" + (5).to_bytes(32, "big"),  # x = 5 is not on the curve
        bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")[:32],
    ],
)
def test_invalid_public_keys(data):
    with pytest.raises(InvalidKey):
        PublicKey(data)


def test_public_key_hex_parsing():
    pk = PrivateKey(1).public_key
    assert PublicKey.from_hex(pk.hex()) == pk
    for bad in (pk.hex().upper(), "0x" + pk.hex(), pk.hex()[:-2], 5):
        with pytest.raises(InvalidKey):
            PublicKey.from_hex(bad)


@pytest.mark.parametrize(
    "text", ["", "00", "0" * 64, "g" * 64, "f" * 64, "0" * 63 + "1" + "0", None]
)
def test_private_key_range_and_format(text):
    with pytest.raises(InvalidKey):
        PrivateKey.from_hex(text)


def test_private_key_repr_hides_secret():
    key = PrivateKey(0xC0FFEE)
    assert "c0ffee" not in repr(key).lower()


def test_address_strict_parsing(vectors):
    good = vectors["keys"][0]["address"]
    assert validate_address(good) == good
    assert len(decode_address(good)) == 20
    bad_checksum = good[:-1] + ("q" if good[-1] != "q" else "p")
    mixed = good[:4] + good[4].upper() + good[5:]
    cases = {
        "wrong hrp": address_from_payload(bytes(20)).replace("cpc1", "bc1"),
        "checksum": bad_checksum,
        "mixed": mixed,
        "upper": good.upper(),
        "empty": "",
        "not str": 42,
    }
    for case, addr in cases.items():
        with pytest.raises(InvalidAddress):
            decode_address(addr)
        assert case


def test_address_wrong_payload_length():
    from bech32 import bech32_encode, convertbits

    short = bech32_encode("cpc", convertbits(bytes(19), 8, 5))
    with pytest.raises(InvalidAddress, match="20 bytes"):
        decode_address(short)
    other_hrp = bech32_encode("abc", convertbits(bytes(20), 8, 5))
    with pytest.raises(InvalidAddress):
        decode_address(other_hrp)


@given(st.binary(min_size=20, max_size=20))
def test_address_round_trip(payload):
    assert decode_address(address_from_payload(payload)) == payload


def test_domain_tags_separate_kinds_chains_and_geneses():
    """SPEC 5 v1.1: `hc/<kind>/v1/<chain_id>/<g>`; kind, chain id and genesis all count."""
    main = sig.ChainDomain("main", "0123456789abcdef")
    assert sig.domain_tag("tx", main) == b"hc/tx/v1/main/0123456789abcdef"
    tags = {sig.domain_tag(kind, domain)
            for kind in ("tx", "block")
            for domain in (main, sig.ChainDomain("test", main.genesis),
                           sig.ChainDomain("main", "fedcba9876543210"))}
    assert len(tags) == 6


def test_domain_tag_needs_a_chain_domain():
    # A bare chain id would silently produce the pre-v1.1 (replayable) tag.
    with pytest.raises(TypeError, match="ChainDomain"):
        sig.domain_tag("tx", "main")


def test_chain_domain_of_genesis_block_hash():
    domain = sig.ChainDomain.of("hashcloud-local", "ab" * 32)
    assert domain == sig.ChainDomain("hashcloud-local", "ab" * 8)
    assert str(domain) == "hashcloud-local/" + "ab" * 8


@pytest.mark.parametrize("chain_id,genesis", [
    ("main", "0123"), ("main", "0123456789ABCDEF"), ("main", "0123456789abcdef0"),
    ("", "0123456789abcdef"), ("a/b", "0123456789abcdef"), ("Main", "0123456789abcdef"),
    ("x" * 33, "0123456789abcdef"), (1, "0123456789abcdef"), ("main", None),
])
def test_chain_domain_refuses_ambiguous_parts(chain_id, genesis):
    with pytest.raises(ValueError):
        sig.ChainDomain(chain_id, genesis)


def test_clear_verification_cache_forgets_and_verify_still_works():
    key = PrivateKey(0x5EED)
    signature = sig.sign(key, b"bench")
    sig.verify(key.public_key, b"bench", signature)
    assert sig._verify_cached.cache_info().currsize > 0
    sig.clear_verification_cache()
    assert sig._verify_cached.cache_info().currsize == 0
    sig.verify(key.public_key, b"bench", signature)  # checked again from scratch
    with pytest.raises(InvalidSignature):
        sig.verify(key.public_key, b"other", signature)

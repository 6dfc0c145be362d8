"""The protocol's field types (`hashcloud.types`): byte fields with one hex spelling per edge,
the address form and the one n-range rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from hashcloud.errors import EngineError, InvalidAddress
from hashcloud.params import MAX_N, MIN_N
from hashcloud.types import (
    Hash32,
    MatrixSize,
    PBytes,
    PHash32,
    PPublicKeyBytes,
    address_from_payload,
    decode_address,
    validate_n,
)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    root: PHash32
    chain_hash: Hash32
    key: PPublicKeyBytes
    blob: PBytes


def _json(root: bytes, chain_hash: bytes, key: bytes, blob: bytes) -> str:
    return (f'{{"root":"0x{root.hex()}","chain_hash":"{chain_hash.hex()}",'
            f'"key":"0x{key.hex()}","blob":"0x{blob.hex()}"}}')


@given(
    root=st.binary(min_size=32, max_size=32),
    chain_hash=st.binary(min_size=32, max_size=32),
    key_tail=st.binary(min_size=32, max_size=32),
    parity=st.sampled_from([b"\x02", b"\x03"]),
    blob=st.binary(min_size=1, max_size=64),
)
def test_bytes_inside_hex_at_the_edge(root, chain_hash, key_tail, parity, blob):
    key = parity + key_tail
    text = _json(root, chain_hash, key, blob)
    rec = _Record.model_validate_json(text)
    assert (rec.root, rec.chain_hash, rec.key, rec.blob) == (root, chain_hash, key, blob)
    assert rec.model_dump_json() == text  # one spelling: writing gives back the input
    assert _Record(root=root, chain_hash=chain_hash, key=key, blob=blob) == rec


@pytest.mark.parametrize(
    "field,value",
    [
        ("root", "ab" * 32),  # a proof-file hash needs its 0x
        ("root", "0x" + "AB" * 32),  # upper case is another spelling
        ("root", "0x" + "ab" * 31),  # 31 bytes
        ("root", b"\x00" * 33),
        ("chain_hash", "0x" + "ab" * 32),  # a chain hash has no 0x
        ("key", "0x04" + "ab" * 32),  # not a compressed key
        ("blob", "0x"),  # empty
        ("blob", "0xabc"),  # odd length
        ("root", 123),
    ],
)
def test_other_spellings_are_refused(field, value):
    good = dict(root=b"\x01" * 32, chain_hash=b"\x02" * 32, key=b"\x02" + b"\x03" * 32,
                blob=b"\x04")
    with pytest.raises(ValidationError, match=field):
        _Record(**{**good, field: value})


def test_json_schema_states_the_edge_form():
    props = _Record.model_json_schema()["properties"]
    assert props["root"]["type"] == "string" and props["root"]["pattern"].startswith("^0x")
    assert not props["chain_hash"]["pattern"].startswith("^0x")


@given(st.binary(min_size=20, max_size=20))
def test_address_round_trip(payload):
    assert decode_address(address_from_payload(payload)) == payload


def test_address_forms_refused():
    addr = address_from_payload(b"\x05" * 20)
    for bad in (addr.upper(), addr[:-1] + ("q" if addr[-1] != "q" else "p"), "bc1" + addr[4:],
                None):
        with pytest.raises(InvalidAddress):
            decode_address(bad)
    with pytest.raises(InvalidAddress):
        address_from_payload(b"\x05" * 19)


class _Sized(BaseModel):
    model_config = ConfigDict(strict=True)

    n: MatrixSize


@pytest.mark.parametrize("n", [MIN_N - 64, 0, 65, 100, MAX_N + 64, True, 1024.0, "1024"])
def test_n_range_rule_is_the_same_in_records_and_code(n):
    with pytest.raises(EngineError):
        validate_n(n)
    with pytest.raises(ValidationError):
        _Sized(n=n)


@given(st.integers(MIN_N // 64, MAX_N // 64))
def test_every_multiple_of_64_in_range_is_legal(k):
    assert validate_n(64 * k) == 64 * k == _Sized(n=64 * k).n


# ------------------------------------------------------------- one rule per string form


def _pydantic_accepts(alias: object, value: object) -> bool:
    from pydantic import TypeAdapter

    try:
        TypeAdapter(alias).validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


_FORM_SAMPLES = ["", "0", "a", "ab", "0a1b", "AB", "0x00", "00\n", " 00", "g0", "\u0660",
                 "0" * 32, "f" * 32, "F" * 32, "0" * 31, "0" * 33,
                 "02" + "a" * 64, "03" + "0" * 64, "04" + "0" * 64, "02" + "A" * 64,
                 "02" + "0" * 63, "02" + "0" * 64 + "\n", 5, None, b"00"]


@pytest.mark.parametrize("value", _FORM_SAMPLES)
def test_plain_checks_accept_exactly_what_the_aliases_accept(value: object) -> None:
    from hashcloud.types import (
        HEX_BYTES_PATTERN,
        HEX_ID16_PATTERN,
        PUBLIC_KEY_HEX_PATTERN,
        HexBytesStr,
        HexId16,
        PublicKeyHex,
        Seed,
        is_seed,
        matches,
    )

    assert is_seed(value) == _pydantic_accepts(Seed, value)
    assert matches(HEX_ID16_PATTERN, value) == _pydantic_accepts(HexId16, value)
    assert matches(PUBLIC_KEY_HEX_PATTERN, value) == _pydantic_accepts(PublicKeyHex, value)
    assert matches(HEX_BYTES_PATTERN, value) == _pydantic_accepts(HexBytesStr, value)


def test_seed_rule() -> None:
    from hashcloud.types import is_seed, validate_seed

    for good in ("0", "abc", "00ff" * 8, "1" * 101):
        assert is_seed(good) and validate_seed(good) == good
    for bad in ("", "0x00", "ABC", "ab c", "ab\n", "\u0661", 12, None, b"ab"):
        assert not is_seed(bad)
        with pytest.raises(EngineError, match="seed must be a non-empty lower-case hex string"):
            validate_seed(bad)

"""Canonical msgpack (SPEC 6 encodings): strict decoding, one form per value."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashcloud.codec import (
    decode_amount,
    decode_canonical,
    encode_amount,
    encode_canonical,
)
from hashcloud.errors import DecodeError
from hashcloud.types import MAX_AMOUNT

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@given(values)
def test_round_trip(obj):
    data = encode_canonical(obj)
    assert decode_canonical(data) == obj
    assert encode_canonical(decode_canonical(data)) == data


@given(values, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_rejected(obj, extra):
    with pytest.raises(DecodeError, match="trailing"):
        decode_canonical(encode_canonical(obj) + extra)


@pytest.mark.parametrize(
    "data",
    [
        b"\xcc\x05",  # uint8 form of 5 (fixint is shortest)
        b"\xcd\x00\x05",  # uint16 form of 5
        b"\xd9\x01a",  # str8 form of "a" (fixstr is shortest)
        b"\xdc\x00\x01\x01",  # array16 with one element
        b"\xa2a",  # truncated string
    ],
)
def test_non_canonical_or_truncated_rejected(data):
    with pytest.raises(DecodeError):
        decode_canonical(data)


@pytest.mark.parametrize(
    "obj", [1.5, [1, 2.0], msgpack.ExtType(1, b"x")], ids=["float", "nested-float", "ext"]
)
def test_floats_and_extensions_rejected(obj):
    with pytest.raises(DecodeError):
        decode_canonical(msgpack.packb(obj, use_bin_type=True))


def test_raw_str_as_bin_is_distinct_and_invalid_utf8_rejected():
    assert decode_canonical(encode_canonical(b"ab")) == b"ab"
    with pytest.raises(DecodeError):
        decode_canonical(b"\xa2\xff\xfe")  # fixstr with invalid UTF-8


def test_non_string_map_keys_rejected():
    with pytest.raises(DecodeError):
        decode_canonical(msgpack.packb({1: 2}))


def test_not_bytes_rejected():
    with pytest.raises(DecodeError):
        decode_canonical("abc")  # type: ignore[arg-type]


@given(st.integers(0, MAX_AMOUNT - 1))
def test_amount_round_trip(value):
    raw = encode_amount(value)
    assert len(raw) == 12 and decode_amount(raw) == value


@pytest.mark.parametrize("bad", [-1, MAX_AMOUNT, True])
def test_amount_range(bad):
    with pytest.raises(ValueError):
        encode_amount(bad)


@pytest.mark.parametrize("raw", [b"\x00" * 11, b"\x00" * 13, 5, "x" * 12])
def test_amount_wrong_width_rejected(raw):
    with pytest.raises(DecodeError):
        decode_amount(raw)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, [2**70], {1, 2}])
def test_values_the_encoding_cannot_carry_are_decode_errors(value):
    """Untrusted numbers beyond msgpack's range (or foreign types) are a DecodeError naming
    the problem, never a bare OverflowError/TypeError that would become a 500."""
    from hashcloud.errors import DecodeError

    with pytest.raises(DecodeError, match="cannot be encoded"):
        encode_canonical(value)

"""SPEC 6 v1.1 units: exact HC <-> base-unit conversion both ways, clear errors for bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashcloud.errors import InputError, InvalidAmount
from hashcloud.types import MAX_AMOUNT
from hashcloud.units import BASE_UNITS_PER_HC, format_hc, parse_amount


@given(st.integers(min_value=0, max_value=MAX_AMOUNT - 1))
def test_parse_of_format_is_identity(x):
    assert parse_amount(format_hc(x)) == x
    assert parse_amount(format_hc(x, symbol=False)) == x
    assert parse_amount(f"{x}u") == x


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=10**9 - 1))
def test_typed_decimals_are_exact(whole, frac):
    text = f"{whole}.{frac:09d}"
    assert parse_amount(text) == whole * BASE_UNITS_PER_HC + frac


@pytest.mark.parametrize(("units", "text"), [
    (0, "0 HC"), (1, "0.000000001 HC"), (12_500_000_000, "12.5 HC"),
    (10**9, "1 HC"), (123_456_789_012, "123.456789012 HC"), (-5 * 10**8, "-0.5 HC"),
])
def test_format(units, text):
    assert format_hc(units) == text


@pytest.mark.parametrize(("text", "units"), [
    ("1.5", 1_500_000_000), ("1.5 HC", 1_500_000_000), ("1.5hc", 1_500_000_000),
    (".5", 500_000_000), ("2.", 2 * 10**9), ("123u", 123), ("0u", 0), (" 7 ", 7 * 10**9),
    ("0.100000000", 10**8), (str(MAX_AMOUNT - 1) + "u", MAX_AMOUNT - 1),
])
def test_parse(text, units):
    assert parse_amount(text) == units


@pytest.mark.parametrize(("text", "why"), [
    ("-1", "negative"), ("-5u", "negative"), ("1.0000000001", "more than 9 decimals"),
    ("", "not a number"), ("abc", "not a number"), ("1e9", "not a number"),
    ("1,5", "not a number"), ("1.5u", "not a number"), ("u", "not a number"),
    (".", "not a number"), ("nan", "not a number"), ("inf", "not a number"),
    ("\u0661\u0662", "not a plain decimal"), ("+1", "not a number"),
    (str(MAX_AMOUNT) + "u", "too large"), (str(MAX_AMOUNT // 10**9 + 1), "too large"),
    ("9" * 100, "too long"),
])
def test_bad_amounts_are_clear_input_errors(text, why):
    with pytest.raises(InvalidAmount, match=why) as info:
        parse_amount(text)
    assert isinstance(info.value, InputError)  # CLI exit 2


def test_format_refuses_non_integers():
    with pytest.raises(InvalidAmount):
        format_hc(1.5)  # type: ignore[arg-type]

"""Coin units (SPEC 6 v1.1): amounts are integers in base units, `1 HC = 10^9` base units.

The chain, the API and every `--json` output carry integer base units; only human output and
the amount a user types are in HC. Both directions are exact: `format_hc` writes the integer
as HC with at most 9 decimals (trailing zeros dropped: `12.5 HC`), and `parse_amount` reads
`1.5` (HC) or `123u` (base units) by string arithmetic, never through a float, so
`parse_amount(format_hc(x)) == x` for every amount.
"""

from __future__ import annotations

import re

from hashcloud.errors import InvalidAmount
from hashcloud.types import MAX_AMOUNT

DECIMALS = 9
"""Decimal places of one HC (SPEC 6 v1.1)."""

BASE_UNITS_PER_HC = 10**DECIMALS
"""Base units in one HC."""

SYMBOL = "HC"
"""The unit's symbol in human output."""

_HC_RE = re.compile(r"(\d+)(?:\.(\d*))?|\.(\d+)")
_UNITS_RE = re.compile(r"(\d+)u")


def format_hc(base_units: int, *, symbol: bool = True) -> str:
    """`base_units` as HC with up to 9 decimals, trailing zeros dropped (`12.5 HC`, `0 HC`,
    `0.000000001 HC`); thousands are not grouped, so the text parses back as it is."""
    if type(base_units) is not int:
        raise InvalidAmount(f"an amount is an integer of base units, got {base_units!r}")
    sign = "-" if base_units < 0 else ""  # a signed difference may be shown; amounts are >= 0
    whole, frac = divmod(abs(base_units), BASE_UNITS_PER_HC)
    text = f"{sign}{whole}"
    if frac:
        text += "." + f"{frac:0{DECIMALS}d}".rstrip("0")
    return f"{text} {SYMBOL}" if symbol else text


def parse_amount(text: str) -> int:
    """Base units of an amount typed by a user (SPEC 7 `send`): `1.5` or `1.5 HC` is HC,
    `123u` is base units. Raises InvalidAmount (a usage error) for anything else: a sign,
    an exponent, more than 9 decimals, an empty or non-decimal text, or a value of 2**96
    base units or more."""
    if not isinstance(text, str):
        raise InvalidAmount(f"amount must be text, got {text!r}")
    raw = text.strip()
    if not raw.isascii():  # `\d` also matches other scripts' digits
        raise InvalidAmount(f"amount {text!r} is not a plain decimal number")
    if raw.startswith("-"):
        raise InvalidAmount(f"amount {text!r} is negative")
    if len(raw) > 64:  # far beyond any amount below 2**96: refuse before any arithmetic
        raise InvalidAmount(f"amount {text[:20]!r}... is too long")
    units = _UNITS_RE.fullmatch(raw)
    if units is not None:
        value = int(units.group(1))
    else:
        number = raw[: -len(SYMBOL)].rstrip() if raw.upper().endswith(SYMBOL) else raw
        match = _HC_RE.fullmatch(number)
        if match is None:
            raise InvalidAmount(
                f"amount {text!r} is not a number of HC (e.g. 1.5) or of base units (e.g. 123u)")
        whole = match.group(1) or "0"
        frac = match.group(2) if match.group(1) is not None else match.group(3)
        frac = (frac or "").rstrip("0")
        if len(frac) > DECIMALS:
            raise InvalidAmount(
                f"amount {text!r} has more than {DECIMALS} decimals (1 base unit is "
                f"0.{'0' * (DECIMALS - 1)}1 HC)")
        value = int(whole) * BASE_UNITS_PER_HC + int(frac.ljust(DECIMALS, "0") or "0")
    if value >= MAX_AMOUNT:
        raise InvalidAmount(f"amount {text!r} is too large (at most {MAX_AMOUNT - 1} base units)")
    return value

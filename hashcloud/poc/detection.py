"""Detection probability of the probabilistic audit (SPEC 3, paper section 7).

If `X` of the `s` revealed samples are forged and the verifier recomputes `m` of them chosen
uniformly without replacement, it misses every forgery with probability `C(s-X, m) / C(s, m)`,
so `P_detect = 1 - C(s - X, m) / C(s, m)`. Computed exactly with integers, then rounded once
to a float.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from math import comb

from hashcloud.errors import ProofError

__all__ = ["detection_table", "min_audits_for", "p_detect", "p_detect_exact"]


def _require_int(value: object, what: str, minimum: int, maximum: int) -> int:
    """Return `value` if it is an int (not bool) in `[minimum, maximum]`, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{what} must be an integer")
    if not minimum <= value <= maximum:
        raise ProofError(f"{what} must be in [{minimum}, {maximum}], got {value}")
    return value


def _check_args(s: int, forged: int, m: int) -> None:
    """Require `s >= 1`, `0 <= forged <= s` and `0 <= m <= s`."""
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise ProofError("sample count s must be a positive integer")
    _require_int(forged, "forged count", 0, s)
    _require_int(m, "audit count m", 0, s)


def p_detect_exact(s: int, forged: int, m: int) -> Fraction:
    """`1 - C(s - forged, m) / C(s, m)` as an exact fraction (SPEC 3).

    `math.comb` returns 0 when `m > s - forged`: auditing more samples than there are honest
    ones always hits a forgery.
    """
    _check_args(s, forged, m)
    return 1 - Fraction(comb(s - forged, m), comb(s, m))


def p_detect(s: int, forged: int, m: int) -> float:
    """Probability that auditing `m` of `s` samples finds one of `forged` forgeries (SPEC 3).

    Raises ProofError unless `s >= 1`, `0 <= forged <= s` and `0 <= m <= s`.
    """
    return float(p_detect_exact(s, forged, m))


def detection_table(
    s: int, m: int, forged_values: Iterable[int] | None = None
) -> list[tuple[int, float]]:
    """`(forged, p_detect(s, forged, m))` rows for a CLI table (SPEC 3).

    By default the rows cover 1 forgery, then 1%, 5%, 10%, 25%, 50% and 100% of the samples
    (rounded up, deduplicated, in increasing order).
    """
    if forged_values is None:
        _check_args(s, 0, m)
        forged_values = sorted({1, *(-(-s * pct // 100) for pct in (1, 5, 10, 25, 50, 100))})
    return [(x, p_detect(s, x, m)) for x in forged_values]


def min_audits_for(s: int, forged: int, target: float) -> int:
    """Smallest `m` with `p_detect(s, forged, m) >= target` (SPEC 3).

    Compared exactly (`target` as a fraction). Raises ProofError when no `m <= s` reaches the
    target, which happens only for `forged == 0` and `target > 0`.
    """
    _check_args(s, forged, 0)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 <= target <= 1:
        raise ProofError("target probability must be a number in [0, 1]")
    goal = Fraction(target)
    # P_detect is non-decreasing in m, so the first m that reaches the goal is the smallest.
    for m in range(s + 1):
        if p_detect_exact(s, forged, m) >= goal:
            return m
    raise ProofError(f"no audit count reaches {target} with {forged} forged of {s}")

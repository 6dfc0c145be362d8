"""The emission schedule and the epoch arithmetic (SPEC 6 v1.1), as pure integer functions.

Block `h >= 1` belongs to epoch `floor((h - 1) / epoch_length)`; the genesis block has no
epoch and no subsidy. Block `h` adds `floor(subsidy0 / 2^floor(h / halving_interval))` base
units to its epoch's pool. The first block of each epoch pays the previous epoch's pool pro
rata to audited work, `floor(pool * W_a / sum(W))` per payout address, and the remainder (or
the whole pool when nobody worked) carries into the next epoch. A claim's work is
`W = loops * n^3`.

These functions take the genesis parameters as plain integers so that `state` (which pays
an epoch) and `genesis` (which holds the parameters) both build on this module.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "claim_work",
    "epoch_bounds",
    "epoch_of",
    "is_epoch_start",
    "scheduled_subsidy",
    "split_pool",
    "subsidy",
]


def epoch_of(height: int, epoch_length: int) -> int:
    """The epoch of block `height` (>= 1): `floor((height - 1) / epoch_length)`."""
    if height < 1:
        raise ValueError("the genesis block belongs to no epoch")
    return (height - 1) // epoch_length


def is_epoch_start(height: int, epoch_length: int) -> bool:
    """True for the first block of an epoch (it pays the previous epoch, if any)."""
    return height >= 1 and (height - 1) % epoch_length == 0


def epoch_bounds(epoch: int, epoch_length: int) -> tuple[int, int]:
    """`(first, last)` block heights of `epoch`, inclusive."""
    first = epoch * epoch_length + 1
    return first, first + epoch_length - 1


def subsidy(height: int, subsidy0: int, halving_interval: int) -> int:
    """Base units block `height` adds to its epoch's pool (0 for the genesis block)."""
    if height < 1:
        return 0
    return subsidy0 >> (height // halving_interval)  # floor(s0 / 2^k); 0 once k passes s0


def scheduled_subsidy(first: int, last: int, subsidy0: int, halving_interval: int) -> int:
    """Sum of `subsidy(h)` for `first <= h <= last`, in O(halvings) steps."""
    total, h = 0, max(first, 1)
    while h <= last:
        era = h // halving_interval
        era_end = min(last, (era + 1) * halving_interval - 1)
        amount = subsidy0 >> era
        if amount == 0:
            break
        total += amount * (era_end - h + 1)
        h = era_end + 1
    return total


def claim_work(loops: int, n: int) -> int:
    """Audited work of one claim, `W = loops * n^3` (SPEC 6 v1.1)."""
    return loops * n**3


def split_pool(pool: int, works: Mapping[str, int]) -> tuple[dict[str, int], int]:
    """Pay `pool` pro rata to `works`: `({address: floor(pool * W_a / sum(W))}, remainder)`.

    Integer arithmetic only; the remainder (`pool` itself when there is no work) carries.
    """
    total = sum(works.values())
    if total == 0:
        return {}, pool
    payouts = {address: pool * work // total for address, work in works.items()}
    return payouts, pool - sum(payouts.values())

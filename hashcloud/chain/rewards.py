"""Read views of the emission schedule (SPEC 6 v1.1, SPEC 7 `epoch`, `balance`).

What the node's API and the CLI show about epochs: a closed epoch's pool, total work and
payouts per address (from its `epoch` record in the state), the open epoch's pending work
with estimated payouts, and the expected payout of work not yet on chain. Estimates assume
no more work joins the open epoch: they project its pool to the end of the epoch
(`projected_pool`) and split it pro rata, exactly as `close_epoch` will, so they fall as other
miners' work arrives. Views are JSON-ready dicts of integers (base units, work units).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable

from hashcloud.chain.epoch import epoch_bounds, is_epoch_start, scheduled_subsidy, split_pool
from hashcloud.chain.genesis import Genesis
from hashcloud.chain.state import EpochRecord, State, get_epoch_record, get_worker, pending_work
from hashcloud.errors import NotFound
from hashcloud.params import DEFAULT_EPOCH_ROWS, MAX_EPOCH_ROWS

__all__ = ["account_rewards", "epoch_view", "expected_payout", "projected_pool"]


def projected_pool(genesis: Genesis, state: State, height: int) -> int:
    """The open epoch's pool at its close, after block `height` (the state's height), if no
    block but the scheduled ones adds to it: the pool so far plus the subsidies still due."""
    _, last = epoch_bounds(state.totals.epoch, genesis.epoch_length)
    return state.totals.pool + scheduled_subsidy(height + 1, last, genesis.subsidy0,
                                                 genesis.halving_interval)


def expected_payout(genesis: Genesis, state: State, height: int, work: int,
                    joins: bool = True) -> int:
    """Estimated gross payout of `work` in the open epoch: `floor(projected pool * work /
    total)`, the total including `work` itself when it `joins` (is not yet on chain).

    Work that joins after the open epoch's last block lands in the first block of the next
    epoch (SPEC 6 v1.1: that block and its claims belong to the new epoch), so it is
    estimated against the next pool: what the close carries over plus the next epoch's
    subsidies, with `work` its only work so far."""
    if joins and height >= 1 and is_epoch_start(height + 1, genesis.epoch_length):
        _, carried = split_pool(state.totals.pool, {  # what the close will carry over
            address: entry.work for address, entry in state.epoch_work.items()})
        _, last = epoch_bounds(state.totals.epoch + 1, genesis.epoch_length)
        return 0 if work == 0 else carried + scheduled_subsidy(
            height + 1, last, genesis.subsidy0, genesis.halving_interval)
    total = state.totals.epoch_work + (work if joins else 0)
    return 0 if total == 0 else projected_pool(genesis, state, height) * work // total


def account_rewards(genesis: Genesis, state: State, height: int, address: str) -> dict:
    """`{"epoch", "pending_work", "pending_fees", "estimated_payout", "lifetime_work",
    "accepted_claims"}` of an address: as a payout address, its work in the open epoch, the
    claim fees deferred to that payout and the estimated net payout at the close; as a
    worker, its record (`balance`, SPEC 7; SPEC 6 v1.1 per-worker record)."""
    entry = pending_work(state, address)
    worker = get_worker(state, address)
    gross = expected_payout(genesis, state, height, entry.work, joins=False)
    return {"epoch": state.totals.epoch, "pending_work": entry.work,
            "pending_fees": entry.fees, "estimated_payout": gross - min(gross, entry.fees),
            "lifetime_work": worker.work, "accepted_claims": worker.claims}


def epoch_view(genesis: Genesis, state: State, height: int, epoch: int | None = None, *,
               after: str | None = None, limit: int = DEFAULT_EPOCH_ROWS,
               record_of: Callable[[State, int], EpochRecord | None] = get_epoch_record,
               ) -> dict:
    """The `hashcloud epoch [N]` view (default: the open epoch) of the chain whose state after
    block `height` is `state`; NotFound for an epoch that has not started.

    Closed: `{"epoch", "status": "closed", "first_height", "last_height", "pool", "total_work",
    "carried", "payouts": [{"address", "work", "amount", "fees", "net"}...]}`. Open: the same
    with `"status": "open"`, `pool` so far, `projected_pool`, `carried_in` and `pending:
    [{"address", "work", "fees", "estimated_payout"}...]`. Rows are in address order, one
    page of at most `limit` rows whose address sorts after `after` (None: from the first):
    `count` is the epoch's number of rows and `next_after` the cursor of the next page (None
    after the last), as `history` pages with `before`. A cursor, not an offset: an address
    joining the open epoch between two reads cannot shift or repeat rows. `record_of` reads
    a closed epoch's record (a node passes a cached reader: closed records never change)."""
    if not 1 <= limit <= MAX_EPOCH_ROWS:
        raise ValueError(f"epoch view page out of range: limit {limit}")
    current = state.totals.epoch
    epoch = current if epoch is None else epoch
    first, last = epoch_bounds(epoch, genesis.epoch_length)
    base = {"epoch": epoch, "first_height": first, "last_height": last}
    if epoch > current or epoch < 0:
        raise NotFound(f"epoch {epoch} has not started (the open epoch is {current})")
    if epoch < current:
        record = record_of(state, epoch)
        if record is None:  # pragma: no cover - every close writes its record
            raise NotFound(f"no record of epoch {epoch}")
        first = 0 if after is None else bisect_right(record.payouts, after,
                                                     key=lambda p: p.address)
        page = record.payouts[first:first + limit]
        return {**base, "status": "closed", "pool": record.pool, "total_work": record.work,
                "carried": record.carried,
                **_page(len(record.payouts), first, limit, page[-1].address if page else None),
                "payouts": [{"address": p.address, "work": p.work, "amount": p.amount,
                             "fees": p.fees, "net": p.amount - p.fees} for p in page]}
    projected = projected_pool(genesis, state, height)
    total = state.totals.epoch_work
    pending = []
    addresses = sorted(state.epoch_work)
    first = 0 if after is None else bisect_right(addresses, after)
    for address in addresses[first:first + limit]:
        entry = state.epoch_work[address]
        gross = projected * entry.work // total if total else 0
        pending.append({"address": address, "work": entry.work, "fees": entry.fees,
                        "estimated_payout": gross - min(gross, entry.fees)})
    return {**base, "status": "open", "pool": state.totals.pool, "projected_pool": projected,
            "carried_in": state.totals.carried, "total_work": total,
            **_page(len(addresses), first, limit, pending[-1]["address"] if pending else None),
            "pending": pending}


def _page(count: int, first: int, limit: int, last: str | None) -> dict:
    """The paging fields of a page of the rows `first..first+limit` of `count`, whose last
    address is `last`: `count` and `next_after` (None after the last page)."""
    return {"count": count, "next_after": last if first + limit < count else None}

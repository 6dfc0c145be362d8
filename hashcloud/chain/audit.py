"""Offline chain audit (`hashcloud audit --chain`, SPEC 6): re-verify a whole store.

`audit_chain` opens a store read-only and checks, reporting the first problem as
`ChainAuditFailed`: the store's checksums and genesis binding, that block 0 is this genesis's
block (`ledger.check_genesis_block`, the check `Ledger.open` makes), every later block
through `ledger.replay` (the very loop the ledger opens with: hash, link, signature, roots
and transition by `apply_block`), the supply counters at every height (`ledger.check_supply`
and `emitted` equal to the schedule's subsidies so far), and that the state snapshot, if any,
equals the replayed state at its height. At every epoch boundary (genesis and the first block
of each epoch, which pays the previous one) it sums the balances themselves and checks
SPEC 6 v1.1's invariant: total supply == genesis allocations + scheduled subsidies of the
closed epochs - the pool carried out of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hashcloud.chain.block import BlockHeader, block_hash
from hashcloud.chain.epoch import epoch_of, is_epoch_start, scheduled_subsidy, subsidy
from hashcloud.chain.genesis import Genesis, genesis_hash, genesis_state
from hashcloud.chain.ledger import check_genesis_block, check_supply, replay
from hashcloud.chain.state import State, balances_total, encode_state, state_root
from hashcloud.chain.store import ChainStore
from hashcloud.errors import ChainAuditFailed, InvalidBlock, StoreError

__all__ = ["AuditReport", "audit_chain"]


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What a successful `audit_chain` verified (shown by `hashcloud audit --chain`)."""

    height: int
    blocks: int
    transactions: int
    head_hash: str
    state_root: str
    total_supply: int
    minted: int
    """Coins paid out of epoch pools so far (`total_supply - genesis allocations`)."""
    snapshot_height: int | None
    emitted: int = 0
    """Scheduled subsidies of every block so far (paid out, carried or in the open pool)."""
    pool: int = 0
    """The open epoch's pool (carried remainder + its subsidies so far)."""
    epochs_closed: int = 0
    """Epoch closes at which the supply invariant was checked against the balances."""


def _open_store(data_dir: Path | str, genesis: Genesis) -> ChainStore:
    """Open the store read-only and check its binding and every record's checksum."""
    expected_binding = bytes.fromhex(genesis_hash(genesis))
    try:
        store = ChainStore(data_dir, readonly=True, genesis_hash=expected_binding)
    except StoreError as exc:
        raise ChainAuditFailed(f"cannot open chain store: {exc}") from None
    try:
        if store.genesis_hash != expected_binding:
            raise ChainAuditFailed("chain store is not bound to this genesis")
        try:
            store.verify_log()
        except StoreError as exc:
            raise ChainAuditFailed(str(exc)) from None
        if store.height < 0:
            raise ChainAuditFailed("chain store holds no blocks")
    except BaseException:
        store.close()
        raise
    return store


def audit_chain(data_dir: Path | str, genesis: Genesis) -> AuditReport:
    """Re-verify a whole chain store from genesis; raise ChainAuditFailed at the first problem.

    Opens the store read-only (a running node may keep writing; blocks it appends during the
    audit are audited too).
    """
    with _open_store(data_dir, genesis) as store:
        snapshot = store.read_snapshot()
        initial_supply = genesis.initial_supply

        scheduled = 0  # subsidies of blocks 1..height, from the schedule itself
        boundaries = 0

        def check(height: int, state: State) -> None:
            """The per-height checks replay itself does not make."""
            nonlocal scheduled, boundaries
            scheduled += subsidy(height, genesis.subsidy0, genesis.halving_interval)
            problem = check_supply(state, initial_supply)
            if problem is None and state.totals.emitted != scheduled:
                problem = (f"emitted {state.totals.emitted} is not the schedule's "
                           f"{scheduled}")
            if problem:
                raise InvalidBlock(f"supply invariant broken after block {height}: {problem}")
            if height == 0 or is_epoch_start(height, genesis.epoch_length):
                closed = 0 if height == 0 else epoch_of(height, genesis.epoch_length)
                closed_subsidies = scheduled_subsidy(
                    1, closed * genesis.epoch_length, genesis.subsidy0,
                    genesis.halving_interval)
                expected = initial_supply + closed_subsidies - state.totals.carried
                total = balances_total(state)
                if total != expected or total != state.total_supply:
                    raise InvalidBlock(
                        f"supply invariant broken at the start of epoch {closed}: balances "
                        f"{total} != allocations {initial_supply} + subsidies of closed "
                        f"epochs {closed_subsidies} - carried {state.totals.carried}")
                boundaries += closed > 0
            if (snapshot is not None and snapshot[0] == height
                    and snapshot[2] != encode_state(state)):
                raise InvalidBlock(f"state snapshot at height {height} differs from replay")

        height = 0  # the block being checked, for the error message
        try:
            block0 = check_genesis_block(store, genesis)
            parent: BlockHeader = block0.header
            state = genesis_state(genesis)
            check(0, state)
            transactions = len(block0.transactions)
            height = 1
            for step in replay(store, genesis, state, parent):
                check(step.height, step.state)
                state, parent = step.state, step.block.header
                transactions += len(step.block.transactions)
                height = step.height + 1
        except (InvalidBlock, StoreError) as exc:
            raise ChainAuditFailed(f"block {height}: {exc}") from None
        return AuditReport(
            height=parent.height,
            blocks=parent.height + 1,
            transactions=transactions,
            head_hash=block_hash(parent),
            state_root=state_root(state),
            total_supply=state.total_supply,
            minted=state.total_supply - initial_supply,
            snapshot_height=None if snapshot is None else snapshot[0],
            emitted=state.totals.emitted,
            pool=state.totals.pool,
            epochs_closed=boundaries,
        )

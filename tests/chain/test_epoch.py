"""Emission schedule and epoch payouts (SPEC 6 v1.1): the arithmetic of chain/epoch.py, and
whole chains of short epochs built through the one transition (`build_block`/`apply_block`)
and audited (`audit_chain`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.chain.audit import audit_chain
from hashcloud.chain.epoch import (
    epoch_bounds,
    epoch_of,
    is_epoch_start,
    scheduled_subsidy,
    split_pool,
    subsidy,
)
from hashcloud.chain.genesis import genesis_block, genesis_state
from hashcloud.chain.ledger import Ledger
from hashcloud.chain.rewards import account_rewards, epoch_view, expected_payout
from hashcloud.chain.state import (
    balances_total,
    get_account,
    get_epoch_record,
    get_worker,
    pending_work,
)
from hashcloud.chain.transition import build_block
from hashcloud.chain.tx import make_submit_result
from hashcloud.crypto.keys import PrivateKey
from hashcloud.errors import NotFound
from hashcloud.poc.receipt import sign_receipt
from tests.chain.test_tx import AUTHORITY, START_BALANCE, VALIDATOR, chain_domain, make_genesis

PROPS = settings(derandomize=True, deadline=None, max_examples=25)
FEE = 80_000 * 1000  # a SUBMIT_RESULT at the minimum gas price
PROPOSER = AUTHORITY.public_key.address
WORKERS = [PrivateKey(1000 + i) for i in range(6)]
PAYOUTS = [PrivateKey(2000 + i).public_key.address for i in range(3)]


# ---------------------------------------------------------------------- arithmetic


def test_epoch_numbering():
    # SPEC 6 v1.1: epoch 0 is blocks 1..L; the genesis block belongs to none.
    assert [epoch_of(h, 3) for h in range(1, 8)] == [0, 0, 0, 1, 1, 1, 2]
    assert [h for h in range(0, 11) if is_epoch_start(h, 3)] == [1, 4, 7, 10]
    assert epoch_bounds(2, 720) == (1441, 2160)
    with pytest.raises(ValueError):
        epoch_of(0, 3)


def test_subsidy_halves():
    assert subsidy(0, 100, 10) == 0  # the genesis block has no subsidy
    assert [subsidy(h, 100, 10) for h in (1, 9, 10, 19, 20, 30)] == [100, 100, 50, 50, 25, 12]
    assert subsidy(10**6, 50 * 10**9, 10) == 0


@PROPS
@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 10**6), st.integers(1, 40))
def test_scheduled_subsidy_is_the_sum(first, span, subsidy0, halving):
    last = first + span
    assert scheduled_subsidy(first, last, subsidy0, halving) == sum(
        subsidy(h, subsidy0, halving) for h in range(first, last + 1))


@PROPS
@given(st.integers(0, 2**96 - 1),
       st.dictionaries(st.sampled_from(PAYOUTS + ["x", "y"]), st.integers(1, 2**100)))
def test_split_pool_pays_exact_floors(pool, works):
    payouts, remainder = split_pool(pool, works)
    total = sum(works.values())
    for address, work in works.items():
        assert payouts[address] == pool * work // total  # exact pro-rata floor
    assert sum(payouts.values()) + remainder == pool  # nothing lost or created
    assert 0 <= remainder < max(len(works), 1) or not works


def test_split_pool_without_work_carries_everything():
    assert split_pool(12345, {}) == ({}, 12345)


# ---------------------------------------------------------------------- chains


def claim(worker: PrivateKey, task: int, loops: int, payout: str | None, nonce: int = 0,
          genesis=None):
    """A signed SUBMIT_RESULT for a validator receipt of `loops` loops at n=64."""
    domain = chain_domain(genesis)
    receipt = sign_receipt(
        domain=domain, task_id=f"{task:032x}", worker_address=worker.public_key.address,
        payout_address=payout, seed="ab" * 32, n=64, loops=loops, merkle_root=bytes(32),
        compute_time_ms=1000, samples=1, audited=1, issued_height=0, accepted_at=1, key=VALIDATOR)
    return make_submit_result(worker, receipt, nonce, domain=domain)


def run_chain(genesis, blocks):
    """Build `blocks` (lists of transactions, all must validate) on genesis; the states."""
    state, parent = genesis_state(genesis), genesis_block(genesis).header
    states = [state]
    for txs in blocks:
        built = build_block(state, parent, txs, genesis, AUTHORITY, parent.timestamp + 1)
        assert not built.rejected, built.rejected
        state, parent = built.state, built.block.header
        states.append(state)
    return states


claims_strategy = st.lists(
    st.tuples(st.integers(0, len(WORKERS) - 1), st.integers(1, 5000), st.integers(0, 2)),
    min_size=0, max_size=5, unique_by=lambda c: c[0])


@PROPS
@given(claims_strategy, st.integers(1, 4 * 10**9), st.randoms(use_true_random=False))
def test_payouts_are_pro_rata_floors_independent_of_order(claims, subsidy0, rnd):
    genesis = make_genesis(epoch_length=3, subsidy0=subsidy0, halving_interval=10**6)
    txs = [claim(WORKERS[w], i, loops, PAYOUTS[p], genesis=genesis)
           for i, (w, loops, p) in enumerate(claims)]
    shuffled = list(txs)
    rnd.shuffle(shuffled)
    # Epoch 0 = blocks 1..3; block 4 pays it. Same claims, other blocks and order.
    a = run_chain(genesis, [txs, [], [], []])[-1]
    b = run_chain(genesis, [[], shuffled[:2], shuffled[2:], []])[-1]
    assert a == b  # same state root: payouts, records and all
    pool = 3 * subsidy0
    works: dict[str, int] = {}
    fees: dict[str, int] = {}
    for _, loops, p in claims:
        works[PAYOUTS[p]] = works.get(PAYOUTS[p], 0) + loops * 64**3
        fees[PAYOUTS[p]] = fees.get(PAYOUTS[p], 0) + FEE
    total = sum(works.values())
    record = get_epoch_record(a, 0)
    assert record is not None and record.pool == pool and record.work == total
    fees_paid = 0
    for address in PAYOUTS:
        gross = pool * works[address] // total if address in works else 0
        fee = min(fees.get(address, 0), gross)  # a payout below its fees pays what it has
        fees_paid += fee
        assert get_account(a, address).balance == gross - fee
    assert get_account(a, PROPOSER).balance == fees_paid  # deferred fees: the paying block's
    assert record.carried == pool - sum(p.amount for p in record.payouts)
    assert a.totals.carried == record.carried and a.totals.epoch == 1
    assert a.totals.pool == record.carried + subsidy0  # block 4's own subsidy, new epoch
    assert balances_total(a) == a.total_supply == 2 * START_BALANCE + pool - record.carried
    for w, loops, _ in claims:
        assert get_worker(a, WORKERS[w].public_key.address).work == loops * 64**3


def test_empty_epoch_carries_its_pool_and_work_waits_for_the_close():
    genesis = make_genesis(epoch_length=2, subsidy0=1000, halving_interval=10**6)
    worker = WORKERS[0]
    payout = PAYOUTS[0]
    states = run_chain(genesis, [[], [], [claim(worker, 1, 10, payout, genesis=genesis)], [],
                                 []])
    after_empty = states[3]  # block 3 closed epoch 0 (no work): all 2000 carried
    assert get_epoch_record(after_empty, 0).carried == 2000
    assert after_empty.totals.pool == 3000 and after_empty.totals.carried == 2000
    assert pending_work(after_empty, payout).work == 10 * 64**3
    assert get_account(after_empty, payout).balance == 0  # nothing paid while open
    end = states[5]  # block 5 closed epoch 1: the whole 4000 pool, one worker, fee > payout
    record = get_epoch_record(end, 1)
    assert (record.pool, record.carried) == (4000, 0)
    assert record.payouts[0].amount == 4000 and record.payouts[0].fees == 4000  # forgiven rest
    assert get_account(end, payout).balance == 0 and get_account(end, PROPOSER).balance == 4000
    assert pending_work(end, payout).work == 0 and get_worker(end, worker.public_key.address
                                                              ).claims == 1


def test_claim_with_default_payout_pays_the_worker():
    genesis = make_genesis(epoch_length=1, subsidy0=10**12, halving_interval=10**6)
    worker = WORKERS[1]
    end = run_chain(genesis, [[claim(worker, 9, 100, None, genesis=genesis)], []])[-1]
    assert get_account(end, worker.public_key.address).balance == 10**12 - FEE


@pytest.mark.timeout(120)
def test_audit_checks_the_supply_invariant_at_every_epoch_boundary(tmp_path):
    genesis = make_genesis(epoch_length=2, subsidy0=10**9, halving_interval=3)
    with Ledger.open(tmp_path / "chain", genesis, snapshot_interval=4) as ledger:
        nonces = [0, 0, 0]
        for height in range(1, 10):
            txs = []
            if height % 2:
                w = height % 3
                txs = [claim(WORKERS[w], height, 7 * height, PAYOUTS[height % 2],
                             nonce=nonces[w], genesis=genesis)]
                nonces[w] += 1
            built = ledger.produce_block(txs, AUTHORITY, ledger.head.timestamp + 1)
            assert not built.rejected
        state = ledger.state
    report = audit_chain(tmp_path / "chain", genesis)
    assert report.epochs_closed == 4  # blocks 3, 5, 7, 9 each paid the previous epoch
    assert report.emitted == scheduled_subsidy(1, 9, 10**9, 3) == state.totals.emitted
    assert report.total_supply == 2 * START_BALANCE + report.emitted - report.pool
    assert report.minted == sum(get_epoch_record(state, e).pool
                                - get_epoch_record(state, e).carried for e in range(4))


# ---------------------------------------------------------------------- read views


def test_epoch_views_open_and_closed():
    genesis = make_genesis(epoch_length=3, subsidy0=1000, halving_interval=10**6)
    a, b = PAYOUTS[0], PAYOUTS[1]
    txs = [claim(WORKERS[0], 1, 30, a, genesis=genesis), claim(WORKERS[1], 2, 10, b,
                                                                  genesis=genesis)]
    states = run_chain(genesis, [txs, [], [], []])
    open_view = epoch_view(genesis, states[1], 1)
    # After block 1: 1000 in the pool, 2000 still to come; a did 3/4 of the work.
    assert open_view["status"] == "open" and open_view["pool"] == 1000
    assert open_view["projected_pool"] == 3000 and open_view["total_work"] == 40 * 64**3
    assert [p["address"] for p in open_view["pending"]] == sorted([a, b])
    pending = {p["address"]: p for p in open_view["pending"]}
    assert pending[a]["estimated_payout"] == 0  # 2250 gross, below the 80,000,000 fee
    assert account_rewards(genesis, states[1], 1, a) == {
        "epoch": 0, "pending_work": 30 * 64**3, "pending_fees": FEE, "estimated_payout": 0,
        "lifetime_work": 0, "accepted_claims": 0}  # a is a payout address, not a worker
    worker = account_rewards(genesis, states[1], 1, WORKERS[0].public_key.address)
    assert (worker["lifetime_work"], worker["accepted_claims"]) == (30 * 64**3, 1)
    assert expected_payout(genesis, states[1], 1, 40 * 64**3) == 1500  # joins: half of 3000
    # After block 3 (epoch 0's last), a claim lands in block 4, the first of epoch 1: it is
    # estimated against epoch 1's pool (the remainder carried, 0 here, plus 3 x 1000), not
    # against the closing pool it will not share (review finding).
    assert expected_payout(genesis, states[3], 3, 40 * 64**3) == 3000
    closed = epoch_view(genesis, states[4], 4, 0)
    assert closed["status"] == "closed" and (closed["first_height"], closed["last_height"]) \
        == (1, 3)
    assert {p["address"]: p["amount"] for p in closed["payouts"]} == {a: 2250, b: 750}
    assert all(p["net"] == 0 for p in closed["payouts"])  # fees ate them: forgiven beyond
    assert epoch_view(genesis, states[4], 4)["epoch"] == 1
    with pytest.raises(NotFound, match="has not started"):
        epoch_view(genesis, states[4], 4, 2)


def test_epoch_views_come_in_pages():
    """Every payout address is a row, so views are paged: the pages of any size, in order,
    are the whole view's rows; `next_after` walks them and is None after the last."""
    genesis = make_genesis(epoch_length=3, subsidy0=1000, halving_interval=10**6)
    txs = [claim(WORKERS[i], i + 1, 10 * (i + 1), PAYOUTS[i], genesis=genesis)
           for i in range(3)]
    states = run_chain(genesis, [txs, [], [], []])
    for state, height, number, key in ((states[1], 1, None, "pending"),
                                       (states[4], 4, 0, "payouts")):
        whole = epoch_view(genesis, state, height, number)
        assert whole["count"] == 3 and whole["next_after"] is None
        addresses = sorted(PAYOUTS)
        assert [r["address"] for r in whole[key]] == addresses
        for limit in (1, 2, 3):
            rows, after, pages = [], None, 0
            while True:
                page = epoch_view(genesis, state, height, number, after=after, limit=limit)
                assert page["count"] == 3 and 0 < len(page[key]) <= limit
                rows += page[key]
                pages += 1
                after = page["next_after"]
                if after is None:
                    break
                assert after == page[key][-1]["address"]
            assert rows == whole[key] and pages == -(-3 // limit)
        # A cursor need not be a row: the page starts after where it would sort.
        between = addresses[0] + "0"
        page = epoch_view(genesis, state, height, number, after=between, limit=5)
        assert [r["address"] for r in page[key]] == addresses[1:]
        past = epoch_view(genesis, state, height, number, after=addresses[-1], limit=2)
        assert past[key] == [] and past["count"] == 3 and past["next_after"] is None
        for bad in (0, 1001):
            with pytest.raises(ValueError, match="page out of range"):
                epoch_view(genesis, state, height, number, limit=bad)


@settings(derandomize=True, deadline=None, max_examples=10)
@given(st.lists(st.lists(st.tuples(st.integers(0, len(WORKERS) - 1), st.integers(1, 3000),
                                   st.integers(0, 2)), max_size=3), min_size=1, max_size=8),
       st.integers(0, 10**10))
def test_supply_follows_the_schedule_whatever_the_work(blocks, subsidy0):
    # Nothing is lost or created: at every height the balances are the allocations plus
    # every subsidy so far minus the open pool, and at each epoch start exactly the
    # allocations plus the closed epochs' subsidies minus the carried remainder.
    genesis = make_genesis(epoch_length=2, subsidy0=subsidy0, halving_interval=3)
    nonces = [0] * len(WORKERS)
    task = 0
    txs_per_block = []
    for block in blocks:
        txs = []
        for w, loops, p in block:
            task += 1
            txs.append(claim(WORKERS[w], task, loops, PAYOUTS[p], nonce=nonces[w],
                             genesis=genesis))
            nonces[w] += 1
        txs_per_block.append(txs)
    states = run_chain(genesis, txs_per_block)
    for height, state in enumerate(states):
        emitted = scheduled_subsidy(1, height, subsidy0, 3)
        assert state.totals.emitted == emitted
        assert balances_total(state) == state.total_supply == (
            2 * START_BALANCE + emitted - state.totals.pool)
        if height and is_epoch_start(height, 2):
            closed = scheduled_subsidy(1, height - 1, subsidy0, 3)
            assert state.total_supply == 2 * START_BALANCE + closed - state.totals.carried

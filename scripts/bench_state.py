"""Benchmark: a block of 1,000 claims on a small and on a large state (SPEC 6 v1.1, issue 13).

The state root is a sparse Merkle tree updated per touched key (`crypto.smt`), so applying a
block and computing its `state_root` must not cost time proportional to the history. This
script builds two states, one with SMALL and one with LARGE entries (half accounts, half
rewarded task ids), through `state.state_with` (the tree built bottom-up, as a snapshot is
loaded: inserting 10^6 keys one by one would only make the setup slower), then on each:

- `apply_block`: full validation of a block of 1,000 SUBMIT_RESULT claims (every signature,
  every receipt) plus the state changes and the root check, once with the signature cache
  cleared (`cold`) and once with it warm (as after mempool admission, where the node checks
  each signature first: the state's share of the time then shows);
- `state changes + root`: the same 1,000 claims' state changes alone (`record_work`,
  `mark_task_rewarded`, `increment_nonce`) and `state_root`, i.e. the part that could grow
  with the state;
- `copy + root`: `State.copy()` and `state_root` of an unchanged state.

It prints each time and the LARGE/SMALL ratio, measured in the same run; the issue asks for a
ratio within 2x. Usage: `python scripts/bench_state.py [--small 10000] [--large 1000000]
[--claims 1000]`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

from hashcloud.chain.genesis import Genesis, chain_domain, genesis_block
from hashcloud.chain.state import (
    Account,
    State,
    increment_nonce,
    mark_task_rewarded,
    record_work,
    state_root,
    state_with,
)
from hashcloud.chain.transition import apply_block, build_block
from hashcloud.chain.tx import make_submit_result
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.signatures import clear_verification_cache
from hashcloud.poc.receipt import sign_receipt
from hashcloud.types import address_from_payload

VALIDATOR = PrivateKey(0xBE7C)
AUTHORITY = PrivateKey(0xA117)
PAYOUTS = [PrivateKey(0x9A00 + i).public_key.address for i in range(10)]


def make_genesis() -> Genesis:
    """A chain whose validator and authority are the bench keys; short epochs don't matter
    here (the block is block 1, in epoch 0)."""
    return Genesis(chain_id="bench", timestamp=0, authorities=(AUTHORITY.public_key.hex(),),
                   validators=(VALIDATOR.public_key.hex(),))


def big_state(entries: int) -> State:
    """A state of `entries` records, half accounts (balance 1, nonce 1), half rewarded task
    ids, built by `state_with` (bottom-up, as a snapshot would be loaded)."""
    accounts = entries // 2
    return state_with({_fake_address(i): Account(1, 1) for i in range(accounts)},
                      (f"{i:032x}" for i in range(entries - accounts)))


def _fake_address(i: int) -> str:
    """A valid bech32 address for index `i` without deriving a key (fast)."""
    return address_from_payload(hashlib.sha256(i.to_bytes(8, "big")).digest()[:20])


def claims(genesis: Genesis, count: int) -> list:
    """`count` SUBMIT_RESULT transactions by distinct fresh workers (nonce 0)."""
    domain = chain_domain(genesis)
    txs = []
    for i in range(count):
        worker = PrivateKey(0x5EED_0000 + i)
        receipt = sign_receipt(
            domain=domain, task_id=f"{0xF0000000 + i:032x}",
            worker_address=worker.public_key.address, payout_address=PAYOUTS[i % 10],
            seed="ab" * 32, n=64, loops=100 + i, merkle_root=bytes(32), compute_time_ms=1000,
            samples=3, audited=1, issued_height=0, accepted_at=1, key=VALIDATOR)
        txs.append(make_submit_result(worker, receipt, 0, domain=domain))
    return txs


def best_of(fn, repeat: int = 3) -> float:  # noqa: ANN001
    """Fastest of `repeat` runs of `fn()`, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def state_changes(state: State, txs: list) -> str:
    """The state changes of the claims and the root (no signature checks)."""
    working = state.copy()
    for tx in txs:
        receipt_work = tx.payload.nonce * 64**3
        record_work(working, PAYOUTS[0], tx.from_address, receipt_work, tx.fee)
        mark_task_rewarded(working, tx.payload.task_id)
        increment_nonce(working, tx.from_address)
    return state_root(working)


def cold_apply(state: State, block, parent, genesis: Genesis) -> None:  # noqa: ANN001
    """`apply_block` with every signature verified from scratch."""
    clear_verification_cache()
    apply_block(state, block, parent, genesis)


def measure(entries: int, genesis: Genesis, txs: list) -> dict[str, float]:
    """Build a state of `entries` and time the three operations on it."""
    start = time.perf_counter()
    state = big_state(entries)
    built_in = time.perf_counter() - start
    parent = genesis_block(genesis).header
    block = build_block(state, parent, txs, genesis, AUTHORITY, parent.timestamp + 1).block
    assert len(block.transactions) == len(txs)
    return {
        "build state (setup)": built_in,
        "apply_block (cold)": best_of(lambda: cold_apply(state, block, parent, genesis), 2),
        "apply_block (cached sigs)": best_of(lambda: apply_block(state, block, parent, genesis),
                                             5),
        "state changes + root": best_of(lambda: state_changes(state, txs), 5),
        "copy + root": best_of(lambda: state_root(state.copy()), 50),
    }


def main() -> int:
    """Run the benchmark and print times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--claims", type=int, default=1000)
    args = parser.parse_args()
    genesis = make_genesis()
    start = time.perf_counter()
    txs = claims(genesis, args.claims)
    print(f"signed {args.claims} claims in {time.perf_counter() - start:.1f} s")
    small = measure(args.small, genesis, txs)
    large = measure(args.large, genesis, txs)
    print(f"{'operation':<27}{args.small:>12,} entries{args.large:>14,} entries{'ratio':>8}")
    worst = 0.0
    for name in small:
        ratio = large[name] / small[name]
        if name != "build state (setup)":
            worst = max(worst, ratio)
        print(f"{name:<27}{small[name] * 1e3:>16.3f} ms{large[name] * 1e3:>19.3f} ms"
              f"{ratio:>8.2f}")
    verdict = "within" if worst <= 2 else "NOT within"
    print(f"worst ratio (excluding setup) {worst:.2f}: {verdict} 2x")
    return 0 if worst <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())

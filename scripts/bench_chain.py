"""Chain throughput on one core: block validation+application and full-chain audit replay.

Prints (1) signed transfers validated and applied per second through `apply_block`, for
blocks of 500 transfers (target >= 500/s), and (2) `audit_chain` replay speed over a store
of 10,000 small blocks (one transfer each).

Usage: python scripts/bench_chain.py [--blocks 10000] [--block-txs 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hashcloud.chain.audit import audit_chain
from hashcloud.chain.block import block_hash, encode_block
from hashcloud.chain.genesis import (
    Genesis,
    chain_domain,
    genesis_block,
    genesis_hash,
    genesis_state,
)
from hashcloud.chain.store import ChainStore
from hashcloud.chain.transition import apply_block, build_block
from hashcloud.chain.tx import make_transfer
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.signatures import clear_verification_cache

CHAIN_ID = "bench"


def make_genesis(senders: list[PrivateKey], authority: PrivateKey) -> Genesis:
    """A chain where every sender holds plenty of coins."""
    return Genesis(
        chain_id=CHAIN_ID, timestamp=0,
        allocations={k.public_key.address: 10**20 for k in senders},
        authorities=(authority.public_key.hex(),), validators=(),
    )


def bench_block_application(block_txs: int, rounds: int) -> None:
    """Time apply_block on blocks of `block_txs` signed transfers from 50 senders."""
    authority = PrivateKey(1)
    senders = [PrivateKey(100 + i) for i in range(50)]
    recipients = [PrivateKey(1000 + i).public_key.address for i in range(200)]
    genesis = make_genesis(senders, authority)
    parent = genesis_block(genesis).header
    state = genesis_state(genesis)
    nonces = [0] * len(senders)
    blocks = []
    t0 = time.perf_counter()
    for r in range(rounds):
        txs = []
        for i in range(block_txs):
            s = i % len(senders)
            txs.append(make_transfer(senders[s], recipients[(i + r) % len(recipients)],
                                     1 + i, nonces[s], 1000, domain=chain_domain(genesis)))
            nonces[s] += 1
        built = build_block(state, parent, txs, genesis, authority, parent.timestamp + 2000)
        assert not built.rejected
        blocks.append((state, parent, built.block))
        state, parent = built.state, built.block.header
    print(f"prepared {rounds} blocks x {block_txs} signed transfers "
          f"in {time.perf_counter() - t0:.1f} s (signing + build)")
    # Cold signature checks: building the blocks verified (and memoised) every signature.
    clear_verification_cache()
    t0 = time.perf_counter()
    for pre_state, pre_parent, block in blocks:
        apply_block(pre_state, block, pre_parent, genesis)
    elapsed = time.perf_counter() - t0
    n = rounds * block_txs
    print(f"apply_block: {n} txs in {elapsed:.2f} s = {n / elapsed:,.0f} tx/s validated+applied "
          f"(target >= 500/s)")


def bench_audit(n_blocks: int) -> None:
    """Write `n_blocks` one-transfer blocks to a store, then time audit_chain over it."""
    authority = PrivateKey(1)
    sender, recipient = PrivateKey(7), PrivateKey(8).public_key.address
    genesis = make_genesis([sender], authority)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "chain"
        t0 = time.perf_counter()
        with ChainStore(data_dir, genesis_hash=bytes.fromhex(genesis_hash(genesis))) as store:
            gblock = genesis_block(genesis)
            records = [(0, bytes.fromhex(block_hash(gblock.header)), encode_block(gblock))]
            state, parent = genesis_state(genesis), gblock.header
            for height in range(1, n_blocks):
                tx = make_transfer(sender, recipient, 1, height - 1, 1000,
                                   domain=chain_domain(genesis))
                built = build_block(state, parent, [tx], genesis, authority,
                                    parent.timestamp + 2000)
                state, parent = built.state, built.block.header
                records.append((height, bytes.fromhex(block_hash(parent)),
                                encode_block(built.block)))
                if len(records) >= 1000:
                    store.append_blocks(records)
                    records = []
            store.append_blocks(records)
        print(f"wrote {n_blocks} blocks in {time.perf_counter() - t0:.1f} s")
        clear_verification_cache()  # replay checks every signature from scratch
        t0 = time.perf_counter()
        report = audit_chain(data_dir, genesis)
        elapsed = time.perf_counter() - t0
        print(f"audit_chain: {report.blocks} blocks, {report.transactions} txs in "
              f"{elapsed:.2f} s = {report.blocks / elapsed:,.0f} blocks/s")


def main() -> None:
    """Parse arguments and run both measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-txs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=10_000)
    args = parser.parse_args()
    bench_block_application(args.block_txs, args.rounds)
    bench_audit(args.blocks)


if __name__ == "__main__":
    main()

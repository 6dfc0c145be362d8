"""Benchmark the flat-file chain store: durable append rate and reopen/scan time.

Usage: ``python scripts/bench_store.py [--blocks 10000] [--payload 1536] [--dir PATH]
[--index-height 200000]``.
Prints append+fsync rate for one block per fsync and for batched appends, then the time to
reopen the store (full verifying scan, and index-trusting fast open), verify the log and
iterate every block. Last, the per-append cost of index maintenance (median) at a small
height and at ``--index-height`` (and their ratio, which should stay near 1: the index is
appended to, not rewritten), next to what one whole-index rewrite costs at that height.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hashcloud.chain.store import INDEX_NAME, ChainStore


def make_block(height: int, size: int) -> tuple[int, bytes, bytes]:
    """A synthetic block record with a pseudo-random payload of about ``size`` bytes."""
    block_hash = hashlib.sha256(b"bench:%d" % height).digest()
    size = size // 2 + (height * 7919) % size  # vary between size/2 and 1.5*size
    return height, block_hash, (block_hash * (size // 32 + 1))[:size]


def timed(label: str, fn: Callable[[], object]) -> float:
    """Run ``fn`` once and print its wall time."""
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {elapsed * 1000:9.1f} ms")
    return elapsed


def run(base: Path, blocks: int, payload: int) -> None:
    """Run every measurement in fresh sub-directories of ``base``."""
    records = [make_block(h, payload) for h in range(blocks)]
    mean = sum(len(r[2]) for r in records) / blocks

    single = base / "single"
    with ChainStore(single) as store:
        elapsed = timed(
            f"append_block x{blocks} (fsync each)",
            lambda: [store.append_block(*r) for r in records],
        )
    print(f"  -> {blocks / elapsed:,.0f} blocks/s, mean payload {mean:,.0f} B")

    batched = base / "batched"
    with ChainStore(batched) as store:
        elapsed = timed(
            f"append_blocks x{blocks} (batches of 100)",
            lambda: [store.append_blocks(records[i : i + 100]) for i in range(0, blocks, 100)],
        )
    print(f"  -> {blocks / elapsed:,.0f} blocks/s")

    size_mb = (single / "blocks.log").stat().st_size / 1e6
    print(f"log size {size_mb:.1f} MB")

    def reopen(**kwargs: bool) -> None:
        with ChainStore(single, **kwargs) as store:
            assert store.height == blocks - 1

    timed("reopen writer, verify=True (full scan)", reopen)
    timed("reopen writer, verify=False (trust index)", lambda: reopen(verify=False))
    timed("reopen reader, verify=True", lambda: reopen(readonly=True))
    os.unlink(single / INDEX_NAME)
    timed("reopen writer, index deleted (rebuild)", reopen)

    with ChainStore(single, readonly=True) as store:
        timed("verify_log", store.verify_log)
        timed("iter_blocks (all)", lambda: sum(1 for _ in store.iter_blocks()))
        timed(
            "get_block x1000 (strided heights)",
            lambda: [store.get_block(h) for h in range(0, blocks, max(1, blocks // 1000))],
        )


def index_cost(base: Path, large: int, appends: int = 500) -> None:
    """Print the per-append index cost at a small height vs at height ``large``.

    Appends alternate between a young store and one at height ``large`` so that load on the
    machine affects both figures alike; each figure is the median over ``appends`` appends.
    """

    def timer(store: ChainStore, spent: list[float]) -> None:
        """Wrap the store's index update to record its duration into ``spent``."""
        index = store._index  # the store's IndexWriter (bench-only peek at a private part)
        real_append = index.append

        def timed_append(entries: list) -> None:
            start = time.perf_counter()
            real_append(entries)
            spent.append(time.perf_counter() - start)

        index.append = timed_append  # type: ignore[method-assign]

    small_spent: list[float] = []
    big_spent: list[float] = []
    with ChainStore(base / "index-small") as young, ChainStore(base / "index-large") as old:
        for start in range(0, large, 5000):  # build the history fast: big batches
            old.append_blocks([make_block(h, 64) for h in range(start, min(large, start + 5000))])
        timer(young, small_spent)
        timer(old, big_spent)
        for i in range(appends):
            young.append_block(*make_block(i, 64))
            old.append_block(*make_block(large + i, 64))
        entries = old._index_entries(0)
        start = time.perf_counter()
        old._index._rewrite(entries)  # what one whole-index save costs at this height
        rewrite = time.perf_counter() - start
    small, big = statistics.median(small_spent), statistics.median(big_spent)
    print(f"index append per block at height ~{appends // 2:<9,} {small * 1e6:9.1f} us")
    print(f"index append per block at height ~{large + appends // 2:<9,} {big * 1e6:9.1f} us")
    print(f"  -> ratio large/small {big / small:.2f} (incremental: stays ~1)")
    print(f"whole-index rewrite at height {large:,}          {rewrite * 1000:9.1f} ms")


def main() -> None:
    """Parse arguments and run the benchmark in a temporary directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--payload", type=int, default=1536, help="mean payload size, bytes")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--index-height", type=int, default=200_000,
                        help="height at which to measure the per-append index cost")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        run(Path(tmp), args.blocks, args.payload)
        index_cost(Path(tmp), args.index_height)


if __name__ == "__main__":
    main()

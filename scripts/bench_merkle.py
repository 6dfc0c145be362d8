"""Benchmark HC-MERKLE-v1 (SPEC 2): tree build, audit path and inclusion check times.

Usage: `python scripts/bench_merkle.py [LEAVES] [--workers N]` (default 1,000,000 leaves,
in-process; `--workers 0` means one process per CPU). A developer tool: it prints; the core
package never does.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import time
import tracemalloc

from hashcloud.crypto.merkle import (
    CompactMerkleBuilder,
    MerkleBuilder,
    MerkleTree,
    merkle_root,
    verify_inclusion,
)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    """Build one tree over synthetic 32-byte leaves and time the SPEC 2 operations."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("leaves", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--samples", type=int, default=256, help="paths to time")
    args = parser.parse_args()

    leaves = [hashlib.sha256(b"leaf%d" % i).digest() for i in range(args.leaves)]

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    cpu_start, start = _cpu_seconds(), time.perf_counter()
    tree = MerkleTree(leaves, workers=args.workers)
    build, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    workers = "default (in-process)" if args.workers is None else args.workers
    print(f"build   {args.leaves} leaves: {build:.3f} s wall, {cpu:.3f} s CPU (workers={workers})")

    cpu_start, start = _cpu_seconds(), time.perf_counter()
    seq_root = merkle_root(leaves, workers=1)
    build, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    print(f"build   single process: {build:.3f} s wall, {cpu:.3f} s CPU")
    assert seq_root == tree.root

    # What a miner pays: the builder hashes as loops finish; only `finish` is left at the end.
    builder = MerkleBuilder()
    t0 = time.perf_counter()
    for i in range(0, args.leaves, 256):
        builder.extend(leaves[i : i + 256])
    t1 = time.perf_counter()
    built = builder.finish()
    t2 = time.perf_counter()
    assert built.root == tree.root
    print(f"stream  {args.leaves} leaves in batches of 256: {t1 - t0:.3f} s spread over the "
          f"round ({(t1 - t0) / args.leaves * 1e6:.2f} us/leaf), finish {1e3 * (t2 - t1):.3f} ms")

    # What a round holds per loop (issue 10: <= ~40 B): the miner's compact builder (flat
    # leaves + levels above 32-leaf chunks) vs a list of leaves + a full builder.
    for label, make in (("compact", _round_compact), ("list+full", _round_full)):
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        kept = make(leaves)
        took = time.perf_counter() - t0
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        assert kept[0].root == tree.root
        print(f"memory  {label:9s} {held / args.leaves:6.1f} bytes/loop held "
              f"({took / args.leaves * 1e6:.2f} us/leaf to build)")
    compact = _round_compact(leaves)[0]
    picks = range(0, args.leaves, max(1, args.leaves // args.samples))
    t0 = time.perf_counter()
    for i in picks:
        compact.audit_path(i)
    per = (time.perf_counter() - t0) / len(picks)
    print(f"path    compact tree {per * 1e6:.1f} us each (32-leaf chunk rehashed)")

    step = max(1, args.leaves // args.samples)
    indices = list(range(0, args.leaves, step))[: args.samples]
    start = time.perf_counter()
    paths = [tree.audit_path(i) for i in indices]
    per_path = (time.perf_counter() - start) / len(indices)
    print(f"path    {per_path * 1e6:.1f} us each ({len(paths[0])} hashes)")

    start = time.perf_counter()
    for i, path in zip(indices, paths, strict=True):
        verify_inclusion(leaves[i], i, tree.size, path, tree.root)
    per_verify = (time.perf_counter() - start) / len(indices)
    print(f"verify  {per_verify * 1e6:.1f} us each")
    print(f"root    0x{tree.root.hex()}")


def _round_compact(leaves: list[bytes]) -> tuple:
    """The miner's storage: leaves copied flat (fresh bytes, as the engine returns them)."""
    builder = CompactMerkleBuilder()
    for i in range(0, len(leaves), 256):
        builder.extend([bytes(bytearray(d)) for d in leaves[i : i + 256]])
    return (builder.finish(),)


def _round_full(leaves: list[bytes]) -> tuple:
    """The former storage: a list of fresh leaf objects plus every tree level."""
    kept: list[bytes] = []
    builder = MerkleBuilder()
    for i in range(0, len(leaves), 256):
        batch = [bytes(bytearray(d)) for d in leaves[i : i + 256]]
        kept.extend(batch)
        builder.extend(batch)
    return builder.finish(), kept


if __name__ == "__main__":
    main()

"""Follower catch-up benchmark: blocks/s a follower imports from a real producer process.

What it does (all on 127.0.0.1):
1. Builds a producer chain in-process (`NodeService`, the production code path): `--blocks`
   blocks of `--txs` signed transfers each, from a funded genesis.
2. Times the same chain's re-validation in-process (`ledger.replay`: decode + `apply_block`
   per block, no network, signatures checked cold as a follower's are): the ceiling a
   follower could reach. Then, in-process too, the
   import into a fresh ledger on disk one block at a time (`Ledger.add_block`: one fsync per
   block) and in ranges of `--range` blocks (`Ledger.add_blocks`, what the follower's
   catch-up uses: one fsync per range), so the fsync saving shows as a ratio of one run.
3. Starts the producer (`hashcloud node start`) on that data dir and a follower
   (`hashcloud node start --follow URL`) on an empty one, and times from the follower's
   listening line until its head equals the producer's (polled every 50 ms).

Prints blocks/s and transactions/s of the follower's catch-up, the in-process replay rate,
and their ratio (the share of the follower's time spent validating rather than fetching,
serialising and storing). Numbers are noisy on a shared 2-core box: compare the ratio.

Usage: python scripts/bench_follow.py [--blocks 2000] [--txs 4] [--range 128] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_node import NodeProcess  # noqa: E402  (the same node-process helper)

from hashcloud.chain.genesis import chain_domain, genesis_block, genesis_state  # noqa: E402
from hashcloud.chain.ledger import replay  # noqa: E402
from hashcloud.chain.store import ChainStore  # noqa: E402
from hashcloud.chain.tx import make_transfer  # noqa: E402
from hashcloud.crypto.keys import PrivateKey  # noqa: E402
from hashcloud.crypto.signatures import clear_verification_cache  # noqa: E402
from hashcloud.node.config import init_data_dir  # noqa: E402
from hashcloud.node.service import NodeService  # noqa: E402


def build_chain(data_dir: Path, blocks: int, txs: int) -> int:
    """A producer data dir with `blocks` blocks of `txs` transfers; returns the head height."""
    senders = [PrivateKey(0xB0B0_0000 + i) for i in range(max(1, txs))]
    files = init_data_dir(data_dir, allocations={k.public_key.address: 10**18 for k in senders},
                          block_time_ms=1000)
    domain = chain_domain(files.genesis)
    to = PrivateKey(0xC0FFEE).public_key.address
    svc = NodeService(files)
    try:
        for height in range(blocks):
            for key in senders[:txs]:
                svc.submit_transaction(make_transfer(key, to, 1, height, domain=domain))
            if svc.produce_block() is None:  # an empty block needs a transaction
                raise RuntimeError("no block produced")
        return svc.ledger.height
    finally:
        svc.close()


def replay_rate(data_dir: Path) -> float:
    """Blocks/s of `replay` (decode + apply_block) over the stored chain, in-process."""
    from hashcloud.node.config import load_data_dir

    files = load_data_dir(data_dir)
    genesis = files.genesis
    with ChainStore(data_dir / "chain", readonly=True) as store:
        clear_verification_cache()  # building the chain here left every signature checked
        t0 = time.perf_counter()
        count = sum(1 for _ in replay(store, genesis, genesis_state(genesis),
                                      genesis_block(genesis).header))
        return count / (time.perf_counter() - t0)


def import_rates(data_dir: Path, scratch: Path, per_range: int) -> tuple[float, float]:
    """Blocks/s of importing the stored chain into fresh ledgers on disk: one block per
    `add_block` (an fsync each), then ranges of `per_range` blocks per `add_blocks`."""
    from hashcloud.chain.ledger import Ledger
    from hashcloud.node.config import load_data_dir

    genesis = load_data_dir(data_dir).genesis
    with Ledger.open(data_dir / "chain", genesis, readonly=True) as source:
        blocks = [source.get_block(h) for h in range(1, source.height + 1)]
    now = max(b.header.timestamp for b in blocks) + 1
    rates = []
    for name, size in (("single", 1), ("ranges", per_range)):
        with Ledger.open(scratch / name, genesis) as target:
            clear_verification_cache()
            t0 = time.perf_counter()
            if size == 1:
                for block in blocks:
                    target.add_block(block, now_ms=now)
            else:
                for i in range(0, len(blocks), size):
                    target.add_blocks(blocks[i:i + size], now_ms=now)
            rates.append(len(blocks) / (time.perf_counter() - t0))
    return rates[0], rates[1]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=2000)
    p.add_argument("--txs", type=int, default=4, help="transfers per block (>= 1)")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--range", type=int, default=128,
                   help="blocks per add_blocks call in the in-process import (the follower "
                        "fetches ranges of node.sync.DEFAULT_RANGE_BLOCKS = 128)")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    if args.blocks < 1 or args.txs < 1 or args.range < 1:
        p.error("--blocks, --txs and --range must be at least 1")
    with tempfile.TemporaryDirectory(prefix="hc-bench-follow-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        height = build_chain(root / "producer", args.blocks, args.txs)
        print(f"built {height} blocks x {args.txs} transfers in "
              f"{time.perf_counter() - t0:.1f} s")
        replay_bps = replay_rate(root / "producer")
        single_bps, range_bps = import_rates(root / "producer", root / "import", args.range)
        (root / "ph").mkdir()
        (root / "fh").mkdir()
        producer = NodeProcess(root / "ph", root / "producer", 3600.0)
        follower = None
        try:
            t0 = time.perf_counter()
            follower = NodeProcess(root / "fh", root / "follower", 3600.0,
                                   ("--follow", producer.url))
            listening = time.perf_counter()
            with httpx.Client(base_url=follower.url, timeout=10) as http:
                while http.get("/v1/head").json()["height"] < height:
                    if time.perf_counter() - listening > args.timeout:
                        print(f"FAIL: follower not caught up after {args.timeout:.0f} s")
                        return 1
                    time.sleep(0.05)
                info = http.get("/v1/info").json()
            elapsed = time.perf_counter() - listening
            cpu = follower.cpu()
        finally:
            if follower is not None:
                follower.stop()
            producer.stop()
    bps = height / elapsed
    res = {"blocks": height, "txs_per_block": args.txs, "catch_up_s": round(elapsed, 2),
           "start_s": round(listening - t0, 2), "follower_blocks_per_s": round(bps, 1),
           "follower_txs_per_s": round(bps * args.txs, 1),
           "replay_blocks_per_s": round(replay_bps, 1),
           "follower_over_replay": round(bps / replay_bps, 3),
           "import_add_block_per_s": round(single_bps, 1),
           "import_add_blocks_per_s": round(range_bps, 1),
           "add_blocks_over_add_block": round(range_bps / single_bps, 2),
           "follower_cpu_s": round(cpu, 1), "state": info["follow"]["state"]}
    print(f"follower catch-up: {height} blocks in {elapsed:.2f} s = {bps:.0f} blocks/s "
          f"({bps * args.txs:.0f} tx/s); in-process replay {replay_bps:.0f} blocks/s; "
          f"ratio {bps / replay_bps:.2f}; follower CPU {cpu:.1f} s")
    print(f"in-process import into a ledger on disk: add_block {single_bps:.0f} blocks/s, "
          f"add_blocks (ranges of {args.range}) {range_bps:.0f} blocks/s, "
          f"ratio {range_bps / single_bps:.2f}")
    print(json.dumps(res))
    if args.json_out:
        args.json_out.write_text(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

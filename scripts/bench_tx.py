"""End-to-end transfer throughput of a real node: a burst of pre-signed transfers from
concurrent clients, timed until every one is included in a block.

What it does (all on 127.0.0.1):
1. A data dir whose genesis funds `--senders` keys; `--transfers` TRANSFERs are signed before
   anything is timed (sender j gets transfers j, j + K, ... with nonces 0, 1, ...).
2. For each mode of `--modes` a fresh node process (`hashcloud node start --block-time B`)
   takes the burst from `--clients` concurrent httpx clients, each owning a disjoint set of
   senders (so each sender's nonces arrive in order):
   - `batch`: `POST /v1/transactions/batch`, `--batch` transactions per request;
   - `single`: `POST /v1/transactions`, one per request (the path of issue 12's baseline).
   A transaction the node refuses for now (429: a sender's or the pool's limit) is sent
   again after a short pause; any other refusal is an error.
3. A watcher polls `/v1/head` every 20 ms and counts the transactions of each new block.

Reported per mode: intake tx/s (acknowledged transactions / time from the first request to
the last acknowledgement), included tx/s (transfers / time from the first request until the
block holding the last one was seen), blocks, node CPU ms per transaction, errors (must be
0), and the batch / single ratios of the same run.

Usage: python scripts/bench_tx.py [--transfers 10000] [--clients 4] [--senders 200]
       [--batch 500] [--block-time 0.5] [--modes batch,single] [--tx-rate N]
       [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_node import NodeProcess  # noqa: E402  (the same node-process helper)

from hashcloud.chain.genesis import chain_domain  # noqa: E402
from hashcloud.chain.tx import make_transfer, tx_to_json  # noqa: E402
from hashcloud.crypto.keys import PrivateKey  # noqa: E402
from hashcloud.node.config import init_data_dir  # noqa: E402

FUNDS = 10**18
RECIPIENT = PrivateKey(0xD00D).public_key.address


def presign(data_dir: Path, senders: list[PrivateKey], total: int) -> list[list[dict]]:
    """Initialise `data_dir` funding `senders`; per sender, its transfers in nonce order."""
    files = init_data_dir(data_dir, allocations={k.public_key.address: FUNDS for k in senders})
    domain = chain_domain(files.genesis)
    per: list[list[dict]] = [[] for _ in senders]
    for j in range(total):
        s = j % len(senders)
        tx = make_transfer(senders[s], RECIPIENT, 1 + j % 1000, len(per[s]), domain=domain)
        per[s].append(tx_to_json(tx))
    return per


class Run:
    """Shared counters of one mode's run."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.lock = threading.Lock()
        self.acked = 0
        self.errors: list[str] = []
        self.retried = 0
        self.t_first: float | None = None
        self.t_last_ack = 0.0
        self.t_included: float | None = None
        self.included = 0
        self.blocks = 0
        self.done = threading.Event()

    def ack(self, n: int) -> None:
        with self.lock:
            self.acked += n
            self.t_last_ack = time.perf_counter()


def interleave(queues: list[list[dict]]) -> list[dict]:
    """One list taking each sender's transactions in nonce order, round robin."""
    out: list[dict] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def client_batch(run: Run, url: str, txs: list[dict], size: int, deadline: float) -> None:
    """POST `txs` in batches of `size`; re-send 429-refused ones after a pause."""
    with httpx.Client(base_url=url, timeout=60) as http:
        todo = txs
        while todo and time.perf_counter() < deadline:
            again: list[dict] = []
            for i in range(0, len(todo), size):
                chunk = todo[i:i + size]
                resp = http.post("/v1/transactions/batch", json={"transactions": chunk})
                if resp.status_code != 200:
                    run.errors.append(f"batch {resp.status_code}: {resp.text[:200]}")
                    return
                ok = 0
                for tx, res in zip(chunk, resp.json()["results"], strict=True):
                    if res["status"] == "pending":
                        ok += 1
                    elif res["code"] == 429 or "nonce" in (res["detail"] or ""):
                        again.append(tx)  # a limit, or an earlier nonce was refused for now
                    else:
                        run.errors.append(f"{res['code']}: {res['detail']}")
                run.ack(ok)
            if again:
                run.retried += len(again)
                time.sleep(0.1)
            todo = again


def client_single(run: Run, url: str, txs: list[dict], deadline: float) -> None:
    """POST `txs` one by one; re-send a 429-refused one after a pause."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for tx in txs:
            while time.perf_counter() < deadline:
                resp = http.post("/v1/transactions", json=tx)
                if resp.status_code == 200:
                    run.ack(1)
                    break
                if resp.status_code == 429:
                    run.retried += 1
                    time.sleep(0.05)
                    continue
                run.errors.append(f"{resp.status_code}: {resp.text[:200]}")
                return


def watcher(run: Run, url: str, start: int, deadline: float) -> None:
    """Count included transactions block by block until all are in."""
    seen = start
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.perf_counter() < deadline and run.included < run.total:
            height = http.get("/v1/head").json()["height"]
            while seen < height:
                seen += 1
                block = http.get(f"/v1/blocks/{seen}").json()
                run.included += len(block["transactions"])
                run.blocks += 1
                if run.included >= run.total:
                    run.t_included = time.perf_counter()
            time.sleep(0.02)
    run.done.set()


def one_mode(mode: str, root: Path, per_sender: list[list[dict]], args: argparse.Namespace,
             data_dir: Path) -> dict[str, Any]:
    """Run the burst against a fresh node; the figures of this mode."""
    home = root / f"home-{mode}"
    home.mkdir()
    node = NodeProcess(home, data_dir, args.block_time, ("--tx-rate", str(args.tx_rate)))
    try:
        start = httpx.get(f"{node.url}/v1/head").json()["height"]
        total = sum(len(q) for q in per_sender)
        run = Run(total)
        groups = [interleave(per_sender[c::args.clients]) for c in range(args.clients)]
        cpu0 = node.cpu()
        deadline = time.perf_counter() + args.timeout
        run.t_first = time.perf_counter()
        threads = [threading.Thread(target=watcher, args=(run, node.url, start, deadline))]
        for g in groups:
            target = (client_batch, (run, node.url, g, args.batch, deadline)) if mode == "batch" \
                else (client_single, (run, node.url, g, deadline))
            threads.append(threading.Thread(target=target[0], args=target[1]))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu = node.cpu() - cpu0
        problems = node.log_problems()
    finally:
        node.stop()
    ok = run.t_included is not None and not run.errors
    intake_s = run.t_last_ack - run.t_first if run.acked else float("nan")
    incl_s = (run.t_included - run.t_first) if run.t_included else float("nan")
    return {"mode": mode, "transfers": total, "acked": run.acked, "included": run.included,
            "intake_tx_s": round(run.acked / intake_s, 1) if run.acked else 0.0,
            "included_tx_s": round(total / incl_s, 1) if ok else 0.0,
            "seconds_to_all_included": round(incl_s, 2),
            "blocks": run.blocks, "retried": run.retried,
            "node_cpu_ms_per_tx": round(cpu * 1000 / max(1, run.included), 3),
            "errors": run.errors[:5] + problems[:5], "ok": ok and not problems}


def main(argv: list[str] | None = None) -> int:
    """Run every mode and print the figures and their ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transfers", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--senders", type=int, default=200)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--block-time", type=float, default=0.5)
    p.add_argument("--modes", default="batch,single")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--tx-rate", type=int, default=10**9,
                   help="the node's POST /v1/transactions limit per client IP and minute "
                        "(default: unlimited, the node's throughput is measured, not its "
                        "limiter; 4 clients share 127.0.0.1)")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in ("batch", "single") for m in modes):
        p.error("--modes takes batch and/or single")
    if min(args.transfers, args.clients, args.senders, args.batch) < 1:
        p.error("counts must be at least 1")
    senders = [PrivateKey(0xA11CE_0000 + i) for i in range(args.senders)]
    results = []
    with tempfile.TemporaryDirectory(prefix="hc-bench-tx-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        template = root / "template"
        per_sender = presign(template, senders, args.transfers)
        print(f"signed {args.transfers} transfers from {args.senders} senders in "
              f"{time.perf_counter() - t0:.1f} s")
        for mode in modes:
            data_dir = root / f"node-{mode}"
            shutil.copytree(template, data_dir)
            load = os.getloadavg()[0]
            res = one_mode(mode, root, per_sender, args, data_dir)
            res["load_1min_before"] = round(load, 2)  # a shared box: note what else ran
            results.append(res)
            print(f"{mode:>6}: intake {res['intake_tx_s']:.0f} tx/s, included "
                  f"{res['included_tx_s']:.0f} tx/s ({res['seconds_to_all_included']} s to "
                  f"include all {res['transfers']}), {res['blocks']} blocks, node CPU "
                  f"{res['node_cpu_ms_per_tx']} ms/tx, retried {res['retried']}, "
                  f"errors {len(res['errors'])} (1-min load before: {load:.2f})")
    by = {r["mode"]: r for r in results}
    summary: dict[str, Any] = {"clients": args.clients, "batch": args.batch,
                               "block_time": args.block_time, "results": results}
    if "batch" in by and "single" in by and by["single"]["included_tx_s"]:
        summary["included_ratio_batch_over_single"] = round(
            by["batch"]["included_tx_s"] / by["single"]["included_tx_s"], 2)
        print(f"batch / single included: {summary['included_ratio_batch_over_single']}x")
    print(json.dumps(summary))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary) + "\n")
    failed = [r["mode"] for r in results if not r["ok"]]
    if failed:
        print(f"FAIL: {', '.join(failed)}: {[r['errors'] for r in results if not r['ok']]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

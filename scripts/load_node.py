"""Load benchmark of a real HashCloud node process: audited mining rounds and signed transfers.

What it does, by itself (all traffic on 127.0.0.1, every loop bounded in count and time):

0. Creates a temporary data dir with `init_data_dir(..., allocations=..., block_time_ms=...)`
   funding the miner keys and K transfer senders, starts
   `python -m hashcloud --home H node start --data-dir D --port 0 --block-time B` as a child
   process, waits for its `hashcloud node listening on http://127.0.0.1:PORT` line, and stops
   it at the end (SIGTERM, then SIGKILL after 15 s; exit status -15 counts as clean, since
   uvicorn re-raises the captured SIGTERM after its graceful shutdown).

1. Phase A, concurrent simulated miners: `--miners` workers (processes by default, each with its
   own key, NodeClient and `Engine("numpy", n=--n)`) loop for `--seconds`:
   challenge -> `run_loops` for `--round-seconds` -> commit -> reveal
   (`hashcloud.client.round.run_online_round`) -> claim (`submit_claim(wait=False)`).
   Miner processes run with OPENBLAS/OMP_NUM_THREADS=`--miner-blas-threads` (default 1): eight
   miners with two spinning BLAS threads each on 2 cores made every loop ~30x slower. The
   node keeps the environment it was started with. Reported:
   - accepted rounds/s: accepted rounds / phase wall time (from "go" until the last miner
     finished its last round; a round started before the deadline is completed);
   - rejected: rounds the node refused (commit refused or reveal not accepted), by reason;
   - rate limited: challenge requests answered 429 (by default the validator's per-IP limit is
     240/min and per-address 60/min over a 60 s sliding window; the miner backs off 1 s). These
     are policy, not failures, but when non-zero the rounds/s figure measures the limiter, not
     the node: raise them with `--ip-rate` / `--worker-rate` or `--no-limits`;
   - commit / reveal latency p50/p99 (ms): client-side wall time around `NodeClient.commit` /
     `NodeClient.reveal` (no client retries: retries=0), so it includes the HTTP round trip and
     any CPU-scheduling delay of the 2-core box, which is shared with the miners' own compute;
     the node-side mean handling time from `/metrics` (hc_commit_seconds, hc_reveal_seconds)
     is printed alongside to separate the two, with the mean audit CPU time per audited
     reveal (hc_audit_seconds: the node runs `--audit-mode rows|full`, `--audit-rows K`,
     SPEC 3 v1.1) and the reveal outcomes (hc_reveals_total);
   - node CPU s / round: utime+stime of the node process (/proc/PID/stat) over the phase,
     divided by accepted rounds: the node's total cost of one audited round (challenge,
     commit, audit of m samples (rows or leaves), reveal, claim validation and its block);
   - claims: SUBMIT_RESULT transactions sent and how many were included after the phase
     (awaited for up to max(30 s, 10 blocks)); a round whose reward estimate is below the
     claim fee (SUBMIT_RESULT_GAS * MIN_GAS_PRICE = 8e7, i.e. fewer than 39 loops at n=128)
     is not claimed, since the chain would refuse it ("skipped");
   - round ms and its parts (challenge, compute = run_loops + Merkle tree, claim) to see where
     a round's wall time goes;
   - errors: anything else (transport errors, 5xx, bad signatures, failed claims). Must be 0.

2. Phase B, end-to-end signed transfers: `--transfers` TRANSFERs from `--senders` funded keys
   (sender j % K, nonces in order, chain id from /v1/info) are signed before the phase, then
   POSTed by `--submitters` concurrent httpx clients (each owns a disjoint set of senders, so
   nonces arrive in order); a watcher polls /v1/head and, when the head moves, the status of
   each sender's last acknowledged transaction (inclusion of the last nonce implies all earlier
   ones). The per-sender mempool limit is 64 pending: keep transfers/senders <= 64 (defaults:
   2000 / 64 = 31-32 each); above that the submitters back off on 429 and retry.
   Reported: submit rate (acknowledged tx / s, first POST to last ack), inclusion throughput
   (included tx / s, first POST to the moment the last inclusion was observed, watcher period
   50 ms), blocks produced during the phase, p50/p99 latency from a sender's last ack to
   its inclusion, node CPU ms per transfer, errors (must be 0).

Reading latencies: on loopback every HTTP call should take a few ms; a floor of ~40-45 ms on
every call (GETs included) is the Nagle / delayed-ACK stall of a server socket without
TCP_NODELAY, not node work (compare with the node-side means from /metrics).

Rate limits of the node (issue 12: the load test must not only measure the limiter): the
challenge limits keep the node's policy unless `--ip-rate`, `--worker-rate` or `--max-open`
set them; the per-IP write limits (transactions, reveals; issue 11) are lifted by default
(`--tx-rate` / `--reveal-rate` 1,000,000 per minute), so the figures stay comparable with
runs before those limits existed; `--no-limits` lifts every limit. The values passed are in
the JSON output (`node_limits`).

Output: a compact table, then one JSON line with every figure (also written to `--json-out`).
A line starting with FAIL is printed (and the exit status is 1) if any error occurred.

Usage: python scripts/load_node.py [--miners 8] [--seconds 20] [--round-seconds 0.5] [--n 128]
       [--transfers 2000] [--senders 64] [--block-time 1.0] [--json-out FILE]
       [--ip-rate N] [--worker-rate N] [--max-open N] [--tx-rate N] [--reveal-rate N]
       [--no-limits]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from hashcloud.chain.tx import (
    MIN_GAS_PRICE,
    SUBMIT_RESULT_GAS,
    make_transfer,
    tx_id,
    tx_to_json,
)
from hashcloud.client.http import NodeClient
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.signatures import ChainDomain
from hashcloud.errors import HashCloudError, NodeError, NodeRejected
from hashcloud.node.config import init_data_dir

FUNDS = 10**18
CLAIM_FEE = SUBMIT_RESULT_GAS * MIN_GAS_PRICE  # a claim whose reward is below it is invalid
LISTEN_RE = re.compile(r"hashcloud node listening on (http://127\.0\.0\.1:\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# ----------------------------------------------------------------------------- helpers


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile `q` (0-100) of `values`, None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def ms(value: float | None) -> float | None:
    """Seconds to milliseconds rounded to 0.1, keeping None."""
    return None if value is None else round(value * 1000, 1)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` in seconds (Linux /proc)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def node_metric_means(url: str) -> dict[str, Any]:
    """Node-side means from the Prometheus histograms: commit / reveal handling time (s),
    audit CPU time per audited reveal (s, `hc_audit_seconds`, all labels), and the reveal
    outcomes (`hc_reveals_total`, non-zero ones)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    vals: dict[str, float] = {}
    outcomes: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        name = parts[0].split("{")[0]
        if name.startswith(("hc_commit_seconds_", "hc_reveal_seconds_", "hc_audit_seconds_")):
            vals[name] = vals.get(name, 0.0) + float(parts[1])  # summed over labels
        elif name == "hc_reveals_total" and float(parts[1]):
            outcomes[parts[0].split('"')[1]] = int(float(parts[1]))
    out: dict[str, Any] = {"reveal_outcomes": outcomes}
    for name in ("commit", "reveal", "audit"):
        count = vals.get(f"hc_{name}_seconds_count", 0.0)
        out[name] = vals.get(f"hc_{name}_seconds_sum", 0.0) / count if count else None
    return out


class NodeProcess:
    """A `hashcloud node start` child process on 127.0.0.1:<free port>."""

    def __init__(self, home: Path, data_dir: Path, block_time: float,
                 extra: tuple[str, ...] = ()) -> None:
        self.out_path = home / "node.stdout"
        self.err_path = home / "node.stderr"
        cmd = [sys.executable, "-m", "hashcloud", "--home", str(home), "node", "start",
               "--data-dir", str(data_dir), "--port", "0", "--block-time", str(block_time),
               *extra]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        self.url = self._wait_listening(30.0)

    def _wait_listening(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.out_path.read_text(errors="replace"))
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"node did not start: {self.log_tail()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def log_tail(self, lines: int = 20) -> str:
        text = self.err_path.read_text(errors="replace") if self.err_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_problems(self) -> list[str]:
        """ERROR/CRITICAL/Traceback lines of the node's stderr."""
        text = self.err_path.read_text(errors="replace") if self.err_path.exists() else ""
        return [ln for ln in text.splitlines()
                if " ERROR " in ln or " CRITICAL " in ln or ln.startswith("Traceback")]

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 15 s; the exit code (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                return None
        return self.proc.returncode


# ----------------------------------------------------------------------------- phase A


class TimedClient(NodeClient):
    """NodeClient recording the wall time of every commit / reveal and the current stage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage = "idle"
        self.commit_s: list[float] = []
        self.reveal_s: list[float] = []
        self.challenge_s: list[float] = []

    def request_challenge(self, req):  # type: ignore[no-untyped-def]
        self.stage = "challenge"
        t0 = time.perf_counter()
        try:
            return super().request_challenge(req)
        finally:
            self.challenge_s.append(time.perf_counter() - t0)

    def commit(self, challenge_id, req):  # type: ignore[no-untyped-def]
        self.stage = "commit"
        t0 = time.perf_counter()
        try:
            return super().commit(challenge_id, req)
        finally:
            self.commit_s.append(time.perf_counter() - t0)

    def reveal(self, challenge_id, req):  # type: ignore[no-untyped-def]
        self.stage = "reveal"
        t0 = time.perf_counter()
        try:
            return super().reveal(challenge_id, req)
        finally:
            self.reveal_s.append(time.perf_counter() - t0)


def _reason(text: str) -> str:
    """A reason with numbers blanked, so equal causes group together."""
    return re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "#", text)[:120]


def miner_worker(idx: int, key_hex: str, url: str, opts: dict, ready: Any, go: Any,
                 results: Any) -> None:
    """One simulated miner (process or thread): rounds until `opts['seconds']` after `go`."""
    from hashcloud.client.round import run_online_round, submit_claim
    from hashcloud.engine.mining import Engine
    from hashcloud.poc.proof import DeviceInfo
    from hashcloud.poc.round import run_loops

    res: dict[str, Any] = {"idx": idx, "accepted": 0, "rejected": Counter(), "errors": Counter(),
                           "rate_limited": 0, "claims": [], "commit_s": [], "reveal_s": [],
                           "round_s": [], "compute_s": [], "claim_s": [], "loops": 0,
                           "claims_skipped": 0, "end": None}
    try:
        key = PrivateKey.from_hex(key_hex)
        engine = Engine("numpy", n=opts["n"])
        device = DeviceInfo(name=engine.device, backend=engine.backend)
        client = TimedClient(url, retries=0, timeout=60.0)
        info = client.info()
    except Exception as exc:  # noqa: BLE001 - reported, never raised across processes
        res["errors"][f"setup: {type(exc).__name__}: {exc}"[:160]] += 1
        ready.put(idx)
        results.put(res)
        return
    ready.put(idx)
    if not go.wait(timeout=300):
        results.put(res)
        return
    duration = opts["round_seconds"]

    def compute(seed: str) -> Any:
        t = time.perf_counter()
        work = run_loops(engine, seed, duration)
        res["compute_s"].append(time.perf_counter() - t)
        return work

    deadline = time.monotonic() + opts["seconds"]
    rounds = 0
    try:
        while time.monotonic() < deadline and rounds < opts["max_rounds"]:
            rounds += 1
            t0 = time.perf_counter()
            client.stage = "challenge"
            try:
                outcome = run_online_round(client, key, opts["n"], device, compute, info)
            except NodeRejected as exc:
                res["rejected"][f"{client.stage}: {_reason(exc.detail)}"] += 1
                continue
            except NodeError as exc:
                if "(429)" in str(exc):
                    res["rate_limited"] += 1
                    time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
                else:
                    res["errors"][f"{client.stage}: {_reason(str(exc))}"] += 1
                continue
            except Exception as exc:  # noqa: BLE001
                res["errors"][f"{client.stage}: {type(exc).__name__}: {_reason(str(exc))}"] += 1
                continue
            res["round_s"].append(time.perf_counter() - t0)
            if not outcome.accepted:
                res["rejected"][f"reveal: {_reason(outcome.reason or 'not accepted')}"] += 1
                continue
            res["accepted"] += 1
            res["loops"] += outcome.work.loops
            if outcome.reward_estimate < CLAIM_FEE:  # the chain would refuse the claim
                res["claims_skipped"] += 1
                continue
            client.stage = "claim"
            t1 = time.perf_counter()
            try:
                txid, _ = submit_claim(client, key, outcome.proof, wait=False)
                res["claims"].append(txid)
                res["claim_s"].append(time.perf_counter() - t1)
            except Exception as exc:  # noqa: BLE001
                res["errors"][f"claim: {type(exc).__name__}: {_reason(str(exc))}"] += 1
    finally:
        res["end"] = time.time()
        res["commit_s"], res["reveal_s"] = client.commit_s, client.reveal_s
        res["challenge_s"] = client.challenge_s
        client.close()
        engine.close()
        results.put(res)


def wait_txs(url: str, txids: list[str], timeout: float, poll: float) -> Counter:
    """Poll each tx until included or dropped (bounded by `timeout`); outcome counts."""
    outcome: Counter = Counter()
    pending = set(txids)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30) as http:
        while pending and time.monotonic() < deadline:
            for txid in list(pending):
                r = http.get(f"/v1/transactions/{txid}")
                status = r.json().get("status", "") if r.status_code == 200 else "unknown"
                if status == "included" or status.startswith("dropped"):
                    outcome["included" if status == "included" else "dropped"] += 1
                    pending.discard(txid)
            if pending:
                time.sleep(poll)
    outcome["pending"] = len(pending)
    return outcome


def phase_a(node: NodeProcess, miner_keys: list[PrivateKey], args: argparse.Namespace
            ) -> dict[str, Any]:
    """Concurrent simulated miners against the node (see the module docstring)."""
    opts = {"n": args.n, "round_seconds": args.round_seconds, "seconds": args.seconds,
            "max_rounds": args.max_rounds}
    if args.miner_mode == "process":
        ctx = mp.get_context("spawn")
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        workers: list[Any] = [ctx.Process(target=miner_worker, daemon=True,
                                          args=(i, k.hex(), node.url, opts, ready, go, results))
                              for i, k in enumerate(miner_keys)]
    else:
        ready, results, go = queue.Queue(), queue.Queue(), threading.Event()
        workers = [threading.Thread(target=miner_worker, daemon=True,
                                    args=(i, k.hex(), node.url, opts, ready, go, results))
                   for i, k in enumerate(miner_keys)]
    # One BLAS thread per miner process: 8 miners x (2 spinning OpenBLAS threads) on 2 cores
    # slow every loop ~30x and starve the node. The node itself keeps its default.
    saved = {v: os.environ.get(v) for v in BLAS_VARS}
    os.environ.update({v: str(args.miner_blas_threads) for v in BLAS_VARS})
    try:
        for w in workers:
            w.start()
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old
    for _ in workers:
        ready.get(timeout=180)
    cpu0, t0 = node.cpu(), time.time()
    go.set()
    collected = [results.get(timeout=args.seconds + 300) for _ in workers]
    t_end = max(r["end"] or time.time() for r in collected)
    wall = t_end - t0
    cpu1 = node.cpu()
    for w in workers:
        w.join(timeout=15)
        if isinstance(w, mp.process.BaseProcess) and w.is_alive():
            w.terminate()
    node_means = node_metric_means(node.url)
    claims = [c for r in collected for c in r["claims"]]
    claim_status = wait_txs(node.url, claims, timeout=max(30.0, 10 * args.block_time),
                            poll=max(0.2, args.block_time / 2))
    rejected: Counter = Counter()
    errors: Counter = Counter()
    for r in collected:
        rejected.update(r["rejected"])
        errors.update(r["errors"])
    if claim_status["dropped"] or claim_status["pending"]:
        errors["claims not included"] += claim_status["dropped"] + claim_status["pending"]
    accepted = sum(r["accepted"] for r in collected)
    commit_s = [x for r in collected for x in r["commit_s"]]
    reveal_s = [x for r in collected for x in r["reveal_s"]]
    def flat(name: str) -> list[float]:
        return [x for r in collected for x in r[name]]

    round_s, compute_s = flat("round_s"), flat("compute_s")
    challenge_s, claim_s = flat("challenge_s"), flat("claim_s")
    cpu = cpu1 - cpu0
    return {
        "miners": len(workers), "mode": args.miner_mode, "wall_s": round(wall, 2),
        "accepted": accepted, "accepted_per_s": round(accepted / wall, 3) if wall > 0 else 0.0,
        "loops_per_round": round(sum(r["loops"] for r in collected) / accepted, 1)
        if accepted else None,
        "rejected": sum(rejected.values()), "rejected_reasons": dict(rejected),
        "rate_limited": sum(r["rate_limited"] for r in collected),
        "commit_ms_p50": ms(pct(commit_s, 50)), "commit_ms_p99": ms(pct(commit_s, 99)),
        "reveal_ms_p50": ms(pct(reveal_s, 50)), "reveal_ms_p99": ms(pct(reveal_s, 99)),
        "node_commit_ms_mean": ms(node_means["commit"]),
        "node_reveal_ms_mean": ms(node_means["reveal"]),
        "node_audit_cpu_ms_mean": ms(node_means["audit"]),
        "reveal_outcomes": node_means["reveal_outcomes"],
        "round_ms_p50": ms(pct(round_s, 50)), "round_ms_p99": ms(pct(round_s, 99)),
        "compute_ms_p50": ms(pct(compute_s, 50)), "compute_ms_p99": ms(pct(compute_s, 99)),
        "challenge_ms_p50": ms(pct(challenge_s, 50)),
        "challenge_ms_p99": ms(pct(challenge_s, 99)),
        "claim_ms_p50": ms(pct(claim_s, 50)), "claim_ms_p99": ms(pct(claim_s, 99)),
        "node_cpu_s": round(cpu, 2),
        "node_cpu_s_per_round": round(cpu / accepted, 4) if accepted else None,
        "claims_sent": len(claims), "claims_included": claim_status["included"],
        "claims_skipped_reward_below_fee": sum(r["claims_skipped"] for r in collected),
        "errors": sum(errors.values()), "error_reasons": dict(errors),
    }


# ----------------------------------------------------------------------------- phase B


def sign_sender_txs(key_hex: str, domain: ChainDomain, recipients: list[str], count: int,
                    salt: int) -> list[tuple[str, dict]]:
    """`count` transfers from one sender, nonces 0..count-1: [(tx_id, json)]."""
    key = PrivateKey.from_hex(key_hex)
    out = []
    for nonce in range(count):
        tx = make_transfer(key, recipients[(salt + nonce) % len(recipients)], 1 + nonce, nonce,
                           domain=domain)
        out.append((tx_id(tx), tx_to_json(tx)))
    return out


def presign(senders: list[PrivateKey], domain: ChainDomain, total: int, workers: int
            ) -> list[list[tuple[str, dict]]]:
    """Transfer j goes to sender j % K with the next nonce; signed in a process pool."""
    k = len(senders)
    counts = [total // k + (1 if i < total % k else 0) for i in range(k)]
    recipients = [PrivateKey.generate().public_key.address for _ in range(16)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futs = [pool.submit(sign_sender_txs, s.hex(), domain, recipients, c, i)
                for i, (s, c) in enumerate(zip(senders, counts, strict=True))]
        return [f.result(timeout=600) for f in futs]


class TransferRun:
    """Shared state of phase B's submitters and watcher."""

    def __init__(self, per_sender: list[list[tuple[str, dict]]]) -> None:
        self.per_sender = per_sender
        self.lock = threading.Lock()
        self.acked: list[int] = [0] * len(per_sender)  # acknowledged count per sender
        self.ack_time: list[float] = [0.0] * len(per_sender)  # of the latest ack
        self.broken: set[int] = set()
        self.errors: Counter = Counter()
        self.throttled = 0
        self.first_post: float | None = None
        self.last_ack: float | None = None
        self.included_at: dict[int, tuple[float, int, float]] = {}  # sender -> (t, h, lat)
        self.submitting_done = threading.Event()


def submitter(run: TransferRun, url: str, senders: list[int], deadline: float) -> None:
    """POST the transfers of `senders` in nonce order, interleaving the senders."""
    order = sorted((n, s) for s in senders for n in range(len(run.per_sender[s])))
    with httpx.Client(base_url=url, timeout=60) as http:
        for nonce, s in order:
            if s in run.broken:
                continue
            _, body = run.per_sender[s][nonce]
            while True:
                if time.monotonic() > deadline:
                    with run.lock:
                        run.errors["submission deadline passed"] += 1
                        run.broken.add(s)
                    break
                t = time.time()
                with run.lock:
                    if run.first_post is None:
                        run.first_post = t
                try:
                    r = http.post("/v1/transactions", json=body)
                except httpx.HTTPError as exc:
                    with run.lock:
                        run.errors[f"transport: {type(exc).__name__}"] += 1
                        run.broken.add(s)
                    break
                if r.status_code == 200:
                    now = time.time()
                    with run.lock:
                        run.acked[s] += 1
                        run.ack_time[s] = now
                        run.last_ack = max(run.last_ack or now, now)
                    break
                if r.status_code == 429:
                    with run.lock:
                        run.throttled += 1
                    with contextlib.suppress(ValueError):
                        time.sleep(min(1.0, max(0.05, float(r.headers.get("retry-after", 1)))))
                    continue
                with run.lock:
                    run.errors[f"HTTP {r.status_code}: {_reason(r.text)}"] += 1
                    run.broken.add(s)
                break


def watcher(run: TransferRun, url: str, start_height: int, deadline: float) -> None:
    """Watch the head; when it moves, check each pending sender's last acknowledged tx."""
    last_height, last_check = start_height, 0.0
    n = len(run.per_sender)
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            done_submitting = run.submitting_done.is_set()
            with run.lock:
                waiting = [s for s in range(n) if s not in run.included_at
                           and s not in run.broken and run.acked[s] == len(run.per_sender[s])]
                open_senders = [s for s in range(n) if s not in run.included_at
                                and s not in run.broken]
            if done_submitting and not open_senders:
                return
            try:
                height = http.get("/v1/head").json()["height"]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                with run.lock:
                    run.errors[f"watcher: {type(exc).__name__}"] += 1
                time.sleep(0.2)
                continue
            # Re-check on every new head, and at least every second (an ack recorded just
            # after the block that included it was observed).
            if waiting and (height != last_height or time.monotonic() - last_check > 1.0):
                last_height, last_check = height, time.monotonic()
                for s in waiting:
                    txid = run.per_sender[s][-1][0]
                    r = http.get(f"/v1/transactions/{txid}")
                    status = r.json().get("status", "") if r.status_code == 200 else ""
                    if status == "included":
                        now = time.time()
                        with run.lock:
                            run.included_at[s] = (now, r.json()["height"], now - run.ack_time[s])
                    elif status.startswith("dropped"):
                        with run.lock:
                            run.errors[f"dropped: {_reason(status)}"] += 1
                            run.broken.add(s)
            time.sleep(0.05)
    with run.lock:
        missing = [s for s in range(n) if s not in run.included_at and s not in run.broken]
        if missing:
            run.errors["not included before the deadline"] += sum(
                len(run.per_sender[s]) for s in missing)


def phase_b(node: NodeProcess, senders: list[PrivateKey], args: argparse.Namespace
            ) -> dict[str, Any]:
    """Pre-signed transfers through the HTTP API into blocks (see the module docstring)."""
    with NodeClient(node.url, retries=2) as client:
        info = client.info()
    t_sign = time.perf_counter()
    per_sender = presign(senders, info.chain_domain(), args.transfers, workers=2)
    sign_s = time.perf_counter() - t_sign
    total = sum(len(x) for x in per_sender)
    run = TransferRun(per_sender)
    start_height = httpx.get(f"{node.url}/v1/head", timeout=10).json()["height"]
    submit_deadline = time.monotonic() + max(120.0, total / 10)
    watch_deadline = submit_deadline + max(60.0, 30 * args.block_time)
    groups = [list(range(i, len(senders), args.submitters)) for i in range(args.submitters)]
    cpu0 = node.cpu()
    w = threading.Thread(target=watcher, args=(run, node.url, start_height, watch_deadline),
                         daemon=True)
    w.start()
    subs = [threading.Thread(target=submitter, args=(run, node.url, g, submit_deadline),
                             daemon=True) for g in groups if g]
    for t in subs:
        t.start()
    for t in subs:
        t.join(timeout=max(0.0, submit_deadline - time.monotonic()) + 60)
    run.submitting_done.set()
    w.join(timeout=max(0.0, watch_deadline - time.monotonic()) + 30)
    cpu1 = node.cpu()
    end_height = httpx.get(f"{node.url}/v1/head", timeout=10).json()["height"]
    acked = sum(run.acked)
    included = sum(len(per_sender[s]) for s in run.included_at)
    last_incl = max((v[0] for v in run.included_at.values()), default=None)
    first = run.first_post or time.time()
    submit_window = (run.last_ack - first) if run.last_ack else None
    incl_window = (last_incl - first) if last_incl else None
    lat = [v[2] for v in run.included_at.values()]
    max_h = max((v[1] for v in run.included_at.values()), default=start_height)
    return {
        "transfers": total, "senders": len(senders), "submitters": len(subs),
        "presign_s": round(sign_s, 2), "acked": acked, "included": included,
        "submit_window_s": round(submit_window, 2) if submit_window else None,
        "submit_tx_per_s": round(acked / submit_window, 1) if submit_window else None,
        "inclusion_window_s": round(incl_window, 2) if incl_window else None,
        "inclusion_tx_per_s": round(included / incl_window, 1) if incl_window else None,
        "blocks_produced": end_height - start_height,
        "blocks_with_transfers": max_h - start_height,
        "throttled_429": run.throttled,
        "last_tx_latency_ms_p50": ms(pct(lat, 50)), "last_tx_latency_ms_p99": ms(pct(lat, 99)),
        "node_cpu_s": round(cpu1 - cpu0, 2),
        "node_cpu_ms_per_tx": round((cpu1 - cpu0) * 1000 / included, 3) if included else None,
        "errors": sum(run.errors.values()), "error_reasons": dict(run.errors),
    }


# ----------------------------------------------------------------------------- main


def print_table(res: dict[str, Any]) -> None:
    """Compact human-readable summary."""
    a, b = res.get("phase_a"), res.get("phase_b")
    rows: list[tuple[str, Any]] = []
    if a:
        rows += [
            ("A miners / mode / wall s", f"{a['miners']} / {a['mode']} / {a['wall_s']}"),
            ("A accepted rounds (per s)", f"{a['accepted']} ({a['accepted_per_s']}/s), "
             f"{a['loops_per_round']} loops/round"),
            ("A rejected", f"{a['rejected']} {a['rejected_reasons'] or ''}"),
            ("A rate limited (429)", a["rate_limited"]),
            ("A commit ms p50/p99 (node mean)",
             f"{a['commit_ms_p50']} / {a['commit_ms_p99']} ({a['node_commit_ms_mean']})"),
            ("A reveal ms p50/p99 (node mean)",
             f"{a['reveal_ms_p50']} / {a['reveal_ms_p99']} ({a['node_reveal_ms_mean']})"),
            ("A audit CPU ms mean / reveal outcomes",
             f"{a['node_audit_cpu_ms_mean']} / {a['reveal_outcomes']}"),
            ("A node CPU s (per round)", f"{a['node_cpu_s']} ({a['node_cpu_s_per_round']})"),
            ("A round ms p50/p99 (compute p50)",
             f"{a['round_ms_p50']} / {a['round_ms_p99']} ({a['compute_ms_p50']})"),
            ("A challenge / claim ms p50",
             f"{a['challenge_ms_p50']} / {a['claim_ms_p50']}"),
            ("A claims sent / included / skipped",
             f"{a['claims_sent']} / {a['claims_included']} / "
             f"{a['claims_skipped_reward_below_fee']} (reward < fee)"),
            ("A errors", f"{a['errors']} {a['error_reasons'] or ''}"),
        ]
    if b:
        rows += [
            ("B transfers / senders / submitters",
             f"{b['transfers']} / {b['senders']} / {b['submitters']} "
             f"(presigned in {b['presign_s']} s)"),
            ("B acked / included", f"{b['acked']} / {b['included']}"),
            ("B submit rate tx/s", f"{b['submit_tx_per_s']} over {b['submit_window_s']} s"),
            ("B inclusion tx/s", f"{b['inclusion_tx_per_s']} over {b['inclusion_window_s']} s"),
            ("B blocks produced (with transfers)",
             f"{b['blocks_produced']} ({b['blocks_with_transfers']})"),
            ("B last-tx latency ms p50/p99",
             f"{b['last_tx_latency_ms_p50']} / {b['last_tx_latency_ms_p99']}"),
            ("B node CPU s (ms per tx)", f"{b['node_cpu_s']} ({b['node_cpu_ms_per_tx']})"),
            ("B 429 retries", b["throttled_429"]),
            ("B errors", f"{b['errors']} {b['error_reasons'] or ''}"),
        ]
    rows += [("node log ERROR lines", res["node_log_errors"]),
             ("node exit code", res["node_exit_code"]), ("total s", res["total_s"])]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


#: A per-minute limit no benchmark reaches: the limit lifted.
UNLIMITED = 1_000_000

_LIMIT_OPTIONS = (("ip_rate", "--ip-rate"), ("worker_rate", "--worker-rate"),
                  ("max_open", "--max-open"), ("tx_rate", "--tx-rate"),
                  ("reveal_rate", "--reveal-rate"))


def node_limit_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The `node start` options setting the rate limits asked for (`--no-limits`: all of
    them at `UNLIMITED`; an option left unset keeps the node's policy)."""
    out: list[str] = []
    for attr, option in _LIMIT_OPTIONS:
        value = UNLIMITED if args.no_limits else getattr(args, attr)
        if value is not None:
            out += [option, str(value)]
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--miners", type=int, default=8, help="concurrent simulated miners")
    p.add_argument("--miner-mode", choices=("process", "thread"), default="process")
    p.add_argument("--miner-blas-threads", type=int, default=1,
                   help="OPENBLAS/OMP threads of each miner process (process mode)")
    p.add_argument("--seconds", type=float, default=20.0, help="phase A duration")
    p.add_argument("--round-seconds", type=float, default=0.5, help="compute time per round")
    p.add_argument("--max-rounds", type=int, default=10_000, help="per-miner round cap")
    p.add_argument("--n", type=int, default=128, help="matrix size of the rounds")
    p.add_argument("--transfers", type=int, default=2000, help="phase B transfers (0: skip)")
    p.add_argument("--senders", type=int, default=64, help="phase B funded sender keys")
    p.add_argument("--submitters", type=int, default=4, help="phase B concurrent clients")
    p.add_argument("--block-time", type=float, default=1.0, help="node block time (s)")
    p.add_argument("--audit-mode", choices=("rows", "full"), default="rows",
                   help="the node's audit mode (SPEC 3 v1.1)")
    p.add_argument("--audit-rows", type=int, default=16, help="rows per audited sample")
    p.add_argument("--json-out", type=Path, help="also write the JSON result here")
    p.add_argument("--ip-rate", type=int, help="node: challenge requests/min per IP "
                   "(default: the node's policy)")
    p.add_argument("--worker-rate", type=int, help="node: challenge requests/min per worker "
                   "(default: the node's policy)")
    p.add_argument("--max-open", type=int, help="node: open challenges per worker "
                   "(default: the node's policy)")
    p.add_argument("--tx-rate", type=int, default=UNLIMITED,
                   help="node: POST /v1/transactions per minute per IP (default: lifted)")
    p.add_argument("--reveal-rate", type=int, default=UNLIMITED,
                   help="node: reveals per minute per IP (default: lifted)")
    p.add_argument("--no-limits", action="store_true",
                   help="lift every rate limit of the node (the options above are ignored)")
    args = p.parse_args(argv)
    if min(args.miners, args.senders, args.submitters) < 1 or args.seconds <= 0 \
            or args.round_seconds <= 0 or args.block_time < 0.05 or args.transfers < 0:
        p.error("counts must be >= 1, durations > 0, --block-time >= 0.05")
    limits = node_limit_args(args)
    if any(int(v) < 1 for v in limits[1::2]):
        p.error("rate limits must be >= 1")
    if args.transfers > 64 * args.senders:
        print(f"note: {args.transfers} transfers over {args.senders} senders exceeds the "
              "64-pending per-sender limit; submitters will back off on 429", flush=True)

    t_start = time.perf_counter()
    miner_keys = [PrivateKey.generate() for _ in range(args.miners)]
    senders = [PrivateKey.generate() for _ in range(args.senders)]
    alloc = {k.public_key.address: FUNDS for k in miner_keys + senders}
    results: dict[str, Any] = {"args": {k: (str(v) if isinstance(v, Path) else v)
                                        for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="hc-load-") as tmp:
        home, data_dir = Path(tmp) / "home", Path(tmp) / "node"
        home.mkdir()
        files = init_data_dir(data_dir, allocations=alloc,
                              block_time_ms=int(args.block_time * 1000))
        node = NodeProcess(home, data_dir, args.block_time,
                           ("--audit-mode", args.audit_mode, "--audit-rows", str(args.audit_rows),
                            *limits))
        results["node_limits"] = dict(zip(limits[::2], map(int, limits[1::2]), strict=True))
        print(f"node pid {node.pid} at {node.url} chain={files.genesis.chain_id}", flush=True)
        try:
            print(f"phase A: {args.miners} miners x {args.seconds:g} s, rounds of "
                  f"{args.round_seconds:g} s at n={args.n} ...", flush=True)
            results["phase_a"] = phase_a(node, miner_keys, args)
            if args.transfers:
                print(f"phase B: {args.transfers} transfers from {args.senders} senders ...",
                      flush=True)
                results["phase_b"] = phase_b(node, senders, args)
        except (HashCloudError, OSError, RuntimeError, queue.Empty, httpx.HTTPError) as exc:
            results["fatal"] = f"{type(exc).__name__}: {exc}"
        finally:
            problems = node.log_problems()
            results["node_exit_code"] = node.stop()
            results["node_log_errors"] = len(problems)
            results["node_log_sample"] = problems[:5]
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    print_table(results)
    failures = []
    if "fatal" in results:
        failures.append(results["fatal"])
    for phase in ("phase_a", "phase_b"):
        if results.get(phase, {}).get("errors"):
            failures.append(f"{phase}: {results[phase]['error_reasons']}")
    if results["node_log_errors"]:
        failures.append(f"node logged errors: {results['node_log_sample']}")
    # uvicorn re-raises a captured SIGTERM after its graceful shutdown, so -15 is a clean stop;
    # None means it ignored SIGTERM for 15 s and had to be killed.
    if results["node_exit_code"] not in (0, -signal.SIGTERM):
        failures.append(f"node exit code {results['node_exit_code']}")
    for f in failures:
        print(f"FAIL {f}")
    results["ok"] = not failures
    line = json.dumps(results, sort_keys=True)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    print(line)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

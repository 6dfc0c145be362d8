"""Benchmark the node's CPU per audited reveal (SPEC 3 v1.1) against one raw 1-thread GEMM.

Everything on the node side goes through the real `PocValidator` (a temporary data
directory, a fake clock, the real challenge journal and histories): for each n, in one run,

(a) the CPU time of one raw n x n float32 GEMM of two prepared matrices with one BLAS
    thread (`threadpool_limits(1, "blas")`, best of 3): one mining loop's GEMM;
(b) the node's thread CPU time (`time.thread_time`) per audited honest reveal in the default
    `rows` mode (m = 3 audited samples, k = min(n, 16) rows each), end to end:
    `RevealRequest.model_validate_json(body)` of the JSON body exactly as the HTTP request
    carries it, then `PocValidator.reveal` (the worker's ECDSA reveal signature, the shape,
    the inclusion proofs, every output hashed against its leaf, the row audit, the receipt's
    signature, the journal and the history). The round before it is real: a challenge issued
    to a fresh worker key, a few honest loops (`run_loops` with the NumPy engine), a signed
    commitment, and the reveal built as `client.round.run_online_round` builds it. Best of
    `--repeat` rounds; (b)/(a) is the audit's cost in mining loops. A breakdown re-times the
    pure steps alone (parse, signature, inclusion + output hashing) and takes the row audit's
    CPU from the validator's own `observe_audit` metric;
(c) the same for a garbage reveal: the miner committed random outputs (leaves
    `leaf_hash(loop_seed(seed, i), garbage_i)` under a valid Merkle tree), so the reveal is
    correctly signed, its inclusion paths hold and its outputs hash to their leaves, and only
    the row audit fails: all k rows of the first audited sample are recomputed (`check_rows`)
    before the comparison. The reveal must raise AuditFailed;
(d) for comparison the v1 whole-leaf audit: 3 x `engine.rows.loop_leaf` (best of 3, once at
    n = 4096), over (a).

Targets: (b)/(a) <= 0.40 at n = 2048, <= 0.20 at n = 4096; (c) <= 0.2 s at n = 4096.
The machine's load average and core count are printed with the figures.

Usage: python scripts/bench_audit.py [--quick] [--json] [--loops L] [--repeat R]
(--quick: n = 1024 only; --json: one JSON object on stdout; progress goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from hashcloud.api.models import (
    ChallengeRequest,
    CommitRequest,
    DeviceModel,
    RevealRequest,
    SampleModel,
)
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import MerkleTree
from hashcloud.crypto.signatures import ChainDomain, clear_verification_cache, sign
from hashcloud.engine.gemm import leaf_hash, loop_seed
from hashcloud.engine.mining import Engine
from hashcloud.engine.rows import loop_leaf
from hashcloud.errors import AuditFailed
from hashcloud.node.config import ValidatorConfig
from hashcloud.node.validator import PocValidator
from hashcloud.poc.audit import check_inclusion, check_outputs, check_reveal_signature
from hashcloud.poc.audit_policy import AuditPolicy
from hashcloud.poc.challenge import Challenge, challenge_request_bytes
from hashcloud.poc.plan import AuditPlan
from hashcloud.poc.round import (
    RoundWork,
    make_samples,
    run_loops,
    sample_outputs,
    sign_commit,
    sign_reveal,
)

SIZES = (1024, 2048, 4096)
M = 3  # audited samples per reveal (SPEC 3 default base_m)
K = 16  # rows per audited sample (SPEC 3 v1.1 default, min(n, 16))
TARGETS = {2048: 0.40, 4096: 0.20}
GARBAGE_TARGET_S = 0.2
GARBAGE_TARGET_N = 4096

CHAIN = ChainDomain("hc-bench", "be7c" * 4)
NODE_KEY = PrivateKey(0xC0FFEE)
HEAD_HEIGHT = 7
HEAD_HASH = "ab" * 32
CLIENT_IP = "192.0.2.1"
T0 = 1_700_000_000.0
DEVICE = DeviceModel(name="bench cpu", backend="numpy")

#: m is exactly `base_m` = 3: no raise for a claim near the peak, for a departure from the
#: worker's mean rate or for recent failures (the garbage rounds fail on purpose), no
#: trusted discount and no cooldown. Every round also uses a fresh worker key.
POLICY = AuditPolicy(
    base_m=M, trusted_m=M, trusted_after=10**9, near_peak_fraction=1.0,
    departure_high=1e12, departure_low=1e-12, history_min_rounds=10**9, per_failure_m=0,
    audit_all_after=10**9, cooldown_after=10**9,
)
CONFIG = ValidatorConfig(audit_mode="rows", audit_rows=K, policy=POLICY,
                         ip_failures_per_hour=10**6, requests_per_minute_per_ip=10**6,
                         requests_per_minute_per_address=10**6)


def log(msg: str) -> None:
    """Progress on stderr (stdout carries only the figures)."""
    print(msg, file=sys.stderr, flush=True)


class FakeClock:
    """The validator's settable clock (unix seconds), as in the node tests."""

    def __init__(self, t: float = T0) -> None:
        """A clock standing at `t`."""
        self.t = t

    def __call__(self) -> float:
        """The current time."""
        return self.t

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.t += seconds


class AuditMetrics:
    """A `ValidatorMetrics` keeping the last audit's thread CPU seconds (the row audit)."""

    def __init__(self) -> None:
        """Nothing observed yet."""
        self.last_audit_s: float | None = None

    def observe_audit(self, n: int, mode: str, cpu_seconds: float) -> None:
        """Keep the row audit's CPU seconds."""
        self.last_audit_s = cpu_seconds

    def count_reveal(self, outcome: str) -> None:
        """Ignore."""


@dataclass
class Cpu:
    """One timed section: thread CPU, process CPU and wall seconds."""

    thread: float
    process: float
    wall: float


def timed(fn: Callable[[], object]) -> tuple[Cpu, object]:
    """Run `fn` once; its CPU and wall times and its result (or the exception it raised)."""
    t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
    try:
        result: object = fn()
    except Exception as exc:  # noqa: BLE001 - the caller checks what was raised
        result = exc
    return Cpu(time.thread_time() - t0, time.process_time() - p0,
               time.perf_counter() - w0), result


def best_thread_cpu(fn: Callable[[], object], repeat: int) -> float:
    """Best thread CPU seconds of `repeat` calls of `fn`."""
    return min(timed(fn)[0].thread for _ in range(repeat))


def raw_gemm_s(n: int) -> tuple[float, float]:
    """(a): one n x n float32 GEMM of prepared matrices with one BLAS thread, best of 3;
    returns (thread CPU, process CPU) of the best run."""
    rng = np.random.default_rng(n)
    a = rng.integers(-64, 64, size=(n, n)).astype(np.float32)
    b = rng.integers(-64, 64, size=(n, n)).astype(np.float32)
    c = np.empty((n, n), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        np.matmul(a, b, out=c)  # warm-up
        runs = [timed(lambda: np.matmul(a, b, out=c))[0] for _ in range(3)]
    best = min(runs, key=lambda r: r.thread)
    return best.thread, best.process


@dataclass
class Node:
    """A PocValidator over a temporary data dir, its clock and metrics."""

    validator: PocValidator
    clock: FakeClock
    metrics: AuditMetrics
    next_key: int = 0x5EED_0000

    def worker(self) -> PrivateKey:
        """A fresh worker key (no history, no open challenges)."""
        self.next_key += 1
        return PrivateKey(self.next_key)

    def issue(self, key: PrivateKey, n: int) -> Challenge:
        """A challenge for `key`, asked for with a signed request (as `request_challenge`)."""
        now_ms = int(self.clock() * 1000)
        address = key.public_key.address
        req = ChallengeRequest(
            worker_address=address, public_key=key.public_key.data, n=n,
            request_time_ms=now_ms,
            signature=sign(key, challenge_request_bytes(CHAIN, address, n, now_ms)))
        return self.validator.issue(req, HEAD_HEIGHT, HEAD_HASH, CLIENT_IP).challenge

    def commit(self, key: PrivateKey, ch: Challenge, work: RoundWork) -> tuple[list[int],
                                                                                 AuditPlan]:
        """Commit `work` (after its compute time has passed); the drawn indices and plan."""
        self.clock.advance(work.compute_time + 1.0)
        com = self.validator.commit(ch.challenge_id, CommitRequest(
            loops=work.loops, compute_time=work.compute_time, merkle_root=work.merkle_root,
            device=DEVICE, device_signature=sign_commit(key, ch.challenge_id, work)))
        plan = com.audit
        if plan.mode != "rows" or len(plan.audited) != M or any(
                len(rows) != min(ch.n, K) for rows in plan.rows):
            raise RuntimeError(f"unexpected audit plan: mode={plan.mode} m={len(plan.audited)}")
        return list(com.indices), plan


@dataclass
class RevealCase:
    """A signed reveal ready to send: the HTTP body and what the breakdown needs."""

    challenge: Challenge
    key: PrivateKey
    body: bytes
    root: bytes
    loops: int
    plan: AuditPlan
    compute_time: float


def reveal_body(key: PrivateKey, ch: Challenge, work: RoundWork, indices: list[int],
                plan: AuditPlan, outputs: dict[int, bytes]) -> RevealCase:
    """The worker's signed reveal as `run_online_round` builds it, serialised as the HTTP body."""
    samples = make_samples(work.tree, work.leaves, indices, outputs)
    signature = sign_reveal(key, CHAIN, ch.challenge_id, work.tree.root, samples)
    req = RevealRequest(
        samples=[SampleModel.model_validate(s, from_attributes=True) for s in samples],
        signature=signature)
    return RevealCase(ch, key, req.model_dump_json().encode(), work.tree.root, work.loops,
                      plan, work.compute_time)


def honest_case(node: Node, engine: Engine, loops: int) -> RevealCase:
    """Issue, mine `loops` honest loops, commit, recompute the audited outputs, sign."""
    key = node.worker()
    ch = node.issue(key, engine.n)
    work = run_loops(engine, ch.seed, 0, max_loops=loops)
    indices, plan = node.commit(key, ch, work)
    outputs = sample_outputs(ch.seed, ch.n, plan.audited, leaves=work.leaves)
    return reveal_body(key, ch, work, indices, plan, outputs)


def garbage_case(node: Node, n: int, loops: int, compute_time: float,
                 rng: np.random.Generator) -> RevealCase:
    """Issue, commit random outputs under a valid tree, reveal them correctly signed."""
    key = node.worker()
    ch = node.issue(key, n)
    garbage = [rng.bytes(8 * n) for _ in range(loops)]
    leaves = [leaf_hash(loop_seed(ch.seed, i), out) for i, out in enumerate(garbage)]
    work = RoundWork(ch.seed, n, leaves, compute_time, False, MerkleTree(leaves))
    indices, plan = node.commit(key, ch, work)
    return reveal_body(key, ch, work, indices, plan, {i: garbage[i] for i in plan.audited})


def node_reveal(node: Node, case: RevealCase) -> tuple[Cpu, object]:
    """(b)/(c): the node's side, timed: parse the HTTP body, then `PocValidator.reveal`."""
    node.metrics.last_audit_s = None

    def run() -> object:
        req = RevealRequest.model_validate_json(case.body)
        return node.validator.reveal(case.challenge.challenge_id, req, CLIENT_IP)

    return timed(run)


def breakdown(case: RevealCase, audit_s: float, total_s: float) -> dict[str, float]:
    """Thread CPU of the pure steps of one reveal, re-timed alone (best of 3), the row audit
    (the validator's metric) and the rest: the shape check, the receipt's signature (or the
    failure's bookkeeping), the journal and the history."""
    req = RevealRequest.model_validate_json(case.body)
    samples = [s.revealed() for s in req.samples]
    worker_key = case.key.public_key
    ch = case.challenge
    parse = best_thread_cpu(lambda: RevealRequest.model_validate_json(case.body), 3)

    def signature_check() -> None:
        clear_verification_cache()  # the reveal already verified it: time it afresh
        check_reveal_signature(worker_key, CHAIN, ch.challenge_id, case.root, samples,
                               req.signature)

    signature = best_thread_cpu(signature_check, 3)

    def inclusion_outputs() -> None:
        check_inclusion(samples, case.root, case.loops)
        check_outputs(ch.seed, samples)

    cheap = best_thread_cpu(inclusion_outputs, 3)
    return {"parse_s": parse, "signature_s": signature, "inclusion_outputs_s": cheap,
            "row_audit_s": audit_s, "rest_s": total_s - parse - signature - cheap - audit_s}


def timed_reveals(node: Node, cases: list[RevealCase], honest: bool) -> tuple[list[Cpu],
                                                                              list[float]]:
    """Send each prepared reveal to the node, timed (`node_reveal`); check its outcome.

    Returns the timings and the row audit's CPU (the validator's metric) of each."""
    cpus, audits = [], []
    for case in cases:
        clear_verification_cache()  # every reveal's signature is checked from scratch
        cpu, result = node_reveal(node, case)
        if honest and (isinstance(result, BaseException) or not result[1].accepted
                       or result[1].audited != M):
            raise RuntimeError(f"the honest reveal was not accepted with m={M}: {result!r}")
        if not honest and (not isinstance(result, AuditFailed) or "row" not in str(result)):
            raise RuntimeError(f"the garbage reveal did not fail its row audit: {result!r}")
        cpus.append(cpu)
        audits.append(node.metrics.last_audit_s or 0.0)
    return cpus, audits


def bench_n(n: int, loops: int, repeat: int, rng: np.random.Generator) -> dict:
    """All figures for one n (see the module docstring).

    The miner's side of every round (multi-threaded mining, the audited outputs) runs
    first; the node's side is timed only after the engine is closed and its BLAS threads
    have gone idle, so nothing else runs in the process while a reveal is timed."""
    with tempfile.TemporaryDirectory(prefix="bench_audit_") as tmp:
        clock, metrics = FakeClock(T0), AuditMetrics()
        node = Node(PocValidator(NODE_KEY, CHAIN, Path(tmp), CONFIG, clock=clock,
                                 metrics=metrics), clock, metrics)
        try:
            with Engine("numpy", n=n) as engine:
                honest_cases = []
                for r in range(repeat):
                    log(f"n={n}: honest round {r + 1}/{repeat}: mining {loops} loops")
                    honest_cases.append(honest_case(node, engine, loops))
            garbage_cases = [garbage_case(node, n, loops, honest_cases[0].compute_time, rng)
                             for _ in range(repeat)]
            time.sleep(1.0)  # OpenBLAS workers spin a while after a multi-threaded GEMM
            log(f"n={n}: raw GEMM")
            gemm_thread, gemm_process = raw_gemm_s(n)
            log(f"n={n}: {repeat} honest and {repeat} garbage reveals")
            honest, audits = timed_reveals(node, honest_cases, honest=True)
            garbage, garbage_audits = timed_reveals(node, garbage_cases, honest=False)
        finally:
            node.validator.close()
    j = min(range(repeat), key=lambda i: honest[i].thread)
    g = min(range(repeat), key=lambda i: garbage[i].thread)
    parts = breakdown(honest_cases[j], audits[j], honest[j].thread)
    garbage_parts = breakdown(garbage_cases[g], garbage_audits[g], garbage[g].thread)
    log(f"n={n}: v1 whole-leaf audit")
    best = honest_cases[j]
    full_s = best_thread_cpu(
        lambda: [loop_leaf(best.challenge.seed, i, n) for i in best.plan.audited],
        1 if n >= 4096 else 3)
    return {
        "n": n, "loops": loops, "repeat": repeat,
        "raw_gemm_s": gemm_thread, "raw_gemm_process_s": gemm_process,
        "reveal_s": honest[j].thread, "reveal_process_s": honest[j].process,
        "reveal_wall_s": honest[j].wall, "reveal_all_s": [c.thread for c in honest],
        "reveal_median_s": statistics.median(c.thread for c in honest),
        "ratio": honest[j].thread / gemm_thread, "target": TARGETS.get(n),
        "reveal_breakdown": parts,
        "garbage_s": garbage[g].thread, "garbage_process_s": garbage[g].process,
        "garbage_wall_s": garbage[g].wall, "garbage_all_s": [c.thread for c in garbage],
        "garbage_ratio": garbage[g].thread / gemm_thread,
        "garbage_target_s": GARBAGE_TARGET_S if n == GARBAGE_TARGET_N else None,
        "garbage_breakdown": garbage_parts,
        "full_audit_s": full_s, "full_ratio": full_s / gemm_thread,
    }


def machine() -> dict:
    """Load average, cores and the BLAS in use."""
    blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')}".strip()
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"loadavg": list(os.getloadavg()), "cpu_count": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)), "blas": blas}


def verdict(value: float, target: float | None) -> str:
    """`  (target <= X: ok|MISSED)`, or nothing without a target."""
    if target is None:
        return ""
    return f"  (target <= {target:.2f}: {'ok' if value <= target else 'MISSED'})"


def parts_line(b: dict[str, float]) -> str:
    """A breakdown in milliseconds."""
    return (f"parse {1e3 * b['parse_s']:.2f}, signature {1e3 * b['signature_s']:.2f}, "
            f"inclusion+outputs {1e3 * b['inclusion_outputs_s']:.2f}, row audit "
            f"{1e3 * b['row_audit_s']:.2f}, rest {1e3 * b['rest_s']:.2f} ms")


def print_text(info: dict, results: list[dict]) -> None:
    """The human-readable report."""
    load = ", ".join(f"{x:.2f}" for x in info["loadavg"])
    print(f"machine: {info['cpu_count']} cores ({info['usable_cpus']} usable), load average "
          f"{load} at start, {', '.join(f'{x:.2f}' for x in info['loadavg_end'])} at end; "
          f"BLAS {'; '.join(info['blas'])}")
    print(f"rows audit: m={M}, k=min(n,{K}); node thread CPU seconds, best of each case's "
          "rounds")
    for r in results:
        print(f"n={r['n']}  ({r['loops']} loops per round, {r['repeat']} rounds per case)")
        print(f"  (a) raw 1-thread GEMM             {r['raw_gemm_s']:8.4f} s")
        print(f"  (b) honest reveal, parse+reveal   {r['reveal_s']:8.4f} s   (b)/(a) = "
              f"{r['ratio']:.3f}{verdict(r['ratio'], r['target'])}")
        print(f"        all rounds {', '.join(f'{x:.4f}' for x in r['reveal_all_s'])} s; "
              f"process CPU {r['reveal_process_s']:.4f} s, wall {r['reveal_wall_s']:.4f} s")
        print(f"        {parts_line(r['reveal_breakdown'])}")
        print(f"  (c) garbage reveal, parse+reveal  {r['garbage_s']:8.4f} s   (c)/(a) = "
              f"{r['garbage_ratio']:.3f}{verdict(r['garbage_s'], r['garbage_target_s'])}")
        print(f"        all rounds {', '.join(f'{x:.4f}' for x in r['garbage_all_s'])} s; "
              f"process CPU {r['garbage_process_s']:.4f} s, wall {r['garbage_wall_s']:.4f} s")
        print(f"        {parts_line(r['garbage_breakdown'])}")
        print(f"  (d) v1 audit, 3 x loop_leaf       {r['full_audit_s']:8.4f} s   (d)/(a) = "
              f"{r['full_ratio']:.3f}")


def main() -> None:
    """Parse options, run the benchmark for each n and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n=1024 only (smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--loops", type=int, default=6,
                        help="honest loops per round (s = loops; at least %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per case (best is kept)")
    args = parser.parse_args()
    if args.loops < M or args.repeat < 1:
        parser.error(f"--loops must be at least {M} and --repeat at least 1")
    info = machine()
    rng = np.random.default_rng(2024)
    sizes = SIZES[:1] if args.quick else SIZES
    results = [bench_n(n, args.loops, args.repeat, rng) for n in sizes]
    info["loadavg_end"] = list(os.getloadavg())
    if args.json:
        print(json.dumps({"machine": info, "m": M, "k": K, "results": results}))
    else:
        print_text(info, results)


if __name__ == "__main__":
    main()

"""Benchmark the node's SPEC 3 v1.1 row audit against one raw single-threaded float32 GEMM.

For each n, in one run: (a) CPU time of one raw n x n float32 GEMM with one BLAS thread (best
of 3); (b) CPU time of the audit work of one reveal with m=3 audited samples and k=16 rows
each: per sample, SHA256(loop_seed || output) against the leaf plus `row_digests_of` for 16
random rows, compared with the output's words (best of 3); (b)/(a) is the cost of auditing a
reveal in units of one mining loop. At n=4096 also (c): a garbage reveal, i.e. one sample
whose first checked row is wrong (one leaf hash plus one 1-row `row_digests_of`). For
comparison, the v1 full-leaf audit (3 x `compute_leaf`, one BLAS thread). The outputs the
miner reveals (`loop_output`) are computed first, untimed: that is the miner's work.

Targets: (b)/(a) <= 0.40 at n=2048, <= 0.20 at n=4096; (c) <= 0.2 s.

Usage: python scripts/bench_audit.py [--quick] [--json]   (--quick: n=1024 only)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from hashcloud.engine.gemm import compute_leaf, leaf_hash, loop_seed
from hashcloud.engine.rows import loop_output, row_digests_of

SEED = hashlib.sha256(b"bench_audit").hexdigest()
SAMPLES = 3  # m: audited samples per reveal (SPEC 3 default)
ROWS = 16  # k: rows per audited sample (SPEC 3 v1.1 default min(n, 16))
TARGETS = {2048: 0.40, 4096: 0.20}
GARBAGE_TARGET_S = 0.2


def cpu_best(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best CPU time (`time.process_time`, all threads of the process) of `repeat` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def raw_gemm_s(n: int) -> float:
    """(a): one n x n float32 GEMM of prepared matrices with one BLAS thread, best of 3."""
    rng = np.random.default_rng(n)
    a = rng.integers(-64, 64, size=(n, n)).astype(np.float32)
    b = rng.integers(-64, 64, size=(n, n)).astype(np.float32)
    c = np.empty((n, n), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        np.matmul(a, b, out=c)  # warm-up
        return cpu_best(lambda: np.matmul(a, b, out=c))


def audit_reveal(n: int, samples: list[tuple[int, bytes, bytes, list[int]]]) -> None:
    """The node's row-audit work for one reveal (SPEC 3 v1.1); raises if a check fails."""
    for i, leaf, output, drawn in samples:
        if leaf_hash(loop_seed(SEED, i), output) != leaf:
            raise AssertionError(f"leaf mismatch at sample {i}")
        words = np.frombuffer(output, dtype="<u8")
        if row_digests_of(SEED, i, n, drawn) != [int(words[r]) for r in drawn]:
            raise AssertionError(f"row digest mismatch at sample {i}")


def bench_n(n: int, rng: np.random.Generator) -> dict:
    """All figures for one n (see the module docstring)."""
    gemm_s = raw_gemm_s(n)
    samples = []
    for i in (3, 1000, 77777):
        output = loop_output(SEED, i, n)  # the miner's work, untimed
        drawn = rng.choice(n, size=min(n, ROWS), replace=False).tolist()
        samples.append((i, leaf_hash(loop_seed(SEED, i), output), output, drawn))
    audit_s = cpu_best(lambda: audit_reveal(n, samples))
    with threadpool_limits(limits=1, user_api="blas"):
        full_s = cpu_best(lambda: [compute_leaf(SEED, i, n) for i, *_ in samples], repeat=1)
    result = {"n": n, "raw_gemm_s": gemm_s, "row_audit_s": audit_s,
              "ratio": audit_s / gemm_s, "target": TARGETS.get(n),
              "full_audit_s": full_s, "full_ratio": full_s / gemm_s}
    if n == 4096:
        i, _, output, _ = samples[0]
        bad = bytearray(output)
        bad[8 * samples[0][3][0]] ^= 1  # the first checked row of the first sample is wrong
        r = samples[0][3][0]
        lseed = loop_seed(SEED, i)

        def garbage() -> bool:
            """One garbage sample: the leaf hash, then the first row (which fails)."""
            leaf_hash(lseed, bytes(bad))
            word = int(np.frombuffer(bytes(bad), dtype="<u8")[r])
            return row_digests_of(SEED, i, n, [r]) == [word]

        assert not garbage()
        result["garbage_s"] = cpu_best(garbage)
    return result


def main() -> None:
    """Parse options, run the benchmark for each n and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n=1024 only (smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per n")
    args = parser.parse_args()
    rng = np.random.default_rng(2024)
    sizes = (1024,) if args.quick else (1024, 2048, 4096)
    for n in sizes:
        r = bench_n(n, rng)
        if args.json:
            print(json.dumps(r))
            continue
        target = ""
        if r["target"] is not None:
            verdict = "ok" if r["ratio"] <= r["target"] else "MISSED"
            target = f"  (target <= {r['target']:.2f}: {verdict})"
        print(f"n={n}")
        print(f"  (a) raw 1-thread GEMM      {r['raw_gemm_s']:8.3f} s CPU")
        print(f"  (b) row audit m={SAMPLES} k={ROWS}   {r['row_audit_s']:8.3f} s CPU   "
              f"(b)/(a) = {r['ratio']:.3f}{target}")
        print(f"  v1 full audit 3 x leaf    {r['full_audit_s']:8.3f} s CPU   "
              f"ratio = {r['full_ratio']:.3f}")
        if "garbage_s" in r:
            ok = "ok" if r["garbage_s"] <= GARBAGE_TARGET_S else "MISSED"
            print(f"  (c) garbage reveal        {r['garbage_s']:8.3f} s CPU   "
                  f"(target <= {GARBAGE_TARGET_S}: {ok})")


if __name__ == "__main__":
    main()

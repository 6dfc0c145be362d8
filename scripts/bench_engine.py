"""Print the HC-GEMM-v1 engine benchmark (SPEC 1): mining rate vs the bare GEMM it wraps.

Usage: python scripts/bench_engine.py [--n 1024 256] [--seconds 10] [--backend auto]
       [--lanes L] [--json]

By default both sizes of issue 10's CPU targets are measured in the same run (n=1024 and
n=256), each against a raw float32 GEMM of the same size measured in alternating windows.
The CPU miner uses the fused C passes of `hc_kernels.h` when a C compiler is present
(`HASHCLOUD_NO_C_KERNELS=1` forces the NumPy ufunc path; the line says which ran).
"""

from __future__ import annotations

import argparse
import json

from hashcloud.engine.bench import bench
from hashcloud.engine.kernels import cpu_accelerator


def main() -> None:
    """Parse options, run `bench` per size and print the results (and the ratios)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1024, 256],
                        help="matrix sizes (multiples of 64)")
    parser.add_argument("--seconds", type=float, default=10.0, help="benchmark time per size")
    parser.add_argument("--backend", choices=["auto", "numpy", "cupy"], default="auto")
    parser.add_argument("--lanes", type=int, default=None,
                        help="CPU mining lanes (default: one per core from n=256)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = [bench(args.backend, n, args.seconds, lanes=args.lanes) for n in args.n]
    cpu_passes = "fused C (hc_kernels.h)" if cpu_accelerator() else "NumPy ufuncs"
    if args.json:
        print(json.dumps({"cpu_passes": cpu_passes, "results": results}))
        return
    for result in results:
        print(f"backend   {result['backend']} on {result['device']} ({result['reason']})")
        print(f"n         {result['n']}  (batch {result['batch_size']}, {result['loops']} loops, "
              f"{result['lanes']} lanes, CPU passes: {cpu_passes})")
        print(f"mining    {result['loops_per_s']:.2f} loops/s = "
              f"{result['effective_gflops']:.1f} GFLOP/s effective")
        print(f"raw GEMM  {result['raw_gemm_gflops']:.1f} GFLOP/s (same run)")
        peaks = ", ".join(f"{k} {v:.2f}%" for k, v in result.get("percent_of_peak", {}).items())
        print(f"ratio     {result['ratio']:.3f}   (of peak: {peaks})")
    print("ratios    " + "  ".join(f"n={r['n']}: {r['ratio']:.3f}" for r in results))


if __name__ == "__main__":
    main()

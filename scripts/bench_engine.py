"""Print the HC-GEMM-v1 engine benchmark (SPEC 1): mining rate vs the bare float32 GEMM.

Usage: python scripts/bench_engine.py [--n 1024] [--seconds 10] [--backend auto] [--json]
"""

from __future__ import annotations

import argparse
import json

from hashcloud.engine.bench import bench


def main() -> None:
    """Parse options, run `bench` and print its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="matrix size (multiple of 64)")
    parser.add_argument("--seconds", type=float, default=10.0, help="total benchmark time")
    parser.add_argument("--backend", choices=["auto", "numpy", "cupy"], default="auto")
    parser.add_argument("--lanes", type=int, default=None,
                        help="CPU mining lanes (default: one per core from n=256)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = bench(args.backend, args.n, args.seconds, lanes=args.lanes)
    if args.json:
        print(json.dumps(result))
        return
    print(f"backend   {result['backend']} on {result['device']} ({result['reason']})")
    print(f"n         {result['n']}  (batch {result['batch_size']}, {result['loops']} loops)")
    print(f"mining    {result['loops_per_s']:.2f} loops/s = "
          f"{result['effective_gflops']:.1f} GFLOP/s effective")
    print(f"raw GEMM  {result['raw_gemm_gflops']:.1f} GFLOP/s (same run)")
    print(f"ratio     {result['ratio']:.3f}   (device peak bound {result['peak_gflops']:.0f})")


if __name__ == "__main__":
    main()

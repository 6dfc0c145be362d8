"""One-command GPU check of the HC-GEMM-v1 engine (SPEC 1): prints ONE JSON object.

Usage: python scripts/gpu_check.py [--quick] [--max-n N] [--seconds S]

What it checks (aims at < 3 minutes on one H100/H200):
- host kernels: `hc_kernels.h` built with the system C compiler reproduces the golden leaves
  (runs on any machine, with or without a GPU);
- device, driver/runtime/CuPy/NVRTC/cuBLAS versions, the per-architecture dense peaks;
- every GEMM path (int8, bf16, tf32, fp32) against the NumPy reference: n = 64, 256, 1024,
  4096, several batches with a ragged last one; the golden vectors including `gemm_large`
  (n = 1024, 4096); operands crafted so |C| reaches 2^24 (all -64 x all -64 at n = 4096)
  and its negative side (-64 x 63);
- the mining pipeline on the fastest exact path at n = 1024 for a few seconds per path:
  loops/s, per-stage CUDA-event times per loop, percent of the INT8 and BF16 dense peaks.

Verdict and exit code: "PASS" (0) every path that cuBLAS accepts is exact and the chosen one
is among them; "FAIL" (1) a path gave a wrong leaf or product, or the host kernels are wrong;
"NO_DEVICE" (2) no usable CUDA device: the JSON says why and the fix, and still carries the
host-kernel result (exit 2 like other "could not check" outcomes, so a script that expects a
GPU check does not mistake a CPU-only machine for a pass).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

import numpy as np

from hashcloud.engine import gemm
from hashcloud.engine.device import fix_for, probe_cupy
from hashcloud.engine.golden import GOLDEN_LARGE, GOLDEN_LEAVES

CHECK_SEED = "9c0ffee5"


def _host_kernels() -> dict:
    """The kernel source built for this CPU against the golden leaves (SPEC 1)."""
    from hashcloud.engine.kernels import find_c_compiler, host_library

    if find_c_compiler() is None:
        return {"ok": None, "skipped": "no C compiler"}
    lib = host_library()
    failures, checks = [], 0
    for seed, i, n, leaf_hex in GOLDEN_LEAVES + GOLDEN_LARGE[:1]:
        keys = gemm.loop_keys(seed, i, 1)
        ops = np.zeros(2 * n * n, dtype=np.int8)
        lib.hc_host_generate_a_i8(keys.ctypes.data, n, 1, ops.ctypes.data)
        lib.hc_host_generate_bt_i8(keys.ctypes.data, n, 1, ops.ctypes.data)
        a = ops[: n * n].reshape(n, n).astype(np.float32)
        bt = ops[n * n :].reshape(n, n).astype(np.float32)
        c = np.ascontiguousarray((a @ bt.T).astype(np.int32))
        digests = np.zeros(n, dtype=np.uint64)
        lib.hc_host_digest_i32(c.ctypes.data, n, n, digests.ctypes.data)
        raw = np.frombuffer(seed.encode(), dtype=np.uint8).copy()
        leaf = np.zeros(32, dtype=np.uint8)
        lib.hc_host_leaves(raw.ctypes.data, len(seed), i, 1, digests.ctypes.data, n,
                           leaf.ctypes.data)
        checks += 1
        if bytes(leaf).hex() != leaf_hex:
            failures.append(f"golden {seed[:8]}..:{i} n={n}")
    return {"ok": not failures, "checks": checks, "failures": failures}


def _versions(cp: Any = None) -> dict:
    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        from importlib.metadata import version

        out["hashcloud"] = version("hashcloud")
    except Exception:
        out["hashcloud"] = None
    if cp is None:
        return out
    out["cupy"] = getattr(cp, "__version__", None)
    for key, fn in (("cuda_runtime", lambda: cp.cuda.runtime.runtimeGetVersion()),
                    ("cuda_driver", lambda: cp.cuda.runtime.driverGetVersion()),
                    ("nvrtc", lambda: cp.cuda.nvrtc.getVersion()),
                    ("cublas", lambda: _cublas_version(cp))):
        try:
            out[key] = fn()
        except Exception as exc:
            out[key] = f"unknown ({type(exc).__name__})"
    return out


def _cublas_version(cp: Any) -> int:
    from cupy_backends.cuda.libs import cublas

    return cublas.getVersion(cp.cuda.device.get_cublas_handle())


def _reference(n: int, start: int, count: int) -> list[bytes]:
    """NumPy leaves (the CPU miner's chunked pipeline, multi-threaded BLAS)."""
    from hashcloud.engine.rows import LoopPipeline

    pipe = LoopPipeline(n)
    return [pipe.leaf(CHECK_SEED, i) for i in range(start, start + count)]


def _crafted(pipe: Any, path: Any, n: int = 4096) -> dict:
    """|C| = 2^24 exactly: every entry -64 in A and B; and -64 x 63 for the negative side."""
    results = {}
    for label, a_val, b_val in (("max_positive", -64, -64), ("max_negative", -64, 63)):
        slot = pipe._new_slot(1, path, n)
        ops = slot.operands.reshape(2, n * n)
        if path.name == "bf16":
            def enc(v: int) -> int:
                return int(np.float32(v).view(np.uint32) >> 16)
        else:
            def enc(v: int) -> int:
                return v
        with slot.stream:  # fills and GEMM on one stream: no default-stream race
            ops[0].fill(enc(a_val))
            ops[1].fill(enc(b_val))
            pipe._gemm(slot, path, n, 1)
        slot.stream.synchronize()
        c = slot.product.get()
        want = a_val * b_val * n
        exact = bool((c.astype(np.int64) == want).all())
        results[label] = {"n": n, "want": want, "exact": exact}
        del slot
    return results


def _check_path(path_name: str, refs: dict, max_n: int) -> dict:
    from hashcloud.engine.cupy_backend import GEMM_PATHS, CupyPipeline

    path = GEMM_PATHS[path_name]
    out: dict[str, Any] = {"cases": [], "golden": None, "crafted": None, "error": None}
    try:
        for (n, start, count, batch), want in refs.items():
            pipe = CupyPipeline(n, batch, path=path_name)
            got = pipe.leaves(CHECK_SEED, start, count)
            pipe.close()
            out["cases"].append({"n": n, "loops": count, "batch": batch,
                                 "batches": -(-count // batch), "exact": got == want})
        vectors = GOLDEN_LEAVES + tuple(v for v in GOLDEN_LARGE if v[2] <= max(max_n, 1024))
        probe = CupyPipeline(64, 1, path=path_name)
        out["golden"] = {"vectors": len(vectors), "exact": probe.check_golden(path, vectors)}
        out["crafted"] = _crafted(probe, path, max_n)
        probe.close()
    except Exception as exc:  # cuBLAS NOT_SUPPORTED on this architecture, ...
        out["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    out["exact"] = (out["error"] is None and all(c["exact"] for c in out["cases"])
                    and out["golden"]["exact"]
                    and all(v["exact"] for v in out["crafted"].values()))
    return out


def _mine(path_name: str, n: int, seconds: float, peaks: dict) -> dict:
    """Streaming mining calls on one path: loops/s, stage times per loop, % of peaks."""
    from hashcloud.engine.cupy_backend import CupyPipeline

    pipe = CupyPipeline(n, path=path_name)
    batch = pipe.batch_size
    pipe.leaves(CHECK_SEED, 0, 1)
    lo = 1
    pipe.stage_ms = dict.fromkeys(pipe.stage_ms, 0.0)
    pipe.batches = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pipe.leaves(CHECK_SEED, lo, batch)
        lo += batch
    wall = time.perf_counter() - t0
    loops = lo - 1
    report = pipe.stage_report()
    collected = max(1, report["batches"] * batch)
    pipe.close()
    rate = loops / wall
    ops = rate * 2.0 * n**3
    return {"n": n, "batch": batch, "loops": loops, "seconds": round(wall, 3),
            "loops_per_s": round(rate, 1), "effective_tops": round(ops / 1e12, 2),
            "stage_us_per_loop": {k: round(1e3 * v / collected, 3)
                                  for k, v in report["stage_ms"].items()},
            "percent_of_peak": {p: round(100.0 * ops / peaks[p], 2)
                                for p in ("int8", "bf16") if peaks.get(p)}}


def main() -> int:
    """Run the checks, print one JSON object, return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip n=4096 cases")
    parser.add_argument("--max-n", type=int, default=4096, help="largest n checked")
    parser.add_argument("--seconds", type=float, default=3.0, help="mining time per path")
    args = parser.parse_args()
    t_start = time.perf_counter()
    result: dict[str, Any] = {"tool": "hashcloud gpu_check", "verdict": None}
    try:
        result["host_kernels"] = _host_kernels()
    except Exception as exc:
        result["host_kernels"] = {"ok": False, "failures": [f"{type(exc).__name__}: {exc}"]}
    host_ok = result["host_kernels"].get("ok") is not False
    cuda, why_not = probe_cupy()
    if cuda is None:
        result.update(verdict="NO_DEVICE" if host_ok else "FAIL", device=None,
                      reason=why_not, fix=fix_for(why_not), versions=_versions(),
                      seconds=round(time.perf_counter() - t_start, 2))
        print(json.dumps(result))
        return 2 if host_ok else 1
    cp = cuda.xp
    result["device"] = {"name": cuda.name, "compute_capability": list(cuda.capability),
                        "dense_peak_tops": {k: round(v / 1e12, 1)
                                            for k, v in (cuda.peaks or {}).items()}}
    result["versions"] = _versions(cp)
    try:
        exact = _device_checks(args, cuda, result) and host_ok
    except Exception as exc:  # still one JSON object, with what failed
        result["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        exact = False
    result["verdict"] = "PASS" if exact else "FAIL"
    result["seconds"] = round(time.perf_counter() - t_start, 2)
    print(json.dumps(result))
    return 0 if exact else 1


def _device_checks(args: argparse.Namespace, cuda: Any, result: dict) -> bool:
    """Exactness of every path, the start-up choice and mining rates; True iff exact."""
    from hashcloud.engine.cupy_backend import GEMM_PATHS, CupyPipeline

    max_n = min(args.max_n, 1024) if args.quick else args.max_n
    sizes = [k for k in ((64, 0, 7, 3), (256, 10, 7, 3), (1024, 100, 5, 2), (4096, 1000, 3, 2))
             if k[0] <= max_n]
    refs = {key: _reference(key[0], key[1], key[2]) for key in sizes}
    result["paths"] = {name: _check_path(name, refs, max_n) for name in GEMM_PATHS}
    chooser = CupyPipeline(min(1024, max_n))
    result["chosen"] = {"path": chooser.path.name, "why": chooser.describe(),
                        "report": chooser.path_report}
    chooser.close()
    result["mining"] = {}
    for name, check in result["paths"].items():
        if check["exact"]:
            try:
                result["mining"][name] = _mine(name, min(1024, max_n), args.seconds,
                                               cuda.peaks or {})
            except Exception as exc:
                result["mining"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    # A path cuBLAS refuses on this device is skipped; one that gave any wrong result fails.
    accepted = [p for p in result["paths"].values() if p["error"] is None]
    wrong = any(not c["exact"] for p in result["paths"].values() for c in p["cases"])
    exact = bool(accepted) and not wrong and all(p["exact"] for p in accepted)
    return exact and result["paths"][result["chosen"]["path"]]["exact"]


if __name__ == "__main__":
    sys.exit(main())

"""Cost of persisting audit histories (issue 11 item 5): v1 whole-file rewrite vs the log.

The v1 `HistoryStore` rewrote and fsynced `validator/history.json` whole after every audit
(`fsutil.atomic_replace` of every worker's history), so an audit cost grew with the number
of workers ever audited. The current store appends one fsynced record per audit and compacts
now and then. This script times `audits` saves, each for a new worker (the v1 worst case:
the file grows by one worker per audit), after `preloaded` workers already have a history,
both ways in the same run and on the same disk, and prints the seconds and their ratio.

    python scripts/bench_history.py [--audits 200] [--preloaded 0 10000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hashcloud.crypto.keys import PrivateKey
from hashcloud.fsutil import atomic_replace
from hashcloud.node.history import HistoryStore, history_path
from hashcloud.poc.audit_policy import WorkerHistory


def addresses(count: int, offset: int) -> list[str]:
    """`count` distinct worker addresses."""
    return [PrivateKey(0x10_0000 + offset + i).public_key.address for i in range(count)]


def v1_save(path: Path, workers: dict[str, WorkerHistory]) -> None:
    """The v1 write: the whole `{"version": 1, "workers": ...}` file, atomically, durably."""
    body = ",".join(f'"{a}":{h.model_dump_json()}' for a, h in workers.items())
    atomic_replace(path, ('{"version":1,"workers":{' + body + "}}").encode())


def run(base: Path, audits: int, preloaded: int) -> tuple[float, float, int, int]:
    """Seconds for `audits` saves the v1 way and the log way; final file sizes."""
    history = WorkerHistory(accepted=3, failed=1, failure_times=(1.7e9,), mean_rate=2.5e12)
    old = addresses(preloaded, 0)
    new = addresses(audits, preloaded)
    v1_dir, log_dir = base / f"v1-{preloaded}", base / f"log-{preloaded}"
    v1_dir.mkdir()
    workers = dict.fromkeys(old, history)
    v1_path = v1_dir / "history.json"
    v1_save(v1_path, workers)
    t0 = time.perf_counter()
    for a in new:
        workers[a] = history
        v1_save(v1_path, workers)
    v1_s = time.perf_counter() - t0

    store = HistoryStore(log_dir)
    for a in old:
        store.put(a, history)
    store._compact()  # the preloaded workers on disk, as after a compaction  # noqa: SLF001
    t0 = time.perf_counter()
    for a in new:
        store.save(store.put(a, history))
    log_s = time.perf_counter() - t0
    return v1_s, log_s, v1_path.stat().st_size, history_path(log_dir).stat().st_size


def main() -> None:
    """Parse options, run both ways for each preload, print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", type=int, default=200)
    parser.add_argument("--preloaded", type=int, nargs="+", default=[0, 10_000])
    parser.add_argument("--dir", type=Path, default=None,
                        help="Directory on the disk to measure (default: a temp dir).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for preloaded in args.preloaded:
            v1_s, log_s, v1_size, log_size = run(Path(tmp), args.audits, preloaded)
            print(f"{args.audits} audits after {preloaded} workers: v1 rewrite {v1_s:.3f} s "
                  f"({v1_size} B file), append log {log_s:.3f} s ({log_size} B file); "
                  f"v1 / log = {v1_s / log_s:.1f}x")


if __name__ == "__main__":
    main()

"""Benchmark the CLI's start-up cost: `hashcloud --help` against a minimal Typer + rich app.

Usage: `python scripts/bench_cli.py [--runs N]` (default 7). Every figure is the CPU time
(user + system, from `resource.getrusage(RUSAGE_CHILDREN)`) of one child process, median of
N runs, all measured in this one run with this interpreter, so the ratio is comparable across
machines and loads. The target is `hashcloud --help` <= 3x the minimal app: the CLI must not
import the node, the HTTP stack or NumPy just to print its help. A developer tool: it prints.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_RATIO = 3.0
"""`hashcloud --help` may cost at most this many times the minimal Typer + rich app."""

MINIMAL_APP = '''\
import typer
import rich

app = typer.Typer(add_completion=False, help="Minimal app.")


@app.command()
def hello(name: str = "world") -> None:
    """Say hello."""
    rich.print(f"hello {name}")


@app.command()
def bye() -> None:
    """Say bye."""


app()
'''


def _children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_of(argv: list[str], runs: int, env: dict[str, str], expect: int = 0) -> float:
    """Median CPU seconds of `runs` runs of `argv` (each must exit with `expect`)."""
    samples = []
    for _ in range(runs):
        before = _children_cpu()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, check=False)
        samples.append(_children_cpu() - before)
        if proc.returncode != expect:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-500:]}")
    return statistics.median(samples)


def make_proof(home: Path, env: dict[str, str]) -> Path:
    """A small offline proof (n=64, 0.3 s of loops) to time `verify` on."""
    proof = home / "small-proof.json"
    proc = subprocess.run([sys.executable, "-m", "hashcloud", "mine", "--offline", "--n", "64",
                           "--duration", "0.3", "--out", str(proof), "--json"],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"mining the small proof failed ({proc.returncode}): "
                         f"{proc.stderr[-1000:]}")
    return proof


def main() -> None:
    """Measure and print the figures and the ratio; exit 1 if the ratio misses the target."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="runs per command (median)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        # A private home: the benchmark must not touch (or read) the user's keys.
        env = {**os.environ, "HASHCLOUD_HOME": str(home / "home"), "COLUMNS": "100"}
        env.pop("HASHCLOUD_NODE", None)
        minimal = home / "minimal_app.py"
        minimal.write_text(MINIMAL_APP)
        proof = make_proof(home, env)

        print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} CPUs, median of {args.runs} runs (CPU s, user+sys)")
        base = cpu_of([sys.executable, "-c", "pass"], args.runs, env)
        mini = cpu_of([sys.executable, str(minimal), "--help"], args.runs, env)
        hc = [sys.executable, "-m", "hashcloud"]
        rows = {
            "python -c pass": base,
            "minimal typer+rich --help": mini,
            "hashcloud --help": cpu_of([*hc, "--help"], args.runs, env),
            "hashcloud keygen --help": cpu_of([*hc, "keygen", "--help"], args.runs, env),
            "hashcloud verify SMALL_PROOF": cpu_of([*hc, "verify", str(proof), "--json"],
                                                   args.runs, env),
        }
    for name, cpu in rows.items():
        print(f"{name:32s} {cpu:7.3f} s  ({cpu / mini:5.2f}x minimal app)")
    ratio = rows["hashcloud --help"] / mini
    verdict = "ok" if ratio <= TARGET_RATIO else "TOO SLOW"
    print(f"hashcloud --help / minimal app = {ratio:.2f} (target <= {TARGET_RATIO:g}): {verdict}")
    sys.exit(0 if ratio <= TARGET_RATIO else 1)


if __name__ == "__main__":
    main()

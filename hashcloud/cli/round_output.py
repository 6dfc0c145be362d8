"""What every mining round of the CLI shares (SPEC 4, 7): `--out` checks, writing the proof
file, the live display of the loops and the end-of-round summary.

`mine` (offline rounds) and `mine_online` (rounds against a node) both use it, so neither
imports the other.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.live import Live
from rich.table import Table

from hashcloud.cli.common import (
    CliState,
    err,
)
from hashcloud.cli.display import RateMeter, gflops, round_table, speed_line
from hashcloud.engine.mining import Engine
from hashcloud.errors import HashCloudError, UsageError
from hashcloud.fsutil import create_exclusive
from hashcloud.poc.proof import ProofFile
from hashcloud.poc.round import RoundWork, run_loops
from hashcloud.types import to_phex


def check_out_path(path: Path) -> Path:
    """Refuse, before any compute, an `--out` that exists or cannot be created (exit 2).

    A proof never replaces an existing file: `--out` pointing at a key file or a device
    must not destroy it."""
    if not path.name or path.name in (".", ".."):
        raise UsageError(f"--out {str(path)!r} is not a file name")
    if path.exists() or path.is_symlink():
        raise UsageError(f"--out {path} already exists; choose a new file name")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--out {path}: {parent} is not a directory")
    _check_writable_dir(parent, f"--out {path}")
    return path


def check_proof_dir(directory: Path) -> Path:
    """Refuse, before any compute, a proof directory that cannot be written (exit 2)."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"proof directory {directory} is not a directory")
    _check_writable_dir(directory, f"proof directory {directory}")
    return directory


def _check_writable_dir(directory: Path, what: str) -> None:
    """Create `directory` if needed and prove a file can be made in it (a probe file, created
    and removed: permission bits alone do not tell, e.g. for root or a read-only mount), so
    a round's work is never lost to an unwritable proof path."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".hashcloud-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{what} cannot be written: {exc.strerror or exc}") from None


def write_proof(path: Path, proof: ProofFile) -> Path:
    """Write a new proof file durably and without replacing anything
    (`fsutil.create_exclusive`: fails if the name exists, never leaves a partial file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        create_exclusive(path, proof.to_json().encode("utf-8"))
    except FileExistsError:
        raise UsageError(f"{path} already exists; the proof was not written") from None
    except OSError as exc:
        raise HashCloudError(f"cannot write proof {path}: {exc.strerror}") from None
    return path


def default_proof_path(st: CliState, challenge_id: str) -> Path:
    """`<home>/proofs/<challenge_id>.json`."""
    return st.home / "proofs" / f"{challenge_id}.json"


def compute_round(engine: Engine, seed: str, duration: float, *, live: bool,
                  phase: str = "computing", stats: dict | None = None,
                  print_every: float = 10.0) -> RoundWork:
    """Run the loops of one round, with the live display unless `live` is False. When
    stderr is not a terminal (a log file, journald) the live panel cannot redraw: a plain
    speed line is printed every `print_every` seconds instead."""
    meter = RateMeter()
    stats = stats or {}
    if not live:
        return run_loops(engine, seed, duration)
    last = [0]
    if not err.is_terminal:
        next_line = [print_every]

        def plain(loops: int, elapsed: float) -> None:
            meter.add(loops - last[0])
            last[0] = loops
            if elapsed >= next_line[0]:
                next_line[0] = elapsed + print_every
                err.print(speed_line(phase, elapsed, loops, engine.n, meter), soft_wrap=True,
                          markup=False, highlight=False)

        return run_loops(engine, seed, duration, progress=plain)

    def panel(loops: int, elapsed: float) -> Table:
        return round_table(phase=phase, elapsed=elapsed, duration=duration, loops=loops,
                           n=engine.n, meter=meter, backend=engine.backend,
                           device=engine.device, **stats)

    with Live(panel(0, 0.0), console=err, refresh_per_second=4, transient=True) as lv:
        def progress(loops: int, elapsed: float) -> None:
            meter.add(loops - last[0])
            last[0] = loops
            lv.update(panel(loops, elapsed))

        return run_loops(engine, seed, duration, progress=progress)


def summary_table(work: RoundWork, engine: Engine, extra: dict[str, str]) -> Table:
    """The end-of-round summary."""
    t = Table(title="round summary", show_header=False)
    t.add_column(style="bold cyan")
    t.add_column()
    rate = work.loops / work.compute_time if work.compute_time else 0.0
    t.add_row("device", f"{engine.device} ({engine.backend})")
    t.add_row("loops", f"{work.loops} at n={work.n}" + (" (interrupted)" if work.interrupted
                                                         else ""))
    t.add_row("compute time", f"{work.compute_time:.2f} s")
    t.add_row("loops/s", f"{rate:,.1f}")
    t.add_row("effective GFLOP/s", f"{gflops(rate, work.n):,.2f}")
    t.add_row("merkle root", to_phex(work.merkle_root))
    for k, v in extra.items():
        t.add_row(k, v)
    return t

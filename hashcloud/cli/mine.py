"""`hashcloud mine` (SPEC 7): one or more mining rounds, offline or against a node.

Offline (`--offline`): a self-audited proof, never rewarded. Online: challenge -> compute ->
commit -> reveal -> receipt -> SUBMIT_RESULT claim, against `--node URL`, `$HASHCLOUD_NODE`
or, with neither, an embedded node on the home's data directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from hashcloud.cli.common import (
    CliState,
    check_engine_options,
    cli_command,
    err,
    load_key,
    load_or_create_key,
    out,
    print_json,
    state,
)
from hashcloud.cli.display import RateMeter, gflops, round_table
from hashcloud.crypto.keystore import DEFAULT_KEY_NAME
from hashcloud.engine.gemm import Engine
from hashcloud.errors import HashCloudError, UsageError
from hashcloud.poc.proof import ProofFile
from hashcloud.poc.round import RoundWork, new_offline_challenge, offline_proof, run_loops


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
    return path


def write_proof(path: Path, proof: ProofFile) -> Path:
    """Write a new proof file atomically and without replacing anything: a fresh O_EXCL
    temp file, fsync, then a hard link to the final name (fails if it exists)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(proof.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except FileExistsError:
        raise UsageError(f"{path} already exists; the proof was not written") from None
    except OSError as exc:
        raise HashCloudError(f"cannot write proof {path}: {exc.strerror}") from None
    return path


def default_proof_path(st: CliState, challenge_id: str) -> Path:
    """`<home>/proofs/<challenge_id>.json`."""
    return st.home / "proofs" / f"{challenge_id}.json"


def compute_round(engine: Engine, seed: str, duration: float, *, live: bool,
                  phase: str = "computing", stats: dict | None = None) -> RoundWork:
    """Run the loops of one round, with the live display unless `live` is False."""
    meter = RateMeter()
    stats = stats or {}
    if not live:
        return run_loops(engine, seed, duration)
    last = [0]

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
    t.add_row("merkle root", work.merkle_root)
    for k, v in extra.items():
        t.add_row(k, v)
    return t


@cli_command
def mine(
    ctx: typer.Context,
    duration: Annotated[float, typer.Option(min=0.1, max=86_400,
                                            help="Seconds of compute per round.")] = 15.0,
    n: Annotated[int, typer.Option(help="Matrix size (multiple of 64, 64..4096).")] = 1024,
    node: Annotated[str | None, typer.Option(envvar="HASHCLOUD_NODE",
                                             help="Node URL (default: embedded node).")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Self-audited proof.")] = False,
    out_path: Annotated[Path | None, typer.Option("--out", help="Proof file to write.")] = None,
    backend: Annotated[str, typer.Option(help="auto | numpy | cupy")] = "auto",
    rounds: Annotated[int, typer.Option(min=0, help="Rounds to mine (0: until Ctrl-C).")] = 1,
    key_name: Annotated[str, typer.Option("--key", help="Key name in the home.")] = "default",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Mine: run deterministic GEMM loops, commit them in a Merkle tree, prove and claim."""
    st = state(ctx)
    check_engine_options(n, backend)
    if offline and node:
        raise UsageError("--offline and --node exclude each other")
    if node and not node.startswith(("http://", "https://")):
        raise UsageError(f"--node must be an http:// or https:// URL, got {node!r}")
    if out_path is not None:
        check_out_path(out_path)
    if rounds != 1 and offline:
        raise UsageError("--offline makes one proof: --rounds is for node rounds")
    if key_name == DEFAULT_KEY_NAME:
        key, _ = load_or_create_key(st, key_name)  # first run: make the default key, say so
    else:
        key = load_key(st, key_name)  # a named key must exist: a typo must not mint a new one
    with Engine(backend, n) as engine:
        if not json_:
            err.print(f"[dim]backend: {engine.backend} on {engine.device} ({engine.reason})[/]")
        if offline:
            _mine_offline(st, engine, key, duration, out_path, json_)
        else:
            from hashcloud.cli.mine_online import mine_online

            mine_online(st, engine, key, duration=duration, node_url=node, out_path=out_path,
                        rounds=rounds, json_=json_)


def _mine_offline(st: CliState, engine: Engine, key, duration: float, out_path: Path | None,
                  json_: bool) -> None:
    challenge_id, seed = new_offline_challenge()
    work = compute_round(engine, seed, duration, live=not json_)
    proof = offline_proof(key, engine, challenge_id, work)
    path = write_proof(out_path or default_proof_path(st, challenge_id), proof)
    if json_:
        print_json({"loops": work.loops, "compute_time": work.compute_time,
                    "merkle_root": work.merkle_root, "accepted": False, "offline": True,
                    "proof_path": str(path), "n": work.n, "backend": engine.backend,
                    "device": engine.device, "interrupted": work.interrupted,
                    "loops_per_s": work.loops / work.compute_time if work.compute_time else 0})
        return
    out.print(summary_table(work, engine, {"proof": str(path),
                                           "status": "offline proof (not rewarded)"}))



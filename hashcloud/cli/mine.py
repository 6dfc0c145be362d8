"""`hashcloud mine` (SPEC 7): one or more mining rounds, offline or against a node.

Offline (`--offline`): a self-audited proof, never rewarded. Online: challenge -> compute ->
commit -> reveal -> receipt -> SUBMIT_RESULT claim, against `--node URL`, `$HASHCLOUD_NODE`
or, with neither, an embedded node on the home's data directory.

The engine, the round and proof modules and `mine_online` (the HTTP client and the embedded
node) are imported when a round starts, so that building the app does not load them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

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
from hashcloud.errors import InvalidAddress, UsageError
from hashcloud.params import (
    BACKEND_NAMES,
    DEFAULT_KEY_NAME,
    DEFAULT_N,
    MAX_N,
    MIN_N,
    N_STEP,
)
from hashcloud.types import validate_address

if TYPE_CHECKING:
    from hashcloud.engine.mining import Engine


@cli_command
def mine(
    ctx: typer.Context,
    duration: Annotated[float, typer.Option(min=0.1, max=86_400,
                                            help="Seconds of compute per round.")] = 15.0,
    n: Annotated[int, typer.Option(
        help=f"Matrix size (multiple of {N_STEP}, {MIN_N}..{MAX_N}).")] = DEFAULT_N,
    node: Annotated[list[str] | None, typer.Option(
        envvar="HASHCLOUD_NODE",
        help="Node URL (default: embedded node); repeat it or separate URLs with commas "
             "for nodes to fail over to.")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Self-audited proof.")] = False,
    out_path: Annotated[Path | None, typer.Option("--out", help="Proof file to write.")] = None,
    backend: Annotated[str, typer.Option(help=" | ".join(BACKEND_NAMES))] = "auto",
    rounds: Annotated[int, typer.Option(
        min=0, help="Rounds to mine (0: until Ctrl-C or SIGTERM, riding out node outages).")
    ] = 1,
    key_name: Annotated[str, typer.Option(
        "--key", help="Key name in the home.")] = DEFAULT_KEY_NAME,
    payout: Annotated[str | None, typer.Option(
        "--payout", help="Address credited with the work (default: the key's own); the "
                         "mining key only signs.")] = None,
    backoff_max: Annotated[float, typer.Option(
        min=0.1, max=3600,
        help="Longest wait (s) between attempts to reach a node that is down.")] = 30.0,
    print_time: Annotated[float, typer.Option(
        min=0.5, help="Seconds between speed lines when stderr is not a terminal.")] = 10.0,
    json_: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object per finished round, as it ends.")] = False,
) -> None:
    """Mine: run deterministic GEMM loops, commit them in a Merkle tree, prove and claim."""
    from hashcloud.cli.mine_online import parse_node_urls
    from hashcloud.cli.round_output import check_out_path, check_proof_dir
    from hashcloud.engine.mining import Engine

    st = state(ctx)
    check_engine_options(n, backend)
    node_urls = parse_node_urls(node)
    if offline and node_urls:
        raise UsageError("--offline and --node exclude each other")
    if out_path is not None:
        check_out_path(out_path)
    else:
        check_proof_dir(st.home / "proofs")
    if rounds != 1 and offline:
        raise UsageError("--offline makes one proof: --rounds is for node rounds")
    if payout is not None:
        if offline:
            raise UsageError("--payout is for node rounds: offline proofs are never rewarded")
        try:
            validate_address(payout)
        except InvalidAddress as exc:
            raise UsageError(f"--payout {payout!r}: {exc}") from None
    if key_name == DEFAULT_KEY_NAME:
        key, _ = load_or_create_key(st, key_name)  # first run: make the default key, say so
    else:
        key = load_key(st, key_name)  # a named key must exist: a typo must not mint a new one
    with Engine(backend, n) as engine, sigterm_as_interrupt():
        if not json_:
            err.print(f"[dim]backend: {engine.backend} on {escape(engine.device)} "
                      f"({escape(engine.reason)})[/]")
        if offline:
            _mine_offline(st, engine, key, duration, out_path, json_, print_time)
        else:
            from hashcloud.cli.mine_online import mine_online

            mine_online(st, engine, key, duration=duration, node_urls=node_urls,
                        out_path=out_path, rounds=rounds, json_=json_,
                        backoff_max=backoff_max, print_time=print_time,
                        payout_address=payout)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM (systemd stop, docker stop, kill) acts as Ctrl-C: the round
    in progress stops computing, is finished and summarised, and `mine` exits cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _mine_offline(st: CliState, engine: Engine, key, duration: float, out_path: Path | None,
                  json_: bool, print_time: float = 10.0) -> None:
    from hashcloud.cli.round_output import (
        compute_round,
        default_proof_path,
        summary_table,
        write_proof,
    )
    from hashcloud.poc.round import new_offline_challenge, offline_proof
    from hashcloud.types import to_phex

    challenge_id, seed = new_offline_challenge()
    work = compute_round(engine, seed, duration, live=not json_, print_every=print_time)
    proof = offline_proof(key, engine, challenge_id, work)
    path = write_proof(out_path or default_proof_path(st, challenge_id), proof)
    if json_:
        print_json({"loops": work.loops, "compute_time": work.compute_time,
                    "merkle_root": to_phex(work.merkle_root), "accepted": False, "offline": True,
                    "proof_path": str(path), "n": work.n, "backend": engine.backend,
                    "device": engine.device, "interrupted": work.interrupted,
                    "loops_per_s": work.loops / work.compute_time if work.compute_time else 0})
        return
    out.print(summary_table(work, engine, {"proof": str(path),
                                           "status": "offline proof (not rewarded)"}))



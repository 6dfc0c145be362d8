"""`hashcloud node init | start | status` (SPEC 7).

The node (FastAPI, uvicorn) and the HTTP client (httpx) are imported inside the command that
runs them: building the app, e.g. for `hashcloud --help`, must not load them.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from hashcloud.cli.common import cli_command, err, out, print_json, state
from hashcloud.errors import UsageError
from hashcloud.params import AUDIT_MODES, DEFAULT_AUDIT_ROWS, MAX_N, MIN_N

node_app = typer.Typer(no_args_is_help=True, help="Run and inspect a HashCloud node.")
DataDirOpt = Annotated[Path | None, typer.Option(help="Node data dir (default: HOME/node).")]


def _parse_alloc(items: list[str]) -> dict[str, int]:
    out_: dict[str, int] = {}
    for item in items:
        addr, _, amount = item.partition("=")
        if not amount.isdigit():
            raise UsageError(f"--alloc takes ADDRESS=AMOUNT (integer), got {item!r}")
        if addr in out_:
            raise UsageError(f"--alloc gives {addr} twice")
        out_[addr] = int(amount)
    return out_


@node_app.command("init")
@cli_command
def init(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    chain_id: Annotated[str | None, typer.Option(help="Chain id.")] = None,
    block_time: Annotated[float | None, typer.Option(min=0.05, help="Block time (s).")] = None,
    alloc: Annotated[list[str] | None, typer.Option(help="Genesis ADDRESS=AMOUNT.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Write genesis and the node key into the data dir (single-node chain)."""
    from hashcloud.chain.genesis import genesis_hash
    from hashcloud.node.config import init_data_dir

    dd = data_dir or state(ctx).home / "node"
    files = init_data_dir(dd, chain_id=chain_id, allocations=_parse_alloc(alloc or []),
                          block_time_ms=int(block_time * 1000) if block_time else None)
    info = {"data_dir": str(dd), "chain_id": files.genesis.chain_id,
            "genesis_hash": genesis_hash(files.genesis),
            "node_address": files.key.public_key.address,
            "node_public_key": files.key.public_key.hex()}
    if json_:
        print_json(info)
    else:
        for k, v in info.items():
            out.print(f"[bold cyan]{k}[/]: {v}")


@node_app.command("start")
@cli_command
def start(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 8650,
    block_time: Annotated[float | None, typer.Option(
        min=0.05, help="Seconds between blocks (default: the genesis block time).")] = None,
    ip_rate: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Challenge requests per minute per client IP (default: the node's policy).")] = None,
    worker_rate: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Challenge requests per minute per worker (default: the node's policy).")] = None,
    max_open: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Open challenges per worker (default: the node's policy).")] = None,
    ip_failures: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Failed audits per client IP and hour before it is refused "
             "(default: the node's policy).")] = None,
    max_n: Annotated[int | None, typer.Option(
        min=MIN_N, max=MAX_N, show_default=False,
        help="Largest matrix size the node audits (default: the protocol maximum).")] = None,
    audit_mode: Annotated[str | None, typer.Option(
        show_default=False,
        help="How audited samples are checked (SPEC 3 v1.1): 'rows' (recompute drawn rows of "
             "the revealed outputs, the default) or 'full' (recompute whole leaves).")] = None,
    audit_rows: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help=f"Rows recomputed per audited sample in rows mode (default: SPEC 3's "
             f"{DEFAULT_AUDIT_ROWS}).")] = None,
    trusted_proxy: Annotated[list[str] | None, typer.Option(
        help="Address of a reverse proxy whose X-Forwarded-For names the client (repeatable; "
             "default: none, the client is the socket peer).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Run the node (PoC validator + chain) until Ctrl-C / SIGTERM.

    Validator options not given keep the node's defaults."""
    # The defaults live in ValidatorConfig only: options left at None are not passed, and
    # the node package is imported here, when the command runs (never at CLI import).
    from hashcloud.node.config import ValidatorConfig
    from hashcloud.node.server import bind_socket, open_or_init, run_node
    from hashcloud.node.service import NodeService

    if log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise UsageError("--log-level must be critical, error, warning, info, debug or trace")
    if audit_mode is not None and audit_mode not in AUDIT_MODES:
        raise UsageError(f"--audit-mode must be one of {', '.join(AUDIT_MODES)}")
    options = {
        "requests_per_minute_per_ip": ip_rate, "requests_per_minute_per_address": worker_rate,
        "max_open_per_worker": max_open, "ip_failures_per_hour": ip_failures, "max_n": max_n,
        "audit_mode": audit_mode, "audit_rows": audit_rows,
    }
    config = ValidatorConfig(**{k: v for k, v in options.items() if v is not None})
    dd = data_dir or state(ctx).home / "node"
    files, created = open_or_init(dd)
    if created:
        err.print(f"initialised a new single-node chain in {dd}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = NodeService(files, config)
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    display_host = f"[{host}]" if ":" in host else host
    # One parseable line on stdout: scripts and tests wait for it.
    print(f"hashcloud node listening on http://{display_host}:{bound} "
          f"chain={files.genesis.chain_id} height={service.ledger.height}", flush=True)
    run_node(service, sock, log_level=log_level, block_time=block_time,
             trusted_proxies=trusted_proxy or ())


@node_app.command("status")
@cli_command
def status(
    node: Annotated[str, typer.Option(envvar="HASHCLOUD_NODE", help="Node URL.")] = (
        "http://127.0.0.1:8650"),
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Ask a running node for its chain id, key and head."""
    from hashcloud.client.http import NodeClient

    with NodeClient(node, retries=1) as client:
        info = client.info()
    if json_:
        print_json(info.model_dump(mode="json"))
        return
    out.print(f"[bold]{info.chain_id}[/] at {node}: height {info.head.height} "
              f"({info.head.hash}), mempool {info.mempool_size}, node {info.node_address}")

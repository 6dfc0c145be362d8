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
from rich.markup import escape

from hashcloud.cli.common import cli_command, err, node_key_passphrase, out, print_json, state
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
    subsidy0: Annotated[int | None, typer.Option(
        min=0, max=2**64 - 1, help="Base units each block adds to its epoch's pool.")] = None,
    halving_interval: Annotated[int | None, typer.Option(
        min=1, max=2**64 - 1, help="Blocks between subsidy halvings.")] = None,
    epoch_length: Annotated[int | None, typer.Option(
        min=1, max=2**32 - 1, help="Blocks per reward epoch (payout at each epoch's end).")
    ] = None,
    validator_key: Annotated[list[str] | None, typer.Option(
        show_default=False,
        help="Public key (hex) of a further PoC validator listed in genesis (repeatable): a "
             "node holding it, e.g. a follower, audits rounds and signs receipts.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Write genesis and the node key into the data dir (single-node chain); the emission
    schedule (SPEC 6 v1.1) defaults to 50 HC per block, halving every 1,051,200 blocks, paid
    per 720-block epoch."""
    from hashcloud.chain.genesis import genesis_hash
    from hashcloud.node.config import init_data_dir

    dd = data_dir or state(ctx).home / "node"
    files = init_data_dir(dd, chain_id=chain_id, allocations=_parse_alloc(alloc or []),
                          block_time_ms=int(block_time * 1000) if block_time else None,
                          schedule={"subsidy0": subsidy0, "halving_interval": halving_interval,
                                    "epoch_length": epoch_length},
                          passphrase=node_key_passphrase(dd),
                          validators=validator_key or ())
    info = {"data_dir": str(dd), "chain_id": files.genesis.chain_id,
            "genesis_hash": genesis_hash(files.genesis),
            "node_address": files.key.public_key.address,
            "node_public_key": files.key.public_key.hex(),
            "subsidy0": files.genesis.subsidy0,
            "halving_interval": files.genesis.halving_interval,
            "epoch_length": files.genesis.epoch_length,
            "validators": list(files.genesis.validators)}
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
    tx_rate: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Transactions per minute per client IP, a batch counting each (default: the node's "
             "policy).")] = None,
    reveal_rate: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Reveals per minute per client IP (default: the node's policy).")] = None,
    max_connections: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Open connections overall (default and ceiling: what the open-file limit "
             "allows).")] = None,
    max_connections_per_ip: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Open connections per client IP (default: the node's policy).")] = None,
    header_timeout: Annotated[float | None, typer.Option(
        min=0.1, show_default=False,
        help="Seconds a client has to send a request header (default: the node's "
             "policy).")] = None,
    body_timeout: Annotated[float | None, typer.Option(
        min=0.1, show_default=False,
        help="Seconds a client has to send a request body, plus 1 s per 64 KiB "
             "(default: the node's policy).")] = None,
    send_timeout: Annotated[float | None, typer.Option(
        min=0.1, show_default=False,
        help="Seconds a buffered response may wait on a client that reads none of it "
             "before the connection is closed (default: the node's policy).")] = None,
    accept_rollback: Annotated[bool, typer.Option(
        "--accept-rollback",
        help="Start even though the chain store is missing or behind the height this node "
             "acknowledged (its watermark): the blocks after the store's head are given up "
             "and the watermark is reset (logged at ERROR).")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    follow: Annotated[str | None, typer.Option(
        show_default=False,
        help="Run a follower of the producer at this URL: no block production, every block "
             "re-validated, writes relayed (SPEC 7 v1.1).")] = None,
    genesis_hash_: Annotated[str | None, typer.Option(
        "--genesis-hash", show_default=False,
        help="With --follow: refuse a producer whose genesis hash is not this one.")] = None,
    reconsider: Annotated[bool, typer.Option(
        "--reconsider",
        help="With --follow: clear this follower's recorded refusal of its producer (an "
             "invalid or conflicting block) and follow again.")] = False,
) -> None:
    """Run the node (PoC validator + chain) until Ctrl-C / SIGTERM.

    Validator options not given keep the node's defaults."""
    # The defaults live in ValidatorConfig only: options left at None are not passed, and
    # the node package is imported here, when the command runs (never at CLI import).
    from hashcloud.node.config import ValidatorConfig
    from hashcloud.node.edge import EdgeSettings, describe_limits, is_loopback_host, raise_fd_limit
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
    edge_options = {
        "transactions_per_minute_per_ip": tx_rate, "reveals_per_minute_per_ip": reveal_rate,
        "max_connections": max_connections, "max_connections_per_ip": max_connections_per_ip,
        "header_timeout": header_timeout, "body_timeout": body_timeout,
        "send_timeout": send_timeout,
    }
    edge = EdgeSettings(**{k: v for k, v in edge_options.items() if v is not None})
    if not is_loopback_host(host):
        cap = edge.connection_cap(raise_fd_limit())
        err.print(f"[yellow]warning:[/] listening on {host}: the HTTP API is unauthenticated; "
                  f"anyone who can reach this address can submit transactions and PoC "
                  f"requests. Limits in force: {describe_limits(config, edge, cap)}.",
                  soft_wrap=True)
    dd = data_dir or state(ctx).home / "node"
    if genesis_hash_ is not None and follow is None:
        raise UsageError("--genesis-hash needs --follow URL")
    if reconsider and follow is None:
        raise UsageError("--reconsider needs --follow URL")
    if follow is not None:
        _start_follower(dd, follow, genesis_hash_, config, host, port, log_level,
                        trusted_proxy or (), edge=edge, reconsider=reconsider)
        return
    files, created = open_or_init(dd, node_key_passphrase(dd))
    if created:
        err.print(f"initialised a new single-node chain in {dd}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = NodeService(files, config, accept_rollback=accept_rollback)
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    display_host = f"[{host}]" if ":" in host else host
    # One parseable line on stdout: scripts and tests wait for it.
    print(f"hashcloud node listening on http://{display_host}:{bound} "
          f"chain={files.genesis.chain_id} height={service.ledger.height}", flush=True)
    run_node(service, sock, log_level=log_level, block_time=block_time,
             trusted_proxies=trusted_proxy or (), edge=edge)


def _start_follower(dd: Path, url: str, pinned: str | None, config: object, host: str,
                    port: int, log_level: str, trusted_proxies: list[str] | tuple[str, ...],
                    edge: object, reconsider: bool) -> None:
    """`node start --follow URL`: open (or initialise from the producer's genesis) the data
    dir, say which genesis it follows and any refusal it recorded (`--reconsider` clears
    it), and serve with the sync loop instead of a producer."""
    from hashcloud.chain.genesis import genesis_hash
    from hashcloud.node.follower import FollowerService, check_url, follower_task, open_follower_dir
    from hashcloud.node.refusal import clear_refusal, load_refusal
    from hashcloud.node.server import bind_socket, run_node

    if pinned is not None and not (len(pinned) == 64 and all(
            c in "0123456789abcdefABCDEF" for c in pinned)):
        raise UsageError("--genesis-hash takes 64 hex digits")
    url = check_url(url)
    files, created = open_follower_dir(dd, url, pinned, passphrase=node_key_passphrase(dd))
    digest = genesis_hash(files.genesis)
    err.print(f"{'initialised a follower' if created else 'following'} in {dd}: "
              f"producer {url}, genesis {digest}"
              + ("" if pinned else " (not pinned: pass --genesis-hash to check it)"))
    if reconsider:
        cleared = clear_refusal(dd)
        err.print(f"reconsidering: cleared the record \"{cleared.describe()}\""
                  if cleared else "reconsidering: no refusal was recorded", soft_wrap=True,
                  markup=False)
    elif (prior := load_refusal(dd)) is not None:
        err.print(f"[yellow]warning:[/] this follower {escape(prior.describe())}. It serves its "
                  "chain but neither follows nor relays; fix the cause, then start with "
                  "--reconsider.", soft_wrap=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per sync request
    service = FollowerService(files, url, config)  # type: ignore[arg-type]
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    display_host = f"[{host}]" if ":" in host else host
    print(f"hashcloud node listening on http://{display_host}:{bound} "
          f"chain={files.genesis.chain_id} height={service.ledger.height} follow={url} "
          f"genesis={digest}", flush=True)
    run_node(service, sock, log_level=log_level, trusted_proxies=trusted_proxies,
             produce_blocks=False, tasks=[follower_task(service)],
             edge=edge)  # type: ignore[arg-type]


@node_app.command("reindex")
@cli_command
def reindex(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Rebuild the block index and the state snapshot from the block log, re-validating
    every block (like bitcoind -reindex). The node must be stopped."""
    from hashcloud.node.config import load_data_dir
    from hashcloud.node.recovery import reindex as rebuild

    dd = data_dir or state(ctx).home / "node"
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    rep = rebuild(load_data_dir(dd, node_key_passphrase(dd)))
    info = {"data_dir": str(dd), "height": rep.height, "head_hash": rep.head_hash,
            "snapshot_height": rep.snapshot_height, "behind_watermark": rep.rollback_problem}
    if json_:
        print_json(info)
    else:
        out.print(f"[bold green]reindexed[/] {dd}: {rep.height + 1} blocks re-validated to "
                  f"height {rep.height} ({rep.head_hash}); index rewritten, state snapshot "
                  f"at height {rep.snapshot_height}")
    if rep.rollback_problem is not None:
        err.print(f"[bold red]warning:[/] {rep.rollback_problem}; `node start` will refuse "
                  "this store (see --accept-rollback)")


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
    if info.follow is not None:  # a follower: where it stands with its producer
        f = info.follow
        out.print(f"follower of {f.producer}: {f.state}, producer height "
                  f"{f.producer_height if f.producer_height is not None else '?'}, "
                  f"{f.imported} blocks imported"
                  + (", PoC validator" if info.validator else "")
                  + (f" ({f.reason})" if f.reason else ""), markup=False)

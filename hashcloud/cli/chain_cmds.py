"""`hashcloud balance`, `epoch`, `inspect-block`, `submit` and `audit` (SPEC 7).

The chain, proof and node modules are imported inside each command, so that building the app
(e.g. for `hashcloud --help`) does not load pydantic models, NumPy or the HTTP stack.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from hashcloud.cli.common import (
    EXIT_FAIL,
    DataDirOpt,
    JsonOpt,
    NodeOpt,
    cli_command,
    err,
    load_key,
    out,
    print_json,
    state,
)
from hashcloud.errors import HashCloudError, ProofError, UsageError
from hashcloud.params import DEFAULT_EPOCH_ROWS, DEFAULT_KEY_NAME, MAX_EPOCH_ROWS

if TYPE_CHECKING:
    from hashcloud.node.config import NodeFiles



@cli_command
def balance(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Argument(help="Address (default: local key).")] = None,
    node: NodeOpt = None,
    data_dir: DataDirOpt = None,
    key_name: Annotated[str | None, typer.Option(
        "--key", help="Show the address of this key in the home.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Balance (in HC; --json: base units) and nonce of an address."""
    from hashcloud.chain.rewards import account_rewards
    from hashcloud.cli.chain_source import open_source
    from hashcloud.cli.wallet import address_argument
    from hashcloud.units import format_hc

    st = state(ctx)
    address = address_argument(st, address, key_name)
    with open_source(st, node, data_dir) as src:
        acct = src.account(address)
        if "pending_work" not in acct:  # a data dir: the node's API adds these itself
            acct.update(_local_chain(src, lambda g, s, h: account_rewards(g, s, h, address)))
    if json_:
        print_json(acct)
    else:
        out.print(f"{acct['address']}: balance [bold]{format_hc(acct['balance'])}[/], "
                  f"nonce {acct['nonce']}")
        if acct["pending_work"]:  # SPEC 6 v1.1: work waits for its epoch's close
            out.print(f"  epoch {acct['epoch']}: pending work {acct['pending_work']:,}, "
                      f"estimated payout ~{format_hc(acct['estimated_payout'])} "
                      f"(after {format_hc(acct['pending_fees'])} deferred fees)")


def _local_chain(src, view):  # noqa: ANN001, ANN202 - ChainSource and a view function
    """`view(genesis, state, height)` over a data-dir ChainSource's head (its genesis state
    when only the genesis exists)."""
    from hashcloud.chain.genesis import genesis_state

    if src.ledger is not None:
        return view(src.ledger.genesis, src.ledger.state, src.ledger.height)
    return view(src.genesis, genesis_state(src.genesis), 0)


@cli_command
def epoch(
    ctx: typer.Context,
    number: Annotated[int | None, typer.Argument(
        min=0, help="Epoch number (SPEC 6 v1.1; default: the open one).")] = None,
    after: Annotated[str | None, typer.Option(
        show_default=False,
        help="Show the rows after this payout address (rows are in address order; the "
             "page says where the next one starts).")] = None,
    limit: Annotated[int, typer.Option(
        min=1, max=MAX_EPOCH_ROWS, help="Most payout rows to show.")] = DEFAULT_EPOCH_ROWS,
    node: NodeOpt = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """An epoch's reward pool (SPEC 6 v1.1): pool, total work and payouts per address once
    closed; pending work and estimated payouts while open (in HC; --json: base units). An
    epoch has a row per payout address: they come a page at a time (--after, --limit)."""
    from hashcloud.chain.rewards import epoch_view
    from hashcloud.cli.chain_source import open_source

    with open_source(state(ctx), node, data_dir) as src:
        if src.client is not None:
            path = "/v1/epoch" if number is None else f"/v1/epochs/{number}"
            query = f"?limit={limit}" + (f"&after={after}" if after else "")
            view = src.client._request("GET", path + query)  # a plain JSON read, like `history`
        else:
            view = _local_chain(src, lambda g, s, h: epoch_view(
                g, s, h, number, after=after, limit=limit))
    if json_:
        print_json(view)
    else:
        _print_epoch(view)


def _print_epoch(view: dict) -> None:
    """The human form of an epoch view."""
    from hashcloud.units import format_hc

    head = (f"epoch {view['epoch']} (blocks {view['first_height']}..{view['last_height']}) "
            f"{view['status']}: pool {format_hc(view['pool'])}")
    if view["status"] == "open":
        head += (f" so far, ~{format_hc(view['projected_pool'])} at its end "
                 f"({format_hc(view['carried_in'])} carried in)")
    else:
        head += f", {format_hc(view['carried'])} carried on"
    out.print(head + f"; total work {view['total_work']:,}")
    rows = view["payouts"] if view["status"] == "closed" else view["pending"]
    if not rows:
        out.print(f"no rows after that address ({view['count']} in all)"
                  if view["count"] else
                  "no work in this epoch" + (" yet" if view["status"] == "open" else ""))
        return
    closed = view["status"] == "closed"
    table = Table(box=None)
    for col in ("address", "work", "share", "payout" if closed else "estimated payout",
                "fees"):
        table.add_column(col, justify="left" if col == "address" else "right")
    total = view["total_work"] or 1
    for row in rows:
        amount = row["net"] if closed else row["estimated_payout"]
        table.add_row(row["address"], f"{row['work']:,}", f"{100 * row['work'] / total:.2f}%",
                      format_hc(amount), format_hc(row["fees"]))
    out.print(table)
    if len(rows) < view["count"]:
        more = (f"; next page: --after {view['next_after']}"
                if view["next_after"] is not None else "")
        out.print(f"{len(rows)} of {view['count']} rows{more}")


@cli_command
def inspect_block(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="HEIGHT, block HASH or 'latest'.")] = "latest",
    node: NodeOpt = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show a block's header and transactions (amounts in HC; --json: base units)."""
    from hashcloud.cli.chain_source import open_source
    from hashcloud.units import format_hc

    st = state(ctx)
    if not (ref == "latest" or (ref.isascii() and ref.isdigit()) or
            (len(ref) == 64 and _is_hex(ref))):
        raise UsageError("block reference must be a height, a 64-hex-digit hash or 'latest'")
    with open_source(st, node, data_dir) as src:
        blk = src.block(ref)
    if json_:
        print_json(blk)
        return
    h = blk["header"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan")
    grid.add_column(no_wrap=False)
    for k in ("height", "timestamp", "proposer", "prev_hash", "tx_root", "state_root",
              "compute_root", "signature"):
        grid.add_row(k, str(h.get(k, "")) or "-")
    out.print(Panel(grid, title=f"block {h['height']}  {blk['hash']}", expand=False))
    table = Table("tx_id", "type", "from", "to", "amount", "fee", "nonce")
    for tx in blk["transactions"]:
        table.add_row(tx["tx_id"][:16] + "…", tx["tx_type"], tx["from_address"],
                      tx["to_address"] or "-", format_hc(tx["amount"]), format_hc(tx["fee"]),
                      str(tx["nonce"]))
    out.print(table if blk["transactions"] else "[dim]no transactions[/]")


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


@cli_command
def submit(
    ctx: typer.Context,
    proof_path: Annotated[Path, typer.Argument(metavar="PROOF", help="Audited proof file.")],
    node: NodeOpt = None,
    key_name: Annotated[str, typer.Option("--key", help="Worker key name.")] = DEFAULT_KEY_NAME,
    wait: Annotated[bool, typer.Option(help="Wait until the claim is in a block.")] = True,
    json_: JsonOpt = False,
) -> None:
    """Send a finished proof's SUBMIT_RESULT claim to a node (refused if already claimed)."""
    from hashcloud.cli.mine_online import node_url_for
    from hashcloud.client.http import NodeClient
    from hashcloud.client.round import submit_claim
    from hashcloud.poc.proof import load_proof

    st = state(ctx)
    proof = load_proof(proof_path)
    key = load_key(st, key_name)
    with node_url_for(st, node) as (url, _), NodeClient(url) as client:
        txid, height = submit_claim(client, key, proof, wait=wait)
        acct = client.account(key.public_key.address)
    if json_:
        print_json({"tx_id": txid, "height": height, "address": acct.address,
                    "balance": acct.balance, "node": url})
    else:
        from hashcloud.units import format_hc

        where = f"included in block {height}" if height is not None else "pending"
        out.print(f"claim {txid} {where}; balance of {acct.address}: "
                  f"{format_hc(acct.balance)}")


@cli_command
def audit(
    ctx: typer.Context,
    proof_path: Annotated[Path | None, typer.Argument(metavar="[PROOF]",
                                                      help="Proof file to audit.")] = None,
    m: Annotated[int | None, typer.Option("--m", min=1, help="Samples to recompute.")] = None,
    chain: Annotated[bool, typer.Option("--chain", help="Re-verify a whole chain store.")] = False,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The node's probabilistic audit of a proof, or `--chain`: replay a chain store."""
    from hashcloud.poc.audit_policy import DEFAULT_POLICY
    from hashcloud.poc.detection import p_detect
    from hashcloud.poc.proof import load_proof
    from hashcloud.poc.verify import verify_proof

    st = state(ctx)
    if chain == (proof_path is not None):
        raise UsageError("give either a PROOF file or --chain")
    if chain:
        _audit_chain(data_dir or st.home / "node", json_)
        return
    assert proof_path is not None
    try:
        proof = load_proof(proof_path)
    except ProofError as exc:
        if json_:
            print_json({"valid": False, "errors": [str(exc)]})
        else:
            err.print(f"[bold red]invalid proof:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAIL) from None
    k = m if m is not None else DEFAULT_POLICY.base_m
    report = verify_proof(proof, k)
    s = report.samples
    k = len(report.recomputed)
    forged_values = sorted({1, 2, 3, 5, math.ceil(0.1 * s), math.ceil(0.25 * s),
                            math.ceil(0.5 * s), s} & set(range(1, s + 1)))
    table_rows = [(x, p_detect(s, x, k) if k else 0.0) for x in forged_values]
    if json_:
        print_json({"valid": report.valid, "errors": report.errors, "samples": s,
                    "audited": k, "recomputed": report.recomputed,
                    "p_detect": [{"forged": x, "p_detect": p} for x, p in table_rows]})
    else:
        # The title is a line of its own: as a table title it wraps to the narrow table.
        out.print(f"audit of {escape(str(proof_path))}: {k} of {s} samples recomputed")
        table = Table()
        table.add_column("forged samples X", justify="right")
        table.add_column("P_detect = 1 - C(s-X,m)/C(s,m)", justify="right")
        for x, p in table_rows:
            table.add_row(str(x), f"{p:.4f}")
        out.print(table)
        out.print("[bold green]PASSED[/]" if report.valid else "[bold red]FAILED[/]")
        for e in report.errors:
            err.print(f"[red]error:[/] {e}")
    if not report.valid:
        raise typer.Exit(EXIT_FAIL)


def load_data_dir(data_dir: Path) -> NodeFiles:
    """`hashcloud.node.config.load_data_dir`, imported only when `audit --chain` runs
    (the node package must not load for the other commands or for `--help`)."""
    from hashcloud.node.config import load_data_dir as load

    return load(data_dir)


def _check_watermark(files: NodeFiles) -> None:
    """A store behind what its node acknowledged fails the audit (`node.recovery`)."""
    from hashcloud.errors import ChainAuditFailed
    from hashcloud.node.recovery import watermark_problem

    problem = watermark_problem(files)
    if problem is not None:
        raise ChainAuditFailed(problem)


def _audit_chain(data_dir: Path, json_: bool) -> None:
    from hashcloud.chain.audit import audit_chain

    files = load_data_dir(data_dir)
    try:
        rep = audit_chain(files.chain_dir, files.genesis)
        _check_watermark(files)
    except HashCloudError as exc:
        if json_:
            print_json({"valid": False, "errors": [str(exc)]})
        else:
            err.print(f"[bold red]chain audit failed:[/] {exc}")
        raise typer.Exit(EXIT_FAIL) from None
    result = {"valid": True, "errors": [], "height": rep.height, "blocks": rep.blocks,
              "transactions": rep.transactions, "head_hash": rep.head_hash,
              "state_root": rep.state_root, "total_supply": rep.total_supply,
              "minted": rep.minted, "emitted": rep.emitted, "pool": rep.pool,
              "epochs_closed": rep.epochs_closed}
    if json_:
        print_json(result)
    else:
        out.print(f"[bold green]chain OK[/]: {rep.blocks} blocks to height {rep.height}, "
                  f"{rep.transactions} transactions, supply {rep.total_supply:,} "
                  f"(paid out of epoch pools {rep.minted:,}; open pool {rep.pool:,}; "
                  f"supply invariant held at {rep.epochs_closed} epoch closes); "
                  f"head {rep.head_hash}")

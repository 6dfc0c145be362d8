"""`hashcloud balance`, `inspect-block`, `submit` and `audit` (SPEC 7).

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
    cli_command,
    err,
    load_key,
    out,
    print_json,
    state,
)
from hashcloud.errors import HashCloudError, ProofError, UsageError
from hashcloud.params import DEFAULT_KEY_NAME

if TYPE_CHECKING:
    from hashcloud.node.config import NodeFiles

NodeOpt = Annotated[str | None, typer.Option(envvar="HASHCLOUD_NODE", help="Node URL.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Chain data dir (default: HOME/node).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@cli_command
def balance(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Argument(help="Address (default: local key).")] = None,
    node: NodeOpt = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Balance and nonce of an address."""
    from hashcloud.cli.chain_source import open_source
    from hashcloud.types import validate_address

    st = state(ctx)
    if address is None:
        address = load_key(st).public_key.address
    else:
        if address == address.upper():
            address = address.lower()  # BIP-173 allows all-upper input; records use lower
        try:
            validate_address(address)
        except HashCloudError as exc:
            raise UsageError(str(exc)) from None
    with open_source(st, node, data_dir) as src:
        acct = src.account(address)
    if json_:
        print_json(acct)
    else:
        out.print(f"{acct['address']}: balance [bold]{acct['balance']:,}[/], "
                  f"nonce {acct['nonce']}")


@cli_command
def inspect_block(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="HEIGHT, block HASH or 'latest'.")] = "latest",
    node: NodeOpt = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show a block's header and transactions."""
    from hashcloud.cli.chain_source import open_source

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
    out.print(Panel(grid, title=f"block {h['height']}  {blk['hash']}"))
    table = Table("tx_id", "type", "from", "to", "amount", "fee", "nonce")
    for tx in blk["transactions"]:
        table.add_row(tx["tx_id"][:16] + "…", tx["tx_type"], tx["from_address"],
                      tx["to_address"] or "-", f"{tx['amount']:,}", f"{tx['fee']:,}",
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
        where = f"included in block {height}" if height is not None else "pending"
        out.print(f"claim {txid} {where}; balance of {acct.address}: {acct.balance:,}")


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
        table = Table(title=f"audit of {proof_path}: {k} of {s} samples recomputed")
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


def _audit_chain(data_dir: Path, json_: bool) -> None:
    from hashcloud.chain.audit import audit_chain

    files = load_data_dir(data_dir)
    try:
        rep = audit_chain(files.chain_dir, files.genesis)
    except HashCloudError as exc:
        if json_:
            print_json({"valid": False, "errors": [str(exc)]})
        else:
            err.print(f"[bold red]chain audit failed:[/] {exc}")
        raise typer.Exit(EXIT_FAIL) from None
    result = {"valid": True, "errors": [], "height": rep.height, "blocks": rep.blocks,
              "transactions": rep.transactions, "head_hash": rep.head_hash,
              "state_root": rep.state_root, "total_supply": rep.total_supply,
              "minted": rep.minted}
    if json_:
        print_json(result)
    else:
        out.print(f"[bold green]chain OK[/]: {rep.blocks} blocks to height {rep.height}, "
                  f"{rep.transactions} transactions, supply {rep.total_supply:,} "
                  f"(minted {rep.minted:,}); head {rep.head_hash}")

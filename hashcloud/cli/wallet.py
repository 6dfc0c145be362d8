"""`hashcloud send`, `tx` and `history` (SPEC 7 v1.1): move coins and look them up.

`send` signs a TRANSFER with a key of the home (`chain.tx.make_transfer`, under the node's
signing domain) at the nonce the node says is next, submits it, and with `--wait` polls until
it is in a block. Amounts are typed in HC (`1.5`) or base units (`123u`, SPEC 6 v1.1 units)
and shown in HC; `--json` keeps integer base units.

The chain, key and HTTP modules are imported inside each command, so that building the app
(e.g. for `hashcloud --help`) does not load them.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from hashcloud.cli.common import (
    CliState,
    DataDirOpt,
    JsonOpt,
    NodeOpt,
    cli_command,
    load_key,
    out,
    print_json,
    state,
)
from hashcloud.errors import HashCloudError, InsufficientBalance, KeystoreError, UsageError
from hashcloud.params import DEFAULT_KEY_NAME


def address_argument(st: CliState, address: str | None, key_name: str | None) -> str:
    """The address a read command is about: `address` (validated; an all-upper bech32 form
    is accepted), else the address of key `key_name` (default key when neither is given),
    read from the key file without decrypting it."""
    from hashcloud.types import validate_address

    if address is not None and key_name is not None:
        raise UsageError("give an ADDRESS or --key NAME, not both")
    if address is None:
        return key_address(st, key_name or DEFAULT_KEY_NAME)
    if address == address.upper():
        address = address.lower()  # BIP-173 allows all-upper input; records use lower
    try:
        return validate_address(address)
    except HashCloudError as exc:
        raise UsageError(str(exc)) from None


def key_address(st: CliState, name: str) -> str:
    """The address of key `name` in the home (no passphrase needed: the file states it and
    `Keystore.list` checks it against the public key)."""
    ks = st.keystore
    path = ks.path_for(name)
    for info in ks.list():
        if info.path == path:
            if info.error is not None:
                raise KeystoreError(f"key {name!r} ({path}): {info.error}")
            return info.address
    raise KeystoreError(f"no key named {name!r} in {ks.directory} (run `hashcloud keygen`)")


def _check_url(node: str | None) -> None:
    if node is not None and not node.strip():
        raise UsageError("--node is empty: give a node URL")
    if node and not node.startswith(("http://", "https://")):
        raise UsageError(f"--node must be an http:// or https:// URL, got {node!r}")


@cli_command
def send(
    ctx: typer.Context,
    to: Annotated[str, typer.Argument(metavar="TO", help="Recipient address.")],
    amount: Annotated[str, typer.Argument(
        metavar="AMOUNT", help="HC (e.g. 1.5) or base units with suffix u (e.g. 1500u).")],
    key_name: Annotated[str, typer.Option("--key", help="Sender key name.")] = DEFAULT_KEY_NAME,
    node: NodeOpt = None,
    fee_price: Annotated[int | None, typer.Option(
        "--fee-price", min=1, show_default=False,
        help="Gas price in base units per gas (default and minimum: 1000; TRANSFER uses "
             "21,000 gas).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is in a block.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="--wait gives up after (s).")] = 120.0,
    json_: JsonOpt = False,
) -> None:
    """Send coins: a signed TRANSFER from a key of the home (SPEC 7 v1.1)."""
    from hashcloud.chain.tx import MIN_GAS_PRICE, TRANSFER_GAS, make_transfer, tx_id
    from hashcloud.cli.mine_online import node_url_for
    from hashcloud.client.http import NodeClient
    from hashcloud.client.round import node_domain
    from hashcloud.node.config import is_initialised
    from hashcloud.units import format_hc, parse_amount

    st = state(ctx)
    _check_url(node)
    recipient = address_argument(st, to, None)
    value = parse_amount(amount)
    if value == 0:
        raise UsageError("amount must be more than 0")
    gas_price = MIN_GAS_PRICE if fee_price is None else fee_price
    if gas_price < MIN_GAS_PRICE:
        raise UsageError(f"--fee-price must be at least {MIN_GAS_PRICE}")
    fee = TRANSFER_GAS * gas_price
    if not node and not is_initialised(st.home / "node"):
        # The embedded node would make a new, empty chain: nothing to send from there.
        raise UsageError(f"no --node given and no local chain in {st.home / 'node'}: give "
                         "--node URL (or set HASHCLOUD_NODE)")
    key = load_key(st, key_name)
    sender = key.public_key.address
    with node_url_for(st, node) as (url, _), NodeClient(url, retries=3) as client:
        info = client.info()
        balance = client.account(sender).balance
        if balance < value + fee:
            raise InsufficientBalance(
                f"{sender} has {format_hc(balance)}: not enough for {format_hc(value)} plus "
                f"the fee of {format_hc(fee)}")
        nonce = client.next_nonce(sender)
        tx = make_transfer(key, recipient, value, nonce, gas_price, domain=node_domain(info))
        txid = client.submit_transaction(tx).tx_id
        if txid != tx_id(tx):
            raise HashCloudError("the node returned a different transaction id")
        height = client.wait_for_inclusion(txid, timeout=timeout).height if wait else None
    if json_:
        print_json({"tx_id": txid, **({"included_height": height} if wait else {}),
                    "from_address": sender, "to_address": recipient, "amount": value,
                    "fee": fee, "nonce": nonce, "node": url})
        return
    where = f"included in block {height}" if wait else "pending (use --wait to wait for it)"
    out.print(f"sent {format_hc(value)} to {recipient} (fee {format_hc(fee)}, nonce {nonce})")
    out.print(f"tx {txid} {where}")


@cli_command
def tx(
    ctx: typer.Context,
    txid: Annotated[str, typer.Argument(metavar="TXID", help="Transaction id (64 hex).")],
    node: NodeOpt = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Look up a transaction: its status and, once included, block and fields."""
    from hashcloud.cli.chain_source import open_source
    from hashcloud.units import format_hc

    txid = txid.lower()
    if len(txid) != 64 or any(c not in "0123456789abcdef" for c in txid):
        raise UsageError("TXID must be 64 hex digits")
    with open_source(state(ctx), node, data_dir) as src:
        found = src.transaction(txid)
    if json_:
        print_json(found)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan")
    grid.add_column()
    grid.add_row("tx_id", txid)
    grid.add_row("status", found["status"])
    if found.get("height") is not None:
        grid.add_row("block", f"{found['height']} ({found.get('block_hash')}), "
                              f"index {found.get('index')}")
    body = found.get("transaction")
    if body is not None:
        grid.add_row("type", body["tx_type"])
        grid.add_row("from", body["from_address"])
        grid.add_row("to", body["to_address"] or "-")
        grid.add_row("amount", format_hc(body["amount"]))
        grid.add_row("fee", format_hc(body["fee"]))
        grid.add_row("nonce", str(body["nonce"]))
        if body.get("payload"):
            grid.add_row("task", str(body["payload"].get("task_id")))
    out.print(grid)


@cli_command
def history(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Argument(help="Address (default: local key).")] = None,
    key_name: Annotated[str | None, typer.Option(
        "--key", help="The address of this key in the home.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000,
                                       help="Most transactions shown.")] = 20,
    node: NodeOpt = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Transactions sent or received by an address, newest first."""
    from hashcloud.cli.chain_source import open_source
    from hashcloud.units import format_hc

    st = state(ctx)
    who = address_argument(st, address, key_name)
    with open_source(st, node, data_dir) as src:
        txs = src.history(who, limit)
    if json_:
        print_json({"address": who, "transactions": txs})
        return
    if not txs:
        out.print(f"{who}: no transactions")
        return
    table = Table("height", "tx_id", "type", "direction", "counterparty", "amount", "fee")
    for t in txs:
        outgoing = t["from_address"] == who
        other = t["to_address"] if outgoing else t["from_address"]
        sign = "-" if outgoing else "+"
        table.add_row(str(t["height"]), t["tx_id"][:16] + "…", t["tx_type"],
                      "out" if outgoing else "in", other or "-",
                      f"{sign}{format_hc(t['amount'])}" if t["amount"] else format_hc(0),
                      format_hc(t["fee"]) if outgoing else "-")
    out.print(f"{who}: {len(txs)} transaction{'s' if len(txs) != 1 else ''}, newest first")
    out.print(table)


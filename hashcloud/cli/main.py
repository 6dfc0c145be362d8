"""The `hashcloud` Typer app: global options and command registration (SPEC 7).

Registering a command imports its module, so every command module keeps its top-level imports
to the standard library, typer, rich and `hashcloud.cli.common`: `hashcloud --help` and the
light commands (`keygen`, `verify`) then never load the node, the HTTP stack or, for `--help`,
NumPy (tests/cli/test_startup.py; `scripts/bench_cli.py` measures the cost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hashcloud import __version__
from hashcloud.cli import chain_cmds, engine_cmds, node_cmd, wallet
from hashcloud.cli import keygen as keygen_cmd
from hashcloud.cli import mine as mine_cmd
from hashcloud.cli import verify as verify_cmd
from hashcloud.cli.common import CliState, default_home, err, out
from hashcloud.cli.display import fit_width

app = typer.Typer(
    name="hashcloud",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # keys are secrets: never dump locals
    add_completion=False,
    help="HashCloud: GPU proof-of-compute miner, validator node and L1 chain.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hashcloud {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            envvar="HASHCLOUD_HOME",
            help="Home directory for keys, config and the embedded node (default: ~/.hashcloud).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """HashCloud command line."""
    fit_width(out)  # piped output is never wrapped at 80 columns
    fit_width(err)
    ctx.obj = CliState(home=(home.expanduser() if home else default_home()))


app.command("keygen")(keygen_cmd.keygen)
app.add_typer(keygen_cmd.keys_app, name="keys")
app.command("mine")(mine_cmd.mine)
app.command("verify")(verify_cmd.verify)
app.command("selftest")(engine_cmds.selftest)
app.command("bench")(engine_cmds.bench)
app.command("submit")(chain_cmds.submit)
app.command("audit")(chain_cmds.audit)
app.command("balance")(chain_cmds.balance)
app.command("epoch")(chain_cmds.epoch)
app.command("inspect-block")(chain_cmds.inspect_block)
app.command("send")(wallet.send)
app.command("tx")(wallet.tx)
app.command("history")(wallet.history)
app.add_typer(node_cmd.node_app, name="node")


def main() -> None:
    """Console entry point."""
    app()

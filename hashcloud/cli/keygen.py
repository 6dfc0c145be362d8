"""`hashcloud keygen` and `hashcloud keys list` (SPEC 7, SPEC 5)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hashcloud.cli.common import cli_command, out, passphrase_from_env_or_prompt, print_json, state
from hashcloud.errors import InvalidKey, KeystoreError, UsageError
from hashcloud.params import DEFAULT_KEY_NAME

keys_app = typer.Typer(no_args_is_help=True, help="Manage the keys in the home directory.")


@cli_command
def keygen(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Key name (file keys/NAME.json).")] = DEFAULT_KEY_NAME,
    import_: Annotated[
        str | None,
        typer.Option("--import", metavar="-", help="Read a hex private key from stdin ('-')."),
    ] = None,
    encrypt: Annotated[
        bool, typer.Option("--encrypt", help="Protect the key file with a passphrase.")
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create a secp256k1 key and print its cpc1... address."""
    # Imported here, not at the top: `hashcloud --help` must not load the key libraries.
    from hashcloud.crypto.keys import PrivateKey
    from hashcloud.crypto.keystore import check_key_name

    st = state(ctx)
    try:
        check_key_name(name)
    except KeystoreError as exc:
        raise UsageError(str(exc)) from None
    key = None
    if import_ is not None:
        if import_ != "-":
            raise UsageError("--import takes '-' (the key is read from stdin, never argv)")
        try:
            key = PrivateKey.from_hex(sys.stdin.readline())
        except InvalidKey as exc:  # unreadable input: exit 2 (SPEC 7)
            raise UsageError(f"--import: {exc}") from None
    passphrase = passphrase_from_env_or_prompt(name, confirm=True) if encrypt else None
    info = st.keystore.create(name, key, passphrase)
    if json_:
        print_json({"address": info.address, "public_key": info.public_key,
                    "path": str(info.path), "name": info.name, "encrypted": info.encrypted})
        return
    out.print(info.address)
    out.print(f"[dim]key {info.name!r} saved to {info.path} (mode 0600"
              f"{', encrypted' if info.encrypted else ''})[/]")


@keys_app.command("list")
@cli_command
def keys_list(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List the keys in the home with their addresses."""
    keys = state(ctx).keystore.list()
    if json_:
        print_json({"keys": [{"name": k.name, "address": k.address, "public_key": k.public_key,
                              "path": str(k.path), "encrypted": k.encrypted,
                              "error": k.error} for k in keys]})
        return
    # The address never wraps; a long path folds onto more lines instead of being cut.
    table = Table("name", "encrypted")
    table.add_column("address", no_wrap=True)
    table.add_column("path", overflow="fold")
    for k in keys:
        table.add_row(k.name, "yes" if k.encrypted else "no",
                      k.address if k.error is None else f"[red]unusable: {escape(k.error)}[/]",
                      escape(str(k.path)))
    out.print(table if keys else "no keys yet: run `hashcloud keygen`")

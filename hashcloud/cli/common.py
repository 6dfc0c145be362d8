"""Shared CLI plumbing: consoles, the home directory, JSON output and error mapping (SPEC 7).

Only the `cli` package prints. Commands wrap their bodies with `@cli_command`, which turns
`HashCloudError` into a one-line message on stderr and exit code 1 (`InputError`: 2), so a
user never sees a traceback for a user error.

Start-up cost: `hashcloud --help` imports every command module, so this module and the command
modules import only the standard library, typer, rich and `hashcloud.errors` at their top; the
core (pydantic models, keys, NumPy, the node's HTTP stack) is imported inside the command that
needs it (`tests/cli/test_startup.py` checks this).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hashcloud.errors import HashCloudError, InputError, KeystoreError, UsageError
from hashcloud.params import BACKEND_NAMES, DEFAULT_KEY_NAME

#: The options every chain-reading command shares (`chain_cmds`, `wallet`).
NodeOpt = Annotated[str | None, typer.Option(envvar="HASHCLOUD_NODE", help="Node URL.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Chain data dir (default: HOME/node).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]

if TYPE_CHECKING:  # annotations only: the key modules load pydantic and the curve libraries
    from hashcloud.crypto.keys import PrivateKey
    from hashcloud.crypto.keystore import Keystore

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
PASSPHRASE_ENV = "HASHCLOUD_PASSPHRASE"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    """Per-invocation state set by the global options."""

    home: Path

    @property
    def keystore(self) -> Keystore:
        """The keystore under the home directory."""
        from hashcloud.crypto.keystore import Keystore

        return Keystore(self.home)


def state(ctx: typer.Context) -> CliState:
    """The CliState of this invocation (set by the app callback)."""
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):  # invoked without the callback (should not happen)
        obj = CliState(home=default_home())
        ctx.find_root().obj = obj
    return obj


def default_home() -> Path:
    """`$HASHCLOUD_HOME` or `~/.hashcloud` (SPEC 7)."""
    env = os.environ.get("HASHCLOUD_HOME")
    return Path(env).expanduser() if env else Path("~/.hashcloud").expanduser()


def check_engine_options(n: int, backend: str = "auto") -> None:
    """Usage errors (exit 2) for a bad matrix size or backend name, before any work."""
    from hashcloud.errors import EngineError
    from hashcloud.types import validate_n

    if backend not in BACKEND_NAMES:
        raise UsageError(f"--backend must be one of {', '.join(BACKEND_NAMES)}")
    try:
        validate_n(n)
    except EngineError as exc:
        raise UsageError(f"--n: {exc}") from None


def print_json(obj: object) -> None:
    """Print exactly one JSON object on stdout (the `--json` convention of SPEC 7)."""
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = EXIT_FAIL, as_json: bool = False) -> typer.Exit:
    """Print `message` on stderr (and, under --json, `{"error": ...}` on stdout, so a
    script always gets one JSON object) and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    if as_json:
        print_json({"error": message, "exit_code": code})
    return typer.Exit(code=code)


def cli_command(func: F) -> F:
    """Map HashCloud errors raised by a command to stderr + exit code 1 (usage: 2)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("json_"))
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            raise fail(str(exc), EXIT_USAGE, as_json) from None
        except HashCloudError as exc:
            raise fail(str(exc), EXIT_FAIL, as_json) from None
        except OSError as exc:  # the file system refused: say what and where, no traceback
            where = f": {exc.filename}" if exc.filename else ""
            raise fail(f"{exc.strerror or exc}{where}", EXIT_FAIL, as_json) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130, as_json) from None

    return wrapper  # type: ignore[return-value]


def passphrase_from_env_or_prompt(name: str, *, confirm: bool = False) -> str:
    """The key passphrase from `$HASHCLOUD_PASSPHRASE`, else prompted without echo."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    if not sys.stdin.isatty():
        raise KeystoreError(
            f"key {name!r} needs a passphrase: set {PASSPHRASE_ENV} or run interactively"
        )
    # On stderr: stdout carries the --json object only.
    return typer.prompt(f"Passphrase for key {name!r}", hide_input=True,
                        confirmation_prompt=confirm, err=True)


def load_key(st: CliState, name: str = DEFAULT_KEY_NAME) -> PrivateKey:
    """Load key `name` from the home, asking for its passphrase if it is encrypted."""
    ks = st.keystore
    if ks.exists(name) and ks.is_encrypted(name):
        return ks.load(name, passphrase_from_env_or_prompt(name))
    return ks.load(name)


def node_key_passphrase(data_dir: Path) -> str | None:
    """The passphrase of the node key in `data_dir` (`$HASHCLOUD_PASSPHRASE` or a prompt)
    when that key file is encrypted, else None; a key file others may read is refused here,
    before any prompt."""
    from hashcloud.crypto.keystore import Keystore
    from hashcloud.node.config import NODE_KEY_NAME

    ks = Keystore(data_dir)
    if ks.exists(NODE_KEY_NAME) and ks.is_encrypted(NODE_KEY_NAME):
        return passphrase_from_env_or_prompt(NODE_KEY_NAME)
    return None


def load_or_create_key(st: CliState, name: str = DEFAULT_KEY_NAME) -> tuple[PrivateKey, bool]:
    """Load key `name`, creating a plaintext 0600 key if there is none; (key, created)."""
    ks = st.keystore
    if not ks.exists(name):
        info = ks.create(name)
        err.print(f"created key [bold]{name}[/] ({info.address}) at {info.path}")
        return ks.load(name), True
    return load_key(st, name), False

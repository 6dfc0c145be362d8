"""Start-up cost of the CLI: what `hashcloud --help`, `keygen` and `verify` import.

Building the Typer app imports every command module, so a heavy import at the top of one of
them is paid by every command. These tests run the real entry point in a fresh interpreter and
list the modules it loaded: a deterministic check (no timing) that the light commands never
load the node, its HTTP stack or the client, and that `--help` does not load NumPy.
`scripts/bench_cli.py` measures the CPU time itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hashcloud.cli.main import app

# Run in a fresh interpreter: `app(argv)` as the console script does, then write the exit code
# and the loaded modules we watch to the file named by argv[1] (stdout belongs to the command).
PROBE = """
import json, sys
from hashcloud.cli.main import app
code = 0
try:
    app(sys.argv[2:], prog_name="hashcloud")
except SystemExit as exc:
    code = exc.code or 0
watched = {"fastapi", "uvicorn", "starlette", "httpx", "numpy", "cupy"}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in watched
                or m.split(".")[:2] in (["hashcloud", "node"], ["hashcloud", "client"],
                                        ["hashcloud", "api"]))
with open(sys.argv[1], "w") as fh:
    json.dump({"exit_code": code, "modules": loaded}, fh)
"""

SERVER_STACK = ("fastapi", "uvicorn", "starlette", "httpx", "hashcloud.node", "hashcloud.client",
                "hashcloud.api")
"""What no light command may import: the node, its HTTP server and the HTTP client."""


def run_probe(tmp_path: Path, *argv: str) -> tuple[int, list[str]]:
    """(exit code, watched modules loaded) of `hashcloud ARGV` in a fresh interpreter."""
    result = tmp_path / "probe.json"
    env = {**os.environ, "HASHCLOUD_HOME": str(tmp_path / "home")}
    env.pop("HASHCLOUD_NODE", None)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(result), *argv], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert result.exists(), proc.stderr[-3000:]
    obj = json.loads(result.read_text())
    return obj["exit_code"], obj["modules"]


def offending(modules: list[str], forbidden: tuple[str, ...]) -> list[str]:
    """The modules in `modules` that are, or are inside, one of `forbidden`."""
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden)]


@pytest.fixture(scope="module")
def small_proof(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small offline proof (n=64), mined in-process in a throw-away home."""
    tmp = tmp_path_factory.mktemp("startup")
    proof = tmp / "proof.json"
    r = CliRunner().invoke(app, ["--home", str(tmp / "home"), "mine", "--offline", "--n", "64",
                                 "--duration", "0.2", "--out", str(proof), "--json"])
    assert r.exit_code == 0, r.output
    return proof


@pytest.mark.parametrize("argv", [["--help"], ["keygen", "--help"], ["verify", "--help"],
                                  ["keygen", "--json"], ["keys", "list"], ["--version"]])
def test_light_commands_do_not_import_the_server_stack(tmp_path, argv):
    code, modules = run_probe(tmp_path, *argv)
    assert code == 0
    assert offending(modules, SERVER_STACK) == []


def test_verify_of_a_small_proof_does_not_import_the_server_stack(tmp_path, small_proof):
    code, modules = run_probe(tmp_path, "verify", str(small_proof), "--json")
    assert code == 0  # valid
    assert offending(modules, SERVER_STACK) == []
    assert "numpy" in modules  # verify recomputes leaves: the probe does see real imports


@pytest.mark.parametrize("argv", [["--help"], ["keygen", "--help"]])
def test_help_does_not_import_numpy(tmp_path, argv):
    code, modules = run_probe(tmp_path, *argv)
    assert code == 0
    assert offending(modules, ("numpy", "cupy")) == []




def _command_paths() -> list[list[str]]:
    """Every command and group of the app as an argv prefix (`[]` is the app itself)."""
    import typer.main

    def walk(cmd, prefix: list[str]) -> list[list[str]]:
        paths = [prefix]
        for name, sub in getattr(cmd, "commands", {}).items():
            paths += walk(sub, [*prefix, name])
        return paths

    return walk(typer.main.get_command(app), [])


def test_every_command_builds_its_help() -> None:
    """Each command's options still resolve (their annotations name no lazily imported type)."""
    paths = _command_paths()
    assert len(paths) >= 16  # the app, its 11 commands and groups, the groups' 4 commands
    runner = CliRunner()
    for path in paths:
        r = runner.invoke(app, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)

"""CLI test helpers: the real `hashcloud` as a subprocess, a real node process on 127.0.0.1.

Subprocesses get no `$COLUMNS` (unlike the node suite's helpers): the output-width tests need
rich's behaviour on a real pipe. Everything is small (n = 64, 0.3 s blocks).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashcloud.crypto.keys import PrivateKey
from tests.node.conftest import LISTEN_RE, NodeProcess, hashcloud_cmd  # noqa: F401 (re-exported)
from tests.node.conftest import start_node as _start_node

REPO = Path(__file__).resolve().parents[2]
FUNDED_KEY = PrivateKey(0xF00D_CAFE)
FUNDED_AMOUNT = 10**15  # 1,000,000 HC


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of CLI subprocesses: no inherited node URL, home, passphrase or
    terminal width."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HASHCLOUD_NODE", "HASHCLOUD_HOME", "HASHCLOUD_PASSPHRASE", "COLUMNS",
                        "LINES")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(home: Path, *args: str, timeout: float = 60,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion, stdout and stderr on pipes (never a terminal)."""
    return subprocess.run(hashcloud_cmd(home, *args), capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


NodeProc = NodeProcess
"""A running `hashcloud node start` child process (the node suite's helper)."""


def start_node(data_dir: Path, home: Path, *, port: int = 0, block_time: float = 0.3,
               deadline: float = 30.0) -> NodeProcess:
    """The node suite's `start_node`, with this suite's environment (no `COLUMNS`)."""
    return _start_node(data_dir, home, port=port, block_time=block_time, deadline=deadline,
                       env=cli_env())


def init_funded_chain(tmp_path: Path) -> tuple[Path, Path]:
    """A home holding FUNDED_KEY as its `default` key and a node data dir whose genesis funds
    it: (home, data_dir)."""
    home = tmp_path / "home"
    data_dir = tmp_path / "node"
    r = run_cli(home, "keygen", "--import", "-", stdin=FUNDED_KEY.hex() + "\n")
    assert r.returncode == 0, r.stderr
    r = run_cli(home, "node", "init", "--data-dir", str(data_dir), "--block-time", "0.3",
                "--alloc", f"{FUNDED_KEY.public_key.address}={FUNDED_AMOUNT}")
    assert r.returncode == 0, r.stderr
    return home, data_dir


@pytest.fixture
def funded_node(tmp_path: Path) -> Iterator[NodeProc]:
    """A real node over a data dir whose genesis funds the home's default key."""
    home, data_dir = init_funded_chain(tmp_path)
    node = start_node(data_dir, home)
    try:
        yield node
    finally:
        node.stop()

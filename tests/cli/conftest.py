"""CLI test helpers: the real `hashcloud` as a subprocess, a real node process on 127.0.0.1.

Subprocesses get no `$COLUMNS` (unlike the node suite's helpers): the output-width tests need
rich's behaviour on a real pipe. Everything is small (n = 64, 0.3 s blocks).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hashcloud.crypto.keys import PrivateKey

REPO = Path(__file__).resolve().parents[2]
FUNDED_KEY = PrivateKey(0xF00D_CAFE)
FUNDED_AMOUNT = 10**15  # 1,000,000 HC
LISTEN_RE = re.compile(r"hashcloud node listening on (http://127\.0\.0\.1:\d+) ")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of CLI subprocesses: no inherited node URL, home, passphrase or
    terminal width."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HASHCLOUD_NODE", "HASHCLOUD_HOME", "HASHCLOUD_PASSPHRASE", "COLUMNS",
                        "LINES")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def hashcloud_cmd(home: Path, *args: str) -> list[str]:
    """argv of `python -m hashcloud --home HOME ...`."""
    return [sys.executable, "-m", "hashcloud", "--home", str(home), *args]


def run_cli(home: Path, *args: str, timeout: float = 60,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion, stdout and stderr on pipes (never a terminal)."""
    return subprocess.run(hashcloud_cmd(home, *args), capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


@dataclass
class NodeProc:
    """A running `hashcloud node start` child process."""

    url: str
    proc: subprocess.Popen[str]
    data_dir: Path
    home: Path
    port: int = 0
    lines: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill9(self) -> None:
        """SIGKILL: the node gets no chance to clean up."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def start_node(data_dir: Path, home: Path, *, port: int = 0, block_time: float = 0.3,
               deadline: float = 30.0) -> NodeProc:
    """Start a node on `data_dir` and wait for its listening line (port 0: any free)."""
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        hashcloud_cmd(home, "node", "start", "--data-dir", str(data_dir), "--port", str(port),
                      "--block-time", str(block_time)),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        text=True, env=cli_env())
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keep the stdout pipe drained for the node's whole life
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    node = NodeProc("", proc, data_dir, home)
    end = time.monotonic() + deadline
    while True:
        try:
            line = lines.get(timeout=max(0.01, end - time.monotonic()))
        except queue.Empty:
            node.stop()
            pytest.fail(f"node did not listen within {deadline} s")
        if line is None:
            node.stop()
            pytest.fail(f"node exited ({proc.returncode}) before listening")
        match = LISTEN_RE.search(line)
        if match:
            node.url = match.group(1)
            node.port = int(node.url.rsplit(":", 1)[1])
            return node


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

"""Connection floods against a real node process (issue 11 item 1).

The node runs as `hashcloud node start` with its open-file limit lowered to 256 (soft and
hard, so start-up cannot raise it). An attacker thread keeps more half-sent requests open
than the node has file descriptors, from eight loopback source addresses, reopening every
connection the node closes. Meanwhile `/v1/info` answers and an honest `hashcloud mine`
round (n = 64, 1 s) is audited, claimed and included (as one before the flood); the
node's log stays small (no traceback per failed accept). The figures (flood size,
connections reopened, the honest round's time) are printed for the closing note
(`pytest -s`).
"""

from __future__ import annotations

import json
import queue
import resource
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.node.conftest import (
    LISTEN_RE,
    cli_env,
    hashcloud_cmd,
    make_node_dir,
    run_cli,
    stop_process,
)

FD_LIMIT = 256
FLOOD_SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]
FLOOD_PER_SOURCE = 40  # 320 half-open requests > 256 file descriptors
PARTIAL = b"POST /v1/transactions HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"


def _metric(text: str, name: str) -> float:
    """The value of the unlabelled Prometheus sample `name` in `text`."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _lower_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


class Flood:
    """Keeps `len(sources) * per_source` half-sent requests open against `port`, reopening
    each one the node closes, until stopped. `opened` counts every connection made."""

    def __init__(self, port: int, sources: list[str], per_source: int) -> None:
        self.port = port
        self.slots = [src for src in sources for _ in range(per_source)]
        self.socks: list[socket.socket | None] = [None] * len(self.slots)
        self.opened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, i: int) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((self.slots[i], 0))
            s.connect_ex(("127.0.0.1", self.port))
            poller = select.poll()
            poller.register(s, select.POLLOUT)
            poller.poll(1000)
            s.send(PARTIAL)
        except OSError:
            pass  # refused or reset: reopened on the next pass
        self.socks[i] = s
        self.opened += 1

    def _run(self) -> None:
        for i in range(len(self.slots)):
            self._open(i)
        while not self.stop.is_set():
            poller = select.poll()  # poll, not select: descriptors may exceed FD_SETSIZE
            by_fd = {}
            for i, s in enumerate(self.socks):
                if s is not None and s.fileno() >= 0:
                    poller.register(s, select.POLLIN)
                    by_fd[s.fileno()] = i
            for fd, _ in poller.poll(200):  # readable half-sent request: closed (or answered)
                i = by_fd[fd]
                self.socks[i].close()  # type: ignore[union-attr]
                self._open(i)
        for s in self.socks:
            if s is not None:
                s.close()

    def __enter__(self) -> Flood:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_node_survives_a_flood_of_half_sent_requests(tmp_path: Path) -> None:
    nd = make_node_dir(tmp_path / "node")
    home = tmp_path / "home"
    home.mkdir()
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log_fh:
        proc = subprocess.Popen(
            hashcloud_cmd(home, "node", "start", "--data-dir", str(nd.path), "--port", "0",
                          "--block-time", "0.3", "--header-timeout", "3"),
            stdout=subprocess.PIPE, stderr=log_fh, text=True, env=cli_env(),
            preexec_fn=_lower_fd_limit)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout],  # type: ignore[union-attr]
                     daemon=True).start()
    try:
        match = LISTEN_RE.search(lines.get(timeout=30))
        assert match, log_path.read_text()
        url = match.group(1)
        port = int(url.rsplit(":", 1)[1])
        t0 = time.monotonic()
        calm = run_cli(home, "mine", "--node", url, "--duration", "1", "--n", "64", "--json",
                       timeout=60)
        calm_seconds = time.monotonic() - t0
        assert calm.returncode == 0, calm.stderr
        with Flood(port, FLOOD_SOURCES, FLOOD_PER_SOURCE) as flood:
            while flood.opened < len(flood.slots):
                time.sleep(0.1)
            time.sleep(1.0)  # the node has seen all of them
            info = httpx.get(f"{url}/v1/info", timeout=10)
            assert info.status_code == 200, info.text
            t0 = time.monotonic()
            mined = run_cli(home, "mine", "--node", url, "--duration", "1", "--n", "64",
                            "--json", timeout=60)
            honest_seconds = time.monotonic() - t0
            assert mined.returncode == 0, mined.stderr
            out = json.loads(mined.stdout.strip().splitlines()[-1])
            assert out["accepted"] is True and out["height"] >= 1, out
            assert httpx.get(f"{url}/v1/head", timeout=10).status_code == 200
            reopened = flood.opened - len(flood.slots)
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
        closed = {name: _metric(metrics, f"hc_connections_{name}_total")
                  for name in ("refused", "evicted", "timed_out")}
        assert closed["evicted"] + closed["refused"] > 0, closed  # the guard did the work
        assert proc.poll() is None, "the node died under the flood"
        log_size = log_path.stat().st_size
        print(f"\nflood: {len(flood.slots)} half-sent requests from {len(FLOOD_SOURCES)} "
              f"addresses against an fd limit of {FD_LIMIT} ({reopened} reopened after the "
              f"node closed them); honest mine round (n=64, 1 s) took {honest_seconds:.1f} s "
              f"(without the flood: {calm_seconds:.1f} s); node closed {closed}; "
              f"node log {log_size} bytes")
        assert log_size < 20_000, log_path.read_text()[-3000:]
        assert "Traceback" not in log_path.read_text()
    finally:
        stop_process(proc)

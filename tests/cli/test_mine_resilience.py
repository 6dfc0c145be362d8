"""Miners that never give up (issue 12, SPEC 7 v1.1 `mine`): real `hashcloud mine` and
`hashcloud node start` processes on 127.0.0.1, n = 64, 1 s rounds.

- `--rounds 0` rides out a node outage (killed, down ~6 s, restarted on the same port) with
  capped backoff (`--backoff-max 2` here; the default cap is 30 s, so a 30 s outage costs at
  most ~30 s more) and fails over down a `--node` list;
- SIGTERM finishes and summarises the round in progress, exit 0;
- `--json` prints each finished round as one line as it ends;
- an unwritable `--out` or proof directory is refused before any compute;
- plain speed lines on a stderr that is not a terminal.
"""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import (
    NodeProc,
    cli_env,
    hashcloud_cmd,
    init_funded_chain,
    run_cli,
    start_node,
)

MINE = ("mine", "--n", "64", "--duration", "1")


class Miner:
    """A `hashcloud mine` child process whose stdout lines are collected as they come."""

    def __init__(self, home: Path, *args: str) -> None:
        self.proc = subprocess.Popen(hashcloud_cmd(home, *args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True, env=cli_env())
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def next_line(self, timeout: float) -> str:
        """The next stdout line (fails the test after `timeout` s or at EOF)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            pytest.fail(f"no output in {timeout} s; stderr:\n{''.join(self.stderr)[-3000:]}")
        if line is None:
            pytest.fail(f"mine exited ({self.proc.poll()}); stderr:\n"
                        f"{''.join(self.stderr)[-3000:]}")
        return line

    def rest(self, timeout: float) -> list[str]:
        """Every remaining stdout line, once the process has exited."""
        self.proc.wait(timeout=timeout)
        out: list[str] = []
        while (line := self.lines.get(timeout=10)) is not None:
            out.append(line)
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_challenge(node: NodeProc, count: int = 1, timeout: float = 30) -> None:
    """Until the node has issued `count` challenges (its metrics say so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"hc_challenges_issued_total {float(count)}" in httpx.get(
                node.url + "/metrics", timeout=5).text:
            return
        time.sleep(0.05)
    pytest.fail("the miner never got a challenge")


@pytest.fixture
def chain(tmp_path):
    """(home, data_dir) of a funded chain, no node running yet."""
    return init_funded_chain(tmp_path)


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_rounds_0_rides_out_a_node_outage_then_sigterm_summarises(chain, tmp_path):
    home, data_dir = chain
    port = free_port()
    node = start_node(data_dir, home, port=port)
    miner = Miner(tmp_path / "miner", *MINE, "--node", node.url, "--rounds", "0", "--json",
                  "--backoff-max", "2")
    try:
        first = json.loads(miner.next_line(60))
        assert first["accepted"] is True and first["round"] == 1
        node.kill9()  # no goodbye: the miner sees refused connections
        time.sleep(6)  # the outage: more than the client's own retries (1.5 s) ride out
        assert miner.proc.poll() is None, "mine gave up during the outage"
        node = start_node(data_dir, home, port=port)
        after = [json.loads(miner.next_line(60)) for _ in range(2)]
        assert all(r["accepted"] for r in after), after
        miner.proc.send_signal(signal.SIGTERM)
        rest = [json.loads(line) for line in miner.rest(60)]
    finally:
        miner.kill()
        node.stop()
    assert miner.proc.returncode == 0, "".join(miner.stderr)[-3000:]
    rounds = [first, *after, *rest]
    assert [r["round"] for r in rounds] == sorted({r["round"] for r in rounds})
    assert rounds[-1]["accepted_rounds"] >= 3
    err = "".join(miner.stderr)
    assert "cannot reach node" in err and "retrying in" in err, err[-2000:]


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_a_node_restart_mid_round_is_ridden_out_not_a_lost_round(chain, tmp_path):
    """The node dies while the miner computes and stays down longer than the client's own
    retries: the commit keeps retrying (the challenge is still valid and journaled), so the
    round in flight is accepted once the node is back."""
    home, data_dir = chain
    port = free_port()
    node = start_node(data_dir, home, port=port)
    miner = Miner(tmp_path / "miner", "mine", "--n", "64", "--duration", "2", "--node",
                  node.url, "--rounds", "0", "--json", "--backoff-max", "2")
    try:
        wait_for_challenge(node)
        time.sleep(0.3)  # the challenge reached the miner: it computes for 2 s
        node.kill9()
        time.sleep(6)
        assert miner.proc.poll() is None, "mine gave up during the outage"
        node = start_node(data_dir, home, port=port)
        first = json.loads(miner.next_line(60))
        miner.proc.send_signal(signal.SIGTERM)
        miner.rest(60)
    finally:
        miner.kill()
        node.stop()
    assert first["round"] == 1 and first["accepted"] is True, first
    assert first["tx_id"] is not None and first["height"] >= 1
    assert miner.proc.returncode == 0, "".join(miner.stderr)[-3000:]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_sigterm_finishes_the_round_in_progress_with_a_summary(chain, tmp_path):
    home, data_dir = chain
    node = start_node(data_dir, home)
    miner = Miner(tmp_path / "miner", "mine", "--n", "64", "--duration", "30", "--node",
                  node.url, "--rounds", "0", "--print-time", "0.5")
    try:
        wait_for_challenge(node)
        time.sleep(1.5)  # inside the 30 s of compute
        miner.proc.send_signal(signal.SIGTERM)
        stdout = "".join(miner.rest(60))
    finally:
        miner.kill()
        node.stop()
    err = "".join(miner.stderr)
    assert miner.proc.returncode == 0, err[-3000:]
    assert "round summary" in stdout and "(interrupted)" in stdout
    assert "after 1 accepted / 0 rejected rounds" in stdout
    # stderr is a pipe: plain speed lines, no live panel redraws.
    speed = [line for line in err.splitlines() if line.startswith("round 1: ")]
    assert speed and "loops/s" in speed[0] and "\x1b[" not in err


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_json_streams_one_line_per_round_as_it_ends(chain, tmp_path):
    home, data_dir = chain
    node = start_node(data_dir, home)
    miner = Miner(tmp_path / "miner", *MINE, "--node", node.url, "--rounds", "2", "--json")
    try:
        first = json.loads(miner.next_line(60))
        running = miner.proc.poll() is None  # round 2 still has >= 1 s of compute ahead
        rest = miner.rest(60)
    finally:
        miner.kill()
        node.stop()
    assert running, "the first round's line came only at exit"
    assert miner.proc.returncode == 0
    assert len(rest) == 1
    second = json.loads(rest[0])
    assert (first["round"], second["round"]) == (1, 2)
    assert first["accepted"] and second["accepted"] and second["accepted_rounds"] == 2
    for key in ("loops", "compute_time", "merkle_root", "accepted", "proof_path"):
        assert key in first  # SPEC 7 `mine --json` fields, on every line


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_fails_over_from_a_dead_node_to_the_next(chain, tmp_path):
    home, data_dir = chain
    node = start_node(data_dir, home)
    dead = f"http://127.0.0.1:{free_port()}"
    miner = Miner(tmp_path / "miner", *MINE, "--node", f"{dead},{node.url}", "--rounds", "0",
                  "--json", "--backoff-max", "1")
    try:
        row = json.loads(miner.next_line(60))
        miner.proc.send_signal(signal.SIGTERM)
        miner.rest(60)
    finally:
        miner.kill()
        node.stop()
    assert row["accepted"] is True and row["node"] == node.url
    assert f"trying {node.url}" in "".join(miner.stderr)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_single_round_also_tries_the_next_node_and_stops_when_all_are_down(chain, tmp_path):
    home, data_dir = chain
    node = start_node(data_dir, home)
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        r = run_cli(tmp_path / "miner", *MINE, "--node", dead, "--node", node.url, "--json",
                    "--backoff-max", "1", timeout=90)
    finally:
        node.stop()
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["node"] == node.url
    r = run_cli(tmp_path / "miner", *MINE, "--node", dead, "--backoff-max", "1", timeout=90)
    assert r.returncode == 1 and "stopping" in r.stderr and "cannot reach node" in r.stderr


@pytest.mark.timeout(60)
def test_an_unwritable_out_is_refused_before_any_compute(tmp_path):
    home = tmp_path / "home"
    r = run_cli(home, *MINE, "--offline", "--out", "/proc/hashcloud-nope/p.json")
    assert r.returncode == 2 and "cannot be written" in r.stderr, r.stderr
    assert "backend:" not in r.stderr  # refused before the engine started
    (home / "proofs").parent.mkdir(parents=True)
    (home / "proofs").write_text("a file where the proof directory should be")
    r = run_cli(home, *MINE, "--offline")
    assert r.returncode == 2 and "is not a directory" in r.stderr, r.stderr


def test_node_lists_and_backoff_parse_and_grow():
    from hashcloud.cli.mine_online import parse_node_urls
    from hashcloud.client.http import Backoff
    from hashcloud.errors import InvalidOption, UsageError

    assert parse_node_urls(["http://a:1,http://b:2", "http://c:3", "http://a:1"]) == [
        "http://a:1", "http://b:2", "http://c:3"]
    assert parse_node_urls(None) == []
    for bad in (["http://a:1,,http://b:2"], ["ftp://x"], [" "]):
        with pytest.raises(UsageError):
            parse_node_urls(bad)
    import random

    b = Backoff(1.0, 30.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(10)]
    caps = [min(30.0, 2.0**i) for i in range(10)]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert max(delays) <= 30.0
    b.reset()
    assert b.next_delay() <= 1.0
    with pytest.raises(InvalidOption):
        Backoff(5.0, 1.0)

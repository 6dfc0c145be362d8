"""Round log lines and per-worker metrics (`node.round_log`, issue 12 operator visibility)."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from hashcloud.engine.mining import Engine
from hashcloud.node.round_log import OTHER_WORKERS, RoundLog
from hashcloud.node.service import NodeService
from tests.node.conftest import ROUND_LOOPS, WORKER_KEY, N, honest_round, node_client


def test_a_real_round_is_logged_and_counted(service: NodeService, api: TestClient,
                                            engine: Engine, caplog) -> None:
    caplog.set_level(logging.INFO, logger="hashcloud.node.round_log")
    outcome = honest_round(node_client(api), WORKER_KEY, engine)
    assert outcome.accepted
    worker = WORKER_KEY.public_key.address
    lines = [r.getMessage() for r in caplog.records if r.name == "hashcloud.node.round_log"]
    assert len(lines) == 1
    assert lines[0].startswith(f"round accepted: worker={worker} n={N} loops={ROUND_LOOPS} ")
    text = generate_latest(service.metrics.registry).decode()
    assert f'hc_worker_rounds_total{{outcome="accepted",worker="{worker}"}} 1.0' in text
    assert f'hc_worker_loops_total{{worker="{worker}"}} {float(ROUND_LOOPS)}' in text


def test_labels_are_bounded_and_refusals_are_no_rounds(caplog) -> None:
    caplog.set_level(logging.INFO, logger="hashcloud.node.round_log")
    registry = CollectorRegistry()
    rounds = RoundLog(registry, top_workers=2, remember=3)
    for i in range(5):
        rounds.issued(f"c{i}", f"w{i}", 64)
        rounds.committed(f"c{i}", 10 + i)
        rounds.finished(f"c{i}", "accepted" if i % 2 == 0 else "failed", reason="bad leaf")
    rounds.issued("m", "w0", 64)
    rounds.finished("m", "malformed")  # no audit: no round, no line
    rounds.finished("gone", "failed")  # forgotten (restart): logged with worker=?
    text = generate_latest(registry).decode()
    workers = {line.split('worker="')[1].split('"')[0] for line in text.splitlines()
               if line.startswith("hc_worker_rounds_total{")}
    assert workers == {"w0", "w1", OTHER_WORKERS}
    assert f'hc_worker_rounds_total{{outcome="accepted",worker="{OTHER_WORKERS}"}} 2.0' in text
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6
    assert lines[1] == "round failed: worker=w1 n=64 loops=11 challenge=c1 reason=bad leaf"
    assert lines[-1].startswith("round failed: worker=? n=? loops=? challenge=gone")
    for i in range(10):  # only `remember` open rounds are kept
        rounds.issued(f"x{i}", "w0", 64)
    assert len(rounds._rounds) == 3

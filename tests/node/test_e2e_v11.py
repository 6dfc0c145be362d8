"""SPEC 3 v1.1 end to end: real `hashcloud node start` processes on 127.0.0.1.

- Durable challenges: a node killed with SIGKILL between commit and reveal comes back with
  the round open; the reveal (its plan unchanged) is accepted and repeated reveals get the
  same receipt.
- The client address is the socket peer: a client sending made-up X-Forwarded-For headers
  still hits the per-IP challenge limit, unless the operator names it a trusted proxy.
- The `node start` audit options: `--audit-mode full` runs whole-leaf audits, and
  `/metrics` shows `hc_audit_seconds` and `hc_reveals_total` after a round.
"""

from __future__ import annotations

import time

import httpx
import pytest

from hashcloud.api.models import CommitRequest, DeviceModel, RevealRequest, SampleModel
from hashcloud.client.http import NodeClient
from hashcloud.client.round import request_challenge, run_online_round
from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.crypto.signatures import ChainDomain, sign
from hashcloud.engine.mining import Engine
from hashcloud.poc.audit import check_indices_signature, check_receipt
from hashcloud.poc.challenge import challenge_request_bytes
from hashcloud.poc.receipt import decode_receipt
from hashcloud.poc.round import make_samples, run_loops, sample_outputs, sign_commit, sign_reveal
from tests.node.conftest import TEST_DEVICE, WORKER_KEY, N, make_node_dir, run_cli, start_node

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(90)
def test_round_survives_kill9_between_commit_and_reveal(tmp_path) -> None:
    nd = make_node_dir(tmp_path / "node")
    options = ("--audit-rows", "8")
    node = start_node(nd.path, tmp_path / "home", extra_args=options)
    try:
        with Engine("numpy", n=N) as engine, NodeClient(node.url, retries=0) as client:
            info = client.info()
            ch = request_challenge(client, WORKER_KEY, N, info).challenge
            work = run_loops(engine, ch.seed, 0, max_loops=64)
            com = client.commit(ch.challenge_id, CommitRequest(
                loops=work.loops, compute_time=work.compute_time,
                merkle_root=work.merkle_root,
                device=DeviceModel(name=TEST_DEVICE.name, backend=TEST_DEVICE.backend),
                device_signature=sign_commit(WORKER_KEY, ch.challenge_id, work)))
        plan = com.audit
        assert plan.mode == "rows" and all(len(rows) == 8 for rows in plan.rows)
        node.kill9()  # no cleanup at all: only what was fsynced survives

        node = start_node(nd.path, tmp_path / "home", extra_args=options)
        with NodeClient(node.url, retries=0) as client:
            check_indices_signature(PublicKey(info.node_public_key), info.chain_domain(),
                                    ch.challenge_id, work.merkle_root, work.loops,
                                    com.indices, com.indices_signature, plan)
            samples = make_samples(work.tree, work.leaves, com.indices,
                                   sample_outputs(ch.seed, N, plan.audited))
            req = RevealRequest(
                samples=[SampleModel.model_validate(s, from_attributes=True) for s in samples],
                signature=sign_reveal(WORKER_KEY, info.chain_domain(), ch.challenge_id,
                                      work.merkle_root, samples))
            first = client.reveal(ch.challenge_id, req)
            assert first.accepted and first.audited == len(plan.audited)
            check_receipt(decode_receipt(first.receipt), [info.node_public_key.hex()],
                          domain=info.chain_domain(), task_id=ch.challenge_id,
                          worker_address=WORKER_KEY.public_key.address,
                          merkle_root=work.merkle_root, loops=work.loops)
            node.kill9()
            node = start_node(nd.path, tmp_path / "home", extra_args=options)
        with NodeClient(node.url, retries=0) as client:
            assert client.reveal(ch.challenge_id, req) == first  # the outcome was durable
    finally:
        node.stop()


def _challenge_body(key: PrivateKey, chain_id: ChainDomain) -> dict:
    now_ms = int(time.time() * 1000)
    address = key.public_key.address
    sig = sign(key, challenge_request_bytes(chain_id, address, N, now_ms))
    return {"worker_address": address, "public_key": key.public_key.hex(), "n": N,
            "request_time_ms": now_ms, "signature": sig.hex()}


def _statuses(url: str, chain_id: ChainDomain, count: int) -> list[int]:
    """`count` challenge requests from fresh keys, each claiming another client address."""
    out = []
    with httpx.Client(base_url=url, timeout=10) as http:
        for j in range(count):
            key = PrivateKey(0xAB00 + j)
            resp = http.post("/v1/challenges", json=_challenge_body(key, chain_id),
                             headers={"X-Forwarded-For": f"203.0.113.{j + 1}"})
            out.append(resp.status_code)
    return out


@pytest.mark.timeout(90)
def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(tmp_path) -> None:
    nd = make_node_dir(tmp_path / "node")
    node = start_node(nd.path, tmp_path / "home", extra_args=("--ip-rate", "3"))
    try:
        assert _statuses(node.url, nd.domain, 5) == [200, 200, 200, 429, 429]
    finally:
        node.stop()
    # The operator's proxy (here: the loopback the test connects from) is believed.
    node = start_node(nd.path, tmp_path / "home",
                      extra_args=("--ip-rate", "3", "--trusted-proxy", "127.0.0.1"))
    try:
        assert _statuses(node.url, nd.domain, 5) == [200] * 5
    finally:
        node.stop()


@pytest.mark.timeout(90)
def test_full_audit_mode_round_and_its_metrics(tmp_path) -> None:
    nd = make_node_dir(tmp_path / "node")
    node = start_node(nd.path, tmp_path / "home", extra_args=("--audit-mode", "full"))
    try:
        with Engine("numpy", n=N) as engine, NodeClient(node.url, retries=0) as client:
            outcome = run_online_round(client, WORKER_KEY, N, TEST_DEVICE,
                                       lambda seed: run_loops(engine, seed, 0, max_loops=40))
            assert outcome.accepted, outcome.reason
            assert outcome.proof.audit is not None and outcome.proof.audit.mode == "full"
            metrics = httpx.get(node.url + "/metrics", timeout=10).text
        assert f'hc_audit_seconds_count{{mode="full",n="{N}"}} 1.0' in metrics
        assert 'hc_reveals_total{outcome="accepted"} 1.0' in metrics
        assert 'hc_reveals_total{outcome="failed"} 0.0' in metrics
    finally:
        node.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "message"), [
    (("--audit-mode", "half"), "--audit-mode must be one of rows, full"),
    (("--audit-rows", "0"), "--audit-rows"),
])
def test_bad_audit_options_are_usage_errors(tmp_path, args, message) -> None:
    proc = run_cli(tmp_path / "home", "node", "start", "--data-dir", str(tmp_path / "node"),
                   "--port", "0", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr + proc.stdout
    assert not (tmp_path / "node").exists()  # refused before anything was created

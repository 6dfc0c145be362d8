"""A network on loopback (SPEC 6, 7 v1.1): a producer and followers as real node processes.

- A producer and two followers (`node start --follow URL`, one with `--genesis-hash`): a
  transfer sent through a follower is included and visible on all three; a mining round
  whose PoC requests are relayed through a follower is audited by the producer and its
  claim, sent through the other follower, is paid on all three.
- SIGKILL of the producer: the followers keep serving reads, relayed writes get 503 with a
  reason; the producer restarted on its port: the followers reconnect, the transaction
  acknowledged just before the kill is included; a follower restarted resumes from its own
  store; new writes go through, all three agree.
- A second PoC validator (genesis lists its key, `node init --validator-key`): a follower
  holding that key audits a round itself and signs the receipt; the claim is relayed to the
  producer and paid.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hashcloud.chain.genesis import genesis_hash
from hashcloud.chain.tx import tx_id
from hashcloud.client.http import NodeClient
from hashcloud.client.round import submit_claim
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.keystore import Keystore
from hashcloud.engine.mining import Engine
from hashcloud.node.config import NODE_KEY_NAME, load_data_dir
from tests.node.conftest import (
    BLOCK_TIME_MS,
    FUNDED_AMOUNT,
    FUNDED_KEY,
    OTHER_KEY,
    WORKER_KEY,
    N,
    NodeDir,
    honest_round,
    make_node_dir,
    run_cli,
    start_node,
    transfer,
)

pytestmark = pytest.mark.e2e


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `check` until it holds (errors count as not yet); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def included(url: str, txid: str) -> bool:
    """Whether `txid` is in a block of the node at `url`."""
    return httpx.get(f"{url}/v1/transactions/{txid}", timeout=5).json().get(
        "status") == "included"


def head(url: str) -> dict:
    """The node's head."""
    return httpx.get(f"{url}/v1/head", timeout=5).json()


def post_tx(url: str, tx) -> httpx.Response:  # noqa: ANN001 - a Transaction
    """POST a transaction to `url`."""
    return httpx.post(f"{url}/v1/transactions", json=tx.model_dump(mode="json"), timeout=30)


def balance(url: str, address: str) -> int:
    """An account's balance at the node's head."""
    return httpx.get(f"{url}/v1/accounts/{address}", timeout=5).json()["balance"]


@pytest.mark.timeout(180)
def test_producer_and_two_followers_survive_a_producer_kill(tmp_path: Path) -> None:
    nd = make_node_dir(tmp_path / "producer")
    port = free_port()
    args = ("--port", str(port))
    producer = start_node(nd.path, tmp_path / "ph", extra_args=args)
    digest = genesis_hash(nd.files.genesis)
    f1 = start_node(tmp_path / "f1", tmp_path / "f1h", extra_args=("--follow", producer.url))
    f2 = start_node(tmp_path / "f2", tmp_path / "f2h",
                    extra_args=("--follow", producer.url, "--genesis-hash", digest))
    nodes = [producer, f1, f2]
    try:
        assert f"genesis {digest}" in f1.stderr()
        info = httpx.get(f"{f1.url}/v1/info").json()
        assert info["role"] == "follower" and info["genesis_hash"] == digest
        assert info["follow"]["producer"] == producer.url

        # A transfer through follower 1 is included and visible everywhere.
        tx = transfer(nd, 0, amount=4242)
        resp = post_tx(f1.url, tx)
        assert resp.status_code == 200, resp.text
        txid = resp.json()["tx_id"]
        for node in nodes:
            wait_for(f"tx on {node.url}", lambda u=node.url: included(u, txid))
        to = OTHER_KEY.public_key.address
        assert {balance(n.url, to) for n in nodes} == {4242}

        # A mining round relayed through follower 2 (audited by the producer), claimed
        # through follower 1: paid on all three.
        with Engine("numpy", n=N) as engine, NodeClient(f2.url, retries=0) as c2, \
                NodeClient(f1.url, retries=0) as c1:
            outcome = honest_round(c2, WORKER_KEY, engine)
            assert outcome.accepted, outcome
            assert outcome.receipt is not None
            assert outcome.receipt.validator_public_key == nd.files.key.public_key.data
            claim_id, _ = submit_claim(c1, WORKER_KEY, outcome.proof, wait=False)
        for node in nodes:
            wait_for(f"claim on {node.url}", lambda u=node.url: included(u, claim_id))
        worker = WORKER_KEY.public_key.address
        assert len({balance(n.url, worker) for n in nodes}) == 1

        # Ack a transfer through follower 2, then SIGKILL the producer.
        pending = transfer(nd, 1, amount=7)
        assert post_tx(f2.url, pending).status_code == 200
        producer.kill9()
        for follower in (f1, f2):
            assert head(follower.url)["height"] >= 1  # reads still served
            assert balance(follower.url, to) >= 4242
            resp = post_tx(follower.url, transfer(nd, 2))
            assert resp.status_code == 503 and "producer" in resp.json()["detail"]
            wait_for("disconnected state", lambda u=follower.url: httpx.get(
                f"{u}/v1/info").json()["follow"]["state"] == "disconnected")

        # The producer comes back on its port: everything resumes, nothing is lost.
        producer = start_node(nd.path, tmp_path / "ph", extra_args=args)
        nodes[0] = producer
        for node in nodes:
            wait_for(f"acked tx on {node.url}", lambda u=node.url: included(u, tx_id(pending)))
        # The follower's own restart: it resumes from its store (height in its first line).
        before = head(f1.url)["height"]
        f1.stop()
        f1 = start_node(tmp_path / "f1", tmp_path / "f1h", extra_args=("--follow", producer.url))
        nodes[1] = f1
        assert head(f1.url)["height"] >= before
        later = transfer(nd, 2, amount=9)
        # 409 after a 503: the producer took it although the relay's answer was lost.
        wait_for("relay back up", lambda: post_tx(f1.url, later).status_code in (200, 409))
        for node in nodes:
            wait_for(f"new tx on {node.url}", lambda u=node.url: included(u, tx_id(later)))
        wait_for("same head everywhere", lambda: len({head(n.url)["hash"] for n in nodes}) == 1)
        assert len({balance(n.url, to) for n in nodes}) == 1
        for follower in (f1, f2):
            wait_for("following again", lambda u=follower.url: httpx.get(
                f"{u}/v1/info").json()["follow"]["state"] in ("following", "syncing"))
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.timeout(120)
def test_a_follower_holding_a_validator_key_audits_rounds(tmp_path: Path) -> None:
    v_key = PrivateKey(0x5EC0_D7A1)
    Keystore(tmp_path / "v").create(NODE_KEY_NAME, v_key)
    # `node init --validator-key` lists the second validator in genesis.
    home = tmp_path / "ph"
    home.mkdir()
    res = run_cli(home, "node", "init", "--data-dir", str(tmp_path / "producer"),
                  "--block-time", str(BLOCK_TIME_MS / 1000),
                  "--alloc", f"{FUNDED_KEY.public_key.address}={FUNDED_AMOUNT}",
                  "--validator-key", v_key.public_key.hex(), "--json")
    assert res.returncode == 0, res.stderr
    files = load_data_dir(tmp_path / "producer")
    assert files.genesis.validators == (files.key.public_key.hex(), v_key.public_key.hex())
    nd = NodeDir(tmp_path / "producer", files, FUNDED_KEY)
    producer = start_node(nd.path, home)
    validator = start_node(tmp_path / "v", tmp_path / "vh",
                           extra_args=("--follow", producer.url))
    try:
        info = httpx.get(f"{validator.url}/v1/info").json()
        assert info["validator"] is True
        assert info["node_public_key"] == v_key.public_key.hex()
        with Engine("numpy", n=N) as engine, NodeClient(validator.url, retries=0) as client:
            outcome = honest_round(client, WORKER_KEY, engine)
            assert outcome.accepted, outcome
            assert outcome.receipt is not None
            assert outcome.receipt.validator_public_key == v_key.public_key.data
            claim_id, _ = submit_claim(client, WORKER_KEY, outcome.proof, wait=False)
        for node in (producer, validator):
            wait_for(f"claim on {node.url}", lambda u=node.url: included(u, claim_id))
    finally:
        validator.stop()
        producer.stop()

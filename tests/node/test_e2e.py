"""End to end: a real `hashcloud node start` process on 127.0.0.1 and the real CLI.

An honest round mined by `hashcloud mine` is audited, claimed, included and paid; its proof
verifies offline and cannot be claimed twice; the including block has the SPEC 7 shape;
SIGKILL loses no acknowledged transaction or block; `audit --chain` accepts the store and
rejects it after one flipped byte; malformed input to the real server is a 4xx.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from hashcloud.chain.epoch import scheduled_subsidy
from hashcloud.chain.genesis import load_genesis
from hashcloud.chain.store.index import INDEX_NAME, read_index
from hashcloud.chain.tx import TX_FIELDS, Transaction, make_transfer, tx_id, tx_to_json
from hashcloud.client.http import NodeClient
from hashcloud.crypto.keys import PrivateKey
from hashcloud.poc.receipt import decode_receipt
from tests.node.conftest import (
    CLAIM_FEE,
    OTHER_KEY,
    make_node_dir,
    run_cli,
    start_node,
    transfer,
)

pytestmark = pytest.mark.e2e

HEADER_FIELDS = {"height", "prev_hash", "timestamp", "proposer", "tx_root", "state_root",
                 "compute_root", "signature"}
RESULT_FIELDS = ["task_id", "worker_address", "result_hash", "proof", "nonce", "signature"]


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash (SPEC 2), written out independently of the package."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def wait_for_block_above(http: httpx.Client, height: int, timeout: float = 15.0) -> dict:
    """Poll `/v1/head` until the node's head is above `height`; return that head."""
    deadline = time.monotonic() + timeout
    while True:
        head = http.get("/v1/head").json()
        if head["height"] > height:
            return head
        if time.monotonic() > deadline:
            pytest.fail(f"no block above height {height} within {timeout} s")
        time.sleep(0.02)


def cli_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout  # --json: exactly one JSON object on stdout
    return json.loads(lines[0])


# ----------------------------------------------------------------- one mined round


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory):
    """A node process and one honest round mined against it with the CLI."""
    base = tmp_path_factory.mktemp("mined")
    nd = make_node_dir(base / "node")
    home = base / "home"
    node = start_node(nd.path, home)
    try:
        proc = run_cli(home, "mine", "--node", node.url, "--duration", "1", "--n", "64",
                       "--json", timeout=60)
        yield node, nd, home, cli_json(proc)
    finally:
        node.stop()


@pytest.mark.timeout(90)
def test_cli_round_is_accepted_included_and_rewarded(mined) -> None:
    node, nd, home, out = mined
    assert out["accepted"] is True, out
    assert out["node"] == node.url and out["embedded"] is False
    assert isinstance(out["tx_id"], str) and len(out["tx_id"]) == 64
    assert isinstance(out["height"], int) and out["height"] >= 1
    proof = json.loads(Path(out["proof_path"]).read_text())
    receipt = decode_receipt(bytes.fromhex(proof["receipt"][2:]))
    assert (receipt.task_id, receipt.loops, receipt.n) == (proof["challenge_id"], out["loops"],
                                                           64)
    genesis = load_genesis(nd.path / "genesis.json")
    # SPEC 6 v1.1: the claim records work, paid at the epoch's close (720 blocks away): the
    # sole miner expects epoch 0's whole pool, less its deferred fee.
    pool = scheduled_subsidy(1, genesis.epoch_length, genesis.subsidy0, genesis.halving_interval)
    assert out["reward"] == pool and out["work"] == receipt.loops * 64**3
    bal = cli_json(run_cli(home, "balance", out["address"], "--node", node.url, "--json"))
    assert bal["balance"] == 0 and bal["nonce"] == 1
    assert bal["pending_work"] == receipt.loops * 64**3
    assert bal["estimated_payout"] == pool - CLAIM_FEE
    assert out["balance"] == 0
    with NodeClient(node.url, retries=0) as client:
        status = client.tx_status(out["tx_id"])
    assert status.status == "included" and status.height == out["height"]


@pytest.mark.timeout(60)
def test_mined_proof_verifies_offline(mined) -> None:
    _, _, home, out = mined
    report = cli_json(run_cli(home, "verify", out["proof_path"], "--json"))
    assert report["valid"] is True and report["errors"] == []
    assert report["loops"] == out["loops"]
    names = " ".join(c["name"] for c in report["checks"]).lower()
    for what in ("token", "indices", "receipt"):
        assert what in names, f"no {what} check in {names}"
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    assert len(report["recomputed"]) == report["samples"] >= 10  # default: every sample


@pytest.mark.timeout(60)
def test_second_submit_of_the_proof_is_refused(mined) -> None:
    node, _, home, out = mined
    proc = run_cli(home, "submit", out["proof_path"], "--node", node.url)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "already rewarded" in proc.stderr
    assert "Traceback" not in proc.stderr
    bal = cli_json(run_cli(home, "balance", out["address"], "--node", node.url, "--json"))
    assert bal["nonce"] == 1  # nothing else was included


@pytest.mark.timeout(60)
def test_inspect_block_has_the_spec_shape(mined) -> None:
    node, _, home, out = mined
    blk = cli_json(run_cli(home, "inspect-block", str(out["height"]), "--node", node.url,
                           "--json"))
    assert set(blk) == {"hash", "header", "transactions"}
    header = blk["header"]
    assert set(header) == HEADER_FIELDS
    assert header["height"] == out["height"]
    assert len(blk["hash"]) == 64 and len(header["prev_hash"]) == 64
    claims = [t for t in blk["transactions"] if t["tx_type"] == "SUBMIT_RESULT"]
    assert out["tx_id"] in [t["tx_id"] for t in claims]
    for tx in blk["transactions"]:
        assert set(tx) == {"tx_id", *TX_FIELDS}
    claim = next(t for t in claims if t["tx_id"] == out["tx_id"])
    assert list(claim["payload"]) == RESULT_FIELDS  # payload is an object, in SPEC order
    assert claim["payload"]["task_id"] == json.loads(
        Path(out["proof_path"]).read_text())["challenge_id"]
    assert claim["to_address"] is None and claim["amount"] == 0
    # compute_root = MTH(SHA256(compact JSON of each ComputeResult)) in block order.
    leaves = [hashlib.sha256(json.dumps(t["payload"], separators=(",", ":")).encode()).digest()
              for t in claims]
    assert header["compute_root"] != ""
    assert header["compute_root"] == mth(leaves).hex()
    assert header["tx_root"] == mth([bytes.fromhex(t["tx_id"]) for t in blk["transactions"]]
                                    ).hex()
    latest = cli_json(run_cli(home, "inspect-block", "latest", "--node", node.url, "--json"))
    assert latest["header"]["height"] >= out["height"]


# ----------------------------------------------------------------------- crash safety


@pytest.mark.timeout(90)
def test_sigkill_loses_no_acknowledged_transaction_or_block(tmp_path: Path) -> None:
    nd = make_node_dir(tmp_path / "node")
    home = tmp_path / "home"
    node = start_node(nd.path, home)
    acked: list[str] = []
    blocks: dict[int, str] = {}
    try:
        with httpx.Client(base_url=node.url, timeout=10) as http:
            for nonce in range(24):
                resp = http.post("/v1/transactions",
                                 json=tx_to_json(transfer(nd, nonce, amount=nonce + 1)))
                assert resp.status_code == 200, resp.text
                acked.append(resp.json()["tx_id"])
                if nonce % 6 == 5:  # let a block be made meanwhile (polled, not slept)
                    head = wait_for_block_above(http, max(blocks, default=0))
                    for h in range(1, head["height"] + 1):
                        blocks[h] = http.get(f"/v1/blocks/{h}").json()["hash"]
        node.kill9()  # right after the last acknowledgement
    finally:
        node.stop()
    assert blocks, "no block was produced before the kill"

    node = start_node(nd.path, home)
    try:
        with NodeClient(node.url, retries=0) as client:
            for txid in acked:
                assert client.tx_status(txid).status in ("pending", "included"), txid
            for height, digest in blocks.items():
                assert client.block(str(height))["hash"] == digest, height
            for txid in acked:  # and every one of them makes it into a block
                client.wait_for_inclusion(txid, timeout=15, poll=0.1)
            acct = client.account(nd.funded.public_key.address)
            assert acct.nonce == len(acked)
            assert client.account(OTHER_KEY.public_key.address).balance == sum(range(1, 25))
    finally:
        node.stop()
    assert node.proc.returncode is not None

    audit = run_cli(home, "audit", "--chain", "--data-dir", str(nd.path), "--json")
    report = cli_json(audit)
    assert report["valid"] is True and report["transactions"] >= len(acked)
    log = nd.path / "chain" / "blocks.log"
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0x01
    log.write_bytes(bytes(data))
    audit = run_cli(home, "audit", "--chain", "--data-dir", str(nd.path))
    assert audit.returncode == 1, (audit.stdout, audit.stderr)
    assert "Traceback" not in audit.stderr


@pytest.mark.timeout(60)
def test_journal_survives_sigkill_before_any_block(tmp_path: Path) -> None:
    """Transactions acknowledged with a long block time (none included yet) come back."""
    nd = make_node_dir(tmp_path / "node")
    home = tmp_path / "home"
    node = start_node(nd.path, home, block_time=30)
    try:
        with NodeClient(node.url, retries=0) as client:
            acked = [client.submit_transaction(transfer(nd, n)).tx_id for n in range(5)]
            assert client.info().head.height == 0
        node.kill9()
    finally:
        node.stop()
    node = start_node(nd.path, home, block_time=30)
    try:
        with NodeClient(node.url, retries=0) as client:
            assert [client.tx_status(t).status for t in acked] == ["pending"] * 5
            assert client.next_nonce(nd.funded.public_key.address) == 5
    finally:
        node.stop()


# --------------------------------------------------------------- the real HTTP server


@pytest.mark.timeout(60)
def test_real_server_refuses_malformed_input_with_4xx(node_process) -> None:
    url, _, _, _ = node_process
    with httpx.Client(base_url=url, timeout=10) as http:
        for path in ("/v1/challenges", "/v1/challenges/" + "ab" * 16 + "/commit",
                     "/v1/challenges/" + "ab" * 16 + "/reveal", "/v1/transactions"):
            for body in (b"{", b"[]", b"null", b'{"x": 1}', b"\xff\xfe", b"[" * 20_000):
                resp = http.post(path, content=body, headers={"content-type": "application/json"})
                assert 400 <= resp.status_code < 500, (path, body[:10], resp.status_code)
                assert isinstance(resp.json()["detail"], str)
            resp = http.post(path, content=b" " * ((1 << 20) + 1),
                             headers={"content-type": "application/json"})
            # 1 MiB everywhere, and for the reveal of any challenge that is not committed
            # (its limit is sized per committed challenge): never read.
            assert resp.status_code == 413
        for path in ("/v1/blocks/zz", "/v1/transactions/zz", "/v1/accounts/zz"):
            resp = http.get(path)
            assert 400 <= resp.status_code < 500, (path, resp.status_code)


@pytest.mark.timeout(60)
def test_real_server_refuses_chunked_oversized_body_with_413(node_process) -> None:
    url, _, _, _ = node_process

    def chunks():
        for _ in range(20):
            yield b" " * 65536 * 2  # 2.5 MiB in all, no Content-Length

    with httpx.Client(base_url=url, timeout=10) as http:
        resp = http.post("/v1/transactions", content=chunks(),
                         headers={"content-type": "application/json"})
    assert resp.status_code == 413, (resp.status_code, resp.text)


@pytest.mark.timeout(60)
def test_raw_garbage_on_the_socket_does_not_kill_the_node(node_process) -> None:
    url, proc, _, _ = node_process
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00\xa5garbage that is not HTTP\r\n\r\n")
        sock.recv(1024)
    with NodeClient(url, retries=0) as client:
        assert client.info().head.height >= 0
    assert proc.poll() is None


@pytest.mark.timeout(60)
def test_websocket_head_feed_on_the_real_server(node_process) -> None:
    url, _, _, funded = node_process
    ws_url = url.replace("http://", "ws://") + "/v1/ws/heads"
    with connect(ws_url, open_timeout=10) as ws, NodeClient(url, retries=0) as client:
        first = json.loads(ws.recv(timeout=10))
        assert first == client.info().head.model_dump()
        tx = make_tx(client, funded)
        client.submit_transaction(tx)
        deadline = time.monotonic() + 10
        while True:
            head = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if head["height"] > first["height"]:
                break
        assert head["hash"] == client.block(str(head["height"]))["hash"]
        assert client.wait_for_inclusion(tx_id(tx), timeout=10).height >= 1


def make_tx(client: NodeClient, key: PrivateKey) -> Transaction:
    """A transfer from `key` on the node's chain (id + genesis) with its next nonce."""
    info = client.info()
    return make_transfer(key, OTHER_KEY.public_key.address, 7,
                         client.next_nonce(key.public_key.address), domain=info.chain_domain())


# ------------------------------------------------------------------- clean shutdown



@pytest.mark.timeout(60)
def test_sigterm_closes_the_service_cleanly(node_process, tmp_path) -> None:
    """`run_node` promises to close the service on SIGTERM: the service says so in its log
    (NodeService.close ran), and blocks.idx covers every block (genesis included)."""
    url, proc, data_dir, funded = node_process
    idx = data_dir / "chain" / INDEX_NAME
    with NodeClient(url, retries=0) as client:
        for _ in range(2):
            tx = make_tx(client, funded)
            client.submit_transaction(tx)
            client.wait_for_inclusion(tx_id(tx), timeout=10, poll=0.05)
        height = client.info().head.height
    proc.terminate()
    proc.wait(timeout=10)
    # Read through the store's own reader: the index format is the store's business.
    count = len(read_index(idx) or ())
    assert count == height + 1, (
        f"blocks.idx covers {count} blocks of {height + 1} (exit status {proc.returncode})")
    logs = "".join(p.read_text() for p in (tmp_path / "home").glob("node-*.stderr"))
    assert "node closed: journal and chain store closed" in logs, logs[-2000:]


@pytest.mark.timeout(60)
def test_sigterm_stops_the_node_after_a_websocket_client_left(node_process) -> None:
    url, proc, _, _ = node_process
    with connect(url.replace("http://", "ws://") + "/v1/ws/heads", open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["height"] == 0
    time.sleep(0.2)  # let the close reach the node (no state shows it: nothing to poll)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the node ignored SIGTERM for 5 s after a WebSocket subscriber left")


@pytest.mark.timeout(120)
def test_miner_survives_a_node_restart_mid_round(tmp_path) -> None:
    """kill -9 of the node while a miner computes: the round survives (SPEC 3 v1.1
    durable challenges), so once the node is back every round is accepted."""
    import socket as _socket

    from tests.node.conftest import make_node_dir, run_cli_async, start_node

    with _socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nd = make_node_dir(tmp_path / "node")
    node = start_node(nd.path, tmp_path / "nh", extra_args=("--port", str(port)))
    home = tmp_path / "miner"
    miner = run_cli_async(home, "mine", "--node", node.url, "--rounds", "3", "--duration",
                          "2", "--n", "64", "--json")
    try:
        # Wait until the node has issued the miner its challenge (it then computes 2 s).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = httpx.get(node.url + "/metrics", timeout=5).text
            if "hc_challenges_issued_total 1.0" in metrics:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the miner never got a challenge")
        time.sleep(0.3)  # the answer reaches the miner: it is now inside its 2 s compute
        node.kill9()
        node = start_node(nd.path, tmp_path / "nh", extra_args=("--port", str(port)))
        stdout, stderr = miner.communicate(timeout=90)
    finally:
        if miner.poll() is None:
            miner.kill()
        node.stop()
    assert miner.returncode == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]  # one line per round
    assert len(rows) == 3 and rows[-1]["accepted_rounds"] == 3, rows

"""Followers (SPEC 6, 7 v1.1): block ranges, genesis bootstrap, the sync loop, the relay.

Everything runs in-process on real parts: the producer is the real `NodeService` behind the
real FastAPI app, reached through httpx's ASGI transport (the sync loop) or Starlette's
TestClient (the relay, genesis fetch); the follower is a real `FollowerService` on its own
store. Tampering happens on the wire (a transport that rewrites the producer's answers), so
the follower sees exactly what a lying producer would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from hashcloud.api.models import RevealRequest
from hashcloud.chain.block import Block, block_hash, decode_block, encode_block
from hashcloud.chain.genesis import genesis_hash, genesis_to_json
from hashcloud.chain.tx import tx_id
from hashcloud.errors import FollowRefused, InvalidBlock, NodeRejected, ProducerUnavailable
from hashcloud.node import sync
from hashcloud.node.app import create_app
from hashcloud.node.config import NodeFiles
from hashcloud.node.follower import (
    Follower,
    FollowerService,
    fetch_genesis,
    open_follower_dir,
)
from hashcloud.node.refusal import clear_refusal, load_refusal, refusal_path
from hashcloud.node.service import NodeService
from hashcloud.node.sync import block_range, decode_range
from tests.fake_http import FakeNode
from tests.node.conftest import (
    OTHER_KEY,
    WORKER_KEY,
    FakeClock,
    NodeDir,
    challenge_request,
    commit_request,
    make_node_dir,
    run_cli,
    start_node,
    transfer,
)

URL = "http://producer.test"


def produce(svc: NodeService, nd: NodeDir, count: int, first_nonce: int = 0) -> None:
    """`count` blocks on `svc`, one transfer each (nonces from `first_nonce`)."""
    for i in range(count):
        svc.submit_transaction(transfer(nd, first_nonce + i, amount=10 + i))
        assert svc.produce_block() is not None


class Producer:
    """A producer node in-process: service, app, async transport and sync client."""

    def __init__(self, nd: NodeDir) -> None:
        self.nd = nd
        self.svc = NodeService(nd.files)
        self.app = create_app(self.svc, produce_blocks=False)
        self.client = TestClient(self.app, base_url=URL, raise_server_exceptions=False)

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)

    def close(self) -> None:
        self.client.close()
        self.svc.close()


@pytest.fixture
def producer(tmp_path: Path):
    p = Producer(make_node_dir(tmp_path / "producer"))
    yield p
    p.close()


def open_follower(path: Path, producer: Producer) -> FollowerService:
    """A follower data dir initialised from the producer's genesis, and its service."""
    files, _ = open_follower_dir(path, URL, fetch=lambda url, pin: fetch_genesis(
        url, pin, client=producer.client))
    return FollowerService(files, URL, relay_client=producer.client)


def follow_until(follower: Follower, done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Run the sync loop until `done()` holds or the loop ends (refused); fail on timeout."""

    async def main() -> None:
        task = asyncio.create_task(follower.run())
        deadline = time.monotonic() + timeout
        try:
            while not done() and not task.done():
                assert time.monotonic() < deadline, f"follower stuck: {follower.state}"
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


class Rewrite(httpx.AsyncBaseTransport):
    """The producer's transport with range answers passed through `edit(json) -> json`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, edit: Callable[[dict], dict]) -> None:
        self.inner, self.edit = inner, edit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        if request.url.path != "/v1/blocks":
            return resp
        body = json.loads(await resp.aread())
        return httpx.Response(resp.status_code, json=self.edit(body))


# ------------------------------------------------------------------ ranges


def test_block_range_is_bounded_and_exact(producer: Producer, monkeypatch) -> None:
    produce(producer.svc, producer.nd, 5)
    ledger, head = producer.svc.ledger, producer.svc.head_info()
    got = block_range(ledger, head, 1, 3)
    assert [b.height for b in got.blocks] == [1, 2, 3]
    assert got.blocks[0].data == ledger.store.get_block(1).hex()
    assert got.blocks[0].hash == block_hash(ledger.get_block(1).header)
    assert block_range(ledger, head, 6, 3).blocks == []
    assert len(block_range(ledger, head, 0, 10_000).blocks) == 6  # clamped, 0..5
    monkeypatch.setattr(sync, "MAX_RANGE_BYTES", 1)
    assert [b.height for b in block_range(ledger, head, 2, 10).blocks] == [2]  # >= one block


def test_range_and_genesis_routes(producer: Producer) -> None:
    produce(producer.svc, producer.nd, 2)
    c = producer.client
    body = c.get("/v1/blocks", params={"from": 1, "limit": 5}).json()
    assert [b["height"] for b in body["blocks"]] == [1, 2]
    assert body["head"]["height"] == 2
    for bad in ({"from": -1}, {"from": 0, "limit": 0}, {"from": 0, "limit": 10**6}, {}):
        assert c.get("/v1/blocks", params=bad).status_code == 422
    genesis = c.get("/v1/genesis").json()
    assert genesis["chain_id"] == producer.nd.chain_id
    assert fetch_genesis(URL, client=c) == producer.nd.files.genesis


def test_decode_range_checks_every_record(producer: Producer) -> None:
    produce(producer.svc, producer.nd, 2)
    recs = block_range(producer.svc.ledger, producer.svc.head_info(), 1, 2).blocks
    assert [b.header.height for b in decode_range(recs, 1)] == [1, 2]
    with pytest.raises(InvalidBlock, match="where 2 belongs"):
        decode_range(recs, 2)
    data = bytearray(bytes.fromhex(recs[0].data))
    data[8] ^= 1  # inside the header's prev_hash: the block no longer hashes to its record
    flipped = recs[0].model_copy(update={"data": bytes(data).hex()})
    with pytest.raises(InvalidBlock, match="block 1"):
        decode_range([flipped], 1)
    with pytest.raises(InvalidBlock, match="not hex"):
        decode_range([recs[0].model_copy(update={"data": "zz"})], 1)
    other = recs[0].model_copy(update={"hash": recs[1].hash})
    with pytest.raises(InvalidBlock, match="hash"):
        decode_range([other], 1)


# ------------------------------------------------------------------ genesis


def test_genesis_pin_and_data_dir(producer: Producer, tmp_path: Path) -> None:
    digest = genesis_hash(producer.nd.files.genesis)
    with pytest.raises(FollowRefused, match="not the pinned"):
        fetch_genesis(URL, "ab" * 32, client=producer.client)
    assert fetch_genesis(URL, digest.upper(), client=producer.client) == producer.nd.files.genesis
    f = open_follower(tmp_path / "f", producer)
    key = f.key.public_key.hex()
    f.close()
    # An existing dir keeps its genesis and key; a mismatching pin refuses to start.
    files, created = open_follower_dir(tmp_path / "f", URL, digest,
                                       fetch=lambda *a: pytest.fail("no fetch on restart"))
    assert not created and files.key.public_key.hex() == key
    with pytest.raises(FollowRefused, match="not the pinned"):
        open_follower_dir(tmp_path / "f", URL, "cd" * 32)


# ------------------------------------------------------------------ sync


def test_follower_catches_up_follows_and_resumes(producer: Producer, tmp_path: Path) -> None:
    produce(producer.svc, producer.nd, 7)
    f = open_follower(tmp_path / "f", producer)
    try:
        follower = Follower(f, batch=3, head_feed=False, poll_seconds=0.02,
                            transport=producer.transport())
        follow_until(follower, lambda: f.ledger.height == 7)
        assert f.head_info() == producer.svc.head_info()
        assert f.follow.state == "following" and f.follow.imported == 7
        assert f.account(OTHER_KEY.public_key.address) == producer.svc.account(
            OTHER_KEY.public_key.address)
        assert f.block("3") == producer.svc.block("3")
        # A transfer sent to the follower is relayed, made into a block, and imported.
        tx = transfer(producer.nd, 7, amount=1234)
        assert f.submit_transaction(tx) == tx_id(tx)
        assert f.tx_status(tx_id(tx)).status == "pending"  # asked of the producer
        assert producer.svc.produce_block() is not None
        follow_until(follower, lambda: f.ledger.height == 8)
        assert f.tx_status(tx_id(tx)).status == "included"
        assert f.info().follow.producer_height == 8
    finally:
        f.close()
    # Its own restart: the store resumes at 8, the loop continues from there.
    produce(producer.svc, producer.nd, 1, first_nonce=8)
    f = FollowerService(open_follower_dir(tmp_path / "f", URL)[0], URL,
                        relay_client=producer.client)
    try:
        assert f.ledger.height == 8
        follower = Follower(f, head_feed=False, poll_seconds=0.02,
                            transport=producer.transport())
        follow_until(follower, lambda: f.ledger.height == 9)
        assert f.follow.imported == 1 and f.head_info() == producer.svc.head_info()
    finally:
        f.close()


def resign_free_tamper(body: dict) -> dict:
    """Change block 2's timestamp and re-hash it: well formed, but its signature no longer
    matches (only the proposer's key could sign the new hash)."""
    for rec in body["blocks"]:
        if rec["height"] == 2:
            block = decode_block(bytes.fromhex(rec["data"]))
            header = block.header.model_copy(update={"timestamp": block.header.timestamp + 1})
            forged = Block(header=header, transactions=block.transactions)
            rec["data"] = encode_block(forged).hex()
            rec["hash"] = block_hash(header)
    return body


def flip_a_byte(body: dict) -> dict:
    """Flip one byte of block 2's data, keeping its announced hash."""
    for rec in body["blocks"]:
        if rec["height"] == 2:
            data = bytearray(bytes.fromhex(rec["data"]))
            data[len(data) // 2] ^= 0x01
            rec["data"] = data.hex()
    return body


@pytest.mark.parametrize(("edit", "reason"), [(resign_free_tamper, "signature"),
                                               (flip_a_byte, "block 2")])
def test_follower_refuses_a_tampered_block(producer: Producer, tmp_path: Path,
                                           edit: Callable[[dict], dict], reason: str) -> None:
    produce(producer.svc, producer.nd, 4)
    f = open_follower(tmp_path / "f", producer)
    try:
        follower = Follower(f, batch=1, head_feed=False, poll_seconds=0.02,
                            transport=Rewrite(producer.transport(), edit))
        follow_until(follower, lambda: f.follow.state == "refused")
        # Block 1 was accepted and stays; block 2 was refused; nothing after it.
        assert f.ledger.height == 1
        assert f.follow.reason is not None and reason in f.follow.reason
        info = f.info()
        assert info.follow.state == "refused" and info.role == "follower"
        with pytest.raises(ProducerUnavailable, match="refused its producer"):
            f.submit_transaction(transfer(producer.nd, 4))
    finally:
        f.close()


class Counting(httpx.AsyncBaseTransport):
    """The producer's transport, counting the requests made through it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.requests = inner, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await self.inner.handle_async_request(request)


def refuse_at_block_2(producer: Producer, path: Path) -> str:
    """A follower at `path` that refused the producer's tampered block 2; its reason."""
    produce(producer.svc, producer.nd, 4)
    f = open_follower(path, producer)
    try:
        follower = Follower(f, batch=1, head_feed=False, poll_seconds=0.02,
                            transport=Rewrite(producer.transport(), flip_a_byte))
        follow_until(follower, lambda: f.follow.state == "refused")
        assert f.follow.reason is not None
        return f.follow.reason
    finally:
        f.close()


def test_a_refusal_survives_a_restart_until_reconsidered(producer: Producer,
                                                         tmp_path: Path) -> None:
    """The refusal is on disk: a restarted follower neither follows (no request reaches the
    producer) nor relays until the record is cleared; then it follows again. (It used to
    re-sync and relay after every restart.)"""
    path = tmp_path / "f"
    reason = refuse_at_block_2(producer, path)
    record = load_refusal(path)
    assert record is not None
    assert (record.producer, record.reason, record.height) == (URL, reason, 1)
    again = open_follower(path, producer)
    try:
        assert again.follow.state == "refused"
        assert again.follow.reason is not None and reason in again.follow.reason
        assert "--reconsider" in again.follow.reason
        counted = Counting(producer.transport())
        follow_until(Follower(again, head_feed=False, poll_seconds=0.02, transport=counted),
                     lambda: False)  # returns when the loop ends
        assert counted.requests == 0 and again.ledger.height == 1
        with pytest.raises(ProducerUnavailable, match="refused its producer"):
            again.submit_transaction(transfer(producer.nd, 4))
    finally:
        again.close()
    assert clear_refusal(path) == record
    assert load_refusal(path) is None and clear_refusal(path) is None
    third = open_follower(path, producer)
    try:
        follow_until(Follower(third, head_feed=False, poll_seconds=0.02,
                              transport=producer.transport()),
                     lambda: third.ledger.height == producer.svc.ledger.height)
        assert third.follow.state != "refused" and third.ledger.height >= 4
    finally:
        third.close()


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"producer": 1}',
                                     b'{"producer": "u", "reason": "r", "height": -1, '
                                     b'"time_ms": 0}',
                                     b'{"producer": "u", "reason": "r", "height": 1, '
                                     b'"time_ms": 1000000000000000000000000000000}'],
                         ids=["empty", "truncated", "list", "missing", "negative", "far-future"])
def test_a_damaged_refusal_record_still_refuses(producer: Producer, tmp_path: Path,
                                                content: bytes) -> None:
    path = tmp_path / "f"
    open_follower(path, producer).close()
    refusal_path(path).write_bytes(content)
    f = open_follower(path, producer)
    try:
        assert f.follow.state == "refused"
        assert f.follow.reason is not None and "is damaged" in f.follow.reason
        f.info()  # shows it (a far-future time used to raise here)
    finally:
        f.close()


def test_a_refusal_of_another_producer_url_is_not_applied(producer: Producer,
                                                          tmp_path: Path) -> None:
    """The record is a verdict on one producer: pointed at another URL, the follower
    follows it (and checks its blocks afresh); the record stays for the first URL."""
    path = tmp_path / "f"
    refuse_at_block_2(producer, path)
    files, _ = open_follower_dir(path, URL)
    other = FollowerService(files, "http://other.test", relay_client=producer.client)
    try:
        assert other.follow.state != "refused" and other.relay.refused is None
    finally:
        other.close()
    assert load_refusal(path) is not None


def test_a_refusal_that_is_not_about_the_chain_lasts_one_run(producer: Producer,
                                                             tmp_path: Path) -> None:
    """A 4xx from the producer (a proxy, a mistyped path) stops this run's following but is
    not kept: a restart tries again."""
    produce(producer.svc, producer.nd, 2)
    f = open_follower(tmp_path / "f", producer)

    class Forbidden(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(403, json={"detail": "forbidden"})

    try:
        follow_until(Follower(f, head_feed=False, poll_seconds=0.02, transport=Forbidden()),
                     lambda: f.follow.state == "refused")
        assert f.follow.reason is not None and "403" in f.follow.reason
    finally:
        f.close()
    assert load_refusal(tmp_path / "f") is None


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_node_start_follow_warns_of_a_refusal_and_reconsider_clears_it(
        producer: Producer, tmp_path: Path) -> None:
    """A real `node start --follow` on a dir holding a refusal warns, serves its chain and
    shows the refusal in /v1/info without contacting its producer (URL does not resolve);
    `--reconsider` clears the record and follows again (disconnected, retrying)."""
    path = tmp_path / "f"
    reason = refuse_at_block_2(producer, path)
    node = start_node(path, tmp_path / "home", extra_args=("--follow", URL))
    try:
        info = httpx.get(f"{node.url}/v1/info", timeout=10).json()
        assert info["follow"]["state"] == "refused" and reason in info["follow"]["reason"]
        assert httpx.get(f"{node.url}/v1/head", timeout=10).json()["height"] == 1
    finally:
        node.stop()
    assert "warning: this follower refused producer" in node.stderr()
    assert "--reconsider" in node.stderr()
    node = start_node(path, tmp_path / "home", extra_args=("--follow", URL, "--reconsider"))
    try:
        info = httpx.get(f"{node.url}/v1/info", timeout=10).json()
        assert info["follow"]["state"] != "refused"
    finally:
        node.stop()
    assert "reconsidering: cleared the record" in node.stderr() and reason in node.stderr()
    assert load_refusal(path) is None


def test_reconsider_needs_follow(tmp_path: Path) -> None:
    r = run_cli(tmp_path / "home", "node", "start", "--reconsider", "--data-dir",
                str(tmp_path / "n"), "--port", "0", timeout=45)
    assert r.returncode == 2 and "--reconsider needs --follow" in r.stderr, r.stderr


def test_a_bad_block_inside_a_range_keeps_the_blocks_before_it(producer: Producer,
                                                               tmp_path: Path) -> None:
    # One range of 4 blocks (Ledger.add_blocks): block 2 fails validation, so block 1 is
    # stored (and survives a restart), blocks 2-4 are not.
    produce(producer.svc, producer.nd, 4)
    f = open_follower(tmp_path / "f", producer)
    try:
        follower = Follower(f, batch=50, head_feed=False, poll_seconds=0.02,
                            transport=Rewrite(producer.transport(), resign_free_tamper))
        follow_until(follower, lambda: f.follow.state == "refused")
        assert f.ledger.height == 1 and f.follow.imported == 1
        assert f.follow.reason is not None and "block 2" in f.follow.reason
        head = f.ledger.head
    finally:
        f.close()
    again = open_follower(tmp_path / "f", producer)
    try:
        assert again.ledger.head == head
    finally:
        again.close()


def test_follower_refuses_a_conflicting_chain(producer: Producer, tmp_path: Path) -> None:
    produce(producer.svc, producer.nd, 2)
    # A second producer with the same genesis and key, forked at height 2.
    producer.svc.close()
    shutil.copytree(producer.nd.path, tmp_path / "fork")
    producer.svc = NodeService(producer.nd.files)
    producer.app = create_app(producer.svc, produce_blocks=False)
    producer.client = TestClient(producer.app, base_url=URL)
    files = producer.nd.files
    fork = Producer(NodeDir(tmp_path / "fork", NodeFiles(tmp_path / "fork", files.genesis,
                                                         files.key), producer.nd.funded))
    try:
        produce(producer.svc, producer.nd, 1, first_nonce=2)
        fork.svc.submit_transaction(transfer(fork.nd, 2, amount=999))
        assert fork.svc.produce_block() is not None
        assert producer.svc.head_info().hash != fork.svc.head_info().hash
        f = open_follower(tmp_path / "f", producer)
        try:
            follow_until(Follower(f, head_feed=False, poll_seconds=0.02,
                                  transport=producer.transport()),
                         lambda: f.ledger.height == 3)
            accepted = f.head_info()
            follower = Follower(f, head_feed=False, poll_seconds=0.02,
                                transport=fork.transport())
            follow_until(follower, lambda: f.follow.state == "refused")
            assert "conflicting" in (f.follow.reason or "")
            assert f.head_info() == accepted  # never rewritten
        finally:
            f.close()
    finally:
        fork.close()


def test_follower_refuses_another_genesis(producer: Producer, tmp_path: Path) -> None:
    other = Producer(make_node_dir(tmp_path / "other"))
    try:
        f = open_follower(tmp_path / "f", producer)
        try:
            follow_until(Follower(f, head_feed=False, poll_seconds=0.02,
                                  transport=other.transport()),
                         lambda: f.follow.state == "refused")
            assert "genesis" in (f.follow.reason or "")
        finally:
            f.close()
    finally:
        other.close()


# ------------------------------------------------------------------ relay


def test_relay_passes_4xx_through_and_503_when_unreachable(producer: Producer,
                                                           tmp_path: Path) -> None:
    f = open_follower(tmp_path / "f", producer)
    try:
        with TestClient(create_app(f, produce_blocks=False)) as api:
            bad = transfer(producer.nd, 5)  # nonce gap: the producer refuses it
            direct = producer.client.post("/v1/transactions", json=bad.model_dump(mode="json"))
            relayed = api.post("/v1/transactions", json=bad.model_dump(mode="json"))
            assert relayed.status_code == direct.status_code == 400
            assert relayed.json() == direct.json()
            ok = transfer(producer.nd, 0)
            assert api.post("/v1/transactions", json=ok.model_dump(mode="json")).status_code == 200
            assert tx_id(ok) in producer.svc.mempool
            batch = api.post("/v1/transactions/batch", json={"transactions": [
                transfer(producer.nd, 1).model_dump(mode="json"), bad.model_dump(mode="json")]})
            assert batch.status_code == 200
            assert [r["status"] for r in batch.json()["results"]] == ["pending", "rejected"]
            assert batch.json()["results"][1]["code"] == 400
            assert api.get(f"/v1/accounts/{producer.nd.funded.public_key.address}/next-nonce"
                           ).json()["nonce"] == 2
            assert api.get("/v1/info").json()["role"] == "follower"
    finally:
        f.close()
    files, _ = open_follower_dir(tmp_path / "f", URL)
    down = FollowerService(files, "http://127.0.0.1:9")  # nothing listens on port 9
    try:
        with TestClient(create_app(down, produce_blocks=False)) as api:
            resp = api.post("/v1/transactions", json=transfer(producer.nd, 0).model_dump(
                mode="json"))
            assert resp.status_code == 503
            assert "cannot be reached" in resp.json()["detail"]
            assert api.get("/v1/head").status_code == 200  # reads are served regardless
    finally:
        down.close()


def test_relay_passes_a_429_with_retry_after(producer: Producer, tmp_path: Path) -> None:
    """The producer's per-sender pool limit (429) reaches the client through the follower."""
    per_sender = producer.svc.mempool.per_sender
    for nonce in range(per_sender):
        producer.svc.submit_transaction(transfer(producer.nd, nonce))
    f = open_follower(tmp_path / "f", producer)
    try:
        with TestClient(create_app(f, produce_blocks=False)) as api:
            resp = api.post("/v1/transactions",
                            json=transfer(producer.nd, per_sender).model_dump(mode="json"))
        assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
        assert "pending" in resp.json()["detail"]
        with pytest.raises(NodeRejected) as caught:
            f.submit_transaction(transfer(producer.nd, per_sender))
        assert caught.value.status == 429
    finally:
        f.close()


def test_a_block_ahead_of_the_clock_is_waited_for_not_refused(producer: Producer,
                                                              tmp_path: Path) -> None:
    produce(producer.svc, producer.nd, 1)
    producer.svc.submit_transaction(transfer(producer.nd, 1))
    ahead = int(time.time() * 1000) + 120_000  # the producer's clock runs 2 minutes fast
    assert producer.svc.produce_block(now_ms=ahead) is not None
    f = open_follower(tmp_path / "f", producer)
    try:
        follower = Follower(f, head_feed=False, poll_seconds=0.02,
                            transport=producer.transport())
        follow_until(follower, lambda: "ahead" in (f.follow.reason or ""))
        assert f.follow.state == "disconnected" and f.ledger.height == 1
        assert f.relay.refused is None  # still relaying: a clock is no reason to refuse
    finally:
        f.close()


# ------------------------------------------------------------------ odd producer answers

ODD_ANSWERS = [{"status": "weird"}, [1], "a string", None, {"nonce": "x"}, {"nonce": None}]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("odd", ODD_ANSWERS, ids=repr)
def test_a_producer_answer_of_the_wrong_shape_is_a_503_not_a_500(
        producer: Producer, tmp_path: Path, odd: object) -> None:
    """Every relayed answer is parsed under one rule: a shape the follower does not
    understand is ProducerUnavailable (503, saying so), never a crash of the route."""
    txid = "ab" * 32
    address = producer.nd.funded.public_key.address
    routes = {path: (200, odd) for path in (
        f"/v1/transactions/{txid}", f"/v1/accounts/{address}/next-nonce",
        "/v1/transactions/batch", "/v1/challenges", "/v1/challenges/c1/commit",
        "/v1/challenges/c1/reveal", "/v1/info")}
    files, _ = open_follower_dir(tmp_path / "f", URL, fetch=lambda url, pin: fetch_genesis(
        url, pin, client=producer.client))
    with FakeNode(routes) as fake:
        f = FollowerService(files, fake.url)
        try:
            with TestClient(create_app(f, produce_blocks=False),
                            raise_server_exceptions=False) as api:
                for resp in (api.get(f"/v1/transactions/{txid}"),
                             api.get(f"/v1/accounts/{address}/next-nonce"),
                             api.post("/v1/transactions/batch", json={"transactions": [
                                 transfer(producer.nd, 0).model_dump(mode="json")]})):
                    assert resp.status_code == 503, resp.text
                    assert "answer was not understood" in resp.json()["detail"]
                info = api.get("/v1/info")  # served regardless, without the producer's key
                assert info.status_code == 200 and info.json()["role"] == "follower"
            clock = FakeClock()
            calls = (
                lambda: f.issue_challenge(challenge_request(WORKER_KEY, clock), "192.0.2.1"),
                lambda: f.commit("c1", commit_request(WORKER_KEY, "c1", "ab" * 32, loops=3,
                                                      merkle_root=b"\1" * 32)),
                lambda: f.reveal("c1", RevealRequest.model_construct(samples=[],
                                                                     signature=b"\0" * 64)))
            for call in calls:
                with pytest.raises(ProducerUnavailable, match="answer was not understood"):
                    call()
        finally:
            f.close()


@pytest.mark.timeout(60)
class AddField(httpx.AsyncBaseTransport):
    """The producer's transport with a key it does not know yet added to every JSON object
    answer (a newer producer)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        body = json.loads(await resp.aread())
        if isinstance(body, dict):
            body["added_in_a_later_version"] = 1
        return httpx.Response(resp.status_code, json=body)


def test_a_newer_producer_adding_a_field_is_still_followed(producer: Producer,
                                                           tmp_path: Path) -> None:
    """An unknown top-level key in the head or a block range is dropped, as in relayed
    answers (it used to make the follower refuse the producer)."""
    produce(producer.svc, producer.nd, 3)
    f = open_follower(tmp_path / "f", producer)
    try:
        follow_until(Follower(f, head_feed=False, poll_seconds=0.02,
                              transport=AddField(producer.transport())),
                     lambda: f.ledger.height == 3)
        assert f.follow.state != "refused", f.follow.reason
    finally:
        f.close()


def test_a_newer_producer_adding_a_field_is_still_relayed(producer: Producer,
                                                          tmp_path: Path) -> None:
    """An unknown top-level key of a relayed answer is dropped (a newer producer's addition);
    an unknown key inside a nested record is still not understood (module doc)."""
    txid = "cd" * 32
    address = producer.nd.funded.public_key.address
    routes = {
        f"/v1/transactions/{txid}": (200, {"tx_id": txid, "status": "pending",
                                           "queued_behind": 3}),
        f"/v1/accounts/{address}/next-nonce": (200, {"address": address, "nonce": 4,
                                                     "pending": 2}),
        "/v1/transactions/batch": (200, {"results": [{"status": "pending", "tx_id": txid,
                                                      "lane": 1}], "accepted": 1}),
    }
    files, _ = open_follower_dir(tmp_path / "f", URL, fetch=lambda url, pin: fetch_genesis(
        url, pin, client=producer.client))
    with FakeNode(routes) as fake:
        f = FollowerService(files, fake.url)
        try:
            with TestClient(create_app(f, produce_blocks=False)) as api:
                assert api.get(f"/v1/transactions/{txid}").json() == {
                    "tx_id": txid, "status": "pending", "height": None, "index": None,
                    "block_hash": None}
                assert api.get(f"/v1/accounts/{address}/next-nonce").json()["nonce"] == 4
                batch = api.post("/v1/transactions/batch", json={"transactions": [
                    transfer(producer.nd, 0).model_dump(mode="json")]})
                assert batch.status_code == 503
                assert "answer was not understood" in batch.json()["detail"]
        finally:
            f.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("genesis", "info", "reason"), [
    ("real", [1], "/v1/info is not a JSON object"),
    ("real", "a string", "/v1/info is not a JSON object"),
    ([1], "real", "genesis is invalid"),
    ("a string", "real", "genesis is invalid"),
], ids=["info-list", "info-string", "genesis-list", "genesis-string"])
def test_node_start_follow_refuses_an_odd_first_contact(tmp_path: Path, genesis: object,
                                                        info: object, reason: str) -> None:
    """`node start --follow` against a producer whose genesis or info is not an object: a
    clear refusal (exit 1), no traceback, and no data dir made."""
    nd = make_node_dir(tmp_path / "producer")
    real_genesis = genesis_to_json(nd.files.genesis)
    real_info = {"genesis_hash": genesis_hash(nd.files.genesis)}
    routes = {"/v1/genesis": (200, real_genesis if genesis == "real" else genesis),
              "/v1/info": (200, real_info if info == "real" else info)}
    data_dir = tmp_path / "follower"
    with FakeNode(routes) as fake:
        r = run_cli(tmp_path / "home", "node", "start", "--follow", fake.url, "--data-dir",
                    str(data_dir), "--port", "0", timeout=45)
    assert r.returncode == 1, r.stderr
    assert reason in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (data_dir / "genesis.json").exists()

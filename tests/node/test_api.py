"""The node's HTTP API, in-process: the real FastAPI app over a real NodeService and store.

Happy paths of every route, then everything a client can get wrong: malformed JSON, wrong
types, missing or extra fields, huge or negative numbers, non-hex strings, bad path
parameters, oversized bodies, forged or replayed transactions, tampered reveals, expired,
reused and foreign challenges. Every refusal is a 4xx with a JSON `{"detail": str}`; none is
a 500 (the TestClient returns server errors instead of raising them, so a 500 is visible).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashcloud.chain.genesis import genesis_hash
from hashcloud.chain.tx import (
    MIN_GAS_PRICE,
    Transaction,
    make_transfer,
    tx_id,
    tx_signing_bytes,
    tx_to_json,
)
from hashcloud.client.round import claim_transaction, submit_claim
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import MerkleTree
from hashcloud.crypto.signatures import ChainDomain, sign
from hashcloud.engine.mining import Engine
from hashcloud.engine.rows import loop_output, row_digests_of
from hashcloud.node.app import (
    MAX_BODY,
    REVEAL_SLACK,
    THREAD_MARGIN,
    reveal_body_limit,
    worker_threads,
)
from hashcloud.node.config import ValidatorConfig
from hashcloud.node.service import NodeService
from hashcloud.node.validator import reveal_json_bound
from hashcloud.poc.challenge import challenge_request_bytes, commit_message
from hashcloud.poc.plan import AuditPlan
from hashcloud.poc.proof import Sample
from hashcloud.poc.receipt import decode_receipt
from hashcloud.poc.round import RoundWork, make_samples, run_loops, sign_commit, sign_reveal
from hashcloud.types import to_phex
from tests.node.conftest import (
    CLAIM_FEE,
    FUNDED_AMOUNT,
    OTHER_KEY,
    WORKER_KEY,
    FakeClock,
    N,
    NodeDir,
    epoch_pool,
    honest_round,
    make_node_dir,
    node_client,
    open_client,
    transfer,
)

pytestmark = pytest.mark.timeout(30)

REVEAL_LOOPS = 32  # s = 10 samples, tiny tree: enough to tamper with
CPU = {"name": "test cpu", "backend": "numpy"}


# ----------------------------------------------------------------------------- helpers


def assert_refused(resp: Any, *statuses: int) -> dict:
    """A 4xx (one of `statuses` if given) with a JSON body `{"detail": non-empty str}`."""
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    if statuses:
        assert resp.status_code in statuses, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("detail"), str), body
    assert body["detail"]
    return body


_req_clock = [0]


def challenge_body(key: PrivateKey, chain_id: ChainDomain, *, n: int = N,
                   address: str | None = None, signer: PrivateKey | None = None) -> dict:
    """A signed `POST /v1/challenges` body (a fresh request time each call)."""
    _req_clock[0] += 1
    now_ms = int(time.time() * 1000) + _req_clock[0] % 1000
    address = address or key.public_key.address
    sig = sign(signer or key, challenge_request_bytes(chain_id, address, n, now_ms))
    return {"worker_address": address, "public_key": key.public_key.hex(), "n": n,
            "request_time_ms": now_ms, "signature": sig.hex()}


def issue(api: TestClient, key: PrivateKey, chain_id: ChainDomain) -> dict:
    resp = api.post("/v1/challenges", json=challenge_body(key, chain_id))
    assert resp.status_code == 200, resp.text
    return resp.json()["challenge"]


def commit_body(key: PrivateKey, cid: str, work: RoundWork) -> dict:
    return {"loops": work.loops, "compute_time": work.compute_time,
            "merkle_root": to_phex(work.merkle_root), "device": dict(CPU),
            "device_signature": to_phex(sign_commit(key, cid, work))}


def committed_round(api: TestClient, key: PrivateKey, chain_id: ChainDomain, engine: Engine,
                    loops: int = REVEAL_LOOPS) -> tuple[dict, RoundWork, list[dict]]:
    """Issue and commit an honest round; return (challenge, work, samples to reveal), the
    samples with the outputs the node's audit plan asks for (SPEC 3 v1.1)."""
    ch = issue(api, key, chain_id)
    work = run_loops(engine, ch["seed"], 0, max_loops=loops)
    resp = api.post(f"/v1/challenges/{ch['challenge_id']}/commit",
                    json=commit_body(key, ch["challenge_id"], work))
    assert resp.status_code == 200, resp.text
    samples = make_samples(work.tree, work.leaves, resp.json()["indices"],
                           plan_outputs(ch, resp.json()))
    return ch, work, [s.model_dump(mode="json") for s in samples]


def plan_outputs(ch: dict, commit_answer: dict) -> dict[int, bytes]:
    """The honest outputs of the loops a commit answer's `rows` plan audits."""
    plan = AuditPlan.model_validate(commit_answer["audit"])
    if plan.mode != "rows":
        return {}
    return {i: loop_output(ch["seed"], i, N) for i in plan.audited}


def reveal_body(ch: dict, samples: list[dict], root: bytes, chain_id: ChainDomain,
                key: PrivateKey = WORKER_KEY) -> dict:
    """A reveal body: `samples` (JSON form, however tampered) signed by `key` over the
    committed `root` (SPEC 3 v1.1)."""
    signature = sign_reveal(key, chain_id, ch["challenge_id"], root,
                            [Sample.model_validate(smp) for smp in samples])
    return {"samples": samples, "signature": signature.hex()}


def flip_hex(text: str, pos: int = -1) -> str:
    """`text` with the hex digit at `pos` changed."""
    pos %= len(text)
    return text[:pos] + ("0" if text[pos] != "0" else "1") + text[pos + 1:]


# ------------------------------------------------------------------------- happy paths


def test_info_and_head(api: TestClient, node_dir: NodeDir) -> None:
    info = api.get("/v1/info").json()
    assert info["chain_id"] == node_dir.chain_id
    assert info["genesis_hash"] == genesis_hash(node_dir.files.genesis)
    assert info["node_public_key"] == node_dir.files.key.public_key.hex()
    assert info["node_address"] == node_dir.files.key.public_key.address
    assert info["block_time_ms"] == 300 and info["mempool_size"] == 0
    head = api.get("/v1/head").json()
    assert head == info["head"] and head["height"] == 0


def test_blocks_by_latest_height_and_hash(api: TestClient) -> None:
    latest = api.get("/v1/blocks/latest").json()
    assert latest["header"]["height"] == 0 and latest["transactions"] == []
    assert api.get("/v1/blocks/0").json() == latest
    assert api.get(f"/v1/blocks/{latest['hash']}").json() == latest
    assert api.get(f"/v1/blocks/{latest['hash'].upper()}").json() == latest
    assert_refused(api.get("/v1/blocks/1"), 404)
    assert_refused(api.get("/v1/blocks/" + "ab" * 32), 404)


def test_account_and_next_nonce(api: TestClient, node_dir: NodeDir) -> None:
    addr = node_dir.funded.public_key.address
    no_work = {"epoch": 0, "pending_work": 0, "pending_fees": 0, "estimated_payout": 0,
               "lifetime_work": 0, "accepted_claims": 0}
    assert api.get(f"/v1/accounts/{addr}").json() == {"address": addr,
                                                      "balance": FUNDED_AMOUNT, "nonce": 0,
                                                      **no_work}  # SPEC 6 v1.1 pending work
    assert api.get(f"/v1/accounts/{addr}/next-nonce").json() == {"address": addr, "nonce": 0}
    fresh = OTHER_KEY.public_key.address
    assert api.get(f"/v1/accounts/{fresh}").json() == {"address": fresh, "balance": 0,
                                                       "nonce": 0, **no_work}


def test_transaction_submit_status_and_inclusion(api: TestClient, service: NodeService,
                                                 node_dir: NodeDir) -> None:
    tx = transfer(node_dir, 0, amount=12_345)
    resp = api.post("/v1/transactions", json=tx_to_json(tx))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"tx_id": tx_id(tx), "status": "pending"}
    assert api.get(f"/v1/transactions/{tx_id(tx)}").json()["status"] == "pending"
    addr = node_dir.funded.public_key.address
    assert api.get(f"/v1/accounts/{addr}/next-nonce").json()["nonce"] == 1
    assert api.get("/v1/info").json()["mempool_size"] == 1

    block = service.produce_block()
    assert block is not None and block.header.height == 1
    status = api.get(f"/v1/transactions/{tx_id(tx)}").json()
    blk = api.get("/v1/blocks/1").json()
    assert status == {"tx_id": tx_id(tx), "status": "included", "height": 1, "index": 0,
                      "block_hash": blk["hash"]}
    assert [t["tx_id"] for t in blk["transactions"]] == [tx_id(tx)]
    assert api.get(f"/v1/accounts/{OTHER_KEY.public_key.address}").json()["balance"] == 12_345
    fee = 21_000 * MIN_GAS_PRICE
    assert api.get(f"/v1/accounts/{addr}").json() == {
        "address": addr, "balance": FUNDED_AMOUNT - 12_345 - fee, "nonce": 1, "epoch": 0,
        "pending_work": 0, "pending_fees": 0, "estimated_payout": 0, "lifetime_work": 0,
        "accepted_claims": 0}
    assert api.get("/v1/head").json()["hash"] == blk["hash"]
    assert service.produce_block() is None  # nothing pending: no empty block


def test_epoch_views_are_paged_and_closed_records_decoded_once(
        api: TestClient, service: NodeService, monkeypatch: pytest.MonkeyPatch) -> None:
    """An epoch has a row per payout address (each audited claim may name a new one), so
    its views come in bounded pages, and a node decodes a closed epoch's record once for
    all its pages (decoding checks every address: ~65 us each)."""
    import hashcloud.node.service as service_module
    from tests.chain.test_epoch import PAYOUTS, WORKERS, claim, make_genesis, run_chain

    view = api.get("/v1/epoch").json()
    assert (view["count"], view["next_after"], view["pending"]) == (0, None, [])
    for path in ("/v1/epoch", "/v1/epochs/0"):
        for query in ("limit=0", "limit=1001", "limit=x", "after=cpc1x", "after=" + "a" * 42):
            assert_refused(api.get(f"{path}?{query}"), 422)
        after = WORKER_KEY.public_key.address
        assert api.get(f"{path}?after={after}&limit=1000").status_code == 200
    genesis = make_genesis(epoch_length=1, subsidy0=1000, halving_interval=10**6)
    blocks = [[claim(WORKERS[0], e + 1, 5, PAYOUTS[e % 3], nonce=e, genesis=genesis)]
              for e in range(10)]
    state = run_chain(genesis, blocks + [[]])[-1]  # epochs 0..9 closed
    calls: list[int] = []
    decode = service_module.get_epoch_record

    def counting(st: object, epoch: int) -> object:
        calls.append(epoch)
        return decode(st, epoch)  # type: ignore[arg-type]

    monkeypatch.setattr(service_module, "get_epoch_record", counting)
    for _ in range(3):
        assert service._epoch_record(state, 2).payouts[0].address == PAYOUTS[2]  # type: ignore[union-attr]
    assert calls == [2]
    for epoch in range(10):
        service._epoch_record(state, epoch)
    assert len(service._epoch_records) == service.EPOCH_RECORD_CACHE
    service._epoch_record(state, 0)  # evicted by the newer ones: decoded again
    assert calls.count(0) == 2


def test_unknown_transaction_is_404(api: TestClient) -> None:
    assert_refused(api.get("/v1/transactions/" + "00" * 32), 404)


@pytest.mark.timeout(60)
def test_honest_round_claim_and_reward(api: TestClient, service: NodeService,
                                       node_dir: NodeDir, engine: Engine) -> None:
    client = node_client(api)
    outcome = honest_round(client, WORKER_KEY, engine)
    assert outcome.accepted, outcome.reason
    assert outcome.receipt is not None and outcome.receipt.loops == outcome.work.loops
    # SPEC 6 v1.1: the sole miner of open epoch 0 expects its whole pool; nothing is minted.
    assert outcome.work_credited == outcome.work.loops * N**3
    assert outcome.reward_estimate == epoch_pool(node_dir.files)
    txid, height = submit_claim(client, WORKER_KEY, outcome.proof, wait=False)
    assert height is None
    assert service.produce_block() is not None
    status = api.get(f"/v1/transactions/{txid}").json()
    assert status["status"] == "included" and status["height"] == 1
    acct = api.get(f"/v1/accounts/{WORKER_KEY.public_key.address}").json()
    assert acct["balance"] == 0 and acct["nonce"] == 1
    assert acct["pending_work"] == outcome.work.loops * N**3
    assert acct["pending_fees"] == CLAIM_FEE
    assert (acct["lifetime_work"], acct["accepted_claims"]) == (outcome.work.loops * N**3, 1)
    assert acct["estimated_payout"] == epoch_pool(node_dir.files) - CLAIM_FEE
    epoch = api.get("/v1/epoch").json()
    assert epoch["status"] == "open" and epoch["epoch"] == 0
    assert epoch["pending"] == [{"address": WORKER_KEY.public_key.address,
                                 "work": outcome.work.loops * N**3, "fees": CLAIM_FEE,
                                 "estimated_payout": epoch_pool(node_dir.files) - CLAIM_FEE}]
    assert api.get("/v1/epochs/0").json() == epoch
    assert_refused(api.get("/v1/epochs/1"), 404)
    header = api.get("/v1/blocks/1").json()["header"]
    assert re.fullmatch(r"[0-9a-f]{64}", header["compute_root"])
    # SPEC 3 v1.1 observability: the row audit's CPU time and the reveal's outcome.
    metrics = api.get("/metrics").text.splitlines()
    assert f'hc_audit_seconds_count{{mode="rows",n="{N}"}} 1.0' in metrics
    assert 'hc_reveals_total{outcome="accepted"} 1.0' in metrics
    assert "# TYPE hc_audit_seconds histogram" in metrics


@pytest.mark.timeout(60)
def test_claim_replayed_after_inclusion_is_refused(api: TestClient, service: NodeService,
                                                   engine: Engine) -> None:
    client = node_client(api)
    outcome = honest_round(client, WORKER_KEY, engine)
    assert outcome.accepted, outcome.reason
    claim = claim_transaction(client, WORKER_KEY, outcome.proof)
    assert api.post("/v1/transactions", json=tx_to_json(claim)).status_code == 200
    # A second claim of the same task while the first is pending.
    pending_again = claim.model_copy(update={"nonce": 1})
    pending_again = pending_again.model_copy(update={"signature": sign(
        WORKER_KEY, tx_signing_bytes(pending_again, service.domain)).hex()})
    body = assert_refused(api.post("/v1/transactions", json=tx_to_json(pending_again)), 400)
    assert "already rewarded" in body["detail"]
    service.produce_block()
    balance = api.get(f"/v1/accounts/{WORKER_KEY.public_key.address}").json()["balance"]
    # The identical transaction again: a duplicate of an included one.
    body = assert_refused(api.post("/v1/transactions", json=tx_to_json(claim)), 409)
    assert "already included" in body["detail"]
    # A fresh claim (next nonce, new signature) of the same receipt: the task was paid.
    again = claim_transaction(client, WORKER_KEY, outcome.proof)
    assert again.nonce == 1 and tx_id(again) != tx_id(claim)
    body = assert_refused(api.post("/v1/transactions", json=tx_to_json(again)), 400)
    assert "already rewarded" in body["detail"]
    block = service.produce_block()  # SPEC 6 v1.1: blocks go on while epoch work waits
    assert block is not None and block.transactions == ()  # the refused claim is not in it
    assert api.get(f"/v1/accounts/{WORKER_KEY.public_key.address}").json()["balance"] == balance


def test_reveal_after_acceptance_returns_the_same_receipt(api: TestClient, service: NodeService,
                                                          engine: Engine) -> None:
    ch, work, samples = committed_round(api, WORKER_KEY, service.domain, engine)
    url = f"/v1/challenges/{ch['challenge_id']}/reveal"
    body = reveal_body(ch, samples, work.merkle_root, service.domain)
    first = api.post(url, json=body)
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] is True
    receipt = decode_receipt(bytes.fromhex(first.json()["receipt"]))
    assert receipt.task_id == ch["challenge_id"] and receipt.loops == REVEAL_LOOPS
    assert api.post(url, json=body).json() == first.json()
    # Only for a reveal the worker signed (SPEC 3 v1.1).
    forged = reveal_body(ch, samples, work.merkle_root, service.domain, key=OTHER_KEY)
    assert "not signed" in assert_refused(api.post(url, json=forged), 403)["detail"]
    assert_refused(api.post("/v1/challenges/" + "cd" * 16 + "/reveal", json=body), 404)
    # One audited round: the repeats, the forgery and the unknown id are no rounds.
    metrics = api.get("/metrics").text.splitlines()
    assert 'hc_rounds_total{outcome="accepted"} 1.0' in metrics
    assert 'hc_rounds_total{outcome="rejected"} 0.0' in metrics
    assert 'hc_reveals_total{outcome="repeated"} 1.0' in metrics


# ------------------------------------------------------------------ PoC refusals


def test_other_workers_challenge_cannot_be_committed(api: TestClient, service: NodeService,
                                                     engine: Engine) -> None:
    ch = issue(api, WORKER_KEY, service.domain)
    cid = ch["challenge_id"]
    work = run_loops(engine, ch["seed"], 0, max_loops=REVEAL_LOOPS)
    body = assert_refused(api.post(f"/v1/challenges/{cid}/commit",
                                   json=commit_body(OTHER_KEY, cid, work)), 422)
    assert "device_signature" in body["detail"]
    # The rightful worker can still commit: the thief burned nothing.
    assert api.post(f"/v1/challenges/{cid}/commit",
                    json=commit_body(WORKER_KEY, cid, work)).status_code == 200


def test_challenge_for_another_workers_address_is_refused(api: TestClient,
                                                          service: NodeService) -> None:
    victim = WORKER_KEY.public_key.address
    forged = challenge_body(OTHER_KEY, service.domain, address=victim)
    body = assert_refused(api.post("/v1/challenges", json=forged), 422)
    assert "worker_address" in body["detail"]
    signed_by_other = challenge_body(WORKER_KEY, service.domain, signer=OTHER_KEY)
    body = assert_refused(api.post("/v1/challenges", json=signed_by_other), 422)
    assert "signature" in body["detail"]
    assert service.validator.open_challenges(victim) == 0


@pytest.mark.parametrize("tamper", ["leaf_byte", "proof_byte", "output_byte"])
def test_tampered_reveal_is_refused_and_recorded(api: TestClient, service: NodeService,
                                                 engine: Engine, tamper: str) -> None:
    ch, work, samples = committed_round(api, WORKER_KEY, service.domain, engine)
    bad = copy.deepcopy(samples)
    if tamper == "leaf_byte":
        bad[3]["leaf"] = flip_hex(bad[3]["leaf"], 10)
        expect = "inclusion proof failed"
    elif tamper == "proof_byte":
        bad[0]["proof"][0] = flip_hex(bad[0]["proof"][0])
        expect = "inclusion proof failed"
    else:
        j = next(j for j, smp in enumerate(bad) if smp.get("output"))
        bad[j]["output"] = flip_hex(bad[j]["output"], 40)
        expect = "output does not hash to the leaf"
    url = f"/v1/challenges/{ch['challenge_id']}/reveal"
    body = assert_refused(api.post(url, json=reveal_body(ch, bad, work.merkle_root,
                                                          service.domain)), 422)
    assert expect in body["detail"]
    history = service.validator.history(WORKER_KEY.public_key.address)
    assert history.failed == 1 and len(history.failure_times) == 1 and history.accepted == 0
    # The challenge is burned: even the honest samples are refused now.
    honest = reveal_body(ch, samples, work.merkle_root, service.domain)
    body = assert_refused(api.post(url, json=honest), 409)
    assert "rejected" in body["detail"]
    metrics = api.get("/metrics").text
    # One audited round, one failure: the refused second reveal is no round.
    assert 'hc_rounds_total{outcome="rejected"} 1.0' in metrics
    assert 'hc_rounds_total{outcome="accepted"} 0.0' in metrics
    assert 'hc_reveals_total{outcome="failed"} 1.0' in metrics
    assert 'hc_reveals_total{outcome="used"} 1.0' in metrics


@pytest.mark.parametrize("tamper", ["wrong_indices", "missing_sample", "swapped_order",
                                    "missing_output"])
def test_malformed_reveal_leaves_the_challenge_open(api: TestClient, service: NodeService,
                                                    engine: Engine, tamper: str) -> None:
    """SPEC 3 v1.1: a signed reveal of the wrong shape is 400 (not 422, a failed audit) and
    burns nothing."""
    ch, work, samples = committed_round(api, WORKER_KEY, service.domain, engine)
    bad = copy.deepcopy(samples)
    if tamper == "wrong_indices":
        taken = {s["index"] for s in bad}
        bad[5]["index"] = next(i for i in range(REVEAL_LOOPS) if i not in taken)
        expect = "drawn indices"
    elif tamper == "missing_sample":
        bad = bad[:-1]
        expect = "drawn indices"
    elif tamper == "swapped_order":
        bad[0], bad[1] = bad[1], bad[0]
        expect = "drawn indices"
    else:
        j = next(j for j, smp in enumerate(bad) if smp.get("output"))
        bad[j]["output"] = None
        expect = "needs its output"
    url = f"/v1/challenges/{ch['challenge_id']}/reveal"
    body = assert_refused(api.post(url, json=reveal_body(ch, bad, work.merkle_root,
                                                          service.domain)), 400)
    assert expect in body["detail"]
    assert service.validator.history(WORKER_KEY.public_key.address).failed == 0
    honest = api.post(url, json=reveal_body(ch, samples, work.merkle_root, service.domain))
    assert honest.status_code == 200 and honest.json()["accepted"] is True
    metrics = api.get("/metrics").text.splitlines()
    assert 'hc_reveals_total{outcome="malformed"} 1.0' in metrics
    # Only the audit is a round: the malformed reveal counts in no round outcome.
    assert 'hc_rounds_total{outcome="accepted"} 1.0' in metrics
    assert 'hc_rounds_total{outcome="rejected"} 0.0' in metrics


def test_consistent_tree_of_garbage_leaves_fails_recomputation(
        api: TestClient, service: NodeService) -> None:
    """Valid inclusion proofs over leaves that are not the work: caught by the audit."""
    ch = issue(api, WORKER_KEY, service.domain)
    leaves = [hashlib.sha256(b"garbage %d" % i).digest() for i in range(REVEAL_LOOPS)]
    work = RoundWork(ch["seed"], N, leaves, 0.01, False, MerkleTree(leaves))
    cid = ch["challenge_id"]
    resp = api.post(f"/v1/challenges/{cid}/commit", json=commit_body(WORKER_KEY, cid, work))
    assert resp.status_code == 200, resp.text
    # The honest outputs of the audited loops cannot hash to garbage leaves (row audit).
    samples = [s.model_dump(mode="json")
               for s in make_samples(work.tree, leaves, resp.json()["indices"],
                                     plan_outputs(ch, resp.json()))]
    body = assert_refused(api.post(f"/v1/challenges/{cid}/reveal", json=reveal_body(
        ch, samples, work.tree.root, service.domain)), 422)
    assert "output does not hash to the leaf" in body["detail"]
    assert service.validator.history(WORKER_KEY.public_key.address).failed == 1


def test_reused_challenge_is_409(api: TestClient, service: NodeService, engine: Engine) -> None:
    ch, work, _ = committed_round(api, WORKER_KEY, service.domain, engine)
    cid = ch["challenge_id"]
    body = assert_refused(api.post(f"/v1/challenges/{cid}/commit",
                                   json=commit_body(WORKER_KEY, cid, work)), 409)
    assert "already committed" in body["detail"]
    fresh = issue(api, WORKER_KEY, service.domain)
    body = assert_refused(api.post(f"/v1/challenges/{fresh['challenge_id']}/reveal",
                                   json={"samples": [{"index": 0, "leaf": "0x" + "00" * 32,
                                                      "proof": []}],
                                         "signature": "00" * 64}), 409)
    assert "not committed" in body["detail"]


def test_unknown_challenge_is_404(api: TestClient, service: NodeService,
                                  engine: Engine) -> None:
    work = run_loops(engine, "ab" * 32, 0, max_loops=2)
    cid = "cd" * 16
    assert_refused(api.post(f"/v1/challenges/{cid}/commit",
                            json=commit_body(WORKER_KEY, cid, work)), 404)


ShortTtl = tuple[TestClient, NodeService, FakeClock]


@pytest.fixture
def short_ttl_api(node_dir: NodeDir) -> Iterator[ShortTtl]:
    """The app over a service whose challenges live 300 ms (validator option), on a fake
    clock set to now (signed request times come from the wall clock): tests advance it."""
    clock = FakeClock(time.time())
    svc = NodeService(node_dir.files, ValidatorConfig(challenge_ttl_ms=300), clock=clock)
    try:
        with open_client(svc) as client:
            yield client, svc, clock
    finally:
        svc.close()


def test_expired_challenge_commit_is_410(short_ttl_api: ShortTtl, engine: Engine) -> None:
    api, svc, clock = short_ttl_api
    ch = issue(api, WORKER_KEY, svc.domain)
    work = run_loops(engine, ch["seed"], 0, max_loops=4)
    clock.advance(0.301)  # 1 ms past expiry: too late to commit
    cid = ch["challenge_id"]
    body = assert_refused(api.post(f"/v1/challenges/{cid}/commit",
                                   json=commit_body(WORKER_KEY, cid, work)), 410)
    assert "expired" in body["detail"]


def test_expired_challenge_reveal_is_410(short_ttl_api: ShortTtl, engine: Engine) -> None:
    api, svc, clock = short_ttl_api
    ch, work, samples = committed_round(api, WORKER_KEY, svc.domain, engine, loops=12)
    clock.advance(0.601)  # 1 ms past expiry + reveal grace (one more TTL): too late
    body = assert_refused(api.post(f"/v1/challenges/{ch['challenge_id']}/reveal",
                                   json=reveal_body(ch, samples, work.merkle_root,
                                                    svc.domain)), 410)
    assert "deadline" in body["detail"]


def test_too_many_open_challenges_is_429_with_retry_after(api: TestClient,
                                                          service: NodeService) -> None:
    limit = service.validator.config.max_open_per_worker
    for _ in range(limit):
        issue(api, WORKER_KEY, service.domain)
    resp = api.post("/v1/challenges", json=challenge_body(WORKER_KEY, service.domain))
    body = assert_refused(resp, 429)
    assert "too many open challenges" in body["detail"]
    retry = resp.headers.get("retry-after")
    assert retry is not None and float(retry) > 0
    # Another worker is not affected.
    issue(api, OTHER_KEY, service.domain)


def test_retry_after_header_is_integer_seconds(api: TestClient, service: NodeService) -> None:
    """RFC 9110 section 10.2.3: Retry-After is an HTTP-date or delay-seconds (1*DIGIT)."""
    for _ in range(service.validator.config.max_open_per_worker):
        issue(api, WORKER_KEY, service.domain)
    resp = api.post("/v1/challenges", json=challenge_body(WORKER_KEY, service.domain))
    assert resp.status_code == 429
    retry = resp.headers["retry-after"]
    assert re.fullmatch(r"[0-9]+", retry), f"Retry-After {retry!r} is not delay-seconds"
    assert int(retry) >= 1


# -------------------------------------------------------------------- transactions


def test_forged_transaction_signature_is_400(api: TestClient, node_dir: NodeDir) -> None:
    tx = transfer(node_dir, 0)
    forged = tx_to_json(tx)
    forged["signature"] = sign(OTHER_KEY, tx_signing_bytes(tx, node_dir.domain)).hex()
    body = assert_refused(api.post("/v1/transactions", json=forged), 400)
    assert "signature" in body["detail"]
    altered = tx_to_json(tx) | {"amount": 10**12}  # signed for amount 1
    body = assert_refused(api.post("/v1/transactions", json=altered), 400)
    assert "signature does not verify" in body["detail"]
    garbage = tx_to_json(tx) | {"signature": "ff" * 64}  # r, s >= curve order
    body = assert_refused(api.post("/v1/transactions", json=garbage), 400)
    assert "signature" in body["detail"]
    assert api.get("/v1/info").json()["mempool_size"] == 0


def test_gas_price_below_minimum_is_422(api: TestClient, node_dir: NodeDir) -> None:
    """The minimum is part of the declared transaction schema: a body below it is malformed
    (422, like every schema violation), not a refused transaction (400)."""
    body = tx_to_json(transfer(node_dir, 0)) | {"gas_price": 999, "fee": 21_000 * 999}
    detail = assert_refused(api.post("/v1/transactions", json=body), 422)["detail"]
    assert "gas_price" in detail


@pytest.mark.parametrize("body", [b"[]", b'"tx"', b"{}", b'{"tx_type": "TRANSFER"}',
                                  b'{"tx_type": "MINT"}'])
def test_malformed_transaction_bodies_are_422_like_other_routes(api: TestClient,
                                                                body: bytes) -> None:
    resp = api.post("/v1/transactions", content=body,
                    headers={"content-type": "application/json"})
    assert_refused(resp, 422)


ROUTE_JSON = {"content-type": "application/json; charset=utf-8"}
"""The JSON content type with a charset (`json=` sends the plain one)."""


def test_submission_answers_do_not_depend_on_the_content_type_spelling(
        api: TestClient, node_dir: NodeDir) -> None:
    """Each outcome of a submission, once with plain application/json and once with a
    charset: the same status, headers that matter and body."""
    def both(fast: dict | bytes, route: dict | bytes) -> tuple[Any, Any]:
        def post(body: dict | bytes, headers: dict | None) -> Any:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            return api.post("/v1/transactions", content=raw,
                            headers=headers or {"content-type": "application/json"})
        return post(fast, None), post(route, ROUTE_JSON)

    first, second = (tx_to_json(transfer(node_dir, n)) for n in (0, 1))
    ok_fast, ok_route = both(first, second)
    assert (ok_fast.status_code, ok_route.status_code) == (200, 200)
    assert ok_fast.json() == {"tx_id": tx_id(Transaction(**first)), "status": "pending"}
    assert ok_route.json() == {"tx_id": tx_id(Transaction(**second)), "status": "pending"}
    assert ok_fast.headers["content-type"] == ok_route.headers["content-type"]
    forged = dict(first, amount=first["amount"] + 1)
    cases = {"duplicate": (first, first), "nonce gap": (tx_to_json(transfer(node_dir, 9)),) * 2,
             "forged": (forged, forged), "extra field": (dict(first, x=1),) * 2,
             "not json": (b"{", b"{"), "deeply nested": (b"[" * 50_000 + b"]" * 50_000,) * 2}
    for name, (fast_body, route_body) in cases.items():
        fast, route = both(fast_body, route_body)
        assert 400 <= fast.status_code < 500, (name, fast.text)
        assert (fast.status_code, fast.json()) == (route.status_code, route.json()), name
    assert api.get("/v1/info").json()["mempool_size"] == 2


def test_submission_acknowledges_only_what_is_durable(tmp_path: Path) -> None:
    """A transaction answered 200 is back after a restart (journal fsynced before the
    answer)."""
    nd = make_node_dir(tmp_path / "node")
    svc = NodeService(nd.files)
    txs = [transfer(nd, n) for n in range(3)]
    with open_client(svc) as client:
        for tx in txs:
            assert client.post("/v1/transactions", json=tx_to_json(tx)).status_code == 200
    svc.close()
    again = NodeService(nd.files)
    try:
        assert all(tx_id(tx) in again.mempool for tx in txs)
    finally:
        again.close()


def test_replayed_transaction_is_409(api: TestClient, node_dir: NodeDir) -> None:
    body = tx_to_json(transfer(node_dir, 0))
    assert api.post("/v1/transactions", json=body).status_code == 200
    detail = assert_refused(api.post("/v1/transactions", json=body), 409)["detail"]
    assert "already pending" in detail
    assert api.get("/v1/info").json()["mempool_size"] == 1


def test_mempool_refusals_map_to_status_codes(api: TestClient, node_dir: NodeDir) -> None:
    detail = assert_refused(api.post("/v1/transactions",
                                     json=tx_to_json(transfer(node_dir, 3))), 400)["detail"]
    assert "nonce 3 but account expects 0" in detail
    poor = transfer(node_dir, 0, key=OTHER_KEY)
    detail = assert_refused(api.post("/v1/transactions", json=tx_to_json(poor)), 400)["detail"]
    assert "insufficient balance" in detail


# -------------------------------------------------------------- metrics, openapi, ws


def test_metrics_are_prometheus_text(api: TestClient, service: NodeService,
                                     node_dir: NodeDir) -> None:
    issue(api, WORKER_KEY, service.domain)
    api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 0)))
    api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 5)))
    service.produce_block()
    resp = api.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for line in ("hc_challenges_issued_total 1.0", 'hc_transactions_total{outcome="accepted"} 1.0',
                 'hc_transactions_total{outcome="rejected"} 1.0', "hc_blocks_produced_total 1.0",
                 "hc_head_height 1.0", "hc_mempool_size 0.0"):
        assert line in text.splitlines(), line
    assert "# TYPE hc_reveal_seconds histogram" in text


def test_openapi_lists_the_routes(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/v1/info": "get", "/v1/head": "get", "/v1/challenges": "post",
        "/v1/challenges/{challenge_id}/commit": "post",
        "/v1/challenges/{challenge_id}/reveal": "post", "/v1/transactions": "post",
        "/v1/transactions/{txid}": "get", "/v1/blocks/{ref}": "get",
        "/v1/accounts/{address}": "get", "/v1/accounts/{address}/next-nonce": "get",
        "/metrics": "get",
    }
    for path, method in expected.items():
        assert method in paths.get(path, {}), path


def test_websocket_sends_current_head_then_new_heads(node_dir: NodeDir) -> None:
    """With the block producer running (the app's lifespan), a new block reaches the feed."""
    svc = NodeService(node_dir.files)
    try:
        with open_client(svc, produce_blocks=True, block_time=0.05) as client, \
                client.websocket_connect("/v1/ws/heads") as ws:
            first = ws.receive_json()
            assert first == client.get("/v1/head").json() and first["height"] == 0
            tx = transfer(node_dir, 0)
            assert client.post("/v1/transactions", json=tx_to_json(tx)).status_code == 200
            second = ws.receive_json()
            assert second["height"] == 1
            assert second["hash"] == client.get("/v1/blocks/1").json()["hash"]
            assert client.get(f"/v1/transactions/{tx_id(tx)}").json()["status"] == "included"
    finally:
        svc.close()


# ------------------------------------------------------------------ body size limit


POST_ROUTES = ["/v1/challenges", "/v1/challenges/{cid}/commit",
               "/v1/challenges/{cid}/reveal", "/v1/transactions"]


def limit_of(route: str, service: NodeService) -> int:
    """The body limit of `route` for an unknown challenge: MAX_BODY everywhere (a reveal's
    limit is sized per committed challenge)."""
    return MAX_BODY


@pytest.mark.parametrize("route", POST_ROUTES)
def test_body_over_limit_with_content_length_is_413(api: TestClient, service: NodeService,
                                                    route: str) -> None:
    resp = api.post(route.format(cid="ab" * 16), content=b" " * (limit_of(route, service) + 1),
                    headers={"content-type": "application/json"})
    assert_refused(resp, 413)


@pytest.mark.parametrize("route", POST_ROUTES)
def test_body_over_limit_chunked_is_413(api: TestClient, service: NodeService,
                                        route: str) -> None:
    limit = limit_of(route, service)

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    resp = api.post(route.format(cid="ab" * 16), content=chunks(),
                    headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    assert_refused(resp, 413)


def test_reveal_limit_fits_the_largest_legal_reveal() -> None:
    """SPEC 3 v1.1: `s_max` samples, each with a full path and a whole output at `max_n`
    (the adaptive policy may audit them all), fit the reveal route's limit; a 1 MiB limit
    would refuse them."""
    n, s_max = 4096, 256
    sample = {"index": 2**40 - 1, "leaf": "0x" + "ab" * 32, "proof": ["0x" + "cd" * 32] * 64,
              "output": "0x" + "ef" * (8 * n)}
    body = json.dumps({"samples": [sample] * s_max, "signature": "01" * 64}).encode()
    assert MAX_BODY < len(body) <= reveal_body_limit(n, s_max)
    assert reveal_body_limit(n, s_max) < 2 * len(body) and reveal_body_limit(64, 10) < 2 * MAX_BODY


def test_reveal_between_the_limits_is_parsed_for_a_committed_challenge(
        api: TestClient, service: NodeService, engine: Engine) -> None:
    ch, _, _ = committed_round(api, WORKER_KEY, service.domain, engine)
    body = b"{}" + b" " * (MAX_BODY + 1000)
    resp = api.post(f"/v1/challenges/{ch['challenge_id']}/reveal", content=body,
                    headers={"content-type": "application/json"})
    assert_refused(resp, 422)  # read and validated, not refused for its size
    # The same body to an unknown challenge is never read (its reveal is refused anyway).
    resp = api.post("/v1/challenges/" + "ab" * 16 + "/reveal", content=body,
                    headers={"content-type": "application/json"})
    assert_refused(resp, 413)


def test_body_at_the_limit_is_parsed(api: TestClient) -> None:
    body = b"{}" + b" " * (MAX_BODY - 2)
    resp = api.post("/v1/challenges", content=body, headers={"content-type": "application/json"})
    assert_refused(resp, 422)  # read and validated, not refused for its size


@pytest.mark.parametrize("value", ["abc", "-1", "1" * 30])
def test_bad_content_length_is_refused(api: TestClient, value: str) -> None:
    resp = api.post("/v1/transactions", content=b"{}",
                    headers={"content-type": "application/json", "content-length": value})
    assert 400 <= resp.status_code < 500


# ------------------------------------------------- reveal abuse: paths, sizes, threads


def test_third_party_cannot_alter_a_path_in_the_workers_signed_reveal(
        api: TestClient, service: NodeService, engine: Engine) -> None:
    """The reveal signature covers each sample's audit path: a copy of the worker's signed
    reveal with one path hash changed, sent first, is 403 and burns nothing; the worker's own
    reveal is accepted afterwards."""
    ch, work, samples = committed_round(api, WORKER_KEY, service.domain, engine)
    url = f"/v1/challenges/{ch['challenge_id']}/reveal"
    honest = reveal_body(ch, samples, work.merkle_root, service.domain)
    stolen = copy.deepcopy(honest)
    stolen["samples"][2]["proof"][1] = flip_hex(stolen["samples"][2]["proof"][1])
    body = assert_refused(api.post(url, json=stolen), 403)
    assert "not signed" in body["detail"]
    address = WORKER_KEY.public_key.address
    history = service.validator.history(address)
    assert history.failed == 0 and history.failure_times == ()
    assert service.validator.open_challenges(address) == 1  # still committed, still open
    resp = api.post(url, json=honest)
    assert resp.status_code == 200 and resp.json()["accepted"] is True, resp.text
    metrics = api.get("/metrics").text.splitlines()
    assert 'hc_reveals_total{outcome="unauthorized"} 1.0' in metrics
    assert 'hc_rounds_total{outcome="rejected"} 0.0' in metrics


def test_reveal_limit_is_sized_per_challenge(api: TestClient, service: NodeService,
                                             engine: Engine) -> None:
    """An honest reveal padded to exactly its challenge's limit (largest legal reveal +
    REVEAL_SLACK) is read and accepted; one byte more is 413 and leaves the round open."""
    ch, work, samples = committed_round(api, WORKER_KEY, service.domain, engine)
    cid = ch["challenge_id"]
    largest = service.validator.largest_reveal(cid)
    assert largest is not None
    limit = largest + REVEAL_SLACK
    assert MAX_BODY < limit < 2 * MAX_BODY  # n = 64, 10 samples: far below the 18 MiB cap
    honest = json.dumps(reveal_body(ch, samples, work.merkle_root, service.domain)).encode()
    assert len(honest) <= largest
    padded = honest[:-1] + b" " * (limit - len(honest)) + b"}"
    assert len(padded) == limit
    url = f"/v1/challenges/{cid}/reveal"
    headers = {"content-type": "application/json"}
    assert_refused(api.post(url, content=padded[:-1] + b" }", headers=headers), 413)
    resp = api.post(url, content=padded, headers=headers)
    assert resp.status_code == 200 and resp.json()["accepted"] is True, resp.text
    # Accepted: a repeated reveal (same receipt) still fits.
    assert service.validator.largest_reveal(cid) == largest
    assert api.post(url, content=padded, headers=headers).status_code == 200
    # Unknown and uncommitted challenges get the default limit.
    assert service.validator.largest_reveal("ab" * 16) is None
    fresh = issue(api, WORKER_KEY, service.domain)["challenge_id"]
    assert service.validator.largest_reveal(fresh) is None


def test_oversized_reveal_to_an_unknown_challenge_is_refused_before_parsing(
        api: TestClient) -> None:
    """Any id gets at most MAX_BODY unless it names a committed challenge: a 17.5 MB body
    (what used to be parsed on the event loop) is 413, not 422, and never read."""
    body = b"[" + b"0," * (17_500_000 // 2) + b"0]"  # valid JSON, wrong shape
    resp = api.post("/v1/challenges/" + "ef" * 16 + "/reveal", content=body,
                    headers={"content-type": "application/json"})
    assert "larger than" in assert_refused(resp, 413)["detail"]


@pytest.mark.parametrize("loops", [1, 2, 31, 32, 33, 1000, 2**40])
def test_reveal_bound_covers_the_largest_reveal_shape(loops: int) -> None:
    """`reveal_json_bound` against the worst case of each shape: the longest index, a full
    audit path on every sample, an output on every audited one (`json.dumps` spacing)."""
    n, s = 64, min(loops, 12)
    depth = (loops - 1).bit_length()
    for outputs in (0, min(3, s), s):
        samples = [{"index": loops - 1, "leaf": "0x" + "ab" * 32,
                    "proof": ["0x" + "cd" * 32] * depth,
                    "output": "0x" + "ef" * (8 * n) if j < outputs else None}
                   for j in range(s)]
        body = json.dumps({"samples": samples, "signature": "01" * 64}).encode()
        bound = reveal_json_bound(loops, s, n, outputs)
        assert len(body) <= bound < len(body) + 64 * s + 512


@pytest.mark.timeout(120)
def test_blocked_audits_leave_threads_for_a_challenge_request(node_dir: NodeDir,
                                                             engine: Engine) -> None:
    """45 audit places (above anyio's 40 default threads), every one taken by a reveal
    blocked in its audit or waiting for the slot: a challenge request is still answered,
    because the app sizes the thread pool to slots + queue + THREAD_MARGIN."""
    slots, queue = 1, 44
    release = threading.Event()

    def blocking_rows(seed: str, index: int, n: int, rows: list[int]) -> list[int]:
        release.wait(60)
        return row_digests_of(seed, index, n, rows)

    config = ValidatorConfig(audit_slots=slots, audit_queue=queue, audit_reserved=0,
                             max_open_per_worker=slots + queue + 1)
    svc = NodeService(node_dir.files, config, row_fn=blocking_rows)
    assert worker_threads(config) == slots + queue + THREAD_MARGIN
    answers: list[int] = []
    answered_while_blocked: list[int] = []
    try:
        with open_client(svc) as client:
            reveals = []
            for _ in range(slots + queue):
                ch, work, samples = committed_round(client, WORKER_KEY, svc.domain, engine,
                                                    loops=12)
                reveals.append((f"/v1/challenges/{ch['challenge_id']}/reveal",
                                reveal_body(ch, samples, work.merkle_root, svc.domain)))

            def post(url: str, body: dict) -> None:
                answers.append(client.post(url, json=body).status_code)

            threads = [threading.Thread(target=post, args=r, daemon=True) for r in reveals]
            got: list[int] = []
            asker = threading.Thread(daemon=True, target=lambda: got.append(client.post(
                "/v1/challenges", json=challenge_body(OTHER_KEY, svc.domain)).status_code))
            try:
                for t in threads:
                    t.start()
                gate = svc.validator.audit_gate
                deadline = time.monotonic() + 20
                while gate.pending < slots + queue or gate.waiting < queue:
                    assert time.monotonic() < deadline, (gate.pending, gate.waiting)
                    time.sleep(0.01)
                asker.start()
                asker.join(15)
                answered_while_blocked = list(got)
            finally:
                release.set()  # before the client's portal stops: it waits for them
                for t in threads:
                    t.join(60)
                if asker.is_alive() or got:
                    asker.join(15)
    finally:
        release.set()
        svc.close()
    assert answered_while_blocked == [200]
    assert answers == [200] * (slots + queue)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (disk full)")
def test_unwritable_journal_is_503_and_undone(node_dir: NodeDir, engine: Engine) -> None:
    """A challenge journal the disk refuses (ENOSPC: /dev/full) answers 503, undoes the
    issue (the open bound is untouched) and the commitment (back to issued), and the log
    recovers on the next write; after a restart the round is the one the miner was told."""
    svc = NodeService(node_dir.files)
    log = svc.validator.challenge_log._log
    address = WORKER_KEY.public_key.address
    try:
        with open_client(svc) as client:
            real = log._fh
            log._fh = open("/dev/full", "ab")  # noqa: SIM115 - closed by the log
            resp = client.post("/v1/challenges", json=challenge_body(WORKER_KEY, svc.domain))
            real.close()
            assert resp.status_code == 503, resp.text
            assert "journal" in resp.json()["detail"]
            assert svc.validator.open_challenges(address) == 0
            ch = issue(client, WORKER_KEY, svc.domain)  # the log reopened its own file
            cid = ch["challenge_id"]
            work = run_loops(engine, ch["seed"], 0, max_loops=REVEAL_LOOPS)
            real = log._fh
            log._fh = open("/dev/full", "ab")  # noqa: SIM115 - closed by the log
            resp = client.post(f"/v1/challenges/{cid}/commit",
                               json=commit_body(WORKER_KEY, cid, work))
            real.close()
            assert resp.status_code == 503 and "retry" in resp.json()["detail"]
            assert svc.validator.largest_reveal(cid) is None  # back to issued
            resp = client.post(f"/v1/challenges/{cid}/commit",
                               json=commit_body(WORKER_KEY, cid, work))
            assert resp.status_code == 200, resp.text
            answer = resp.json()
    finally:
        svc.close()
    again = NodeService(node_dir.files)
    try:
        with open_client(again) as client:
            samples = [s.model_dump(mode="json")
                       for s in make_samples(work.tree, work.leaves, answer["indices"],
                                             plan_outputs(ch, answer))]
            resp = client.post(f"/v1/challenges/{cid}/reveal",
                               json=reveal_body(ch, samples, work.merkle_root, again.domain))
            assert resp.status_code == 200 and resp.json()["accepted"] is True, resp.text
    finally:
        again.close()


# --------------------------------------------------------- malformed input: never a 500


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    """One app for the many malformed-input cases, with an issued challenge id to aim at."""
    nd = make_node_dir(tmp_path_factory.mktemp("fuzz") / "node")
    # Hypothesis may draw one worker key many times: no per-worker bound may refuse it.
    svc = NodeService(nd.files, ValidatorConfig(requests_per_minute_per_ip=100_000,
                                                requests_per_minute_per_address=100_000,
                                                max_open_per_worker=100_000))
    try:
        with open_client(svc) as client:
            fuzz_key = PrivateKey(0xF022)
            ch = client.post("/v1/challenges", json=challenge_body(fuzz_key, svc.domain))
            assert ch.status_code == 200, ch.text
            yield client, ch.json()["challenge"]["challenge_id"]
    finally:
        svc.close()


def _base_bodies(domain: ChainDomain | None = None) -> dict[str, dict]:
    """Well-formed bodies of every POST route, signed for `domain` (the fuzz node's, so a
    mutation is what gets refused; a placeholder domain when only the shape matters)."""
    domain = domain or FUZZ_DOMAIN
    key = PrivateKey(0xBA5E)
    tx = tx_to_json(transfer_for_fuzz(key, domain))
    return {
        "/v1/challenges": challenge_body(key, domain),
        "/v1/challenges/{cid}/commit": {
            "loops": 16, "compute_time": 0.5, "merkle_root": "0x" + "11" * 32,
            "device": dict(CPU), "device_signature": "0x" + "22" * 64},
        "/v1/challenges/{cid}/reveal": {
            "samples": [{"index": 0, "leaf": "0x" + "33" * 32, "proof": ["0x" + "44" * 32],
                         "output": "0x" + "66" * 512}],
            "signature": "55" * 64},
        "/v1/transactions": tx,
    }


FUZZ_DOMAIN = ChainDomain("hashcloud-local", "0" * 16)
"""A placeholder signing domain for bodies whose shape alone matters (SPEC 5 v1.1)."""


def node_domain_of(client: TestClient) -> ChainDomain:
    """The signing domain a node reports in `/v1/info`."""
    info = client.get("/v1/info").json()
    return ChainDomain.of(info["chain_id"], info["genesis_block_hash"])


def transfer_for_fuzz(key: PrivateKey, domain: ChainDomain = FUZZ_DOMAIN) -> Transaction:
    return make_transfer(key, OTHER_KEY.public_key.address, 5, 0, domain=domain)


_DROP = object()
MUTATIONS: dict[str, Any] = {
    "missing": _DROP, "null": None, "string": "abc", "empty_string": "", "true": True,
    "float": 1.5, "list": [1, 2], "object": {"a": 1}, "huge": 10**100, "u64_plus": 2**64,
    "negative": -1, "zero": 0, "non_hex": "zz" * 32, "upper_hex": "AB" * 32,
    "prefixed_hex": "0x" + "ab" * 32, "long_string": "a" * 20_000, "unicode": "é\u0000☃",
}


def _mutated(base: dict, path: tuple, value: Any) -> dict:
    body = copy.deepcopy(base)
    target = body
    for step in path[:-1]:
        target = target[step]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


def _field_paths(body: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if isinstance(body, dict):
        for k, v in body.items():
            yield (*prefix, k)
            yield from _field_paths(v, (*prefix, k))
    elif isinstance(body, list) and body:
        yield (*prefix, 0)
        yield from _field_paths(body[0], (*prefix, 0))


def _mutation_cases() -> list[tuple[str, tuple, str]]:
    cases = []
    for route, base in _base_bodies().items():
        for path in _field_paths(base):
            for name in MUTATIONS:
                if name == "missing" and isinstance(path[-1], int):
                    continue
                cases.append((route, path, name))
    return cases


@pytest.mark.parametrize(("route", "path", "mutation"), _mutation_cases(),
                         ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else v)
def test_mutated_field_is_refused_never_500(fuzz_node: tuple[TestClient, str], route: str,
                                            path: tuple, mutation: str) -> None:
    client, cid = fuzz_node
    base = _base_bodies(node_domain_of(client))[route]
    body = _mutated(base, path, MUTATIONS[mutation])
    if body == base:
        pytest.skip("the mutation leaves the field unchanged")
    assert_refused(client.post(route.format(cid=cid), json=body))


WHOLE_BODIES: dict[str, bytes] = {
    "malformed": b'{"worker_address": ', "trailing_comma": b'{"a": 1,}', "empty": b"",
    "array": b"[]", "array_of_object": b'[{"n": 64}]', "string": b'"hello"', "number": b"42",
    "null": b"null", "true": b"true", "nan": b'{"n": NaN}', "infinity": b'{"n": Infinity}',
    "huge_number_literal": b'{"n": ' + b"9" * 5000 + b"}", "float_overflow": b'{"n": 1e999}',
    "deeply_nested": b"[" * 50_000 + b"]" * 50_000, "bad_utf8": b'{"n": "\xff\xfe"}',
    "utf16_bom": "{}".encode("utf-16"), "nul_bytes": b"\x00" * 64, "duplicate_keys":
    b'{"samples": [], "samples": []}', "extra_field": b'{"unexpected": 1}',
}


@pytest.mark.parametrize("route", POST_ROUTES)
@pytest.mark.parametrize("name", sorted(WHOLE_BODIES))
def test_malformed_body_is_refused_never_500(fuzz_node: tuple[TestClient, str], route: str,
                                             name: str) -> None:
    client, cid = fuzz_node
    resp = client.post(route.format(cid=cid), content=WHOLE_BODIES[name],
                       headers={"content-type": "application/json"})
    assert_refused(resp)


@pytest.mark.parametrize("route", POST_ROUTES)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          None])
def test_other_content_types_are_refused(fuzz_node: tuple[TestClient, str], route: str,
                                         content_type: str | None) -> None:
    client, cid = fuzz_node
    headers = {"content-type": content_type} if content_type else {}
    assert_refused(client.post(route.format(cid=cid), content=b"a=1&b=2", headers=headers))


@pytest.mark.parametrize("route", POST_ROUTES)
def test_extra_field_is_refused(fuzz_node: tuple[TestClient, str], route: str) -> None:
    client, cid = fuzz_node
    body = _base_bodies(node_domain_of(client))[route] | {"surprise": 1}
    detail = assert_refused(client.post(route.format(cid=cid), json=body))["detail"]
    assert "surprise" in detail or "Extra" in detail or "extra" in detail


BAD_PATH_VALUES = ["zz", "-1", "1e3", "0x00", "00" * 31, "00" * 33, "AB" * 32, "%20", "%00",
                   "\u00b2", "\u0661\u0662", "\uff19", "9" * 19, "9" * 25, "a" * 2000, "..",
                   "latest%0A", "cpc1", "cpc1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"]
GET_ROUTES = ["/v1/transactions/{v}", "/v1/blocks/{v}", "/v1/accounts/{v}",
              "/v1/accounts/{v}/next-nonce"]


@pytest.mark.parametrize("route", GET_ROUTES)
@pytest.mark.parametrize("value", BAD_PATH_VALUES)
def test_bad_path_parameter_is_refused_never_500(fuzz_node: tuple[TestClient, str], route: str,
                                                 value: str) -> None:
    client, _ = fuzz_node
    assert_refused(client.get(route.format(v=value)))


@pytest.mark.parametrize("value", ["zz", "ab" * 16 + "00", "%00", "\u00b2", "a" * 2000])
def test_bad_challenge_id_in_path_is_refused(fuzz_node: tuple[TestClient, str],
                                             value: str) -> None:
    client, _ = fuzz_node
    base = _base_bodies()
    for route in POST_ROUTES[1:3]:
        assert_refused(client.post(route.format(cid=value), json=base[route]))


def test_unknown_route_and_method_are_json_4xx(api: TestClient) -> None:
    assert_refused(api.get("/v1/nothing-here"), 404)
    assert_refused(api.get("/v1/challenges"), 405)
    assert_refused(api.delete("/v1/transactions/" + "00" * 32), 405)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _shaped(route: str) -> st.SearchStrategy[dict]:
    """Objects with exactly the route's keys, each given an arbitrary JSON value."""
    base = _base_bodies()[route]
    return st.fixed_dictionaries({k: json_values for k in base})


@pytest.mark.timeout(120)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_json_never_500(fuzz_node: tuple[TestClient, str], data: st.DataObject) -> None:
    client, cid = fuzz_node
    for route in POST_ROUTES:
        body = data.draw(json_values | _shaped(route), label=route)
        assert_refused(client.post(route.format(cid=cid), json=body))


@pytest.mark.timeout(120)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_shaped_random_values_never_500(fuzz_node: tuple[TestClient, str],
                                              data: st.DataObject) -> None:
    """Bodies that pass the schema (right types, random values) reach the service logic."""
    client, cid = fuzz_node
    hex32 = st.binary(min_size=32, max_size=32).map(bytes.hex)
    commit = st.fixed_dictionaries({
        "loops": st.integers(1, 2**40), "compute_time": st.floats(1e-300, 86_400),
        "merkle_root": hex32.map("0x".__add__),
        "device": st.fixed_dictionaries({"name": st.text(max_size=20),
                                         "backend": st.sampled_from(["numpy", "cupy", "tpu"])}),
        "device_signature": st.binary(min_size=64, max_size=64).map(lambda b: "0x" + b.hex())})
    reveal = st.fixed_dictionaries({"samples": st.lists(st.fixed_dictionaries({
        "index": st.integers(0, 2**70), "leaf": hex32.map("0x".__add__),
        "proof": st.lists(hex32.map("0x".__add__), max_size=3)}, optional={
        "output": st.binary(min_size=1, max_size=600).map(lambda b: "0x" + b.hex())}),
        min_size=1, max_size=3),
        "signature": st.binary(min_size=64, max_size=64).map(bytes.hex)})
    resp = client.post(f"/v1/challenges/{cid}/commit", json=data.draw(commit))
    assert_refused(resp)
    resp = client.post(f"/v1/challenges/{cid}/reveal", json=data.draw(reveal))
    assert_refused(resp)
    tx = tx_to_json(transfer_for_fuzz(PrivateKey(0xBA5E), node_domain_of(client)))
    tx.update(data.draw(st.fixed_dictionaries({}, optional={
        "amount": st.integers(0, 2**96), "fee": st.integers(0, 2**96),
        "nonce": st.integers(0, 2**64 - 1), "gas_price": st.integers(1000, 2**64 - 1),
        "gas_limit": st.integers(0, 2**64 - 1), "public_key": st.sampled_from(
            ["02" + "ff" * 32, "03" + "00" * 32, PrivateKey(7).public_key.hex()]),
        "signature": st.binary(min_size=64, max_size=64).map(bytes.hex),
        "tx_type": st.just("SUBMIT_RESULT")})))
    resp = client.post("/v1/transactions", json=tx)
    assert resp.status_code < 500, resp.text


@pytest.mark.timeout(120)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=st.integers(1, 2**200), loops=st.integers(1, 2**40),
       compute_time=st.floats(1e-300, 86_400), backend=st.sampled_from(["numpy", "cupy", "x"]),
       root=st.binary(min_size=32, max_size=32))
def test_signed_commit_with_arbitrary_claims_never_500(
        fuzz_node: tuple[TestClient, str], secret: int, loops: int, compute_time: float,
        backend: str, root: bytes) -> None:
    """A worker signing its own (absurd) claims reaches every sanity check of the commit."""
    client, _ = fuzz_node
    key = PrivateKey(secret)
    resp = client.post("/v1/challenges", json=challenge_body(key, node_domain_of(client)))
    assert resp.status_code == 200, resp.text
    ch = resp.json()["challenge"]
    body = {"loops": loops, "compute_time": compute_time, "merkle_root": "0x" + root.hex(),
            "device": {"name": "x", "backend": backend},
            "device_signature": "0x" + sign(key, commit_message(
                ch["challenge_id"], ch["seed"], N, key.public_key.address, loops,
                compute_time, root)).hex()}
    resp = client.post(f"/v1/challenges/{ch['challenge_id']}/commit", json=body)
    if resp.status_code != 200:
        assert_refused(resp, 422)

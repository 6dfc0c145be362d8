"""Batch intake: `POST /v1/transactions/batch`, parallel signature checks, block candidates.

The route runs on the real app and service: each transaction of a batch gets the answer a
single submission would get, the accepted ones are journaled (durable when acknowledged:
a service reopened on the data dir has them back), and the bounds (count, body size) hold.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest import raises

from hashcloud.api.models import MAX_BATCH
from hashcloud.chain.tx import tx_id, tx_to_json
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.signatures import _verify_cached, clear_verification_cache
from hashcloud.node import intake
from hashcloud.node.app import http_status
from hashcloud.node.mempool import Mempool
from hashcloud.node.service import NodeService
from tests.node.conftest import FUNDED_KEY, NodeDir, make_node_dir, reopen, transfer


def body(txs) -> dict:  # noqa: ANN001 - transactions
    """A batch request body."""
    return {"transactions": [tx_to_json(tx) for tx in txs]}


def test_batch_results_match_single_submissions(node_dir: NodeDir, service: NodeService,
                                                api: TestClient) -> None:
    good = [transfer(node_dir, n, amount=5 + n) for n in range(3)]
    gap = transfer(node_dir, 7)  # nonce gap: 400 alone
    forged = good[0].model_copy(update={"amount": 6})  # signature no longer verifies
    resp = api.post("/v1/transactions/batch", json={"transactions": [
        *body(good)["transactions"], tx_to_json(gap), {"tx_type": "TRANSFER"},
        tx_to_json(forged), tx_to_json(good[1])]})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["accepted"] == 3
    results = out["results"]
    assert [r["status"] for r in results] == ["pending"] * 3 + ["rejected"] * 4
    assert [r["tx_id"] for r in results[:3]] == [tx_id(t) for t in good]
    single = {t: api.post("/v1/transactions", json=j) for t, j in (
        ("gap", tx_to_json(gap)), ("forged", tx_to_json(forged)), ("dup", tx_to_json(good[1])))}
    assert results[3]["code"] == single["gap"].status_code == 400
    assert results[3]["detail"] == single["gap"].json()["detail"]
    assert results[4]["code"] == 400 and "invalid transaction" in results[4]["detail"]
    assert results[5]["code"] == single["forged"].status_code
    assert results[6]["code"] == single["dup"].status_code == 409
    assert all(tx_id(t) in service.mempool for t in good)


def test_acknowledged_batch_is_durable(tmp_path: Path) -> None:
    nd = make_node_dir(tmp_path / "node")
    svc = NodeService(nd.files)
    txs = [transfer(nd, n) for n in range(intake.MIN_PARALLEL)]  # the thread pool runs
    out = svc.submit_batch(body(txs)["transactions"], http_status)
    assert out.accepted == len(txs)
    svc.close()
    again = NodeService(reopen(nd.path).files)
    try:
        assert all(tx_id(t) in again.mempool for t in txs)
        assert again.produce_block() is not None
        assert all(again.ledger.find_tx(tx_id(t)) is not None for t in txs)
    finally:
        again.close()


def test_batch_bounds(node_dir: NodeDir, api: TestClient) -> None:
    assert api.post("/v1/transactions/batch", json={"transactions": []}).status_code == 422
    assert api.post("/v1/transactions/batch", json={"txs": []}).status_code == 422
    one = tx_to_json(transfer(node_dir, 0))
    resp = api.post("/v1/transactions/batch", json={"transactions": [one] * (MAX_BATCH + 1)})
    assert resp.status_code == 422  # the model's bound: the schema declares the same one
    assert "transactions" in resp.json()["detail"]
    huge = {"transactions": [{**one, "pad": "x" * 1000}] * 1100}
    assert api.post("/v1/transactions/batch", json=huge).status_code == 413


def test_prevalidate_fills_the_verification_memo(node_dir: NodeDir) -> None:
    txs = [transfer(node_dir, n) for n in range(intake.MIN_PARALLEL)]
    bad = txs[1].model_copy(update={"signature": "zz"})  # skipped here, refused by the pool
    clear_verification_cache()
    intake.prevalidate(node_dir.files.genesis, [*txs, bad])
    info = _verify_cached.cache_info()
    assert info.currsize == len(txs) and info.misses == len(txs)
    pool = Mempool(node_dir.files.genesis, _head_state(node_dir), FUNDED_KEY.public_key.address)
    for tx in txs:
        pool.add(tx)
    assert _verify_cached.cache_info().misses == len(txs)  # every pool check was a lookup


def _head_state(nd: NodeDir):  # noqa: ANN202 - a State
    """The genesis state of `nd`'s chain."""
    from hashcloud.chain.genesis import genesis_state

    return genesis_state(nd.files.genesis)


def reference_candidates(pool: Mempool) -> list[str]:
    """The pre-heap algorithm: repeatedly the highest-paying sender head, first sender on
    ties (ids)."""
    queues: dict[str, list] = {}
    for e in pool._entries.values():
        queues.setdefault(e.tx.from_address, []).append(e.tx)
    out, heads = [], {s: 0 for s in queues}
    while heads:
        sender = max(heads, key=lambda s: queues[s][heads[s]].gas_price)
        out.append(tx_id(queues[sender][heads[sender]]))
        heads[sender] += 1
        if heads[sender] == len(queues[sender]):
            del heads[sender]
    return out


SENDERS = [PrivateKey(0x5E0D_0000 + i) for i in range(4)]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([1000, 1500, 2000])),
                min_size=1, max_size=24))
def test_candidates_keep_nonce_order_and_price_priority(tmp_path_factory, plan) -> None:
    """The heap order equals the simple reference order for any pool."""
    from hashcloud.chain.genesis import genesis_state
    from hashcloud.node.config import init_data_dir

    files = init_data_dir(tmp_path_factory.mktemp("n"),
                          allocations={k.public_key.address: 10**15 for k in SENDERS})
    nd = NodeDir(files.data_dir, files, SENDERS[0])
    pool = Mempool(files.genesis, genesis_state(files.genesis), files.key.public_key.address)
    nonces = [0] * len(SENDERS)
    for sender, price in plan:
        pool.add(transfer(nd, nonces[sender], gas_price=price, key=SENDERS[sender]))
        nonces[sender] += 1
    got = [tx_id(t) for t in pool.candidates()]
    assert got == reference_candidates(pool)
    assert [tx_id(t) for t in pool.candidates(limit=3)] == got[:3]


def test_submit_threads_answer_raise_and_start_again_after_close() -> None:
    """`SubmitThreads` (single submissions): a result, an exception passed through, and a
    pool made afresh after `close` (an app started again, as TestClient does)."""
    threads = intake.SubmitThreads(2)
    assert asyncio.run(threads.run(pow, 2, 10)) == 1024
    with raises(ValueError):
        asyncio.run(threads.run(int, "not a number"))
    threads.close()
    assert asyncio.run(threads.run(pow, 3, 3)) == 27
    threads.close()
    threads.close()  # idempotent

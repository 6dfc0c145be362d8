"""`GET /v1/accounts/{address}/history` (SPEC 7 v1.1 `history`): newest first, bounded pages
that continue with `before`, through `NodeClient.history` against the real app and service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from hashcloud.chain.genesis import chain_domain
from hashcloud.chain.tx import make_transfer
from hashcloud.client.http import NodeClient
from hashcloud.crypto.keys import PrivateKey
from hashcloud.errors import NodeRejected
from hashcloud.node.app import create_app
from hashcloud.node.config import init_data_dir
from hashcloud.node.service import NodeService, address_history

RICH = PrivateKey(0xFEED)
A = PrivateKey(0xA11CE).public_key.address
B = PrivateKey(0xB0B0).public_key.address


@pytest.fixture
def service(tmp_path) -> Iterator[NodeService]:
    """A node with 6 blocks: transfers to A at blocks 1, 3, 5 and to B at 2, 4, 6."""
    files = init_data_dir(tmp_path / "node",
                          allocations={RICH.public_key.address: 10**15})
    svc = NodeService(files)
    domain = chain_domain(files.genesis)
    for nonce in range(6):
        to = A if nonce % 2 == 0 else B
        svc.submit_transaction(make_transfer(RICH, to, 100 + nonce, nonce, domain=domain))
        assert svc.produce_block() is not None
    yield svc
    svc.close()


@pytest.fixture
def client(service: NodeService) -> Iterator[NodeClient]:
    with TestClient(create_app(service, produce_blocks=False)) as api:
        c = NodeClient("http://testserver", retries=0)
        c.http.close()
        c.http = api
        yield c


def test_newest_first_and_both_directions(client: NodeClient):
    page = client.history(A)
    assert [(t["height"], t["amount"]) for t in page["transactions"]] == [
        (5, 104), (3, 102), (1, 100)]
    assert page["next_before"] is None  # the walk reached genesis
    sender = client.history(RICH.public_key.address)["transactions"]
    assert [t["height"] for t in sender] == [6, 5, 4, 3, 2, 1]
    assert all(t["from_address"] == RICH.public_key.address for t in sender)
    assert client.history(PrivateKey(0xDEAD).public_key.address)["transactions"] == []


def test_pages_continue_with_before(client: NodeClient):
    first = client.history(A, limit=1)
    assert [t["height"] for t in first["transactions"]] == [5]
    second = client.history(A, before=first["next_before"], limit=1)
    assert [t["height"] for t in second["transactions"]] == [3]
    assert client.history(A, before=2)["transactions"][0]["height"] == 1


def test_a_call_reads_a_bounded_number_of_blocks(service: NodeService):
    page = address_history(service.ledger, A, max_blocks=2)  # blocks 6 and 5 only
    assert [t["height"] for t in page["transactions"]] == [5]
    assert page["next_before"] == 5
    rest = address_history(service.ledger, A, before=page["next_before"], max_blocks=10)
    assert [t["height"] for t in rest["transactions"]] == [3, 1]


@pytest.mark.parametrize("query", ["?limit=0", "?limit=501", "?before=0", "?before=x"])
def test_bad_queries_are_422(client: NodeClient, query: str):
    with pytest.raises(NodeRejected) as info:
        client._request("GET", f"/v1/accounts/{A}/history{query}")
    assert info.value.status == 422


def test_a_bad_address_is_refused(client: NodeClient):
    with pytest.raises(NodeRejected) as info:
        client.history("cpc1nope")
    assert 400 <= info.value.status < 500

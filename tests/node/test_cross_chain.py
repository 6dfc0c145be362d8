"""Cross-chain replay against real nodes (SPEC 5 v1.1, issue 11 item 3).

Two nodes initialised without `--chain-id` share the chain id `hashcloud-local`; their
genesis differs (each node key is funded in its own genesis), so a transfer signed for one
must be refused by the other.
"""

from __future__ import annotations

import httpx
import pytest

from hashcloud.chain.tx import tx_to_json
from hashcloud.client.http import NodeClient
from tests.node.conftest import make_node_dir, start_node, transfer


@pytest.mark.timeout(120)
def test_transfer_signed_on_one_chain_is_refused_by_a_chain_with_the_same_id(tmp_path):
    a, b = make_node_dir(tmp_path / "a"), make_node_dir(tmp_path / "b")
    assert a.chain_id == b.chain_id == "hashcloud-local"
    assert a.domain != b.domain  # same id, other genesis
    node_a = start_node(a.path, tmp_path / "home-a")
    try:
        node_b = start_node(b.path, tmp_path / "home-b")
        try:
            with NodeClient(node_a.url, retries=0) as client:
                assert client.info().chain_domain() == a.domain  # what clients sign for
            body = tx_to_json(transfer(a, 0))  # the same funded key exists on both chains
            with httpx.Client(timeout=30) as http:
                assert http.post(f"{node_a.url}/v1/transactions", json=body).status_code == 200
                replay = http.post(f"{node_b.url}/v1/transactions", json=body)
                assert 400 <= replay.status_code < 500, replay.text
                assert "does not verify for chain hashcloud-local/" in replay.text
                assert b.domain.genesis in replay.text
                # The same key, signing for b's own chain, is accepted there.
                own = http.post(f"{node_b.url}/v1/transactions", json=tx_to_json(transfer(b, 0)))
                assert own.status_code == 200, own.text
        finally:
            node_b.stop()
    finally:
        node_a.stop()

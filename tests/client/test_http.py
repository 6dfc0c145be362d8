"""The node HTTP client (`client/http.py`) against a real HTTP server on 127.0.0.1: URL
checks, final 4xx refusals, retried 5xx/429 (Retry-After honoured), non-JSON answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hashcloud.chain.block import block_to_json
from hashcloud.chain.genesis import chain_domain, genesis_block
from hashcloud.chain.tx import make_transfer, tx_id, tx_to_json
from hashcloud.client.http import NodeClient
from hashcloud.crypto.keys import PrivateKey
from hashcloud.errors import InvalidOption, NodeError, NodeRejected
from hashcloud.node.config import init_data_dir


class _Script:
    """Answers the server gives, in order: (status, body, headers)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes, dict[str, str]]] = []
        self.requests: list[str] = []


@pytest.fixture
def server() -> Iterator[tuple[str, _Script]]:
    script = _Script()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            script.requests.append(self.path)
            status, body, headers = script.answers.pop(0)
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


ADDRESS = PrivateKey(0xB0B).public_key.address


def test_an_answer_of_the_wrong_shape_is_a_node_error(server):
    url, script = server
    script.answers = [(200, _json({"address": "cpc1x", "nonce": 7}), {})]
    with NodeClient(url, retries=0) as client, pytest.raises(NodeError, match="unexpected"):
        client.next_nonce(ADDRESS)


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8650", "ftp://x", "http://", "http://host:99999", "http://[::1"]
)
def test_malformed_node_urls_are_usage_errors(url):
    with pytest.raises(InvalidOption):
        NodeClient(url)


def test_a_4xx_is_final_and_carries_the_nodes_reason(server):
    url, script = server
    script.answers = [(404, _json({"detail": "unknown block 9"}), {})]
    with NodeClient(url, retries=3, backoff=0.01) as client, \
            pytest.raises(NodeRejected, match="unknown block 9") as exc:
        client.next_nonce("cpc1whatever")
    assert exc.value.status == 404 and len(script.requests) == 1


def test_5xx_and_429_are_retried_with_retry_after(server):
    url, script = server
    script.answers = [
        (503, _json({"detail": "store cannot write"}), {}),
        (429, _json({"detail": "slow down"}), {"Retry-After": "0.05"}),
        (200, _json({"address": ADDRESS, "nonce": 7}), {}),
    ]
    retries: list[tuple[str, int, float]] = []
    with NodeClient(url, retries=3, backoff=0.01,
                    on_retry=lambda *a: retries.append(a)) as client:
        assert client.next_nonce(ADDRESS) == 7
    assert [(r[1], r[2]) for r in retries] == [(1, 0.01), (2, 0.05)]
    assert "store cannot write" in retries[0][0] and "slow down" in retries[1][0]


def test_retries_run_out_with_a_clear_error(server):
    url, script = server
    script.answers = [(500, b"boom", {})] * 3
    with NodeClient(url, retries=2, backoff=0.01) as client, \
            pytest.raises(NodeError, match=r"node busy \(500\)"):
        client.next_nonce("cpc1x")
    assert len(script.requests) == 3


def test_a_non_json_answer_is_a_node_error(server):
    url, script = server
    script.answers = [(200, b"<html>proxy login</html>", {"Content-Type": "text/html"})]
    with NodeClient(url, retries=0) as client, pytest.raises(NodeError, match="non-JSON"):
        client.next_nonce("cpc1x")


def test_an_unreachable_node_is_a_node_error():
    with NodeClient("http://127.0.0.1:9", retries=1, backoff=0.01, timeout=2) as client, \
            pytest.raises(NodeError, match="cannot reach node"):
        client.next_nonce("cpc1x")


def test_blocks_are_checked_against_the_nodes_model_and_keep_newer_keys(server, tmp_path):
    """`block` checks the answer against `api.models.BlockJson` (the node's own response
    model) and returns the node's JSON whole: keys a newer node adds are kept, a
    transaction missing a field is a NodeError."""
    files = init_data_dir(tmp_path / "node")
    key = PrivateKey(0xA11CE)
    tx = make_transfer(key, ADDRESS, 5, 0, domain=chain_domain(files.genesis))
    blk = block_to_json(genesis_block(files.genesis))
    blk["transactions"] = [{"tx_id": tx_id(tx), **tx_to_json(tx), "memo": "newer"}]
    url, script = server
    broken = {**blk, "transactions": [{k: v for k, v in blk["transactions"][0].items()
                                       if k != "signature"}]}
    script.answers = [(200, _json({**blk, "size": 7}), {}), (200, _json(broken), {})]
    with NodeClient(url, retries=0) as client:
        got = client.block("latest")
        assert got["size"] == 7 and got["transactions"][0]["memo"] == "newer"
        with pytest.raises(NodeError, match="unexpected answer"):
            client.block("latest")

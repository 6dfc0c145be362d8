"""Disk errors and out-of-range input never become a 500 or a false answer (SPEC 6, 7).

A transaction whose journal write fails (ENOSPC, via /dev/full) is answered 503 and not kept;
a failed journal rewrite after a block keeps the block and block production going; a reveal
with an index beyond what the encoding carries is refused, not a 500.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hashcloud.chain.tx import tx_id, tx_to_json
from hashcloud.node.service import NodeService

from .conftest import NodeDir, transfer

needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


@needs_dev_full
def test_unjournaled_transaction_is_503_and_not_kept(api: TestClient, service: NodeService,
                                                     node_dir: NodeDir) -> None:
    journal = service.journal
    real, journal._fh = journal._fh, open("/dev/full", "ab")  # noqa: SIM115 - the log closes it
    tx = transfer(node_dir, 0)
    resp = api.post("/v1/transactions", json=tx_to_json(tx))
    real.close()
    assert resp.status_code == 503, resp.text
    assert "not accepted" in resp.json()["detail"]
    assert len(service.mempool) == 0
    assert service.produce_block() is None  # nothing was kept, so nothing is included
    again = api.post("/v1/transactions", json=tx_to_json(tx))  # the journal works again
    assert again.status_code == 200, again.text
    assert service.produce_block() is not None
    assert api.get(f"/v1/transactions/{tx_id(tx)}").json()["status"] == "included"


@needs_dev_full
def test_failed_journal_rewrite_keeps_the_block_and_production(
        api: TestClient, service: NodeService, node_dir: NodeDir) -> None:
    assert api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 0))).status_code == 200
    journal = service.journal
    real_path = journal.path
    journal.path = Path("/dev/full/journal")  # the rewrite's temp file cannot be created
    block = service.produce_block()
    journal.path = real_path
    assert block is not None and service.ledger.height == 1
    assert api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 1))).status_code == 200
    assert service.produce_block() is not None and service.ledger.height == 2


def test_reveal_index_beyond_the_encoding_is_refused_not_500(api: TestClient) -> None:
    body = {"samples": [{"index": 2**70, "leaf": "0x" + "ab" * 32, "proof": []}],
            "signature": "11" * 64}
    resp = api.post(f"/v1/challenges/{'ab' * 16}/reveal", json=body)
    assert 400 <= resp.status_code < 500, resp.text


def test_node_start_on_an_unusable_data_dir_is_a_usage_error(tmp_path: Path) -> None:
    """SPEC 7: unreadable input is exit 2 with one line, never a traceback."""
    from typer.testing import CliRunner

    from hashcloud.cli.main import app

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "h"), "node", "start",
                                      "--data-dir", str(blocker / "node"), "--port", "0"])
    assert result.exit_code == 2, result.output
    assert "cannot be used" in result.output and "Traceback" not in result.output

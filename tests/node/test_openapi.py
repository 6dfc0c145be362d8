"""`/openapi.json` tells the truth (issue 11 item 6; `node.openapi`).

First the document itself (one error model, the statuses of every route, Prometheus text,
path constraints, exact integer bounds), then answers checked against it in-process, then
schemathesis against a real node process on 127.0.0.1: every operation, the examples,
coverage, fuzzing and stateful phases, a bounded number of examples, every check
(schema-valid data accepted only where a fuzzer can make it: not on signed POST bodies,
`schemathesis.toml`). It must find no server error and no answer outside the document; the
number of generated test cases and failures is printed for the closing note (`pytest -s`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from hashcloud.chain.tx import tx_to_json
from hashcloud.node.app import create_app
from hashcloud.node.edge import EdgeSettings
from hashcloud.node.openapi import ADDRESS_PATTERN, ROUTE_ERRORS, truthful_openapi
from hashcloud.node.service import NodeService
from tests.node.conftest import NodeDir, cli_env, make_node_dir, open_client, start_node, transfer

HERE = Path(__file__).resolve().parent
EXAMPLES = 3  # per operation and phase (the coverage phase does not depend on it): ~1 min


@pytest.fixture
def spec(api: TestClient) -> dict[str, Any]:
    return api.get("/openapi.json").json()


def _operations(spec: dict[str, Any]):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def test_every_route_declares_its_errors(service: NodeService) -> None:
    app = create_app(service, produce_blocks=False)
    routes = {(m.lower(), r.path) for r in app.routes if isinstance(r, APIRoute)
              for m in r.methods}
    assert routes <= set(ROUTE_ERRORS), sorted(routes - set(ROUTE_ERRORS))


def test_one_error_model_for_every_error(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["ErrorBody"]["properties"]["detail"]["type"] == "string"
    for method, path, op in _operations(spec):
        assert (method, path) in ROUTE_ERRORS
        declared = {int(c) for c in op["responses"] if c[0] in "45"}
        assert declared == set(ROUTE_ERRORS[(method, path)]), (method, path)
        for code, response in op["responses"].items():
            if code[0] in "45":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, code)
            if code == "429":
                assert response["headers"]["Retry-After"]["required"] is True


def test_write_routes_document_refusals(spec: dict[str, Any]) -> None:
    for path in ("/v1/transactions", "/v1/challenges", "/v1/challenges/{challenge_id}/reveal"):
        codes = set(spec["paths"][path]["post"]["responses"])
        assert {"413", "422", "429", "503"} <= codes, path
    reveal = spec["paths"]["/v1/challenges/{challenge_id}/reveal"]["post"]["responses"]
    assert {"400", "403", "404", "409", "410"} <= set(reveal)


def test_metrics_are_declared_as_text(spec: dict[str, Any]) -> None:
    content = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]


def test_path_parameters_carry_their_constraints(spec: dict[str, Any]) -> None:
    def param(path: str, method: str = "get") -> dict:
        return spec["paths"][path][method]["parameters"][0]["schema"]

    assert param("/v1/accounts/{address}")["pattern"] == ADDRESS_PATTERN
    assert param("/v1/transactions/{txid}")["pattern"] == "^[0-9a-f]{64}$"
    assert param("/v1/blocks/{ref}")["pattern"].startswith("^(latest|")
    assert param("/v1/challenges/{challenge_id}/commit", "post")["pattern"] == \
        "^[0-9a-f]{32}$"


def test_transaction_body_is_declared(spec: dict[str, Any]) -> None:
    body = spec["paths"]["/v1/transactions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Transaction"}
    tx = spec["components"]["schemas"]["Transaction"]
    assert tx["additionalProperties"] is False
    assert tx["properties"]["from_address"]["pattern"] == ADDRESS_PATTERN
    assert tx["properties"]["gas_price"]["minimum"] == 1000


def test_integer_bounds_are_exact(spec: dict[str, Any]) -> None:
    nonce = spec["components"]["schemas"]["Transaction"]["properties"]["nonce"]
    assert nonce["exclusiveMaximum"] == 2**64 and isinstance(nonce["exclusiveMaximum"], int)
    assert truthful_openapi({"paths": {}, "x": {"type": "integer", "minimum": 0.0}})["x"] == {
        "type": "integer", "minimum": 0}


# ----------------------------------------------------------- answers match the document


def test_validation_error_matches_the_declared_model(api: TestClient) -> None:
    resp = api.post("/v1/challenges", json={"n": "x"})
    assert resp.status_code == 422
    assert set(resp.json()) == {"detail"} and isinstance(resp.json()["detail"], str)
    resp = api.get("/v1/accounts/not-an-address")
    assert resp.status_code == 422 and isinstance(resp.json()["detail"], str)


def test_metrics_answer_is_text(api: TestClient) -> None:
    resp = api.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain")


def test_block_ref_outside_the_pattern_is_refused(api: TestClient) -> None:
    for ref in ("nope", "-1", "1" * 20, "ab" * 31):
        assert api.get(f"/v1/blocks/{ref}").status_code == 404


def test_rate_limited_answer_has_retry_after(service: NodeService, node_dir: NodeDir) -> None:
    with open_client(service, edge=EdgeSettings(transactions_per_minute_per_ip=1)) as client:
        client.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 0)))
        resp = client.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 1)))
        assert resp.status_code == 429 and resp.headers["retry-after"].isdigit()
        assert set(resp.json()) == {"detail"}


# -------------------------------------------------------------------- schemathesis


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    pytest.importorskip("schemathesis")
    nd = make_node_dir(tmp_path / "node")
    limits = ("--ip-rate", "100000", "--worker-rate", "100000", "--tx-rate", "100000",
              "--reveal-rate", "100000")
    node = start_node(nd.path, tmp_path / "home", extra_args=limits)
    report = tmp_path / "schemathesis.json"
    try:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--no-color",
             "--config-file", str(HERE / "schemathesis.toml"), "run",
             f"{node.url}/openapi.json", "--max-examples", str(EXAMPLES), "--seed", "1",
             "--workers", "2", "--request-timeout", "20", "--report", "json",
             "--report-json-path", str(report)],
            capture_output=True, text=True, timeout=280, env=cli_env(), cwd=tmp_path)
        assert node.proc.poll() is None, node.stderr()
        answered = [line for line in httpx.get(f"{node.url}/metrics", timeout=10).text
                    .splitlines() if line.startswith("hc_http_responses_total ")]
        server_log = node.stderr()
    finally:
        node.stop()
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    print(f"\nschemathesis {result['schemathesis_version']}: {cases['generated']} test cases "
          f"({answered[0].split()[1]} HTTP requests answered by the node) "
          f"over {result['operations']['tested']} operations in "
          f"{result['running_time']:.0f} s, phases "
          f"{ {k: v['status'] for k, v in result['phases'].items()} }, "
          f"{cases['with_failures']} with failures, {len(result['errors'])} errors")
    assert run.returncode == 0, run.stdout[-6000:]
    assert result["failures"] == [] and result["errors"] == []
    assert result["operations"]["tested"] == result["operations"]["total"] >= 15
    assert result["phases"]["stateful"]["status"] == "success"
    assert cases["generated"] >= 300
    assert "internal error" not in server_log and "Traceback" not in server_log

"""The node's OpenAPI document, made to say what the API does (issue 11 item 6).

FastAPI derives `/openapi.json` from the route signatures, which leaves out what the node
adds around them. `install_openapi` post-processes the generated document once:

- one error model, `ErrorBody` `{"detail": str}`, for every error answer, 422 included
  (the node answers validation errors with one readable string, `types.describe_errors`,
  not FastAPI's array): FastAPI's `HTTPValidationError` is dropped;
- each operation lists the error statuses it can answer (`ROUTE_ERRORS`; a route missing
  from the table gets `DEFAULT_ERRORS` of its method), 429 with its `Retry-After` header;
- `/metrics` is Prometheus text, not JSON;
- path parameters carry the constraints the handlers enforce (`PATH_PATTERNS`: a value
  outside the pattern is refused with a 4xx), and address fields of the bodies the bech32
  shape of a `cpc1...` address (SPEC 5; the checksum itself is checked by the handler and
  named by the `cpc-address` format);
- integer bounds are exact integers again (FastAPI writes them as floats).

Every 2xx JSON answer is an `api.models` model given to its route (`response_model`, or for
`/v1/blocks/{ref}`, whose blocks are large, `responses=`: declared, held to it by the
tests): no answer is a free-form object.

`tests/node/test_openapi.py` runs schemathesis against a real node with this document:
no server error, no response outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from hashcloud.api.models import ErrorBody

__all__ = ["ADDRESS_PATTERN", "DEFAULT_ERRORS", "ROUTE_ERRORS", "install_openapi"]

#: A `cpc1...` address: hrp, separator, 32 data + 6 checksum bech32 characters (SPEC 5).
ADDRESS_PATTERN = r"^cpc1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{38}$"
#: The format name of addresses in the document (a client may register a generator).
ADDRESS_FORMAT = "cpc-address"
_ADDRESS_FIELDS = frozenset({"address", "worker_address", "from_address", "to_address",
                             "node_address"})

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Refused: a well-formed request the node will not act on (bad signature, wrong "
         "chain, malformed reveal shape, transaction rule).",
    403: "The reveal is not signed by the challenge's worker; the challenge stays open.",
    404: "No such challenge, transaction, block or route.",
    409: "Already done: a duplicate transaction or a challenge in the wrong state.",
    410: "The challenge's deadline has passed.",
    413: "The request body is larger than this route accepts.",
    422: "The request does not match the schema (the field and the problem are named), or "
         "for a reveal: the audit failed and the round is burned.",
    429: "Rate limited or the audit queue is full; retry after `Retry-After` seconds.",
    503: "The node cannot store the request now (disk full, producer unreachable); nothing "
         "was kept, retry later.",
}

_POST = (400, 404, 409, 410, 413, 422, 429, 503)
DEFAULT_ERRORS: dict[str, tuple[int, ...]] = {"get": (404, 422), "post": _POST}
"""Error statuses of a route missing from `ROUTE_ERRORS`, by method."""

ROUTE_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/v1/info"): (),
    ("get", "/v1/head"): (),
    ("get", "/v1/genesis"): (),
    ("get", "/metrics"): (),
    ("post", "/v1/challenges"): (400, 413, 422, 429, 503),
    ("post", "/v1/challenges/{challenge_id}/commit"): (400, 404, 409, 410, 413, 422, 429, 503),
    ("post", "/v1/challenges/{challenge_id}/reveal"): (400, 403, 404, 409, 410, 413, 422, 429,
                                                       503),
    ("post", "/v1/transactions"): (400, 409, 413, 422, 429, 503),
    ("post", "/v1/transactions/batch"): (400, 413, 422, 429, 503),
    ("get", "/v1/transactions/{txid}"): (404, 422),
    ("get", "/v1/blocks"): (404, 422),
    ("get", "/v1/blocks/{ref}"): (404,),
    ("get", "/v1/accounts/{address}"): (422,),
    ("get", "/v1/accounts/{address}/history"): (422,),
    ("get", "/v1/accounts/{address}/next-nonce"): (422,),
    ("get", "/v1/epoch"): (422,),
    ("get", "/v1/epochs/{number}"): (404, 422),
}
"""The error statuses each operation can answer (besides 2xx). Any route may also answer
413 to a body over the limit and 429 from a follower's producer; those are listed where a
client sends a body or where limits apply."""

PATH_PATTERNS: dict[str, str] = {
    "challenge_id": r"^[0-9a-f]{32}$",
    "txid": r"^[0-9a-f]{64}$",
    "ref": r"^(latest|[0-9]{1,19}|[0-9a-fA-F]{64})$",
    "address": ADDRESS_PATTERN,
}
"""Constraints of path parameters: a value outside the pattern gets a 4xx from the handler
(422 where FastAPI checks the type, 404 where the lookup finds nothing)."""

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_RETRY_AFTER = {"Retry-After": {
    "description": "Whole seconds after which a retry may succeed (RFC 9110).",
    "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def _error_response(status: int) -> dict[str, Any]:
    """The OpenAPI response object of one error status."""
    response: dict[str, Any] = {"description": ERROR_DESCRIPTIONS[status],
                                "content": {"application/json": {"schema": dict(_ERROR_REF)}}}
    if status == 429:
        response["headers"] = dict(_RETRY_AFTER)
    return response


def _fix_operation(method: str, path: str, op: dict[str, Any]) -> None:
    """Declare `op`'s errors and path constraints."""
    responses = op.setdefault("responses", {})
    for code in [c for c in responses if c.startswith(("4", "5"))]:
        del responses[code]  # FastAPI's 422 (HTTPValidationError) is not what we answer
    codes = ROUTE_ERRORS.get((method, path), DEFAULT_ERRORS.get(method, (422,)))
    for status in codes:
        responses[str(status)] = _error_response(status)
    for param in op.get("parameters", []):
        pattern = PATH_PATTERNS.get(param.get("name", ""))
        if param.get("in") == "path" and pattern is not None:
            param["schema"] = {**param.get("schema", {}), "type": "string", "pattern": pattern}
            if param["name"] == "address":
                param["schema"]["format"] = ADDRESS_FORMAT


def _constrain_addresses(schema: Any) -> None:
    """Give every address property of the component schemas the `cpc1...` shape."""
    if isinstance(schema, dict):
        for name, prop in schema.get("properties", {}).items():
            if name in _ADDRESS_FIELDS:
                for option in prop.get("anyOf", [prop]):
                    if option.get("type") == "string" and "pattern" not in option:
                        option.update(pattern=ADDRESS_PATTERN, format=ADDRESS_FORMAT)
        for value in schema.values():
            _constrain_addresses(value)
    elif isinstance(schema, list):
        for value in schema:
            _constrain_addresses(value)


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def _exact_integers(schema: Any) -> None:
    """Turn the bounds of integer schemas back into integers: FastAPI's OpenAPI model holds
    them as floats (`0.0`, `1.8446744073709552e+19`), which a client reading the document
    compares in floating point (2^64 + 382 would pass as below 2^64). The node's bounds are
    powers of two or small, so the float is exact."""
    if isinstance(schema, dict):
        if schema.get("type") == "integer":
            for key in _BOUNDS:
                value = schema.get(key)
                if isinstance(value, float) and value.is_integer():
                    schema[key] = int(value)
        for value in schema.values():
            _exact_integers(value)
    elif isinstance(schema, list):
        for value in schema:
            _exact_integers(value)


def truthful_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """Post-process FastAPI's generated document in place (module doc); returns it."""
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            _fix_operation(method, path, op)
    metrics = doc.get("paths", {}).get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["responses"]["200"] = {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}}}
    components["ErrorBody"] = ErrorBody.model_json_schema()
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _constrain_addresses(components)
    _exact_integers(doc)
    return doc


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and `/openapi.json`) serve `truthful_openapi` of FastAPI's own
    document, built once on first use."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = truthful_openapi(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

"""HTTP client of the node API (httpx), with retries and backoff for network errors.

4xx answers are final: they raise `NodeRejected` carrying the node's reason. Connection
errors, timeouts, 5xx and 429 are retried with exponential backoff (429 honours
Retry-After); `on_retry` is told about each retry so the CLI can say so.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from hashcloud.api.detail import error_detail
from hashcloud.api.models import (
    AccountInfo,
    BlockJson,
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    CommitResponse,
    HistoryPage,
    NextNonce,
    NodeInfo,
    RevealRequest,
    RevealResponse,
    TxStatus,
    TxSubmitResponse,
)
from hashcloud.chain.tx import Transaction, tx_to_json
from hashcloud.errors import InvalidOption, NodeError, NodeRejected
from hashcloud.types import describe_errors

M = TypeVar("M", bound=BaseModel)


RetryFn = Callable[[str, int, float], None]
"""Called as `on_retry(reason, attempt, delay_seconds)` before each retry."""

MAX_RETRY_DELAY = 30.0
"""Longest wait between two attempts of one request (seconds)."""


class Backoff:
    """Capped exponential backoff with jitter: `initial`, then doubling up to `cap` seconds,
    each delay drawn in [delay/2, delay] so that miners cut off by the same outage do not
    come back in lockstep. `reset` after a success."""

    def __init__(self, initial: float = 1.0, cap: float = MAX_RETRY_DELAY,
                 rng: random.Random | None = None) -> None:
        if not 0 < initial <= cap:
            raise InvalidOption(f"backoff needs 0 < initial ({initial}) <= cap ({cap})")
        self.initial, self.cap = initial, cap
        self.failures = 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        """The wait before the next attempt (and count one more failure)."""
        delay = min(self.cap, self.initial * 2 ** min(self.failures, 62))
        self.failures += 1
        return self.rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        """Back to `initial` after a success."""
        self.failures = 0


class NodeClient:
    """Typed calls to one node at `base_url`."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.5, on_retry: RetryFn | None = None,
                 max_delay: float = MAX_RETRY_DELAY) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InvalidOption(f"node URL must start with http:// or https://: {base_url!r}")
        try:
            url = httpx.URL(base_url)
            _ = url.port  # a bad port raises here
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidOption(f"invalid node URL {base_url!r}: {exc}") from None
        if not url.host:
            raise InvalidOption(f"node URL {base_url!r} has no host")
        if url.port is not None and not 0 < url.port < 65536:
            raise InvalidOption(f"node URL {base_url!r} has an invalid port")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.on_retry = on_retry
        self.max_delay = max_delay
        self.retry_until: float | None = None  # see `retrying_until`
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    @contextlib.contextmanager
    def retrying_until(self, deadline: float) -> Iterator[None]:
        """Inside the block, a request that cannot reach the node (or gets 5xx / 429) keeps
        being retried, at most `max_delay` apart, until unix time `deadline`, even past
        `retries`: a miner's round rides out a node restart while its challenge is still
        valid, instead of being abandoned after a few seconds."""
        previous, self.retry_until = self.retry_until, deadline
        try:
            yield
        finally:
            self.retry_until = previous

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, json: Any = None) -> Any:
        attempt = 0
        while True:
            try:
                resp = self.http.request(method, path, json=json)
            except httpx.HTTPError as exc:
                reason = f"cannot reach node at {self.base_url}: {type(exc).__name__}"
                delay = None
            else:
                if resp.status_code < 400:
                    try:
                        return resp.json()
                    except ValueError:
                        raise NodeError(f"node sent a non-JSON answer to {path}") from None
                detail = error_detail(resp.text, resp.reason_phrase)
                if resp.status_code == 429 or resp.status_code >= 500:
                    reason = f"node busy ({resp.status_code}): {detail}"
                    delay = _retry_after(resp)
                else:
                    raise NodeRejected(resp.status_code, detail)
            attempt += 1
            wait = min(self.max_delay, delay if delay is not None
                       else self.backoff * 2 ** min(attempt - 1, 62))
            if attempt > self.retries and (self.retry_until is None
                                           or time.time() + wait > self.retry_until):
                raise NodeError(reason)
            if self.on_retry is not None:
                self.on_retry(reason, attempt, wait)
            time.sleep(wait)

    def _get(self, model: type[M], method: str, path: str, json: Any = None, *,
             strict: bool | None = False) -> M:
        """Request and validate the answer as `model` (lax unless `strict` is None: then as
        the model's own config says); a wrong shape is a NodeError."""
        data = self._request(method, path, json)
        try:
            return model.model_validate(data, strict=strict)
        except ValidationError as exc:
            raise self._unexpected(path, exc.errors()) from None

    def _get_json(self, model: type[BaseModel], path: str, *,
                  strict: bool | None = False) -> dict[str, Any]:
        """`GET path` as the node's JSON, checked against `model` (the node's response model,
        `api.models`; a wrong shape is a NodeError) while keeping keys a newer node adds
        beyond it, for a caller that shows or passes on the whole object."""
        data = self._request("GET", path)
        try:
            model.model_validate(data, strict=strict)
        except ValidationError as exc:
            errors = [e for e in exc.errors() if e["type"] != "extra_forbidden"]
            if errors or not isinstance(data, dict):
                raise self._unexpected(path, errors or exc.errors()) from None
        return data  # a JSON object holding every field of `model`, well formed

    def _unexpected(self, path: str, errors: list[Any]) -> NodeError:
        """The NodeError of an answer to `path` that is not what the node API declares."""
        return NodeError(f"{self.base_url} sent an unexpected answer to {path}: "
                         f"{describe_errors(errors)}")

    def info(self) -> NodeInfo:
        """`GET /v1/info`."""
        return self._get(NodeInfo, "GET", "/v1/info")

    def request_challenge(self, req: ChallengeRequest) -> ChallengeResponse:
        """`POST /v1/challenges`."""
        return self._get(ChallengeResponse, "POST", "/v1/challenges", req.model_dump(mode="json"))

    def commit(self, challenge_id: str, req: CommitRequest) -> CommitResponse:
        """`POST /v1/challenges/{id}/commit`."""
        return self._get(CommitResponse, "POST", f"/v1/challenges/{challenge_id}/commit",
                         req.model_dump(mode="json"))

    def reveal(self, challenge_id: str, req: RevealRequest) -> RevealResponse:
        """`POST /v1/challenges/{id}/reveal` (idempotent on the node after acceptance)."""
        return self._get(RevealResponse, "POST", f"/v1/challenges/{challenge_id}/reveal",
                         req.model_dump(mode="json"))

    def submit_transaction(self, tx: Transaction) -> TxSubmitResponse:
        """`POST /v1/transactions`."""
        return self._get(TxSubmitResponse, "POST", "/v1/transactions", tx_to_json(tx))

    def tx_status(self, txid: str) -> TxStatus:
        """`GET /v1/transactions/{id}`."""
        return self._get(TxStatus, "GET", f"/v1/transactions/{txid}")

    def account(self, address: str) -> AccountInfo:
        """`GET /v1/accounts/{address}`."""
        return self._get(AccountInfo, "GET", f"/v1/accounts/{address}")

    def next_nonce(self, address: str) -> int:
        """The nonce for a new transaction from `address`."""
        return self._get(NextNonce, "GET", f"/v1/accounts/{address}/next-nonce").nonce

    def history(self, address: str, before: int | None = None, limit: int = 50) -> dict:
        """`GET /v1/accounts/{address}/history`: one page, newest first (SPEC 7 v1.1), as
        JSON checked strictly against `HistoryPage` (a wrong shape is a NodeError; keys a
        newer node adds are kept)."""
        params = f"?limit={limit}" + (f"&before={before}" if before is not None else "")
        return self._get_json(HistoryPage, f"/v1/accounts/{address}/history{params}",
                              strict=None)

    def block(self, ref: str) -> dict:
        """`GET /v1/blocks/{ref}` (SPEC 7 inspect-block JSON), checked against `BlockJson`
        (keys a newer node adds are kept)."""
        return self._get_json(BlockJson, f"/v1/blocks/{ref}")

    def wait_for_inclusion(self, txid: str, timeout: float = 60.0,
                           poll: float = 0.25) -> TxStatus:
        """Poll until `txid` is included (or dropped), raising NodeError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.tx_status(txid)
            if status.status == "included":
                return status
            if status.status.startswith("dropped"):
                raise NodeError(f"transaction {txid} was {status.status}")
            if time.monotonic() > deadline:
                raise NodeError(f"transaction {txid} not included after {timeout:.0f} s")
            time.sleep(poll)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

"""The node's HTTP API (FastAPI): versioned JSON routes, a WebSocket head feed, metrics.

Routes (all under `/v1`, OpenAPI at `/openapi.json`): `info`; `challenges` (issue),
`challenges/{id}/commit`, `challenges/{id}/reveal` (SPEC 3); `transactions` (submit) and
`transactions/{id}` (status); `blocks/{latest|height|hash}`; `accounts/{address}`;
`ws/heads` (WebSocket: one JSON message per new head). `/metrics` serves Prometheus text.

Errors: every HashCloudError becomes a 4xx `{"detail": ...}` (`http_status`, else 400);
a malformed body is 422; a body over `max_body` bytes is 413. Nothing a client sends can
produce a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import Body, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hashcloud.api.models import (
    AccountInfo,
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    CommitResponse,
    HeadInfo,
    NodeInfo,
    RevealRequest,
    RevealResponse,
    TxStatus,
    TxSubmitResponse,
)
from hashcloud.chain.tx import tx_from_json
from hashcloud.errors import (
    ChallengeExpired,
    ChallengeNotFound,
    ChallengeUsed,
    DuplicateTransaction,
    HashCloudError,
    MempoolFull,
    NotFound,
    RateLimited,
    ValidatorError,
)
from hashcloud.node.service import NodeService
from hashcloud.types import AddressStr, Hex32, describe_errors

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # 1 MiB: a full reveal of 256 samples is ~0.5 MB

HTTP_STATUS: tuple[tuple[type[HashCloudError], int], ...] = (
    (NotFound, 404),
    (ChallengeNotFound, 404),
    (ChallengeExpired, 410),
    (ChallengeUsed, 409),
    (DuplicateTransaction, 409),
    (RateLimited, 429),
    (MempoolFull, 429),
    (ValidatorError, 422),
)
"""The HTTP status of each error class (first match wins; anything else is 400). The core's
error tree knows nothing of HTTP: this table is the one place that maps it."""


def http_status(exc: HashCloudError) -> int:
    """The status code answering `exc` (see `HTTP_STATUS`)."""
    for cls, status in HTTP_STATUS:
        if isinstance(exc, cls):
            return status
    return 400


class BodyLimit:
    """ASGI middleware refusing request bodies larger than `limit` bytes with 413.

    A declared Content-Length over the limit is refused before reading; a chunked body is
    counted as it streams and refused with an HTTPException, which FastAPI's body parser
    passes through (a plain exception would become a 400)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                resp = JSONResponse({"detail": self.message}, status_code=413)
                await resp(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(status_code=413, detail=self.message)
            return msg

        await self.app(scope, limited, send)

    @property
    def message(self) -> str:
        """The 413 reason."""
        return f"request body larger than {self.limit} bytes"


class HeadFeed:
    """Fan-out of new heads to WebSocket subscribers (one bounded queue each)."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[dict]] = set()

    def publish(self, head: dict) -> None:
        """Queue `head` for every subscriber; slow subscribers drop old heads."""
        for q in list(self.queues):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(head)


def create_app(service: NodeService, *, produce_blocks: bool = True,
               max_body: int = MAX_BODY, block_time: float | None = None,
               close_on_shutdown: bool = False) -> FastAPI:
    """The FastAPI application of one node; blocks are produced every block time
    (`block_time` seconds overrides the genesis cadence for this node)."""
    feed = HeadFeed()

    async def producer() -> None:
        period = block_time or service.genesis.block_time_ms / 1000
        while True:
            await asyncio.sleep(period)
            try:
                block = await anyio.to_thread.run_sync(service.produce_block)
            except HashCloudError as exc:
                log.error("block production failed: %s", exc)
                continue
            if block is not None:
                feed.publish(service.head_info().model_dump())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(producer()) if produce_blocks else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if close_on_shutdown:
                # uvicorn re-raises SIGTERM after shutdown: close (persist) here, not later.
                await anyio.to_thread.run_sync(service.close)

    app = FastAPI(title="HashCloud node", version="1", lifespan=lifespan,
                  description="PoC validator and L1 chain node (HashCloud SPEC v1).")
    app.state.service = service
    app.state.feed = feed
    app.add_middleware(BodyLimit, limit=max_body)

    @app.exception_handler(HashCloudError)
    async def _hc_error(_: Request, exc: HashCloudError) -> JSONResponse:
        status = http_status(exc)
        retry = max(1, math.ceil(getattr(exc, "retry_after", 1)))  # RFC 9110: whole seconds
        headers = {"Retry-After": str(retry)} if status == 429 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover
        log.exception("internal error: %s", exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/v1/info", response_model=NodeInfo)
    def info() -> NodeInfo:
        """Chain id, genesis hash, node public key and head."""
        return service.info()

    @app.post("/v1/challenges", response_model=ChallengeResponse)
    def challenges(req: ChallengeRequest, request: Request) -> ChallengeResponse:
        """Issue a challenge to the signing worker (SPEC 3)."""
        ip = request.client.host if request.client else "unknown"
        return service.issue_challenge(req, ip)

    @app.post("/v1/challenges/{challenge_id}/commit", response_model=CommitResponse)
    def commit(challenge_id: str, req: CommitRequest) -> CommitResponse:
        """Commit `{loops, compute_time, merkle_root, device}`; get the sample indices."""
        return service.commit(challenge_id, req)

    @app.post("/v1/challenges/{challenge_id}/reveal", response_model=RevealResponse)
    def reveal(challenge_id: str, req: RevealRequest) -> RevealResponse:
        """Reveal the samples; the audit runs in a worker thread, off the event loop."""
        return service.reveal(challenge_id, req)

    @app.post("/v1/transactions", response_model=TxSubmitResponse)
    def submit(body: dict[str, Any] = Body(...)) -> TxSubmitResponse:  # noqa: B008
        """Submit a signed transaction (validated on entry, journaled before the answer)."""
        txid = service.submit_transaction(tx_from_json(body))
        return TxSubmitResponse(tx_id=txid, status="pending")

    @app.get("/v1/transactions/{txid}", response_model=TxStatus)
    def tx_status(txid: Hex32) -> TxStatus:
        """Pending, included (height, index, block hash) or dropped."""
        return service.tx_status(txid)

    @app.get("/v1/blocks/{ref}")
    def block(ref: str) -> dict:
        """SPEC 7 inspect-block JSON of `latest`, a height or a block hash."""
        return service.block(ref)

    @app.get("/v1/accounts/{address}", response_model=AccountInfo)
    def account(address: AddressStr) -> AccountInfo:
        """Balance and nonce at the head."""
        return service.account(address)

    @app.get("/v1/accounts/{address}/next-nonce")
    def next_nonce(address: AddressStr) -> dict:
        """The nonce a new transaction from `address` must use (pending ones counted)."""
        return {"address": address, "nonce": service.pending_nonce(address)}

    @app.get("/v1/head", response_model=HeadInfo)
    def head() -> HeadInfo:
        """The current head."""
        return service.head_info()

    @app.websocket("/v1/ws/heads")
    async def ws_heads(ws: WebSocket) -> None:
        """Push `{height, hash, timestamp}` on every new head, starting with the current."""
        await ws.accept()
        q: asyncio.Queue[dict] = asyncio.Queue(maxsize=16)
        feed.queues.add(q)

        async def send_heads() -> None:
            await ws.send_json(service.head_info().model_dump())
            while True:
                await ws.send_json(await q.get())

        async def until_disconnect() -> None:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass

        tasks = {asyncio.create_task(send_heads()), asyncio.create_task(until_disconnect())}
        try:
            # Whichever ends first (client gone, send failed) ends the connection.
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect,
                                         RuntimeError):
                    await t
        finally:
            feed.queues.discard(q)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus metrics."""
        service.metrics.mempool.set(len(service.mempool))
        return Response(generate_latest(service.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    return app

"""The node's HTTP API (FastAPI): versioned JSON routes, a WebSocket head feed, metrics.

Routes (all under `/v1`, OpenAPI at `/openapi.json`): `info`; `challenges` (issue),
`challenges/{id}/commit`, `challenges/{id}/reveal` (SPEC 3); `transactions` (submit) and
`transactions/{id}` (status); `blocks/{latest|height|hash}`; `accounts/{address}`,
`accounts/{address}/history` (newest first, paged);
`ws/heads` (WebSocket: one JSON message per new head). `/metrics` serves Prometheus text.
For followers and throughput (issue 12): `genesis` (the genesis document), `blocks?from=H&
limit=N` (stored blocks as canonical bytes, bounded: `node.sync`), `transactions/batch`
(many transactions, one fsync; charged its transaction count against the client's
transaction rate, `node.edge`). Every JSON answer has its `api.models` model, so
`/openapi.json` declares each field (`node.openapi`). A follower (`node.follower`) serves
the same routes, relays the writes to its producer (its 4xx passed through unchanged,
`NodeRejected`; unreachable: 503 `ProducerUnavailable`) and runs its sync loop as a
background task (`tasks`).

Errors: every HashCloudError becomes a 4xx `{"detail": ...}` (`http_status`, else 400);
a malformed body is 422; a body over its route's limit is 413. Nothing a client sends can
produce a 500; a journal the node cannot write is a 503 (`StorageUnavailable`: the request
was undone, retry later). A reveal's answer tells the miner where its round stands:
403 (not the worker's signature) and 400 (malformed: wrong indices or shape) leave the
challenge open until its deadline; 422 is a failed audit, the round is burned.

Body limits (`BodyLimit`, checked before the body is read, so no oversized body is ever
parsed on the event loop): `max_body` (1 MiB) everywhere but the reveal route. The reveal of
`/v1/challenges/{id}/reveal` is sized per challenge: the largest legal reveal of that
challenge (`PocValidator.largest_reveal`: its `s` samples with full audit paths, plus the
outputs of the plan's audited samples in a row audit) plus `REVEAL_SLACK`, capped at
`reveal_body_limit` of the node's `max_n` and `s_max`; a challenge with no reveal to accept
(unknown, uncommitted, finished, past its deadline) gets `max_body`, since its reveal is
refused anyway. An output on a sample the plan does not audit is legal but not budgeted
beyond the slack.

Single submissions (`POST /v1/transactions`, the hot write route): an async route that runs
the service call on `intake.SubmitThreads` (one cheap hand-off, not the two anyio ones of a
sync route with a response model).

Worker threads: FastAPI runs the sync routes in anyio's default thread pool (40 threads).
A reveal waiting for an audit slot holds its thread, so at start-up the pool is raised to
`audit slots + audit queue + THREAD_MARGIN` (`worker_threads`): with every audit place taken
by a waiting reveal, `THREAD_MARGIN` threads are still free for challenges, commits and the
other routes.

The client address the validator charges (rate limits, failed audits) is the socket peer,
`request.client.host`; `node.server` lets uvicorn rewrite it from X-Forwarded-For only for
the proxies the operator names (SPEC 3 v1.1 "Abuse bounds").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import anyio
from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hashcloud.api.models import (
    MAX_SAMPLES,
    AccountInfo,
    BlockJson,
    BlockRange,
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    CommitResponse,
    EpochView,
    HeadInfo,
    HistoryPage,
    NextNonce,
    NodeInfo,
    OpenEpoch,
    RevealRequest,
    RevealResponse,
    TxBatchRequest,
    TxBatchResponse,
    TxStatus,
    TxSubmitResponse,
)
from hashcloud.chain.genesis import Genesis
from hashcloud.chain.tx import Transaction
from hashcloud.errors import (
    ChallengeExpired,
    ChallengeNotFound,
    ChallengeUsed,
    DuplicateTransaction,
    HashCloudError,
    MalformedReveal,
    MempoolFull,
    NodeRejected,
    NotFound,
    ProducerUnavailable,
    RateLimited,
    RevealUnauthorized,
    StorageUnavailable,
    ValidatorError,
)
from hashcloud.node.config import ValidatorConfig
from hashcloud.node.edge import (
    DEFAULT_EDGE_SETTINGS,
    EdgeSettings,
    WriteRateLimit,
    client_ip,
    retry_after_header,
)
from hashcloud.node.intake import SubmitThreads
from hashcloud.node.openapi import ADDRESS_PATTERN, install_openapi
from hashcloud.node.service import NodeService
from hashcloud.node.sync import DEFAULT_RANGE_BLOCKS, MAX_RANGE_BLOCKS, block_range
from hashcloud.node.validator import reveal_json_bound
from hashcloud.params import DEFAULT_EPOCH_ROWS, MAX_EPOCH_ROWS, MAX_LOOPS
from hashcloud.types import AddressStr, Hex32, describe_errors

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
"""Body limit of every route but the reveal (1 MiB: a transaction or a commitment is tiny)."""

REVEAL_SLACK = MAX_BODY
"""Added to a challenge's largest legal reveal (whitespace, formatting, an unaudited output
or two): the reveal route's limit for a committed challenge."""

THREAD_MARGIN = 40
"""Worker threads kept for the other routes beyond the audit places (anyio's own default)."""

#: The paging parameters of the epoch views (`chain.rewards.epoch_view`).
EPOCH_AFTER = Query(None, pattern=ADDRESS_PATTERN,
                    description="The page starts after this payout address (`next_after`).")
EPOCH_LIMIT = Query(DEFAULT_EPOCH_ROWS, ge=1, le=MAX_EPOCH_ROWS,
                    description="Most rows in the page.")

#: The reveal route (its challenge id is group 1): its body limit is sized per challenge.
_REVEAL_PATH = re.compile(r"^/v1/challenges/([^/]+)/reveal$")


def worker_threads(config: ValidatorConfig) -> int:
    """anyio worker threads a node needs: one per audit place (slots + queue: a reveal waiting
    for a slot holds its thread) plus `THREAD_MARGIN` for everything else."""
    return config.effective_audit_slots + config.effective_audit_queue + THREAD_MARGIN


def reveal_body_limit(max_n: int, s_max: int) -> int:
    """The cap on the reveal route's body limit: the largest legal reveal for a node issuing
    `n <= max_n` with at most `s_max` samples (SPEC 3 v1.1), plus `MAX_BODY` of slack
    (whitespace, the signature). The limit of one challenge is usually far smaller
    (`PocValidator.largest_reveal` + `REVEAL_SLACK`).

    A reveal holds `s <= min(s_max, MAX_SAMPLES)` samples and, in a row audit, the whole
    output of each audited one: `8n` bytes as "0x" hex, 16n + 4 JSON characters (64 KiB at
    n = 4096). The adaptive policy may audit every sample (`m = s`), and an output is allowed
    on any sample, so every sample is counted with an output: 256 samples at n = 4096 come
    to about 17 MiB. Anything larger cannot be a legal reveal. The bound is the validator's
    own `reveal_json_bound` at its worst case (a tree of `MAX_LOOPS` leaves)."""
    samples = min(s_max, MAX_SAMPLES)
    return MAX_BODY + reveal_json_bound(MAX_LOOPS, samples, max_n, samples)

HTTP_STATUS: tuple[tuple[type[HashCloudError], int], ...] = (
    (NotFound, 404),
    (ChallengeNotFound, 404),
    (ChallengeExpired, 410),
    (ChallengeUsed, 409),
    (RevealUnauthorized, 403),
    (MalformedReveal, 400),
    (DuplicateTransaction, 409),
    (RateLimited, 429),
    (MempoolFull, 429),
    (StorageUnavailable, 503),
    (ProducerUnavailable, 503),
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


def error_response(exc: HashCloudError) -> JSONResponse:
    """The answer to `exc`: `{"detail": ...}` with `http_status` (429 with Retry-After in
    whole seconds, RFC 9110); a follower passes its producer's refusal (`NodeRejected`)
    through unchanged (`node.follower`)."""
    if isinstance(exc, NodeRejected):
        status, detail = exc.status, exc.detail
    else:
        status, detail = http_status(exc), str(exc)
    headers = ({"Retry-After": retry_after_header(getattr(exc, "retry_after", None) or 1)}
               if status == 429 else None)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware refusing request bodies larger than `limit` bytes with 413 (the reveal
    route of challenge `id`: `reveal_limit(id)` bytes, default `limit`).

    A declared Content-Length over the limit is refused before reading; a chunked body is
    counted as it streams and refused with an HTTPException, which FastAPI's body parser
    passes through (a plain exception would become a 400)."""

    def __init__(self, app: ASGIApp, limit: int,
                 reveal_limit: Callable[[str], int] | None = None) -> None:
        """Wrap `app` with the limits."""
        self.app, self.limit = app, limit
        self.reveal_limit = reveal_limit

    def limit_for(self, path: str) -> int:
        """The body limit of the route at `path` (asked afresh for each request)."""
        match = _REVEAL_PATH.match(path)
        if match is None or self.reveal_limit is None:
            return self.limit
        return self.reveal_limit(match.group(1))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an oversized body, else pass the request on with its body counted."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                resp = JSONResponse({"detail": self.message(limit)}, status_code=413)
                await resp(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise HTTPException(status_code=413, detail=self.message(limit))
            return msg

        await self.app(scope, limited, send)

    @staticmethod
    def message(limit: int) -> str:
        """The 413 reason."""
        return f"request body larger than {limit} bytes"


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


BackgroundTask = Callable[[Callable[[dict], None]], Awaitable[None]]
"""A coroutine the app runs for its whole life, given the head feed's `publish` (a follower's
sync loop, `node.follower.follower_task`)."""


def create_app(service: NodeService, *, produce_blocks: bool = True,
               max_body: int = MAX_BODY, reveal_body: int | None = None,
               block_time: float | None = None, close_on_shutdown: bool = False,
               tasks: Sequence[BackgroundTask] = (),
               edge: EdgeSettings = DEFAULT_EDGE_SETTINGS) -> FastAPI:
    """The FastAPI application of one node; blocks are produced every block time
    (`block_time` seconds overrides the genesis cadence for this node). `reveal_body` caps
    the reveal route's per-challenge body limit (default: `reveal_body_limit` of the
    validator's `max_n` and `s_max`). `tasks` run beside the server (a follower: its sync
    loop, with `produce_blocks=False`) and are cancelled before the service closes. `edge`
    sets the per-client rate limits of transactions and reveals (`node.edge`, 429 before
    the body is read); `/openapi.json` is `node.openapi`'s truthful document."""
    cfg = service.validator.config
    reveal_cap = reveal_body_limit(cfg.max_n, cfg.s_max) if reveal_body is None else reveal_body
    feed = HeadFeed()
    submits = SubmitThreads()

    async def submit_one(tx: Transaction) -> Response:
        # Journaled (fsynced) before the answer.
        try:
            txid = await submits.run(service.submit_transaction, tx)
        except HashCloudError as exc:
            return error_response(exc)
        body = TxSubmitResponse(tx_id=txid, status="pending").model_dump_json()
        return Response(body, media_type="application/json")

    def reveal_limit(challenge_id: str) -> int:
        if service.relays_poc:  # a follower relays reveals: its producer sizes them exactly
            return reveal_cap
        size = service.validator.largest_reveal(challenge_id)
        return max_body if size is None else min(reveal_cap, size + REVEAL_SLACK)

    async def producer() -> None:
        period = block_time or service.genesis.block_time_ms / 1000
        while True:
            await asyncio.sleep(period)
            try:
                block = await anyio.to_thread.run_sync(service.produce_block)
            except HashCloudError as exc:
                log.error("block production failed: %s", exc)
                continue
            except Exception:  # never let the producer die silently: log, retry next period
                log.exception("block production failed")
                continue
            if block is not None:
                feed.publish(service.head_info().model_dump())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Reveals waiting for an audit slot must not take every thread (module doc).
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, worker_threads(cfg))
        task = asyncio.create_task(producer()) if produce_blocks else None
        background = [asyncio.create_task(run(feed.publish)) for run in tasks]
        try:
            yield
        finally:
            for extra in background:
                extra.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await extra
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await anyio.to_thread.run_sync(submits.close)  # no submission left mid-journal
            if close_on_shutdown:
                # uvicorn re-raises SIGTERM after shutdown: close (persist) here, not later.
                await anyio.to_thread.run_sync(service.close)

    # No OpenTelemetry (the node's metrics are Prometheus, `/metrics`): FastAPI's native
    # telemetry would otherwise look up its providers on every request.
    app = FastAPI(title="HashCloud node", version="1", lifespan=lifespan,
                  description="PoC validator and L1 chain node (HashCloud SPEC v1).",
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.service = service
    app.state.feed = feed
    app.add_middleware(BodyLimit, limit=max_body, reveal_limit=reveal_limit)
    write_limits = edge.write_limits()  # the middleware's and the batch route's windows
    app.add_middleware(WriteRateLimit, limits=write_limits)  # outermost: first
    install_openapi(app)

    @app.exception_handler(HashCloudError)
    async def _hc_error(_: Request, exc: HashCloudError) -> JSONResponse:
        return error_response(exc)  # a follower's NodeRejected included

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
    def reveal(challenge_id: str, req: RevealRequest, request: Request) -> RevealResponse:
        """Reveal the signed samples (SPEC 3 v1.1); the audit runs in a worker thread, off
        the event loop. A failed audit counts against the socket peer too. 403 / 400 leave
        the challenge open, 422 burns it (module doc)."""
        ip = request.client.host if request.client else "unknown"
        return service.reveal(challenge_id, req, ip)

    @app.post("/v1/transactions", response_model=TxSubmitResponse)
    async def submit(tx: Transaction) -> Response:
        """Submit a signed transaction (validated on entry, journaled before the answer). A
        body that is no transaction is a 422 like any other malformed body."""
        return await submit_one(tx)

    @app.post("/v1/transactions/batch", response_model=TxBatchResponse)
    def submit_batch(req: TxBatchRequest, request: Request) -> TxBatchResponse:
        """Submit up to `api.models.MAX_BATCH` signed transactions in one request: each is
        validated and journaled as by `POST /v1/transactions`, the journal fsynced once for
        the batch before the answer; one result per transaction, in order. The batch is
        charged its transaction count against the client's transaction rate before any
        signature is checked (429 with Retry-After for the whole batch when the window lacks
        room, `node.edge`)."""
        write_limits.take_transactions(client_ip(request.scope), len(req.transactions),
                                       time.time())
        return service.submit_batch(req.transactions, http_status)

    @app.get("/v1/transactions/{txid}", response_model=TxStatus)
    def tx_status(txid: Hex32) -> TxStatus:
        """Pending, included (height, index, block hash) or dropped."""
        return service.tx_status(txid)

    @app.get("/v1/blocks", response_model=BlockRange)
    def blocks(start: int = Query(alias="from", ge=0, lt=2**63),
               limit: int = Query(DEFAULT_RANGE_BLOCKS, ge=1, le=MAX_RANGE_BLOCKS)
               ) -> BlockRange:
        """Consecutive stored blocks from height `from` (canonical bytes as hex, bounded in
        count and size; `node.sync`): what followers catch up with."""
        return block_range(service.ledger, service.head_info(), start, limit)

    @app.get("/v1/genesis", response_model=Genesis)
    def genesis() -> Genesis:
        """The genesis document (its hash is `/v1/info`'s `genesis_hash`): a new follower's
        starting point."""
        return service.genesis

    @app.get("/v1/blocks/{ref}", response_model=None,
             responses={200: {"model": BlockJson, "description": "Successful Response"}})
    def block(ref: str) -> dict:
        """SPEC 7 inspect-block JSON of `latest`, a height or a hash (`BlockJson`, declared
        but not re-validated per request: a block holds up to 5,000 transactions; the tests
        hold the answer to the model)."""
        return service.block(ref)

    @app.get("/v1/accounts/{address}", response_model=AccountInfo)
    def account(address: AddressStr) -> AccountInfo:
        """Balance and nonce at the head."""
        return service.account(address)

    @app.get("/v1/epoch", response_model=OpenEpoch)
    def current_epoch(after: str | None = EPOCH_AFTER, limit: int = EPOCH_LIMIT) -> dict:
        """The open epoch (SPEC 6 v1.1): pool so far, projected pool, pending work and
        estimated payouts per payout address (one page of rows, `next_after` continues)."""
        return service.epoch(None, after, limit)

    @app.get("/v1/epochs/{number}", response_model=EpochView)
    def epoch(number: int, after: str | None = EPOCH_AFTER, limit: int = EPOCH_LIMIT) -> dict:
        """Epoch `number`: closed (pool, total work, payouts per address) or open (pending
        work), one page of rows; 404 for an epoch that has not started."""
        return service.epoch(number, after, limit)

    @app.get("/v1/accounts/{address}/history", response_model=HistoryPage)
    def history(address: AddressStr, before: int | None = Query(None, ge=1, lt=2**63),
                limit: int = Query(50, ge=1, le=500)) -> dict:
        """Transactions from or to `address`, newest first, one bounded page per call
        (SPEC 7 v1.1 `history`; `next_before` continues the walk, null at genesis)."""
        return service.history(address, before, limit)

    @app.get("/v1/accounts/{address}/next-nonce", response_model=NextNonce)
    def next_nonce(address: AddressStr) -> NextNonce:
        """The nonce a new transaction from `address` must use (pending ones counted)."""
        return NextNonce(address=address, nonce=service.pending_nonce(address))

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

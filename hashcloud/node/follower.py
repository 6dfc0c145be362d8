"""Follower nodes: re-validate a producer's chain, serve it, relay writes (SPEC 6, 7 v1.1).

`hashcloud node start --follow URL` runs a node that makes no blocks. On an empty data dir it
fetches the producer's genesis (`GET /v1/genesis`; pinned by `--genesis-hash` when given, a
mismatch refuses to start), creates its own node key (or uses `DATA_DIR/keys/node.json` if
one is there) and writes `genesis.json`; on later starts it resumes from its own store.

Sync (`Follower.run`, an asyncio task of the node's app):
- catch-up in ranges (`GET /v1/blocks?from=H&limit=N`, `node.sync`), every block decoded
  from the producer's stored bytes and applied with `Ledger.add_blocks`, i.e. the same
  `apply_block` the producer ran when it built the block (signatures, nonces, balances,
  receipts, roots, the proposer's authority, the timestamp against this node's clock);
- then new heads: the producer's WebSocket head feed (`/v1/ws/heads`) wakes the loop at once,
  and `GET /v1/head` is polled anyway (every `poll_seconds` while the feed is down, every
  `FEED_POLL_SECONDS` while it is up), so a lost feed only slows the follower down;
- connection errors, timeouts and 5xx answers are retried with capped exponential backoff
  (`BACKOFF_MIN` .. `BACKOFF_MAX` seconds): a producer restart is ridden out;
- a producer that serves a block that does not decode, hash or validate, a block that does
  not extend this node's chain, a head that conflicts with a block this node accepted, or
  another genesis, is refused: the follower stops following, logs the reason at ERROR and
  shows it in `/v1/info` (`follow.state = "refused"`, `follow.reason`). It never rewrites or
  rolls back an accepted block; it keeps serving what it has. A verdict on the producer's
  chain (`ProducerChainRefused`) is recorded on disk first (`node.refusal`), so a restart
  does not follow (or relay to) that producer again until the operator clears it (`node
  start --follow URL --reconsider`); a record naming another producer URL is not applied
  (that producer's blocks are checked afresh). Other refusals (a 4xx, a malformed answer)
  last one run.

`FollowerService` is a `NodeService` whose writes go to the producer (`Relay`, httpx with
timeouts): transactions (single and batch), next-nonce and pending transaction status, and
the PoC requests (challenge, commit, reveal). The producer's 4xx answer is passed through
unchanged (`NodeRejected`: same status and detail); an unreachable producer, a 5xx, a
refused producer, or an answer whose shape this node does not understand is a 503
(`ProducerUnavailable`) naming the reason. Answers are read by one rule (`parse_relayed`):
unknown top-level keys are dropped (a newer producer may add fields), nested protocol records
stay strict. The client's address goes along as `X-Forwarded-For` (the producer believes it
only from a proxy its operator trusts, `node start --trusted-proxy`).

A follower whose node key is one of the genesis `validators` is a PoC validator itself
(SPEC 3, 6): it issues challenges bound to its own head, audits reveals and signs receipts
locally with its key; the miner's SUBMIT_RESULT claim carrying that receipt is relayed to the
producer like any transaction, and the chain checks the receipt's signer against genesis and
de-duplicates the task on chain, so validators share no state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from hashcloud.api.detail import error_detail
from hashcloud.api.models import (
    BlockRange,
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    CommitResponse,
    FollowInfo,
    HeadInfo,
    NextNonce,
    NodeInfo,
    RevealRequest,
    RevealResponse,
    TxBatchResponse,
    TxStatus,
)
from hashcloud.chain.block import Block, block_hash
from hashcloud.chain.genesis import Genesis, genesis_hash, load_genesis, write_genesis
from hashcloud.chain.transition import MAX_FUTURE_DRIFT_MS
from hashcloud.chain.tx import Transaction, tx_id, tx_to_json
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.keystore import Keystore
from hashcloud.errors import (
    FollowRefused,
    HashCloudError,
    InvalidBlock,
    InvalidOption,
    NodeError,
    NodeRejected,
    NotFound,
    ProducerChainRefused,
    ProducerUnavailable,
    StoreError,
)
from hashcloud.node.config import (
    DEFAULT_VALIDATOR_CONFIG,
    NODE_KEY_NAME,
    NodeFiles,
    ValidatorConfig,
    genesis_path,
    is_initialised,
)
from hashcloud.node.intake import prevalidate
from hashcloud.node.refusal import UNKNOWN_PRODUCER, Refusal, load_refusal, record_refusal
from hashcloud.node.service import NodeService
from hashcloud.node.sync import DEFAULT_RANGE_BLOCKS, decode_range
from hashcloud.types import AddressStr, PublicKeyBytes, describe_validation_error

log = logging.getLogger(__name__)

__all__ = ["Follower", "FollowerService", "Relay", "fetch_genesis", "open_follower_dir",
           "parse_relayed"]

BACKOFF_MIN = 0.25
"""First retry delay (s) after the producer could not be reached."""
BACKOFF_MAX = 8.0
"""Longest retry delay (s): a restarted producer is noticed within this."""
FEED_POLL_SECONDS = 5.0
"""Head poll period while the WebSocket feed is up (the feed wakes the loop sooner)."""
RELAY_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Relayed requests: connect within 5 s, answer within 30 s."""
REVEAL_TIMEOUT = httpx.Timeout(300.0, connect=5.0)
"""A relayed reveal waits for the producer's audit (a full audit at large n takes minutes)."""
SYNC_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
"""Sync requests (ranges, head, info)."""

HeadSink = Callable[[dict], None]
"""Told `{height, hash, timestamp}` after each imported range (the node's own head feed)."""

M = TypeVar("M", bound=BaseModel)


# ------------------------------------------------------------------ set-up


def _get_json(url: str, path: str, timeout: float, client: httpx.Client | None = None) -> Any:
    """GET `url + path` as JSON (through `client` when given), raising NodeError."""
    try:
        resp = (client.get(url.rstrip("/") + path) if client is not None
                else httpx.get(url.rstrip("/") + path, timeout=timeout))
    except httpx.HTTPError as exc:
        raise NodeError(f"cannot reach the producer at {url}: {type(exc).__name__}") from None
    if resp.status_code != 200:
        raise NodeError(f"the producer at {url} answered {path} with {resp.status_code}")
    try:
        return resp.json()
    except ValueError:
        raise NodeError(f"the producer at {url} sent a non-JSON answer to {path}") from None


def check_url(url: str) -> str:
    """`url` without a trailing slash, or InvalidOption (CLI exit 2) if it is no http(s) URL."""
    if not url.startswith(("http://", "https://")):
        raise InvalidOption(f"--follow takes an http:// or https:// URL, got {url!r}")
    try:
        if not httpx.URL(url).host:
            raise InvalidOption(f"--follow URL {url!r} has no host")
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidOption(f"invalid --follow URL {url!r}: {exc}") from None
    return url.rstrip("/")


def fetch_genesis(url: str, expected_hash: str | None = None, *,
                  timeout: float = 10.0, client: httpx.Client | None = None) -> Genesis:
    """The producer's genesis (`GET /v1/genesis`), validated strictly and checked against the
    hash the producer announces in `/v1/info` and against `expected_hash` when given
    (FollowRefused on a mismatch). `client` replaces the network (tests)."""
    raw = _get_json(url, "/v1/genesis", timeout, client)
    try:
        genesis = Genesis.model_validate(raw)
    except ValidationError as exc:
        raise FollowRefused(f"the producer's genesis is invalid: "
                            f"{describe_validation_error(exc)}") from None
    digest = genesis_hash(genesis)
    info = _get_json(url, "/v1/info", timeout, client)
    if not isinstance(info, dict):
        raise FollowRefused("the producer's /v1/info is not a JSON object")
    announced = info.get("genesis_hash")
    if announced != digest:
        raise FollowRefused(f"the producer's genesis hashes to {digest}, but it announces "
                            f"{announced}")
    if expected_hash is not None and expected_hash.lower() != digest:
        raise FollowRefused(f"the producer's genesis is {digest}, not the pinned "
                            f"{expected_hash.lower()}")
    return genesis


def open_follower_dir(data_dir: Path, url: str, expected_hash: str | None = None,
                      *, fetch: Callable[..., Genesis] = fetch_genesis,
                      passphrase: str | None = None) -> tuple[NodeFiles, bool]:
    """The follower's data dir, initialised from the producer's genesis when it has none:
    `(files, created)`. An existing dir keeps its genesis (which must match `expected_hash`
    when given); the node key is `keys/node.json` (`passphrase` unlocks an encrypted one),
    created if absent."""
    data_dir = Path(data_dir)
    if is_initialised(data_dir):
        genesis = load_genesis(genesis_path(data_dir))
        digest = genesis_hash(genesis)
        if expected_hash is not None and expected_hash.lower() != digest:
            raise FollowRefused(f"{data_dir} holds genesis {digest}, not the pinned "
                                f"{expected_hash.lower()}")
        created = False
    else:
        genesis = fetch(url, expected_hash)
        created = True
    ks = Keystore(data_dir)
    if ks.exists(NODE_KEY_NAME):
        key = ks.load(NODE_KEY_NAME, passphrase)
    else:
        key = PrivateKey.generate()
        ks.create(NODE_KEY_NAME, key)
    if created:  # genesis.json last: it marks the dir initialised
        write_genesis(genesis_path(data_dir), genesis)
    return NodeFiles(data_dir, genesis, key), created


# ------------------------------------------------------------------ relay


def known_fields(model: type[BaseModel], raw: Any) -> Any:
    """`raw` with the top-level keys `model` does not know dropped (a newer producer may add
    fields to an answer; nested protocol records stay strict: see `parse_relayed`)."""
    if isinstance(raw, dict):
        return {k: v for k, v in raw.items() if k in model.model_fields}
    return raw


def parse_relayed(model: type[M], raw: Any, what: str) -> M:
    """The producer's answer `raw` (to `what`, e.g. `GET /v1/head`) as `model`; a shape this
    node does not understand is ProducerUnavailable (a 503 saying so, never a 500).

    Lenient at the top level only: keys `model` does not know are dropped, so a newer
    producer adding a field to an answer is still relayed (without it). Nested records stay
    strict: they are protocol records (a challenge, an audit plan) that the miner checks
    against signatures, which a changed record must fail visibly, not be trimmed to pass."""
    try:
        return model.model_validate(known_fields(model, raw))
    except ValidationError as exc:
        why = describe_validation_error(exc)
    except (TypeError, KeyError, ValueError) as exc:
        why = f"{type(exc).__name__}: {exc}"
    raise ProducerUnavailable(f"the producer's answer was not understood ({what}): "
                              f"{why}"[:500])


class _ProducerIdentity(BaseModel):
    """The part of the producer's `/v1/info` a non-validating follower shows as its own
    `node_public_key` / `node_address` (the key that signs the challenges it relays)."""

    node_public_key: PublicKeyBytes
    node_address: AddressStr


class Relay:
    """Forwards requests to the producer (sync httpx, used from the app's worker threads)."""

    def __init__(self, url: str, *, timeout: httpx.Timeout = RELAY_TIMEOUT,
                 client: httpx.Client | None = None) -> None:
        """A connection pool to `url` (`client` replaces it: tests serve an app in-process)."""
        self.url = url
        self.http = client if client is not None else httpx.Client(base_url=url,
                                                                   timeout=timeout)
        self.refused: str | None = None  # set when the follower refuses its producer

    def call(self, method: str, path: str, body: Any = None, *, client_ip: str | None = None,
             timeout: httpx.Timeout | None = None) -> Any:
        """The producer's JSON answer; its 4xx as NodeRejected (status and detail kept, with
        `retry_after` on a 429), anything else that fails as ProducerUnavailable."""
        if self.refused is not None:
            raise ProducerUnavailable(f"this follower refused its producer {self.url}: "
                                      f"{self.refused}")
        headers = {"X-Forwarded-For": client_ip} if client_ip else None
        try:
            resp = self.http.request(method, path, json=body, headers=headers,
                                     timeout=timeout or httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise ProducerUnavailable(f"the producer {self.url} cannot be reached "
                                      f"({type(exc).__name__}); retry later") from None
        if resp.status_code >= 500:
            raise ProducerUnavailable(f"the producer {self.url} answered {resp.status_code}: "
                                      f"{error_detail(resp.text, resp.reason_phrase)}")
        if resp.status_code >= 400:
            exc = NodeRejected(resp.status_code, error_detail(resp.text, resp.reason_phrase))
            with contextlib.suppress(TypeError, ValueError):
                exc.retry_after = float(resp.headers.get("retry-after"))  # type: ignore[attr-defined]
            raise exc
        try:
            return resp.json()
        except ValueError:
            raise ProducerUnavailable(f"the producer {self.url} sent a non-JSON answer to "
                                      f"{path}") from None

    def call_model(self, model: type[M], method: str, path: str, body: Any = None, *,
                   client_ip: str | None = None, timeout: httpx.Timeout | None = None) -> M:
        """`call`, its answer parsed as `model` (`parse_relayed`: a shape not understood is
        ProducerUnavailable)."""
        raw = self.call(method, path, body, client_ip=client_ip, timeout=timeout)
        return parse_relayed(model, raw, f"{method} {path}")

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


# ------------------------------------------------------------------ service


@dataclass
class FollowState:
    """Where the follower stands with its producer (shown in `/v1/info`)."""

    producer: str
    state: str = "syncing"
    producer_height: int | None = None
    imported: int = 0
    head_feed: bool = False
    reason: str | None = None

    def info(self) -> FollowInfo:
        """The wire form."""
        return FollowInfo(producer=self.producer, state=self.state,
                          producer_height=self.producer_height, imported=self.imported,
                          head_feed=self.head_feed, reason=self.reason)


class FollowerService(NodeService):
    """A `NodeService` that imports blocks instead of producing them and relays writes to
    its producer (module doc). A validator key in genesis makes it audit rounds locally."""

    def __init__(self, files: NodeFiles, producer_url: str,
                 validator_config: ValidatorConfig = DEFAULT_VALIDATOR_CONFIG, *,
                 relay_client: httpx.Client | None = None, **kwargs: Any) -> None:
        """Open the node's store (resuming from its own head) and the relay (`relay_client`
        replaces its connection pool); `kwargs` go to `NodeService`."""
        super().__init__(files, validator_config, **kwargs)
        self.producer_url = producer_url
        self.relay = Relay(producer_url, client=relay_client)
        self.follow = FollowState(producer_url)
        self.is_validator = self.key.public_key.hex() in self.genesis.validators
        self.producer_key: dict[str, Any] | None = None
        self.imported_blocks = Counter("hc_blocks_imported", "Blocks imported from the producer",
                                       registry=self.metrics.registry)
        prior = load_refusal(files.data_dir)
        if prior is not None and prior.producer in (producer_url, UNKNOWN_PRODUCER):
            self._mark_refused(f"{prior.describe()} (start with --reconsider to follow again)")
        elif prior is not None:  # another producer: its blocks will be checked afresh
            log.warning("a refusal of another producer is on record (%s); following %s",
                        prior.describe(), producer_url)

    @property
    def relays_poc(self) -> bool:  # type: ignore[override]
        """True unless this follower is a validator: its PoC requests go to the producer."""
        return not self.is_validator

    # ------------------------------------------------------------------ reads

    def info(self) -> NodeInfo:
        """`GET /v1/info` with the follower's state. `node_public_key` is the key that signs
        the challenges a miner gets here (SPEC 3): this node's own when it is a validator,
        else the producer's (its PoC requests are relayed there)."""
        base = super().info()
        update: dict[str, Any] = {"role": "follower", "validator": self.is_validator,
                                  "follow": self.follow.info()}
        if not self.is_validator:
            with contextlib.suppress(ProducerUnavailable, NodeRejected):
                update.update(self._producer_identity())  # unknown while it is down
        return base.model_copy(update=update)

    def _producer_identity(self) -> dict[str, Any]:
        """The producer's node key and address (asked once, then kept)."""
        if self.producer_key is None:
            self.learn_producer(self.relay.call("GET", "/v1/info"))
        assert self.producer_key is not None
        return self.producer_key

    def learn_producer(self, info: Any) -> None:
        """Keep the producer's node key and address from its `/v1/info` answer
        (ProducerUnavailable when they are not there or malformed)."""
        ident = parse_relayed(_ProducerIdentity, info, "GET /v1/info")
        self.producer_key = {"node_public_key": ident.node_public_key,
                             "node_address": ident.node_address}

    def tx_status(self, txid: str) -> TxStatus:
        """Included here, else what the producer knows (pending, dropped, unknown)."""
        where = self.ledger.find_tx(txid)
        if where is not None:
            return super().tx_status(txid)
        try:
            return self.relay.call_model(TxStatus, "GET", f"/v1/transactions/{txid}")
        except NodeRejected as exc:
            if exc.status == 404:
                raise NotFound(f"unknown transaction {txid}") from None
            raise

    def pending_nonce(self, address: str) -> int:
        """The producer's next nonce (it holds the pending transactions)."""
        return self.relay.call_model(NextNonce, "GET",
                                     f"/v1/accounts/{address}/next-nonce").nonce

    # ------------------------------------------------------------------ writes (relayed)

    def submit_transaction(self, tx: Transaction) -> str:
        """Relay `tx` to the producer; its id once the producer acknowledged it."""
        self.relay.call("POST", "/v1/transactions", tx_to_json(tx))
        self.metrics.txs.labels("relayed").inc()
        return tx_id(tx)

    def submit_batch(self, bodies: list[dict[str, Any]],
                     status_of: Callable[[HashCloudError], int]) -> TxBatchResponse:
        """Relay a batch; the producer's per-transaction results."""
        return self.relay.call_model(TxBatchResponse, "POST", "/v1/transactions/batch",
                                     {"transactions": bodies})

    def produce_block(self, now_ms: int | None = None) -> Block | None:
        """A follower never makes blocks."""
        return None

    def issue_challenge(self, req: ChallengeRequest, client_ip: str) -> ChallengeResponse:
        """Issue locally when this node is a PoC validator, else relay (SPEC 3)."""
        if self.is_validator:
            return super().issue_challenge(req, client_ip)
        return self.relay.call_model(ChallengeResponse, "POST", "/v1/challenges",
                                     req.model_dump(mode="json"), client_ip=client_ip)

    def commit(self, challenge_id: str, req: CommitRequest) -> CommitResponse:
        """Commit locally when this node is a PoC validator, else relay (SPEC 3)."""
        if self.is_validator:
            return super().commit(challenge_id, req)
        return self.relay.call_model(CommitResponse, "POST",
                                     f"/v1/challenges/{challenge_id}/commit",
                                     req.model_dump(mode="json"))

    def reveal(self, challenge_id: str, req: RevealRequest,
               client_ip: str | None = None) -> RevealResponse:
        """Audit locally when this node is a PoC validator, else relay (SPEC 3 v1.1)."""
        if self.is_validator:
            return super().reveal(challenge_id, req, client_ip)
        return self.relay.call_model(RevealResponse, "POST",
                                     f"/v1/challenges/{challenge_id}/reveal",
                                     req.model_dump(mode="json"), client_ip=client_ip,
                                     timeout=REVEAL_TIMEOUT)

    # ------------------------------------------------------------------ import

    def import_blocks(self, blocks: list[Block]) -> int:
        """Validate and store `blocks` in order on this node's head (`Ledger.add_blocks`: the
        producer's own `apply_block` per block, one fsync per range); return the new height.
        A block that does not apply is FollowRefused (the blocks before it stay); a store
        failure is StoreError; a block too far ahead of this node's clock is a NodeError
        (retried: clocks drift, the producer is not at fault for that alone; the blocks
        before it stay)."""
        with self.lock:
            now = int(time.time() * 1000)
            usable = blocks
            ahead = 0
            for i, block in enumerate(blocks):
                ahead = block.header.timestamp - now - MAX_FUTURE_DRIFT_MS
                if ahead > 0:  # this node's clock may be behind: retried, not refused
                    usable = blocks[:i]
                    break
            before = self.ledger.height
            try:
                self.ledger.add_blocks(usable, now_ms=now)
            except InvalidBlock as exc:
                raise ProducerChainRefused(f"block {self.ledger.height + 1} from the producer "
                                           f"is invalid: {exc}") from None
            finally:
                self._count_imported(before)
            if len(usable) < len(blocks):
                raise NodeError(f"block {blocks[len(usable)].header.height} is "
                                f"{ahead / 1000:.1f} s ahead of this node's clock (beyond the "
                                "allowed drift); retrying")
            return self.ledger.height

    def _count_imported(self, before: int) -> None:
        """Count and log the blocks imported since height `before`."""
        height = self.ledger.height
        if height > before:
            self.follow.imported += height - before
            self.imported_blocks.inc(height - before)
            self.metrics.height.set(height)
            head = self.ledger.head
            log.info("imported blocks %d..%d (head %s, proposer %s)", before + 1, height,
                     block_hash(head)[:16], head.proposer)

    def refuse(self, reason: str, *, record: bool = True) -> None:
        """Stop following and log why; relaying stops too (module doc). With `record` (a
        verdict on the producer's chain, `ProducerChainRefused`) the refusal is first
        written to disk (`node.refusal`; a write error is logged, the refusal stands in
        memory)."""
        if record:
            refusal = Refusal(self.producer_url, reason, self.ledger.height,
                              int(time.time() * 1000))
            try:
                record_refusal(self.files.data_dir, refusal)
            except OSError as exc:
                log.error("cannot record the refusal in %s (%s): a restart would follow "
                          "again", self.files.data_dir, exc.strerror or exc)
        self._mark_refused(reason)

    def _mark_refused(self, reason: str) -> None:
        """Show and log the refusal; the relay answers 503 from now on."""
        self.follow.state = "refused"
        self.follow.reason = reason
        self.relay.refused = reason
        log.error("not following %s: %s", self.producer_url, reason)

    def close(self) -> None:
        """Close the relay, then the node."""
        self.relay.close()
        super().close()


# ------------------------------------------------------------------ sync loop


class Follower:
    """The sync loop of a `FollowerService` (module doc): `await run(sink)`."""

    def __init__(self, service: FollowerService, *, batch: int = DEFAULT_RANGE_BLOCKS,
                 poll_seconds: float | None = None, head_feed: bool = True,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        """`batch` blocks per range request; `poll_seconds` the head poll while the WebSocket
        feed is down (default: the genesis block time, at least 0.2 s); `head_feed=False`
        polls only; `transport` replaces the network (tests serve an app in-process)."""
        self.service = service
        self.url = service.producer_url
        self.batch = batch
        self.poll = poll_seconds or max(0.2, service.genesis.block_time_ms / 1000)
        self.use_feed = head_feed
        self.transport = transport
        self.wake: asyncio.Event | None = None  # made in `run`, on the loop that runs it
        self.checked_genesis = False

    @property
    def state(self) -> FollowState:
        """The service's follow state."""
        return self.service.follow

    async def run(self, sink: HeadSink | None = None) -> None:
        """Follow until cancelled or until the producer is refused (at once if it was
        refused before this start: `node.refusal`)."""
        if self.state.state == "refused":
            return
        self.wake = asyncio.Event()
        self.checked_genesis = False
        feed = asyncio.create_task(self._head_feed()) if self.use_feed else None
        backoff = BACKOFF_MIN
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=SYNC_TIMEOUT,
                                         transport=self.transport) as http:
                while True:
                    try:
                        await self._step(http, sink)
                        backoff = BACKOFF_MIN
                    except FollowRefused as exc:
                        await asyncio.to_thread(  # the record is fsynced: off the loop
                            self.service.refuse, str(exc),
                            record=isinstance(exc, ProducerChainRefused))
                        return
                    except Exception as exc:  # noqa: BLE001 - never die silently: retry
                        expected = isinstance(exc, (httpx.HTTPError, NodeError, StoreError,
                                                    OSError))
                        self.state.state = "disconnected"
                        self.state.reason = f"{type(exc).__name__}: {exc}"[:300]
                        self.checked_genesis = False
                        log.log(logging.WARNING if expected else logging.ERROR,
                                "producer %s: %s; retrying in %.2f s", self.url,
                                self.state.reason, backoff, exc_info=not expected)
                        await asyncio.sleep(backoff)
                        backoff = min(BACKOFF_MAX, backoff * 2)
        finally:
            if feed is not None:
                feed.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed

    async def _step(self, http: httpx.AsyncClient, sink: HeadSink | None) -> None:
        """Check the producer (once per connection), catch up to its head, then wait for the
        next head (feed or poll)."""
        if not self.checked_genesis:
            info = await self._get(http, "/v1/info")
            if not isinstance(info, dict):
                raise FollowRefused("the producer's /v1/info is not a JSON object")
            if info.get("genesis_hash") != self.service.genesis_hash:
                raise ProducerChainRefused(
                    f"the producer runs genesis {info.get('genesis_hash')}, this node "
                    f"{self.service.genesis_hash}")
            with contextlib.suppress(ProducerUnavailable):  # shown as unknown in /v1/info
                self.service.learn_producer(info)
            self.checked_genesis = True
        head = self._head(await self._get(http, "/v1/head"))
        self.state.producer_height = head.height
        await self._check_conflict(head)
        if head.height > self.service.ledger.height:
            self.state.state = "syncing"
            await self._catch_up(http, head.height, sink)
        self.state.state, self.state.reason = "following", None
        timeout = FEED_POLL_SECONDS if self.state.head_feed else self.poll
        assert self.wake is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)
        self.wake.clear()

    async def _get(self, http: httpx.AsyncClient, path: str) -> Any:
        """GET a JSON answer (5xx / non-JSON: NodeError, retried; 4xx: FollowRefused only
        where the route must exist, i.e. always here)."""
        resp = await http.get(path)
        if resp.status_code >= 500 or resp.status_code == 429:
            raise NodeError(f"{path} answered {resp.status_code}")
        if resp.status_code >= 400:
            raise FollowRefused(f"the producer refused {path} ({resp.status_code}: "
                                f"{error_detail(resp.text, resp.reason_phrase)})")
        try:
            return resp.json()
        except ValueError:
            raise NodeError(f"{path} sent a non-JSON answer") from None

    @staticmethod
    def _head(raw: Any) -> HeadInfo:
        """The producer's head (fields a newer producer adds are ignored), or FollowRefused
        if it is not one."""
        try:
            return HeadInfo.model_validate(known_fields(HeadInfo, raw))
        except ValidationError as exc:
            raise FollowRefused(f"the producer's head is malformed: "
                                f"{describe_validation_error(exc)}") from None

    async def _check_conflict(self, head: HeadInfo) -> None:
        """Refuse a producer whose head is a block this node holds under another hash."""
        ledger = self.service.ledger
        if head.height > ledger.height:
            return
        ours = ledger.store.find_block_hash(head.height)  # the index: no block read
        if ours is None or ours.hex() != head.hash:
            mine = ours.hex() if ours is not None else "nothing"
            raise ProducerChainRefused(
                f"the producer's block {head.height} is {head.hash}, this node accepted "
                f"{mine} (conflicting chain)")

    async def _catch_up(self, http: httpx.AsyncClient, target: int,
                        sink: HeadSink | None) -> None:
        """Import ranges until this node's head reaches `target` (or the producer's newer
        head). The next range is fetched and decoded while the current one is validated and
        stored (its fsync releases the GIL), so the network and the disk overlap."""
        service = self.service
        start = service.ledger.height + 1
        pending: asyncio.Task[list[Block]] | None = asyncio.create_task(
            self._fetch_range(http, start))
        try:
            while pending is not None:
                blocks = await pending
                pending = None
                if not blocks:
                    return  # the producer's head moved back below `target`: re-checked next step
                start += len(blocks)
                target = max(target, self.state.producer_height or 0)
                if start <= target:
                    pending = asyncio.create_task(self._fetch_range(http, start))
                await asyncio.to_thread(service.import_blocks, blocks)
                if sink is not None:
                    sink(service.head_info().model_dump())
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending

    async def _fetch_range(self, http: httpx.AsyncClient, start: int) -> list[Block]:
        """The decoded blocks of the range from `start` (empty past the producer's head);
        a malformed answer or block is FollowRefused."""
        raw = await self._get(http, f"/v1/blocks?from={start}&limit={self.batch}")
        try:
            answer = BlockRange.model_validate(known_fields(BlockRange, raw))
        except ValidationError as exc:
            raise FollowRefused(f"the producer's block range is malformed: "
                                f"{describe_validation_error(exc)}") from None
        self.state.producer_height = answer.head.height
        try:
            return await asyncio.to_thread(self._decode_and_prevalidate, answer.blocks, start)
        except InvalidBlock as exc:
            raise ProducerChainRefused(f"the producer served an invalid block: {exc}") from None

    def _decode_and_prevalidate(self, records: list[Any], start: int) -> list[Block]:
        """Decode a range, then check its transactions' signatures on the verification
        threads (`node.intake.prevalidate`: it decides nothing, it fills the memo that the
        blocks' own `apply_block` then reads), while the previous range is imported."""
        blocks = decode_range(records, start)
        prevalidate(self.service.genesis, [tx for b in blocks for tx in b.transactions])
        return blocks

    def _wake(self) -> None:
        """Wake the sync loop (a new head, or a feed that dropped)."""
        if self.wake is not None:
            self.wake.set()

    async def _head_feed(self) -> None:
        """Listen to the producer's WebSocket head feed, waking the loop on every message;
        reconnect with backoff. Never raises (the poll covers a feed that is down)."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        ws_url = "ws" + self.url[len("http"):] + "/v1/ws/heads"
        delay = BACKOFF_MIN
        while True:
            try:
                async with connect(ws_url, open_timeout=5, close_timeout=1,
                                   max_size=1 << 16) as ws:
                    self.state.head_feed = True
                    delay = BACKOFF_MIN
                    async for _ in ws:
                        self._wake()
            except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
                log.debug("head feed of %s: %s", self.url, exc)
            finally:
                self.state.head_feed = False
            self._wake()  # the feed dropped: poll now (the producer may be restarting)
            await asyncio.sleep(delay)
            delay = min(BACKOFF_MAX, delay * 2)


def follower_task(service: FollowerService, **options: Any
                  ) -> Callable[[HeadSink], Awaitable[None]]:
    """The app background task of a follower: `Follower(service, **options).run(sink)`."""

    async def task(sink: HeadSink) -> None:
        await Follower(service, **options).run(sink)

    return task

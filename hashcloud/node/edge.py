"""The node's network edge: connection caps, read deadlines, write rate limits (issue 11).

A node on a public address meets clients that never finish a request. uvicorn bounds
neither the number of open sockets nor the time a client may take to send its request
headers, so a few hundred connections that each send half a header hold every file
descriptor of the process, and the event loop then logs one traceback per failed
`accept()`. This module is the guard in front of the app; `node.server` runs every node
(`node start` and the embedded node of `hashcloud mine`) with it:

- `EdgeSettings`: the operator's knobs (node start options), validated on construction.
- `ConnectionGuard`: at most `max_connections_per_ip` open connections per client address
  and `connection_cap` overall, kept below the open-file limit (`raise_fd_limit` first
  lifts the soft limit to the hard one). A connection over its address's cap is closed as
  soon as it is accepted (asyncio accepts `ACCEPT_BATCH` at a time before the guard sees
  them, so the cap leaves room for one batch); at the overall cap the connection that has
  waited longest for a request header is closed to make room (honest clients send their
  header at once, so a flood of half-sent requests churns among itself while honest
  requests are served), and only when none waits is the new one closed.
- `guarded_protocol`: uvicorn's h11 protocol with deadlines: the request header must
  be complete `header_timeout` seconds after the connection opened or the previous
  response was taken (slowloris), the body within `body_timeout` plus its length at
  `min_body_rate` bytes/s (slow bodies), and while bytes of a response wait for the
  client, it must take some of them every `send_timeout` seconds (nginx's `send_timeout`;
  `SendWatch`: taken is what the peer acknowledged, Linux TCP_INFO, so pipelined
  responses written meanwhile do not hide a reader's progress). "Waiting" counts the
  kernel's send queue as well as the transport's buffer (Linux SIOCOUTQ): a loopback or
  fast peer's kernel buffers hold megabytes, so a slow but steady reader is seen
  progressing and is never cut, and the next header deadline and uvicorn's keep-alive
  close wait until the response was taken. A client
  that sends requests and never reads the answers is closed, `Connection: close` or
  not (a closing transport still flushes, so the send deadline still runs), instead of
  holding a slot and the responses' memory for ever. WebSockets get the send deadline
  too, and are closed when more than `WS_MAX_UNSENT` bytes wait while their peer keeps
  sending (every ping is answered with a pong). A connection past a deadline is aborted
  with a TCP reset, so the kernel frees what it held for the client at once.
- `LogThrottle`: recurring warnings (accept() out of file descriptors, malformed requests)
  become one line per `log_interval` seconds with a count, never a traceback per event.
- `WriteRateLimit`: ASGI middleware refusing `POST /v1/transactions`, batches and reveals
  over their per-client-address rate (`limits.WriteLimits`) with 429 and Retry-After before
  the body is read, as challenge issuing is limited by the validator (SPEC 3 "rate
  limits"). A batch carries up to `api.models.MAX_BATCH` transactions, each a signature check: the
  middleware takes one batch request and checks the transaction window has room, and the
  batch route charges the window the batch's transaction count (`node.app`).

The client address is the socket peer for the connection caps (a trusted proxy is exempt
from the per-address cap) and the ASGI client for the rate limits (rewritten from
X-Forwarded-For only for trusted proxies, see `node.server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import math
import re
import resource
import socket
import struct
import sys
import termios
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from hashcloud.errors import InvalidOption, RateLimited
from hashcloud.node.limits import WriteLimits

__all__ = [
    "DEFAULT_EDGE_SETTINGS",
    "ConnectionGuard",
    "EdgeSettings",
    "GuardMetrics",
    "LogThrottle",
    "SendWatch",
    "WS_MAX_UNSENT",
    "WriteRateLimit",
    "abort_with_reset",
    "bytes_taken",
    "client_ip",
    "describe_limits",
    "expose_guard_metrics",
    "guarded_protocol",
    "is_loopback_host",
    "raise_fd_limit",
    "retry_after_header",
    "unsent_bytes",
    "write_route",
]

log = logging.getLogger(__name__)

#: Connections allowed when the operator names no cap (each costs memory, not only an fd).
DEFAULT_MAX_CONNECTIONS = 10_000
#: Connections asyncio accepts in one go (the server's `backlog`): it accepts a whole batch
#: before any of them reaches the guard, so the batch needs free descriptors of its own.
ACCEPT_BATCH = 64
#: File descriptors kept free of admitted connections: one accept batch plus the node's own
#: files (store, journals, logs, /proc reads), or an eighth of the limit if more.
FD_RESERVE_MIN = ACCEPT_BATCH + 48

#: uvicorn's warnings for each unparsable or `Upgrade: h2c`-like request (a client can send
#: one per request, so they are throttled like accept errors).
_PER_REQUEST_WARNINGS = ("Invalid HTTP request received.", "Unsupported upgrade request.")
_REVEAL_POST = re.compile(r"^/v1/challenges/[^/]+/reveal$")
_TRANSACTIONS_POST = re.compile(r"^/v1/transactions(?:/[^/]+)?$")
_BATCH_POST = "/v1/transactions/batch"


def _positive(name: str, value: object, *, integer: bool) -> None:
    """Refuse anything but a positive number (a positive int when `integer`)."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not value > 0 or not math.isfinite(value):
        kind = "integer" if integer else "number"
        raise InvalidOption(f"{name} must be a positive {kind}, got {value!r}")


@dataclass(frozen=True)
class EdgeSettings:
    """Operator options of the node's network edge (issue 11 items 1 and 8).

    A bad value raises InvalidOption naming the field (CLI exit 2)."""

    #: Seconds a client has to send a whole request header, from the connection's opening
    #: or from when the client had taken the whole previous response.
    header_timeout: float = 10.0
    #: Seconds a client has to send a request body, plus its length at `min_body_rate`.
    body_timeout: float = 30.0
    #: Bytes per second a body deadline allows beyond `body_timeout` (64 KiB/s: a 17 MiB
    #: reveal, the largest legal one, gets about 5 minutes).
    min_body_rate: int = 64 * 1024
    #: Seconds a client may take none of the bytes waiting for it (a response, WebSocket
    #: messages) before its connection is closed (`SendWatch`).
    send_timeout: float = 30.0
    #: Open connections overall; None: `DEFAULT_MAX_CONNECTIONS`. Never above what the
    #: open-file limit allows (`connection_cap`).
    max_connections: int | None = None
    #: Open connections per client address.
    max_connections_per_ip: int = 64
    #: Transactions per client address in any 60 s window: one per `POST /v1/transactions`,
    #: a batch's count per `POST /v1/transactions/batch` (`limits.WriteLimits`).
    transactions_per_minute_per_ip: int = 1200
    #: Reveals per client address in any 60 s window (twice the challenge rate: a reveal
    #: refused by a full audit queue is retried).
    reveals_per_minute_per_ip: int = 480
    #: Seconds between two log lines about the same recurring event.
    log_interval: float = 10.0

    def __post_init__(self) -> None:
        """Refuse unusable values with a message naming the field."""
        for name in ("header_timeout", "body_timeout", "send_timeout", "log_interval"):
            _positive(name, getattr(self, name), integer=False)
        for name in ("min_body_rate", "max_connections_per_ip",
                     "transactions_per_minute_per_ip", "reveals_per_minute_per_ip"):
            _positive(name, getattr(self, name), integer=True)
        if self.max_connections is not None:
            _positive("max_connections", self.max_connections, integer=True)

    def connection_cap(self, fd_limit: int) -> int:
        """The overall connection cap under an open-file limit of `fd_limit`: the operator's
        (or the default) cap, lowered to leave `max(FD_RESERVE_MIN, fd_limit // 8)`
        descriptors for one accept batch and the node's own files."""
        by_fds = max(8, fd_limit - max(FD_RESERVE_MIN, fd_limit // 8))
        return min(self.max_connections or DEFAULT_MAX_CONNECTIONS, by_fds)

    def body_deadline(self, length: int | None) -> float:
        """Seconds allowed for a body of `length` bytes (None: chunked, unknown)."""
        return self.body_timeout + (length or 0) / self.min_body_rate

    def write_limits(self) -> WriteLimits:
        """The per-client-address limits of the write routes."""
        return WriteLimits(self.transactions_per_minute_per_ip, self.reveals_per_minute_per_ip)


DEFAULT_EDGE_SETTINGS = EdgeSettings()
"""The node's default edge settings."""


# ------------------------------------------------------------------------ fd limit


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (issue 11); the soft limit in force.

    A common default soft limit is 1024 while the hard one is far higher; a node serving
    many clients needs the latter. An unlimited hard limit is taken as 2^20."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = (1 << 20) if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft if soft != resource.RLIM_INFINITY else (1 << 20)


# ------------------------------------------------------------------------ logging


class LogThrottle:
    """One log line per `interval` seconds for each recurring event, with a count of the
    lines held back since the last one (a flood must not fill the disk with logs)."""

    def __init__(self, logger: logging.Logger, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Log through `logger` at most once per `interval` seconds per event key."""
        self.logger, self.interval, self.clock = logger, interval, clock
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def admit(self, key: str) -> int | None:
        """None if `key`'s event must stay quiet now (counted); else the number held back
        since its last line (the caller logs now)."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] += 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def warning(self, key: str, message: str) -> None:
        """Log `message` as a warning unless `key` was logged less than `interval` ago."""
        held = self.admit(key)
        if held is not None:
            self.logger.warning("%s%s", message, self._suffix(held))

    def _suffix(self, held: int) -> str:
        """The held-back count appended to a line."""
        return f" ({held} more in the last {self.interval:g} s)" if held else ""

    def loop_exception_handler(self, loop: asyncio.AbstractEventLoop,
                               context: dict[str, Any]) -> None:
        """An event-loop exception handler: accept() failures (out of file descriptors or
        memory) become one throttled line without a traceback; anything else goes to the
        loop's default handler."""
        message = str(context.get("message", ""))
        if message.startswith("socket.accept() out of system resource"):
            exc = context.get("exception")
            reason = getattr(exc, "strerror", None) or str(exc or "unknown error")
            fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            self.warning("accept", f"cannot accept connections: {reason}; retrying "
                                   f"(open-file limit {fd_limit})")
            return
        loop.default_exception_handler(context)

    def record_filter(self, messages: Iterable[str]) -> logging.Filter:
        """A logging filter letting through one of the records whose message is one of
        `messages` per interval (with the held-back count appended)."""
        wanted = frozenset(messages)
        throttle = self

        class _Throttled(logging.Filter):
            """Drops the repeats of `messages` within an interval."""

            def filter(self, record: logging.LogRecord) -> bool:
                """Keep other records; keep one of `messages` per interval, with its count."""
                if record.msg not in wanted:
                    return True
                held = throttle.admit(f"log:{record.msg}")
                if held is None:
                    return False
                record.msg = f"{record.msg}{throttle._suffix(held)}"
                return True

        return _Throttled()


_UVICORN_FILTER = "hashcloud-throttle"


def throttle_uvicorn_warnings(interval: float) -> None:
    """Throttle uvicorn's per-request warnings (`_PER_REQUEST_WARNINGS`; installed once per
    process)."""
    logger = logging.getLogger("uvicorn.error")
    if any(getattr(f, "name", "") == _UVICORN_FILTER for f in logger.filters):
        return
    filt = LogThrottle(logger, interval).record_filter(_PER_REQUEST_WARNINGS)
    filt.name = _UVICORN_FILTER
    logger.addFilter(filt)


# ------------------------------------------------------------------ connection guard


class ConnectionGuard:
    """Open connections per client address and overall, on the event loop (not thread-safe).

    Connections are keyed by their transport (a WebSocket keeps the slot of the HTTP
    connection it upgraded). `admit` takes a slot or says no; `set_waiting` marks a
    connection as waiting for a request header (the ones evicted first at the overall
    cap); `release` gives the slot back (idempotent). Counters: `refused`, `evicted`,
    `timed_out` (closed at a header or body deadline), `send_timed_out` (closed at a send
    deadline, or a WebSocket with over `WS_MAX_UNSENT` bytes waiting), `responses` (HTTP
    responses sent)."""

    def __init__(self, cap: int, per_ip: int, exempt: Iterable[str] = ()) -> None:
        """At most `cap` connections overall and `per_ip` per address (`exempt` addresses,
        trusted proxies, only count overall)."""
        if cap < 1 or per_ip < 1:
            raise ValueError("a connection guard needs cap >= 1 and per_ip >= 1")
        self.cap, self.per_ip = cap, per_ip
        self.exempt = frozenset(exempt)
        self._open: dict[Any, str] = {}
        self._per_ip: Counter[str] = Counter()
        self._waiting: OrderedDict[Any, None] = OrderedDict()  # oldest wait first
        self.refused = self.evicted = self.timed_out = self.send_timed_out = 0
        self.responses = 0  # HTTP responses completed (every request answered)

    def __len__(self) -> int:
        """Connections holding a slot."""
        return len(self._open)

    def count(self, ip: str) -> int:
        """Connections of client address `ip`."""
        return self._per_ip[ip]

    def admit(self, transport: Any, ip: str) -> bool:
        """Take a slot for a new connection from `ip`; False if it must be closed. At the
        overall cap, the longest-waiting connection is closed to make room."""
        if ip not in self.exempt and self._per_ip[ip] >= self.per_ip:
            self.refused += 1
            return False
        if len(self._open) >= self.cap:
            if not self._waiting:
                self.refused += 1
                return False
            victim = next(iter(self._waiting))
            self.release(victim)
            self.evicted += 1
            victim.abort()
        self._open[transport] = ip
        self._per_ip[ip] += 1
        return True

    def set_waiting(self, transport: Any, waiting: bool) -> None:
        """Mark `transport` as waiting for a request header (True, as the newest waiter) or
        as busy with a request (False)."""
        if transport not in self._open:
            return
        self._waiting.pop(transport, None)
        if waiting:
            self._waiting[transport] = None

    def release(self, transport: Any) -> None:
        """Give back the slot of `transport` (no-op if it holds none)."""
        ip = self._open.pop(transport, None)
        if ip is None:
            return
        self._waiting.pop(transport, None)
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]


class GuardMetrics:
    """A Prometheus collector of a `ConnectionGuard`: `hc_connections_open` and the counters
    `hc_connections_refused_total`, `hc_connections_evicted_total`,
    `hc_connections_timed_out_total`, `hc_connections_send_timed_out_total`,
    `hc_http_responses_total` (read at scrape time, no
    bookkeeping of its own)."""

    def __init__(self, guard: ConnectionGuard) -> None:
        """Expose `guard`."""
        self.guard = guard

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        """The current values."""
        g = self.guard
        yield GaugeMetricFamily("hc_connections_open", "Open client connections",
                                value=len(g))
        for name, value, what in (
                ("refused", g.refused, "closed at once: over the per-address or overall cap"),
                ("evicted", g.evicted, "closed at the overall cap while waiting for a header"),
                ("timed_out", g.timed_out, "closed at a header or body deadline"),
                ("send_timed_out", g.send_timed_out,
                 "closed: the client took none of what waited for it in time")):
            yield CounterMetricFamily(f"hc_connections_{name}", f"Connections {what}",
                                      value=value)
        yield CounterMetricFamily("hc_http_responses", "HTTP responses sent",
                                  value=g.responses)

    def describe(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        """The metric names (for duplicate checks at registration)."""
        return self.collect()


def expose_guard_metrics(registry: CollectorRegistry, guard: ConnectionGuard) -> None:
    """Register `GuardMetrics` of `guard` on a node's metrics registry (`/metrics`)."""
    registry.register(GuardMetrics(guard))


def _content_length(headers: list[tuple[bytes, bytes]] | None) -> int | None:
    """The request's Content-Length, or None (absent or malformed: h11 refuses those)."""
    for name, value in headers or ():
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


#: Linux's SIOCOUTQ (== TIOCOUTQ): bytes in a socket's send queue not yet taken by the peer.
_SIOCOUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None
#: Where Linux's `struct tcp_info` (TCP_INFO) keeps `tcpi_bytes_acked`, a u64 (Linux >= 4.1).
_TCPI_BYTES_ACKED = 120
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
#: Most bytes a WebSocket may have waiting in its write buffer while it receives: the
#: protocol answers every ping with a pong, so a peer sending pings and reading nothing
#: would otherwise grow the node's memory at its upload rate.
WS_MAX_UNSENT = 1 << 20


def unsent_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes written to `transport` that its peer has not taken yet: the transport's buffer
    plus, on Linux, the kernel's send queue (a loopback or fast peer's kernel buffers can
    hold megabytes, so the transport's buffer alone says little about the peer reading)."""
    unsent = transport.get_write_buffer_size()  # type: ignore[attr-defined]
    sock = transport.get_extra_info("socket")
    if _SIOCOUTQ is not None and sock is not None:
        try:
            queued = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
            unsent += struct.unpack("i", queued)[0]
        except (OSError, ValueError):
            pass  # closed meanwhile: nothing more will be sent
    return unsent


def bytes_taken(transport: asyncio.BaseTransport) -> int | None:
    """Bytes written to `transport` that its peer has acknowledged so far (Linux TCP_INFO
    `tcpi_bytes_acked`), or None where the kernel does not say."""
    sock = transport.get_extra_info("socket")
    if _TCP_INFO is None or sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except (OSError, ValueError):
        return None
    if len(info) < _TCPI_BYTES_ACKED + 8:
        return None
    return int(struct.unpack_from("=Q", info, _TCPI_BYTES_ACKED)[0])


def abort_with_reset(transport: asyncio.BaseTransport) -> None:
    """Abort `transport` with a TCP reset (SO_LINGER 0): the kernel drops what it still
    holds for the peer at once instead of keeping it for a client that is not reading."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


class SendWatch:
    """The send deadline of one connection (module doc): while bytes wait for the peer
    (`unsent_bytes`), it must take some of them every `timeout` seconds, else `on_stall`
    runs. Once none wait, `on_drained` runs and the watch stops, unless it is `persistent`
    (a WebSocket's, watched for its whole life: it may stall with too few bytes waiting to
    fill the transport's buffer). Polled every `min(timeout, 1 s)` on the event loop.

    The peer took bytes when the bytes it acknowledged grew (`bytes_taken`: while it
    reads, the node may write more, the next pipelined response, so what waits can grow
    although the peer is taking bytes) or when what waits fell below its lowest value
    since the last progress (where the kernel does not report acknowledged bytes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport,
                 timeout: float, on_stall: Callable[[], None],
                 on_drained: Callable[[], None] = lambda: None, *,
                 persistent: bool = False) -> None:
        """Watch `transport` (not started)."""
        self.loop, self.transport, self.timeout = loop, transport, timeout
        self.on_stall, self.on_drained = on_stall, on_drained
        self.persistent = persistent
        self._timer: asyncio.TimerHandle | None = None
        self._taken: int | None = None
        self._lowest = 0
        self._progress_at = 0.0

    @property
    def running(self) -> bool:
        """True while the watch is polling."""
        return self._timer is not None

    def start(self) -> None:
        """Start watching (no-op if running): the first period starts now."""
        if self._timer is None:
            self._restart(unsent_bytes(self.transport), bytes_taken(self.transport))
            self._schedule()

    def stop(self) -> None:
        """Stop watching."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _restart(self, unsent: int, taken: int | None) -> None:
        """A new period from now, with the marks progress is measured against."""
        self._taken = taken
        self._lowest = unsent
        self._progress_at = self.loop.time()

    def _schedule(self) -> None:
        """Poll again in a while."""
        self._timer = self.loop.call_later(min(self.timeout, 1.0), self._poll)

    def _poll(self) -> None:
        """Drained, progressing, or stalled past the timeout."""
        self._timer = None
        unsent = unsent_bytes(self.transport)
        taken = bytes_taken(self.transport)
        if unsent == 0:
            self.on_drained()
            if not self.persistent:
                return
            self._restart(0, taken)
        elif (taken is not None and self._taken is not None and taken > self._taken) \
                or unsent < self._lowest:
            self._restart(unsent, taken)
        elif self.loop.time() - self._progress_at >= self.timeout:
            self.on_stall()
            return
        self._schedule()


def guarded_protocol(guard: ConnectionGuard, settings: EdgeSettings,
                     base: type[H11Protocol] = H11Protocol) -> type[H11Protocol]:
    """uvicorn's h11 protocol class admitting connections through `guard` and closing
    those past their header, body or send deadline (module doc); its WebSocket upgrades
    keep the slot, get the send deadline too, and release the slot when they close."""

    ws_classes: dict[type, type] = {}  # uvicorn's WebSocket class -> its guarded subclass

    class GuardedProtocol(base):  # type: ignore[valid-type, misc]
        """An h11 connection with a slot in the guard and a deadline for each phase:
        header, body, busy (the app has the request: none) and send (bytes wait for the
        peer: `SendWatch`; it comes first, so the next header deadline, and uvicorn's
        keep-alive close, wait until the previous response was taken)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None
            self._state: tuple[str, object] | None = None
            self._sending = False  # bytes of a response wait for the peer
            self._lost = False
            self._watch: SendWatch | None = None
            ws = self.ws_protocol_class
            if ws is not None:
                if ws not in ws_classes:
                    ws_classes[ws] = _guarded_ws(ws, guard, settings)
                self.ws_protocol_class = ws_classes[ws]

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            """Take a slot (or close at once) and arm the header deadline."""
            super().connection_made(transport)
            ip = self.client[0] if self.client else "unknown"
            if not guard.admit(transport, ip):
                transport.abort()
                return
            self._watch = SendWatch(self.loop, transport, settings.send_timeout,
                                    self._send_stalled, self._send_drained)
            self._update_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            """Give the slot back; no timer of this connection may outlive it (uvicorn
            leaves its keep-alive timer armed when the peer reset the connection)."""
            self._lost, self._sending = True, False
            self._cancel_deadline()
            if self._watch is not None:
                self._watch.stop()
            guard.release(self.transport)
            super().connection_lost(exc)
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None

        def data_received(self, data: bytes) -> None:
            """Parse, then move the deadline if a header or a body was completed."""
            super().data_received(data)
            self._update_deadline()

        def on_response_complete(self) -> None:
            """Count the response; the next request's header deadline starts once the
            response has been taken (now if it already was)."""
            guard.responses += 1
            if unsent_bytes(self.transport):  # a closing one too: its flush may stall
                self._sending = True
            super().on_response_complete()
            self._update_deadline()

        def pause_writing(self) -> None:
            """The peer stopped taking bytes (write buffer full): the send phase."""
            super().pause_writing()
            self._sending = True
            self._update_deadline()

        def timeout_keep_alive_handler(self) -> None:
            """uvicorn's keep-alive close, put off while the last response is still being
            taken (a close would wait for it anyway, and cut the keep-alive of a slow but
            steady reader)."""
            if self._lost:
                self.timeout_keep_alive_task = None
                return
            if self._sending:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler)
                return
            super().timeout_keep_alive_handler()

        def handle_websocket_upgrade(self, event: Any) -> None:
            """Hand the slot to the WebSocket: no read deadline, released when it closes."""
            self._cancel_deadline()
            if self._watch is not None:
                self._watch.stop()
            self._state = ("websocket", None)
            guard.set_waiting(self.transport, False)
            super().handle_websocket_upgrade(event)

        def _send_drained(self) -> None:
            """The response was taken: the phase the request is in; uvicorn's keep-alive
            period starts afresh."""
            self._sending = False
            task = self.timeout_keep_alive_task
            if task is not None:
                task.cancel()
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler)
            self._update_deadline()

        def _send_stalled(self) -> None:
            """The peer took nothing for `send_timeout` seconds: close the connection."""
            guard.send_timed_out += 1
            abort_with_reset(self.transport)

        def _update_deadline(self) -> None:
            """Arm the deadline of the phase the connection is in, when it enters it. A
            closing connection keeps only its send deadline (its response is flushing)."""
            if self._watch is None or (self._state and self._state[0] == "websocket"):
                return
            if self.transport.is_closing() and not self._sending:
                return
            cycle = self.cycle
            if self._sending:
                phase = "send"
            elif cycle is None or cycle.response_complete:
                phase = "header"
            elif cycle.more_body:
                phase = "body"
            else:
                phase = "busy"  # the app has the request: no read deadline
            state = (phase, cycle)
            if state == self._state:
                return
            self._state = state
            self._cancel_deadline()
            if phase != "send":
                self._watch.stop()
            guard.set_waiting(self.transport, phase == "header")
            if phase == "header":
                self._deadline = self.loop.call_later(settings.header_timeout, self._expire)
            elif phase == "body":
                seconds = settings.body_deadline(_content_length(self.headers))
                self._deadline = self.loop.call_later(seconds, self._expire)
            elif phase == "send":
                self._watch.start()

        def _cancel_deadline(self) -> None:
            """Drop the armed read deadline, if any."""
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            """A read deadline passed: close the connection."""
            self._deadline = None
            if not self.transport.is_closing():
                guard.timed_out += 1
                abort_with_reset(self.transport)

    return GuardedProtocol


def _guarded_ws(base: type, guard: ConnectionGuard, settings: EdgeSettings) -> type:
    """`base` (a uvicorn WebSocket protocol) with the send deadline for its whole life
    (a persistent `SendWatch`: a WebSocket closed by uvicorn's ping timeout with a few KiB
    its peer never takes would otherwise wait for that flush for ever), a bound on its
    write buffer while it receives (`WS_MAX_UNSENT`), and releasing its guard slot when
    it closes."""

    class GuardedWebSocket(base):  # type: ignore[valid-type, misc]
        """A WebSocket connection holding the guard slot of the HTTP connection it was."""

        _watch: SendWatch | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            """Take over the connection and start its send deadline."""
            super().connection_made(transport)
            self._watch = SendWatch(self.loop, transport, settings.send_timeout,
                                    self._send_stalled, persistent=True)
            self._watch.start()

        def data_received(self, data: bytes) -> None:
            """Refuse to answer more (pongs) while too much waits for a peer not reading."""
            if self.transport.get_write_buffer_size() > WS_MAX_UNSENT:
                self._send_stalled()
                return
            super().data_received(data)

        def _send_stalled(self) -> None:
            """The peer is not reading: close the connection."""
            if not getattr(self, "_stalled", False):
                self._stalled = True
                guard.send_timed_out += 1
                abort_with_reset(self.transport)

        def connection_lost(self, exc: Exception | None) -> None:
            """Give the slot back."""
            if self._watch is not None:
                self._watch.stop()
            guard.release(getattr(self, "transport", None))
            super().connection_lost(exc)

    return GuardedWebSocket


# ------------------------------------------------------------------ write rate limits


def write_route(method: str, path: str) -> str | None:
    """The rate-limited write route a request goes to ("transactions", "batches",
    "reveals"), or None."""
    if method != "POST":
        return None
    if path == _BATCH_POST:
        return "batches"
    if _TRANSACTIONS_POST.match(path):
        return "transactions"
    if _REVEAL_POST.match(path):
        return "reveals"
    return None


def client_ip(scope: Scope) -> str:
    """The client address the write limits charge: the ASGI client (the socket peer, or the
    X-Forwarded-For address of a trusted proxy, `node.server`)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


def retry_after_header(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1 (RFC 9110)."""
    return str(max(1, math.ceil(seconds)))


class WriteRateLimit:
    """ASGI middleware: `POST /v1/transactions`, batches and reveals over their
    per-client-address rate get 429 with Retry-After before their body is read
    (`limits.WriteLimits`; a batch's transaction count is charged by its route, which knows
    it, through `limits.take_transactions` with the client address of `client_ip`)."""

    def __init__(self, app: ASGIApp, limits: WriteLimits,
                 clock: Callable[[], float] = time.time) -> None:
        """Wrap `app`; `clock` is unix seconds (tests inject a fake one)."""
        self.app, self.limits, self.clock = app, limits, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request against its route's limit, or answer 429."""
        if scope["type"] == "http":
            route = write_route(scope.get("method", ""), scope.get("path", ""))
            if route is not None:
                ip = client_ip(scope)
                try:
                    self.limits.take(route, ip, self.clock())
                except RateLimited as exc:
                    resp = JSONResponse({"detail": str(exc)}, status_code=429, headers={
                        "Retry-After": retry_after_header(exc.retry_after)})
                    await resp(scope, receive, send)
                    return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------ operator notice


def is_loopback_host(host: str) -> bool:
    """True if `host` (a listen address) is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it resolves to a reachable address


def describe_limits(validator: Any, edge: EdgeSettings, connection_cap: int) -> str:
    """The rate limits and connection caps in force, in one sentence (the operator notice
    of `node start --host` on a non-loopback address). `validator`: a ValidatorConfig."""
    return (
        f"challenges {validator.requests_per_minute_per_ip}/min per IP and "
        f"{validator.requests_per_minute_per_address}/min per worker, "
        f"{validator.max_open_per_worker} open per worker; "
        f"transactions {edge.transactions_per_minute_per_ip}/min per IP (a batch counts "
        f"each); "
        f"reveals {edge.reveals_per_minute_per_ip}/min per IP; "
        f"failed audits {validator.ip_failures_per_hour}/h per IP; "
        f"connections {edge.max_connections_per_ip} per IP, {connection_cap} overall; "
        f"request header within {edge.header_timeout:g} s, body within "
        f"{edge.body_timeout:g} s + 1 s per {edge.min_body_rate // 1024} KiB, "
        f"a client taking none of a response for {edge.send_timeout:g} s is closed"
    )

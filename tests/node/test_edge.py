"""The node's network edge (`node.edge`): settings, connection guard, read deadlines,
throttled logging, write rate limits and the operator notice.

The guard is exercised on a real uvicorn server (`node_server`, the one every node runs)
over real sockets on loopback, serving a minimal ASGI app so that only the edge is under
test; the flood against a whole node process is `test_floods.py`. Connections from other
client addresses use other loopback source addresses (127.0.0.2, ...), which Linux routes
to the same interface.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hashcloud.chain.tx import tx_to_json
from hashcloud.crypto.signatures import _verify_cached, clear_verification_cache
from hashcloud.errors import InvalidOption
from hashcloud.node.app import BodyLimit, create_app
from hashcloud.node.config import ValidatorConfig
from hashcloud.node.edge import (
    ConnectionGuard,
    EdgeSettings,
    LogThrottle,
    WriteRateLimit,
    describe_limits,
    is_loopback_host,
    write_route,
)
from hashcloud.node.server import bind_socket, node_server
from hashcloud.node.service import NodeService
from tests.node.conftest import (
    LISTEN_RE,
    NodeDir,
    cli_env,
    hashcloud_cmd,
    make_node_dir,
    open_client,
    transfer,
)

pytestmark = pytest.mark.timeout(30)


# --------------------------------------------------------------------------- settings


def test_settings_refuse_unusable_values() -> None:
    for field, value in [("header_timeout", 0), ("body_timeout", -1.0),
                         ("header_timeout", float("nan")), ("max_connections_per_ip", 0),
                         ("transactions_per_minute_per_ip", 1.5), ("max_connections", 0),
                         ("reveals_per_minute_per_ip", True), ("min_body_rate", "1")]:
        with pytest.raises(InvalidOption, match=field):
            EdgeSettings(**{field: value})


def test_connection_cap_stays_below_the_fd_limit() -> None:
    edge = EdgeSettings()
    assert edge.connection_cap(256) == 256 - 112
    assert edge.connection_cap(1024) == 1024 - 128
    assert edge.connection_cap(1 << 20) == 10_000  # the default ceiling
    assert EdgeSettings(max_connections=100).connection_cap(1024) == 100
    assert EdgeSettings(max_connections=5000).connection_cap(1024) == 896


def test_body_deadline_grows_with_the_declared_length() -> None:
    edge = EdgeSettings(body_timeout=10, min_body_rate=1000)
    assert edge.body_deadline(None) == 10
    assert edge.body_deadline(5000) == 15


def test_raise_fd_limit_lifts_the_soft_limit_to_the_hard_one(tmp_path: Path) -> None:
    import resource

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 400))

    code = ("import resource; from hashcloud.node.edge import raise_fd_limit; "
            "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         preexec_fn=lower, env=cli_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["400", "400"]


# ----------------------------------------------------------------------- the guard


class _Conn:
    """A stand-in transport for the guard's bookkeeping (it only calls `abort`)."""

    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def test_guard_caps_each_address_and_releases() -> None:
    guard = ConnectionGuard(cap=10, per_ip=2)
    a, b, c = _Conn(), _Conn(), _Conn()
    assert guard.admit(a, "x") and guard.admit(b, "x")
    assert not guard.admit(c, "x")
    assert guard.admit(c, "y")
    assert guard.refused == 1 and guard.count("x") == 2
    guard.release(a)
    guard.release(a)  # idempotent
    assert guard.count("x") == 1 and len(guard) == 2
    assert guard.admit(_Conn(), "x")


def test_guard_at_the_overall_cap_evicts_the_longest_waiting_connection() -> None:
    guard = ConnectionGuard(cap=3, per_ip=10)
    old, busy, new = _Conn(), _Conn(), _Conn()
    for conn in (old, busy, new):
        assert guard.admit(conn, "x")
        guard.set_waiting(conn, True)
    guard.set_waiting(busy, False)  # its request header arrived
    newest = _Conn()
    assert guard.admit(newest, "y")
    assert old.aborted and not busy.aborted and not new.aborted
    assert guard.evicted == 1 and len(guard) == 3 and guard.count("x") == 2
    guard.set_waiting(new, False)
    guard.set_waiting(newest, False)
    assert not guard.admit(_Conn(), "z")  # nobody waits: the new one is refused
    assert guard.refused == 1


def test_trusted_proxy_is_exempt_from_the_per_address_cap() -> None:
    guard = ConnectionGuard(cap=10, per_ip=1, exempt=["10.0.0.1"])
    assert all(guard.admit(_Conn(), "10.0.0.1") for _ in range(5))
    assert guard.admit(_Conn(), "x") and not guard.admit(_Conn(), "x")


# ------------------------------------------------------------- guarded real server


async def _hello(scope: dict, receive: object, send: object) -> None:
    """A minimal ASGI app: reads the body, answers its length (`/big`: BIG bytes). Its
    WebSocket reads until the client leaves; on `/push` it also sends 64 KiB every 10 ms."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()  # type: ignore[operator]
            kind = msg["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})  # type: ignore[operator]
            if kind == "shutdown":
                return
    if scope["type"] == "websocket":
        await receive()  # type: ignore[operator]  # websocket.connect
        await send({"type": "websocket.accept"})  # type: ignore[operator]

        async def push() -> None:
            while True:
                await send({"type": "websocket.send", "bytes": b"h" * 65536})  # type: ignore[operator]
                await asyncio.sleep(0.01)

        pusher = asyncio.create_task(push()) if scope["path"] == "/push" else None
        try:
            while (await receive())["type"] != "websocket.disconnect":  # type: ignore[operator]
                pass
        finally:
            if pusher is not None:
                pusher.cancel()
        return
    body = b""
    while True:
        msg = await receive()  # type: ignore[operator]
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    answer = b"x" * BIG if scope["path"] == "/big" else str(len(body)).encode()
    await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})  # type: ignore[operator]


#: The size of `GET /big`: far more than the kernel buffers of a client reading slowly.
BIG = 4 << 20


class Served:
    """A guarded uvicorn server in a thread: `port`, `server.guard`."""

    def __init__(self, edge: EdgeSettings, keep_alive: float | None = None) -> None:
        self.sock = bind_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = node_server(_hello, log_level="error", edge=edge)
        if keep_alive is not None:  # uvicorn's idle keep-alive close (default 5 s)
            self.server.config.timeout_keep_alive = keep_alive  # type: ignore[assignment]
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        """A raw TCP connection from loopback address `source`."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", self.port))
        return s

    def get(self, source: str = "127.0.0.1") -> bytes:
        """One whole GET from `source`; the response bytes."""
        s = self.connect(source)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return _read_all(s)
        finally:
            s.close()


def _read_all(s: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _closed_by_peer(s: socket.socket) -> bool:
    """Wait (the socket's timeout) for the server to close `s` without answering."""
    return _read_all(s) == b""


@pytest.fixture
def quick() -> Iterator[Served]:
    """A guarded server with short deadlines and a per-address cap of 3."""
    edge = EdgeSettings(header_timeout=0.5, body_timeout=0.5, min_body_rate=1 << 20,
                        send_timeout=0.5, max_connections_per_ip=3, max_connections=6)
    with Served(edge) as served:
        yield served


def test_partial_header_is_closed_at_the_header_deadline(quick: Served) -> None:
    s = quick.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never the blank line
    assert _closed_by_peer(s)
    assert quick.server.guard.timed_out >= 1


def test_dribbled_header_does_not_extend_the_deadline(quick: Served) -> None:
    """A byte every 0.1 s (an idle timeout would never fire) is still closed at the header
    deadline, 0.5 s after the connection opened, while the client is still sending."""
    s = quick.connect()
    s.sendall(b"GET / HTTP/1.1\r\n")
    s.settimeout(0.1)
    closed = False
    for _ in range(40):  # 4 s of dribbling at most
        try:
            s.sendall(b"X")
            closed = s.recv(1) == b""
        except TimeoutError:
            continue
        except OSError:
            closed = True
        if closed:
            break
    assert closed


def test_slow_body_is_closed_at_the_body_deadline(quick: Served) -> None:
    s = quick.connect()
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    assert _closed_by_peer(s)


def _small_buffers_client(served: Served) -> socket.socket:
    """A client connection with small kernel buffers on both ends (the receive buffer set
    before connecting sets the TCP window; accepted sockets inherit the listener's send
    buffer), so a response the client has not read waits in the server's write buffer, not
    in the kernel."""
    served.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(10)
    s.connect(("127.0.0.1", served.port))
    return s


def _wait_for(predicate: object, seconds: float = 10.0) -> bool:
    """Poll `predicate()` every 20 ms for up to `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_response_the_client_never_reads_is_closed_at_the_send_deadline(quick: Served) -> None:
    """A client that sends a request and reads nothing is closed send_timeout after the
    server's buffer filled (it would hold a slot and the response's memory for ever)."""
    s = _small_buffers_client(quick)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _wait_for(lambda: quick.server.guard.send_timed_out >= 1)
    assert _wait_for(lambda: len(quick.server.guard) == 0)
    assert quick.server.guard.timed_out == 0
    s.close()


def test_slow_steady_reader_gets_a_large_response_whole() -> None:
    """A client reading a 4 MiB response in small steps for longer than the header deadline
    (0.5 s) gets all of it: the next request's header deadline starts once the response has
    drained (it used to start when the app finished writing, cutting a follower on a thin
    link mid-download)."""
    with Served(STEADY) as served:
        _read_big_slowly(served)


def _read_big_slowly(served: Served) -> None:
    """`GET /big` with small buffers, read 16 KiB at a time, 3 ms apart; check it whole."""
    s = _small_buffers_client(served)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: no close to flush
    data, started = b"", time.monotonic()
    while not data.endswith(b"x" * 1000) or len(data) < BIG:
        try:
            chunk = s.recv(32768)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        time.sleep(0.003)  # at most 16 KiB a read: > 0.75 s for 4 MiB
    elapsed = time.monotonic() - started
    s.close()
    assert elapsed > 0.5, "too fast to test the deadlines"
    assert len(data) > BIG and data.endswith(b"x" * 1000), (len(data), elapsed)
    assert served.server.guard.send_timed_out == 0 and served.server.guard.timed_out == 0


QUICK_SEND = EdgeSettings(header_timeout=0.5, body_timeout=0.5, send_timeout=0.5,
                          max_connections_per_ip=8)
#: For the tests asserting a reader is NOT cut: a send deadline a starved test thread on a
#: loaded machine cannot plausibly miss, short read deadlines (what those tests are about).
STEADY = EdgeSettings(header_timeout=0.5, body_timeout=0.5, send_timeout=3.0,
                      max_connections_per_ip=8)


def _gone(served: Served, seconds: float = 10.0) -> bool:
    """True once a send deadline closed a connection and no connection is left."""
    return _wait_for(lambda: served.server.guard.send_timed_out >= 1
                     and len(served.server.guard) == 0, seconds)


def test_non_reader_asking_connection_close_is_closed_at_the_send_deadline(
        quick: Served) -> None:
    """`Connection: close` (uvicorn closes the transport as soon as it wrote the body) does
    not escape the send deadline: the close waits for a flush that never comes."""
    s = _small_buffers_client(quick)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _gone(quick)
    s.close()


def test_non_reader_is_closed_even_after_the_keep_alive_close() -> None:
    """uvicorn's keep-alive timer closing the connection first (its 5 s default fires before
    the 30 s send deadline) used to leave it closing for ever, its slot and response held."""
    with Served(QUICK_SEND, keep_alive=0.2) as served:
        s = _small_buffers_client(served)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _gone(served)
        s.close()


def _read_response(s: socket.socket, size: int, pause: float = 0.003) -> bytes:
    """Read one response whose body is `size` bytes, slowly (at most 16 KiB a read, `pause`
    apart: over 0.75 s for 4 MiB at the default)."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and len(body) >= size:
            return data
        chunk = s.recv(16384)
        assert chunk, f"closed after {len(data)} bytes"
        data += chunk
        time.sleep(pause)


@pytest.mark.parametrize("keep_alive", [None, 0.5], ids=["default", "short-keep-alive"])
def test_slow_reader_behind_large_kernel_buffers_keeps_its_connection(
        keep_alive: float | None) -> None:
    """With the kernel holding most of a 4 MiB response (the server's send buffer is not
    limited here; the client's window is 64 KiB), a slow but steady reader makes progress
    the transport's buffer does not show: it gets the whole response and then a second one
    on the same connection. The header deadline and uvicorn's keep-alive close used to
    start when the response reached the kernel and end the connection under the reader."""
    with Served(STEADY, keep_alive=keep_alive) as served:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(10)
        s.connect(("127.0.0.1", served.port))
        started = time.monotonic()
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _read_response(s, BIG)
        assert time.monotonic() - started > 0.5, "too fast to test the deadlines"
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        second = _read_response(s, 1)
        s.close()
        assert first.endswith(b"x" * 1000) and second.endswith(b"\r\n\r\n0")
        guard = served.server.guard
        assert (guard.timed_out, guard.send_timed_out, guard.responses) == (0, 0, 2)


def test_without_tcp_info_a_non_reader_is_still_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel does not report acknowledged bytes, a fall of what waits counts."""
    import hashcloud.node.edge as edge_module

    monkeypatch.setattr(edge_module, "_TCP_INFO", None)
    with Served(QUICK_SEND) as served:
        s = _small_buffers_client(served)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _gone(served)
        s.close()


def test_slow_reader_of_pipelined_large_responses_is_not_cut() -> None:
    """Two large responses pipelined on one connection, read slowly: the second is written
    while the kernel still holds most of the first, so the bytes waiting grow although the
    reader is taking them. Progress is what the peer acknowledged (TCP_INFO), not a fall in
    what waits (with that, the reader was cut at the send deadline). A read every 5 ms
    takes over 1.3 s per response, beyond the 1 s send deadline."""
    edge = EdgeSettings(header_timeout=0.5, body_timeout=0.5, send_timeout=1.0)
    with Served(edge) as served:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(10)
        s.connect(("127.0.0.1", served.port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        data = _read_response(s, BIG, pause=0.005)
        whole = 2 * (data.index(b"\r\n\r\n") + 4 + BIG)
        while len(data) < whole:
            chunk = s.recv(16384)
            assert chunk, f"closed after {len(data)} of {whole} bytes"
            data += chunk
            time.sleep(0.005)
        s.close()
        assert data.count(b"HTTP/1.1 200") == 2
        assert served.server.guard.send_timed_out == 0


def _websocket(served: Served, path: str) -> socket.socket:
    """A raw WebSocket connection to `path` (small buffers), past its handshake."""
    s = _small_buffers_client(served)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def test_websocket_peer_that_never_reads_is_closed_at_the_send_deadline(
        quick: Served) -> None:
    s = _websocket(quick, "/push")
    assert _gone(quick)
    s.close()


def test_websocket_ping_flood_without_reading_is_closed_not_buffered(quick: Served) -> None:
    """Every ping is answered with a pong: a peer sending pings and reading nothing grew the
    node's memory at its upload rate. Now the connection is closed once WS_MAX_UNSENT bytes
    wait, long before the 8 MiB of pings (and pongs) here."""
    s = _websocket(quick, "/")
    ping = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125  # masked with zeros
    sent, closed = 0, False
    try:
        while sent < 8 << 20:
            s.sendall(ping * 512)
            sent += len(ping) * 512
    except OSError:
        closed = True
    assert closed or _gone(quick), f"{sent} bytes of pings sent, connection still open"
    assert _gone(quick)
    assert sent < 8 << 20
    s.close()


def test_websocket_with_a_little_unread_is_closed_at_the_send_deadline(
        quick: Served) -> None:
    """700 pings, then nothing read: ~90 KB of pongs wait, too few to fill the transport's
    buffer (pause_writing never comes), and uvicorn's ping timeout would close it into a
    flush that never ends. The WebSocket's deadline runs for its whole life."""
    s = _websocket(quick, "/")
    ping = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125
    s.sendall(ping * 700)
    assert _gone(quick)
    s.close()


def test_a_reset_mid_response_leaves_no_timer_behind() -> None:
    """uvicorn leaves its keep-alive timer armed when the peer resets the connection, and
    the send phase re-armed it every period: every client dropping out of a download
    leaked its connection object and a timer, for ever."""
    import gc

    with Served(QUICK_SEND, keep_alive=0.1) as served:
        for _ in range(3):
            s = _small_buffers_client(served)
            s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(4096)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            s.close()  # a reset, mid-response
        assert _wait_for(lambda: len(served.server.guard) == 0)
        time.sleep(0.5)  # several keep-alive periods
        gc.collect()
        left = [p for p in gc.get_objects()
                if type(p).__name__ == "GuardedProtocol"
                and getattr(p, "server_state", None) is served.server.server_state
                and (p._sending or (p.timeout_keep_alive_task is not None
                                    and not p.timeout_keep_alive_task.cancelled()))]
        assert left == []


def test_keep_alive_requests_are_served(quick: Served) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{quick.port}") as client:
        for i in range(5):
            assert client.post("/", content=b"x" * i).text == str(i)
            time.sleep(0.2)  # well under the header deadline between requests


def test_connections_over_the_address_cap_are_closed_others_served(quick: Served) -> None:
    held = [quick.connect("127.0.0.2") for _ in range(3)]
    for s in held:
        s.sendall(b"GET / HTTP/1.1\r\n")
    extra = quick.connect("127.0.0.2")
    extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _closed_by_peer(extra)
    assert quick.server.guard.refused >= 1
    assert quick.get("127.0.0.1").endswith(b"\r\n\r\n0")
    for s in held:
        s.close()


def test_honest_client_is_served_when_the_overall_cap_is_full(quick: Served) -> None:
    held = [quick.connect(f"127.0.0.{2 + i // 3}") for i in range(6)]  # 6 = the cap
    for s in held:
        s.sendall(b"GET / HTTP/1.1\r\n")
    time.sleep(0.1)
    assert quick.get("127.0.0.9").endswith(b"\r\n\r\n0")
    assert quick.server.guard.evicted >= 1
    for s in held:
        s.close()


def test_websocket_keeps_its_slot_until_it_closes(tmp_path: Path) -> None:
    """A WebSocket upgraded from a guarded connection counts until it closes; the guard's
    figures are on /metrics."""
    from websockets.sync.client import connect

    from hashcloud.node.server import EmbeddedNode

    make_node_dir(tmp_path / "node")
    with EmbeddedNode(tmp_path / "node") as node:
        guard = node.server.guard  # type: ignore[attr-defined]
        ws_url = node.url.replace("http://", "ws://") + "/v1/ws/heads"
        with connect(ws_url, open_timeout=10) as ws:
            assert "height" in json.loads(ws.recv(timeout=10))
            assert len(guard) == 1
        deadline = time.monotonic() + 10
        while len(guard) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(guard) == 0
        text = httpx.get(f"{node.url}/metrics", timeout=10).text
        assert "hc_connections_open 1.0" in text.splitlines()  # this very request
        assert "hc_connections_refused_total 0.0" in text.splitlines()


# --------------------------------------------------------------------- throttled log


def test_log_throttle_says_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("t.throttle"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t.throttle"):
        for _ in range(1000):
            throttle.warning("accept", "cannot accept")
            now[0] += 0.001
        now[0] += 10
        throttle.warning("accept", "cannot accept")
    lines = [r.getMessage() for r in caplog.records if r.name == "t.throttle"]
    assert lines == ["cannot accept", "cannot accept (999 more in the last 10 s)"]


def test_accept_errors_become_throttled_lines_without_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("t.accept"), 60.0)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(500):
                throttle.loop_exception_handler(loop, {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files")})
            throttle.loop_exception_handler(loop, {"message": "something else"})
    finally:
        loop.close()
    ours = [r for r in caplog.records if r.name == "t.accept"]
    assert len(ours) == 1 and ours[0].exc_info is None
    assert "Too many open files" in ours[0].getMessage()
    assert any("something else" in r.getMessage() for r in caplog.records
               if r.name == "asyncio")  # other loop errors still reach the default handler


def test_uvicorn_invalid_request_warnings_are_throttled(quick: Served,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        for _ in range(20):
            for request in (b"\x00\x01garbage\r\n\r\n",
                            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
                            b"Connection: Upgrade\r\n\r\n"):
                s = quick.connect()
                s.sendall(request)
                s.recv(65536)  # the answer (400, or 200 ignoring the upgrade)
                s.close()
    for message in ("Invalid HTTP request", "Unsupported upgrade request"):
        lines = [r for r in caplog.records if message in r.getMessage()]
        assert 1 <= len(lines) <= 2, message


# --------------------------------------------------------------- write rate limits


def test_write_routes() -> None:
    assert write_route("POST", "/v1/transactions") == "transactions"
    assert write_route("POST", "/v1/transactions/batch") == "batches"  # charged per tx
    assert write_route("POST", "/v1/transactions/other") == "transactions"  # a 405, counted
    assert write_route("POST", "/v1/challenges/" + "ab" * 16 + "/reveal") == "reveals"
    assert write_route("GET", "/v1/transactions/" + "00" * 32) is None
    assert write_route("POST", "/v1/challenges") is None  # limited by the validator
    assert write_route("POST", "/v1/challenges/x/commit") is None


def test_transactions_over_the_rate_get_429_with_retry_after(service: NodeService,
                                                             node_dir: NodeDir) -> None:
    with open_client(service, edge=EdgeSettings(transactions_per_minute_per_ip=2)) as api:
        for nonce in range(2):
            resp = api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, nonce)))
            assert resp.status_code == 200, resp.text
        resp = api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 2)))
        assert resp.status_code == 429
        assert int(resp.headers["retry-after"]) >= 1
        assert "transactions" in resp.json()["detail"]
        # refused before the body is read: even a garbage body gets the 429
        assert api.post("/v1/transactions", content=b"{").status_code == 429
        assert api.get("/v1/info").status_code == 200


def test_the_rate_limit_runs_before_the_body_limit(service: NodeService) -> None:
    """Starlette runs `user_middleware[0]` first: the rate limit (before any body is read),
    then the body limit."""
    app = create_app(service, produce_blocks=False)
    assert [m.cls for m in app.user_middleware] == [WriteRateLimit, BodyLimit]


def test_a_batch_is_charged_its_transaction_count(service: NodeService,
                                                  node_dir: NodeDir) -> None:
    """A batch costs the client's transaction window one place per transaction (each is a
    signature check), all or nothing: a batch that does not fit is refused whole with 429
    and Retry-After before any of its signatures is checked; one that can never fit is a
    400. Was: one place per batch request, ~1,000x the signature checks the limit allows."""
    txs = [transfer(node_dir, n) for n in range(12)]

    def batch(*nonces: int) -> dict:
        return {"transactions": [tx_to_json(txs[n]) for n in nonces]}

    with open_client(service, edge=EdgeSettings(transactions_per_minute_per_ip=10)) as api:
        resp = api.post("/v1/transactions/batch", json=batch(0, 1, 2, 3, 4, 5))
        assert resp.status_code == 200 and resp.json()["accepted"] == 6, resp.text
        clear_verification_cache()
        resp = api.post("/v1/transactions/batch", json=batch(6, 7, 8, 9, 10))  # 6 + 5 > 10
        assert resp.status_code == 429, resp.text
        assert int(resp.headers["retry-after"]) >= 1 and "transactions" in resp.json()["detail"]
        assert _verify_cached.cache_info().misses == 0  # no signature was checked
        assert len(service.mempool) == 6  # nothing of the refused batch was admitted
        assert api.post("/v1/transactions", json=tx_to_json(txs[6])).status_code == 200
        resp = api.post("/v1/transactions/batch", json=batch(7, 8, 9))  # exactly fills it
        assert resp.status_code == 200 and resp.json()["accepted"] == 3, resp.text
        # The window is full: a single transaction and a batch (even an unreadable one,
        # refused before its body is read) get 429.
        assert api.post("/v1/transactions", json=tx_to_json(txs[10])).status_code == 429
        assert api.post("/v1/transactions/batch", content=b"{").status_code == 429
        assert len(service.mempool) == 10
    with open_client(service, edge=EdgeSettings(transactions_per_minute_per_ip=3)) as api:
        resp = api.post("/v1/transactions/batch", json=batch(10, 11, 0, 1))  # 4 > 3 ever
        assert resp.status_code == 400 and "smaller batches" in resp.json()["detail"]


def test_a_batch_of_bad_signatures_is_charged_too(service: NodeService,
                                                   node_dir: NodeDir) -> None:
    """Garbage signatures cost a check each: they count like any transaction."""
    forged = [tx_to_json(transfer(node_dir, n).model_copy(update={"signature": "7f" * 64}))
              for n in range(4)]
    with open_client(service, edge=EdgeSettings(transactions_per_minute_per_ip=6)) as api:
        resp = api.post("/v1/transactions/batch", json={"transactions": forged})
        assert resp.status_code == 200 and resp.json()["accepted"] == 0, resp.text
        resp = api.post("/v1/transactions/batch", json={"transactions": forged})
        assert resp.status_code == 429, resp.text


def test_reveals_over_the_rate_get_429(service: NodeService) -> None:
    with open_client(service, edge=EdgeSettings(reveals_per_minute_per_ip=1)) as api:
        path = "/v1/challenges/" + "ab" * 16 + "/reveal"
        assert api.post(path, json={}).status_code != 429  # refused for its content
        resp = api.post(path, json={})
        assert resp.status_code == 429 and resp.headers["retry-after"]


# ------------------------------------------------------------------ operator notice


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.0.2.7", False),
    ("node.example", False)])
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_limits_notice_names_every_limit() -> None:
    text = describe_limits(ValidatorConfig(), EdgeSettings(), 896)
    for part in ("challenges 240/min per IP", "60/min per worker", "4 open per worker",
                 "transactions 1200/min per IP", "reveals 480/min per IP",
                 "failed audits 20/h per IP", "connections 64 per IP, 896 overall",
                 "header within 10 s", "none of a response for 30 s is closed"):
        assert part in text, part


@pytest.mark.e2e
def test_public_host_start_warns_and_names_the_limits(tmp_path: Path) -> None:
    nd = make_node_dir(tmp_path / "node")
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(
        hashcloud_cmd(home, "node", "start", "--data-dir", str(nd.path), "--host", "0.0.0.0",
                      "--port", "0", "--tx-rate", "77", "--max-connections-per-ip", "9"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "hashcloud node listening on http://0.0.0.0:" in line, line
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    notice = " ".join(err.split())
    assert "warning: listening on 0.0.0.0: the HTTP API is unauthenticated" in notice, err
    assert "transactions 77/min per IP" in notice and "connections 9 per IP" in notice


@pytest.mark.e2e
def test_loopback_start_says_nothing_about_exposure(tmp_path: Path) -> None:
    nd = make_node_dir(tmp_path / "node")
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(
        hashcloud_cmd(home, "node", "start", "--data-dir", str(nd.path), "--port", "0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert proc.stdout is not None
        assert LISTEN_RE.search(proc.stdout.readline())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "unauthenticated" not in err


# ------------------------------------------------------------ send watch, no sockets


class _Timer:
    def __init__(self, when: float, fn: object) -> None:
        self.when, self.fn, self.cancelled = when, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class _Loop:
    """A manual clock and timer queue for `SendWatch`."""

    def __init__(self) -> None:
        self.now, self.timers = 0.0, []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: object) -> _Timer:
        timer = _Timer(self.now + delay, fn)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= end]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = timer.when
            timer.fn()  # type: ignore[operator]
        self.now = end


class _Peer:
    """What the kernel would say: bytes waiting and bytes the peer acknowledged."""

    def __init__(self, unsent: int, taken: int | None) -> None:
        self.unsent, self.taken = unsent, taken


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch):
    """A `SendWatch` factory over a fake loop and peer; returns (make, loop, peer, events)."""
    import hashcloud.node.edge as edge_module

    loop, peer, events = _Loop(), _Peer(1000, 0), []
    monkeypatch.setattr(edge_module, "unsent_bytes", lambda t: peer.unsent)
    monkeypatch.setattr(edge_module, "bytes_taken", lambda t: peer.taken)

    def make(persistent: bool = False) -> edge_module.SendWatch:
        return edge_module.SendWatch(loop, None, 3.0, lambda: events.append("stall"),  # type: ignore[arg-type]
                                     lambda: events.append("drained"), persistent=persistent)

    return make, loop, peer, events


def test_send_watch_stalls_after_a_period_without_progress(watched) -> None:
    make, loop, peer, events = watched
    watch = make()
    watch.start()
    loop.advance(2.9)
    assert events == []
    loop.advance(0.2)
    assert events == ["stall"] and not watch.running


def test_send_watch_counts_acknowledged_bytes_even_while_more_waits(watched) -> None:
    """Pipelined answers: what waits grows every second, but the peer keeps acknowledging."""
    make, loop, peer, events = watched
    make().start()
    for _ in range(20):
        peer.unsent += 5000
        peer.taken += 100  # type: ignore[operator]
        loop.advance(1.0)
    assert events == []
    loop.advance(3.1)  # then nothing more is taken
    assert events == ["stall"]


def test_send_watch_counts_a_fall_of_what_waits_without_acknowledged_bytes(watched) -> None:
    make, loop, peer, events = watched
    peer.taken = None  # the kernel does not say
    make().start()
    for _ in range(10):
        peer.unsent -= 50
        loop.advance(1.0)
    peer.unsent += 10_000  # more written: no progress until it falls below the lowest again
    loop.advance(3.1)
    assert events == ["stall"]


def test_send_watch_stops_when_drained_unless_persistent(watched) -> None:
    make, loop, peer, events = watched
    watch = make()
    watch.start()
    peer.unsent = 0
    loop.advance(1.0)
    assert events == ["drained"] and not watch.running
    events.clear()
    ws = make(persistent=True)
    ws.start()
    loop.advance(5.0)
    assert ws.running and events.count("drained") >= 4 and "stall" not in events
    peer.unsent = 10  # a few bytes its peer never takes
    loop.advance(3.5)
    assert events[-1] == "stall" and not ws.running

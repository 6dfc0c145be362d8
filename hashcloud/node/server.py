"""Running a node: in the foreground (`node start`) or embedded in a thread (`mine`).

Both run the same FastAPI app under uvicorn on a real socket, so the embedded default of
`hashcloud mine` talks HTTP to its node exactly as it would to a remote one.

Client address (SPEC 3 v1.1 "Abuse bounds": the client address is the socket peer unless the
operator names trusted proxies): uvicorn's own default trusts X-Forwarded-For from
127.0.0.1, which would let any local client reset its per-address limits with a made-up
header. `uvicorn_config` turns proxy headers off unless `trusted_proxies` names the
addresses whose X-Forwarded-For (and X-Forwarded-Proto) may be believed
(`node start --trusted-proxy ADDR`).

Every node runs behind `node.edge`: connection caps per client address and overall below
the open-file limit (raised to the hard limit at start), request header and body deadlines,
throttled accept-error logging and per-address write rate limits (`EdgeSettings`, the
`node start` options; issue 11).

Audits run with a single-threaded BLAS: `run_node` limits BLAS to one thread for the whole
process at start, and `engine.rows` holds the same limit around every row recomputation.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from threadpoolctl import threadpool_limits

from hashcloud.errors import InvalidOption, NodeError
from hashcloud.node.app import BackgroundTask, create_app
from hashcloud.node.config import (
    DEFAULT_VALIDATOR_CONFIG,
    NodeFiles,
    ValidatorConfig,
    init_data_dir,
    is_initialised,
    load_data_dir,
)
from hashcloud.node.edge import (
    ACCEPT_BATCH,
    DEFAULT_EDGE_SETTINGS,
    ConnectionGuard,
    EdgeSettings,
    LogThrottle,
    expose_guard_metrics,
    guarded_protocol,
    raise_fd_limit,
    throttle_uvicorn_warnings,
)
from hashcloud.node.service import NodeService

log = logging.getLogger(__name__)


def open_or_init(data_dir: Path, passphrase: str | None = None) -> tuple[NodeFiles, bool]:
    """Load `data_dir`, initialising it first if it has no genesis; (files, created).
    `passphrase` decrypts an encrypted node key.

    A data dir that cannot be created or read (a path under /proc, no permission) is an
    InvalidOption naming it (CLI exit 2, SPEC 7 "unreadable input")."""
    try:
        if is_initialised(data_dir):
            return load_data_dir(data_dir, passphrase), False
        return init_data_dir(data_dir, passphrase=passphrase), True
    except OSError as exc:
        raise InvalidOption(
            f"data dir {data_dir} cannot be used: {exc.strerror or exc}") from None


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one), raising NodeError if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose protocol is
    # TCP, and without it every response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise NodeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: object, *, log_level: str, trusted_proxies: Sequence[str] = (),
                   http: type[asyncio.Protocol] | None = None) -> uvicorn.Config:
    """The uvicorn config of a node: no access log, lifespan on, and proxy headers only from
    `trusted_proxies` (none: the client address is always the socket peer); `http` is the
    HTTP protocol class (a guarded one, `node_server`). The backlog is `ACCEPT_BATCH`:
    asyncio accepts that many connections per wake-up, before the guard sees any."""
    proxies = [p for p in trusted_proxies if p]
    return uvicorn.Config(app, log_level=log_level, access_log=False,  # type: ignore[arg-type]
                          lifespan="on", proxy_headers=bool(proxies),
                          forwarded_allow_ips=proxies or None, http=http or "h11",
                          backlog=ACCEPT_BATCH)


class GuardedServer(uvicorn.Server):
    """A uvicorn server whose event loop logs accept() failures through a `LogThrottle`
    (one line per interval, no traceback) and whose connections pass a `ConnectionGuard`."""

    def __init__(self, config: uvicorn.Config, guard: ConnectionGuard,
                 throttle: LogThrottle) -> None:
        """Serve `config` (its protocol admits through `guard`)."""
        super().__init__(config)
        self.guard = guard
        self.throttle = throttle

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Install the throttled exception handler on the running loop, then serve."""
        asyncio.get_running_loop().set_exception_handler(self.throttle.loop_exception_handler)
        await super().serve(sockets)


def node_server(app: object, *, log_level: str, trusted_proxies: Sequence[str] = (),
                edge: EdgeSettings = DEFAULT_EDGE_SETTINGS) -> GuardedServer:
    """The uvicorn server of a node behind the edge guard (module doc). Raises the soft
    open-file limit first: the overall connection cap is sized below it."""
    cap = edge.connection_cap(raise_fd_limit())
    guard = ConnectionGuard(cap, edge.max_connections_per_ip,
                            exempt=[p for p in trusted_proxies if p])
    throttle_uvicorn_warnings(edge.log_interval)
    config = uvicorn_config(app, log_level=log_level, trusted_proxies=trusted_proxies,
                            http=guarded_protocol(guard, edge))
    return GuardedServer(config, guard, LogThrottle(log, edge.log_interval))


def run_node(service: NodeService, sock: socket.socket, *, log_level: str = "warning",
             block_time: float | None = None, trusted_proxies: Sequence[str] = (),
             produce_blocks: bool = True, tasks: Sequence[BackgroundTask] = (),
             edge: EdgeSettings = DEFAULT_EDGE_SETTINGS) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); the app closes the service on shutdown.

    `trusted_proxies`: the addresses whose X-Forwarded-For names the client (default none).
    `edge`: connection caps, read deadlines and write rate limits (`node.edge`).
    A follower passes `produce_blocks=False` and its sync loop in `tasks` (`create_app`).
    A standalone node limits BLAS to one thread: audits recompute small GEMMs from many
    request threads at once, where spinning BLAS threads only waste CPU."""
    threadpool_limits(limits=1, user_api="blas")
    app = create_app(service, block_time=block_time, close_on_shutdown=True,
                     produce_blocks=produce_blocks, tasks=tasks, edge=edge)
    server = node_server(app, log_level=log_level, trusted_proxies=trusted_proxies, edge=edge)
    expose_guard_metrics(service.metrics.registry, server.guard)
    try:
        server.run(sockets=[sock])
    finally:
        service.close()


class EmbeddedNode:
    """A node in a background thread on 127.0.0.1:<free port>; `url` once started.

    `validator_config` is passed to its `NodeService` (the PoC validator's options), `edge`
    to its app and server (`node.edge`)."""

    def __init__(self, data_dir: Path,
                 validator_config: ValidatorConfig = DEFAULT_VALIDATOR_CONFIG,
                 edge: EdgeSettings = DEFAULT_EDGE_SETTINGS) -> None:
        """Open (or initialise) `data_dir` and bind the socket; `with` starts serving."""
        self.files, self.created = open_or_init(data_dir)
        self.service = NodeService(self.files, validator_config)
        self.sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = node_server(create_app(self.service, edge=edge), log_level="error",
                                  edge=edge)
        expose_guard_metrics(self.service.metrics.registry, self.server.guard)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="hashcloud-embedded-node", daemon=True)

    def __enter__(self) -> EmbeddedNode:
        """Start serving; wait (15 s at most) until the server is up."""
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.service.close()
                raise NodeError("embedded node failed to start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop serving and close the service."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
        self.service.close()

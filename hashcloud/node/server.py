"""Running a node: in the foreground (`node start`) or embedded in a thread (`mine`).

Both run the same FastAPI app under uvicorn on a real socket, so the embedded default of
`hashcloud mine` talks HTTP to its node exactly as it would to a remote one.

Client address (SPEC 3 v1.1 "Abuse bounds": the client address is the socket peer unless the
operator names trusted proxies): uvicorn's own default trusts X-Forwarded-For from
127.0.0.1, which would let any local client reset its per-address limits with a made-up
header. `uvicorn_config` turns proxy headers off unless `trusted_proxies` names the
addresses whose X-Forwarded-For (and X-Forwarded-Proto) may be believed
(`node start --trusted-proxy ADDR`).

Audits run with a single-threaded BLAS: `run_node` limits BLAS to one thread for the whole
process at start, and `engine.rows` holds the same limit around every row recomputation.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from threadpoolctl import threadpool_limits

from hashcloud.errors import InvalidOption, NodeError
from hashcloud.node.app import create_app
from hashcloud.node.config import (
    DEFAULT_VALIDATOR_CONFIG,
    NodeFiles,
    ValidatorConfig,
    init_data_dir,
    is_initialised,
    load_data_dir,
)
from hashcloud.node.service import NodeService

log = logging.getLogger(__name__)


def open_or_init(data_dir: Path) -> tuple[NodeFiles, bool]:
    """Load `data_dir`, initialising it first if it has no genesis; (files, created).

    A data dir that cannot be created or read (a path under /proc, no permission) is an
    InvalidOption naming it (CLI exit 2, SPEC 7 "unreadable input")."""
    try:
        if is_initialised(data_dir):
            return load_data_dir(data_dir), False
        return init_data_dir(data_dir), True
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


def uvicorn_config(app: object, *, log_level: str,
                   trusted_proxies: Sequence[str] = ()) -> uvicorn.Config:
    """The uvicorn config of a node: no access log, lifespan on, and proxy headers only from
    `trusted_proxies` (none: the client address is always the socket peer)."""
    proxies = [p for p in trusted_proxies if p]
    return uvicorn.Config(app, log_level=log_level, access_log=False,  # type: ignore[arg-type]
                          lifespan="on", proxy_headers=bool(proxies),
                          forwarded_allow_ips=proxies or None)


def run_node(service: NodeService, sock: socket.socket, *, log_level: str = "warning",
             block_time: float | None = None, trusted_proxies: Sequence[str] = ()) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); the app closes the service on shutdown.

    `trusted_proxies`: the addresses whose X-Forwarded-For names the client (default none).
    A standalone node limits BLAS to one thread: audits recompute small GEMMs from many
    request threads at once, where spinning BLAS threads only waste CPU."""
    threadpool_limits(limits=1, user_api="blas")
    app = create_app(service, block_time=block_time, close_on_shutdown=True)
    server = uvicorn.Server(uvicorn_config(app, log_level=log_level,
                                           trusted_proxies=trusted_proxies))
    try:
        server.run(sockets=[sock])
    finally:
        service.close()


class EmbeddedNode:
    """A node in a background thread on 127.0.0.1:<free port>; `url` once started.

    `validator_config` is passed to its `NodeService` (the PoC validator's options)."""

    def __init__(self, data_dir: Path,
                 validator_config: ValidatorConfig = DEFAULT_VALIDATOR_CONFIG) -> None:
        """Open (or initialise) `data_dir` and bind the socket; `with` starts serving."""
        self.files, self.created = open_or_init(data_dir)
        self.service = NodeService(self.files, validator_config)
        self.sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(create_app(self.service),
                                                    log_level="error"))
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

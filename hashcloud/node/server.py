"""Running a node: in the foreground (`node start`) or embedded in a thread (`mine`).

Both run the same FastAPI app under uvicorn on a real socket, so the embedded default of
`hashcloud mine` talks HTTP to its node exactly as it would to a remote one.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import uvicorn
from threadpoolctl import threadpool_limits

from hashcloud.errors import NodeError
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
    """Load `data_dir`, initialising it first if it has no genesis; (files, created)."""
    if is_initialised(data_dir):
        return load_data_dir(data_dir), False
    return init_data_dir(data_dir), True


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


def run_node(service: NodeService, sock: socket.socket, *, log_level: str = "warning",
             block_time: float | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); the app closes the service on shutdown.

    A standalone node limits BLAS to one thread: audits recompute small GEMMs from many
    request threads at once, where spinning BLAS threads only waste CPU."""
    threadpool_limits(limits=1, user_api="blas")
    app = create_app(service, block_time=block_time, close_on_shutdown=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
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
        config = uvicorn.Config(create_app(self.service), log_level="error", access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="hashcloud-embedded-node", daemon=True)

    def __enter__(self) -> EmbeddedNode:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.service.close()
                raise NodeError("embedded node failed to start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
        self.service.close()

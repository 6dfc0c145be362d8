"""A tiny fake node on 127.0.0.1 for tests of what a client does with a node's odd answers.

`FakeNode` is a real HTTP server (stdlib `http.server`, a thread): each request is answered
by `routes[path]` (query string stripped), a `(status, json_body)` pair or a function of the
full path returning one; an unknown path is a 404. It records the paths asked, so a test can
see e.g. that a client stopped asking. A real socket, so the code under test runs its real
HTTP stack (httpx, timeouts, the CLI as a subprocess).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, Any]
Route = Answer | Callable[[str], Answer]


class FakeNode:
    """A fake node serving `routes` (module doc); use as a context manager, `url` once up."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                fake.requests.append(self.path)
                route = fake.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, body = 404, {"detail": "not found"}
                else:
                    status, body = route(self.path) if callable(route) else route
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._answer()

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeNode:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

"""The reason carried by a node's error answer (SPEC 7: every error is `{"detail": "..."}`).

Both sides that read another node's errors use this one rule: the HTTP client
(`client.http`, for the CLI and miners) and a follower relaying to its producer
(`node.follower`). It reads text, not an HTTP library's response, so the wire layer stays
free of any transport.
"""

from __future__ import annotations

import json

__all__ = ["DETAIL_CHARS", "error_detail"]

DETAIL_CHARS = 200
"""Most characters kept of an answer that is not an error body (a proxy's HTML page...)."""


def error_detail(text: str, fallback: str = "") -> str:
    """The `detail` string of error answer `text` (`ErrorBody`); else the start of the JSON
    value or of the text itself, or `fallback` (e.g. the HTTP reason phrase) when empty."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:DETAIL_CHARS] or fallback
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    return str(body)[:DETAIL_CHARS]

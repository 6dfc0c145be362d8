"""`api.detail.error_detail`: the one rule reading a node's error answer (SPEC 7)."""

from __future__ import annotations

import pytest

from hashcloud.api.detail import DETAIL_CHARS, error_detail


@pytest.mark.parametrize(("text", "want"), [
    ('{"detail": "nonce gap"}', "nonce gap"),
    ('{"detail": ["a", "b"]}', "{'detail': ['a', 'b']}"),  # not a string: shown as it came
    ("[1, 2]", "[1, 2]"),
    ('"just text"', "just text"),
    ("<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
    ("", "Bad Gateway"),  # nothing at all: the fallback (the reason phrase)
])
def test_error_detail(text: str, want: str) -> None:
    assert error_detail(text, "Bad Gateway") == want


def test_a_long_answer_is_cut() -> None:
    assert error_detail("x" * 10_000) == "x" * DETAIL_CHARS
    assert len(error_detail("[" + "1," * 5000 + "1]")) == DETAIL_CHARS

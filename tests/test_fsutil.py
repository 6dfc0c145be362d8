"""Durable file operations and the shared record framing (hashcloud.fsutil).

atomic_replace leaves the old or the new file, never a mix; create_exclusive never
overwrites, even when racing; framed logs round-trip, a torn tail is told from corruption,
and the maximum body size is enforced. Property tests (hypothesis) cover the framing.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.errors import DecodeError, FrameCorrupt
from hashcloud.fsutil import (
    FRAME_HEAD,
    FrameScan,
    atomic_replace,
    create_exclusive,
    frame,
    frame_size,
    fsync_dir,
    read_frame_at,
)

MAGIC = b"TEST"
MAX = 4096


def scan(data: bytes, *, start: int = 0, max_body: int = MAX) -> tuple[list, FrameScan]:
    """Scan ``data``; return the ``(offset, body)`` list and the finished scanner."""
    scanner = FrameScan(io.BytesIO(data), MAGIC, max_body=max_body, start=start)
    return list(scanner), scanner


def log_of(bodies: list[bytes]) -> bytes:
    """A framed log holding ``bodies``."""
    return b"".join(frame(MAGIC, b) for b in bodies)


# ---------------------------------------------------------------------- atomic_replace


def test_atomic_replace_creates_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "f"
    atomic_replace(path, b"one")
    assert path.read_bytes() == b"one"
    atomic_replace(path, b"two", durable=False)
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    atomic_replace(tmp_path / "m", b"x", mode=0o600)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o600


def test_atomic_replace_failure_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    atomic_replace(path, b"old")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        atomic_replace(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # temp file removed


def test_atomic_replace_readers_see_old_or_new_only(tmp_path: Path) -> None:
    path = tmp_path / "f"
    old, new = b"o" * 200_000, b"n" * 300_000
    atomic_replace(path, old)
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(path.read_bytes())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            atomic_replace(path, new if i % 2 == 0 else old, durable=False)
    finally:
        stop.set()
        thread.join()
    assert seen <= {old, new}


def test_fsync_dir(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    fsync_dir(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")


# -------------------------------------------------------------------- create_exclusive


def test_create_exclusive_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "key"
    create_exclusive(path, b"first", mode=0o600)
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        create_exclusive(path, b"second")
    assert path.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_create_exclusive_racing_creators_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "key"
    barrier = threading.Barrier(8)
    results: list[bytes | None] = []
    lock = threading.Lock()

    def creator(i: int) -> None:
        data = b"writer-%d" % i * 1000
        barrier.wait()
        try:
            create_exclusive(path, data)
        except FileExistsError:
            data = None
        with lock:
            results.append(data)

    threads = [threading.Thread(target=creator, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert path.read_bytes() == winners[0]  # complete, never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


# ----------------------------------------------------------------------------- framing


def test_frame_layout_is_the_block_log_format() -> None:
    body = b"hello"
    data = frame(MAGIC, body)
    head = MAGIC + struct.pack(">I", 5)
    assert data[:12] == head + struct.pack(">I", zlib.crc32(head))
    assert data[12:17] == body
    assert data[17:] == hashlib.sha256(data[:17]).digest()
    assert len(data) == frame_size(len(body)) == FRAME_HEAD.size + 5 + 32
    with pytest.raises(ValueError, match="4 bytes"):
        frame(b"LONGER", body)


def test_scan_round_trip_and_start_offset() -> None:
    bodies = [b"a", b"", b"c" * 100]
    data = log_of(bodies)
    records, scanner = scan(data)
    assert [b for _, b in records] == bodies
    assert [o for o, _ in records] == [0, frame_size(1), frame_size(1) + frame_size(0)]
    assert (scanner.end, scanner.torn_bytes) == (len(data), 0)
    records, _ = scan(b"HEADER" + data, start=6)
    assert [b for _, b in records] == bodies
    assert scan(b"")[0] == []


def test_read_frame_at(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(log_of([b"x", b"yy"]))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert read_frame_at(fd, frame_size(1), MAGIC, max_body=MAX) == b"yy"
        with pytest.raises(FrameCorrupt, match="bad record header"):
            read_frame_at(fd, 1, MAGIC, max_body=MAX)
        with pytest.raises(FrameCorrupt, match="record truncated"):
            read_frame_at(fd, path.stat().st_size - 3, MAGIC, max_body=MAX)
        with pytest.raises(FrameCorrupt, match="bad record header"):
            read_frame_at(fd, 0, MAGIC, max_body=0)
    finally:
        os.close(fd)
    data = bytearray(path.read_bytes())
    data[13] ^= 1
    path.write_bytes(bytes(data))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(FrameCorrupt, match="checksum mismatch"):
            read_frame_at(fd, 0, MAGIC, max_body=MAX)
    finally:
        os.close(fd)


def test_torn_tail_versus_corruption_examples() -> None:
    data = log_of([b"one", b"two"])
    second = frame_size(3)
    for cut in range(second + 1, len(data)):  # every torn tail of the last record
        records, scanner = scan(data[:cut])
        assert [b for _, b in records] == [b"one"]
        assert (scanner.end, scanner.torn_bytes) == (second, cut - second)
    with pytest.raises(FrameCorrupt) as info:  # a flipped digest byte at the very end
        scan(data[:-1] + bytes([data[-1] ^ 1]))
    assert (info.value.offset, info.value.reason) == (second, "checksum mismatch")
    with pytest.raises(FrameCorrupt, match="bad record magic"):  # not a prefix of a frame
        scan(data + b"\x00\x00")
    with pytest.raises(FrameCorrupt, match="bad record header checksum"):  # flipped length
        scan(data[:second + 5] + bytes([data[second + 5] ^ 0x10]) + data[second + 6 :])


def test_frame_corrupt_is_an_error_of_the_tree() -> None:
    """`FrameCorrupt` lives in `errors` and is a `DecodeError`, so every catch still holds."""
    data = log_of([b"one"])
    with pytest.raises(DecodeError) as info:
        scan(data[:-1] + bytes([data[-1] ^ 1]))
    assert type(info.value) is FrameCorrupt
    assert str(info.value) == "corrupt record at offset 0: checksum mismatch"


def test_max_body_is_enforced() -> None:
    data = log_of([b"ok", b"x" * 100])
    assert len(scan(data, max_body=100)[0]) == 2
    with pytest.raises(FrameCorrupt, match="bad record header checksum") as info:
        scan(data, max_body=99)
    assert info.value.offset == frame_size(2)
    # A header claiming a huge body is refused at once, not waited for as a torn tail.
    head = MAGIC + struct.pack(">I", 2**31)
    with pytest.raises(FrameCorrupt):
        scan(head + struct.pack(">I", zlib.crc32(head)) + b"partial")


# ------------------------------------------------------------------- property tests

bodies_st = st.lists(st.binary(max_size=300), max_size=8)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(bodies_st)
def test_property_round_trip(bodies: list[bytes]) -> None:
    records, scanner = scan(log_of(bodies))
    assert [b for _, b in records] == bodies
    assert scanner.torn_bytes == 0


@settings(derandomize=True, max_examples=60, deadline=None)
@given(bodies_st.filter(bool), st.data())
def test_property_any_cut_is_a_torn_tail(bodies: list[bytes], data: st.DataObject) -> None:
    full = log_of(bodies)
    last = len(full) - frame_size(len(bodies[-1]))
    cut = data.draw(st.integers(min_value=last + 1, max_value=len(full) - 1))
    records, scanner = scan(full[:cut])
    assert [b for _, b in records] == bodies[:-1]
    assert (scanner.end, scanner.torn_bytes) == (last, cut - last)


@settings(derandomize=True, max_examples=100, deadline=None)
@given(bodies_st.filter(bool), st.data())
def test_property_any_flipped_byte_is_corruption(
    bodies: list[bytes], data: st.DataObject
) -> None:
    full = bytearray(log_of(bodies))
    pos = data.draw(st.integers(min_value=0, max_value=len(full) - 1))
    full[pos] ^= data.draw(st.integers(min_value=1, max_value=255))
    # Never a torn tail, never silently different records: always reported, at or before
    # the damaged frame.
    with pytest.raises(FrameCorrupt) as info:
        scan(bytes(full))
    assert info.value.offset <= pos


def test_read_rebuildable_reads_or_logs(tmp_path, caplog):
    import logging

    from hashcloud.fsutil import read_rebuildable

    log = logging.getLogger("hashcloud.test")
    (tmp_path / "f").write_bytes(b"data")
    assert read_rebuildable(tmp_path / "f", missing="m", unreadable="u", logger=log) == b"data"
    with caplog.at_level(logging.INFO, logger="hashcloud.test"):
        assert read_rebuildable(tmp_path / "no", missing="gone; rebuilding",
                                unreadable="u", logger=log) is None
        assert read_rebuildable(tmp_path, missing="m", unreadable="cannot read it",
                                logger=log) is None  # a directory: IsADirectoryError
    assert "gone; rebuilding" in caplog.text and "cannot read it (" in caplog.text

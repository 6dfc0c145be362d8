"""Tests for the flat-file chain store (hashcloud.chain.store, SPEC 6)."""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.chain.store import (
    INDEX_NAME,
    LOG_HEADER,
    LOG_NAME,
    SNAPSHOT_NAME,
    WATERMARK_NAME,
    ChainStore,
    Mark,
    Watermark,
    encode_record,
)
from hashcloud.chain.store.index import HEADER as INDEX_HEADER
from hashcloud.chain.store.watermark import SLOT_SIZE
from hashcloud.errors import StoreError, StoreLocked, StoreRolledBack
from tests.chain.store_writer import GENESIS as WRITER_GENESIS
from tests.chain.store_writer import block_hash as writer_hash
from tests.chain.store_writer import block_payload as writer_payload

WRITER_SCRIPT = Path(__file__).with_name("store_writer.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
LOGGER = "hashcloud.chain.store"


def bh(height: int, salt: bytes = b"") -> bytes:
    """A distinct 32-byte block hash for tests."""
    return hashlib.sha256(b"h%d" % height + salt).digest()


def payload(height: int, size: int = 40) -> bytes:
    """A deterministic payload for tests."""
    return (b"payload-%d-" % height * size)[:size]


def fill(data_dir: Path, count: int, size: int = 40) -> None:
    """Create a store in ``data_dir`` holding ``count`` blocks."""
    with ChainStore(data_dir) as s:
        for h in range(count):
            s.append_block(h, bh(h), payload(h, size))


def record_offsets(data_dir: Path) -> list[int]:
    """Offsets of every record in the log, plus the file size, computed independently."""
    data = (data_dir / LOG_NAME).read_bytes()
    offsets, pos = [], len(LOG_HEADER)
    while pos < len(data):
        offsets.append(pos)
        body_len = int.from_bytes(data[pos + 4 : pos + 8], "big")
        pos += 12 + body_len + 32
    return offsets + [len(data)]


def temp_files(data_dir: Path) -> list[str]:
    """Names of temp files an atomic replace (old or fsutil naming) left in ``data_dir``."""
    return [p.name for p in data_dir.iterdir() if ".tmp." in p.name or p.name.endswith(".tmp")]


class LineReader:
    """Drain a child's text stdout line by line on one thread, into a queue.

    Every line is read through this one reader: mixing ``readline`` (which reads ahead into
    Python's buffer) with ``communicate`` (which reads the raw fd) loses the read-ahead lines.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._stdout = proc.stdout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self._stdout:
            self._lines.put(line)
        self._lines.put(None)  # EOF

    def line(self, timeout: float = 20.0) -> str:
        """The next line; fails the test on EOF or after ``timeout`` seconds."""
        got = self._lines.get(timeout=timeout)
        assert got is not None, "writer exited early"
        return got

    def rest(self, timeout: float = 10.0) -> list[str]:
        """Every remaining line up to EOF (call once the child is dead)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "stdout never reached EOF"
        out = []
        while (got := self._lines.get_nowait()) is not None:
            out.append(got)
        return out


def flip(path: Path, offset: int) -> None:
    """Flip every bit of the byte at ``offset``."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------ round trips


def test_empty_store(tmp_path: Path) -> None:
    with ChainStore(tmp_path / "d") as s:
        assert s.height == -1
        assert s.head_hash is None
        assert list(s.iter_blocks()) == []
        assert s.find_block(0) is None
        with pytest.raises(StoreError, match="no block at height 0"):
            s.get_block(0)


def test_append_and_read(tmp_path: Path) -> None:
    with ChainStore(tmp_path) as s:
        for h in range(5):
            s.append_block(h, bh(h), payload(h))
        assert s.height == 4
        assert s.head_hash == bh(4)
        assert s.get_block(2) == payload(2)
        assert s.get_by_hash(bh(3)) == (3, payload(3))
        assert s.has_block_hash(bh(0)) and not s.has_block_hash(bh(9))
        assert s.find_block_hash(1) == bh(1) and s.find_block_hash(5) is None
        assert list(s.iter_blocks(3)) == [(3, bh(3), payload(3)), (4, bh(4), payload(4))]
        assert s.find_by_hash(bh(9)) is None
        assert s.find_block(-1) is None
        with pytest.raises(StoreError, match="no block at height 7"):
            s.get_block(7)
        with pytest.raises(StoreError, match="no block with hash"):
            s.get_by_hash(bh(9))


@settings(derandomize=True, max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=12))
def test_roundtrip_random_payloads(payloads: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with ChainStore(tmp) as s:
            for h, p in enumerate(payloads):
                s.append_block(h, bh(h), p)
        for readonly in (False, True):
            with ChainStore(tmp, readonly=readonly) as s:
                assert s.height == len(payloads) - 1
                assert [r[2] for r in s.iter_blocks()] == payloads
                for h, p in enumerate(payloads):
                    assert s.get_by_hash(bh(h)) == (h, p)
                s.verify_log()


def test_append_blocks_batch(tmp_path: Path) -> None:
    with ChainStore(tmp_path) as s:
        s.append_blocks([(h, bh(h), payload(h)) for h in range(3)])
        with pytest.raises(StoreError, match="expected 5"):
            s.append_blocks([(3, bh(3), b""), (4, bh(4), b""), (6, bh(6), b"")])
        assert s.height == 2  # a bad batch appends nothing
    with ChainStore(tmp_path) as s:
        assert [r[0] for r in s.iter_blocks()] == [0, 1, 2]


def test_reopen_preserves_everything(tmp_path: Path) -> None:
    fill(tmp_path, 20)
    original = (tmp_path / LOG_NAME).read_bytes()
    for verify in (True, False):
        with ChainStore(tmp_path, verify=verify) as s:
            assert s.height == 19
            assert list(s.iter_blocks()) == [(h, bh(h), payload(h)) for h in range(20)]
    assert (tmp_path / LOG_NAME).read_bytes() == original
    with ChainStore(tmp_path) as s:
        s.append_block(20, bh(20), payload(20))
    with ChainStore(tmp_path, readonly=True) as s:
        assert s.get_block(20) == payload(20)


def test_wrong_append_refused(tmp_path: Path) -> None:
    with ChainStore(tmp_path) as s:
        with pytest.raises(StoreError, match="expected 0"):
            s.append_block(1, bh(1), b"x")
        s.append_block(0, bh(0), b"x")
        for bad_height in (0, 2, -1):
            with pytest.raises(StoreError, match="cannot append block at height"):
                s.append_block(bad_height, bh(bad_height), b"x")
        with pytest.raises(StoreError, match="already stored"):
            s.append_block(1, bh(0), b"x")
        with pytest.raises(StoreError, match="32 bytes"):
            s.append_block(1, b"short", b"x")
        with pytest.raises(StoreError, match="must be bytes"):
            s.append_block(1, bh(1), "text")  # type: ignore[arg-type]
        assert s.height == 0


def test_readonly_refuses_writes_and_never_creates_files(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no chain store"):
        ChainStore(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()
    fill(tmp_path, 2)
    (tmp_path / INDEX_NAME).unlink()
    before = sorted(p.name for p in tmp_path.iterdir())
    with ChainStore(tmp_path, readonly=True) as s:
        with pytest.raises(StoreError, match="read-only"):
            s.append_block(2, bh(2), b"")
        with pytest.raises(StoreError, match="read-only"):
            s.write_snapshot(1, bh(1), b"")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    s = ChainStore(tmp_path)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get_block(0)
    with pytest.raises(StoreError, match="closed"):
        s.append_block(0, bh(0), b"")


# ------------------------------------------------------------------------------ index


def test_index_deleted_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, 10)
    good_index = (tmp_path / INDEX_NAME).read_bytes()
    for verify in (True, False):
        (tmp_path / INDEX_NAME).unlink()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            with ChainStore(tmp_path, verify=verify) as s:
                assert s.get_by_hash(bh(7)) == (7, payload(7))
        assert "index missing" in caplog.text
        caplog.clear()
        assert (tmp_path / INDEX_NAME).read_bytes() == good_index


@pytest.mark.parametrize("verify", [True, False])
def test_index_corrupted_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, verify: bool
) -> None:
    fill(tmp_path, 10)
    good_index = (tmp_path / INDEX_NAME).read_bytes()
    for damage in (
        lambda: flip(tmp_path / INDEX_NAME, 30),
        lambda: (tmp_path / INDEX_NAME).write_bytes(b"garbage"),
        lambda: (tmp_path / INDEX_NAME).write_bytes(good_index[:-5]),
    ):
        damage()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            with ChainStore(tmp_path, verify=verify) as s:
                assert s.height == 9
                assert s.get_block(4) == payload(4)
        assert "index" in caplog.text
        caplog.clear()
        assert (tmp_path / INDEX_NAME).read_bytes() == good_index


@pytest.mark.parametrize("verify", [True, False])
def test_stale_index_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, verify: bool
) -> None:
    # An index from an older run (fewer blocks) and one from a different chain.
    fill(tmp_path / "other", 12)
    fill(tmp_path / "a", 4)
    old_index = (tmp_path / "a" / INDEX_NAME).read_bytes()
    with ChainStore(tmp_path / "a") as s:
        for h in range(4, 9):
            s.append_block(h, bh(h), payload(h))
    good_index = (tmp_path / "a" / INDEX_NAME).read_bytes()
    for stale in (old_index, (tmp_path / "other" / INDEX_NAME).read_bytes()):
        (tmp_path / "a" / INDEX_NAME).write_bytes(stale)
        with ChainStore(tmp_path / "a", verify=verify) as s:
            assert s.height == 8
            assert list(s.iter_blocks()) == [(h, bh(h), payload(h)) for h in range(9)]
        assert (tmp_path / "a" / INDEX_NAME).read_bytes() == good_index


ENTRY = 48  # bytes per format-2 index entry


def index_entries(data_dir: Path) -> int:
    """Number of whole entries in the index file."""
    return ((data_dir / INDEX_NAME).stat().st_size - len(INDEX_HEADER)) // ENTRY


def test_index_is_appended_not_rewritten(tmp_path: Path) -> None:
    fill(tmp_path, 30)
    before = (tmp_path / INDEX_NAME).read_bytes()
    inode = (tmp_path / INDEX_NAME).stat().st_ino
    with ChainStore(tmp_path) as s:
        for h in range(30, 40):
            s.append_block(h, bh(h), payload(h))
            # Up to date after every append (not only on close), one entry per block.
            assert index_entries(tmp_path) == h + 1
        s.append_blocks([(h, bh(h), payload(h)) for h in range(40, 45)])
        assert index_entries(tmp_path) == 45
    after = (tmp_path / INDEX_NAME).read_bytes()
    assert after.startswith(before) and len(after) == len(before) + 15 * ENTRY
    assert (tmp_path / INDEX_NAME).stat().st_ino == inode  # same file: never replaced
    with ChainStore(tmp_path, verify=False) as s:
        assert list(s.iter_blocks()) == [(h, bh(h), payload(h)) for h in range(45)]


def test_index_current_after_a_crash_without_close(tmp_path: Path) -> None:
    # A writer killed without close() leaves an index covering every acknowledged block.
    s = ChainStore(tmp_path / "live")
    for h in range(12):
        s.append_block(h, bh(h), payload(h))
    shutil.copytree(tmp_path / "live", tmp_path / "crashed")  # the files as a kill leaves them
    s.close()
    fill(tmp_path / "ref", 12)
    assert (tmp_path / "crashed" / INDEX_NAME).read_bytes() == (
        tmp_path / "ref" / INDEX_NAME
    ).read_bytes()


@pytest.mark.parametrize("verify", [True, False])
def test_short_or_torn_index_is_extended_from_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, verify: bool
) -> None:
    fill(tmp_path, 20)
    good = (tmp_path / INDEX_NAME).read_bytes()
    inode = (tmp_path / INDEX_NAME).stat().st_ino
    for keep in (len(INDEX_HEADER), len(INDEX_HEADER) + 7 * ENTRY,
                 len(INDEX_HEADER) + 7 * ENTRY + 20, len(good) - 1):
        (tmp_path / INDEX_NAME).write_bytes(good[:keep])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            with ChainStore(tmp_path, verify=verify) as s:
                assert s.height == 19
                assert s.get_by_hash(bh(13)) == (13, payload(13))
        assert "index" in caplog.text
        assert (tmp_path / INDEX_NAME).read_bytes() == good
    assert (tmp_path / INDEX_NAME).stat().st_ino == inode  # extended in place, not rewritten


@pytest.mark.parametrize("verify", [True, False])
def test_damaged_index_entry_keeps_the_prefix_and_rederives_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, verify: bool
) -> None:
    fill(tmp_path, 20)
    good = (tmp_path / INDEX_NAME).read_bytes()
    damages = [
        good[:-5 * ENTRY] + b"\x00" * 5 * ENTRY,  # zero-filled tail (power loss)
        bytearray(good),
    ]
    damages[1][len(INDEX_HEADER) + 9 * ENTRY + 12] ^= 0x40  # a hash byte of entry 9
    # A well-checksummed entry pointing at the wrong offset breaks contiguity.
    entry = struct.pack(">QI32s", 99, 10, bh(3))
    damages.append(good[: len(INDEX_HEADER) + 3 * ENTRY] + entry
                   + struct.pack(">I", zlib.crc32(entry))
                   + good[len(INDEX_HEADER) + 4 * ENTRY :])
    for damaged in damages:
        (tmp_path / INDEX_NAME).write_bytes(bytes(damaged))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            with ChainStore(tmp_path, verify=verify) as s:
                assert list(s.iter_blocks()) == [(h, bh(h), payload(h)) for h in range(20)]
        assert "block index" in caplog.text
        assert (tmp_path / INDEX_NAME).read_bytes() == good


def test_old_format_index_is_rebuilt_transparently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(tmp_path, 6)
    good = (tmp_path / INDEX_NAME).read_bytes()
    offsets = record_offsets(tmp_path)
    # Format 1: header with covered size and count, (offset, hash) entries, one SHA-256.
    v1 = b"HCBIDX1\n" + struct.pack(">IQQ", 1, offsets[-1], 6) + b"".join(
        struct.pack(">Q32s", o, bh(h)) for h, o in enumerate(offsets[:-1])
    )
    v1 += hashlib.sha256(v1).digest()
    for verify in (True, False):
        (tmp_path / INDEX_NAME).write_bytes(v1)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            with ChainStore(tmp_path, verify=verify) as s:
                assert s.get_by_hash(bh(5)) == (5, payload(5))
        assert "old format 1" in caplog.text
        assert (tmp_path / INDEX_NAME).read_bytes() == good
    # A reader never rewrites it, but opens fine (it scans the log instead).
    (tmp_path / INDEX_NAME).write_bytes(v1)
    with ChainStore(tmp_path, readonly=True, verify=False) as r:
        assert r.height == 5
    assert (tmp_path / INDEX_NAME).read_bytes() == v1


def test_index_write_error_is_logged_and_repaired_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fill(tmp_path, 5)
    real_pwrite = os.pwrite
    with ChainStore(tmp_path) as s:
        index_fd = s._index._fd

        def failing_pwrite(fd: int, data: bytes, offset: int) -> int:
            if fd == index_fd:
                raise OSError(28, "No space left on device")
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(os, "pwrite", failing_pwrite)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            s.append_block(5, bh(5), payload(5))  # the block is stored all the same
            s.append_block(6, bh(6), payload(6))
        assert "could not write block index" in caplog.text
        monkeypatch.undo()
    fill(tmp_path / "ref", 7)
    assert (tmp_path / INDEX_NAME).read_bytes() == (tmp_path / "ref" / INDEX_NAME).read_bytes()


# -------------------------------------------------------------------- crash recovery


@pytest.mark.timeout(60)
def test_torn_tail_at_every_offset_is_cut_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    fill(src, 3, size=70)
    *_, last_start, end = record_offsets(src)
    full = (src / LOG_NAME).read_bytes()
    for cut in range(last_start + 1, end):
        for verify in (True, False):
            d = tmp_path / f"cut{cut}{verify}"
            shutil.copytree(src, d)
            (d / LOG_NAME).write_bytes(full[:cut])
            # A reader ignores the torn tail and leaves the file alone.
            with ChainStore(d, readonly=True, verify=verify) as r:
                assert r.height == 1
            assert (d / LOG_NAME).stat().st_size == cut
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger=LOGGER):
                with ChainStore(d, verify=verify) as s:
                    assert s.height == 1
                    assert [r[2] for r in s.iter_blocks()] == [payload(0, 70), payload(1, 70)]
                    s.verify_log()
                    s.append_block(2, bh(2), payload(2, 70))
            assert f"removed {cut - last_start} bytes" in caplog.text
            assert (d / LOG_NAME).read_bytes() == full
            shutil.rmtree(d)


def test_flipped_byte_in_middle_record_is_corruption(tmp_path: Path) -> None:
    src = tmp_path / "src"
    fill(src, 3, size=50)
    _, mid_start, last_start, _ = record_offsets(src)
    d = tmp_path / "d"
    for offset in range(mid_start, last_start):
        shutil.copytree(src, d)
        (d / INDEX_NAME).unlink()
        flip(d / LOG_NAME, offset)
        damaged = (d / LOG_NAME).read_bytes()
        for kwargs in ({}, {"readonly": True}, {"verify": False}):
            with pytest.raises(StoreError, match=f"block log corrupt at offset {mid_start}"):
                ChainStore(d, **kwargs)
        assert (d / LOG_NAME).read_bytes() == damaged
        shutil.rmtree(d)


def test_flipped_byte_found_by_verify_log_and_reads(tmp_path: Path) -> None:
    fill(tmp_path, 3, size=50)
    _, mid_start, last_start, _ = record_offsets(tmp_path)
    with ChainStore(tmp_path) as s:
        s.verify_log()
        flip(tmp_path / LOG_NAME, mid_start + 40)
        damaged = (tmp_path / LOG_NAME).read_bytes()
        with pytest.raises(StoreError, match=f"corrupt at offset {mid_start}"):
            s.verify_log()
        with pytest.raises(StoreError, match="checksum mismatch"):
            s.get_block(1)
        with pytest.raises(StoreError, match="corrupt"):
            list(s.iter_blocks())
        assert s.get_block(2) == payload(2, 50)
    assert (tmp_path / LOG_NAME).read_bytes() == damaged


def test_flipped_byte_in_last_record_is_corruption_not_torn(tmp_path: Path) -> None:
    # A complete-length record with a bad checksum (or a damaged header) at the end of the
    # file is damage, not an interrupted append: it is reported and never cut off.
    src = tmp_path / "src"
    fill(src, 3, size=50)
    *_, last_start, end = record_offsets(src)
    d = tmp_path / "d"
    for offset in range(last_start, end):
        shutil.copytree(src, d)
        flip(d / LOG_NAME, offset)
        damaged = (d / LOG_NAME).read_bytes()
        for kwargs in ({}, {"readonly": True}, {"verify": False}):
            with pytest.raises(StoreError, match=f"block log corrupt at offset {last_start}"):
                ChainStore(d, **kwargs)
        assert (d / LOG_NAME).read_bytes() == damaged
        shutil.rmtree(d)


def test_bad_file_header_is_corruption(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    for offset in range(len(LOG_HEADER)):
        flip(tmp_path / LOG_NAME, offset)
        with pytest.raises(StoreError, match="corrupt at offset 0: bad file header"):
            ChainStore(tmp_path)
        flip(tmp_path / LOG_NAME, offset)
    (tmp_path / LOG_NAME).write_bytes(LOG_HEADER[:5])
    with pytest.raises(StoreError, match="bad file header"):
        ChainStore(tmp_path)


def test_foreign_tail_bytes_are_corruption(tmp_path: Path) -> None:
    # Bytes that are not a prefix of a record (e.g. zeros) are not a torn append.
    fill(tmp_path, 2)
    size = (tmp_path / LOG_NAME).stat().st_size
    with open(tmp_path / LOG_NAME, "ab") as fh:
        fh.write(b"\x00" * 5)
    with pytest.raises(StoreError, match=f"corrupt at offset {size}: bad record magic"):
        ChainStore(tmp_path)


@pytest.mark.parametrize(
    ("heights", "message"),
    [([0, 2], "height 2 where 1 was expected"), ([1], "height 1 where 0 was expected")],
)
def test_non_contiguous_heights_are_corruption(
    tmp_path: Path, heights: list[int], message: str
) -> None:
    (tmp_path / LOG_NAME).write_bytes(
        LOG_HEADER + b"".join(encode_record(h, bh(h), b"p") for h in heights)
    )
    with pytest.raises(StoreError, match=message):
        ChainStore(tmp_path)


def test_duplicate_hash_is_corruption(tmp_path: Path) -> None:
    records = encode_record(0, bh(0), b"a") + encode_record(1, bh(0), b"b")
    (tmp_path / LOG_NAME).write_bytes(LOG_HEADER + records)
    with pytest.raises(StoreError, match="duplicate block hash"):
        ChainStore(tmp_path)


@pytest.mark.timeout(60)
def test_crash_kill9_keeps_every_acknowledged_block(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    data_dir = tmp_path / "chain"
    acked: list[int] = []
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER_SCRIPT), str(data_dir)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        try:
            reader = LineReader(proc)
            ready = reader.line().split()
            assert ready[0] == "ready", ready
            time.sleep(rng.uniform(0.05, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            lines = reader.rest()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        run_acked = [int(line) for line in lines]
        # Each run resumes right after the last durable block (which may be unacknowledged).
        assert run_acked == list(range(int(ready[1]) + 1, int(ready[1]) + 1 + len(run_acked)))
        assert int(ready[1]) >= max(acked, default=-1)
        acked.extend(run_acked)
        with ChainStore(data_dir) as s:
            assert s.height >= max(acked, default=-1)
            s.verify_log()
    with ChainStore(data_dir, readonly=True) as s:
        for h in acked:
            assert s.get_by_hash(writer_hash(h)) == (h, writer_payload(h))


@pytest.mark.timeout(60)
def test_second_writer_locked_while_reader_works(tmp_path: Path) -> None:
    data_dir = tmp_path / "chain"
    proc = subprocess.Popen(
        [sys.executable, str(WRITER_SCRIPT), str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        reader = LineReader(proc)  # keeps the pipe drained, so the writer never blocks
        assert reader.line().startswith("ready")
        assert int(reader.line()) == 0
        with pytest.raises(StoreLocked, match=f"locked by another process \\(pid {proc.pid}\\)"):
            ChainStore(data_dir)
        with ChainStore(data_dir, readonly=True) as reader:
            first = reader.height
            assert first >= 0
            deadline = time.monotonic() + 20
            while reader.refresh() < first + 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert reader.height >= first + 3
            for h, block_hash, data in reader.iter_blocks():
                assert (block_hash, data) == (writer_hash(h), writer_payload(h))
    finally:
        proc.kill()
        proc.wait()
    with ChainStore(data_dir) as s:  # lock released by the dead process
        s.verify_log()


def test_in_process_second_writer_locked(tmp_path: Path) -> None:
    with ChainStore(tmp_path) as s:
        s.append_block(0, bh(0), b"g")
        with pytest.raises(StoreLocked, match=f"pid {os.getpid()}"):
            ChainStore(tmp_path)
        with ChainStore(tmp_path, readonly=True) as r:
            s.append_block(1, bh(1), b"x")
            assert r.height == 0
            assert r.refresh() == 1
            assert r.get_block(1) == b"x"
    with ChainStore(tmp_path) as s:
        assert s.height == 1


# ------------------------------------------------------------------------- snapshots


def test_snapshot_roundtrip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, 5)
    with ChainStore(tmp_path) as s:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert s.read_snapshot() is None
        assert "no state snapshot" in caplog.text
        s.write_snapshot(3, bh(3), b"state-at-3")
        assert s.read_snapshot() == (3, bh(3), b"state-at-3")
        s.write_snapshot(4, bh(4), b"state-at-4")
        with pytest.raises(StoreError, match="does not match a stored block"):
            s.write_snapshot(4, bh(3), b"x")
        with pytest.raises(StoreError, match="does not match a stored block"):
            s.write_snapshot(5, bh(5), b"x")
    with ChainStore(tmp_path, readonly=True) as r:
        assert r.read_snapshot() == (4, bh(4), b"state-at-4")
    assert temp_files(tmp_path) == []


def test_snapshot_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(tmp_path, 3)
    with ChainStore(tmp_path) as s:
        s.write_snapshot(1, bh(1), b"old")

        def failing_replace(src: object, dst: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(StoreError, match="cannot write snapshot"):
            s.write_snapshot(2, bh(2), b"new")
        monkeypatch.undo()
        assert s.read_snapshot() == (1, bh(1), b"old")
    assert temp_files(tmp_path) == []
    # Temp files left by a writer killed mid-snapshot (fsutil naming, and the naming of
    # older versions) are ignored and cleaned up; unrelated files are left alone.
    leftovers = [f"{SNAPSHOT_NAME}.tmp.99999", f".{SNAPSHOT_NAME}.99999.0a1b2c3d.tmp"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"half a snapsh")
    (tmp_path / ".unrelated.tmp").write_bytes(b"not ours")
    with ChainStore(tmp_path) as s:
        assert s.read_snapshot() == (1, bh(1), b"old")
    assert temp_files(tmp_path) == [".unrelated.tmp"]


def test_corrupt_snapshot_reads_as_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, 3)
    with ChainStore(tmp_path) as s:
        s.write_snapshot(2, bh(2), b"state" * 20)
    good = (tmp_path / SNAPSHOT_NAME).read_bytes()
    with ChainStore(tmp_path) as s:
        for offset in range(len(good)):
            flip(tmp_path / SNAPSHOT_NAME, offset)
            assert s.read_snapshot() is None
            flip(tmp_path / SNAPSHOT_NAME, offset)
        (tmp_path / SNAPSHOT_NAME).write_bytes(good[:-1])
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert s.read_snapshot() is None
        assert "snapshot corrupt" in caplog.text


def test_stale_snapshot_reads_as_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path / "a", 6)
    with ChainStore(tmp_path / "a") as s:
        s.write_snapshot(5, bh(5), b"state")
    # Another chain of the same length (different hashes), and a shorter one.
    with ChainStore(tmp_path / "b") as s:
        for h in range(6):
            s.append_block(h, bh(h, b"fork"), b"")
    fill(tmp_path / "c", 3)
    for other in ("b", "c"):
        shutil.copy(tmp_path / "a" / SNAPSHOT_NAME, tmp_path / other / SNAPSHOT_NAME)
        with ChainStore(tmp_path / other) as s:
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger=LOGGER):
                assert s.read_snapshot() is None
            assert "does not match the block log" in caplog.text


# --------------------------------------------------------------------------- genesis


def test_genesis_binding(tmp_path: Path) -> None:
    g1, g2 = bh(0, b"g1"), bh(0, b"g2")
    with ChainStore.open(tmp_path, genesis_hash=g1) as s:
        s.append_block(0, g1, b"genesis")
        assert s.genesis_hash == g1
    for readonly in (False, True):
        with pytest.raises(StoreError, match="store belongs to a different genesis"):
            ChainStore.open(tmp_path, genesis_hash=g2, readonly=readonly)
    with ChainStore.open(tmp_path, genesis_hash=g1) as s:
        assert s.height == 0
    with ChainStore(tmp_path) as s:  # no expectation given: no check
        assert s.genesis_hash == g1


def test_genesis_recorded_on_first_binding(tmp_path: Path) -> None:
    g1, g2 = bh(0, b"g1"), bh(0, b"g2")
    with ChainStore(tmp_path) as s:
        assert s.genesis_hash is None
    with ChainStore.open(tmp_path, genesis_hash=g1, readonly=True) as r:
        assert r.genesis_hash is None  # readers never write meta.json
    with ChainStore.open(tmp_path, genesis_hash=g1) as s:
        assert s.genesis_hash == g1
    with pytest.raises(StoreError, match="different genesis"):
        ChainStore.open(tmp_path, genesis_hash=g2)
    with pytest.raises(StoreError, match="32 bytes"):
        ChainStore.open(tmp_path, genesis_hash=b"short")


def test_fast_open_trusts_index_but_reads_still_verify(tmp_path: Path) -> None:
    # verify=False skips checksums of indexed records on open; reads and verify_log don't.
    fill(tmp_path, 3, size=50)
    _, mid_start, _, _ = record_offsets(tmp_path)
    flip(tmp_path / LOG_NAME, mid_start + 40)
    with ChainStore(tmp_path, verify=False) as s:
        assert s.height == 2
        with pytest.raises(StoreError, match="checksum mismatch"):
            s.get_block(1)
        with pytest.raises(StoreError, match=f"corrupt at offset {mid_start}"):
            s.verify_log()
    with pytest.raises(StoreError, match=f"corrupt at offset {mid_start}"):
        ChainStore(tmp_path)


def test_failed_fsync_cuts_back_and_the_next_append_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full / I/O error (issue 11 item 4): nothing of the failed append stays, the store
    says why in `write_problem`, and the next append works once the disk does."""
    fill(tmp_path, 2)
    size = (tmp_path / LOG_NAME).stat().st_size
    with ChainStore(tmp_path) as s:
        real_fsync = os.fsync
        calls = {"n": 0}

        def failing_fsync(fd: int) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError(28, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(StoreError, match="cannot append to block log: No space left"):
            s.append_block(2, bh(2), b"x")
        monkeypatch.undo()
        assert s.height == 1 and s.write_problem == "No space left on device"
        assert (tmp_path / LOG_NAME).stat().st_size == size
        s.append_block(2, bh(2), b"x")  # space is back: the store resumes by itself
        assert s.height == 2 and s.write_problem is None
    with ChainStore(tmp_path) as s:
        assert s.height == 2 and s.get_block(2) == b"x"
        s.verify_log()


def test_append_refused_until_the_log_end_is_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When even the cut back fails, no append is made on an uncertain end; the first append
    after the disk works again re-checks the end, then succeeds."""
    fill(tmp_path, 2)
    size = (tmp_path / LOG_NAME).stat().st_size

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with ChainStore(tmp_path) as s:
        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(StoreError, match="cannot append"):
            s.append_block(2, bh(2), b"x")
        with pytest.raises(StoreError, match="unusable after I/O error"):
            s.append_block(2, bh(2), b"x")
        assert s.height == 1 and s.write_problem == "Input/output error"
        monkeypatch.undo()
        s.append_block(2, bh(2), b"y")
        assert s.write_problem is None and s.get_block(2) == b"y"
    assert (tmp_path / LOG_NAME).stat().st_size > size
    with ChainStore(tmp_path) as s:
        s.verify_log()
        assert s.height == 2


# ------------------------------------------------------------------------- watermark

GENESIS = hashlib.sha256(b"test-genesis").digest()


def guarded(chain_dir: Path, count: int) -> Path:
    """A store of `count` blocks bound to GENESIS whose watermark (beside it) saw them all."""
    wm_path = chain_dir.parent / WATERMARK_NAME
    with ChainStore(chain_dir, genesis_hash=GENESIS) as s:
        s.append_block(0, bh(0), payload(0))
        s.guard(Watermark(wm_path))
        for h in range(1, count):
            s.append_block(h, bh(h), payload(h))
    return wm_path


def test_watermark_follows_every_append(tmp_path: Path) -> None:
    wm_path = guarded(tmp_path / "chain", 5)
    assert wm_path.stat().st_size == 2 * SLOT_SIZE
    assert Watermark(wm_path).read() == Mark(4, bh(4), GENESIS)
    with ChainStore(tmp_path / "chain", genesis_hash=GENESIS) as s:
        assert s.guard(Watermark(wm_path)) is None  # same store: accepted
        s.append_blocks([(5, bh(5), b"a"), (6, bh(6), b"b")])
    assert Watermark(wm_path).read() == Mark(6, bh(6), GENESIS)


def test_older_copy_or_cut_log_is_refused_until_accepted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chain = tmp_path / "chain"
    guarded(chain, 3)
    older = (chain / LOG_NAME).read_bytes()
    wm_path = guarded_more(chain, 3, 6)
    offsets = record_offsets(chain)
    log = chain / LOG_NAME
    for damaged in (older, log.read_bytes()[: offsets[-2]]):  # older copy; last record cut
        saved = log.read_bytes()
        log.write_bytes(damaged)
        with ChainStore(chain, genesis_hash=GENESIS) as s:
            with pytest.raises(StoreRolledBack, match=r"holds blocks to height \d but this node "
                                                      r"acknowledged height 5"):
                s.guard(Watermark(wm_path))
        assert Watermark(wm_path).read() == Mark(5, bh(5), GENESIS)  # untouched
        log.write_bytes(saved)
    log.write_bytes(older)
    with ChainStore(chain, genesis_hash=GENESIS) as s, caplog.at_level(logging.ERROR):
        assert s.guard(Watermark(wm_path), accept_rollback=True) == 3
        assert "ACCEPTING ROLLBACK" in caplog.text
        s.append_block(3, bh(3, b"new"), b"other")
    assert Watermark(wm_path).read() == Mark(3, bh(3, b"new"), GENESIS)


def guarded_more(chain_dir: Path, start: int, end: int) -> Path:
    """Append blocks `start..end-1` to a guarded store."""
    wm_path = chain_dir.parent / WATERMARK_NAME
    with ChainStore(chain_dir, genesis_hash=GENESIS) as s:
        s.guard(Watermark(wm_path))
        for h in range(start, end):
            s.append_block(h, bh(h), payload(h))
    return wm_path


def test_another_block_at_the_mark_is_refused(tmp_path: Path) -> None:
    chain = tmp_path / "chain"
    wm_path = guarded(chain, 3)
    shutil.rmtree(chain)
    with ChainStore(chain, genesis_hash=GENESIS) as s:
        for h in range(4):
            s.append_block(h, bh(h, b"fork"), payload(h))
        with pytest.raises(StoreRolledBack, match="holds another block at height 2"):
            s.guard(Watermark(wm_path))


def test_torn_watermark_slot_keeps_the_previous_mark(tmp_path: Path) -> None:
    wm_path = guarded(tmp_path / "chain", 4)
    data = bytearray(wm_path.read_bytes())
    newest = Watermark(wm_path)
    assert newest.read() == Mark(3, bh(3), GENESIS)
    seq_slot = max((0, 1), key=lambda i: data[i * SLOT_SIZE + 12 : i * SLOT_SIZE + 20])
    data[seq_slot * SLOT_SIZE + 30] ^= 0xFF  # the slot written last is torn
    wm_path.write_bytes(bytes(data))
    assert Watermark(wm_path).read() == Mark(2, bh(2), GENESIS)
    data[(1 - seq_slot) * SLOT_SIZE + 30] ^= 0xFF  # both damaged: the height is unknown
    wm_path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="watermark .* is damaged"):
        Watermark(wm_path).read()
    with ChainStore(tmp_path / "chain", genesis_hash=GENESIS) as s:
        with pytest.raises(StoreRolledBack, match="damaged"):
            s.guard(Watermark(wm_path))
        assert s.guard(Watermark(wm_path), accept_rollback=True) == 0
    assert Watermark(wm_path).read() == Mark(3, bh(3), GENESIS)


@pytest.mark.timeout(60)
def test_crash_kill9_watermark_never_ahead_of_the_log(tmp_path: Path) -> None:
    """A guarded writer killed at random: the watermark covers every acknowledged block and
    never names one the log lacks, so every restart is accepted."""
    rng = random.Random(20261201)
    data_dir = tmp_path / "chain"
    wm_path = tmp_path / WATERMARK_NAME
    acked: list[int] = []
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER_SCRIPT), str(data_dir), str(wm_path)],
            stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        try:
            reader = LineReader(proc)
            assert reader.line().split()[0] == "ready"
            time.sleep(rng.uniform(0.05, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            acked.extend(int(line) for line in reader.rest())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        mark = Watermark(wm_path).read()
        assert mark is not None and mark.height >= max(acked, default=0)
        with ChainStore(data_dir, genesis_hash=WRITER_GENESIS) as s:
            assert mark.height <= s.height
            s.guard(Watermark(wm_path))  # never refused after a crash
            s.verify_log()

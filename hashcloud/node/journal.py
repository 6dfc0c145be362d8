"""Mempool journal: acknowledged transactions survive kill -9 (node durability, SPEC 6 mempool).

Every transaction the node acknowledges is appended as one framed record (the block log's
framing, `hashcloud.fsutil.frame`, with record magic ``b"HCTJ"``: magic, length, header CRC,
canonical tx bytes, SHA-256) and fsynced before the HTTP answer. After each block the
journal is rewritten atomically (`fsutil.atomic_replace`) with what is still pending. On
start the node replays it into the mempool, re-validating each entry (included or now-invalid
ones are dropped).

Loading reads the current format and the legacy one (``u32 length || sha256 || bytes``, no
magic) written by older nodes, even both in one file, so an upgraded node never loses an
acknowledged pending transaction; the next rewrite stores everything in the current format.
A torn last record (an interrupted append) is ignored; a damaged record stops the load.
Either is logged at WARNING.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

from hashcloud.fsutil import FrameCorrupt, FrameScan, atomic_replace, frame

log = logging.getLogger(__name__)

__all__ = ["JOURNAL_MAGIC", "MAX_RECORD", "TxJournal"]

JOURNAL_MAGIC = b"HCTJ"
"""Record magic of the current format (a legacy record can never start with it: its
first byte, the top byte of a length below MAX_RECORD, is 0)."""
MAX_RECORD = 1 << 20
"""Largest transaction encoding a record may hold."""
_LEGACY_HEAD = struct.Struct(">I32s")  # legacy format: body length, SHA-256 of body


class TxJournal:
    """Append-only file of canonical transaction encodings (group-committed fsyncs)."""

    def __init__(self, path: Path) -> None:
        """Open (creating it and its directory if needed) the journal at `path` for appends."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
        self._lock = threading.Lock()  # file handle and counters
        self._sync_lock = threading.Lock()  # one fsync at a time
        self._written = 0  # records written (flushed to the OS)
        self._synced = 0  # records known durable

    @staticmethod
    def _record(data: bytes) -> bytes:
        """One record in the current format."""
        return frame(JOURNAL_MAGIC, data)

    def append(self, data: bytes) -> None:
        """Append one record and return once it is durable.

        Group commit: concurrent appenders write under a short lock, then one fsync covers
        every record written before it started, so N waiting requests cost one fsync."""
        record = self._record(data)
        with self._lock:
            self._fh.write(record)
            self._fh.flush()
            self._written += 1
            mine = self._written
        with self._sync_lock:
            if self._synced >= mine:
                return  # another appender's fsync already covered this record
            with self._lock:
                target, fd = self._written, self._fh.fileno()
            os.fsync(fd)
            self._synced = max(self._synced, target)

    def rewrite(self, records: Iterable[bytes]) -> None:
        """Atomically and durably replace the journal with `records` (current format).

        The records are encoded before anything is touched, so an error while producing
        them leaves the old journal in place and in use."""
        data = b"".join(self._record(r) for r in records)
        with self._sync_lock, self._lock:
            atomic_replace(self.path, data)
            self._fh.close()
            self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
            self._synced = self._written

    def load(self) -> list[bytes]:
        """Every intact record, in order; stops (logged at WARNING) at a torn or damaged one."""
        raw = self.path.read_bytes() if self.path.exists() else b""
        out: list[bytes] = []
        pos = 0
        # Legacy records first (an older node's file), then current-format ones.
        while pos < len(raw) and raw[pos : pos + 1] != JOURNAL_MAGIC[:1]:
            body = self._legacy_record(raw, pos)
            if body is None:
                return out
            out.append(body)
            pos += _LEGACY_HEAD.size + len(body)
        scan = FrameScan(io.BytesIO(raw), JOURNAL_MAGIC, max_body=MAX_RECORD, start=pos,
                         size=len(raw))
        try:
            out.extend(body for _, body in scan)
        except FrameCorrupt as exc:
            log.warning("mempool journal: damaged record at offset %d ignored (%s)",
                        exc.offset, exc.reason)
            return out
        if scan.torn_bytes:
            log.warning("mempool journal: torn record at offset %d ignored", scan.end)
        return out

    @staticmethod
    def _legacy_record(raw: bytes, pos: int) -> bytes | None:
        """The legacy-format record at `pos`, or None (logged) if it is torn or damaged."""
        if pos + _LEGACY_HEAD.size > len(raw):
            log.warning("mempool journal: torn record at offset %d ignored", pos)
            return None
        size, digest = _LEGACY_HEAD.unpack_from(raw, pos)
        body = raw[pos + _LEGACY_HEAD.size : pos + _LEGACY_HEAD.size + size]
        if size <= MAX_RECORD and len(body) < size:  # the file ends inside the body
            log.warning("mempool journal: torn record at offset %d ignored", pos)
            return None
        if size > MAX_RECORD or hashlib.sha256(body).digest() != digest:
            log.warning("mempool journal: damaged record at offset %d ignored", pos)
            return None
        return body

    def close(self) -> None:
        """Close the file handle."""
        with self._sync_lock, self._lock:
            self._fh.close()

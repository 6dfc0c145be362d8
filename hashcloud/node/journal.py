"""Mempool journal: acknowledged transactions survive kill -9 (issue: node durability).

Every transaction the node acknowledges is appended (length, SHA-256, canonical tx bytes)
and fsynced before the HTTP answer. After each block the journal is rewritten atomically
with what is still pending. On start the node replays it into the mempool, re-validating
each entry (included or now-invalid ones are dropped). A torn last record is ignored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)
_HEAD = struct.Struct(">I32s")
MAX_RECORD = 1 << 20


class TxJournal:
    """Append-only file of canonical transaction encodings."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
        self._lock = threading.Lock()  # file handle and counters
        self._sync_lock = threading.Lock()  # one fsync at a time
        self._written = 0  # records written (flushed to the OS)
        self._synced = 0  # records known durable

    @staticmethod
    def _record(data: bytes) -> bytes:
        return _HEAD.pack(len(data), hashlib.sha256(data).digest()) + data

    def append(self, data: bytes) -> None:
        """Append one record and return once it is durable.

        Group commit: concurrent appenders write under a short lock, then one fsync covers
        every record written before it started, so N waiting requests cost one fsync."""
        with self._lock:
            self._fh.write(self._record(data))
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
        """Atomically replace the journal with `records` (temp, fsync, rename)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with self._sync_lock, self._lock:
            with open(tmp, "wb") as fh:
                for data in records:
                    fh.write(self._record(data))
                fh.flush()
                os.fsync(fh.fileno())
            self._fh.close()
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._fh = open(self.path, "ab")  # noqa: SIM115
            self._synced = self._written

    def load(self) -> list[bytes]:
        """Every intact record; stops (with a log line) at a torn or damaged record."""
        raw = self.path.read_bytes() if self.path.exists() else b""
        out: list[bytes] = []
        pos = 0
        while pos < len(raw):
            if pos + _HEAD.size > len(raw):
                log.warning("mempool journal: torn record at offset %d ignored", pos)
                break
            size, digest = _HEAD.unpack_from(raw, pos)
            body = raw[pos + _HEAD.size: pos + _HEAD.size + size]
            if size > MAX_RECORD or len(body) != size or hashlib.sha256(body).digest() != digest:
                log.warning("mempool journal: damaged record at offset %d ignored", pos)
                break
            out.append(body)
            pos += _HEAD.size + size
        return out

    def close(self) -> None:
        """Close the file handle."""
        with self._sync_lock, self._lock:
            self._fh.close()

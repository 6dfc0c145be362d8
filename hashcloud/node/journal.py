"""Append-only, fsynced record logs of the node: the mempool journal and its framing base.

`AppendLog` is the one durable append-only log of the node (SPEC 6 node durability): records
use the block log's framing (`hashcloud.fsutil.frame`: magic, length, header CRC, body,
SHA-256) with a magic chosen per log, each `append` returns once its record is fsynced (group
commit: one fsync covers every record written before it started), `rewrite` replaces the
whole file atomically (`fsutil.atomic_replace`) and `compact` rewrites it keeping only the
records a predicate selects. `scan` reads it back and tells a torn tail (an interrupted
append: ignored, logged at WARNING) from damage (reported: the records before it are kept).
Two logs use it: `TxJournal` here and the PoC validator's `node.challenge_log`.

`TxJournal`, the mempool journal (magic ``b"HCTJ"``): every transaction the node acknowledges
is appended and fsynced before the HTTP answer. After each block the journal is rewritten with
what is still pending, led by a *head mark* record (``b"HCHEAD1\0"`` + u64 height + 32-byte
block hash: the head whose block took the other transactions out of the journal). On start
the node replays it into the mempool, re-validating each entry (included or now-invalid ones
are dropped, each logged at WARNING with its id), and refuses a chain store that does not
hold the head mark's block: the transactions that block took out of the journal would be
lost without a word (SPEC 6 node durability; `TxJournal.head_mark`).

Loading reads the current format and the legacy one (``u32 length || sha256 || bytes``, no
magic) written by older nodes, even both in one file, so an upgraded node never loses an
acknowledged pending transaction; the next rewrite stores everything in the current format.
A torn last record (an interrupted append) is ignored; a damaged record stops the load.
Either is logged at WARNING.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from hashcloud.errors import FrameCorrupt, StorageUnavailable
from hashcloud.fsutil import FrameScan, atomic_replace, frame

log = logging.getLogger(__name__)

__all__ = ["HEAD_MARK", "JOURNAL_MAGIC", "MAX_RECORD", "AppendLog", "LogContents", "TxJournal"]

JOURNAL_MAGIC = b"HCTJ"
"""Record magic of the current format (a legacy record can never start with it: its
first byte, the top byte of a length below MAX_RECORD, is 0)."""
MAX_RECORD = 1 << 20
"""Largest transaction encoding a record may hold."""
_LEGACY_HEAD = struct.Struct(">I32s")  # legacy format: body length, SHA-256 of body
HEAD_MARK = b"HCHEAD1\0"
"""Prefix of the head-mark record (never a transaction: a canonical transaction encoding is a
msgpack map or array, and ``H`` (0x48) is a msgpack integer)."""
_HEAD_RECORD = struct.Struct(">8sQ32s")  # HEAD_MARK, height, block hash


@dataclass(frozen=True, slots=True)
class LogContents:
    """What `AppendLog.scan` read: the intact `records` in order, the offset of a torn tail
    (`torn_at`, None if none) and the damage that stopped the scan (`corrupt`, None if none)."""

    records: list[bytes]
    torn_at: int | None = None
    corrupt: FrameCorrupt | None = None


class AppendLog:
    """An append-only file of framed records with group-committed fsyncs (see module doc).

    `magic` (4 bytes) names the log's records; `max_record` bounds a body (a longer length
    field is damage, never a torn tail); `name` is used in log messages. Thread-safe.
    """

    def __init__(self, path: Path, magic: bytes, max_record: int, name: str) -> None:
        """Open (creating it and its directory if needed) the log at `path` for appends."""
        self.path = Path(path)
        self.magic = magic
        self.max_record = max_record
        self.name = name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
        self._lock = threading.Lock()  # file handle and counters
        self._sync_lock = threading.Lock()  # one fsync (or rewrite) at a time
        self._written = 0  # records written (flushed to the OS)
        self._synced = 0  # records known durable
        self._synced_size = self.path.stat().st_size  # file bytes known durable
        self._failed_upto = 0  # records cut off again after a failed fsync

    def _record(self, data: bytes) -> bytes:
        """One record on disk."""
        return frame(self.magic, data)

    def append(self, data: bytes, *more: bytes) -> None:
        """Append one record (with `more`: several, in one write) and return once it is
        durable (a batch is covered by one fsync: `POST /v1/transactions/batch`).

        Group commit: concurrent appenders write under a short lock, then one fsync covers
        every record written before it started, so N waiting requests cost one fsync.
        A failed write (disk full, I/O error) leaves no partial record behind
        (`_drop_partial`); a failed fsync cuts the file back to what the last good fsync
        covered, so every record it should have made durable is gone (each of their
        appenders gets the error), never replayed after a restart. Either way the caller
        gets StorageUnavailable (answered 503): it must undo what the record was to make
        durable, and nothing it acknowledged is lost."""
        try:
            self._append(data, *more)
        except OSError as exc:
            log.error("%s: write to %s failed: %s", self.name, self.path, exc)
            raise StorageUnavailable(
                f"the node cannot make its {self.name} durable ({exc.strerror or exc}); "
                "nothing was changed, retry later") from exc

    def _append(self, data: bytes, *more: bytes) -> None:
        """`append` itself, raising OSError."""
        record = b"".join(self._record(d) for d in (data, *more))
        with self._lock:
            size = self.path.stat().st_size if self.path.exists() else 0
            try:
                self._fh.write(record)
                self._fh.flush()
            except (OSError, ValueError) as exc:  # ValueError: the handle could not reopen
                self._drop_partial(size)
                if isinstance(exc, ValueError):
                    raise OSError(f"{self.name} is not open for appends") from exc
                raise
            self._written += 1
            mine = self._written
        with self._sync_lock:
            if self._synced >= mine:
                return  # another appender's fsync (or a rewrite) already covered this record
            if mine <= self._failed_upto:
                raise OSError(f"{self.name}: an fsync failed; the record was cut off again")
            with self._lock:
                target, fd = self._written, self._fh.fileno()
                size = self._fh.tell()
            try:
                os.fsync(fd)
            except OSError:
                with self._lock:  # no record of this batch may survive to be replayed
                    self._drop_partial(self._synced_size)
                    self._failed_upto = self._written
                raise
            self._synced = max(self._synced, target)
            self._synced_size = max(self._synced_size, size)

    def _drop_partial(self, size: int) -> None:
        """After a failed write: cut the file back to `size` bytes (what was there before the
        record) and reopen it, so no partial record sits before the next append (it would
        read as damage). Best effort; locked."""
        with contextlib.suppress(OSError, ValueError):
            self._fh.close()  # its unwritten buffer goes with it
        try:
            if self.path.exists() and self.path.stat().st_size > size:
                os.truncate(self.path, size)
        except OSError as exc:
            log.error("%s: cannot cut a partial record off %s: %s", self.name, self.path, exc)
        try:
            self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
        except OSError as exc:  # the next append fails (OSError) and tries again
            log.error("%s: cannot reopen %s: %s", self.name, self.path, exc)

    def rewrite(self, records: Iterable[bytes]) -> None:
        """Atomically and durably replace the log with `records`.

        The records are encoded before anything is touched, so an error while producing
        them leaves the old log in place and in use."""
        data = b"".join(self._record(r) for r in records)
        with self._sync_lock, self._lock:
            self._replace(data)

    def compact(self, keep: Callable[[bytes], bool]) -> int:
        """Rewrite the log with only the records `keep` selects; return how many were dropped.

        Runs under the log's locks, so no append interleaves: records appended before it
        are judged by `keep`, later ones land in the new file. A damaged or torn log is left
        as it is (0): compaction never loses a record it cannot read."""
        with self._sync_lock, self._lock:
            self._fh.flush()
            contents = self._scan_file()
            if contents.corrupt is not None or contents.torn_at is not None:
                return 0
            kept = [r for r in contents.records if keep(r)]
            dropped = len(contents.records) - len(kept)
            if dropped:
                self._replace(b"".join(self._record(r) for r in kept))
            return dropped

    def _replace(self, data: bytes) -> None:
        """Swap in `data` as the whole file and reopen it for appends. Locked."""
        atomic_replace(self.path, data)
        self._fh.close()
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
        self._synced = self._written
        self._synced_size = len(data)

    def scan(self, start: int = 0) -> LogContents:
        """Every intact record from byte `start`, in order; a torn tail and damage are logged
        at WARNING and reported in the result (the records before them are kept)."""
        contents = self._scan_file(start)
        if contents.corrupt is not None:
            log.warning("%s: damaged record at offset %d ignored (%s)", self.name,
                        contents.corrupt.offset, contents.corrupt.reason)
        elif contents.torn_at is not None:
            log.warning("%s: torn record at offset %d ignored", self.name, contents.torn_at)
        return contents

    def _scan_file(self, start: int = 0) -> LogContents:
        """`scan` without the logging."""
        raw = self.path.read_bytes() if self.path.exists() else b""
        scan = FrameScan(io.BytesIO(raw), self.magic, max_body=self.max_record, start=start,
                         size=len(raw))
        records: list[bytes] = []
        try:
            records.extend(body for _, body in scan)
        except FrameCorrupt as exc:
            return LogContents(records, None, exc)
        return LogContents(records, scan.end if scan.torn_bytes else None, None)

    def close(self) -> None:
        """Close the file handle."""
        with self._sync_lock, self._lock:
            self._fh.close()


class TxJournal(AppendLog):
    """The mempool journal: canonical transaction encodings (see module doc)."""

    def __init__(self, path: Path) -> None:
        """Open (creating it and its directory if needed) the journal at `path` for appends."""
        super().__init__(path, JOURNAL_MAGIC, MAX_RECORD, "mempool journal")
        #: ``(height, block hash)`` of the last head mark `load` read, or None.
        self.head_mark: tuple[int, bytes] | None = None

    def rewrite_pending(self, records: Iterable[bytes], head: tuple[int, bytes]) -> None:
        """Atomically replace the journal with a head mark for block `head` (height, hash)
        and the pending transaction encodings `records`."""
        height, block = head
        mark = _HEAD_RECORD.pack(HEAD_MARK, height, block)
        self.rewrite(itertools.chain((mark,), records))

    def load(self) -> list[bytes]:
        """Every intact transaction record, in order; stops (logged at WARNING) at a torn or
        damaged one. A head mark sets `head_mark` instead of being returned."""
        records = self._load_records()
        txs: list[bytes] = []
        for record in records:
            if len(record) == _HEAD_RECORD.size and record.startswith(HEAD_MARK):
                _, height, block = _HEAD_RECORD.unpack(record)
                self.head_mark = (height, block)
            else:
                txs.append(record)
        return txs

    def _load_records(self) -> list[bytes]:
        """Every intact record (legacy and current format), in order."""
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
        out.extend(self.scan(pos).records)
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

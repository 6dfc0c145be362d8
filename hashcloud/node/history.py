"""Per-worker audit histories of the PoC validator, kept across restarts (SPEC 3).

The adaptive audit and the failure cooldown (SPEC 3, `poc.audit_policy`) depend on what the
node remembers of each worker: a `WorkerHistory` per address. `HistoryStore` holds them in
memory and persists them in `<data_dir>/validator/history.log`, an append-only log: each
audit appends one fsynced record (`fsutil.frame`, magic ``b"HCWH"``) whose body is the JSON
``{"version": V, "address": A, "seen": T, "history": {...}}``, so the cost of an audit does
not grow with the number of workers. On load the record with the highest `version` of each
address wins (racing audits may append out of order).

Bounds: the log is compacted (rewritten atomically with one record per live worker,
`fsutil.atomic_replace`) once it holds more than twice as many records as there are
workers (and at least `compact_min`), so it stays within a constant factor of the live
data; a worker not audited for `retention_s` (default 90 days, far beyond the 7-day failure
window and cooldown cap of the default policy) is forgotten at compaction, and at most
`max_workers` histories are kept (the least recently audited goes first). A forgotten worker
starts again with an empty history, which only means more audits.

Damage: a torn last record (a crash during an append) is dropped; a damaged record ends the
load there, and the file is moved aside (`history.log.corrupt-<unix>`) and rewritten with the
good prefix: refusing to start would let one bad byte take the validator down. The version 1
file `history.json` (rewritten whole after every audit) is migrated into the log on first
load and removed (a corrupt one is moved aside as `history.json.corrupt-<unix>`).

Locking: `get` and `put` change memory only (callers may hold their own lock); `save`, the
append and fsync, runs outside the caller's lock under the store's own.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hashcloud.errors import FrameCorrupt
from hashcloud.fsutil import FrameScan, atomic_replace, frame
from hashcloud.poc.audit_policy import WorkerHistory
from hashcloud.types import AddressStr

__all__ = ["COMPACT_MIN", "HISTORY_MAGIC", "MAX_WORKERS", "RETENTION_S", "HistoryStore",
           "HistoryUpdate", "history_path", "legacy_history_path"]

logger = logging.getLogger(__name__)

HISTORY_MAGIC = b"HCWH"
MAX_HISTORY_RECORD = 64 * 1024
"""Largest record body (a history holds at most `failure_memory` times: a few hundred bytes)."""
RETENTION_S = 90 * 24 * 3600.0
"""Default: forget a worker not audited for this long (seconds)."""
MAX_WORKERS = 100_000
"""Default: most worker histories kept (about 200 bytes each in memory)."""
COMPACT_MIN = 256
"""Records the log may hold before compaction is considered."""


class _LegacyFile(BaseModel):
    """The version 1 file: `{"version": 1, "workers": {address: WorkerHistory}}`."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    version: Literal[1]
    workers: dict[AddressStr, WorkerHistory]


class _Record(BaseModel):
    """One log record: the history of `address` as of change `version`, audited at `seen`."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    version: int = Field(ge=0)
    address: AddressStr
    seen: float
    history: WorkerHistory


@dataclass(frozen=True, slots=True)
class HistoryUpdate:
    """One change to persist (what `put` returns and `save` appends)."""

    version: int
    address: str
    seen: float
    history: WorkerHistory


def history_path(data_dir: Path) -> Path:
    """Where the histories of the node on `data_dir` live (the log)."""
    return Path(data_dir) / "validator" / "history.log"


def legacy_history_path(data_dir: Path) -> Path:
    """The version 1 file, migrated into the log on load."""
    return Path(data_dir) / "validator" / "history.json"


class HistoryStore:
    """The audit history of every worker the node has audited, persisted (SPEC 3).

    `clock` (unix seconds) stamps each change for the retention bound."""

    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.time,
                 retention_s: float = RETENTION_S, max_workers: int = MAX_WORKERS,
                 compact_min: int = COMPACT_MIN) -> None:
        """Load the histories (migrating `history.json`; a damaged log is moved aside)."""
        self.path = history_path(data_dir)
        self._legacy = legacy_history_path(data_dir)
        self._clock = clock
        self.retention_s = retention_s
        self.max_workers = max_workers
        self.compact_min = compact_min
        self._lock = threading.Lock()  # memory
        self._save_lock = threading.Lock()  # the file
        # address -> (version, seen, history), least recently changed first
        self._workers: OrderedDict[str, tuple[int, float, WorkerHistory]] = OrderedDict()
        self._version = 0
        self._records = 0  # records in the file
        self._dirty = False  # a save failed: memory holds changes the file lacks
        self._load()

    def __len__(self) -> int:
        """Workers with a history."""
        return len(self._workers)

    @property
    def records(self) -> int:
        """Records in the log file (compaction keeps it near `len(self)`)."""
        return self._records

    def get(self, address: str) -> WorkerHistory:
        """The history of `address`; empty for a new worker."""
        with self._lock:
            entry = self._workers.get(address)
        return WorkerHistory() if entry is None else entry[2]

    def put(self, address: str, history: WorkerHistory) -> HistoryUpdate:
        """Replace the history of `address` in memory; return the change to `save`."""
        now = self._clock()
        with self._lock:
            self._version += 1
            self._workers[address] = (self._version, now, history)
            self._workers.move_to_end(address)
            while len(self._workers) > self.max_workers:
                self._workers.popitem(last=False)
            return HistoryUpdate(self._version, address, now, history)

    def save(self, update: HistoryUpdate) -> None:
        """Append `update` durably; compact the log when it holds too many old records.

        An I/O failure is logged, not raised: the audit outcome stands, memory keeps the
        history, and the next save compacts, which writes every history again."""
        record = _Record(version=update.version, address=update.address, seen=update.seen,
                         history=update.history)
        with self._save_lock:
            if self._dirty:
                self._compact()
                return
            try:
                self._append(frame(HISTORY_MAGIC, record.model_dump_json().encode()))
            except OSError as exc:
                logger.error("cannot write audit histories %s: %s", self.path, exc)
                self._dirty = True
                return
            self._records += 1
            if self._records > max(self.compact_min, 2 * len(self._workers)):
                self._compact()

    # ------------------------------------------------------------------------ the file

    def _append(self, data: bytes) -> None:
        """Append one record and fsync it; a failed write is cut back off (locked)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)  # no partial record before the next append
                except OSError as cut_exc:
                    logger.error("cannot cut a partial record off %s: %s", self.path, cut_exc)
                raise
        finally:
            os.close(fd)

    def _compact(self) -> None:
        """Rewrite the log with one record per live worker, forgetting those past the
        retention bound (locked by `_save_lock`; failures are logged)."""
        cutoff = self._clock() - self.retention_s
        with self._lock:
            for address in [a for a, (_, seen, _) in self._workers.items() if seen < cutoff]:
                del self._workers[address]
            live = [_Record(version=v, address=a, seen=seen, history=h)
                    for a, (v, seen, h) in self._workers.items()]
        data = b"".join(frame(HISTORY_MAGIC, r.model_dump_json().encode()) for r in live)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_replace(self.path, data)
        except OSError as exc:
            logger.error("cannot write audit histories %s: %s", self.path, exc)
            self._dirty = True
            return
        self._records = len(live)
        self._dirty = False

    def _load(self) -> None:
        """Read the legacy file and the log into memory; repair what needs it."""
        legacy = _load_legacy(self._legacy)
        seen = self._clock()
        for address, history in legacy.items():
            self._workers[address] = (0, seen, history)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        except OSError as exc:
            logger.warning("cannot read audit histories %s (%s); starting without them",
                           self.path, exc)
            raw = b""
        records, damage, torn = _scan(raw)
        latest: dict[str, _Record] = {}
        for rec in records:
            if rec.address not in latest or rec.version >= latest[rec.address].version:
                latest[rec.address] = rec
        for rec in sorted(latest.values(), key=lambda r: (r.seen, r.version)):
            self._workers.pop(rec.address, None)
            self._workers[rec.address] = (rec.version, rec.seen, rec.history)
        while len(self._workers) > self.max_workers:
            self._workers.popitem(last=False)
        self._version = max((v for v, _, _ in self._workers.values()), default=0)
        self._records = len(records)
        if damage is not None:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            logger.warning("audit histories %s are damaged (%s); kept the %d records before "
                           "it, moved the file to %s", self.path, damage, len(records),
                           aside.name)
            try:
                os.replace(self.path, aside)
            except OSError as exc:
                logger.warning("cannot move %s aside: %s", self.path, exc)
        if legacy or damage is not None or torn:
            self._compact()
            if legacy and self._records == len(self._workers):
                self._legacy.unlink(missing_ok=True)
                logger.info("audit histories migrated from %s to %s", self._legacy.name,
                            self.path.name)


def _scan(raw: bytes) -> tuple[list[_Record], str | None, bool]:
    """The intact records of a log, the damage that ended the scan early (or None), and
    whether a torn last record (an interrupted append) was dropped, with a WARNING."""
    scan = FrameScan(io.BytesIO(raw), HISTORY_MAGIC, max_body=MAX_HISTORY_RECORD,
                     size=len(raw))
    records: list[_Record] = []
    try:
        for offset, body in scan:
            try:
                records.append(_Record.model_validate_json(body))
            except ValidationError as exc:
                return records, f"bad record at offset {offset}: {exc.errors()[0]['msg']}", False
    except FrameCorrupt as exc:
        return records, f"{exc.reason} at offset {exc.offset}", False
    if scan.torn_bytes:
        logger.warning("audit histories: torn last record (%d bytes) dropped", scan.torn_bytes)
    return records, None, bool(scan.torn_bytes)


def _load_legacy(path: Path) -> dict[str, WorkerHistory]:
    """Read a version 1 `history.json`; a corrupt one is moved aside (empty result)."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        logger.warning("cannot read audit histories %s (%s); starting without them", path, exc)
        return {}
    try:
        return dict(_LegacyFile.model_validate_json(text).workers)
    except ValidationError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        logger.warning(
            "audit histories %s are corrupt (%s); moved to %s, starting empty",
            path,
            exc.errors()[0]["msg"] if exc.errors() else exc,
            aside.name,
        )
        try:
            os.replace(path, aside)
        except OSError as move_exc:
            logger.warning("cannot move %s aside: %s", path, move_exc)
        return {}

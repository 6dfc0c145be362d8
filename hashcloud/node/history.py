"""Per-worker audit histories of the PoC validator, kept across restarts (SPEC 3).

The adaptive audit and the failure cooldown (SPEC 3, `poc.audit_policy`) depend on what the
node remembers of each worker: a `WorkerHistory` per address. `HistoryStore` holds them in
memory and persists them in `<data_dir>/validator/history.json`
(`{"version": 1, "workers": {address: WorkerHistory}}`), rewritten whole and atomically
(`fsutil.atomic_replace`, durable) after every change, so a crash leaves either the old or
the new file, never a mix. A corrupt file is moved aside (`history.json.corrupt-<unix>`) and
the node starts with empty histories: refusing to start would let one bad byte take the
validator down, and a lost history only means a few more audits.

Locking: `get` and `put` change memory only and run under the caller's lock; `save`, the
fsync, runs outside it under the store's own lock, so challenges never wait on the disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from hashcloud.fsutil import atomic_replace
from hashcloud.poc.audit_policy import WorkerHistory
from hashcloud.types import AddressStr

__all__ = ["HISTORY_FILE_VERSION", "HistorySnapshot", "HistoryStore", "history_path"]

logger = logging.getLogger(__name__)

HISTORY_FILE_VERSION = 1


class _HistoryFile(BaseModel):
    """On-disk form of the audit histories: `{"version": 1, "workers": {address: ...}}`."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    version: Literal[1]
    workers: dict[AddressStr, WorkerHistory]


@dataclass(frozen=True, slots=True)
class HistorySnapshot:
    """All histories as of change number `version` (what one `save` writes)."""

    version: int
    workers: dict[str, WorkerHistory]


def history_path(data_dir: Path) -> Path:
    """Where the histories of the node on `data_dir` live."""
    return Path(data_dir) / "validator" / "history.json"


class HistoryStore:
    """The audit history of every worker the node has audited, persisted (SPEC 3)."""

    def __init__(self, data_dir: Path) -> None:
        """Load `<data_dir>/validator/history.json` (missing: empty; corrupt: moved aside)."""
        self.path = history_path(data_dir)
        self._workers: dict[str, WorkerHistory] = _load(self.path)
        self._version = 0
        self._save_lock = threading.Lock()
        self._saved_version = 0

    def __len__(self) -> int:
        """Workers with a history."""
        return len(self._workers)

    def get(self, address: str) -> WorkerHistory:
        """The history of `address`; empty for a new worker. Caller-locked."""
        return self._workers.get(address, WorkerHistory())

    def put(self, address: str, history: WorkerHistory) -> HistorySnapshot:
        """Replace the history of `address` in memory; return the snapshot to `save`.
        Caller-locked."""
        self._workers[address] = history
        self._version += 1
        return HistorySnapshot(self._version, dict(self._workers))

    def save(self, snapshot: HistorySnapshot) -> None:
        """Write `snapshot` to disk unless a newer one was already written.

        Call it outside the caller's lock: racing audits then save in any order, and a
        snapshot older than the file is skipped, so the file never goes back in time.
        An I/O failure is logged, not raised: the audit outcome stands and the next change
        writes the whole file again.
        """
        with self._save_lock:
            if snapshot.version <= self._saved_version:
                return
            _write(self.path, snapshot.workers)
            self._saved_version = snapshot.version


def _load(path: Path) -> dict[str, WorkerHistory]:
    """Read the histories; a corrupt file is moved aside and the node starts empty."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        logger.warning("cannot read audit histories %s (%s); starting empty", path, exc)
        return {}
    try:
        return dict(_HistoryFile.model_validate_json(text).workers)
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


def _write(path: Path, workers: dict[str, WorkerHistory]) -> None:
    """Replace the file atomically and durably (I/O failures are logged)."""
    # The records are already valid: construct without re-validating every address.
    data = _HistoryFile.model_construct(version=HISTORY_FILE_VERSION, workers=workers)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_replace(path, data.model_dump_json().encode("utf-8"), durable=True)
    except OSError as exc:
        logger.error("cannot write audit histories %s: %s", path, exc)

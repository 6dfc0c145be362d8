"""A follower's refusal of its producer, kept on disk (SPEC 7 v1.1 followers; issue 12).

A follower that meets an invalid or conflicting block stops following (`node.follower`).
Kept only in memory, that verdict was forgotten at the next start: the follower re-synced,
met the same block and refused again, and in between it relayed the operator's writes to a
producer it had already found serving a bad chain. Like Bitcoin Core's invalid-block marks
(cleared by `reconsiderblock`) and geth's bad-block records, the refusal is written
durably to `DATA_DIR/follow.refused` before it is reported, and a follower starting with
one present serves its own chain but neither follows nor relays until the operator clears
it (`hashcloud node start --follow URL --reconsider`).

A record that cannot be read or parsed still counts as a refusal (its reason says so): a
damaged file must not silently turn following back on.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hashcloud.fsutil import atomic_replace, fsync_dir

__all__ = ["REFUSAL_FILE", "UNKNOWN_PRODUCER", "Refusal", "clear_refusal", "load_refusal",
           "record_refusal", "refusal_path"]

REFUSAL_FILE = "follow.refused"
"""The refusal record's file name in the data dir (beside `genesis.json`, outside `chain/`:
a reindex or a lost block store does not clear it)."""

UNKNOWN_PRODUCER = "unknown"
"""The producer of a damaged record: it refuses whatever producer the node is told to follow."""

_MAX_TIME_MS = 253_402_300_800_000
"""Year 10000 in unix milliseconds: a later time is damage (and cannot be shown)."""


@dataclass(frozen=True)
class Refusal:
    """Why and when a follower refused its producer: the producer URL, the reason, this
    node's height then (the blocks it kept), and unix milliseconds."""

    producer: str
    reason: str
    height: int
    time_ms: int

    def describe(self) -> str:
        """One line for logs, `/v1/info` and the CLI."""
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.time_ms / 1000))
        return (f"refused producer {self.producer} at height {self.height} on {when}: "
                f"{self.reason}")


def refusal_path(data_dir: Path) -> Path:
    """Where the refusal record of the node at `data_dir` lives."""
    return Path(data_dir) / REFUSAL_FILE


def record_refusal(data_dir: Path, refusal: Refusal) -> None:
    """Write `refusal` durably (atomic replace, file and directory fsynced); OSError if the
    disk refuses (the caller still refuses in memory)."""
    data = json.dumps(asdict(refusal), sort_keys=True, indent=1).encode() + b"\n"
    atomic_replace(refusal_path(data_dir), data, mode=0o600)


def load_refusal(data_dir: Path) -> Refusal | None:
    """The recorded refusal, or None if there is none. A record that cannot be read or does
    not parse is a refusal too, with a reason naming the damage."""
    path = refusal_path(data_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _damaged(path, f"cannot be read ({exc.strerror or exc})")
    try:
        doc = json.loads(raw)
        fields = (doc["producer"], doc["reason"], doc["height"], doc["time_ms"])
    except (ValueError, TypeError, KeyError):
        return _damaged(path, "is damaged")
    producer, reason, height, time_ms = fields
    if not (isinstance(producer, str) and isinstance(reason, str)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                    for v in (height, time_ms)) and time_ms < _MAX_TIME_MS):
        return _damaged(path, "is damaged")
    return Refusal(producer, reason, height, time_ms)


def _damaged(path: Path, what: str) -> Refusal:
    """The refusal standing in for a record that `what` (cannot be read, is damaged)."""
    try:
        mtime_ms = int(path.stat().st_mtime * 1000)
    except OSError:
        mtime_ms = 0
    return Refusal(UNKNOWN_PRODUCER, f"the refusal record {path} {what}", 0,
                   min(max(mtime_ms, 0), _MAX_TIME_MS - 1))


def clear_refusal(data_dir: Path) -> Refusal | None:
    """Remove the refusal record (durably); the one removed, or None if there was none."""
    prior = load_refusal(data_dir)
    path = refusal_path(data_dir)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    fsync_dir(path.parent)
    return prior

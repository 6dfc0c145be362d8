"""Durable challenges of the PoC validator (SPEC 3 v1.1 "Durable challenges").

A node restart must not void an open round: a challenge, its commitment with the drawn
indices and audit plan, and the outcome of its audit are made durable *before* the node
answers, and rebuilt on start. `ChallengeLog` keeps them in `<data_dir>/validator/
challenges.journal`, an `AppendLog` (`node.journal`: the block log's framing with magic
``b"HCCJ"``, fsynced with group commit). One record per step, a JSON object whose `kind` says
which:

- `issued`: the signed challenge, the worker's public key, issue time (unix s), the client
  address that asked, and the request's `request_time_ms` (the replay guard is rebuilt too);
- `committed`: what the worker committed (its payout address too, SPEC 6 v1.1), the claimed
  rate and peak, the indices and the plan;
- `accepted`: the `RevealResponse` (it carries the receipt), so a repeated reveal after a
  restart still gets the same receipt;
- `rejected`: the round was burned by a failed audit: when (`at`, unix s) and the client
  addresses it counts against (`client_ips`: the one that asked for the challenge and the
  one that revealed it), so the failed audits per client address survive a restart.

`auditing` is never written: a challenge whose audit a crash interrupted comes back
`committed` and the miner simply reveals again.

Replay (`load`) is forward-only and tolerant of duplicates: a record moves its challenge on
only from the state it follows (issued -> committed -> accepted | rejected), anything else is
ignored, so a record written twice (or after a compaction) is harmless. Challenges past
`expiry + reveal_grace_ms` are dropped. Every `rejected` record within `failure_window`
(default `limits.FAILURE_WINDOW`) of now is also returned in `restored_failures`, whether its
challenge is still live or not, and kept in the file until it leaves that window (a
challenge's lifetime may be shorter than the failure window): the validator rebuilds the
failed audits per client address from them. A torn tail (a crash mid-append) is ignored with a
WARNING (`AppendLog.scan`); damage is reported at ERROR, the records before it are kept and
the damaged file is moved aside (`challenges.journal.corrupt-<unix>`): as with the audit
histories, one bad byte must not keep the validator down, and a lost challenge only costs its
miner a new round. After replay the file is rewritten with the live challenges only.

Compaction (the crash-recovery rule of `chain.store`: the file is only ever replaced whole,
atomically): `forget` is told which challenges `expire` dropped; once their records
outnumber the live ones (and at least `compact_min` of them), the log is rewritten without
them (`AppendLog.compact`, under the log's locks, so no append is lost), except the
`rejected` record of a failure still within the failure window, dropped by a later
compaction once it leaves it. A forgotten challenge can never get a new record (it is past
its deadline and not being audited), so judging records by challenge id is race-free.

A failed append (disk full, I/O error) raises `StorageUnavailable` (the caller undoes its
change and the app answers 503); the log cuts the partial record off, so later appends stay
readable.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from hashcloud.api.models import DeviceModel, RevealResponse
from hashcloud.crypto.keys import PublicKey
from hashcloud.errors import HashCloudError
from hashcloud.node.challenges import (
    ChallengeEntry,
    ChallengeState,
    CommittedWork,
    Outcome,
)
from hashcloud.node.journal import AppendLog
from hashcloud.node.limits import FAILURE_WINDOW
from hashcloud.poc.challenge import Challenge
from hashcloud.poc.plan import AuditPlan
from hashcloud.poc.receipt import decode_receipt
from hashcloud.types import AddressStr, PHash32, PublicKeyBytes

__all__ = [
    "CHALLENGE_LOG_MAGIC",
    "COMPACT_MIN",
    "MAX_CHALLENGE_RECORD",
    "ChallengeLog",
    "Failure",
    "challenge_log_path",
]

logger = logging.getLogger(__name__)

CHALLENGE_LOG_MAGIC = b"HCCJ"
"""Record magic of the challenge journal."""
MAX_CHALLENGE_RECORD = 1 << 26
"""Largest record body: a commitment of `s_max` indices with `n` rows each fits easily."""
COMPACT_MIN = 1024
"""Fewest records of forgotten challenges worth a compaction."""

Failure = tuple[float, tuple[str, ...]]
"""A failed audit as the journal keeps it: (unix time, client addresses it counts against)."""


def challenge_log_path(data_dir: Path) -> Path:
    """Where the challenge journal of the node on `data_dir` lives."""
    return Path(data_dir) / "validator" / "challenges.journal"


# ------------------------------------------------------------------------- records

_RECORD_CONFIG = ConfigDict(frozen=True, extra="forbid")


class _Issued(BaseModel):
    """An issued challenge and what the node knew of its request."""

    model_config = _RECORD_CONFIG
    kind: Literal["issued"]
    challenge_id: str
    challenge: Challenge
    worker_key: PublicKeyBytes
    issued_at: float
    client_ip: str
    request_time_ms: int


class _Committed(BaseModel):
    """A commitment and the indices and audit plan drawn after it."""

    model_config = _RECORD_CONFIG
    kind: Literal["committed"]
    challenge_id: str
    loops: int
    compute_time: float
    merkle_root: PHash32
    device: DeviceModel
    rate: float
    peak: float
    indices: list[int]
    plan: AuditPlan
    payout_address: AddressStr | None = None
    """SPEC 6 v1.1: the signed commit's payout address (absent: the worker's)."""


class _Accepted(BaseModel):
    """An accepted audit: the answer (with its receipt) every repeated reveal gets."""

    model_config = _RECORD_CONFIG
    kind: Literal["accepted"]
    challenge_id: str
    response: RevealResponse


class _Rejected(BaseModel):
    """A failed audit: the round is burned; `at` and `client_ips` (absent in records of older
    nodes) say when and against which client addresses it counts."""

    model_config = _RECORD_CONFIG
    kind: Literal["rejected"]
    challenge_id: str
    at: float | None = None
    client_ips: list[str] = []


_Record = Annotated[_Issued | _Committed | _Accepted | _Rejected, Field(discriminator="kind")]
_RECORD = TypeAdapter(_Record)


def _encode(record: BaseModel) -> bytes:
    """The JSON body of one record."""
    return record.model_dump_json().encode("utf-8")


def _entry_records(entry: ChallengeEntry) -> list[bytes]:
    """The records that rebuild `entry` as it stands (an audit in progress as committed)."""
    ch = entry.challenge
    out = [_encode(_Issued(kind="issued", challenge_id=ch.challenge_id, challenge=ch,
                           worker_key=entry.worker_key.data, issued_at=entry.issued_at,
                           client_ip=entry.client_ip, request_time_ms=entry.request_time_ms))]
    if entry.commitment is not None:
        out.append(_committed_record(ch.challenge_id, entry.commitment))
    if entry.state is ChallengeState.ACCEPTED and entry.outcome is not None:
        out.append(_outcome_record(ch.challenge_id, entry.outcome))
    elif entry.state is ChallengeState.REJECTED:
        out.append(_outcome_record(ch.challenge_id, None, entry.failure))
    return out


def _committed_record(challenge_id: str, work: CommittedWork) -> bytes:
    """The `committed` record of `work`."""
    return _encode(_Committed(
        kind="committed", challenge_id=challenge_id, loops=work.loops,
        compute_time=work.compute_time, merkle_root=work.merkle_root, device=work.device,
        rate=work.rate, peak=work.peak, indices=list(work.indices), plan=work.plan,
        payout_address=work.payout_address))


def _outcome_record(challenge_id: str, outcome: Outcome | None,
                    failure: Failure | None = None) -> bytes:
    """The `accepted` (with the response) or `rejected` (with `failure`) record."""
    if outcome is None:
        at, ips = failure if failure is not None else (None, ())
        return _encode(_Rejected(kind="rejected", challenge_id=challenge_id, at=at,
                                 client_ips=list(ips)))
    return _encode(_Accepted(kind="accepted", challenge_id=challenge_id, response=outcome[1]))


def _records_of(entry: ChallengeEntry) -> int:
    """How many records the log holds for `entry` (issued, committed, outcome)."""
    done = entry.state in (ChallengeState.ACCEPTED, ChallengeState.REJECTED)
    return 1 + (entry.commitment is not None) + done


def _record_id(body: bytes) -> str | None:
    """The challenge id a record body is about (None if it cannot be read)."""
    try:
        value = json.loads(body).get("challenge_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _apply(entries: dict[str, ChallengeEntry], record: _Record) -> None:
    """Move one challenge on by one replayed record (forward only; see module doc)."""
    cid = record.challenge_id
    entry = entries.get(cid)
    if isinstance(record, _Issued):
        if entry is None and record.challenge.challenge_id == cid:
            entries[cid] = ChallengeEntry(record.challenge, PublicKey(record.worker_key),
                                          record.issued_at, client_ip=record.client_ip,
                                          request_time_ms=record.request_time_ms)
        return
    if entry is None:
        return
    if isinstance(record, _Committed):
        # The last commitment wins while no outcome follows: a commit whose record reached the
        # disk but whose fsync failed was undone in memory and may have been made again.
        if entry.state in (ChallengeState.ISSUED, ChallengeState.COMMITTED):
            entry.commitment = CommittedWork(record.loops, record.compute_time,
                                             record.merkle_root, record.device, record.rate,
                                             record.peak, tuple(record.indices), record.plan,
                                             record.payout_address)
            entry.state = ChallengeState.COMMITTED
    elif entry.state is ChallengeState.COMMITTED:
        if isinstance(record, _Accepted):
            receipt = decode_receipt(record.response.receipt)
            entry.outcome = (receipt, record.response)
            entry.state = ChallengeState.ACCEPTED
        else:
            entry.state = ChallengeState.REJECTED
            if record.at is not None:
                entry.failure = (record.at, tuple(record.client_ips))


def _failure_time(body: bytes) -> float | None:
    """The `at` of a `rejected` record body (None for any other record)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("kind") != "rejected":
        return None
    at = value.get("at")
    return float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None


# --------------------------------------------------------------------------- the log


class ChallengeLog:
    """The validator's durable record of its challenges (see module doc). Thread-safe.

    `issued`, `committed` and `finished` return once their record is fsynced: call them
    after the in-memory change (under no lock of the caller's) and before answering.
    """

    def __init__(self, data_dir: Path, *, compact_min: int = COMPACT_MIN,
                 failure_window: float = FAILURE_WINDOW) -> None:
        """Open `<data_dir>/validator/challenges.journal` (created if missing); call `load`
        before any append. Failed audits are kept `failure_window` seconds."""
        self.path = challenge_log_path(data_dir)
        self.compact_min = compact_min
        self.failure_window = failure_window
        #: The failed audits within `failure_window` found by `load`, oldest first.
        self.restored_failures: list[Failure] = []
        self._log = AppendLog(self.path, CHALLENGE_LOG_MAGIC, MAX_CHALLENGE_RECORD,
                              "challenge journal")
        self._lock = threading.Lock()  # counters and the forgotten ids
        self._compacting = threading.Lock()
        self._records = 0  # records in the file
        self._dead: set[str] = set()  # forgotten challenges whose records are still there
        self._dead_records = 0
        # Rejected records kept past their challenge, for the failure window: id -> time.
        self._kept: dict[str, float] = {}

    # ------------------------------------------------------------------------ start

    def load(self, now_ms: int, reveal_grace_ms: int) -> list[ChallengeEntry]:
        """Replay the journal: the challenges still within `expiry + reveal_grace_ms` at
        `now_ms`, in issue order, in the state their last record left them. The file is then
        rewritten with exactly their records (torn tail and expired challenges gone)."""
        contents = self._log.scan()
        entries: dict[str, ChallengeEntry] = {}
        failures: dict[str, Failure] = {}
        for body in contents.records:
            try:
                record = _RECORD.validate_json(body)
                _apply(entries, record)
                if isinstance(record, _Rejected) and record.at is not None:
                    failures.setdefault(record.challenge_id,
                                        (record.at, tuple(record.client_ips)))
            except (ValidationError, HashCloudError) as exc:
                logger.warning("challenge journal: unreadable record skipped (%s)",
                               str(exc).splitlines()[0])
        if contents.corrupt is not None:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            logger.error("challenge journal %s is damaged at offset %d (%s): %d records "
                         "before it restored, the file moved to %s", self.path,
                         contents.corrupt.offset, contents.corrupt.reason,
                         len(contents.records), aside.name)
            try:
                os.replace(self.path, aside)
            except OSError as exc:
                logger.error("cannot move %s aside: %s", self.path, exc)
        live = [e for e in entries.values()
                if now_ms < e.challenge.expiry + reveal_grace_ms]
        live_ids = {e.challenge.challenge_id for e in live}
        cutoff = now_ms / 1000 - self.failure_window
        recent = {cid: f for cid, f in failures.items() if f[0] > cutoff}
        kept = {cid: f for cid, f in recent.items() if cid not in live_ids}
        records = [r for e in live for r in _entry_records(e)]
        records += [_outcome_record(cid, None, f) for cid, f in kept.items()]
        self._log.rewrite(records)
        self.restored_failures = sorted(recent.values())
        with self._lock:
            self._records = len(records)
            self._dead.clear()
            self._dead_records = 0
            self._kept = {cid: f[0] for cid, f in kept.items()}
        if live:
            logger.info("challenge journal: %d open or finished challenges restored", len(live))
        return live

    # ---------------------------------------------------------------------- appends

    def issued(self, entry: ChallengeEntry) -> None:
        """Make a freshly issued challenge durable."""
        self._append(_entry_records(entry)[0])

    def committed(self, challenge_id: str, work: CommittedWork) -> None:
        """Make a commitment and its drawn indices and plan durable."""
        self._append(_committed_record(challenge_id, work))

    def finished(self, challenge_id: str, outcome: Outcome | None,
                 failure: Failure | None = None) -> None:
        """Make an audit's outcome durable (None: rejected, at and against the client
        addresses of `failure`)."""
        self._append(_outcome_record(challenge_id, outcome, failure))

    def _append(self, body: bytes) -> None:
        """Append and fsync one record; count it. StorageUnavailable if the disk refuses."""
        self._log.append(body)
        with self._lock:
            self._records += 1

    # ------------------------------------------------------------------- compaction

    def forget(self, entries: list[ChallengeEntry], now: float | None = None) -> int:
        """Note challenges `expire` dropped; compact once their records dominate (`now`,
        unix s, judges which failures are still within the window; default the wall clock).

        Returns the number of records a compaction removed (0 if none ran)."""
        if not entries:
            return 0
        with self._lock:
            for entry in entries:
                self._dead.add(entry.challenge.challenge_id)
                self._dead_records += _records_of(entry)
            due = self._dead_records >= max(self.compact_min,
                                             self._records - self._dead_records)
        return self.compact(now) if due else 0

    def compact(self, now: float | None = None) -> int:
        """Rewrite the journal without the records of forgotten challenges (but the
        `rejected` ones still within the failure window at `now`, default the wall clock);
        return how many records it removed (one at a time: a concurrent call returns 0)."""
        if not self._compacting.acquire(blocking=False):
            return 0
        cutoff = (time.time() if now is None else now) - self.failure_window
        try:
            with self._lock:
                dead = frozenset(self._dead)
                stale = frozenset(cid for cid, at in self._kept.items() if at <= cutoff)
            newly_kept: dict[str, float] = {}

            def keep(body: bytes) -> bool:
                cid = _record_id(body)
                if cid in stale:
                    return False
                if cid not in dead:
                    return True
                at = _failure_time(body)
                if at is not None and at > cutoff:
                    newly_kept[cid] = at
                    return True
                return False

            try:
                dropped = self._log.compact(keep)
            except OSError as exc:  # the old file stays whole; compaction is retried later
                logger.warning("challenge journal compaction failed: %s", exc)
                return 0
            with self._lock:
                self._dead -= dead
                self._kept = {cid: at for cid, at in self._kept.items() if cid not in stale}
                self._kept.update(newly_kept)
                self._records -= dropped
                self._dead_records = max(0, self._dead_records - dropped - len(newly_kept))
            if dropped:
                logger.info("challenge journal compacted: %d records of expired challenges "
                            "removed", dropped)
            return dropped
        finally:
            self._compacting.release()

    @property
    def records(self) -> int:
        """Records in the journal file (live and forgotten)."""
        with self._lock:
            return self._records

    def close(self) -> None:
        """Close the file handle."""
        self._log.close()

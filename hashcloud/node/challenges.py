"""The life cycle of a node-issued challenge and the table holding them (SPEC 3).

A challenge moves one way through the states of `ChallengeState`:

    issued --commit--> committed --reveal--> auditing --+--> accepted  (receipt kept)
       |                   ^                            +--> rejected  (used up)
       |                   +-- audit not run (queue full, internal error): back to committed
       +-- past `expiry`: no commit (ChallengeExpired)

Lifetimes (a documented choice; SPEC 3 only says "unexpired"): a challenge must be
*committed* before its `expiry`; a committed one may be *revealed* until
`expiry + reveal_grace_ms`; after that `expire` forgets it, so later calls get
ChallengeNotFound. A repeated, correctly signed reveal after acceptance gets the *same*
outcome (the miner may retry after a network error); after a rejection every call is refused
with ChallengeUsed.

A reveal is looked up (`for_reveal`) before it is claimed (`claim`, committed -> auditing):
between the two the validator checks the worker's signature and the reveal's shape, and a
reveal failing those (SPEC 3 v1.1: unauthorized or malformed) never claims the challenge,
so it stays committed until its deadline.

`ChallengeTable` is pure bookkeeping with `now_ms` passed in and no lock of its own: the
validator holds its lock around every call. The table lives in memory; `node.challenge_log`
makes every issued challenge, commitment (with its audit plan) and outcome durable before the
node answers and rebuilds the table on start (SPEC 3 v1.1 "Durable challenges"): `auditing` is
never written, so a challenge whose audit a crash interrupted comes back `committed`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hashcloud.api.models import DeviceModel, RevealResponse
from hashcloud.crypto.keys import PublicKey
from hashcloud.errors import ChallengeExpired, ChallengeNotFound, ChallengeUsed
from hashcloud.poc.challenge import Challenge
from hashcloud.poc.plan import AuditPlan
from hashcloud.poc.receipt import Receipt

__all__ = [
    "ChallengeEntry",
    "ChallengeState",
    "ChallengeTable",
    "CommittedWork",
    "Outcome",
    "require_state",
]

Outcome = tuple[Receipt, RevealResponse]
"""What an accepted reveal returns: the signed receipt and the HTTP answer carrying it."""


class ChallengeState(enum.Enum):
    """Life cycle of one challenge (SPEC 3): issued -> committed -> auditing -> end."""

    ISSUED = "issued"
    COMMITTED = "committed"
    AUDITING = "auditing"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


#: Why an action is refused in each state (the ChallengeUsed message).
_REFUSAL = {
    ChallengeState.ISSUED: "is not committed yet",
    ChallengeState.COMMITTED: "is already committed",
    ChallengeState.AUDITING: "is being audited",
    ChallengeState.ACCEPTED: "was already accepted",
    ChallengeState.REJECTED: "was rejected and is used up",
}

#: States whose challenge counts as open (against `max_open_per_worker`) until its expiry.
_OPEN = (ChallengeState.ISSUED, ChallengeState.COMMITTED, ChallengeState.AUDITING)


@dataclass(frozen=True, slots=True)
class CommittedWork:
    """What the worker committed to and what the node drew after it (SPEC 3).

    `rate` and `peak` are the claimed rate and the declared backend's peak (FLOP/s), kept
    for the adaptive audit; `indices` are the sample indices the node drew and `plan` the
    audit plan drawn with them (SPEC 3 v1.1), both signed in the commit answer."""

    loops: int
    compute_time: float
    merkle_root: bytes
    device: DeviceModel
    rate: float
    peak: float
    indices: tuple[int, ...]
    plan: AuditPlan
    payout_address: str | None = None
    """SPEC 6 v1.1: the signed commit's payout address (None: the worker's)."""


@dataclass(slots=True)
class ChallengeEntry:
    """One issued challenge and everything the node knows about it.

    `worker_key` is the key that signed the challenge request (its address is the
    challenge's worker); `issued_at` is the node's clock (unix seconds) at issue, for the
    SPEC 3 `compute_time <= now - issue time` check; `client_ip` (the issuing request's
    socket peer) is charged a failed audit; `request_time_ms` is the signed request's time,
    restored into the replay guard after a restart; `failure`, once its audit failed: when
    and against which client addresses (the issuing and the revealing one) it counts.
    """

    challenge: Challenge
    worker_key: PublicKey
    issued_at: float
    client_ip: str = ""
    request_time_ms: int = 0
    state: ChallengeState = ChallengeState.ISSUED
    commitment: CommittedWork | None = None
    outcome: Outcome | None = None
    failure: tuple[float, tuple[str, ...]] | None = None


class ChallengeTable:
    """The in-memory challenges of one node, by id and by worker. Caller-locked.

    Insertion order is issue order, which is expiry order for a fixed TTL, so `expire`
    stops at the first live challenge.
    """

    def __init__(self, reveal_grace_ms: int) -> None:
        """Committed challenges may be revealed until `expiry + reveal_grace_ms`."""
        self.reveal_grace_ms = reveal_grace_ms
        self._entries: dict[str, ChallengeEntry] = {}
        self._by_worker: dict[str, set[str]] = {}

    def __len__(self) -> int:
        """Challenges held (open or finished, until they expire)."""
        return len(self._entries)

    # --------------------------------------------------------------------- transitions

    def add(self, entry: ChallengeEntry) -> None:
        """Hold a freshly issued challenge; ChallengeUsed if its id is already taken
        (2^-128 with a CSPRNG; a seeded test rng may repeat)."""
        cid = entry.challenge.challenge_id
        if cid in self._entries:
            raise ChallengeUsed("challenge id collision; retry")
        self._entries[cid] = entry
        self._by_worker.setdefault(entry.challenge.worker_address, set()).add(cid)

    def discard(self, entry: ChallengeEntry) -> None:
        """Forget a freshly issued challenge whose issue could not be made durable (nobody
        got it), so it does not count against its worker's open bound."""
        cid = entry.challenge.challenge_id
        if self._entries.get(cid) is not entry:
            return
        del self._entries[cid]
        ids = self._by_worker.get(entry.challenge.worker_address)
        if ids is not None:
            ids.discard(cid)
            if not ids:
                del self._by_worker[entry.challenge.worker_address]

    def lookup(self, challenge_id: str) -> ChallengeEntry:
        """The entry of `challenge_id`, or ChallengeNotFound (the node only holds challenges
        it signed, so the token needs no re-check)."""
        entry = self._entries.get(challenge_id)
        if entry is None:
            raise ChallengeNotFound(f"unknown challenge {challenge_id}")
        return entry

    def for_commit(self, challenge_id: str, now_ms: int) -> ChallengeEntry:
        """The entry a commitment may be made to: issued (ChallengeUsed) and before its
        `expiry` (ChallengeExpired)."""
        entry = self.lookup(challenge_id)
        require_state(entry, ChallengeState.ISSUED, "commit")
        if now_ms >= entry.challenge.expiry:
            raise ChallengeExpired(f"challenge {challenge_id} expired; ask for a new one")
        return entry

    def commit(self, entry: ChallengeEntry, work: CommittedWork) -> None:
        """issued -> committed with `work` (ChallengeUsed if a concurrent commit won)."""
        require_state(entry, ChallengeState.ISSUED, "commit")
        entry.commitment = work
        entry.state = ChallengeState.COMMITTED

    @staticmethod
    def uncommit(entry: ChallengeEntry, work: CommittedWork) -> None:
        """committed -> issued: the commitment `work` could not be made durable, so nobody
        got its indices; the worker may commit again (a no-op if `entry` moved on)."""
        if entry.state is ChallengeState.COMMITTED and entry.commitment is work:
            entry.commitment = None
            entry.state = ChallengeState.ISSUED

    def for_reveal(self, challenge_id: str, now_ms: int) -> ChallengeEntry:
        """The entry a reveal is about, without claiming it (SPEC 3 v1.1).

        An accepted challenge is returned unchanged (state ACCEPTED, `outcome` set): once
        the reveal's signature is checked, the caller answers with that same outcome
        (idempotent reveal). Otherwise the challenge must be committed (ChallengeUsed: a
        concurrent reveal holds it, or it is used up) and within `expiry + reveal_grace_ms`
        (ChallengeExpired)."""
        entry = self.lookup(challenge_id)
        if entry.state is ChallengeState.ACCEPTED and entry.outcome is not None:
            return entry
        require_state(entry, ChallengeState.COMMITTED, "reveal")
        if now_ms >= entry.challenge.expiry + self.reveal_grace_ms:
            raise ChallengeExpired(f"reveal deadline of challenge {challenge_id} passed")
        return entry

    def claim(self, entry: ChallengeEntry, now_ms: int) -> None:
        """committed -> auditing: the audit of `entry` starts (concurrent reveals of it now
        get ChallengeUsed). Same refusals as `for_reveal` for a non-committed entry, and
        ChallengeExpired if `expire` dropped it since it was looked up."""
        cid = entry.challenge.challenge_id
        if self._entries.get(cid) is not entry:
            raise ChallengeExpired(f"reveal deadline of challenge {cid} passed")
        require_state(entry, ChallengeState.COMMITTED, "reveal")
        if now_ms >= entry.challenge.expiry + self.reveal_grace_ms:
            raise ChallengeExpired(f"reveal deadline of challenge {cid} passed")
        entry.state = ChallengeState.AUDITING

    @staticmethod
    def release(entry: ChallengeEntry) -> None:
        """auditing -> committed: the audit did not run to a verdict through no fault of the
        miner (audit queue full, internal error), so the challenge may be revealed again."""
        entry.state = ChallengeState.COMMITTED

    @staticmethod
    def finish(entry: ChallengeEntry, outcome: Outcome | None) -> None:
        """auditing -> accepted (keeping `outcome` for repeated reveals) or, with None,
        -> rejected (used up)."""
        if outcome is None:
            entry.state = ChallengeState.REJECTED
        else:
            entry.state = ChallengeState.ACCEPTED
            entry.outcome = outcome

    # ------------------------------------------------------------------------ queries

    def open_count(self, address: str, now_ms: int) -> int:
        """Open challenges of worker `address` (what `max_open_per_worker` bounds)."""
        return sum(1 for e in self._of_worker(address) if _is_open(e, now_ms))

    def next_open_expiry(self, address: str, now_ms: int) -> float:
        """Unix seconds when the first open challenge of `address` expires (`now` if none)."""
        expiries = [e.challenge.expiry for e in self._of_worker(address) if _is_open(e, now_ms)]
        return min(expiries, default=now_ms) / 1000

    def open_total(self, now_ms: int) -> int:
        """Open challenges of all workers."""
        return sum(1 for e in self._entries.values() if _is_open(e, now_ms))

    def expire(self, now_ms: int) -> int:
        """Forget challenges past `expiry + reveal_grace_ms`; return how many were dropped."""
        return len(self.drop_expired(now_ms))

    def drop_expired(self, now_ms: int) -> list[ChallengeEntry]:
        """Forget challenges past `expiry + reveal_grace_ms` and return them.

        A challenge whose audit is running is kept (dropped on a later call)."""
        dropped: list[ChallengeEntry] = []
        for cid in list(self._entries):
            entry = self._entries[cid]
            if now_ms < entry.challenge.expiry + self.reveal_grace_ms:
                break
            if entry.state is ChallengeState.AUDITING:
                continue
            del self._entries[cid]
            address = entry.challenge.worker_address
            ids = self._by_worker.get(address)
            if ids is not None:
                ids.discard(cid)
                if not ids:
                    del self._by_worker[address]
            dropped.append(entry)
        return dropped

    def entries(self) -> list[ChallengeEntry]:
        """Every entry held, in issue order."""
        return list(self._entries.values())

    def _of_worker(self, address: str) -> list[ChallengeEntry]:
        """The entries of worker `address`."""
        return [self._entries[cid] for cid in self._by_worker.get(address, ())]


def require_state(entry: ChallengeEntry, state: ChallengeState, action: str) -> None:
    """Raise ChallengeUsed, saying why, unless `entry` is in `state`."""
    if entry.state is not state:
        raise ChallengeUsed(f"cannot {action}: challenge {entry.challenge.challenge_id} "
                            f"{_REFUSAL[entry.state]}")


def _is_open(entry: ChallengeEntry, now_ms: int) -> bool:
    """Issued or in progress and not past expiry (what the open bound counts)."""
    return entry.state in _OPEN and now_ms < entry.challenge.expiry

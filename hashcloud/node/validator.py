"""The node's PoC validator: challenge, commitment, audit and receipt (SPEC 3, 4, 5).

`PocValidator` runs the grinding-proof M-PoC flow of SPEC 3 for the HTTP app, framework-free:

1. `issue`: a worker proves it holds its key (signed, fresh `ChallengeRequest`), passes the
   rate limits, the failed-audit cooldown and the open-challenge bound, and gets a signed
   `Challenge` bound to the chain head, to itself and to a fresh id.
2. `commit`: the worker commits `{loops, compute_time, merkle_root, device}` under its key.
   The SPEC 3 sanity checks run before any recomputation; only then does the node draw the
   `s` stratified sample indices from a CSPRNG and sign them.
3. `reveal`: every inclusion proof is checked against the committed root, `m` of the `s`
   leaves (the adaptive policy's choice) are recomputed, and only if everything holds the
   node signs a `Receipt`. Any failure is recorded in the worker's audit history (raising
   later audits and possibly triggering a cooldown).

Lifetimes (a documented choice; SPEC 3 only says "unexpired"):
- a challenge must be *committed* before its `expiry`;
- a committed challenge may be *revealed* until `expiry + reveal_grace_ms` (default: one
  more TTL), so a round that commits just before expiry can still finish its reveal;
- after `expiry + reveal_grace_ms` the challenge is forgotten (`expire`), so later calls get
  `ChallengeNotFound`.

Each challenge is usable once. A repeated reveal after acceptance returns the *same* receipt
(the miner may retry after a network error) and never a new one; after a rejection every
further reveal is refused with `ChallengeUsed`.

Persistence: the per-worker audit histories (`WorkerHistory`) survive restarts in
`<data_dir>/validator/history.json`, written atomically after every change. Challenges live
in memory only (they are short-lived): a restart invalidates every open challenge, and their
miners simply ask for new ones.

Thread safety: one lock guards all in-memory state. It is never held during the expensive
parts (leaf recomputation, receipt signing): a reveal first claims its challenge (state
`auditing`, so a concurrent reveal of the same challenge is refused), then audits unlocked,
then publishes the outcome under the lock.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from hashcloud.api.models import (
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    CommitResponse,
    DeviceModel,
    RevealRequest,
    RevealResponse,
)
from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.crypto.merkle import verify_inclusion
from hashcloud.crypto.signatures import sign, verify
from hashcloud.engine.gemm import compute_leaf
from hashcloud.errors import (
    AuditFailed,
    ChallengeExpired,
    ChallengeNotFound,
    ChallengeUsed,
    CommitRefused,
    CoolingDown,
    InvalidKey,
    InvalidSignature,
    MerkleError,
    RateLimited,
    RequestRefused,
    RevealRefused,
    ValidatorError,
)
from hashcloud.poc.audit_policy import DEFAULT_POLICY, AuditPolicy, WorkerHistory, claimed_rate
from hashcloud.poc.challenge import (
    Challenge,
    challenge_request_bytes,
    commit_message,
    indices_signing_bytes,
    issue_challenge,
)
from hashcloud.poc.receipt import Receipt, encode_receipt, sign_receipt
from hashcloud.poc.sampling import DEFAULT_S_MAX, random_indices, sample_count
from hashcloud.types import AddressStr, from_phex, to_phex

__all__ = [
    "DEVICE_PEAK_FLOPS",
    "AuditFailed",
    "ChallengeExpired",
    "ChallengeNotFound",
    "ChallengeUsed",
    "CommitRefused",
    "CoolingDown",
    "PocValidator",
    "RateLimited",
    "RequestRefused",
    "RevealRefused",
    "ValidatorError",
    "device_peak_flops",
]

logger = logging.getLogger(__name__)

LeafFn = Callable[[str, int, int], bytes]
"""`leaf_fn(seed, index, n) -> leaf_i` (SPEC 1); `compute_leaf` in production."""

RewardFn = Callable[[Receipt], int]
"""Optional estimate of the reward a receipt earns, for `RevealResponse.reward_estimate`."""

#: Slack (seconds) allowed on `compute_time <= now - issue time` for clock granularity.
COMPUTE_TIME_SLACK = 1.0
#: Length of the sliding rate-limit window (seconds).
RATE_WINDOW = 60.0
HISTORY_FILE_VERSION = 1


# --------------------------------------------------------------------------------- errors


# ------------------------------------------------------------------------- device peaks

#: Conservative upper bounds of exact-GEMM FLOP/s per declared backend (SPEC 3: "claimed rate
#: not above the declared device's peak"). Declared devices are untrusted, so the bound is
#: per backend, above any real device of that kind: "numpy" (any CPU) 20 TFLOP/s, a big
#: many-core CPU with wide FMA units; "cupy" 2.5 PFLOP/s, above any current GPU's dense
#: TF32/BF16 tensor-core rate (every exact path of SPEC 1.6 is at most that).
DEVICE_PEAK_FLOPS: dict[str, float] = {"numpy": 20e12, "cupy": 2.5e15}


def device_peak_flops(device: DeviceModel) -> float:
    """Upper bound of FLOP/s for the declared `device` (SPEC 3 sanity check).

    Looks up `device.backend` in `DEVICE_PEAK_FLOPS`; the name is informational only.
    Raises CommitRefused for an unknown backend.
    """
    try:
        return DEVICE_PEAK_FLOPS[device.backend]
    except KeyError:
        known = ", ".join(sorted(DEVICE_PEAK_FLOPS))
        raise CommitRefused(f"unknown backend {device.backend!r} (known: {known})") from None


# ------------------------------------------------------------------------ internal state


class _State(enum.Enum):
    """Life cycle of one challenge (SPEC 3): issued -> committed -> auditing -> end."""

    ISSUED = "issued"
    COMMITTED = "committed"
    AUDITING = "auditing"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class _Commitment:
    """What the worker committed to and what the node drew after it (SPEC 3)."""

    loops: int
    compute_time: float
    merkle_root: str  # "0x" hex, as signed
    device: DeviceModel
    rate: float
    peak: float
    indices: tuple[int, ...]


@dataclass(slots=True)
class _Entry:
    """One issued challenge and everything the node knows about it."""

    challenge: Challenge
    worker_key: PublicKey
    issued_at: float  # clock seconds
    client_ip: str = ""
    state: _State = _State.ISSUED
    commitment: _Commitment | None = None
    outcome: tuple[Receipt, RevealResponse] | None = None


@dataclass(slots=True)
class _Counters:
    """Monotone counters exported by `stats()`."""

    issued: int = 0
    committed: int = 0
    accepted: int = 0
    rejected: int = 0
    rate_limited: int = 0
    cooling_down: int = 0
    refused: int = 0


@dataclass(slots=True)
class _Window:
    """Sliding-window rate limiter: timestamps of the requests in the last `RATE_WINDOW`."""

    times: deque[float] = field(default_factory=deque)

    def prune(self, now: float) -> None:
        """Forget requests older than the window."""
        while self.times and self.times[0] <= now - RATE_WINDOW:
            self.times.popleft()

    def retry_after(self, now: float, limit: int) -> float | None:
        """Seconds until a request fits under `limit`, or None if one fits now."""
        self.prune(now)
        if len(self.times) < limit:
            return None
        return self.times[len(self.times) - limit] + RATE_WINDOW - now


class _HistoryFile(BaseModel):
    """On-disk form of the audit histories: `{"version": 1, "workers": {address: ...}}`."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    version: Literal[1]
    workers: dict[AddressStr, WorkerHistory]


# ----------------------------------------------------------------------------- validator


class PocValidator:
    """The node's PoC validator service (SPEC 3): issue, commit, reveal -> receipt.

    Framework-free and thread-safe; the HTTP app maps each `ValidatorError` to a status
    code (`app.HTTP_STATUS`). `clock` returns unix seconds (float); `rng` is the CSPRNG that
    draws sample indices and the audited subset (tests may inject a seeded `random.Random`);
    `leaf_fn` recomputes one leaf (SPEC 1). `reveal_grace_ms` (default: `challenge_ttl_ms`)
    is how long after `expiry` a committed challenge may still be revealed. `reward_fn`, if
    given, fills `RevealResponse.reward_estimate` (else 0: the app fills it in).
    """

    def __init__(
        self,
        key: PrivateKey,
        chain_id: str,
        data_dir: Path,
        *,
        policy: AuditPolicy = DEFAULT_POLICY,
        challenge_ttl_ms: int = 10 * 60_000,
        reveal_grace_ms: int | None = None,
        max_open_per_worker: int = 4,
        requests_per_minute_per_address: int = 60,
        requests_per_minute_per_ip: int = 240,
        request_time_skew_ms: int = 120_000,
        s_max: int = DEFAULT_S_MAX,
        max_n: int = 4096,
        audit_slots: int | None = None,
        audit_queue: int | None = None,
        ip_failures_per_hour: int = 20,
        leaf_fn: LeafFn = compute_leaf,
        reward_fn: RewardFn | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        for name, value in (
            ("challenge_ttl_ms", challenge_ttl_ms),
            ("max_open_per_worker", max_open_per_worker),
            ("requests_per_minute_per_address", requests_per_minute_per_address),
            ("requests_per_minute_per_ip", requests_per_minute_per_ip),
            ("s_max", s_max),
            ("max_n", max_n),
            ("ip_failures_per_hour", ip_failures_per_hour),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer")
        if request_time_skew_ms < 0 or (reveal_grace_ms is not None and reveal_grace_ms < 0):
            raise ValueError("request_time_skew_ms and reveal_grace_ms must be non-negative")
        self.key = key
        self.chain_id = chain_id
        self.policy = policy
        self.challenge_ttl_ms = challenge_ttl_ms
        self.reveal_grace_ms = challenge_ttl_ms if reveal_grace_ms is None else reveal_grace_ms
        self.max_open_per_worker = max_open_per_worker
        self.requests_per_minute_per_address = requests_per_minute_per_address
        self.requests_per_minute_per_ip = requests_per_minute_per_ip
        self.request_time_skew_ms = request_time_skew_ms
        self.s_max = s_max
        self.max_n = max_n
        # Recomputation is the node's only expensive step: at most `audit_slots` run at once
        # and at most `audit_queue` more wait; beyond that a reveal is answered 429 (and the
        # challenge stays committed, so an honest miner simply retries).
        self.audit_slots = audit_slots or os.cpu_count() or 1
        self.audit_queue = 4 * self.audit_slots if audit_queue is None else audit_queue
        self._audit_semaphore = threading.BoundedSemaphore(self.audit_slots)
        self._audits_pending = 0
        # Failed audits per client IP: fresh addresses are free, IPs are not.
        self.ip_failures_per_hour = ip_failures_per_hour
        self._ip_failures: dict[str, list[float]] = {}
        self._leaf_fn = leaf_fn
        self._reward_fn = reward_fn
        self._clock = clock
        self._rng = secrets.SystemRandom() if rng is None else rng
        self._node_public_key = key.public_key.hex()

        self._lock = threading.Lock()
        # Insertion order is issue order, so expiry order for a fixed TTL (see `expire`).
        self._challenges: dict[str, _Entry] = {}
        self._by_worker: dict[str, set[str]] = {}
        self._address_windows: dict[str, _Window] = {}
        self._ip_windows: dict[str, _Window] = {}
        # (address, request_time_ms) of requests that got a challenge, until they go stale.
        self._used_requests: dict[tuple[str, int], float] = {}
        self._counters = _Counters()

        self._history_path = Path(data_dir) / "validator" / "history.json"
        self._save_lock = threading.Lock()
        self._history_version = self._saved_version = 0
        self._histories: dict[str, WorkerHistory] = self._load_histories()

    # ------------------------------------------------------------------------- issue

    def issue(
        self, req: ChallengeRequest, head_height: int, head_hash: str, client_ip: str
    ) -> ChallengeResponse:
        """Issue a signed challenge to the requesting worker (SPEC 3).

        Checks, in order: the per-IP rate limit (before any signature work, so a flood is
        cheap to refuse), the request signature (the public key must be the worker's and sign
        `challenge_request_bytes`; SPEC 5), the request time (within `request_time_skew_ms`
        of now, and not a replay of a request that already got a challenge), the per-address
        rate limit, the failed-audit cooldown and the open-challenge bound. Raises
        RateLimited, RequestRefused or CoolingDown.
        """
        now = self._clock()
        now_ms = _ms(now)
        self.expire()
        with self._lock:
            self._take_rate_slot(
                self._ip_windows, client_ip, now, self.requests_per_minute_per_ip, f"IP {client_ip}"
            )
        with self._lock:
            self._check_ip_failures(client_ip, now)
        if req.n > self.max_n:
            self._counters.refused += 1
            raise RequestRefused(f"n = {req.n} is above this node's maximum of {self.max_n}")
        worker_key = self._check_request(req, now_ms)
        address = req.worker_address
        with self._lock:
            if (address, req.request_time_ms) in self._used_requests:
                self._counters.refused += 1
                raise RequestRefused("challenge request already used; sign a fresh request")
            self._take_rate_slot(
                self._address_windows,
                address,
                now,
                self.requests_per_minute_per_address,
                f"address {address}",
            )
            self._check_cooldown(address, now)
            open_now = self._open_count(address, now_ms)
            if open_now >= self.max_open_per_worker:
                self._counters.rate_limited += 1
                retry = self._next_open_expiry(address, now_ms) - now
                raise RateLimited(
                    f"too many open challenges ({open_now} of {self.max_open_per_worker}); "
                    f"finish one or retry in {math.ceil(retry)} s",
                    retry,
                )
            challenge = issue_challenge(
                self.key,
                self.chain_id,
                address,
                req.n,
                head_height,
                head_hash,
                now_ms + self.challenge_ttl_ms,
                challenge_id=self._rng.getrandbits(128).to_bytes(16, "big").hex(),
            )
            cid = challenge.challenge_id
            if cid in self._challenges:  # 2^-128 with a CSPRNG; a seeded test rng may repeat
                raise ChallengeUsed("challenge id collision; retry")
            self._challenges[cid] = _Entry(challenge, worker_key, now, client_ip=client_ip)
            self._by_worker.setdefault(address, set()).add(cid)
            self._used_requests[(address, req.request_time_ms)] = (
                now + 2 * self.request_time_skew_ms / 1000
            )
            self._counters.issued += 1
        return ChallengeResponse(
            challenge=challenge,
            chain_id=self.chain_id,
            node_public_key=self._node_public_key,
            s_max=self.s_max,
        )

    def _check_request(self, req: ChallengeRequest, now_ms: int) -> PublicKey:
        """Signature, key/address match and freshness of a challenge request (SPEC 3, 5)."""
        try:
            worker_key = PublicKey.from_hex(req.public_key)
        except InvalidKey as exc:
            self._count_refused()
            raise RequestRefused(f"invalid public key: {exc}") from None
        if worker_key.address != req.worker_address:
            self._count_refused()
            raise RequestRefused("public key does not belong to worker_address")
        message = challenge_request_bytes(
            self.chain_id, req.worker_address, req.n, req.request_time_ms
        )
        try:
            verify(worker_key, message, bytes.fromhex(req.signature))
        except InvalidSignature:
            self._count_refused()
            raise RequestRefused("challenge request signature is invalid") from None
        skew = req.request_time_ms - now_ms
        if abs(skew) > self.request_time_skew_ms:
            self._count_refused()
            raise RequestRefused(
                f"request_time_ms is {skew / 1000:+.1f} s from the node's clock "
                f"(at most {self.request_time_skew_ms / 1000:g} s allowed)"
            )
        return worker_key

    def _take_rate_slot(
        self, windows: dict[str, _Window], key: str, now: float, limit: int, what: str
    ) -> None:
        """Count one request for `key` or raise RateLimited saying when to retry. Locked."""
        window = windows.setdefault(key, _Window())
        retry = window.retry_after(now, limit)
        if retry is not None:
            self._counters.rate_limited += 1
            raise RateLimited(
                f"rate limit of {limit} requests per minute for {what} exceeded; "
                f"retry in {math.ceil(retry)} s",
                retry,
            )
        window.times.append(now)

    def _check_cooldown(self, address: str, now: float) -> None:
        """Raise CoolingDown while the policy's failure cooldown runs (SPEC 3). Locked."""
        history = self._histories.get(address, WorkerHistory())
        until = self.policy.cooldown_until(history, now)
        if until is not None:
            self._counters.cooling_down += 1
            raise CoolingDown(
                f"worker is cooling down after failed audits until "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))} "
                f"(retry in {math.ceil(until - now)} s)",
                until - now,
                until,
            )

    # ------------------------------------------------------------------------ commit

    def commit(self, challenge_id: str, req: CommitRequest) -> CommitResponse:
        """Accept a worker's commitment, then draw and sign the sample indices (SPEC 3).

        Sanity checks before anything else: the challenge is known (ChallengeNotFound; the
        node only holds challenges it signed, so the token needs no re-check), in state
        issued (ChallengeUsed), unexpired (ChallengeExpired); the `device_signature`
        is the challenge worker's over the SPEC 4 commit message; `compute_time` is at most
        the time elapsed since issue (+ `COMPUTE_TIME_SLACK`); the backend is known and the
        claimed rate `loops * 2 * n^3 / compute_time` is not above its peak (CommitRefused).
        Only then are `s = sample_count(loops, s_max)` stratified indices drawn from the
        CSPRNG, so the miner cannot choose or grind them.
        """
        now = self._clock()
        entry = self._entry_in_state(challenge_id, _State.ISSUED, "commit")
        ch = entry.challenge
        if _ms(now) >= ch.expiry:
            raise ChallengeExpired(f"challenge {challenge_id} expired; ask for a new one")
        message = commit_message(
            challenge_id,
            ch.seed,
            ch.n,
            ch.worker_address,
            req.loops,
            req.compute_time,
            req.merkle_root,
        )
        try:
            verify(entry.worker_key, message, from_phex(req.device_signature))
        except InvalidSignature:
            self._count_refused()
            raise CommitRefused(
                "device_signature is not the challenge worker's signature over the commitment"
            ) from None
        elapsed = now - entry.issued_at
        if req.compute_time > elapsed + COMPUTE_TIME_SLACK:
            self._count_refused()
            raise CommitRefused(
                f"compute_time {req.compute_time:.3f} s exceeds the {elapsed:.3f} s elapsed "
                "since the challenge was issued"
            )
        try:
            peak = device_peak_flops(req.device)
        except CommitRefused:
            self._count_refused()
            raise
        rate = claimed_rate(req.loops, ch.n, req.compute_time)
        if rate > peak:
            self._count_refused()
            raise CommitRefused(
                f"claimed rate {rate:.3e} FLOP/s is above the {req.device.backend} "
                f"peak of {peak:.3e} FLOP/s"
            )
        s = sample_count(req.loops, self.s_max)
        with self._lock:
            self._require_state(challenge_id, entry, _State.ISSUED, "commit")
            indices = tuple(random_indices(req.loops, s, self._rng))
            entry.commitment = _Commitment(
                req.loops, req.compute_time, req.merkle_root, req.device, rate, peak, indices
            )
            entry.state = _State.COMMITTED
            self._counters.committed += 1
        signature = sign(
            self.key,
            indices_signing_bytes(self.chain_id, challenge_id, req.merkle_root, req.loops, indices),
        )
        return CommitResponse(
            challenge_id=challenge_id, indices=list(indices), indices_signature=to_phex(signature)
        )

    # ------------------------------------------------------------------------ reveal

    def reveal(self, challenge_id: str, req: RevealRequest) -> tuple[Receipt, RevealResponse]:
        """Audit the revealed samples and sign a receipt if they all hold (SPEC 3).

        CPU-heavy (recomputes `m` leaves): call it from a worker thread. The challenge must
        be committed (ChallengeUsed otherwise) and within `expiry + reveal_grace_ms`
        (ChallengeExpired). The samples must be exactly the drawn indices in order
        (RevealRefused); every inclusion proof must verify against the committed root with
        size `loops`, then `m = policy.choose_m(...)` of the `s` samples, picked by the
        CSPRNG, are recomputed with `leaf_fn` and compared (AuditFailed naming the index).
        Any refusal burns the challenge and records a failed audit in the worker's history.
        A repeated reveal after acceptance returns the same receipt and response.
        """
        now = self._clock()
        with self._lock:
            entry = self._lookup(challenge_id)
            if entry.state is _State.ACCEPTED and entry.outcome is not None:
                return entry.outcome  # idempotent: the same receipt, never a new one
            self._require_state(challenge_id, entry, _State.COMMITTED, "reveal")
            if _ms(now) >= entry.challenge.expiry + self.reveal_grace_ms:
                raise ChallengeExpired(f"reveal deadline of challenge {challenge_id} passed")
            entry.state = _State.AUDITING  # claims the challenge: concurrent reveals get 409
            history = self._histories.get(entry.challenge.worker_address, WorkerHistory())
        try:
            self._admit_audit()
        except RateLimited:
            with self._lock:  # not the miner's fault: the challenge can be revealed again
                entry.state = _State.COMMITTED
            raise
        try:
            outcome = self._audit(entry, req, history, now)
        except ValidatorError as exc:
            self._finish(entry, None, now)
            logger.info("challenge %s rejected: %s", challenge_id, exc)
            raise
        except BaseException:
            with self._lock:  # an internal error is not the miner's fault: allow a retry
                entry.state = _State.COMMITTED
            raise
        finally:
            with self._lock:
                self._audits_pending -= 1
        self._finish(entry, outcome, now)
        return outcome

    def _admit_audit(self) -> None:
        """Take a place in the bounded audit queue or raise RateLimited (429)."""
        with self._lock:
            if self._audits_pending >= self.audit_slots + self.audit_queue:
                self._counters.rate_limited += 1
                raise RateLimited("the node's audit queue is full; retry the reveal shortly", 1.0)
            self._audits_pending += 1

    def _check_ip_failures(self, client_ip: str, now: float) -> None:
        """Refuse challenges to an IP with too many failed audits in the last hour. Locked."""
        recent = [t for t in self._ip_failures.get(client_ip, ()) if now - t < 3600]
        self._ip_failures[client_ip] = recent
        if len(recent) >= self.ip_failures_per_hour:
            self._counters.rate_limited += 1
            retry = recent[0] + 3600 - now
            raise RateLimited(f"too many failed audits from IP {client_ip}; retry in "
                              f"{math.ceil(retry)} s", retry)

    def _audit(
        self, entry: _Entry, req: RevealRequest, history: WorkerHistory, now: float
    ) -> tuple[Receipt, RevealResponse]:
        """Index set, inclusion proofs, then recomputation of `m` samples (unlocked)."""
        ch, com = entry.challenge, entry.commitment
        assert com is not None  # state COMMITTED implies a commitment
        revealed = tuple(smp.index for smp in req.samples)
        if revealed != com.indices:
            raise RevealRefused(
                f"revealed indices are not the {len(com.indices)} drawn indices in order"
            )
        root = from_phex(com.merkle_root)
        for smp in req.samples:
            try:
                verify_inclusion(
                    from_phex(smp.leaf),
                    smp.index,
                    com.loops,
                    [from_phex(h) for h in smp.proof],
                    root,
                )
            except MerkleError as exc:
                raise AuditFailed(f"index {smp.index}: inclusion proof failed: {exc}") from None
        s = len(com.indices)
        m = self.policy.choose_m(s, com.rate, com.peak, history, now)
        with self._lock:  # the shared rng is not guaranteed thread-safe
            audited = sorted(self._rng.sample(range(s), m))
        with self._audit_semaphore:  # bounded concurrency of the expensive part
            for j in audited:
                smp = req.samples[j]
                if self._leaf_fn(ch.seed, smp.index, ch.n) != from_phex(smp.leaf):
                    raise AuditFailed(
                        f"index {smp.index}: leaf does not match its recomputation")
        receipt = sign_receipt(
            chain_id=self.chain_id,
            task_id=ch.challenge_id,
            worker_address=ch.worker_address,
            seed=ch.seed,
            n=ch.n,
            loops=com.loops,
            merkle_root=com.merkle_root[2:],
            compute_time_ms=round(com.compute_time * 1000),
            samples=s,
            audited=m,
            issued_height=ch.issued_height,
            accepted_at=_ms(now),
            key=self.key,
        )
        reward = self._reward_fn(receipt) if self._reward_fn is not None else 0
        response = RevealResponse(
            accepted=True,
            receipt=encode_receipt(receipt).hex(),
            audited=m,
            samples=s,
            reward_estimate=reward,
        )
        return receipt, response

    def _finish(
        self, entry: _Entry, outcome: tuple[Receipt, RevealResponse] | None, now: float
    ) -> None:
        """Publish an audit outcome and record it in the worker's history (persisted)."""
        address = entry.challenge.worker_address
        with self._lock:
            history = self._histories.get(address, WorkerHistory())
            if outcome is None:
                entry.state = _State.REJECTED
                self._counters.rejected += 1
                self._ip_failures.setdefault(entry.client_ip, []).append(now)
                history = self.policy.record_result(history, False, None, now)
            else:
                entry.state = _State.ACCEPTED
                entry.outcome = outcome
                self._counters.accepted += 1
                assert entry.commitment is not None
                history = self.policy.record_result(history, True, entry.commitment.rate, now)
            self._histories[address] = history
            self._history_version += 1
            snapshot = (self._history_version, dict(self._histories))
        # The fsyncs happen outside the main lock so challenges and commits never wait on disk.
        self._save_histories(*snapshot)

    # ----------------------------------------------------------------- state helpers

    def _lookup(self, challenge_id: str) -> _Entry:
        """The entry of `challenge_id` or ChallengeNotFound. Locked."""
        entry = self._challenges.get(challenge_id)
        if entry is None:
            raise ChallengeNotFound(f"unknown challenge {challenge_id}")
        return entry

    def _entry_in_state(self, challenge_id: str, state: _State, action: str) -> _Entry:
        """Look up and require `state`, taking and releasing the lock."""
        with self._lock:
            entry = self._lookup(challenge_id)
            self._require_state(challenge_id, entry, state, action)
            return entry

    @staticmethod
    def _require_state(challenge_id: str, entry: _Entry, state: _State, action: str) -> None:
        """Raise ChallengeUsed unless `entry` is in `state`."""
        if entry.state is state:
            return
        reasons = {
            _State.ISSUED: "is not committed yet",
            _State.COMMITTED: "is already committed",
            _State.AUDITING: "is being audited",
            _State.ACCEPTED: "was already accepted",
            _State.REJECTED: "was rejected and is used up",
        }
        raise ChallengeUsed(f"cannot {action}: challenge {challenge_id} {reasons[entry.state]}")

    def _is_open(self, entry: _Entry, now_ms: int) -> bool:
        """Issued or in progress and not past expiry (what the open bound counts)."""
        return entry.state in (_State.ISSUED, _State.COMMITTED, _State.AUDITING) and (
            now_ms < entry.challenge.expiry
        )

    def _open_count(self, address: str, now_ms: int) -> int:
        """Open challenges of `address`. Locked."""
        ids = self._by_worker.get(address, ())
        return sum(1 for cid in ids if self._is_open(self._challenges[cid], now_ms))

    def _next_open_expiry(self, address: str, now_ms: int) -> float:
        """Unix seconds when the first open challenge of `address` expires. Locked."""
        expiries = [
            self._challenges[cid].challenge.expiry
            for cid in self._by_worker.get(address, ())
            if self._is_open(self._challenges[cid], now_ms)
        ]
        return min(expiries, default=now_ms) / 1000

    def _count_refused(self) -> None:
        """Count a refused request for `stats()`."""
        with self._lock:
            self._counters.refused += 1

    # ----------------------------------------------------------------- public queries

    def history(self, address: str) -> WorkerHistory:
        """The worker's audit history (SPEC 3 adaptive audit); empty for a new worker."""
        with self._lock:
            return self._histories.get(address, WorkerHistory())

    def open_challenges(self, address: str) -> int:
        """Number of unexpired challenges of `address` not yet accepted or rejected."""
        with self._lock:
            return self._open_count(address, _ms(self._clock()))

    def expire(self) -> int:
        """Forget challenges past `expiry + reveal_grace_ms` and stale rate-limit state.

        Called from `issue`; the app may also call it periodically. Returns the number of
        challenges dropped. Challenges are stored in issue order, which is expiry order for
        a fixed TTL, so the scan stops at the first live one.
        """
        now = self._clock()
        now_ms = _ms(now)
        dropped = 0
        with self._lock:
            for cid in list(self._challenges):
                entry = self._challenges[cid]
                if now_ms < entry.challenge.expiry + self.reveal_grace_ms:
                    break
                if entry.state is _State.AUDITING:
                    continue  # its reveal is running; drop it next time
                del self._challenges[cid]
                ids = self._by_worker.get(entry.challenge.worker_address)
                if ids is not None:
                    ids.discard(cid)
                    if not ids:
                        del self._by_worker[entry.challenge.worker_address]
                dropped += 1
            for windows in (self._address_windows, self._ip_windows):
                for window in windows.values():
                    window.prune(now)
                for key in [k for k, w in windows.items() if not w.times]:
                    del windows[key]
            for req_key in [k for k, t in self._used_requests.items() if t <= now]:
                del self._used_requests[req_key]
        return dropped

    def stats(self) -> dict[str, int]:
        """Counters for metrics: issued, committed, accepted, rejected, rate_limited,
        cooling_down, refused (signature/sanity refusals), open, workers (with history)."""
        with self._lock:
            now_ms = _ms(self._clock())
            c = self._counters
            return {
                "issued": c.issued,
                "committed": c.committed,
                "accepted": c.accepted,
                "rejected": c.rejected,
                "rate_limited": c.rate_limited,
                "cooling_down": c.cooling_down,
                "refused": c.refused,
                "open": sum(1 for e in self._challenges.values() if self._is_open(e, now_ms)),
                "workers": len(self._histories),
            }

    # ------------------------------------------------------------------- persistence

    def _load_histories(self) -> dict[str, WorkerHistory]:
        """Read `history.json`; a corrupt file is moved aside and the node starts empty."""
        path = self._history_path
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

    def _save_histories(self, version: int, histories: dict[str, WorkerHistory]) -> None:
        """Write `history.json` atomically (temp file, fsync, rename, fsync dir).

        Runs under its own lock; a snapshot older than one already written is skipped, so
        racing audits can never leave an older history on disk.

        The whole file is rewritten (small records, one per audited worker), so a crash leaves
        either the old or the new file, never a mix.
        An I/O failure is logged, not raised: the audit outcome stands and the next change
        writes the whole file again.
        """
        with self._save_lock:
            if version <= self._saved_version:
                return
            self._write_histories(histories)
            self._saved_version = version

    def _write_histories(self, histories: dict[str, WorkerHistory]) -> None:
        """The atomic write itself (I/O failures are logged)."""
        path = self._history_path
        # The records are already valid: construct without re-validating every address.
        data = _HistoryFile.model_construct(version=HISTORY_FILE_VERSION, workers=histories)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data.model_dump_json().encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            logger.error("cannot write audit histories %s: %s", path, exc)


def _ms(seconds: float) -> int:
    """Unix milliseconds of a clock reading in seconds."""
    return int(seconds * 1000)

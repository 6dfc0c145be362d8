"""The node's PoC validator: challenge, commitment, audit and receipt (SPEC 3, 4, 5).

`PocValidator` runs the grinding-proof M-PoC flow of SPEC 3 for the HTTP app, framework-free.
It orchestrates; the pieces live in their own modules:

- `node.challenges`: the challenge life cycle (issued -> committed -> auditing -> accepted /
  rejected, expiry) and the in-memory table;
- `node.limits`: rate limits, replay guard, open-challenge bound, bounded audit queue;
- `node.history`: per-worker audit histories, persisted in `<data_dir>/validator/`;
- `poc.audit`: every SPEC 3 check of a commitment and a reveal (the same code `verify` and
  the miner run); `poc.audit_policy`: how many samples to recompute, cooldowns;
- `node.config.ValidatorConfig`: the operator's knobs.

The flow:

1. `issue`: a worker proves it holds its key (signed, fresh `ChallengeRequest`), passes the
   rate limits, the failed-audit cooldown and the open-challenge bound, and gets a signed
   `Challenge` bound to the chain head, to itself and to a fresh id.
2. `commit`: the worker commits `{loops, compute_time, merkle_root, device}` under its key.
   The SPEC 3 sanity checks (`poc.audit.check_commitment`) run before anything is drawn;
   only then does the node draw the `s` stratified sample indices from a CSPRNG and sign them.
3. `reveal`: the revealed indices must be the drawn ones, every inclusion proof is checked
   against the committed root, `m` of the `s` leaves (the adaptive policy's choice) are
   recomputed, and only if everything holds the node signs a `Receipt`. Any failure is
   recorded in the worker's audit history (raising later audits, maybe a cooldown) and
   against the client IP.

Thread safety: one lock guards all in-memory state (challenge table, limits, histories,
counters). It is never held during the expensive parts (signatures, leaf recomputation,
the history fsync): `issue` checks, signs unlocked, then re-checks and inserts; a reveal
first claims its challenge (state `auditing`, so a concurrent reveal of it is refused), then
audits unlocked, then publishes the outcome under the lock.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hashcloud.api.models import (
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    CommitResponse,
    RevealRequest,
    RevealResponse,
)
from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.crypto.signatures import sign, verify
from hashcloud.engine.gemm import compute_leaf
from hashcloud.errors import (
    CommitRefused,
    CoolingDown,
    InvalidKey,
    InvalidSignature,
    RateLimited,
    RequestRefused,
    ValidatorError,
)
from hashcloud.node.challenges import (
    ChallengeEntry,
    ChallengeState,
    ChallengeTable,
    CommittedWork,
    Outcome,
    require_state,
)
from hashcloud.node.config import DEFAULT_VALIDATOR_CONFIG, ValidatorConfig
from hashcloud.node.history import HistoryStore
from hashcloud.node.limits import AuditGate, RequestLimits, check_open_bound
from hashcloud.poc.audit import (
    Commitment,
    LeafFn,
    check_commitment,
    check_inclusion,
    check_revealed_indices,
    recompute_leaves,
)
from hashcloud.poc.audit_policy import WorkerHistory
from hashcloud.poc.challenge import (
    Challenge,
    challenge_request_bytes,
    indices_signing_bytes,
    issue_challenge,
)
from hashcloud.poc.receipt import Receipt, encode_receipt, sign_receipt
from hashcloud.poc.sampling import random_indices, sample_count

__all__ = ["PocValidator", "RewardFn"]

logger = logging.getLogger(__name__)

RewardFn = Callable[[Receipt], int]
"""Optional estimate of the reward a receipt earns, for `RevealResponse.reward_estimate`."""


class _Counters:
    """Monotone counters exported by `stats()` (changed under the validator's lock)."""

    __slots__ = ("accepted", "committed", "cooling_down", "issued", "rate_limited", "refused",
                 "rejected")

    def __init__(self) -> None:
        self.issued = self.committed = self.accepted = self.rejected = 0
        self.rate_limited = self.cooling_down = self.refused = 0

    def count_refusal(self, exc: ValidatorError) -> None:
        """Count a refusal by kind: cooldown, rate limit, or refused request/commitment.

        Failed reveals are not counted here: they are `rejected` audits."""
        if isinstance(exc, CoolingDown):
            self.cooling_down += 1
        elif isinstance(exc, RateLimited):
            self.rate_limited += 1
        elif isinstance(exc, (RequestRefused, CommitRefused)):
            self.refused += 1


class PocValidator:
    """The node's PoC validator service (SPEC 3): issue, commit, reveal -> receipt.

    Framework-free and thread-safe; the HTTP app maps each `ValidatorError` to a status
    code (`app.HTTP_STATUS`). `config` holds the operator's knobs. Injected, not configured:
    `clock` returns unix seconds (float); `rng` is the CSPRNG that draws challenge ids,
    sample indices and the audited subset (tests may inject a seeded `random.Random`);
    `leaf_fn` recomputes one leaf (SPEC 1); `reward_fn`, if given, fills
    `RevealResponse.reward_estimate` (else 0: the node service fills it in).
    """

    def __init__(
        self,
        key: PrivateKey,
        chain_id: str,
        data_dir: Path,
        config: ValidatorConfig = DEFAULT_VALIDATOR_CONFIG,
        *,
        leaf_fn: LeafFn = compute_leaf,
        reward_fn: RewardFn | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """A validator signing with `key` for `chain_id`, its histories under `data_dir`."""
        if not isinstance(config, ValidatorConfig):
            raise TypeError("config must be a ValidatorConfig")
        self.key = key
        self.chain_id = chain_id
        self.config = config
        self._leaf_fn = leaf_fn
        self._reward_fn = reward_fn
        self._clock = clock
        self._rng = secrets.SystemRandom() if rng is None else rng
        self._node_public_key = key.public_key.data

        self._lock = threading.Lock()
        self._table = ChallengeTable(config.effective_reveal_grace_ms)
        self._limits = RequestLimits(config.requests_per_minute_per_address,
                                     config.requests_per_minute_per_ip,
                                     config.ip_failures_per_hour)
        self._histories = HistoryStore(data_dir)
        self._counters = _Counters()
        #: Admission to leaf recomputation (slots running + queue waiting).
        self.audit_gate = AuditGate(config.effective_audit_slots, config.effective_audit_queue)

    # ------------------------------------------------------------------------- issue

    def issue(
        self, req: ChallengeRequest, head_height: int, head_hash: str, client_ip: str
    ) -> ChallengeResponse:
        """Issue a signed challenge to the requesting worker (SPEC 3).

        Checks, in order: the per-IP rate limit (before any signature work, so a flood is
        cheap to refuse) and the failed audits of that IP, `n <= max_n`, the request
        signature (the public key must be the worker's and sign `challenge_request_bytes`;
        SPEC 5), the request time (within `request_time_skew_ms` of now, and not a replay of
        a request that already got a challenge), the per-address rate limit, the
        failed-audit cooldown and the open-challenge bound. Raises RateLimited,
        RequestRefused or CoolingDown.
        """
        try:
            return self._issue(req, head_height, head_hash, client_ip)
        except ValidatorError as exc:
            self._count_refusal(exc)
            raise

    def _issue(
        self, req: ChallengeRequest, head_height: int, head_hash: str, client_ip: str
    ) -> ChallengeResponse:
        """`issue` without the refusal counting."""
        cfg = self.config
        now = self._clock()
        now_ms = _ms(now)
        self.expire()
        with self._lock:
            self._limits.take_ip(client_ip, now)
            self._limits.check_ip_failures(client_ip, now)
        if req.n > cfg.max_n:
            raise RequestRefused(f"n = {req.n} is above this node's maximum of {cfg.max_n}")
        worker_key = self._check_request(req, now_ms)
        address = req.worker_address
        with self._lock:
            self._limits.check_fresh(address, req.request_time_ms)
            self._limits.take_address(address, now)
            self._check_cooldown(address, now)
            self._check_open(address, now, now_ms)
            challenge_id = self._rng.getrandbits(128).to_bytes(16, "big").hex()
        # Signing is slow (pure-Python ECDSA): never under the lock.
        challenge = issue_challenge(self.key, self.chain_id, address, req.n, head_height,
                                    head_hash, now_ms + cfg.challenge_ttl_ms,
                                    challenge_id=challenge_id)
        with self._lock:
            # A concurrent issue may have taken the last open slot or used this request.
            self._limits.check_fresh(address, req.request_time_ms)
            self._check_open(address, now, now_ms)
            self._table.add(ChallengeEntry(challenge, worker_key, now, client_ip=client_ip))
            self._limits.remember_request(address, req.request_time_ms,
                                          now + 2 * cfg.request_time_skew_ms / 1000)
            self._counters.issued += 1
        return ChallengeResponse(
            challenge=challenge,
            chain_id=self.chain_id,
            node_public_key=self._node_public_key,
            s_max=cfg.s_max,
        )

    def _check_request(self, req: ChallengeRequest, now_ms: int) -> PublicKey:
        """Signature, key/address match and freshness of a challenge request (SPEC 3, 5)."""
        try:
            worker_key = PublicKey(req.public_key)
        except InvalidKey as exc:
            raise RequestRefused(f"invalid public key: {exc}") from None
        if worker_key.address != req.worker_address:
            raise RequestRefused("public key does not belong to worker_address")
        message = challenge_request_bytes(
            self.chain_id, req.worker_address, req.n, req.request_time_ms
        )
        try:
            verify(worker_key, message, req.signature)
        except InvalidSignature:
            raise RequestRefused("challenge request signature is invalid") from None
        skew = req.request_time_ms - now_ms
        allowed = self.config.request_time_skew_ms
        if abs(skew) > allowed:
            raise RequestRefused(
                f"request_time_ms is {skew / 1000:+.1f} s from the node's clock "
                f"(at most {allowed / 1000:g} s allowed)"
            )
        return worker_key

    def _check_cooldown(self, address: str, now: float) -> None:
        """Raise CoolingDown while the policy's failure cooldown runs (SPEC 3). Locked."""
        until = self.config.policy.cooldown_until(self._histories.get(address), now)
        if until is not None:
            raise CoolingDown(
                f"worker is cooling down after failed audits until "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))} "
                f"(retry in {math.ceil(until - now)} s)",
                until - now,
                until,
            )

    def _check_open(self, address: str, now: float, now_ms: int) -> None:
        """The open-challenge bound of `address` (RateLimited). Locked."""
        check_open_bound(self._table.open_count(address, now_ms),
                         self.config.max_open_per_worker,
                         self._table.next_open_expiry(address, now_ms), now)

    # ------------------------------------------------------------------------ commit

    def commit(self, challenge_id: str, req: CommitRequest) -> CommitResponse:
        """Accept a worker's commitment, then draw and sign the sample indices (SPEC 3).

        Before anything else: the challenge is known (ChallengeNotFound), issued
        (ChallengeUsed) and unexpired (ChallengeExpired); then `poc.audit.check_commitment`
        (CommitRefused): the `device_signature` is the challenge worker's over the SPEC 4
        commit message, `compute_time` is at most the time elapsed since issue
        (+ `COMPUTE_TIME_SLACK`), the backend is known and the claimed rate is not above its
        peak. Only then are `s = sample_count(loops, s_max)` stratified indices drawn from
        the CSPRNG, so the miner cannot choose or grind them.
        """
        try:
            return self._commit(challenge_id, req)
        except ValidatorError as exc:
            self._count_refusal(exc)
            raise

    def _commit(self, challenge_id: str, req: CommitRequest) -> CommitResponse:
        """`commit` without the refusal counting."""
        now = self._clock()
        with self._lock:
            entry = self._table.for_commit(challenge_id, _ms(now))
        ch = entry.challenge
        commitment = Commitment(challenge_id, ch.seed, ch.n, ch.worker_address, req.loops,
                                req.compute_time, req.merkle_root, req.device.backend)
        rate, peak = check_commitment(commitment, entry.worker_key,
                                      req.device_signature,
                                      elapsed=now - entry.issued_at)
        s = sample_count(req.loops, self.config.s_max)
        with self._lock:
            require_state(entry, ChallengeState.ISSUED, "commit")  # a concurrent commit won?
            indices = tuple(random_indices(req.loops, s, self._rng))
            work = CommittedWork(req.loops, req.compute_time, req.merkle_root, req.device,
                                 rate, peak, indices)
            self._table.commit(entry, work)
            self._counters.committed += 1
        signature = sign(
            self.key,
            indices_signing_bytes(self.chain_id, challenge_id, req.merkle_root, req.loops, indices),
        )
        return CommitResponse(
            challenge_id=challenge_id, indices=list(indices), indices_signature=signature
        )

    # ------------------------------------------------------------------------ reveal

    def reveal(self, challenge_id: str, req: RevealRequest) -> Outcome:
        """Audit the revealed samples and sign a receipt if they all hold (SPEC 3).

        CPU-heavy (recomputes `m` leaves): call it from a worker thread. The challenge must
        be committed (ChallengeUsed otherwise) and within `expiry + reveal_grace_ms`
        (ChallengeExpired); a full audit queue is RateLimited and leaves it committed. Then
        `poc.audit`: the samples must be exactly the drawn indices in order (RevealRefused),
        every inclusion proof must verify against the committed root with size `loops`, and
        `m = policy.choose_m(...)` of the `s` samples, picked by the CSPRNG, are recomputed
        with `leaf_fn` (AuditFailed naming the index). Any refusal burns the challenge and
        records a failed audit. A repeated reveal after acceptance returns the same receipt
        and response.
        """
        try:
            return self._reveal(challenge_id, req)
        except ValidatorError as exc:
            self._count_refusal(exc)
            raise

    def _reveal(self, challenge_id: str, req: RevealRequest) -> Outcome:
        """`reveal` without the refusal counting."""
        now = self._clock()
        with self._lock:
            entry = self._table.begin_reveal(challenge_id, _ms(now))
            if entry.state is ChallengeState.ACCEPTED and entry.outcome is not None:
                return entry.outcome  # idempotent: the same receipt, never a new one
            history = self._histories.get(entry.challenge.worker_address)
        try:
            self.audit_gate.admit()
        except RateLimited:
            with self._lock:  # not the miner's fault: the challenge can be revealed again
                self._table.release(entry)
            raise
        try:
            outcome = self._audit(entry, req, history, now)
        except ValidatorError as exc:
            self._finish(entry, None, now)
            logger.info("challenge %s rejected: %s", challenge_id, exc)
            raise
        except BaseException:
            with self._lock:  # an internal error is not the miner's fault: allow a retry
                self._table.release(entry)
            raise
        finally:
            self.audit_gate.release()
        self._finish(entry, outcome, now)
        return outcome

    def _audit(
        self, entry: ChallengeEntry, req: RevealRequest, history: WorkerHistory, now: float
    ) -> Outcome:
        """Index set, inclusion proofs, recomputation of `m` samples, receipt (unlocked)."""
        ch, com = entry.challenge, entry.commitment
        assert com is not None  # state auditing implies a commitment
        samples = [smp.revealed() for smp in req.samples]
        check_revealed_indices(samples, com.indices)
        check_inclusion(samples, com.merkle_root, com.loops)
        s = len(com.indices)
        m = self.config.policy.choose_m(s, com.rate, com.peak, history, now)
        with self._lock:  # the shared rng is not guaranteed thread-safe
            audited = self._rng.sample(range(s), m)
        with self.audit_gate.slot():  # bounded concurrency of the expensive part
            recompute_leaves(ch.seed, ch.n, samples, audited, self._leaf_fn)
        return self._sign_receipt(ch, com, s, m, now)

    def _sign_receipt(
        self, ch: Challenge, com: CommittedWork, s: int, m: int, now: float
    ) -> Outcome:
        """The signed receipt of an accepted round and the response carrying it (SPEC 3)."""
        receipt = sign_receipt(
            chain_id=self.chain_id,
            task_id=ch.challenge_id,
            worker_address=ch.worker_address,
            seed=ch.seed,
            n=ch.n,
            loops=com.loops,
            merkle_root=com.merkle_root,
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
            receipt=encode_receipt(receipt),
            audited=m,
            samples=s,
            reward_estimate=reward,
        )
        return receipt, response

    def _finish(self, entry: ChallengeEntry, outcome: Outcome | None, now: float) -> None:
        """Publish an audit outcome; record it in the worker's history (persisted) and, for
        a failure, against the client IP."""
        address = entry.challenge.worker_address
        policy = self.config.policy
        with self._lock:
            self._table.finish(entry, outcome)
            history = self._histories.get(address)
            if outcome is None:
                self._counters.rejected += 1
                self._limits.record_failure(entry.client_ip, now)
                history = policy.record_result(history, False, None, now)
            else:
                self._counters.accepted += 1
                assert entry.commitment is not None
                history = policy.record_result(history, True, entry.commitment.rate, now)
            snapshot = self._histories.put(address, history)
        # The fsyncs happen outside the main lock so challenges and commits never wait on disk.
        self._histories.save(snapshot)

    def _count_refusal(self, exc: ValidatorError) -> None:
        """Count a refusal for `stats()`."""
        with self._lock:
            self._counters.count_refusal(exc)

    # ----------------------------------------------------------------- public queries

    def history(self, address: str) -> WorkerHistory:
        """The worker's audit history (SPEC 3 adaptive audit); empty for a new worker."""
        with self._lock:
            return self._histories.get(address)

    def open_challenges(self, address: str) -> int:
        """Number of unexpired challenges of `address` not yet accepted or rejected."""
        with self._lock:
            return self._table.open_count(address, _ms(self._clock()))

    def expire(self) -> int:
        """Forget challenges past `expiry + reveal_grace_ms` and stale rate-limit state.

        Called from `issue`; the app may also call it periodically. Returns the number of
        challenges dropped.
        """
        now = self._clock()
        with self._lock:
            dropped = self._table.expire(_ms(now))
            self._limits.prune(now)
        return dropped

    def stats(self) -> dict[str, int]:
        """Counters for metrics: issued, committed, accepted, rejected, rate_limited,
        cooling_down, refused (signature/sanity refusals), open, workers (with history)."""
        with self._lock:
            c = self._counters
            return {
                "issued": c.issued,
                "committed": c.committed,
                "accepted": c.accepted,
                "rejected": c.rejected,
                "rate_limited": c.rate_limited,
                "cooling_down": c.cooling_down,
                "refused": c.refused,
                "open": self._table.open_total(_ms(self._clock())),
                "workers": len(self._histories),
            }


def _ms(seconds: float) -> int:
    """Unix milliseconds of a clock reading in seconds."""
    return int(seconds * 1000)

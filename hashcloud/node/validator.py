"""The node's PoC validator: challenge, commitment, audit and receipt (SPEC 3, 4, 5).

`PocValidator` runs the grinding-proof M-PoC flow of SPEC 3 (with the v1.1 signed reveals,
row audits and durable challenges) for the HTTP app, framework-free. It orchestrates; the
pieces live in their own modules:

- `node.challenges`: the challenge life cycle (issued -> committed -> auditing -> accepted /
  rejected, expiry) and the in-memory table;
- `node.challenge_log`: the durable journal of that table (SPEC 3 v1.1 "Durable challenges");
- `node.limits`: rate limits, replay guard, open-challenge bound, the audit gate with its
  priority rule;
- `node.history`: per-worker audit histories, persisted in `<data_dir>/validator/`;
- `poc.audit`: every SPEC 3 check of a commitment and a reveal (the same code `verify` and
  the miner run); `poc.audit_policy`: how many samples to audit, cooldowns; `poc.plan`: the
  audit plan;
- `node.config.ValidatorConfig`: the operator's knobs.

The flow:

1. `issue`: a worker proves it holds its key (signed, fresh `ChallengeRequest`), passes the
   rate limits, the failed-audit bounds (its key's cooldown, its address's failures) and the
   open-challenge bound, and gets a signed `Challenge` bound to the chain head, to itself
   and to a fresh id.
2. `commit`: the worker commits `{loops, compute_time, merkle_root, device}` under its key.
   The SPEC 3 sanity checks (`poc.audit.check_commitment`) run before anything is drawn;
   only then does the node draw, from its CSPRNG, the `s` stratified sample indices and the
   audit plan (SPEC 3 v1.1): `m = policy.choose_m(...)` of them (the adaptive policy, with
   the worker's history as of now) and, in `rows` mode, `min(n, audit_rows)` rows of each,
   and signs indices and plan together.
3. `reveal` (SPEC 3 v1.1), in this order:
   a. look the challenge up: committed and within its reveal deadline (ChallengeNotFound /
      ChallengeUsed / ChallengeExpired), or already accepted; then the failed audits of the
      revealing client address (RateLimited);
   b. the worker's signature over the reveal (RevealUnauthorized: nothing changes, nothing
      is counted against anyone; only now does an accepted challenge get its outcome again);
   c. the reveal's shape: exactly the drawn indices, outputs where the plan needs them
      (MalformedReveal: the challenge stays committed until its deadline, no failed audit);
   d. claim it (auditing), admit it to the audit gate (AuditQueueFull, 429: back to
      committed; workers with `policy.trusted_after` accepted rounds and no recent failure
      go first), then the checks that burn the round when they fail: inclusion proofs and
      outputs against their leaves (cheap, first), then `audit_samples` (rows or whole
      leaves, in an audit slot, timed in thread CPU seconds);
   e. a signed `Receipt` with `audited = len(plan.audited)`.
   A failed audit counts in the worker's history (raising later audits, maybe a cooldown)
   and against the client addresses that asked for and revealed the challenge.

Durability: every issued challenge, commitment and outcome is appended to the challenge
journal (fsynced) before the node answers, and the table is rebuilt from it on start; an
outcome is written while the challenge is still `auditing`, so nobody is answered with an
outcome a crash could take back. A failed audit's record names its client addresses, so the
failed audits per address survive a restart. If the journal cannot be written
(StorageUnavailable, answered 503) the change is undone: an issued challenge is dropped, a
commitment goes back to issued, an audit's challenge back to committed.

Thread safety: one lock guards all in-memory state (challenge table, limits, histories,
counters). It is never held during the expensive parts (signatures, audits, fsyncs): `issue`
checks, signs unlocked, then re-checks and inserts; a reveal checks signature and shape
unlocked, claims its challenge (state `auditing`, so a concurrent reveal of it is refused),
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
from typing import Protocol

from hashcloud.api.models import (
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    CommitResponse,
    RevealRequest,
    RevealResponse,
)
from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.crypto.signatures import ChainDomain, sign, verify
from hashcloud.engine.rows import loop_leaf, row_digests_of
from hashcloud.errors import (
    ChallengeExpired,
    ChallengeNotFound,
    ChallengeUsed,
    CommitRefused,
    CoolingDown,
    InvalidKey,
    InvalidSignature,
    MalformedReveal,
    RateLimited,
    RequestRefused,
    RevealRefused,
    RevealUnauthorized,
    StorageUnavailable,
    ValidatorError,
)
from hashcloud.node.challenge_log import ChallengeLog
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
from hashcloud.node.limits import AuditGate, AuditQueueFull, RequestLimits, check_open_bound
from hashcloud.poc.audit import (
    Commitment,
    LeafFn,
    RevealedSample,
    RowFn,
    audit_samples,
    check_commitment,
    check_inclusion,
    check_outputs,
    check_reveal_shape,
    check_reveal_signature,
)
from hashcloud.poc.audit_policy import WorkerHistory
from hashcloud.poc.challenge import (
    Challenge,
    challenge_request_bytes,
    indices_signing_bytes,
    issue_challenge,
)
from hashcloud.poc.plan import draw_plan
from hashcloud.poc.receipt import Receipt, encode_receipt, sign_receipt
from hashcloud.poc.sampling import random_indices, sample_count

__all__ = [
    "REVEAL_OUTCOMES",
    "PocValidator",
    "RewardFn",
    "ValidatorMetrics",
    "reveal_json_bound",
    "reveal_outcome",
]

logger = logging.getLogger(__name__)

RewardFn = Callable[[Receipt], int]
"""Optional estimate of the reward a receipt earns, for `RevealResponse.reward_estimate`."""

REVEAL_OUTCOMES = ("accepted", "repeated", "failed", "malformed", "unauthorized", "busy",
                   "rate_limited", "expired", "unknown", "used", "refused", "error")
"""How a reveal ended (`hc_reveals_total{outcome}`): accepted (audited, receipt signed),
repeated (the same outcome again), failed (audit failed: round burned), malformed and
unauthorized (SPEC 3 v1.1 refusals that leave the challenge open), busy (audit queue full),
rate_limited (too many failed audits from the client address), expired, unknown, used
(challenge not in a state to reveal), refused (any other refusal), error (internal)."""


def reveal_outcome(exc: BaseException) -> str:
    """The `REVEAL_OUTCOMES` label of a reveal that raised `exc`."""
    for cls, label in ((AuditQueueFull, "busy"), (RateLimited, "rate_limited"),
                       (RevealUnauthorized, "unauthorized"), (MalformedReveal, "malformed"),
                       (RevealRefused, "failed"), (ChallengeNotFound, "unknown"),
                       (ChallengeExpired, "expired"), (ChallengeUsed, "used"),
                       (ValidatorError, "refused")):
        if isinstance(exc, cls):
            return label
    return "error"


class ValidatorMetrics(Protocol):
    """Where the validator reports what the node exports (`service.NodeMetrics`)."""

    def observe_audit(self, n: int, mode: str, cpu_seconds: float) -> None:
        """One audit's recomputation took `cpu_seconds` of thread CPU time."""

    def count_reveal(self, outcome: str) -> None:
        """One reveal ended with `outcome` (one of `REVEAL_OUTCOMES`)."""


class _NoMetrics:
    """The default `ValidatorMetrics`: reports go nowhere."""

    def observe_audit(self, n: int, mode: str, cpu_seconds: float) -> None:
        """Ignore."""

    def count_reveal(self, outcome: str) -> None:
        """Ignore."""


class _Counters:
    """Monotone counters exported by `stats()` (changed under the validator's lock)."""

    __slots__ = ("accepted", "committed", "cooling_down", "issued", "malformed", "rate_limited",
                 "refused", "rejected", "unauthorized")

    def __init__(self) -> None:
        """All zero."""
        self.issued = self.committed = self.accepted = self.rejected = 0
        self.rate_limited = self.cooling_down = self.refused = 0
        self.malformed = self.unauthorized = 0

    def count_refusal(self, exc: ValidatorError) -> None:
        """Count a refusal by kind: cooldown, rate limit (a full audit queue included),
        refused request/commitment, malformed or unauthorized reveal.

        Failed reveals are not counted here: they are `rejected` audits."""
        if isinstance(exc, CoolingDown):
            self.cooling_down += 1
        elif isinstance(exc, RateLimited):
            self.rate_limited += 1
        elif isinstance(exc, (RequestRefused, CommitRefused)):
            self.refused += 1
        elif isinstance(exc, MalformedReveal):
            self.malformed += 1
        elif isinstance(exc, RevealUnauthorized):
            self.unauthorized += 1


class PocValidator:
    """The node's PoC validator service (SPEC 3): issue, commit, reveal -> receipt.

    Framework-free and thread-safe; the HTTP app maps each `ValidatorError` to a status
    code (`app.HTTP_STATUS`). `config` holds the operator's knobs. Injected, not configured:
    `clock` returns unix seconds (float); `rng` is the CSPRNG that draws challenge ids,
    sample indices and the audit plan (tests may inject a seeded `random.Random`);
    `leaf_fn` recomputes one leaf (SPEC 1, `full` audits) and `row_fn` the digests of drawn
    rows (SPEC 1.7, `rows` audits); `reward_fn`, if given, fills
    `RevealResponse.reward_estimate` (else 0: the node service fills it in); `metrics`
    receives audit CPU times and reveal outcomes.

    On construction the challenges of the journal under `data_dir` are restored (SPEC 3
    v1.1); `close()` releases the journal.
    """

    def __init__(
        self,
        key: PrivateKey,
        domain: ChainDomain,
        data_dir: Path,
        config: ValidatorConfig = DEFAULT_VALIDATOR_CONFIG,
        *,
        leaf_fn: LeafFn = loop_leaf,
        row_fn: RowFn = row_digests_of,
        reward_fn: RewardFn | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        metrics: ValidatorMetrics | None = None,
    ) -> None:
        """A validator signing with `key` for the chain `domain` (SPEC 5 v1.1), its
        histories and challenge journal under `data_dir`."""
        if not isinstance(config, ValidatorConfig):
            raise TypeError("config must be a ValidatorConfig")
        self.key = key
        self.domain = domain
        self.config = config
        self._leaf_fn = leaf_fn
        self._row_fn = row_fn
        self._reward_fn = reward_fn
        self._metrics: ValidatorMetrics = metrics if metrics is not None else _NoMetrics()
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
        #: Admission to the audit recomputation (slots running + queue waiting, reserved
        #: places and priority for workers with a clean history).
        self.audit_gate = AuditGate(config.effective_audit_slots, config.effective_audit_queue,
                                    config.effective_audit_reserved)
        #: The durable journal of the challenge table (SPEC 3 v1.1).
        self.challenge_log = ChallengeLog(data_dir)
        self._restore()

    def _restore(self) -> None:
        """Rebuild the challenge table, the replay guard and the failed audits per client
        address (those within `limits.FAILURE_WINDOW`) from the challenge journal."""
        now = self._clock()
        skew_s = self.config.request_time_skew_ms / 1000
        for entry in self.challenge_log.load(_ms(now), self.config.effective_reveal_grace_ms):
            self._table.add(entry)
            forget_at = entry.issued_at + 2 * skew_s
            if forget_at > now:
                self._limits.remember_request(entry.challenge.worker_address,
                                              entry.request_time_ms, forget_at)
        # The failed audits per client address (SPEC 3 v1.1 "Abuse bounds"), oldest first.
        for at, client_ips in self.challenge_log.restored_failures:
            self._limits.record_failure(client_ips, at)

    def close(self) -> None:
        """Release the challenge journal (every record is already durable)."""
        self.challenge_log.close()

    # ------------------------------------------------------------------------- issue

    def issue(
        self, req: ChallengeRequest, head_height: int, head_hash: str, client_ip: str
    ) -> ChallengeResponse:
        """Issue a signed challenge to the requesting worker (SPEC 3).

        Checks, in order: the per-IP rate limit (before any signature work, so a flood is
        cheap to refuse; `client_ip` is the socket peer unless the operator trusts a proxy)
        and the failed audits of that IP, `n <= max_n`, the request
        signature (the public key must be the worker's and sign `challenge_request_bytes`;
        SPEC 5), the request time (within `request_time_skew_ms` of now, and not a replay of
        a request that already got a challenge), the per-address rate limit, the
        failed-audit cooldown and the open-challenge bound. Raises RateLimited,
        RequestRefused or CoolingDown. The challenge is journaled before it is returned; if
        the journal cannot be written it is dropped again and StorageUnavailable raised.
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
        challenge = issue_challenge(self.key, self.domain, address, req.n, head_height,
                                    head_hash, now_ms + cfg.challenge_ttl_ms,
                                    challenge_id=challenge_id)
        entry = ChallengeEntry(challenge, worker_key, now, client_ip=client_ip,
                               request_time_ms=req.request_time_ms)
        with self._lock:
            # A concurrent issue may have taken the last open slot or used this request.
            self._limits.check_fresh(address, req.request_time_ms)
            self._check_open(address, now, now_ms)
            self._table.add(entry)
            self._limits.remember_request(address, req.request_time_ms,
                                          now + 2 * cfg.request_time_skew_ms / 1000)
            self._counters.issued += 1
        try:
            self.challenge_log.issued(entry)  # durable before the answer (SPEC 3 v1.1)
        except StorageUnavailable:
            with self._lock:  # nobody got it: it must not count against the open bound
                self._table.discard(entry)
                self._counters.issued -= 1
            raise
        return ChallengeResponse(
            challenge=challenge,
            chain_id=self.domain.chain_id,
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
            self.domain, req.worker_address, req.n, req.request_time_ms
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
        """Accept a worker's commitment, then draw and sign the sample indices and the audit
        plan (SPEC 3, v1.1).

        Before anything else: the challenge is known (ChallengeNotFound), issued
        (ChallengeUsed) and unexpired (ChallengeExpired); then `poc.audit.check_commitment`
        (CommitRefused): the `device_signature` is the challenge worker's over the SPEC 4
        commit message, `compute_time` is at most the time elapsed since issue
        (+ `COMPUTE_TIME_SLACK`), the backend is known and the claimed rate is not above its
        peak. Only then are `s = sample_count(loops, s_max)` stratified indices drawn from
        the CSPRNG, and with them the plan: `m = policy.choose_m(...)` audited samples (the
        worker's history as of now) and, in `rows` mode, `min(n, audit_rows)` rows of each
        (`config.audit_mode`), so the miner can neither choose nor grind them. The
        commitment and its plan are journaled before the signed answer is returned; if the
        journal cannot be written the challenge goes back to issued (StorageUnavailable).
        """
        try:
            return self._commit(challenge_id, req)
        except ValidatorError as exc:
            self._count_refusal(exc)
            raise

    def _commit(self, challenge_id: str, req: CommitRequest) -> CommitResponse:
        """`commit` without the refusal counting."""
        cfg = self.config
        now = self._clock()
        with self._lock:
            entry = self._table.for_commit(challenge_id, _ms(now))
        ch = entry.challenge
        commitment = Commitment(challenge_id, ch.seed, ch.n, ch.worker_address, req.loops,
                                req.compute_time, req.merkle_root, req.device.backend,
                                req.payout_address)
        rate, peak = check_commitment(commitment, entry.worker_key,
                                      req.device_signature,
                                      elapsed=now - entry.issued_at)
        s = sample_count(req.loops, cfg.s_max)
        with self._lock:
            require_state(entry, ChallengeState.ISSUED, "commit")  # a concurrent commit won?
            history = self._histories.get(ch.worker_address)
            m = cfg.policy.choose_m(s, rate, peak, history, now)
            # Indices and plan from the same CSPRNG (not guaranteed thread-safe: locked).
            indices = tuple(random_indices(req.loops, s, self._rng))
            plan = draw_plan(indices, m, ch.n, mode=cfg.audit_mode, k=cfg.audit_rows,
                             rng=self._rng)
            work = CommittedWork(req.loops, req.compute_time, req.merkle_root, req.device,
                                 rate, peak, indices, plan, req.payout_address)
            self._table.commit(entry, work)
            self._counters.committed += 1
        try:
            self.challenge_log.committed(challenge_id, work)  # durable before the answer
        except StorageUnavailable:
            with self._lock:  # nobody got the indices: the worker may commit again
                self._table.uncommit(entry, work)
                self._counters.committed -= 1
            raise
        signature = sign(self.key, indices_signing_bytes(
            self.domain, challenge_id, req.merkle_root, req.loops, indices, plan))
        return CommitResponse(challenge_id=challenge_id, indices=list(indices), audit=plan,
                              indices_signature=signature)

    # ------------------------------------------------------------------------ reveal

    def reveal(self, challenge_id: str, req: RevealRequest,
               client_ip: str | None = None) -> Outcome:
        """Audit the revealed samples and sign a receipt if they all hold (SPEC 3 v1.1).

        CPU-heavy (the audit): call it from a worker thread. `client_ip` is the revealing
        client's address (the socket peer; None: the address that asked for the challenge).
        The steps and what each refusal does are in the module doc (3a-3e): lookup and the
        address's failed audits (ChallengeNotFound / ChallengeUsed / ChallengeExpired /
        RateLimited), the worker's signature (RevealUnauthorized), the shape
        (MalformedReveal), the audit gate (AuditQueueFull), then inclusion, outputs and the
        plan's audit (AuditFailed: the round is burned and counted against the worker and
        the client addresses). A repeated, correctly signed reveal after acceptance returns
        the same receipt and response. Every outcome is journaled before it is returned (if
        the journal cannot be written: StorageUnavailable, the challenge stays committed).
        """
        try:
            outcome, label = self._reveal(challenge_id, req, client_ip)
        except BaseException as exc:
            self._metrics.count_reveal(reveal_outcome(exc))
            if isinstance(exc, ValidatorError):
                self._count_refusal(exc)
            raise
        self._metrics.count_reveal(label)
        return outcome

    def _reveal(self, challenge_id: str, req: RevealRequest,
                client_ip: str | None) -> tuple[Outcome, str]:
        """`reveal` without the counting; also returns the outcome's label."""
        now = self._clock()
        now_ms = _ms(now)
        with self._lock:  # (a) lookup, and the address's failures before any signature work
            entry = self._table.for_reveal(challenge_id, now_ms)
            done = entry.outcome if entry.state is ChallengeState.ACCEPTED else None
            reveal_ip = entry.client_ip if client_ip is None else client_ip
            if done is None:
                self._limits.check_ip_failures(reveal_ip, now)
        ch, com = entry.challenge, entry.commitment
        assert com is not None  # committed (or accepted) implies a commitment
        samples = [smp.revealed() for smp in req.samples]
        # (b) Nobody but the worker can use up or fail its round: nothing changes before this.
        check_reveal_signature(entry.worker_key, self.domain, challenge_id, com.merkle_root,
                               samples, req.signature)
        if done is not None:
            return done, "repeated"  # idempotent: the same receipt, never a new one
        # (c) A malformed reveal leaves the challenge committed (open until its deadline).
        check_reveal_shape(samples, com.indices, com.plan, ch.n)
        with self._lock:  # (d) claim it (the signature check took time: a fresh clock)
            if entry.state is ChallengeState.ACCEPTED and entry.outcome is not None:
                return entry.outcome, "repeated"  # a concurrent reveal finished it
            self._table.claim(entry, _ms(self._clock()))
            trusted = self._is_trusted(self._histories.get(ch.worker_address), now)
        try:
            self.audit_gate.admit(trusted)
        except RateLimited:
            with self._lock:  # not the miner's fault: the challenge can be revealed again
                self._table.release(entry)
            raise
        try:
            outcome = self._audit(entry, samples, trusted, now)
        except MalformedReveal:
            with self._lock:  # shape problems never burn a round
                self._table.release(entry)
            raise
        except ValidatorError as exc:
            self._finish(entry, None, now, reveal_ip)
            logger.info("challenge %s rejected: %s", challenge_id, exc)
            raise
        except BaseException:
            with self._lock:  # an internal error is not the miner's fault: allow a retry
                self._table.release(entry)
            raise
        finally:
            self.audit_gate.release()
        self._finish(entry, outcome, now, reveal_ip)
        return outcome, "accepted"

    def _is_trusted(self, history: WorkerHistory, now: float) -> bool:
        """The audit gate's priority rule: at least `policy.trusted_after` accepted rounds
        (the history that earns `trusted_m`: one cheap round must not buy the priority) and
        no recent failed audit (`AuditPolicy.recent_failures`). Locked."""
        policy = self.config.policy
        return (history.accepted >= policy.trusted_after
                and policy.recent_failures(history, now) == 0)

    def _audit(
        self, entry: ChallengeEntry, samples: list[RevealedSample], trusted: bool, now: float
    ) -> Outcome:
        """Inclusion proofs and outputs (cheap), then the plan's audit in a slot (unlocked).

        The audit's thread CPU time (`time.thread_time`: BLAS is single-threaded, so the
        whole cost is on this thread) goes to `metrics.observe_audit`."""
        ch, com = entry.challenge, entry.commitment
        assert com is not None  # state auditing implies a commitment
        plan = com.plan
        check_inclusion(samples, com.merkle_root, com.loops)
        check_outputs(ch.seed, samples)
        with self.audit_gate.slot(trusted):  # bounded concurrency of the expensive part
            start = time.thread_time()
            try:
                audit_samples(ch.seed, ch.n, samples, plan, leaf_fn=self._leaf_fn,
                              row_fn=self._row_fn)
            finally:
                self._metrics.observe_audit(ch.n, plan.mode, time.thread_time() - start)
        return self._sign_receipt(ch, com, len(com.indices), len(plan.audited), now)

    def _sign_receipt(
        self, ch: Challenge, com: CommittedWork, s: int, m: int, now: float
    ) -> Outcome:
        """The signed receipt of an accepted round and the response carrying it (SPEC 3)."""
        receipt = sign_receipt(
            domain=self.domain,
            task_id=ch.challenge_id,
            worker_address=ch.worker_address,
            payout_address=com.payout_address,  # None: the worker's (SPEC 6 v1.1)
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

    def _finish(self, entry: ChallengeEntry, outcome: Outcome | None, now: float,
                reveal_ip: str) -> None:
        """Journal an audit outcome, then publish it; record it in the worker's history
        (persisted) and, for a failure, against both client addresses of the round.

        The journal append runs while the challenge is still `auditing` (concurrent reveals
        are refused), so no one is answered with an outcome a crash could take back; if it
        fails, the challenge goes back to committed and the error propagates."""
        failure = None if outcome is not None else (now, (entry.client_ip, reveal_ip))
        try:
            self.challenge_log.finished(entry.challenge.challenge_id, outcome, failure)
        except BaseException:
            with self._lock:
                self._table.release(entry)
            raise
        address = entry.challenge.worker_address
        policy = self.config.policy
        with self._lock:
            self._table.finish(entry, outcome)
            entry.failure = failure
            history = self._histories.get(address)
            if outcome is None:
                self._counters.rejected += 1
                self._limits.record_failure((entry.client_ip, reveal_ip), now)
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

    def largest_reveal(self, challenge_id: str) -> int | None:
        """Bytes of the largest legal reveal of `challenge_id` as compact JSON
        (`reveal_json_bound` of its loops, drawn samples and, in a row audit, the audited
        samples' outputs), or None if no reveal of it can be accepted now (unknown, not
        committed, being audited, rejected, past its deadline). An accepted challenge keeps
        its size: a repeated reveal gets the same receipt. The HTTP app sizes the reveal
        route's body limit with it, before reading the body."""
        with self._lock:
            try:
                entry = self._table.for_reveal(challenge_id, _ms(self._clock()))
            except ValidatorError:
                return None
            com, n = entry.commitment, entry.challenge.n
        if com is None:
            return None
        outputs = len(com.plan.audited) if com.plan.mode == "rows" else 0
        return reveal_json_bound(com.loops, len(com.indices), n, outputs)

    def expire(self) -> int:
        """Forget challenges past `expiry + reveal_grace_ms` and stale rate-limit state.

        Called from `issue`; the app may also call it periodically. The journal is told, and
        compacts itself once forgotten challenges dominate it (outside the lock). Returns
        the number of challenges dropped.
        """
        now = self._clock()
        with self._lock:
            dropped = self._table.drop_expired(_ms(now))
            self._limits.prune(now)
        self.challenge_log.forget(dropped, now)
        return len(dropped)

    def stats(self) -> dict[str, int]:
        """Counters for metrics: issued, committed, accepted, rejected, rate_limited,
        cooling_down, refused (signature/sanity refusals of requests and commitments),
        malformed and unauthorized (reveals), open, workers (with history)."""
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
                "malformed": c.malformed,
                "unauthorized": c.unauthorized,
                "open": self._table.open_total(_ms(self._clock())),
                "workers": len(self._histories),
            }


#: JSON characters of one revealed sample besides its index digits, path and output, at most:
#: the keys and punctuation (with `json.dumps`'s default ", " / ": " separators), the quoted
#: "0x" leaf and a `null` output, rounded up.
_SAMPLE_FIXED = 160
#: JSON characters of one audit path hash at most: quoted "0x" hex, comma and space.
_PATH_HASH = 70
#: JSON characters of the reveal around its samples at most: keys, the signature's hex.
_REVEAL_FIXED = 256


def reveal_json_bound(loops: int, s: int, n: int, outputs: int) -> int:
    """Most JSON characters of a legal reveal of `s` samples of a `loops`-leaf tree at size
    `n`, `outputs` of them carrying a loop output (SPEC 3 v1.1; no insignificant whitespace
    beyond `json.dumps`'s separators: the caller adds slack).

    Every sample is counted with the longest index (`loops - 1`) and a full audit path
    (`ceil(log2(loops))` hashes, the tree's depth); an output is `8n` bytes as quoted "0x"
    hex, `16n + 4` characters in place of `null`."""
    depth = max(loops - 1, 0).bit_length()
    per_sample = _SAMPLE_FIXED + len(str(max(loops - 1, 0))) + _PATH_HASH * depth
    return _REVEAL_FIXED + s * per_sample + outputs * (16 * n + 4)


def _ms(seconds: float) -> int:
    """Unix milliseconds of a clock reading in seconds."""
    return int(seconds * 1000)

"""SPEC 3 v1.1 at the validator: audit plans, row and full audits, abuse bounds, priority.

Real work (n = 64, a few dozen loops, the real `row_digests_of` and `compute_leaf`), a fake
clock and a seeded rng, as in `test_validator`. Covered here: the plan drawn at commit from
the node options; a row audit catching a wrong output that still hashes to its committed
leaf (the check named in the error); `full` mode; failed audits counted against the client
address of the reveal and the per-address limit applied at reveal time; the audit gate's
priority rule (reserved places and waiting order for workers with a clean history); restart
of the validator on its challenge journal; the BLAS and proxy-header settings of the server.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from pathlib import Path

import pytest

from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import MerkleTree
from hashcloud.engine.gemm import leaf_hash, loop_seed
from hashcloud.engine.rows import loop_output, row_digests_of
from hashcloud.errors import (
    AuditFailed,
    InvalidOption,
    RateLimited,
    RequestRefused,
    RevealUnauthorized,
    StorageUnavailable,
)
from hashcloud.node import server as server_module
from hashcloud.node.config import ValidatorConfig
from hashcloud.node.limits import AuditGate, AuditQueueFull
from hashcloud.node.validator import REVEAL_OUTCOMES, reveal_outcome
from hashcloud.params import DEFAULT_AUDIT_ROWS
from hashcloud.poc.audit_policy import DEFAULT_POLICY, AuditPolicy
from hashcloud.types import to_phex
from tests.node.conftest import (
    HEAD_HASH,
    HEAD_HEIGHT,
    IP,
    LOOPS,
    OTHER_KEY,
    WORKER_KEY,
    N,
    challenge_request,
    commit_request,
    committed_challenge,
    honest_reveal,
    issue,
    make_validator,
    mine,
    reveal_request,
)

pytestmark = pytest.mark.timeout(60)

OTHER_IP = "198.51.100.77"


class Recorder:
    """A `ValidatorMetrics` that keeps what it is told."""

    def __init__(self) -> None:
        self.audits: list[tuple[int, str, float]] = []
        self.reveals: list[str] = []

    def observe_audit(self, n: int, mode: str, cpu_seconds: float) -> None:
        self.audits.append((n, mode, cpu_seconds))

    def count_reveal(self, outcome: str) -> None:
        self.reveals.append(outcome)


# ------------------------------------------------------------------------- the plan


def test_plan_follows_the_node_options(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock, ValidatorConfig(audit_rows=5))
    ch, work, com = committed_challenge(v, clock, engine)
    plan = com.audit
    assert plan.mode == "rows" and len(plan.audited) == DEFAULT_POLICY.base_m
    assert all(len(rows) == 5 and rows == sorted(set(rows)) for rows in plan.rows)
    _, out = v.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    assert out.audited == len(plan.audited) and out.samples == len(com.indices)


def test_audit_rows_above_n_means_every_row(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock, ValidatorConfig(audit_rows=10 * N))
    _, _, com = committed_challenge(v, clock, engine)
    assert all(rows == list(range(N)) for rows in com.audit.rows)


@pytest.mark.parametrize(("field", "value"), [("audit_mode", "half"), ("audit_mode", None),
                                             ("audit_rows", 0), ("audit_rows", True),
                                             ("audit_reserved", -1), ("audit_reserved", 99)])
def test_bad_audit_options_refused(field, value):
    with pytest.raises(InvalidOption, match=field):
        ValidatorConfig(audit_slots=1, audit_queue=4, **{field: value})


def test_audit_option_defaults():
    cfg = ValidatorConfig(audit_slots=2, audit_queue=8)
    assert (cfg.audit_mode, cfg.audit_rows, cfg.effective_audit_reserved) == (
        "rows", DEFAULT_AUDIT_ROWS, 2)
    assert ValidatorConfig(audit_slots=1, audit_queue=0).effective_audit_reserved == 0


def test_plan_grows_with_the_workers_failures(tmp_path, clock, engine):
    """`m` is the adaptive policy's choice at commit time (worker history as of then)."""
    v = make_validator(tmp_path, clock)
    ch, work, com = committed_challenge(v, clock, engine)
    bad = reveal_request(ch, work.tree, work.leaves, com.indices, com.audit,
                         outputs={i: bytes(8 * N) for i in com.audit.audited})
    with pytest.raises(AuditFailed):
        v.reveal(ch.challenge_id, bad)
    _, _, com = committed_challenge(v, clock, engine)
    assert len(com.audit.audited) == DEFAULT_POLICY.base_m + DEFAULT_POLICY.per_failure_m


# ------------------------------------------------------------------- row and full audits


def wrong_output_round(v, clock, key=WORKER_KEY, *, bad_row: int = 7):
    """A miner that commits, for every loop, an output with row `bad_row`'s digest wrong;
    each leaf is the hash of that wrong output, so inclusion and `output -> leaf` hold and
    only the row recomputation can tell. Returns (challenge, tree, leaves, outputs, com)."""
    ch = issue(v, clock, key).challenge
    outputs = {}
    for i in range(LOOPS):
        out = bytearray(loop_output(ch.seed, i, N))
        out[8 * bad_row] ^= 0x01  # one bit of one row digest
        outputs[i] = bytes(out)
    leaves = [leaf_hash(loop_seed(ch.seed, i), outputs[i]) for i in range(LOOPS)]
    tree = MerkleTree(leaves)
    clock.advance(5)
    com = v.commit(ch.challenge_id, commit_request(key, ch.challenge_id, ch.seed, loops=LOOPS,
                                                   merkle_root=to_phex(tree.root)))
    return ch, tree, leaves, outputs, com


def test_row_audit_catches_a_wrong_output_that_hashes_to_its_leaf(tmp_path, clock):
    # k = n: every row is recomputed, so the single wrong row digest is certain to be drawn.
    v = make_validator(tmp_path, clock, ValidatorConfig(audit_rows=N))
    ch, tree, leaves, outputs, com = wrong_output_round(v, clock)
    req = reveal_request(ch, tree, leaves, com.indices, com.audit, outputs=outputs)
    first = com.audit.audited[0]
    with pytest.raises(AuditFailed, match=f"index {first}: row 7 digest does not match its "
                                          "recomputation"):
        v.reveal(ch.challenge_id, req)
    assert v.history(WORKER_KEY.public_key.address).failed == 1
    assert v.stats()["rejected"] == 1


class ForcedRows(random.Random):
    """A seeded rng whose row draws are forced: `sample(range(n), k)` is rows 0..k-1 (the
    sample indices and the audited subset stay random)."""

    def sample(self, population, k, **kwargs):
        if isinstance(population, range):
            return list(population)[:k]
        return super().sample(population, k, **kwargs)


@pytest.mark.parametrize("bad_row", [7, 0])
def test_row_audit_catches_exactly_the_rows_it_draws(tmp_path, clock, bad_row):
    """The other side of SPEC 3's `C(rho n, k) / C(n, k)`: with k = 1 row per sample (forced
    to row 0), a single wrong row in every loop is caught only when it is the drawn row."""
    v = make_validator(tmp_path, clock, ValidatorConfig(audit_rows=1), rng=ForcedRows(3))
    ch, tree, leaves, outputs, com = wrong_output_round(v, clock, bad_row=bad_row)
    assert com.audit.rows == [[0]] * len(com.audit.audited)
    req = reveal_request(ch, tree, leaves, com.indices, com.audit, outputs=outputs)
    if bad_row == 0:
        with pytest.raises(AuditFailed, match="row 0 digest does not match"):
            v.reveal(ch.challenge_id, req)
    else:  # row 7 is wrong in every loop, never drawn: missed
        assert v.reveal(ch.challenge_id, req)[1].accepted


def test_full_mode_recomputes_whole_leaves(tmp_path, clock, engine):
    recorder = Recorder()
    v = make_validator(tmp_path, clock, ValidatorConfig(audit_mode="full"), metrics=recorder)
    ch, work, com = committed_challenge(v, clock, engine)
    assert com.audit.mode == "full" and com.audit.rows == []
    req = honest_reveal(ch, work, com)
    assert all(smp.output is None for smp in req.samples)  # no outputs needed
    _, out = v.reveal(ch.challenge_id, req)
    assert out.accepted and out.audited == DEFAULT_POLICY.base_m
    # Forged leaves in a consistent tree: caught by recomputation.
    ch = issue(v, clock).challenge
    garbage = [hashlib.sha256(b"g%d" % i).digest() for i in range(LOOPS)]
    tree = MerkleTree(garbage)
    clock.advance(5)
    com = v.commit(ch.challenge_id, commit_request(WORKER_KEY, ch.challenge_id, ch.seed,
                                                   loops=LOOPS, merkle_root=to_phex(tree.root)))
    with pytest.raises(AuditFailed, match="leaf does not match its recomputation"):
        v.reveal(ch.challenge_id, reveal_request(ch, tree, garbage, com.indices, com.audit))
    assert [mode for _, mode, _ in recorder.audits] == ["full", "full"]
    assert recorder.reveals == ["accepted", "failed"]


def test_audit_metrics_report_thread_cpu_time_and_outcomes(tmp_path, clock, engine):
    recorder = Recorder()
    v = make_validator(tmp_path, clock, metrics=recorder)
    ch, work, com = committed_challenge(v, clock, engine)
    req = honest_reveal(ch, work, com)
    with pytest.raises(RevealUnauthorized):
        v.reveal(ch.challenge_id, honest_reveal(ch, work, com, key=OTHER_KEY))
    v.reveal(ch.challenge_id, req)
    v.reveal(ch.challenge_id, req)
    assert recorder.reveals == ["unauthorized", "accepted", "repeated"]
    assert len(recorder.audits) == 1
    n, mode, cpu = recorder.audits[0]
    assert (n, mode) == (N, "rows") and 0 <= cpu < 5
    assert set(recorder.reveals) <= set(REVEAL_OUTCOMES)
    assert reveal_outcome(AuditQueueFull("x", 1.0)) == "busy"
    assert reveal_outcome(RateLimited("x", 1.0)) == "rate_limited"
    assert reveal_outcome(MemoryError()) == "error"


# ------------------------------------------------------------ failed audits per address


def failing_reveal(v, clock, engine, key, ip=IP):
    """Issue to `key` from `ip`, commit honestly, and build a well-shaped, signed reveal
    whose outputs are wrong (a failed audit)."""
    ch = v.issue(challenge_request(key, clock), HEAD_HEIGHT, HEAD_HASH, ip).challenge
    work = mine(engine, ch.seed)
    clock.advance(5)
    com = v.commit(ch.challenge_id, commit_request(key, ch.challenge_id, ch.seed,
                                                   loops=work.loops,
                                                   merkle_root=work.merkle_root))
    bad = reveal_request(ch, work.tree, work.leaves, com.indices, com.audit, key=key,
                         outputs={i: bytes(8 * N) for i in com.audit.audited})
    return ch, work, com, bad


def test_failed_audits_count_against_the_revealing_address(tmp_path, clock, engine):
    """SPEC 3 v1.1: failures count at reveal time against the socket peer of the reveal
    (and the address that asked for the challenge), which is then refused, before any
    signature work, at issue and at reveal alike."""
    v = make_validator(tmp_path, clock, ValidatorConfig(ip_failures_per_hour=2))
    asked_from = "192.0.2.50"
    for secret in (0xB1, 0xB2):  # challenges asked from one address, revealed from another
        ch, _, _, bad = failing_reveal(v, clock, engine, PrivateKey(secret), asked_from)
        with pytest.raises(AuditFailed):
            v.reveal(ch.challenge_id, bad, OTHER_IP)
    for ip in (OTHER_IP, asked_from):
        with pytest.raises(RateLimited, match=f"failed audits from IP {ip}"):
            issue(v, clock, PrivateKey(0xB3), ip=ip)
    # A reveal from OTHER_IP is refused too; the challenge stays committed, so its worker
    # can still reveal it from a clean address.
    key = PrivateKey(0xB4)
    ch, work, com = committed_challenge(v, clock, engine, key)
    with pytest.raises(RateLimited, match=f"failed audits from IP {OTHER_IP}"):
        v.reveal(ch.challenge_id, honest_reveal(ch, work, com, key=key), OTHER_IP)
    assert v.history(key.public_key.address).failed == 0
    assert v.reveal(ch.challenge_id, honest_reveal(ch, work, com, key=key),
                    "203.0.113.1")[1].accepted


def test_failures_are_not_double_counted_for_one_address(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock, ValidatorConfig(ip_failures_per_hour=2))
    ch, _, _, bad = failing_reveal(v, clock, engine, PrivateKey(0xC1))
    with pytest.raises(AuditFailed):
        v.reveal(ch.challenge_id, bad, IP)  # asked and revealed from IP: one failure
    assert issue(v, clock, PrivateKey(0xC2))  # one failure of two allowed


def test_unauthorized_and_malformed_reveals_count_against_nobody(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock, ValidatorConfig(ip_failures_per_hour=1))
    ch, work, com = committed_challenge(v, clock, engine)
    for _ in range(3):
        with pytest.raises(RevealUnauthorized):
            v.reveal(ch.challenge_id, honest_reveal(ch, work, com, key=OTHER_KEY), OTHER_IP)
    with pytest.raises(RequestRefused):  # any other refusal is no failed audit either
        v.issue(challenge_request(WORKER_KEY, clock, signer=OTHER_KEY), HEAD_HEIGHT,
                HEAD_HASH, OTHER_IP)
    assert issue(v, clock, OTHER_KEY, ip=OTHER_IP)
    assert v.reveal(ch.challenge_id, honest_reveal(ch, work, com), OTHER_IP)[1].accepted


# ----------------------------------------------------------------- the priority rule


def test_gate_reserves_places_for_trusted_reveals():
    gate = AuditGate(slots=1, queue=4, reserved=2)
    for _ in range(3):  # slots + queue - reserved places for unknown workers
        gate.admit()
    with pytest.raises(AuditQueueFull, match="audit queue is full"):
        gate.admit()
    gate.admit(trusted=True)
    gate.admit(trusted=True)
    with pytest.raises(AuditQueueFull):
        gate.admit(trusted=True)
    assert gate.pending == 5
    with pytest.raises(ValueError):
        AuditGate(slots=1, queue=1, reserved=2)


def test_gate_gives_a_freed_slot_to_a_trusted_waiter_first():
    gate = AuditGate(slots=1, queue=4)
    order: list[str] = []
    waiting = threading.Barrier(3, timeout=10)

    def audit(name: str, trusted: bool) -> None:
        waiting.wait()
        with gate.slot(trusted):
            order.append(name)

    with gate.slot():
        unknown = threading.Thread(target=audit, args=("unknown", False))
        unknown.start()
        trusted = threading.Thread(target=audit, args=("trusted", True))
        trusted.start()
        waiting.wait()
        deadline = time.monotonic() + 10
        while gate.waiting < 2:  # both blocked inside slot() before the slot frees
            assert time.monotonic() < deadline
            time.sleep(0.005)
    unknown.join(10)
    trusted.join(10)
    assert order == ["trusted", "unknown"]


def test_full_queue_still_admits_a_worker_with_a_clean_history(tmp_path, clock, engine):
    """The validator's rule: `policy.trusted_after` accepted rounds and no recent failure
    is trusted (one cheap round is not enough); with the unknown workers' places taken, a
    trusted reveal is admitted and an unknown one is 429 with its challenge left
    committed."""
    v = make_validator(tmp_path, clock, ValidatorConfig(
        audit_slots=1, audit_queue=1, audit_reserved=1, max_open_per_worker=10,
        policy=AuditPolicy(trusted_after=2)))
    ch, work, com = committed_challenge(v, clock, engine)  # one round: not yet trusted
    assert v.reveal(ch.challenge_id, honest_reveal(ch, work, com))[1].accepted
    v.audit_gate.admit()
    try:
        ch, work, com = committed_challenge(v, clock, engine)
        with pytest.raises(AuditQueueFull):
            v.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    finally:
        v.audit_gate.release()
    assert v.reveal(ch.challenge_id, honest_reveal(ch, work, com))[1].accepted  # round two
    v.audit_gate.admit()  # one unknown audit running: the unknown places are used up
    try:
        ch2, work2, com2 = committed_challenge(v, clock, engine, OTHER_KEY)  # unknown worker
        with pytest.raises(AuditQueueFull):
            v.reveal(ch2.challenge_id, honest_reveal(ch2, work2, com2, key=OTHER_KEY))
        ch, work, com = committed_challenge(v, clock, engine)  # the trusted worker
        assert v.reveal(ch.challenge_id, honest_reveal(ch, work, com))[1].accepted
    finally:
        v.audit_gate.release()
    assert v.reveal(ch2.challenge_id, honest_reveal(ch2, work2, com2, key=OTHER_KEY))[1].accepted


def test_a_recent_failure_loses_the_priority(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock, ValidatorConfig(
        audit_slots=1, audit_queue=1, audit_reserved=1, max_open_per_worker=10,
        policy=AuditPolicy(trusted_after=1)))
    ch, work, com = committed_challenge(v, clock, engine)
    assert v.reveal(ch.challenge_id, honest_reveal(ch, work, com))[1].accepted
    ch, _, _, bad = failing_reveal(v, clock, engine, WORKER_KEY)
    with pytest.raises(AuditFailed):
        v.reveal(ch.challenge_id, bad)
    v.audit_gate.admit()
    try:
        ch, work, com = committed_challenge(v, clock, engine)
        with pytest.raises(AuditQueueFull):
            v.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    finally:
        v.audit_gate.release()


# ------------------------------------------------------------- restart on the journal


def test_open_rounds_survive_a_validator_restart(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock)
    ch, work, com = committed_challenge(v, clock, engine)  # committed, not revealed
    done, done_work, done_com = committed_challenge(v, clock, engine)
    first = v.reveal(done.challenge_id, honest_reveal(done, done_work, done_com))
    issued = issue(v, clock, OTHER_KEY).challenge  # issued, not committed
    req = challenge_request(WORKER_KEY, clock)
    v.issue(req, HEAD_HEIGHT, HEAD_HASH, IP)
    v.close()

    again = make_validator(tmp_path, clock)
    assert again.open_challenges(WORKER_KEY.public_key.address) == 2
    assert again.open_challenges(OTHER_KEY.public_key.address) == 1
    # The committed round keeps its indices and plan: the same reveal is accepted.
    assert again.reveal(ch.challenge_id, honest_reveal(ch, work, com))[1].accepted
    # The accepted one answers with the very same receipt.
    assert again.reveal(done.challenge_id, honest_reveal(done, done_work, done_com)) == first
    # The issued one can still be committed; the replay guard came back too.
    work3 = mine(engine, issued.seed)
    clock.advance(5)  # issue time restored: compute_time is checked against it
    again.commit(issued.challenge_id, commit_request(OTHER_KEY, issued.challenge_id,
                                                     issued.seed, loops=work3.loops,
                                                     merkle_root=work3.merkle_root))
    with pytest.raises(RequestRefused, match="already used"):
        again.issue(req, HEAD_HEIGHT, HEAD_HASH, IP)
    again.close()


def test_an_interrupted_audit_comes_back_committed(tmp_path, clock, engine):
    """A crash during an audit (here: the row function never returns a verdict) leaves no
    outcome in the journal; after the restart the round can be revealed again."""
    def crashing_rows(seed, i, n, rows):
        raise SystemExit("the process dies mid-audit")

    v = make_validator(tmp_path, clock, row_fn=crashing_rows)
    ch, work, com = committed_challenge(v, clock, engine)
    with pytest.raises(SystemExit):
        v.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    again = make_validator(tmp_path, clock, row_fn=row_digests_of)
    assert again.reveal(ch.challenge_id, honest_reveal(ch, work, com))[1].accepted


def test_expired_challenges_are_not_restored(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock)
    committed_challenge(v, clock, engine)
    v.close()
    clock.advance(20 * 60 + 1)  # past expiry + grace (one more TTL)
    again = make_validator(tmp_path, clock)
    assert again.open_challenges(WORKER_KEY.public_key.address) == 0
    assert again.challenge_log.records == 0


# ------------------------------------------------------------------ server settings


def test_proxy_headers_only_from_trusted_proxies():
    cfg = server_module.uvicorn_config(object(), log_level="error")
    assert cfg.proxy_headers is False
    cfg = server_module.uvicorn_config(object(), log_level="error",
                                       trusted_proxies=["10.0.0.5", "10.0.0.6"])
    assert cfg.proxy_headers is True and cfg.forwarded_allow_ips == ["10.0.0.5", "10.0.0.6"]


def test_run_node_limits_blas_to_one_thread(monkeypatch, service):
    calls: list[dict] = []
    monkeypatch.setattr(server_module, "threadpool_limits", lambda **kw: calls.append(kw))
    seen: list = []
    monkeypatch.setattr(server_module.uvicorn.Server, "run",
                        lambda self, sockets=None: seen.append(self.config))
    sock = server_module.bind_socket("127.0.0.1", 0)
    try:
        server_module.run_node(service, sock, trusted_proxies=["10.1.2.3"])
    finally:
        sock.close()
    assert calls == [{"limits": 1, "user_api": "blas"}]
    assert seen[0].proxy_headers is True and seen[0].forwarded_allow_ips == ["10.1.2.3"]


# ------------------------------------------------ failed audits per address, restarted


def test_failed_audits_per_address_survive_restarts(tmp_path, clock, engine):
    """The `rejected` record names both client addresses: the per-address failure window
    is rebuilt on restart, even once the challenges themselves expired and were compacted
    away, and only for failures still within the window."""
    cfg = ValidatorConfig(ip_failures_per_hour=2, challenge_ttl_ms=60_000)
    v = make_validator(tmp_path, clock, cfg)
    asked_from = "192.0.2.50"
    for secret in (0xD1, 0xD2):
        ch, _, _, bad = failing_reveal(v, clock, engine, PrivateKey(secret), asked_from)
        with pytest.raises(AuditFailed):
            v.reveal(ch.challenge_id, bad, OTHER_IP)
    clock.advance(5 * 60)  # past expiry + grace: dropped and compacted away
    v.challenge_log.compact_min = 1
    assert v.expire() == 2 and v.challenge_log.records == 2  # the two `rejected` records
    v.close()
    for _ in range(2):  # restart twice: the first restart's rewrite keeps them too
        again = make_validator(tmp_path, clock, cfg)
        for ip in (OTHER_IP, asked_from):
            with pytest.raises(RateLimited, match=f"failed audits from IP {ip}"):
                issue(again, clock, PrivateKey(0xD3), ip=ip)
        again.close()
    clock.advance(3600)  # the failures leave the window
    last = make_validator(tmp_path, clock, cfg)
    assert last.challenge_log.records == 0
    assert issue(last, clock, PrivateKey(0xD3), ip=OTHER_IP)
    last.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (disk full)")
def test_unwritable_outcome_leaves_the_round_committed(tmp_path, clock, engine):
    """A failed audit whose `rejected` record cannot be written (ENOSPC) burns nothing and
    counts against nobody: StorageUnavailable, the challenge stays committed."""
    v = make_validator(tmp_path, clock)
    ch, _, _, bad = failing_reveal(v, clock, engine, WORKER_KEY)
    log = v.challenge_log._log
    real, log._fh = log._fh, open("/dev/full", "ab")  # noqa: SIM115 - closed by the log
    with pytest.raises(StorageUnavailable, match="journal"):
        v.reveal(ch.challenge_id, bad, OTHER_IP)
    real.close()
    assert v.history(WORKER_KEY.public_key.address).failed == 0
    assert v.stats()["rejected"] == 0
    assert v.open_challenges(WORKER_KEY.public_key.address) == 1
    with pytest.raises(AuditFailed):  # the journal works again: now it is durable
        v.reveal(ch.challenge_id, bad, OTHER_IP)
    v.close()


# ------------------------------------------------------ honest rounds, row detection


def test_honest_rounds_are_never_rejected(tmp_path, clock, engine):
    """40 seeded honest rounds in `rows` mode with the default k: all accepted."""
    v = make_validator(tmp_path, clock, rng=random.Random(2024))
    sizes = random.Random(7)
    for _ in range(40):
        ch = issue(v, clock).challenge
        work = mine(engine, ch.seed, sizes.randrange(10, 80))
        clock.advance(5)
        com = v.commit(ch.challenge_id, commit_request(WORKER_KEY, ch.challenge_id, ch.seed,
                                                       loops=work.loops,
                                                       merkle_root=work.merkle_root))
        assert com.audit.mode == "rows"
        assert all(len(rows) == min(N, DEFAULT_AUDIT_ROWS) for rows in com.audit.rows)
        assert v.reveal(ch.challenge_id, honest_reveal(ch, work, com))[1].accepted
    stats = v.stats()
    assert stats["accepted"] == 40 and stats["rejected"] == 0


ROW_K = 4
ROW_M = 2
WRONG_ROWS = 6  # of n = 64 in every loop: rho = 58 / 64
DETECTION_ROUNDS = 300
DETECTION_LOOPS = 10  # s = 10 samples


def test_row_detection_rate_matches_spec(tmp_path, clock):
    """SPEC 3 v1.1 row audit, round level: a miner whose every loop has a fraction rho of
    correct row digests (the leaf is the hash of that output, a valid tree) survives a
    round with probability `(C(rho n, k) / C(n, k))^m`. Over DETECTION_ROUNDS seeded rounds
    (n = 64, k = 4, m = 2 fixed: no adaptation) the rejection rate must lie within 4
    standard errors of `1 - (C(58, 4) / C(64, 4))^2` (about 0.554 +- 0.029 each way)."""
    policy = AuditPolicy(base_m=ROW_M, trusted_m=ROW_M, per_failure_m=0,
                         audit_all_after=10**6, cooldown_after=10**6)
    v = make_validator(tmp_path, clock, ValidatorConfig(audit_rows=ROW_K, policy=policy,
                                                        ip_failures_per_hour=10**6),
                       rng=random.Random(99))
    miner = random.Random(5)
    rejected = 0
    for _ in range(DETECTION_ROUNDS):
        ch = issue(v, clock).challenge
        outputs = {}
        for i in range(DETECTION_LOOPS):
            out = bytearray(loop_output(ch.seed, i, N))
            for row in miner.sample(range(N), WRONG_ROWS):
                out[8 * row] ^= 0x01
            outputs[i] = bytes(out)
        leaves = [leaf_hash(loop_seed(ch.seed, i), outputs[i]) for i in range(DETECTION_LOOPS)]
        tree = MerkleTree(leaves)
        clock.advance(5)
        com = v.commit(ch.challenge_id, commit_request(
            WORKER_KEY, ch.challenge_id, ch.seed, loops=DETECTION_LOOPS,
            merkle_root=to_phex(tree.root)))
        assert len(com.audit.audited) == ROW_M
        assert all(len(rows) == ROW_K for rows in com.audit.rows)
        req = reveal_request(ch, tree, leaves, com.indices, com.audit, outputs=outputs)
        try:
            v.reveal(ch.challenge_id, req)
        except AuditFailed as exc:
            assert "digest does not match" in str(exc)
            rejected += 1
    survive = math.comb(N - WRONG_ROWS, ROW_K) / math.comb(N, ROW_K)
    expected = 1 - survive**ROW_M
    se = math.sqrt(expected * (1 - expected) / DETECTION_ROUNDS)
    rate = rejected / DETECTION_ROUNDS
    assert abs(rate - expected) <= 4 * se, (rate, expected, se)

"""PocValidator: the SPEC 3 challenge -> commit -> reveal -> receipt flow and its refusals.

Real work throughout (n = 64, a few dozen loops of the NumPy engine, the real `compute_leaf`),
except the statistical detection test, which injects a fast fake leaf function (documented
there). Time is a fake clock and the validator's rng a seeded `random.Random`, both
constructor arguments, so every test is deterministic. The life cycle, the abuse bounds and
the history file have their own modules: `test_challenges`, `test_limits`, `test_history`.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading

import pytest

from hashcloud.api.models import ChallengeRequest, DeviceModel
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import MerkleTree
from hashcloud.crypto.signatures import ChainDomain, sign, verify
from hashcloud.engine.rows import row_digests_of
from hashcloud.errors import (
    AuditFailed,
    ChallengeExpired,
    ChallengeNotFound,
    ChallengeUsed,
    CommitRefused,
    CoolingDown,
    MalformedReveal,
    RateLimited,
    RequestRefused,
    RevealRefused,
    RevealUnauthorized,
    StorageUnavailable,
    ValidatorError,
)
from hashcloud.node.app import http_status
from hashcloud.node.config import ValidatorConfig
from hashcloud.node.validator import PocValidator
from hashcloud.poc.audit import DEVICE_PEAK_FLOPS
from hashcloud.poc.audit_policy import DEFAULT_POLICY
from hashcloud.poc.challenge import (
    challenge_request_bytes,
    commit_message,
    indices_signing_bytes,
    verify_challenge,
)
from hashcloud.poc.detection import p_detect
from hashcloud.poc.receipt import decode_receipt, verify_receipt
from hashcloud.poc.sampling import check_stratified, sample_count
from hashcloud.types import to_phex
from tests.node.conftest import (
    CHAIN,
    HEAD_HASH,
    HEAD_HEIGHT,
    IP,
    LOOPS,
    NODE_KEY,
    OTHER_KEY,
    T0,
    WORKER_KEY,
    FakeClock,
    N,
    challenge_request,
    commit_request,
    committed_challenge,
    honest_reveal,
    issue,
    make_validator,
    mine,
    reveal_request,
    signed_reveal,
)

# --------------------------------------------------------------------------- happy path


def test_honest_round_is_accepted_and_receipt_matches(validator, clock, engine):
    resp = issue(validator, clock)
    assert resp.chain_id == CHAIN.chain_id and resp.s_max == 256
    assert resp.node_public_key == NODE_KEY.public_key.data
    ch = resp.challenge
    verify_challenge(ch, NODE_KEY.public_key, CHAIN)
    assert ch.worker_address == WORKER_KEY.public_key.address and ch.n == N
    assert ch.expiry == int(T0 * 1000) + 10 * 60_000
    assert validator.open_challenges(WORKER_KEY.public_key.address) == 1

    work = mine(engine, ch.seed)
    clock.advance(5)
    com = validator.commit(
        ch.challenge_id,
        commit_request(
            WORKER_KEY,
            ch.challenge_id,
            ch.seed,
            loops=work.loops,
            merkle_root=work.merkle_root,
            compute_time=work.compute_time,
        ),
    )
    s = sample_count(LOOPS)
    check_stratified(com.indices, LOOPS, s)
    # The plan (SPEC 3 v1.1): m = base_m audited samples, 16 distinct rows of [0, n) each.
    plan = com.audit
    assert plan.mode == "rows" and len(plan.audited) == DEFAULT_POLICY.base_m
    assert set(plan.audited) <= set(com.indices)
    assert all(len(set(rows)) == 16 and max(rows) < N for rows in plan.rows)
    verify(
        NODE_KEY.public_key,
        indices_signing_bytes(CHAIN, ch.challenge_id, work.merkle_root, LOOPS, com.indices,
                              plan),
        com.indices_signature,
    )

    clock.advance(1)
    receipt, out = validator.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    assert out.accepted and out.samples == s and out.audited == DEFAULT_POLICY.base_m
    assert decode_receipt(out.receipt) == receipt
    verify_receipt(receipt, {NODE_KEY.public_key.hex()}, CHAIN)
    assert (receipt.task_id, receipt.worker_address, receipt.seed) == (
        ch.challenge_id,
        WORKER_KEY.public_key.address,
        ch.seed,
    )
    assert (receipt.n, receipt.loops, receipt.merkle_root) == (N, LOOPS, work.merkle_root)
    assert receipt.compute_time_ms == round(work.compute_time * 1000)
    assert (receipt.samples, receipt.audited) == (s, out.audited)
    assert receipt.issued_height == HEAD_HEIGHT
    assert receipt.accepted_at == int(clock() * 1000)

    hist = validator.history(WORKER_KEY.public_key.address)
    assert hist.accepted == 1 and hist.failed == 0 and hist.mean_rate > 0
    assert validator.open_challenges(WORKER_KEY.public_key.address) == 0
    stats = validator.stats()
    assert {k: stats[k] for k in ("issued", "committed", "accepted", "rejected", "open")} == {
        "issued": 1,
        "committed": 1,
        "accepted": 1,
        "rejected": 0,
        "open": 0,
    }


def test_reward_fn_fills_reward_estimate(tmp_path, clock, engine):
    v = make_validator(tmp_path, clock, reward_fn=lambda r: r.loops * r.n**3)
    ch, work, com = committed_challenge(v, clock, engine)
    _, out = v.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    assert out.reward_estimate == LOOPS * N**3


# ------------------------------------------------------------------- challenge requests


@pytest.mark.parametrize("forgery",
                         ["signer", "address", "stale", "future", "chain", "genesis"])
def test_bad_challenge_request_refused(validator, clock, forgery):
    if forgery == "signer":
        req = challenge_request(WORKER_KEY, clock, signer=OTHER_KEY)
    elif forgery == "address":  # WORKER_KEY's key claiming OTHER_KEY's address
        req = challenge_request(WORKER_KEY, clock, address=OTHER_KEY.public_key.address)
    elif forgery == "stale":
        req = challenge_request(WORKER_KEY, clock, time_ms=int(clock() * 1000) - 121_000)
    elif forgery == "future":
        req = challenge_request(WORKER_KEY, clock, time_ms=int(clock() * 1000) + 121_000)
    else:  # signed for another chain id, or the same id on another genesis (SPEC 5 v1.1)
        addr, t = WORKER_KEY.public_key.address, int(clock() * 1000)
        other = (ChainDomain("other-chain", CHAIN.genesis) if forgery == "chain"
                 else ChainDomain(CHAIN.chain_id, "0" * 16))
        sig = sign(WORKER_KEY, challenge_request_bytes(other, addr, N, t))
        req = ChallengeRequest(
            worker_address=addr,
            public_key=WORKER_KEY.public_key.hex(),
            n=N,
            request_time_ms=t,
            signature=sig.hex(),
        )
    with pytest.raises(RequestRefused) as exc:
        validator.issue(req, HEAD_HEIGHT, HEAD_HASH, IP)
    assert http_status(exc.value) == 422
    assert validator.stats()["issued"] == 0


def test_request_time_within_skew_accepted(validator, clock):
    req = challenge_request(WORKER_KEY, clock, time_ms=int(clock() * 1000) - 119_000)
    assert validator.issue(req, HEAD_HEIGHT, HEAD_HASH, IP).challenge.n == N


# ------------------------------------------------------------------------------- commit


def test_other_workers_challenge_cannot_be_committed(validator, clock, engine):
    ch = issue(validator, clock).challenge
    work = mine(engine, ch.seed)
    clock.advance(5)
    # OTHER_KEY signs a commitment naming WORKER_KEY's address: not the challenge worker's key.
    for address in (WORKER_KEY.public_key.address, OTHER_KEY.public_key.address):
        req = commit_request(
            OTHER_KEY,
            ch.challenge_id,
            ch.seed,
            loops=work.loops,
            merkle_root=work.merkle_root,
            address=address,
        )
        with pytest.raises(CommitRefused, match="device_signature") as exc:
            validator.commit(ch.challenge_id, req)
        assert http_status(exc.value) == 422
    # The challenge is still usable by its worker.
    validator.commit(
        ch.challenge_id,
        commit_request(
            WORKER_KEY, ch.challenge_id, ch.seed, loops=work.loops, merkle_root=work.merkle_root
        ),
    )


def test_commit_signature_binds_every_field(validator, clock):
    ch = issue(validator, clock).challenge
    clock.advance(5)
    good = commit_request(WORKER_KEY, ch.challenge_id, ch.seed, loops=30,
                          merkle_root="0x" + "11" * 32)
    tampered = good.model_copy(update={"loops": 31})
    with pytest.raises(CommitRefused, match="device_signature"):
        validator.commit(ch.challenge_id, tampered)


def test_claimed_rate_above_peak_refused(validator, clock):
    ch = issue(validator, clock).challenge
    clock.advance(5)
    loops = 100
    fast = loops * 2 * N**3 / DEVICE_PEAK_FLOPS["numpy"] / 2  # twice the CPU peak
    req = commit_request(
        WORKER_KEY,
        ch.challenge_id,
        ch.seed,
        loops=loops,
        merkle_root="0x" + "11" * 32,
        compute_time=fast,
    )
    with pytest.raises(CommitRefused, match="above the numpy peak"):
        validator.commit(ch.challenge_id, req)
    # The same claim on a GPU backend is plausible.
    gpu = DeviceModel(name="gpu", backend="cupy")
    req = commit_request(
        WORKER_KEY,
        ch.challenge_id,
        ch.seed,
        loops=loops,
        merkle_root="0x" + "11" * 32,
        compute_time=fast,
        device=gpu,
    )
    validator.commit(ch.challenge_id, req)


def test_unknown_backend_refused(validator, clock):
    ch = issue(validator, clock).challenge
    clock.advance(5)
    req = commit_request(
        WORKER_KEY,
        ch.challenge_id,
        ch.seed,
        loops=10,
        merkle_root="0x" + "11" * 32,
        device=DeviceModel(name="asic", backend="magic"),
    )
    with pytest.raises(CommitRefused, match="unknown backend"):
        validator.commit(ch.challenge_id, req)


def test_compute_time_longer_than_elapsed_refused(validator, clock):
    ch = issue(validator, clock).challenge
    clock.advance(5)
    req = commit_request(WORKER_KEY, ch.challenge_id, ch.seed, loops=10,
                         merkle_root="0x" + "11" * 32, compute_time=6.5)
    with pytest.raises(CommitRefused, match="exceeds"):
        validator.commit(ch.challenge_id, req)
    # Within the 1 s clock-granularity slack.
    req = commit_request(WORKER_KEY, ch.challenge_id, ch.seed, loops=10,
                         merkle_root="0x" + "11" * 32, compute_time=5.9)
    validator.commit(ch.challenge_id, req)


# -------------------------------------------------------------------- dishonest reveals


def _m_for(v: PocValidator, com_loops: int, history, clock: FakeClock) -> int:
    s = sample_count(com_loops)
    return v.config.policy.choose_m(
        s, com_loops * 2 * N**3 / 2.0, DEVICE_PEAK_FLOPS["numpy"], history, clock()
    )


@pytest.mark.parametrize("cheat", ["tampered_leaf", "tampered_path", "forged_leaves"])
def test_dishonest_reveal_refused_and_penalised(validator, clock, engine, cheat):
    address = WORKER_KEY.public_key.address
    m_before = _m_for(validator, LOOPS, validator.history(address), clock)
    ch = issue(validator, clock).challenge
    work = mine(engine, ch.seed)
    leaves, tree = work.leaves, work.tree
    if cheat == "forged_leaves":
        # Garbage leaves committed in a valid tree: consistent paths, wrong content.
        leaves = [hashlib.sha256(b"garbage%d" % i).digest() for i in range(LOOPS)]
        tree = MerkleTree(leaves)
    clock.advance(5)
    com = validator.commit(
        ch.challenge_id,
        commit_request(
            WORKER_KEY, ch.challenge_id, ch.seed, loops=LOOPS, merkle_root=to_phex(tree.root)
        ),
    )
    req = reveal_request(ch, tree, leaves, com.indices, com.audit)
    samples = list(req.samples)
    if cheat == "tampered_leaf":  # leaf changed, path left as is (re-signed by the worker)
        samples[3] = samples[3].model_copy(update={"leaf": b"\xee" * 32})
        req = signed_reveal(ch, tree.root, samples)
    if cheat == "tampered_path":
        samples[5] = samples[5].model_copy(update={"proof": [b"\x00" * 32,
                                                             *samples[5].proof[1:]]})
        req = signed_reveal(ch, tree.root, samples)

    expected = {
        "tampered_leaf": (AuditFailed, f"index {com.indices[3]}: inclusion proof"),
        "tampered_path": (AuditFailed, f"index {com.indices[5]}: inclusion proof"),
        # Row audit: the honest outputs of the audited loops do not hash to garbage leaves.
        "forged_leaves": (AuditFailed, "output does not hash to the leaf"),
    }[cheat]
    with pytest.raises(expected[0], match=expected[1]) as exc:
        validator.reveal(ch.challenge_id, req)
    assert http_status(exc.value) == 422

    hist = validator.history(address)
    assert hist.failed == 1 and hist.accepted == 0 and hist.failure_times == (clock(),)
    assert _m_for(validator, LOOPS, hist, clock) > m_before
    assert validator.stats()["rejected"] == 1
    # The challenge is used up: another reveal (even an honest one) is a conflict.
    with pytest.raises(ChallengeUsed, match="rejected"):
        validator.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    assert validator.history(address).failed == 1


@pytest.mark.parametrize("shape", ["wrong_indices", "reordered", "missing", "no_output",
                                   "short_output"])
def test_malformed_reveal_leaves_the_challenge_open(validator, clock, engine, shape):
    """SPEC 3 v1.1: a correctly signed reveal whose indices or shape do not match what the
    node drew is refused as malformed; the challenge stays committed (the honest reveal
    still succeeds) and no failed audit is recorded."""
    ch, work, com = committed_challenge(validator, clock, engine)
    indices, plan = list(com.indices), com.audit
    req = None
    if shape == "wrong_indices":  # stratum 0 is [0, 2): reveal the other index in it
        indices[0] = 1 - indices[0]
    elif shape == "reordered":
        indices[0], indices[1] = indices[1], indices[0]
    elif shape == "missing":
        indices = indices[:-1]
    else:
        target = plan.audited[0]  # an audited sample without (or with a short) output
        req = reveal_request(ch, work.tree, work.leaves, indices, plan)
        samples = list(req.samples)
        j = indices.index(target)
        short = samples[j].output[:-8] if shape == "short_output" else None
        samples[j] = samples[j].model_copy(update={"output": short})
        req = signed_reveal(ch, work.tree.root, samples)
    if req is None:
        req = reveal_request(ch, work.tree, work.leaves, indices, plan)
    with pytest.raises(MalformedReveal) as exc:
        validator.reveal(ch.challenge_id, req)
    assert http_status(exc.value) == 400  # not 422: the round is still open
    hist = validator.history(WORKER_KEY.public_key.address)
    assert hist.failed == 0
    stats = validator.stats()
    assert stats["rejected"] == 0 and stats["malformed"] == 1
    assert validator.open_challenges(WORKER_KEY.public_key.address) == 1
    _, out = validator.reveal(ch.challenge_id, honest_reveal(ch, work, com))
    assert out.accepted


def test_third_party_reveal_cannot_burn_the_round(validator, clock, engine):
    """SPEC 3 v1.1: a reveal not signed by the challenge's worker changes nothing, even a
    well-shaped one with garbage that would fail the audit; the worker's own reveal then
    succeeds, and an accepted round's receipt is only repeated for a signed reveal."""
    ch, work, com = committed_challenge(validator, clock, engine)
    garbage = [hashlib.sha256(b"x%d" % i).digest() for i in range(LOOPS)]
    for req in (reveal_request(ch, MerkleTree(garbage), garbage, com.indices, com.audit,
                               key=OTHER_KEY),
                honest_reveal(ch, work, com, key=OTHER_KEY)):
        with pytest.raises(RevealUnauthorized, match="not signed by the challenge's worker") \
                as exc:
            validator.reveal(ch.challenge_id, req, "203.0.113.9")
        assert http_status(exc.value) == 403
    # A valid worker signature over different samples is no better.
    good = honest_reveal(ch, work, com)
    other = reveal_request(ch, MerkleTree(garbage), garbage, com.indices, com.audit)
    swapped = good.model_copy(update={"signature": other.signature})
    with pytest.raises(RevealUnauthorized):
        validator.reveal(ch.challenge_id, swapped)
    assert validator.history(WORKER_KEY.public_key.address).failed == 0
    assert validator.stats()["unauthorized"] == 3 and validator.stats()["rejected"] == 0
    first = validator.reveal(ch.challenge_id, good)
    assert first[1].accepted
    with pytest.raises(RevealUnauthorized):
        validator.reveal(ch.challenge_id, honest_reveal(ch, work, com, key=OTHER_KEY))
    assert validator.reveal(ch.challenge_id, good) == first


def test_internal_error_during_audit_allows_retry(tmp_path, clock, engine):
    calls = []

    def flaky_rows(seed: str, i: int, n: int, rows):
        calls.append(i)
        if len(calls) == 1:
            raise MemoryError("boom")
        return row_digests_of(seed, i, n, rows)

    v = make_validator(tmp_path, clock, row_fn=flaky_rows)
    ch, work, com = committed_challenge(v, clock, engine)
    req = honest_reveal(ch, work, com)
    with pytest.raises(MemoryError):
        v.reveal(ch.challenge_id, req)
    assert v.history(WORKER_KEY.public_key.address).failed == 0
    _, out = v.reveal(ch.challenge_id, req)
    assert out.accepted


# ----------------------------------------------------------------------------- cooldown


def test_cooldown_after_repeated_failures(validator, clock, engine):
    address = WORKER_KEY.public_key.address
    for _ in range(DEFAULT_POLICY.cooldown_after):
        ch = issue(validator, clock).challenge
        work = mine(engine, ch.seed, loops=10)
        clock.advance(5)
        com = validator.commit(
            ch.challenge_id,
            commit_request(
                WORKER_KEY, ch.challenge_id, ch.seed, loops=10, merkle_root=work.merkle_root
            ),
        )
        assert com.indices == list(range(10))  # s = loops = 10: one index per stratum
        with pytest.raises(RevealRefused):  # the right shape, but the outputs are garbage
            validator.reveal(ch.challenge_id, reveal_request(
                ch, work.tree, work.leaves, com.indices, com.audit,
                outputs={i: bytes(8 * N) for i in com.audit.audited}))
    assert validator.history(address).failed == DEFAULT_POLICY.cooldown_after
    clock.advance(10)
    with pytest.raises(CoolingDown, match="cooling down") as exc:
        issue(validator, clock)
    assert http_status(exc.value) == 429
    assert exc.value.until == pytest.approx(clock() - 10 + DEFAULT_POLICY.cooldown_base)
    assert validator.stats()["cooling_down"] == 1
    clock.advance(DEFAULT_POLICY.cooldown_base)
    issue(validator, clock)  # cooldown over


# -------------------------------------------------------------------------- concurrency


def test_lock_not_held_during_recomputation(tmp_path, clock, engine):
    """A reveal blocked inside `row_fn` neither blocks other calls nor lets a second
    reveal of the same challenge run."""
    entered, release = threading.Event(), threading.Event()

    def slow_rows(seed: str, i: int, n: int, rows):
        entered.set()
        assert release.wait(10)
        return row_digests_of(seed, i, n, rows)

    v = make_validator(tmp_path, clock, ValidatorConfig(max_open_per_worker=10),
                       row_fn=slow_rows)
    ch, work, com = committed_challenge(v, clock, engine)
    req = honest_reveal(ch, work, com)
    result: list = []
    t = threading.Thread(target=lambda: result.append(v.reveal(ch.challenge_id, req)))
    t.start()
    try:
        assert entered.wait(10)
        issue(v, clock, OTHER_KEY)  # the validator is not locked
        assert v.stats()["open"] == 2
        with pytest.raises(ChallengeUsed, match="being audited"):
            v.reveal(ch.challenge_id, req)
    finally:
        release.set()
        t.join(10)
    assert result and result[0][1].accepted
    assert v.reveal(ch.challenge_id, req) == result[0]


def test_challenge_signing_runs_unlocked_and_the_open_bound_still_holds(tmp_path, clock,
                                                                         monkeypatch):
    """Two requests of one worker with one open slot left, both signing their challenge at
    once (so neither holds the lock): exactly one gets it, the other is refused 429."""
    import hashcloud.node.validator as validator_module

    real_issue = validator_module.issue_challenge
    both_signing = threading.Barrier(2, timeout=10)

    def slow_issue(*args, **kwargs):
        both_signing.wait()  # only reachable by both if phase 1 released the lock
        return real_issue(*args, **kwargs)

    monkeypatch.setattr(validator_module, "issue_challenge", slow_issue)
    v = make_validator(tmp_path, clock, ValidatorConfig(max_open_per_worker=1))
    requests = [challenge_request(WORKER_KEY, clock, time_ms=int(clock() * 1000) + k)
                for k in range(2)]
    results: list[object] = []

    def ask(req: ChallengeRequest) -> None:
        try:
            results.append(v.issue(req, HEAD_HEIGHT, HEAD_HASH, IP))
        except RateLimited as exc:
            results.append(exc)

    threads = [threading.Thread(target=ask, args=(req,)) for req in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(type(r).__name__ for r in results) == ["ChallengeResponse", "RateLimited"]
    assert v.open_challenges(WORKER_KEY.public_key.address) == 1
    assert v.stats()["issued"] == 1 and v.stats()["rate_limited"] == 1


def test_error_classes_map_to_http_statuses():
    assert {
        cls.__name__: http_status(
            cls("x", 1.0, 2.0) if cls is CoolingDown
            else cls("x", 1.0) if cls is RateLimited else cls("x")
        )
        for cls in (
            ChallengeNotFound,
            ChallengeExpired,
            ChallengeUsed,
            RateLimited,
            CoolingDown,
            RequestRefused,
            CommitRefused,
            RevealRefused,
            AuditFailed,
            MalformedReveal,
            RevealUnauthorized,
            StorageUnavailable,
        )
    } == {
        "ChallengeNotFound": 404,
        "ChallengeExpired": 410,
        "ChallengeUsed": 409,
        "RateLimited": 429,
        "CoolingDown": 429,
        "RequestRefused": 422,
        "CommitRefused": 422,
        "RevealRefused": 422,
        "AuditFailed": 422,
        "MalformedReveal": 400,
        "RevealUnauthorized": 403,
        "StorageUnavailable": 503,
    }
    assert issubclass(ValidatorError, Exception)


# --------------------------------------------------------------------------- statistics


def fake_leaf(seed: str, i: int, n: int) -> bytes:
    """Stand-in for SPEC 1's leaf, for the statistical test only: microseconds per leaf."""
    return hashlib.sha256(f"{seed}:{i}:{n}".encode()).digest()


def test_partial_miner_caught_at_predicted_rate(tmp_path, clock):
    """A miner computing only a fraction f = 0.7 of the leaves honestly (garbage with valid
    Merkle paths elsewhere) is caught at the rate SPEC 3 predicts.

    Uses the injectable `leaf_fn` with a fast fake leaf (`fake_leaf`, a SHA-256 of the seed
    and index) so 240 rounds take about a second; the validator logic under test (index
    draw, inclusion checks, audit subset, comparison) is the production code. Each round
    uses a fresh worker so the adaptive policy keeps m = base_m; the node audits in `full`
    mode (whole leaves, through `leaf_fn`). For round r with X_r forged
    among the s drawn samples, the catch probability is p_r = 1 - C(s-X_r, m)/C(s, m); the
    number of catches must be within 4 standard errors of sum p_r (fixed seeds throughout).
    """
    rounds, loops, f = 240, 1500, 0.7
    v = make_validator(tmp_path, clock, ValidatorConfig(max_open_per_worker=1,
                                                        audit_mode="full"),
                       leaf_fn=fake_leaf, rng=random.Random(2024))
    miner_rng = random.Random(99)
    s = sample_count(loops)
    m = DEFAULT_POLICY.base_m
    assert (s, m) == (15, 3)
    predicted, variance, caught, forged_total = 0.0, 0.0, 0, 0
    for r in range(rounds):
        key = PrivateKey(10_000 + r)
        ch = issue(v, clock, key, ip=f"10.0.{r // 250}.{r % 250}").challenge
        honest = [miner_rng.random() < f for _ in range(loops)]
        leaves = [
            fake_leaf(ch.seed, i, N) if ok else miner_rng.randbytes(32)
            for i, ok in enumerate(honest)
        ]
        tree = MerkleTree(leaves)
        clock.advance(1)
        com = v.commit(
            ch.challenge_id,
            commit_request(
                key,
                ch.challenge_id,
                ch.seed,
                loops=loops,
                merkle_root=to_phex(tree.root),
                compute_time=0.5,
            ),
        )
        x = sum(not honest[i] for i in com.indices)
        forged_total += x
        p = p_detect(s, x, m)
        predicted += p
        variance += p * (1 - p)
        try:
            _, out = v.reveal(ch.challenge_id,
                              reveal_request(ch, tree, leaves, com.indices, com.audit, key=key))
        except AuditFailed as exc:
            assert x > 0 and "does not match its recomputation" in str(exc)
            caught += 1
        else:
            assert out.audited == m
    # Sanity: the draw saw about the 30 % forged fraction.
    assert abs(forged_total / (rounds * s) - (1 - f)) < 0.05
    tolerance = 4 * math.sqrt(variance)
    assert abs(caught - predicted) <= tolerance, (caught, predicted, tolerance)
    assert v.stats()["rejected"] == caught and v.stats()["accepted"] == rounds - caught


# --------------------------------------------------------------------------- payout address


def test_payout_address_is_signed_in_the_commit_and_kept_in_the_receipt(validator, clock,
                                                                        engine):
    # SPEC 6 v1.1: the commit names a payout address under the worker's signature; the
    # node keeps it with the commitment and signs it into the receipt.
    payout = OTHER_KEY.public_key.address
    ch = issue(validator, clock).challenge
    work = mine(engine, ch.seed)
    clock.advance(5)
    plain = commit_request(WORKER_KEY, ch.challenge_id, ch.seed, loops=work.loops,
                           merkle_root=work.merkle_root)
    # The default-payout signature does not cover another payout: refused, round kept open.
    forged = plain.model_copy(update={"payout_address": payout})
    with pytest.raises(CommitRefused, match="device_signature"):
        validator.commit(ch.challenge_id, forged)
    msg = commit_message(ch.challenge_id, ch.seed, N, WORKER_KEY.public_key.address,
                         work.loops, plain.compute_time, work.merkle_root, payout)
    signed = plain.model_copy(update={"payout_address": payout,
                                      "device_signature": sign(WORKER_KEY, msg)})
    com = validator.commit(ch.challenge_id, signed)
    receipt, resp = validator.reveal(ch.challenge_id, honest_reveal(ch, work, com), IP)
    assert resp.accepted and receipt.payout_address == payout
    assert receipt.worker_address == WORKER_KEY.public_key.address
    assert decode_receipt(resp.receipt) == receipt
    verify_receipt(receipt, [NODE_KEY.public_key.hex()], CHAIN)


def test_default_payout_is_the_worker(validator, clock, engine):
    ch, work, com = committed_challenge(validator, clock, engine)
    receipt, _ = validator.reveal(ch.challenge_id, honest_reveal(ch, work, com), IP)
    assert receipt.payout_address == WORKER_KEY.public_key.address

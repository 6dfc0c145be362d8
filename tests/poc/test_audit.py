"""The one SPEC 3 audit (`poc.audit`): commitment sanity checks, reveal checks, recomputation,
indices signature and receipt matching, each refusing exactly what it must."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import MerkleTree
from hashcloud.crypto.signatures import ChainDomain, sign
from hashcloud.engine.gemm import compute_leaf, leaf_hash, loop_seed
from hashcloud.engine.rows import loop_output
from hashcloud.errors import (
    AuditError,
    AuditFailed,
    CommitRefused,
    InvalidReceipt,
    InvalidSignature,
    MalformedReveal,
    RevealUnauthorized,
)
from hashcloud.poc.audit import (
    COMPUTE_TIME_SLACK,
    DEVICE_PEAK_FLOPS,
    Commitment,
    RevealedSample,
    audit_samples,
    check_commitment,
    check_inclusion,
    check_indices_signature,
    check_outputs,
    check_receipt,
    check_reveal_shape,
    check_reveal_signature,
    check_revealed_indices,
    check_rows,
    device_peak_flops,
    recompute_leaves,
)
from hashcloud.poc.challenge import indices_signing_bytes, reveal_signing_bytes
from hashcloud.poc.plan import AuditPlan, draw_plan
from hashcloud.poc.receipt import sign_receipt
from hashcloud.types import to_phex

WORKER = PrivateKey(0xB0B)
NODE = PrivateKey(0xA11CE)
CHAIN = ChainDomain("test-chain", "0123456789abcdef")
SEED = "ab" * 32
N = 64
LOOPS = 12


@pytest.fixture(scope="module")
def leaves() -> list[bytes]:
    return [compute_leaf(SEED, i, N) for i in range(LOOPS)]


@pytest.fixture(scope="module")
def tree(leaves) -> MerkleTree:
    return MerkleTree(leaves)


def _commitment(root: bytes, **changes) -> Commitment:
    base = Commitment("1f" * 16, SEED, N, WORKER.public_key.address, LOOPS, 2.0, root, "numpy")
    return dataclasses.replace(base, **changes)


def _samples(tree: MerkleTree, leaves: list[bytes], indices: list[int]) -> list[RevealedSample]:
    return [RevealedSample(i, leaves[i], tuple(tree.audit_path(i))) for i in indices]


# ------------------------------------------------------------------------- commitment


def test_honest_commitment_passes_and_reports_rate(tree):
    c = _commitment(tree.root)
    rate, peak = check_commitment(c, WORKER.public_key, sign(WORKER, c.message()), elapsed=3.0)
    assert rate == pytest.approx(LOOPS * 2 * N**3 / 2.0)
    assert peak == DEVICE_PEAK_FLOPS["numpy"]


def test_commit_message_is_spec4_form(tree):
    c = _commitment(tree.root)
    assert c.message() == (
        f"hc/commit/v1|{'1f' * 16}|{SEED}|{N}|{WORKER.public_key.address}|{LOOPS}|2000|"
        f"{to_phex(tree.root)}"
    ).encode()


@pytest.mark.parametrize(
    "change",
    [
        {"loops": LOOPS + 1},
        {"compute_time": 2.5},
        {"merkle_root": b"\x01" * 32},
        {"seed": "cd" * 32},
        {"challenge_id": "2f" * 16},
    ],
)
def test_signature_covers_every_committed_field(tree, change):
    signed = _commitment(tree.root)
    sig = sign(WORKER, signed.message())
    with pytest.raises(CommitRefused, match="device_signature"):
        check_commitment(_commitment(tree.root, **change), WORKER.public_key, sig)


def test_another_workers_key_is_refused(tree):
    c = _commitment(tree.root)
    other = PrivateKey(7)
    with pytest.raises(CommitRefused, match="does not belong"):
        check_commitment(c, other.public_key, sign(other, c.message()))


def test_compute_time_longer_than_elapsed_is_refused(tree):
    c = _commitment(tree.root, compute_time=10.0)
    sig = sign(WORKER, c.message())
    check_commitment(c, WORKER.public_key, sig, elapsed=10.0 - COMPUTE_TIME_SLACK)
    with pytest.raises(CommitRefused, match="exceeds"):
        check_commitment(c, WORKER.public_key, sig, elapsed=8.9)


def test_rate_above_peak_and_unknown_backend_are_refused(tree):
    fast = _commitment(tree.root, loops=10**9, compute_time=0.001)
    with pytest.raises(CommitRefused, match="above the numpy peak"):
        check_commitment(fast, WORKER.public_key, sign(WORKER, fast.message()))
    odd = _commitment(tree.root, backend="abacus")
    with pytest.raises(CommitRefused, match="unknown backend"):
        check_commitment(odd, WORKER.public_key, sign(WORKER, odd.message()))
    with pytest.raises(CommitRefused):
        device_peak_flops("abacus")


# ----------------------------------------------------------------------------- reveal


def test_revealed_indices_must_be_the_drawn_ones_in_order(tree, leaves):
    samples = _samples(tree, leaves, [1, 5, 9])
    check_revealed_indices(samples, [1, 5, 9])
    for drawn in ([1, 9, 5], [1, 5], [1, 5, 9, 11]):
        with pytest.raises(MalformedReveal):  # v1.1: malformed, the challenge stays open
            check_revealed_indices(samples, drawn)


def test_inclusion_names_the_bad_index(tree, leaves):
    samples = _samples(tree, leaves, [0, 6, 11])
    check_inclusion(samples, tree.root, LOOPS)
    bad = [samples[0], dataclasses.replace(samples[1], leaf=b"\x00" * 32), samples[2]]
    with pytest.raises(AuditFailed, match="index 6: inclusion proof failed"):
        check_inclusion(bad, tree.root, LOOPS)
    with pytest.raises(AuditFailed):  # the tree size is bound by the proof (RFC 9162)
        check_inclusion(samples, tree.root, LOOPS + 1)


def test_recompute_checks_only_the_chosen_positions(tree, leaves):
    forged = [RevealedSample(i, b"\x07" * 32, ()) for i in (2, 3)]
    samples = _samples(tree, leaves, [1]) + forged
    recompute_leaves(SEED, N, samples, [0])
    with pytest.raises(AuditFailed, match="index 2: leaf does not match"):
        recompute_leaves(SEED, N, samples, [2, 1])  # sorted: position 1 (index 2) first


@settings(max_examples=25, deadline=None)
@given(forged=st.sets(st.integers(0, LOOPS - 1), min_size=1), audited=st.data())
def test_recompute_catches_any_audited_forgery(forged, audited):
    leaves = [b"\x00" * 32 if i in forged else compute_leaf(SEED, i, N) for i in range(LOOPS)]
    samples = [RevealedSample(i, leaves[i], ()) for i in range(LOOPS)]
    which = audited.draw(st.sets(st.integers(0, LOOPS - 1), min_size=1))
    if which & forged:
        with pytest.raises(AuditFailed):
            recompute_leaves(SEED, N, samples, which)
    else:
        recompute_leaves(SEED, N, samples, which)


# ------------------------------------------------------------------ node signatures


def test_indices_signature(tree):
    indices = [1, 5, 9]
    msg = indices_signing_bytes(CHAIN, "1f" * 16, tree.root, LOOPS, indices)
    sig = sign(NODE, msg)
    check_indices_signature(NODE.public_key, CHAIN, "1f" * 16, tree.root, LOOPS, indices, sig)
    with pytest.raises(AuditError, match="does not verify"):
        check_indices_signature(NODE.public_key, CHAIN, "1f" * 16, tree.root, LOOPS,
                                [1, 5, 10], sig)
    with pytest.raises(AuditError, match="does not verify"):
        check_indices_signature(WORKER.public_key, CHAIN, "1f" * 16, tree.root, LOOPS,
                                indices, sig)
    with pytest.raises(AuditError, match="outside the committed range"):
        check_indices_signature(NODE.public_key, CHAIN, "1f" * 16, tree.root, 9, indices, sig)


def _receipt(chain_id: str | None = None, **changes):
    domain = CHAIN if chain_id is None else ChainDomain(chain_id, CHAIN.genesis)
    fields = dict(
        domain=domain, task_id="1f" * 16, worker_address=WORKER.public_key.address, seed=SEED,
        n=N, loops=LOOPS, merkle_root="cd" * 32, compute_time_ms=2000, samples=10, audited=3,
        issued_height=1, accepted_at=1_700_000_000_000, key=NODE,
    )
    fields.update(changes)
    return sign_receipt(**fields)


def _match(receipt, **changes):
    expected = dict(domain=CHAIN, task_id="1f" * 16, worker_address=WORKER.public_key.address,
                    merkle_root=b"\xcd" * 32, loops=LOOPS, seed=SEED, n=N)
    expected.update(changes)
    return check_receipt(receipt, [NODE.public_key.hex()], **expected)


def test_receipt_matching_accepts_the_round():
    r = _receipt()
    assert _match(r) is r
    assert _match(r, seed=None, n=None) is r  # a SUBMIT_RESULT payload knows neither


@pytest.mark.parametrize(
    "field,value",
    [
        ("task_id", "2f" * 16),
        ("worker_address", PrivateKey(5).public_key.address),
        ("merkle_root", b"\xce" * 32),
        ("loops", LOOPS + 1),
        ("seed", "cd" * 32),
        ("n", 128),
    ],
)
def test_receipt_matching_names_the_field(field, value):
    with pytest.raises(AuditError, match=f"receipt does not match the round's {field}"):
        _match(_receipt(), **{field: value})


def test_receipt_of_another_chain_or_signer_is_refused():
    with pytest.raises(InvalidReceipt, match="is for chain other"):
        _match(_receipt(chain_id="other"))
    with pytest.raises(InvalidReceipt, match="not a PoC validator"):
        check_receipt(_receipt(), [WORKER.public_key.hex()], domain=CHAIN, task_id="1f" * 16,
                      worker_address=WORKER.public_key.address, merkle_root=b"\xcd" * 32,
                      loops=LOOPS)
    forged = _receipt().model_copy(update={"loops": LOOPS + 1})
    with pytest.raises(InvalidSignature):
        _match(forged, loops=LOOPS + 1)


# ------------------------------------------------------------- v1.1: signed reveals, rows

ROW_N = 64


def _revealed_with_outputs(tree, leaves, indices, outputs):
    return [RevealedSample(i, leaves[i], tuple(tree.audit_path(i)), outputs.get(i))
            for i in indices]


@pytest.fixture(scope="module")
def outputs() -> dict[int, bytes]:
    return {i: loop_output(SEED, i, N) for i in range(LOOPS)}


def test_reveal_signature_binds_worker_and_every_sample(tree, leaves, outputs):
    samples = _revealed_with_outputs(tree, leaves, [1, 5, 9], {5: outputs[5]})
    message = reveal_signing_bytes(CHAIN, "1f" * 16, tree.root,
                                   [(s.index, s.leaf, s.output, s.path) for s in samples])
    sig = sign(WORKER, message)
    check_reveal_signature(WORKER.public_key, CHAIN, "1f" * 16, tree.root, samples, sig)
    with pytest.raises(RevealUnauthorized):  # a third party's signature
        check_reveal_signature(WORKER.public_key, CHAIN, "1f" * 16, tree.root, samples,
                               sign(PrivateKey(7), message))
    changed = [samples[0], dataclasses.replace(samples[1], output=outputs[6]), samples[2]]
    with pytest.raises(RevealUnauthorized):  # the output is covered (through its hash)
        check_reveal_signature(WORKER.public_key, CHAIN, "1f" * 16, tree.root, changed, sig)
    path = list(samples[0].path)
    path[0] = bytes(32)
    tampered = [dataclasses.replace(samples[0], path=tuple(path)), *samples[1:]]
    with pytest.raises(RevealUnauthorized):  # and the path: an altered copy cannot burn it
        check_reveal_signature(WORKER.public_key, CHAIN, "1f" * 16, tree.root, tampered, sig)
    for other in (ChainDomain("other", CHAIN.genesis), ChainDomain(CHAIN.chain_id, "0" * 16)):
        with pytest.raises(RevealUnauthorized):  # and so is the chain: id and genesis
            check_reveal_signature(WORKER.public_key, other, "1f" * 16, tree.root, samples,
                                   sig)


def test_reveal_shape(tree, leaves, outputs):
    plan = AuditPlan(mode="rows", audited=[5], rows=[[0, 3]])
    good = _revealed_with_outputs(tree, leaves, [1, 5, 9], {5: outputs[5]})
    check_reveal_shape(good, [1, 5, 9], plan, N)
    no_output = _revealed_with_outputs(tree, leaves, [1, 5, 9], {})
    with pytest.raises(MalformedReveal, match="index 5: an audited sample needs its output"):
        check_reveal_shape(no_output, [1, 5, 9], plan, N)
    check_reveal_shape(no_output, [1, 5, 9], AuditPlan(mode="full", audited=[5], rows=[]), N)
    short = _revealed_with_outputs(tree, leaves, [1, 5, 9], {5: outputs[5][:-8]})
    with pytest.raises(MalformedReveal, match="must be 512 bytes"):
        check_reveal_shape(short, [1, 5, 9], plan, N)
    with pytest.raises(MalformedReveal):
        check_reveal_shape(good, [1, 5, 8], plan, N)


def test_outputs_must_hash_to_their_leaves(tree, leaves, outputs):
    check_outputs(SEED, _revealed_with_outputs(tree, leaves, [2, 3], outputs))
    swapped = _revealed_with_outputs(tree, leaves, [2, 3], {2: outputs[3]})
    with pytest.raises(AuditFailed, match="index 2: output does not hash to the leaf"):
        check_outputs(SEED, swapped)


def test_row_audit_names_the_wrong_row(tree, leaves, outputs):
    out = bytearray(outputs[4])
    out[8 * 7] ^= 1  # row 7's digest
    bad = RevealedSample(4, leaves[4], (), bytes(out))
    check_rows(SEED, N, bad, [0, 1, 2])  # rows that are right pass
    with pytest.raises(AuditFailed, match="index 4: row 7 digest does not match"):
        check_rows(SEED, N, bad, [3, 7, 9])


def test_audit_samples_rows_and_full(tree, leaves, outputs):
    samples = _revealed_with_outputs(tree, leaves, [1, 5, 9], {5: outputs[5], 9: outputs[9]})
    audit_samples(SEED, N, samples, AuditPlan(mode="rows", audited=[5, 9], rows=[[0], [63]]))
    audit_samples(SEED, N, samples, AuditPlan(mode="full", audited=[1, 9], rows=[]))
    forged = [samples[0], dataclasses.replace(samples[1], leaf=b"\x00" * 32), samples[2]]
    with pytest.raises(AuditFailed, match="index 5"):
        audit_samples(SEED, N, forged, AuditPlan(mode="full", audited=[5], rows=[]))
    with pytest.raises(MalformedReveal):
        audit_samples(SEED, N, samples, AuditPlan(mode="rows", audited=[2], rows=[[0]]))


def test_row_audit_detection_matches_the_hypergeometric_rate():
    """A miner whose committed output has a fraction rho of correct row digests survives one
    audited sample with probability C(rho n, k) / C(n, k) (SPEC 3 v1.1). Seeded, 600 trials;
    tolerance 4 standard errors."""
    import math
    import random

    n, k, correct = ROW_N, 4, 48  # rho = 0.75: P(survive) = C(48,4)/C(64,4) = 0.306
    honest = loop_output(SEED, 0, n)
    leaf = leaf_hash(loop_seed(SEED, 0), honest)
    rng = random.Random(2024)
    trials, survived = 600, 0
    for _ in range(trials):
        wrong = rng.sample(range(n), n - correct)  # the rows this loop skipped
        out = bytearray(honest)
        for r in wrong:
            out[8 * r] ^= 0xFF
        sample = RevealedSample(0, leaf, (), bytes(out))
        plan = draw_plan([0], 1, n, k=k, rng=rng)
        try:
            check_rows(SEED, n, sample, plan.rows[0])
            survived += 1
        except AuditFailed:
            pass
    predicted = math.comb(correct, k) / math.comb(n, k)
    se = math.sqrt(predicted * (1 - predicted) / trials)
    assert abs(survived / trials - predicted) <= 4 * se, (survived / trials, predicted)

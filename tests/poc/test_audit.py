"""The one SPEC 3 audit (`poc.audit`): commitment sanity checks, reveal checks, recomputation,
indices signature and receipt matching, each refusing exactly what it must."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import MerkleTree
from hashcloud.crypto.signatures import sign
from hashcloud.engine.gemm import compute_leaf
from hashcloud.errors import (
    AuditError,
    AuditFailed,
    CommitRefused,
    InvalidReceipt,
    InvalidSignature,
    RevealRefused,
)
from hashcloud.poc.audit import (
    COMPUTE_TIME_SLACK,
    DEVICE_PEAK_FLOPS,
    Commitment,
    RevealedSample,
    check_commitment,
    check_inclusion,
    check_indices_signature,
    check_receipt,
    check_revealed_indices,
    device_peak_flops,
    recompute_leaves,
)
from hashcloud.poc.challenge import indices_signing_bytes
from hashcloud.poc.receipt import sign_receipt
from hashcloud.types import to_phex

WORKER = PrivateKey(0xB0B)
NODE = PrivateKey(0xA11CE)
CHAIN = "test-chain"
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
        with pytest.raises(RevealRefused):
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


def _receipt(**changes):
    fields = dict(
        chain_id=CHAIN, task_id="1f" * 16, worker_address=WORKER.public_key.address, seed=SEED,
        n=N, loops=LOOPS, merkle_root="cd" * 32, compute_time_ms=2000, samples=10, audited=3,
        issued_height=1, accepted_at=1_700_000_000_000, key=NODE,
    )
    fields.update(changes)
    return sign_receipt(**fields)


def _match(receipt, **changes):
    expected = dict(chain_id=CHAIN, task_id="1f" * 16, worker_address=WORKER.public_key.address,
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
        check_receipt(_receipt(), [WORKER.public_key.hex()], chain_id=CHAIN, task_id="1f" * 16,
                      worker_address=WORKER.public_key.address, merkle_root=b"\xcd" * 32,
                      loops=LOOPS)
    forged = _receipt().model_copy(update={"loops": LOOPS + 1})
    with pytest.raises(InvalidSignature):
        _match(forged, loops=LOOPS + 1)

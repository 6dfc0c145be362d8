"""Checking a proof file alone (SPEC 4, 7 `verify` and `audit PROOF`).

`verify_proof` runs every check SPEC 7 lists for `hashcloud verify` through the one audit
(`poc.audit`: inclusion, recomputation, indices signature, receipt matching) and returns a
report naming each check, so the CLI can show what was checked and what failed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from hashcloud.crypto.keys import PublicKey
from hashcloud.crypto.signatures import verify
from hashcloud.engine.gemm import compute_leaf
from hashcloud.errors import HashCloudError, ProofError
from hashcloud.poc.audit import (
    LeafFn,
    check_inclusion,
    check_indices_signature,
    check_receipt,
    recompute_leaves,
)
from hashcloud.poc.challenge import Challenge, verify_challenge
from hashcloud.poc.detection import p_detect
from hashcloud.poc.proof import ProofFile
from hashcloud.poc.receipt import decode_receipt
from hashcloud.poc.sampling import DEFAULT_S_MAX, check_stratified, offline_indices, sample_count
from hashcloud.types import describe_validation_error

__all__ = ["Check", "VerificationReport", "check_receipt_matches_proof", "verify_proof"]


@dataclass
class Check:
    """One named verification step and its outcome."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class VerificationReport:
    """What `verify_proof` checked, what failed, and the detection probability achieved."""

    checks: list[Check] = field(default_factory=list)
    recomputed: list[int] = field(default_factory=list)
    samples: int = 0
    p_detect_one_forged: float = 0.0
    p_detect_10pct_forged: float = 0.0

    @property
    def valid(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    @property
    def errors(self) -> list[str]:
        """`name: detail` of each failed check."""
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]

    def add(self, name: str, fn: Callable[[], str | None]) -> bool:
        """Run `fn`; a HashCloudError marks the check failed with its message."""
        try:
            detail = fn() or ""
        except HashCloudError as exc:
            self.checks.append(Check(name, False, str(exc)))
            return False
        self.checks.append(Check(name, True, detail))
        return True


def _check_indices(proof: ProofFile) -> str:
    s = sample_count(proof.loops, proof.node.s_max if proof.node else DEFAULT_S_MAX)
    indices = [smp.index for smp in proof.samples]
    if len(indices) < s:
        raise ProofError(f"{len(indices)} samples, SPEC 3 requires s = {s} for {proof.loops} loops")
    if len(indices) > s:
        raise ProofError(f"{len(indices)} samples, expected exactly s = {s}")
    if len(set(indices)) != len(indices):
        raise ProofError("duplicate sample indices")
    if any(i >= proof.loops for i in indices):
        raise ProofError(f"sample index out of range [0, {proof.loops})")
    if proof.offline:
        expected = offline_indices(proof.merkle_root, proof.loops, s)
        if indices != expected:
            raise ProofError("sample indices are not the offline derivation of merkle_root")
        return f"{s} indices match the offline derivation"
    check_stratified(indices, proof.loops, s)
    return f"{s} indices, one per stratum"


def _check_inclusion(proof: ProofFile) -> str:
    check_inclusion(proof.revealed(), proof.merkle_root, proof.loops)
    return f"{len(proof.samples)} inclusion proofs verify against the root"


def _recompute(proof: ProofFile, which: Sequence[int], leaf_fn: LeafFn) -> str:
    samples = proof.revealed()
    position = {smp.index: j for j, smp in enumerate(samples)}
    recompute_leaves(proof.seed, proof.n, samples, [position[i] for i in which], leaf_fn)
    return f"{len(which)} leaves recomputed and equal"


def _challenge_of(proof: ProofFile) -> Challenge:
    """The node challenge a proof answers (pydantic-validated: 16-byte id, 32-byte seed)."""
    assert proof.challenge is not None and proof.token is not None
    return Challenge(
        challenge_id=proof.challenge_id, seed=proof.seed, n=proof.n,
        worker_address=proof.worker_address, issued_height=proof.challenge.issued_height,
        block_hash=proof.challenge.block_hash, expiry=proof.challenge.expiry,
        token=proof.token,
    )


def _node_checks(proof: ProofFile, report: VerificationReport) -> None:
    """Token, indices signature and receipt, checked with the key the proof names."""
    if proof.offline:

        def offline_fields() -> str:
            if proof.token is not None or proof.receipt is not None:
                raise ProofError("an offline proof carries no token or receipt")
            return "offline proof (never rewarded: its indices can be ground)"

        report.add("offline", offline_fields)
        return
    if proof.token is None or proof.node is None or proof.challenge is None:
        report.add(
            "node signatures",
            lambda: (_ for _ in ()).throw(
                ProofError("a node-issued proof needs token, node and challenge")
            ),
        )
        return
    node_key = PublicKey(proof.node.public_key)
    chain_id = proof.node.chain_id

    def token() -> str:
        try:
            ch = _challenge_of(proof)
        except ValidationError as exc:
            raise ProofError(f"not a node challenge: {describe_validation_error(exc)}") from None
        verify_challenge(ch, node_key, chain_id)
        return f"signed by node {proof.node.public_key.hex()[:12]}... on {chain_id}"

    def indices_sig() -> str:
        if proof.indices_signature is None:
            raise ProofError("missing indices_signature")
        check_indices_signature(node_key, chain_id, proof.challenge_id,
                                proof.merkle_root, proof.loops,
                                [s.index for s in proof.samples],
                                proof.indices_signature)
        return "sample indices were drawn by the node"

    report.add("challenge token", token)
    report.add("indices signature", indices_sig)
    if proof.receipt is not None:
        report.add("receipt", lambda: check_receipt_matches_proof(proof, node_key))


def check_receipt_matches_proof(proof: ProofFile, node_key: PublicKey) -> str:
    """Raise unless the proof's receipt is the node's signature over exactly this round."""
    assert proof.receipt is not None and proof.node is not None
    r = check_receipt(
        decode_receipt(proof.receipt),
        [node_key.hex()],
        chain_id=proof.node.chain_id,
        task_id=proof.challenge_id,
        worker_address=proof.worker_address,
        merkle_root=proof.merkle_root,
        loops=proof.loops,
        seed=proof.seed,
        n=proof.n,
    )
    return f"accepted by the node after auditing {r.audited} of {r.samples} samples"


def verify_proof(
    proof: ProofFile,
    audit: int | None = None,
    *,
    leaf_fn: LeafFn = compute_leaf,
    rng_seed: int | None = None,
) -> VerificationReport:
    """Check a proof file alone (SPEC 7 `verify`): schema was checked by loading; here the
    address, `device_signature`, indices, every inclusion proof, recomputation of `audit`
    sample leaves (None: all) and the node's signatures where present."""
    report = VerificationReport(samples=len(proof.samples))
    pub = PublicKey(proof.public_key)

    def address() -> str:
        if pub.address != proof.worker_address:
            raise ProofError("worker_address is not the address of public_key")
        return proof.worker_address

    report.add("worker address", address)
    report.add(
        "device signature",
        lambda: (
            verify(pub, proof.commit_bytes(), proof.device_signature)
            or "commit signed by worker"
        ),
    )
    indices_ok = report.add("sample indices", lambda: _check_indices(proof))
    report.add("inclusion proofs", lambda: _check_inclusion(proof))
    _node_checks(proof, report)
    indices = [smp.index for smp in proof.samples]
    if indices_ok or len(set(indices)) == len(indices):
        k = len(indices) if audit is None else max(0, min(audit, len(indices)))
        which = (
            sorted(random.Random(rng_seed).sample(indices, k))
            if k < len(indices)
            else sorted(indices)
        )
        report.recomputed = which
        report.add("recomputation", lambda: _recompute(proof, which, leaf_fn))
        s = len(indices)
        report.p_detect_one_forged = p_detect(s, 1, k) if s else 0.0
        report.p_detect_10pct_forged = p_detect(s, max(1, math.ceil(0.1 * s)), k) if s else 0.0
    return report

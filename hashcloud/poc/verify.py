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
from hashcloud.engine.rows import loop_leaf, row_digests_of
from hashcloud.errors import HashCloudError, ProofError
from hashcloud.params import DEFAULT_AUDIT_ROWS
from hashcloud.poc.audit import (
    LeafFn,
    RevealedSample,
    RowFn,
    audit_samples,
    check_commitment,
    check_inclusion,
    check_indices_signature,
    check_outputs,
    check_receipt,
    check_sample_indices,
    recompute_leaves,
)
from hashcloud.poc.challenge import Challenge, verify_challenge
from hashcloud.poc.detection import p_detect
from hashcloud.poc.plan import AuditPlan, offline_rows, rows_per_sample
from hashcloud.poc.proof import ProofFile
from hashcloud.poc.receipt import decode_receipt
from hashcloud.poc.sampling import DEFAULT_S_MAX, sample_count
from hashcloud.types import describe_validation_error

__all__ = [
    "Check",
    "VerificationReport",
    "check_receipt_matches_proof",
    "verifier_plan",
    "verify_proof",
]


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
    check_sample_indices(indices, proof.loops, s,
                         offline_root=proof.merkle_root if proof.offline else None)
    if proof.offline:
        return f"{s} indices match the offline derivation"
    return f"{s} indices, one per stratum"


def _check_inclusion(proof: ProofFile, samples: Sequence[RevealedSample]) -> str:
    check_inclusion(samples, proof.merkle_root, proof.loops)
    return f"{len(proof.samples)} inclusion proofs verify against the root"


def _check_outputs(proof: ProofFile, samples: Sequence[RevealedSample]) -> str:
    with_output = [smp for smp in samples if smp.output is not None]
    missing = [smp.index for smp in proof.samples if smp.output is None and (
        proof.offline  # v1.1 offline proofs carry every output (v1 ones none: not checked)
        or (proof.audit is not None and proof.audit.mode == "rows"
            and smp.index in proof.audit.audited))]
    if missing:
        raise ProofError(f"index {missing[0]}: the sample has no output (SPEC 3 v1.1: "
                         + ("offline proofs carry every output)" if proof.offline
                            else "audited samples of a row audit carry their output)"))
    bad = [smp.index for smp in with_output if len(smp.output or b"") != 8 * proof.n]
    if bad:
        raise ProofError(f"index {bad[0]}: output must be {8 * proof.n} bytes")
    check_outputs(proof.seed, with_output)
    return f"{len(with_output)} outputs hash to their leaves"


def verifier_plan(proof: ProofFile, which: Sequence[int], *, rows: int | None, full: bool,
                  rng: random.Random) -> tuple[list[int], AuditPlan | None]:
    """What `verify` recomputes (SPEC 3 v1.1, 7): whole leaves of the samples in `which`
    without an output (all of them with `full`), and a row audit of the others: `rows` rows
    each (default `DEFAULT_AUDIT_ROWS`), Fiat-Shamir rows for an offline proof (SPEC 3),
    rows from `rng` for a node-issued one. Returns (whole-leaf indices, row plan or None)."""
    outputs = {smp.index for smp in proof.samples if smp.output is not None}
    whole = sorted(i for i in which if full or i not in outputs)
    by_rows = sorted(i for i in which if not full and i in outputs)
    if not by_rows:
        return whole, None
    k = DEFAULT_AUDIT_ROWS if rows is None else rows
    drawn = [offline_rows(proof.merkle_root, i, proof.n, k) if proof.offline
             else sorted(rng.sample(range(proof.n), rows_per_sample(proof.n, k)))
             for i in by_rows]
    return whole, AuditPlan(mode="rows", audited=by_rows, rows=drawn)


def _recompute(proof: ProofFile, samples: Sequence[RevealedSample], whole: Sequence[int],
               plan: AuditPlan | None, leaf_fn: LeafFn, row_fn: RowFn) -> str:
    position = {smp.index: j for j, smp in enumerate(samples)}
    recompute_leaves(proof.seed, proof.n, samples, [position[i] for i in whole], leaf_fn)
    done = [f"{len(whole)} leaves recomputed and equal"] if whole or plan is None else []
    if plan is not None:
        audit_samples(proof.seed, proof.n, samples, plan, leaf_fn=leaf_fn, row_fn=row_fn)
        done.append(f"{len(plan.rows[0])} rows of {len(plan.audited)} outputs recomputed "
                    "and equal")
    return "; ".join(done)


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
    domain = proof.node.domain()

    def token() -> str:
        try:
            ch = _challenge_of(proof)
        except ValidationError as exc:
            raise ProofError(f"not a node challenge: {describe_validation_error(exc)}") from None
        verify_challenge(ch, node_key, domain)
        return f"signed by node {proof.node.public_key.hex()[:12]}... on {domain}"

    def indices_sig() -> str:
        if proof.indices_signature is None:
            raise ProofError("missing indices_signature")
        indices = [s.index for s in proof.samples]
        check_indices_signature(node_key, domain, proof.challenge_id,
                                proof.merkle_root, proof.loops, indices,
                                proof.indices_signature, proof.audit)
        if proof.audit is None:
            return "sample indices were drawn by the node (v1: no audit plan)"
        proof.audit.check_fits(indices, proof.n)
        return "sample indices and audit plan were drawn by the node"

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
        domain=proof.node.domain(),
        task_id=proof.challenge_id,
        worker_address=proof.worker_address,
        merkle_root=proof.merkle_root,
        loops=proof.loops,
        seed=proof.seed,
        n=proof.n,
        payout_address=proof.payout_address or proof.worker_address,  # SPEC 6 v1.1
    )
    return f"accepted by the node after auditing {r.audited} of {r.samples} samples"


def verify_proof(
    proof: ProofFile,
    audit: int | None = None,
    *,
    rows: int | None = None,
    full: bool = False,
    leaf_fn: LeafFn = loop_leaf,
    row_fn: RowFn = row_digests_of,
    rng_seed: int | None = None,
) -> VerificationReport:
    """Check a proof file alone (SPEC 7 `verify`): schema was checked by loading; here the
    address, `device_signature`, indices, every inclusion proof, every output against its
    leaf, the recomputation of `audit` samples (None: all) and the node's signatures where
    present. Samples with an output get a row audit of `rows` rows (SPEC 3 v1.1), the others
    (all, with `full`) a whole-leaf recomputation. `rng_seed` makes the choices repeatable
    (default: the OS CSPRNG)."""
    rng = random.Random(rng_seed) if rng_seed is not None else random.SystemRandom()
    report = VerificationReport(samples=len(proof.samples))

    def commitment() -> str:
        rate, peak = check_commitment(proof.commitment(), PublicKey(proof.public_key),
                                      proof.device_signature)
        return (f"signed by {proof.worker_address}; claimed {rate:.3e} FLOP/s, within the "
                f"{proof.device.backend} peak of {peak:.3e}")

    report.add("commitment", commitment)
    indices_ok = report.add("sample indices", lambda: _check_indices(proof))
    samples = proof.revealed()  # the audit's bytes form, built once
    report.add("inclusion proofs", lambda: _check_inclusion(proof, samples))
    if any(smp.output is not None for smp in proof.samples) or (
            proof.audit is not None and proof.audit.mode == "rows"):
        report.add("outputs", lambda: _check_outputs(proof, samples))
    _node_checks(proof, report)
    indices = [smp.index for smp in proof.samples]
    if indices_ok or len(set(indices)) == len(indices):
        k = len(indices) if audit is None else max(0, min(audit, len(indices)))
        which = sorted(rng.sample(indices, k)) if k < len(indices) else sorted(indices)
        report.recomputed = which
        whole, plan = verifier_plan(proof, which, rows=rows, full=full, rng=rng)
        report.add("recomputation",
                   lambda: _recompute(proof, samples, whole, plan, leaf_fn, row_fn))
        s = len(indices)
        report.p_detect_one_forged = p_detect(s, 1, k) if s else 0.0
        report.p_detect_10pct_forged = p_detect(s, max(1, math.ceil(0.1 * s)), k) if s else 0.0
    return report

"""The SPEC 3 audit, in one place: every party that checks a round calls these functions.

- the node's PoC validator: `check_commitment` (sanity checks before anything is drawn);
  for the reveal `check_reveal_signature` and `check_reveal_shape` (refusals that leave the
  challenge open), then `check_inclusion`, `check_outputs` and `audit_samples` (row audits
  or whole-leaf recomputation, SPEC 3 v1.1: failures burn the round);
- `verify` / `audit` of a proof file: the same checks on the file's samples, plus
  `check_indices_signature` and `check_receipt`;
- the miner: `check_indices_signature` on the node's answer and `check_receipt` on its receipt;
- the chain (SUBMIT_RESULT, SPEC 6): `check_receipt`.

Everything here takes bytes (roots, leaves, paths, signatures) and raises an `AuditError`
subclass naming what failed; converting the hex of JSON, HTTP and files is the caller's edge.
Pure: no clock, no I/O, no randomness (callers pass `elapsed` and the indices to recompute).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from hashcloud.crypto.keys import PublicKey
from hashcloud.crypto.merkle import verify_inclusion
from hashcloud.crypto.signatures import ChainDomain, verify
from hashcloud.engine.device import max_gpu_peak
from hashcloud.engine.gemm import leaf_hash, loop_seed
from hashcloud.engine.rows import loop_leaf, row_digests_of
from hashcloud.errors import (
    AuditError,
    AuditFailed,
    CommitRefused,
    InvalidReceipt,
    InvalidSignature,
    MalformedReveal,
    MerkleError,
    ProofError,
    RevealUnauthorized,
)
from hashcloud.poc.audit_policy import claimed_rate
from hashcloud.poc.challenge import commit_message, indices_signing_bytes, reveal_signing_bytes
from hashcloud.poc.plan import AuditPlan
from hashcloud.poc.receipt import Receipt, verify_receipt
from hashcloud.poc.sampling import check_stratified, offline_indices

__all__ = [
    "COMPUTE_TIME_SLACK",
    "DEVICE_PEAK_FLOPS",
    "Commitment",
    "LeafFn",
    "RevealedSample",
    "RowFn",
    "audit_samples",
    "check_commitment",
    "check_inclusion",
    "check_indices_signature",
    "check_outputs",
    "check_receipt",
    "check_reveal_shape",
    "check_reveal_signature",
    "check_revealed_indices",
    "check_rows",
    "check_sample_indices",
    "device_peak_flops",
    "recompute_leaves",
]

LeafFn = Callable[[str, int, int], bytes]
"""`leaf_fn(seed, index, n) -> leaf_i` (SPEC 1); `engine.rows.loop_leaf` by default."""

RowFn = Callable[[str, int, int, Sequence[int]], Sequence[int]]
"""`row_fn(seed, index, n, rows) -> [d_r for r in rows]` (SPEC 1.7); `row_digests_of`."""

#: Slack (seconds) allowed on `compute_time <= now - issue time` for clock granularity.
COMPUTE_TIME_SLACK = 1.0

#: Conservative upper bounds of exact-GEMM FLOP/s per declared backend (SPEC 3: "claimed rate
#: not above the declared device's peak"). Declared devices are untrusted, so the bound is
#: per backend, above any real device of that kind: "numpy" (any CPU) 20 TFLOP/s, a big
#: many-core CPU with wide FMA units; "cupy" 1.5x the fastest dense exact-GEMM rate of the
#: engine's GPU peak table (a B200's INT8 tensor cores, 4.5 POPS: every exact path of SPEC
#: 1.6, INT8 included, is at most that), the head-room covering boost clocks above spec.
DEVICE_PEAK_FLOPS: dict[str, float] = {"numpy": 20e12, "cupy": 1.5 * max_gpu_peak()}


@dataclass(frozen=True, slots=True)
class Commitment:
    """What a worker commits to for one challenge (SPEC 3, 4), in bytes form.

    `message()` is the SPEC 4 commit message its `device_signature` covers."""

    challenge_id: str
    seed: str
    n: int
    worker_address: str
    loops: int
    compute_time: float
    merkle_root: bytes
    backend: str
    payout_address: str | None = None
    """Who the chain credits the work to (SPEC 6 v1.1); None: the worker address."""

    def message(self) -> bytes:
        """The SPEC 4 commit message its `device_signature` covers (with the payout address
        when it is not the worker's, SPEC 6 v1.1)."""
        return commit_message(self.challenge_id, self.seed, self.n, self.worker_address,
                              self.loops, self.compute_time, self.merkle_root,
                              self.payout_address)


@dataclass(frozen=True, slots=True)
class RevealedSample:
    """One revealed sample: loop `index`, its `leaf`, RFC 6962 audit `path` (SPEC 2, 3) and,
    for audited samples of a row audit, the loop's whole `output` (8n bytes, SPEC 3 v1.1)."""

    index: int
    leaf: bytes
    path: tuple[bytes, ...]
    output: bytes | None = None


def device_peak_flops(backend: str) -> float:
    """Upper bound of FLOP/s for a declared backend (SPEC 3); CommitRefused if unknown."""
    try:
        return DEVICE_PEAK_FLOPS[backend]
    except KeyError:
        known = ", ".join(sorted(DEVICE_PEAK_FLOPS))
        raise CommitRefused(f"unknown backend {backend!r} (known: {known})") from None


def check_commitment(
    commitment: Commitment,
    worker_key: PublicKey,
    device_signature: bytes,
    *,
    elapsed: float | None = None,
) -> tuple[float, float]:
    """The SPEC 3 sanity checks of a commitment, before any recomputation.

    The worker key owns `worker_address`; `device_signature` is its signature over the
    commit message; `1 <= loops`; with `elapsed` (seconds since the challenge was issued,
    known to the node only), `compute_time <= elapsed + COMPUTE_TIME_SLACK`; the backend
    is known and the claimed rate `loops * 2 * n^3 / compute_time` is not above its peak.
    Returns `(claimed_rate, peak)`; raises CommitRefused naming the failed check.
    """
    c = commitment
    if worker_key.address != c.worker_address:
        raise CommitRefused("public key does not belong to worker_address")
    if c.loops < 1:
        raise CommitRefused("loops must be at least 1")
    try:
        verify(worker_key, c.message(), device_signature)
    except InvalidSignature:
        raise CommitRefused(
            "device_signature is not the challenge worker's signature over the commitment"
        ) from None
    if elapsed is not None and c.compute_time > elapsed + COMPUTE_TIME_SLACK:
        raise CommitRefused(
            f"compute_time {c.compute_time:.3f} s exceeds the {elapsed:.3f} s elapsed "
            "since the challenge was issued"
        )
    peak = device_peak_flops(c.backend)
    rate = claimed_rate(c.loops, c.n, c.compute_time) if c.compute_time > 0 else float("inf")
    if rate > peak:
        raise CommitRefused(
            f"claimed rate {rate:.3e} FLOP/s is above the {c.backend} peak of {peak:.3e} FLOP/s"
        )
    return rate, peak


def check_sample_indices(
    indices: Sequence[int], loops: int, s: int, *, offline_root: bytes | None = None
) -> None:
    """The sample indices of a proof are a legal draw (SPEC 3): exactly `s` distinct indices
    in `[0, loops)`, one per stratum in order, or, for an offline proof (`offline_root`), the
    Fiat-Shamir derivation from its root. ProofError naming what is wrong."""
    if len(indices) < s:
        raise ProofError(f"{len(indices)} samples, SPEC 3 requires s = {s} for {loops} loops")
    if len(indices) > s:
        raise ProofError(f"{len(indices)} samples, expected exactly s = {s}")
    if len(set(indices)) != len(indices):
        raise ProofError("duplicate sample indices")
    if any(i >= loops for i in indices):
        raise ProofError(f"sample index out of range [0, {loops})")
    if offline_root is not None:
        if list(indices) != offline_indices(offline_root, loops, s):
            raise ProofError("sample indices are not the offline derivation of merkle_root")
        return
    check_stratified(indices, loops, s)


def check_revealed_indices(samples: Sequence[RevealedSample], drawn: Sequence[int]) -> None:
    """The samples are exactly the drawn indices, in order (SPEC 3); MalformedReveal if not
    (v1.1: a malformed reveal leaves the challenge open)."""
    if tuple(smp.index for smp in samples) != tuple(drawn):
        raise MalformedReveal(
            f"revealed indices are not the {len(drawn)} drawn indices in order")


def check_reveal_signature(
    worker_key: PublicKey,
    domain: ChainDomain,
    challenge_id: str,
    merkle_root: bytes,
    samples: Sequence[RevealedSample],
    signature: bytes,
) -> None:
    """The reveal is signed by the challenge's worker (SPEC 3 v1.1); RevealUnauthorized if
    not, which must leave the challenge untouched."""
    message = reveal_signing_bytes(domain, challenge_id, merkle_root,
                                   [(s.index, s.leaf, s.output, s.path) for s in samples])
    try:
        verify(worker_key, message, signature)
    except InvalidSignature:
        raise RevealUnauthorized(
            "the reveal is not signed by the challenge's worker") from None


def check_reveal_shape(
    samples: Sequence[RevealedSample], drawn: Sequence[int], plan: AuditPlan, n: int
) -> None:
    """A reveal has the shape the node drew (SPEC 3 v1.1): exactly the drawn indices in
    order, an `output` of `8n` bytes wherever one is given, and one for every audited sample
    of a `rows` plan. MalformedReveal otherwise (the challenge stays open)."""
    check_revealed_indices(samples, drawn)
    size = 8 * n
    for smp in samples:
        if smp.output is not None and len(smp.output) != size:
            raise MalformedReveal(f"index {smp.index}: output must be {size} bytes")
    if plan.mode == "rows":
        missing = [smp.index for smp in samples
                   if smp.index in plan.audited and smp.output is None]
        if missing:
            raise MalformedReveal(f"index {missing[0]}: an audited sample needs its output")


def check_outputs(seed: str, samples: Sequence[RevealedSample]) -> None:
    """Every output given hashes to its leaf: `SHA256(loop_seed || output) == leaf` (SPEC 1.9,
    3 v1.1); AuditFailed naming the index. Cheap: run it before any recomputation."""
    for smp in samples:
        if smp.output is not None and leaf_hash(loop_seed(seed, smp.index), smp.output) != smp.leaf:
            raise AuditFailed(f"index {smp.index}: output does not hash to the leaf")


def check_rows(
    seed: str, n: int, sample: RevealedSample, rows: Sequence[int], row_fn: RowFn = row_digests_of
) -> None:
    """Row audit of one sample (SPEC 3 v1.1): recompute the digest of each row `r` (all of B,
    row `r` of A) and compare it with the `r`-th u64 of the sample's output (already checked
    against the leaf); AuditFailed naming the index and the first wrong row."""
    if sample.output is None:
        raise MalformedReveal(f"index {sample.index}: an audited sample needs its output")
    digests = row_fn(seed, sample.index, n, list(rows))
    for r, digest in zip(rows, digests, strict=True):
        if int.from_bytes(sample.output[8 * r:8 * r + 8], "little") != digest:
            raise AuditFailed(
                f"index {sample.index}: row {r} digest does not match its recomputation")


def audit_samples(
    seed: str,
    n: int,
    samples: Sequence[RevealedSample],
    plan: AuditPlan,
    *,
    leaf_fn: LeafFn = loop_leaf,
    row_fn: RowFn = row_digests_of,
) -> None:
    """The expensive step of an audit (SPEC 3 v1.1), sample by sample in plan order, stopping
    at the first failure: a `rows` plan recomputes the drawn rows of each audited sample (its
    output must already be checked against its leaf: `check_outputs`), a `full` plan its
    whole leaf. AuditFailed naming the index."""
    by_index = {smp.index: j for j, smp in enumerate(samples)}
    if any(i not in by_index for i in plan.audited):
        raise MalformedReveal("the audit plan names a sample that was not revealed")
    if plan.mode == "full":
        recompute_leaves(seed, n, samples, [by_index[i] for i in plan.audited], leaf_fn)
        return
    for index, rows in zip(plan.audited, plan.rows, strict=True):
        check_rows(seed, n, samples[by_index[index]], rows, row_fn)


def check_inclusion(samples: Sequence[RevealedSample], merkle_root: bytes, loops: int) -> None:
    """Every sample's audit path proves its leaf at its index in a tree of `loops` leaves
    with root `merkle_root` (SPEC 2, RFC 9162 2.1.3.2); AuditFailed naming the index."""
    for smp in samples:
        try:
            verify_inclusion(smp.leaf, smp.index, loops, list(smp.path), merkle_root)
        except MerkleError as exc:
            raise AuditFailed(f"index {smp.index}: inclusion proof failed: {exc}") from None


def recompute_leaves(
    seed: str,
    n: int,
    samples: Sequence[RevealedSample],
    which: Collection[int],
    leaf_fn: LeafFn = loop_leaf,
) -> None:
    """Recompute the leaves of `samples[j]` for each position `j` in `which` (SPEC 1, 3) and
    compare; AuditFailed naming the first index whose leaf differs."""
    for j in sorted(which):
        smp = samples[j]
        if leaf_fn(seed, smp.index, n) != smp.leaf:
            raise AuditFailed(f"index {smp.index}: leaf does not match its recomputation")


def check_indices_signature(
    node_key: PublicKey,
    domain: ChainDomain,
    challenge_id: str,
    merkle_root: bytes,
    loops: int,
    indices: Sequence[int],
    signature: bytes,
    plan: AuditPlan | None = None,
) -> None:
    """The node signed exactly these sample `indices` and audit `plan` for this commitment
    (SPEC 3, v1.1; `plan=None`: a v1 signature over the indices only); also that each index
    lies in `[0, loops)`. AuditError otherwise."""
    if any(not 0 <= i < loops for i in indices):
        raise AuditError("sample indices lie outside the committed range")
    message = indices_signing_bytes(domain, challenge_id, merkle_root, loops, indices, plan)
    try:
        verify(node_key, message, signature)
    except InvalidSignature:
        raise AuditError("the node's signature on the sample indices does not verify") from None


def check_receipt(
    receipt: Receipt,
    allowed_validator_keys: Collection[str],
    *,
    domain: ChainDomain,
    task_id: str,
    worker_address: str,
    merkle_root: bytes,
    loops: int,
    seed: str | None = None,
    n: int | None = None,
    payout_address: str | None = None,
) -> Receipt:
    """Receipt matching (SPEC 3, 6): signed by an allowed PoC validator and about exactly
    this round. `seed`, `n` and `payout_address` are checked when the caller knows them (a
    SUBMIT_RESULT payload carries none of them). Raises InvalidReceipt / InvalidSignature /
    AuditError naming the first field that differs; returns the receipt."""
    if receipt.chain_id != domain.chain_id:
        raise InvalidReceipt(f"receipt is for chain {receipt.chain_id}, not {domain.chain_id}")
    verify_receipt(receipt, allowed_validator_keys, domain)
    expected: list[tuple[str, object, object]] = [
        ("task_id", task_id, receipt.task_id),
        ("worker_address", worker_address, receipt.worker_address),
        ("merkle_root", merkle_root, receipt.merkle_root),
        ("loops", loops, receipt.loops),
    ]
    if seed is not None:
        expected.append(("seed", seed, receipt.seed))
    if n is not None:
        expected.append(("n", n, receipt.n))
    if payout_address is not None:
        expected.append(("payout_address", payout_address, receipt.payout_address))
    for name, ours, theirs in expected:
        if ours != theirs:
            raise AuditError(f"receipt does not match the round's {name}")
    return receipt

"""The SPEC 3 audit, in one place: every party that checks a round calls these functions.

- the node's PoC validator: `check_commitment` (sanity checks before anything is drawn),
  `check_revealed_indices`, `check_inclusion`, `recompute_leaves` (the reveal);
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
from hashcloud.crypto.signatures import verify
from hashcloud.engine.gemm import compute_leaf
from hashcloud.errors import (
    AuditError,
    AuditFailed,
    CommitRefused,
    InvalidReceipt,
    InvalidSignature,
    MerkleError,
    RevealRefused,
)
from hashcloud.poc.audit_policy import claimed_rate
from hashcloud.poc.challenge import commit_message, indices_signing_bytes
from hashcloud.poc.receipt import Receipt, verify_receipt

__all__ = [
    "COMPUTE_TIME_SLACK",
    "DEVICE_PEAK_FLOPS",
    "Commitment",
    "LeafFn",
    "RevealedSample",
    "check_commitment",
    "check_inclusion",
    "check_indices_signature",
    "check_receipt",
    "check_revealed_indices",
    "device_peak_flops",
    "recompute_leaves",
]

LeafFn = Callable[[str, int, int], bytes]
"""`leaf_fn(seed, index, n) -> leaf_i` (SPEC 1); `compute_leaf` by default."""

#: Slack (seconds) allowed on `compute_time <= now - issue time` for clock granularity.
COMPUTE_TIME_SLACK = 1.0

#: Conservative upper bounds of exact-GEMM FLOP/s per declared backend (SPEC 3: "claimed rate
#: not above the declared device's peak"). Declared devices are untrusted, so the bound is
#: per backend, above any real device of that kind: "numpy" (any CPU) 20 TFLOP/s, a big
#: many-core CPU with wide FMA units; "cupy" 2.5 PFLOP/s, above any current GPU's dense
#: TF32/BF16 tensor-core rate (every exact path of SPEC 1.6 is at most that).
DEVICE_PEAK_FLOPS: dict[str, float] = {"numpy": 20e12, "cupy": 2.5e15}


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

    def message(self) -> bytes:
        """The SPEC 4 commit message its `device_signature` covers."""
        return commit_message(self.challenge_id, self.seed, self.n, self.worker_address,
                              self.loops, self.compute_time, self.merkle_root)


@dataclass(frozen=True, slots=True)
class RevealedSample:
    """One revealed sample: loop `index`, its `leaf` and RFC 6962 audit `path` (SPEC 2, 3)."""

    index: int
    leaf: bytes
    path: tuple[bytes, ...]


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


def check_revealed_indices(samples: Sequence[RevealedSample], drawn: Sequence[int]) -> None:
    """The samples are exactly the drawn indices, in order (SPEC 3); RevealRefused if not."""
    if tuple(smp.index for smp in samples) != tuple(drawn):
        raise RevealRefused(f"revealed indices are not the {len(drawn)} drawn indices in order")


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
    leaf_fn: LeafFn = compute_leaf,
) -> None:
    """Recompute the leaves of `samples[j]` for each position `j` in `which` (SPEC 1, 3) and
    compare; AuditFailed naming the first index whose leaf differs."""
    for j in sorted(which):
        smp = samples[j]
        if leaf_fn(seed, smp.index, n) != smp.leaf:
            raise AuditFailed(f"index {smp.index}: leaf does not match its recomputation")


def check_indices_signature(
    node_key: PublicKey,
    chain_id: str,
    challenge_id: str,
    merkle_root: bytes,
    loops: int,
    indices: Sequence[int],
    signature: bytes,
) -> None:
    """The node signed exactly these sample `indices` for this commitment (SPEC 3); also
    that each index lies in `[0, loops)`. AuditError otherwise."""
    if any(not 0 <= i < loops for i in indices):
        raise AuditError("sample indices lie outside the committed range")
    message = indices_signing_bytes(chain_id, challenge_id, merkle_root, loops, indices)
    try:
        verify(node_key, message, signature)
    except InvalidSignature:
        raise AuditError("the node's signature on the sample indices does not verify") from None


def check_receipt(
    receipt: Receipt,
    allowed_validator_keys: Collection[str],
    *,
    chain_id: str,
    task_id: str,
    worker_address: str,
    merkle_root: bytes,
    loops: int,
    seed: str | None = None,
    n: int | None = None,
) -> Receipt:
    """Receipt matching (SPEC 3, 6): signed by an allowed PoC validator and about exactly
    this round. `seed` and `n` are checked when the caller knows them (a SUBMIT_RESULT
    payload carries neither). Raises InvalidReceipt / InvalidSignature / AuditError naming
    the first field that differs; returns the receipt."""
    if receipt.chain_id != chain_id:
        raise InvalidReceipt(f"receipt is for chain {receipt.chain_id}, not {chain_id}")
    verify_receipt(receipt, allowed_validator_keys)
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
    for name, ours, theirs in expected:
        if ours != theirs:
            raise AuditError(f"receipt does not match the round's {name}")
    return receipt

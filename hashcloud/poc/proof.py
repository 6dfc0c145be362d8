"""Proof files (SPEC 4): the model, strict loading, building, and offline verification.

A proof file is JSON; `load_proof` separates *unreadable / not a proof* (UnreadableInput, exit 2)
from *a proof that is invalid* (ProofError, exit 1). `verify_proof` runs every check SPEC 7
lists for `hashcloud verify` and returns a report naming each check, so the CLI can show
what was checked and what failed.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from hashcloud.crypto.keys import PublicKey
from hashcloud.crypto.merkle import MerkleTree, verify_inclusion
from hashcloud.crypto.signatures import verify
from hashcloud.engine.gemm import compute_leaf
from hashcloud.errors import HashCloudError, ProofError, UnreadableInput
from hashcloud.poc.challenge import (
    Challenge,
    commit_message,
    indices_signing_bytes,
    verify_challenge,
)
from hashcloud.poc.detection import p_detect
from hashcloud.poc.sampling import (
    DEFAULT_S_MAX,
    check_stratified,
    offline_indices,
    sample_count,
)
from hashcloud.types import (
    AddressStr,
    Hex32,
    MatrixSize,
    PHex32,
    PHexBytes,
    PHexPubKey,
    PHexSig,
    describe_validation_error,
    from_phex,
    to_phex,
)

PROOF_VERSION = 1
MAX_COMPUTE_TIME = 366 * 86_400.0  # a year: keeps round(compute_time * 1000) finite
LowerHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]+$")]
"""Seeds and offline challenge ids: any non-empty lower-case hex (SPEC 1, 4)."""
MAX_PROOF_BYTES = 64 * 1024 * 1024
MAX_PATH_LEN = 64


class Sample(BaseModel):
    """One revealed sample `{index, leaf, proof}`; `proof` is the audit path, leaf first."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    index: int = Field(ge=0)
    leaf: PHex32
    proof: list[PHex32] = Field(max_length=MAX_PATH_LEN)


class DeviceInfo(BaseModel):
    """The device that ran the work: a human name and the backend (numpy/cupy)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    name: str = Field(max_length=200)
    backend: str = Field(max_length=32)


class NodeInfo(BaseModel):
    """Which node issued the challenge: its chain id, public key (hex, no prefix) and the
    `s_max` it samples with (SPEC 3), so `verify` knows the expected sample count."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    chain_id: str = Field(pattern=r"^[a-z0-9-]{1,32}$")
    public_key: str = Field(pattern=r"^0[23][0-9a-f]{64}$")
    s_max: int = Field(default=DEFAULT_S_MAX, ge=1, le=4096)


class ChallengeInfo(BaseModel):
    """The challenge fields beyond those at the top level, needed to re-check the token."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    issued_height: int = Field(ge=0)
    block_hash: Hex32
    expiry: int = Field(ge=0)


class ProofFile(BaseModel):
    """The SPEC 4 proof file. Unknown keys are ignored; missing or mistyped ones are errors.

    Node-issued proofs also carry `node` (chain id + public key), `challenge` (the remaining
    challenge fields), `indices_signature` and, once audited, the node's `receipt` (hex of
    the canonical receipt encoding), so `verify` can check the node's signatures offline.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    version: int
    challenge_id: LowerHex
    token: PHexSig | None
    seed: LowerHex
    n: MatrixSize
    worker_address: AddressStr
    loops: int = Field(ge=1, le=2**40)
    compute_time: float = Field(ge=0, le=MAX_COMPUTE_TIME, allow_inf_nan=False)
    merkle_root: PHex32
    samples: list[Sample] = Field(min_length=1)
    public_key: PHexPubKey
    device_signature: PHexSig
    device: DeviceInfo
    offline: bool
    indices_signature: PHexSig | None = None
    receipt: PHexBytes | None = None
    node: NodeInfo | None = None
    challenge: ChallengeInfo | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_int_one(cls, value: object) -> int:
        # `true` and `1.0` compare equal to 1 but are mistyped (SPEC 4).
        if type(value) is not int or value != PROOF_VERSION:
            raise ValueError(f"version must be the integer {PROOF_VERSION}")
        return value

    def commit_bytes(self) -> bytes:
        """The SPEC 4 commit message covered by `device_signature`."""
        return commit_message(
            self.challenge_id,
            self.seed,
            self.n,
            self.worker_address,
            self.loops,
            self.compute_time,
            self.merkle_root,
        )

    def to_json(self) -> str:
        """Pretty JSON for writing to disk (None fields kept, so the file is explicit)."""
        return self.model_dump_json(indent=1) + "\n"


def parse_proof(obj: object) -> ProofFile:
    """Validate a decoded JSON value as a proof file, raising ProofError with the field."""
    if not isinstance(obj, dict):
        raise UnreadableInput("not a proof file: the JSON value is not an object")
    if "version" not in obj:
        raise UnreadableInput("not a proof file: no 'version' key")
    try:
        return ProofFile.model_validate(obj)
    except ValidationError as exc:
        raise ProofError(f"invalid proof: {describe_validation_error(exc)}") from None


def load_proof(path: Path) -> ProofFile:
    """Read and validate a proof file.

    UnreadableInput if unreadable or not a proof file (CLI exit 2), else ProofError (exit 1).
    """
    try:
        size = path.stat().st_size
        if size > MAX_PROOF_BYTES:
            raise UnreadableInput(f"{path}: {size} bytes is too large for a proof file")
        text = path.read_text(encoding="utf-8")
    except UnreadableInput:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableInput(f"cannot read {path}: {exc}") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise UnreadableInput(f"{path} is not JSON: {exc}") from None
    return parse_proof(obj)


def make_samples(tree: MerkleTree, leaves: Sequence[bytes], indices: Sequence[int]) -> list[Sample]:
    """The revealed samples for `indices`: each leaf with its RFC 6962 audit path."""
    return [
        Sample(index=i, leaf=to_phex(leaves[i]), proof=[to_phex(h) for h in tree.audit_path(i)])
        for i in indices
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
    root = from_phex(proof.merkle_root)
    for smp in proof.samples:
        try:
            verify_inclusion(
                from_phex(smp.leaf), smp.index, proof.loops, [from_phex(h) for h in smp.proof], root
            )
        except ProofError as exc:
            raise ProofError(f"sample {smp.index}: {exc}") from None
    return f"{len(proof.samples)} inclusion proofs verify against the root"


def _recompute(
    proof: ProofFile, which: Sequence[int], leaf_fn: Callable[[str, int, int], bytes]
) -> str:
    by_index = {smp.index: smp for smp in proof.samples}
    for i in which:
        if leaf_fn(proof.seed, i, proof.n) != from_phex(by_index[i].leaf):
            raise ProofError(f"leaf {i} does not match its recomputation")
    return f"{len(which)} leaves recomputed and equal"


def _challenge_of(proof: ProofFile) -> Challenge:
    """The node challenge a proof answers (pydantic-validated: 16-byte id, 32-byte seed)."""
    assert proof.challenge is not None and proof.token is not None
    return Challenge(
        challenge_id=proof.challenge_id, seed=proof.seed, n=proof.n,
        worker_address=proof.worker_address, issued_height=proof.challenge.issued_height,
        block_hash=proof.challenge.block_hash, expiry=proof.challenge.expiry,
        token=from_phex(proof.token).hex(),
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
    node_key = PublicKey.from_hex(proof.node.public_key)
    chain_id = proof.node.chain_id

    def token() -> str:
        try:
            ch = _challenge_of(proof)
        except ValidationError as exc:
            raise ProofError(f"not a node challenge: {describe_validation_error(exc)}") from None
        verify_challenge(ch, node_key, chain_id)
        return f"signed by node {proof.node.public_key[:12]}... on {chain_id}"

    def indices_sig() -> str:
        if proof.indices_signature is None:
            raise ProofError("missing indices_signature")
        msg = indices_signing_bytes(
            chain_id,
            proof.challenge_id,
            proof.merkle_root,
            proof.loops,
            [s.index for s in proof.samples],
        )
        verify(node_key, msg, from_phex(proof.indices_signature))
        return "sample indices were drawn by the node"

    report.add("challenge token", token)
    report.add("indices signature", indices_sig)
    if proof.receipt is not None:
        report.add("receipt", lambda: check_receipt_matches_proof(proof, node_key))


def check_receipt_matches_proof(proof: ProofFile, node_key: PublicKey) -> str:
    """Raise unless the proof's receipt is the node's signature over exactly this round."""
    from hashcloud.poc.receipt import decode_receipt, verify_receipt

    assert proof.receipt is not None and proof.node is not None
    r = decode_receipt(from_phex(proof.receipt))
    verify_receipt(r, [node_key.hex()])
    expected = {
        "chain_id": proof.node.chain_id,
        "task_id": proof.challenge_id,
        "worker_address": proof.worker_address,
        "seed": proof.seed,
        "n": proof.n,
        "loops": proof.loops,
        "merkle_root": proof.merkle_root[2:],
    }
    for name, value in expected.items():
        if getattr(r, name) != value:
            raise ProofError(f"receipt {name} does not match the proof")
    return f"accepted by the node after auditing {r.audited} of {r.samples} samples"


def verify_proof(
    proof: ProofFile,
    audit: int | None = None,
    *,
    leaf_fn: Callable[[str, int, int], bytes] = compute_leaf,
    rng_seed: int | None = None,
) -> VerificationReport:
    """Check a proof file alone (SPEC 7 `verify`): schema was checked by loading; here the
    address, `device_signature`, indices, every inclusion proof, recomputation of `audit`
    sample leaves (None: all) and the node's signatures where present."""
    report = VerificationReport(samples=len(proof.samples))
    pub = PublicKey.from_hex(proof.public_key[2:])

    def address() -> str:
        if pub.address != proof.worker_address:
            raise ProofError("worker_address is not the address of public_key")
        return proof.worker_address

    report.add("worker address", address)
    report.add(
        "device signature",
        lambda: (
            verify(pub, proof.commit_bytes(), from_phex(proof.device_signature))
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

"""The proof file (SPEC 4): the model and its strict loading.

A proof file is JSON; `load_proof` separates *unreadable / not a proof* (UnreadableInput,
exit 2) from *a proof that is invalid* (ProofError, exit 1). Checking a proof is
`poc.verify.verify_proof`; building one is the miner's (`poc.round`, `client.round`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from hashcloud.crypto.signatures import ChainDomain
from hashcloud.errors import ProofError, UnreadableInput
from hashcloud.params import MAX_LOOPS, MAX_N, MAX_S_MAX
from hashcloud.poc.audit import Commitment, RevealedSample
from hashcloud.poc.plan import AuditPlan
from hashcloud.poc.sampling import DEFAULT_S_MAX
from hashcloud.types import (
    U64,
    AddressStr,
    ChainId,
    GenesisPrefix,
    Hex32,
    MatrixSize,
    PBytes,
    PHash32,
    PPublicKeyBytes,
    PSignature,
    PublicKeyBytes,
    Seed,
    describe_validation_error,
)

PROOF_VERSION = 1
MAX_COMPUTE_TIME = 366 * 86_400.0  # a year: keeps round(compute_time * 1000) finite
MAX_PROOF_BYTES = 64 * 1024 * 1024
MAX_PATH_LEN = 64


class Sample(BaseModel):
    """One revealed sample `{index, leaf, proof, output?}`: `proof` is the audit path, leaf
    first; `output` the loop's 8n-byte output, which audited samples of a row audit and
    every sample of an offline proof carry (SPEC 3 v1.1, 4)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    index: int = Field(ge=0, lt=MAX_LOOPS)
    leaf: PHash32
    proof: list[PHash32] = Field(max_length=MAX_PATH_LEN)
    output: PBytes | None = Field(default=None, max_length=8 * MAX_N)

    def revealed(self) -> RevealedSample:
        """The sample as the audit takes it."""
        return RevealedSample(self.index, self.leaf, tuple(self.proof), self.output)


class DeviceInfo(BaseModel):
    """The device that ran the work: a human name and the backend (numpy/cupy)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    name: str = Field(max_length=200)
    backend: str = Field(max_length=32)


class IssuerInfo(BaseModel):
    """Which node issued the challenge: its chain id and `genesis` (the first 16 hex digits
    of its genesis block hash: the node's signatures are made under both, SPEC 5 v1.1), its
    public key (hex, no prefix) and the `s_max` it samples with (SPEC 3), so `verify` knows
    the expected sample count."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    chain_id: ChainId
    genesis: GenesisPrefix
    public_key: PublicKeyBytes
    s_max: int = Field(default=DEFAULT_S_MAX, ge=1, le=MAX_S_MAX)

    def domain(self) -> ChainDomain:
        """The signing domain of the issuing chain (SPEC 5 v1.1)."""
        return ChainDomain(self.chain_id, self.genesis)


class ChallengeInfo(BaseModel):
    """The challenge fields beyond those at the top level, needed to re-check the token."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    issued_height: U64
    block_hash: Hex32
    expiry: U64


class ProofFile(BaseModel):
    """The SPEC 4 proof file. Unknown keys are ignored; missing or mistyped ones are errors.

    Node-issued proofs also carry `node` (chain id + public key), `challenge` (the remaining
    challenge fields), `indices_signature` with the `audit` plan it covers (SPEC 3 v1.1) and,
    once audited, the node's `receipt` (hex of the canonical receipt encoding), so `verify`
    can check the node's signatures offline.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    version: int
    challenge_id: Seed
    token: PSignature | None
    seed: Seed
    n: MatrixSize
    worker_address: AddressStr
    loops: int = Field(ge=1, le=MAX_LOOPS)
    compute_time: float = Field(ge=0, le=MAX_COMPUTE_TIME, allow_inf_nan=False)
    merkle_root: PHash32
    samples: list[Sample] = Field(min_length=1, max_length=MAX_S_MAX)
    public_key: PPublicKeyBytes
    device_signature: PSignature
    device: DeviceInfo
    offline: bool
    indices_signature: PSignature | None = None
    audit: AuditPlan | None = None
    receipt: PBytes | None = None
    node: IssuerInfo | None = None
    challenge: ChallengeInfo | None = None
    payout_address: AddressStr | None = None
    """SPEC 6 v1.1: who the work is credited to, signed in the commit (None: the worker)."""

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_int_one(cls, value: object) -> int:
        # `true` and `1.0` compare equal to 1 but are mistyped (SPEC 4).
        if type(value) is not int or value != PROOF_VERSION:
            raise ValueError(f"version must be the integer {PROOF_VERSION}")
        return value

    def commitment(self) -> Commitment:
        """The commitment this proof makes, in the audit's bytes form (SPEC 3, 4)."""
        return Commitment(self.challenge_id, self.seed, self.n, self.worker_address,
                          self.loops, self.compute_time, self.merkle_root,
                          self.device.backend, self.payout_address)

    def revealed(self) -> list[RevealedSample]:
        """The samples in the audit's bytes form."""
        return [smp.revealed() for smp in self.samples]

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



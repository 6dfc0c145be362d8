"""Pydantic models of every object crossing the node's HTTP boundary (SPEC 3, 6, 7).

Requests are strict and forbid unknown fields, so a malformed body is a 422 naming the
field, never a 500. Responses reuse the protocol records where they exist (`Challenge`,
`Genesis`, `BlockHeader`, `Transaction`). Every route answers one of these models, so
`/openapi.json` declares exactly what it sends (issue 11 item 6); clients parse the same
models (`client.http`), ignoring fields a newer node may add.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from hashcloud.chain.block import BlockHeader
from hashcloud.chain.tx import Transaction
from hashcloud.crypto.signatures import ChainDomain
from hashcloud.params import MAX_LOOPS, MAX_S_MAX
from hashcloud.poc.challenge import Challenge
from hashcloud.poc.plan import AuditPlan
from hashcloud.poc.proof import DeviceInfo, Sample
from hashcloud.types import (
    AddressStr,
    Amount,
    Hex32,
    HexBytes,
    MatrixSize,
    PHash32,
    PSignature,
    PublicKeyBytes,
    Signature,
)

MAX_SAMPLES = MAX_S_MAX

MAX_BATCH = 1000
"""Most transactions one `POST /v1/transactions/batch` may carry: the request model's bound
(`TxBatchRequest`, a 422 beyond it, as the document declares) and the service's
(`NodeService.submit_batch`). Its body is also bounded by the app's 1 MiB limit (about
2,000 transfers)."""


_STRICT = ConfigDict(frozen=True, strict=True, extra="forbid")


class _Strict(BaseModel):
    model_config = _STRICT


class ChallengeRequest(_Strict):
    """`POST /v1/challenges`: a worker asks for a challenge, proving it holds its key.

    `signature` is the worker's signature over `challenge_request_bytes` (domain tag, chain
    id, address, n, request time), so nobody can exhaust another worker's open challenges."""

    worker_address: AddressStr
    public_key: PublicKeyBytes
    n: MatrixSize
    request_time_ms: int = Field(ge=0, lt=2**63)
    signature: Signature


class ChallengeResponse(_Strict):
    """The issued challenge plus what a miner needs to check it offline."""

    challenge: Challenge
    chain_id: str
    node_public_key: PublicKeyBytes
    s_max: int


class DeviceModel(DeviceInfo):
    """The declared device of a commitment: the proof file's `DeviceInfo` fields, but an
    HTTP body forbids unknown keys (a proof file ignores them, SPEC 4)."""

    model_config = _STRICT


class CommitRequest(_Strict):
    """`POST /v1/challenges/{id}/commit`: `{loops, compute_time, merkle_root, device}` signed
    by the worker (`device_signature` over the SPEC 4 commit message, `0x` hex forms)."""

    loops: int = Field(ge=1, le=MAX_LOOPS)
    compute_time: float = Field(gt=0, le=86_400, allow_inf_nan=False)
    merkle_root: PHash32
    device: DeviceModel
    device_signature: PSignature
    payout_address: AddressStr | None = None
    """SPEC 6 v1.1: who the work is credited to, covered by `device_signature` (None: the
    worker address)."""


class CommitResponse(_Strict):
    """The sample indices and the audit plan the node drew after the commitment, and its
    signature over both (SPEC 3 v1.1)."""

    challenge_id: str
    indices: list[int]
    audit: AuditPlan
    indices_signature: PSignature


class SampleModel(Sample):
    """One revealed sample `{index, leaf, proof}`: the proof file's `Sample`, but an HTTP
    body forbids unknown keys."""

    model_config = _STRICT


class RevealRequest(_Strict):
    """`POST /v1/challenges/{id}/reveal`: the samples for the indices drawn (audited ones with
    their output in a row audit), signed by the challenge's worker (SPEC 3 v1.1)."""

    samples: list[SampleModel] = Field(min_length=1, max_length=MAX_SAMPLES)
    signature: Signature


class RevealResponse(_Strict):
    """The audit outcome: accepted with the signed receipt (hex of its canonical encoding)."""

    accepted: bool
    receipt: HexBytes
    audited: int
    samples: int
    reward_estimate: int
    """SPEC 6 v1.1: the expected payout (base units) of this work at its epoch's close, were
    no more work to join: `floor(projected pool * W / (epoch work + W))`. An estimate only:
    the claim mints nothing and the epoch's pool is split by all of its work."""
    work: int = 0
    """Work `W = loops * n^3` the claim records for the payout address."""
    payout_address: AddressStr | None = None
    """Who the chain credits the work to (the receipt's payout address)."""


class TxSubmitResponse(_Strict):
    """`POST /v1/transactions` answer."""

    tx_id: Hex32
    status: str


class TxStatus(_Strict):
    """`GET /v1/transactions/{id}`: pending, included (with height), or unknown."""

    tx_id: Hex32
    status: str
    height: int | None = None
    index: int | None = None
    block_hash: str | None = None


class NextNonce(_Strict):
    """`GET /v1/accounts/{address}/next-nonce`: the nonce a new transaction must use."""

    address: AddressStr
    nonce: int = Field(ge=0)


BlockTransaction = create_model(
    "BlockTransaction",
    __config__=_STRICT,
    __doc__="""One transaction of a block object: its id, then every `Transaction` field with
    the same type (`chain.block.block_to_json`), derived from `Transaction` so the two field
    lists cannot drift apart.""",
    tx_id=(Hex32, ...),
    **{name: (field.annotation, field) for name, field in Transaction.model_fields.items()},
)


class BlockJson(_Strict):
    """`GET /v1/blocks/{ref}`: the SPEC 7 block object (`hash`, `header` with every header
    field, `transactions` in block order)."""

    hash: Hex32
    header: BlockHeader
    transactions: list[BlockTransaction]


class HistoryItem(_Strict):
    """One transaction of `GET /v1/accounts/{address}/history` (SPEC 7 v1.1 `history`,
    `node.service.address_history`): what a wallet shows; amounts in base units."""

    tx_id: Hex32
    height: int = Field(ge=1)
    index: int = Field(ge=0)
    timestamp: int = Field(ge=0)
    tx_type: str
    from_address: AddressStr
    to_address: AddressStr | None
    amount: Amount
    fee: Amount
    nonce: int = Field(ge=0)


class HistoryPage(_Strict):
    """One page of history, newest first; `next_before` is the `before` of the next page,
    None once the walk reached genesis."""

    address: AddressStr
    transactions: list[HistoryItem]
    next_before: int | None = Field(ge=1)


class EpochPayout(_Strict):
    """One payout address of a closed epoch: its work, gross `amount`, the claim `fees`
    deducted from it and the `net` credited (SPEC 6 v1.1)."""

    address: AddressStr
    work: int = Field(ge=0)
    amount: Amount
    fees: Amount
    net: Amount


class EpochPending(_Strict):
    """One payout address of the open epoch: its work so far, deferred claim fees and
    estimated net payout at the close (SPEC 6 v1.1)."""

    address: AddressStr
    work: int = Field(ge=0)
    fees: Amount
    estimated_payout: Amount


class ClosedEpoch(_Strict):
    """A closed epoch (`chain.rewards.epoch_view`): pool, total work, what was carried on
    to the next epoch and one page of the payouts per address, in address order (`count`
    in all; `next_after` is the next page's `after`, null after the last)."""

    epoch: int = Field(ge=0)
    first_height: int = Field(ge=0)
    last_height: int = Field(ge=0)
    status: Literal["closed"]
    pool: Amount
    total_work: int = Field(ge=0)
    carried: Amount
    count: int = Field(ge=0)
    next_after: AddressStr | None
    payouts: list[EpochPayout]


class OpenEpoch(_Strict):
    """The open epoch (`chain.rewards.epoch_view`): pool so far, projected pool at its end,
    what was carried in, total work and one page of the pending work per payout address
    (paged like `ClosedEpoch`)."""

    epoch: int = Field(ge=0)
    first_height: int = Field(ge=0)
    last_height: int = Field(ge=0)
    status: Literal["open"]
    pool: Amount
    projected_pool: Amount
    carried_in: Amount
    total_work: int = Field(ge=0)
    count: int = Field(ge=0)
    next_after: AddressStr | None
    pending: list[EpochPending]


EpochView = Annotated[OpenEpoch | ClosedEpoch, Field(discriminator="status")]
"""`GET /v1/epochs/{number}`: an open or a closed epoch, told apart by `status`."""


class AccountInfo(_Strict):
    """`GET /v1/accounts/{address}`: SPEC 7 balance shape."""

    address: AddressStr
    balance: int
    nonce: int
    epoch: int = 0
    """SPEC 6 v1.1: the open epoch, and this payout address's work in it (paid at its close),
    the claim fees deferred to that payout and the estimated net payout."""
    pending_work: int = 0
    pending_fees: int = 0
    estimated_payout: int = 0
    lifetime_work: int = 0
    """SPEC 6 v1.1 worker record: audited work and accepted claims signed by this address."""
    accepted_claims: int = 0


class HeadInfo(_Strict):
    """Chain head summary."""

    height: int
    hash: str
    timestamp: int


class FollowInfo(_Strict):
    """A follower's view of its producer in `GET /v1/info` (SPEC 7 v1.1 followers): `state`
    is `syncing`, `following`, `disconnected` or `refused` (then `reason` says why and the
    follower no longer follows), `producer_height` the producer's last known head."""

    producer: str
    state: str
    producer_height: int | None = None
    imported: int = 0
    head_feed: bool = False
    reason: str | None = None


class NodeInfo(_Strict):
    """`GET /v1/info`. `role` is `producer` (makes blocks) or `follower` (then `follow`)."""

    chain_id: str
    genesis_hash: str
    genesis_block_hash: Hex32
    node_public_key: PublicKeyBytes
    node_address: str
    head: HeadInfo
    block_time_ms: int
    mempool_size: int
    version: str
    role: str = "producer"
    validator: bool = True
    follow: FollowInfo | None = None

    def chain_domain(self) -> ChainDomain:
        """The node's signing domain (SPEC 5 v1.1): chain id + genesis block hash prefix.
        Raises ValueError when the node reports a malformed chain id."""
        return ChainDomain.of(self.chain_id, self.genesis_block_hash)


class BlockRecord(_Strict):
    """One stored block in a range: its height, hash and canonical encoding (hex of the chain
    store payload, SPEC 6), so a follower re-validates exactly the producer's bytes."""

    height: int = Field(ge=0)
    hash: Hex32
    data: str


class BlockRange(_Strict):
    """`GET /v1/blocks?from=H&limit=N`: consecutive blocks from height H (at most N, bounded
    in count and bytes by the node) and the node's head."""

    blocks: list[BlockRecord]
    head: HeadInfo


class TxBatchRequest(_Strict):
    """`POST /v1/transactions/batch`: signed transactions (JSON objects as for
    `POST /v1/transactions`), admitted in order."""

    transactions: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)


class TxBatchResult(_Strict):
    """The outcome of one transaction of a batch: `pending` with its id, or `rejected` with
    the HTTP status a single submission would have got and the reason."""

    status: str
    tx_id: Hex32 | None = None
    code: int | None = None
    detail: str | None = None


class TxBatchResponse(_Strict):
    """`POST /v1/transactions/batch` answer: one result per transaction, in order."""

    results: list[TxBatchResult]
    accepted: int


class ErrorBody(BaseModel):
    """Every error answer of the node (4xx, 503): `{"detail": "<what is wrong>"}`. A schema
    violation (422) names the fields in the one string too (`types.describe_errors`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detail: str

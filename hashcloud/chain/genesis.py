"""Genesis: the chain's founding parameters and its deterministic height-0 block (SPEC 6).

A `Genesis` fixes the chain id (part of every domain tag), the initial allocations, the
proposer keys (`authorities`, proof-of-authority block production), the PoC validator keys
whose receipts the chain pays (`validators`), and the emission schedule (SPEC 6 v1.1):
`subsidy0` base units per block, halved every `halving_interval` blocks, pooled per epoch of
`epoch_length` blocks and paid out pro rata to audited work (`chain.epoch`).

v1 genesis files (immediate rewards, `reward_numerator`/`reward_denominator`) are refused
with a message saying so, not migrated: the schedule changes every state root, so a v1
chain's blocks could not be replayed under it anyway. Start a new chain (`node init`).

`genesis_hash(g)` is `sha256(encode_genesis(g))`; a chain store is bound to it.
Genesis files are JSON (`write_genesis`/`load_genesis`), validated strictly on load.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hashcloud.chain.block import EMPTY_TX_ROOT, Block, BlockHeader, block_hash
from hashcloud.chain.state import State, new_state, state_root
from hashcloud.codec import (
    decode_amount,
    decode_canonical,
    encode_amount,
    encode_canonical,
    expect_array,
)
from hashcloud.crypto.hashing import sha256
from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.crypto.signatures import ChainDomain
from hashcloud.errors import DecodeError, GenesisError, InvalidKey
from hashcloud.fsutil import atomic_replace
from hashcloud.types import (
    MAX_AMOUNT,
    U64,
    AddressStr,
    Amount,
    ChainId,
    PublicKeyHex,
    describe_validation_error,
)

__all__ = [
    "DEFAULT_CHAIN_ID",
    "LOCAL_NODE_ALLOCATION",
    "Genesis",
    "authority_addresses",
    "chain_domain",
    "decode_genesis",
    "encode_genesis",
    "genesis_block",
    "genesis_hash",
    "genesis_state",
    "load_genesis",
    "make_local_genesis",
    "write_genesis",
]

DEFAULT_CHAIN_ID = "hashcloud-local"
GENESIS_FORMAT = 2
"""2: SPEC 6 v1.1 (emission schedule); 1 was v1's immediate reward rate."""
DEFAULT_SUBSIDY0 = 50 * 10**9
DEFAULT_HALVING_INTERVAL = 1_051_200
DEFAULT_EPOCH_LENGTH = 720
_V1_FIELDS = ("reward_numerator", "reward_denominator")
LOCAL_NODE_ALLOCATION = 10**15
"""Initial balance of the node key in `make_local_genesis` (for local transfers)."""


def _check_keys(keys: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Require distinct valid compressed public keys."""
    if len(set(keys)) != len(keys):
        raise ValueError(f"{what} contain a duplicate key")
    for key in keys:
        try:
            PublicKey.from_hex(key)
        except InvalidKey as exc:
            raise ValueError(f"{what} key {key}: {exc}") from None
    return keys


class Genesis(BaseModel):
    """The founding parameters of one chain (SPEC 6)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    chain_id: ChainId
    timestamp: U64
    allocations: dict[AddressStr, Amount] = Field(default_factory=dict)
    authorities: tuple[PublicKeyHex, ...]
    validators: tuple[PublicKeyHex, ...] = ()
    subsidy0: Annotated[int, Field(ge=0, lt=2**64)] = DEFAULT_SUBSIDY0
    halving_interval: Annotated[int, Field(ge=1, lt=2**64)] = DEFAULT_HALVING_INTERVAL
    epoch_length: Annotated[int, Field(ge=1, lt=2**32)] = DEFAULT_EPOCH_LENGTH
    block_time_ms: Annotated[int, Field(ge=1, lt=2**32)] = 2000

    @field_validator("authorities", "validators", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        """Accept lists of keys (stored as immutable tuples)."""
        return tuple(value) if isinstance(value, list) else value

    @field_validator("allocations")
    @classmethod
    def _sorted_allocations(cls, value: dict[str, int]) -> dict[str, int]:
        """Sort by address (one canonical form) and cap the initial supply below 2**96."""
        if sum(value.values()) >= MAX_AMOUNT:
            raise ValueError("allocations add up to 2**96 or more")
        return dict(sorted(value.items()))

    @property
    def initial_supply(self) -> int:
        """The coins that exist before block 1: the allocations' sum (SPEC 6)."""
        return sum(self.allocations.values())

    @field_validator("authorities")
    @classmethod
    def _check_authorities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """At least one proposer; distinct valid keys."""
        if not value:
            raise ValueError("genesis needs at least one authority")
        return _check_keys(value, "authorities")

    @field_validator("validators")
    @classmethod
    def _check_validators(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Distinct valid keys (an empty list means no compute rewards can be claimed)."""
        return _check_keys(value, "validators")


def authority_addresses(genesis: Genesis) -> dict[str, str]:
    """Map each authority's address to its public key hex (who may propose blocks)."""
    return dict(_addresses_of(genesis.authorities))


@lru_cache(maxsize=64)
def _addresses_of(keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`(address, key)` pairs for public keys (cached: checked for every block)."""
    return tuple((PublicKey.from_hex(key).address, key) for key in keys)


def encode_genesis(genesis: Genesis) -> bytes:
    """Canonical msgpack of every genesis field (allocations as sorted pairs)."""
    return encode_canonical([
        GENESIS_FORMAT,
        genesis.chain_id,
        genesis.timestamp,
        [[address, encode_amount(amount)] for address, amount in genesis.allocations.items()],
        list(genesis.authorities),
        list(genesis.validators),
        genesis.block_time_ms,
        genesis.subsidy0,
        genesis.halving_interval,
        genesis.epoch_length,
    ])


def decode_genesis(data: bytes) -> Genesis:
    """Decode `encode_genesis` bytes strictly, raising DecodeError."""
    fields = decode_canonical(data)
    if isinstance(fields, list) and fields and fields[0] == 1:
        raise DecodeError("genesis format 1 (v1 immediate rewards) is no longer supported")
    fields = expect_array(fields, 10, "genesis")
    fmt, chain_id, timestamp, raw_alloc, auth, vals, block_time, s0, halving, epoch = fields
    if fmt != GENESIS_FORMAT:
        raise DecodeError(f"unknown genesis format {fmt!r}")
    if not all(isinstance(x, list) for x in (raw_alloc, auth, vals)):
        raise DecodeError("genesis allocations, authorities and validators must be arrays")
    pairs = [expect_array(p, 2, "allocation") for p in raw_alloc]
    addresses = [p[0] for p in pairs]
    if not all(isinstance(a, str) for a in addresses) or addresses != sorted(set(addresses)):
        raise DecodeError("genesis allocations are not strictly sorted by address")
    try:
        return Genesis(
            chain_id=chain_id,
            timestamp=timestamp,
            allocations={a: decode_amount(v, "allocation") for a, v in pairs},
            authorities=tuple(auth),
            validators=tuple(vals),
            block_time_ms=block_time,
            subsidy0=s0,
            halving_interval=halving,
            epoch_length=epoch,
        )
    except ValidationError as exc:
        raise DecodeError(f"invalid genesis: {describe_validation_error(exc)}") from None


def genesis_hash(genesis: Genesis) -> str:
    """Hex `sha256(encode_genesis(genesis))`: the identity a chain store is bound to."""
    return sha256(encode_genesis(genesis)).hex()


def genesis_state(genesis: Genesis) -> State:
    """The state before block 1: the allocations, epoch 0 open with an empty pool."""
    return new_state(genesis.allocations)


def genesis_block(genesis: Genesis) -> Block:
    """The deterministic height-0 block: no proposer, txs or signature; its `prev_hash` is
    `genesis_hash(genesis)` (nothing precedes it), so the genesis block hash, and with it the
    SPEC 5 v1.1 signing domain `g`, commits to every genesis field (authorities, validators,
    the emission schedule), not only to the timestamp and the allocations' state root."""
    header = BlockHeader(
        height=0,
        prev_hash=genesis_hash(genesis),
        timestamp=genesis.timestamp,
        proposer="",
        tx_root=EMPTY_TX_ROOT,
        state_root=state_root(genesis_state(genesis)),
        compute_root="",
        signature="",
    )
    return Block(header=header, transactions=())


_DOMAINS: dict[int, tuple[Genesis, ChainDomain]] = {}


def chain_domain(genesis: Genesis) -> ChainDomain:
    """The signing domain of the chain `genesis` founds (SPEC 5 v1.1): its chain id and the
    first 16 hex digits of its genesis block hash. Memoised per genesis object (the
    transition asks for every signature it checks); the cache holds the genesis itself, so
    an id is never reused while its entry lives."""
    hit = _DOMAINS.get(id(genesis))
    if hit is not None and hit[0] is genesis:
        return hit[1]
    domain = ChainDomain.of(genesis.chain_id, block_hash(genesis_block(genesis).header))
    if len(_DOMAINS) >= 64:
        _DOMAINS.clear()
    _DOMAINS[id(genesis)] = (genesis, domain)
    return domain


def genesis_to_json(genesis: Genesis) -> dict[str, Any]:
    """The JSON object of a genesis file."""
    return genesis.model_dump(mode="json")


def write_genesis(path: Path | str, genesis: Genesis) -> None:
    """Write `genesis` as JSON to `path` atomically and durably (`fsutil.atomic_replace`):
    a crash leaves the old file or the new one, never half a genesis (SPEC 6)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(genesis_to_json(genesis), indent=2) + "\n"
    atomic_replace(path, text.encode("utf-8"))


def load_genesis(path: Path | str) -> Genesis:
    """Read and validate a genesis JSON file, raising GenesisError with the reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GenesisError(f"genesis file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GenesisError(f"genesis file {path} is unreadable: {exc}") from None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise GenesisError(f"genesis file {path} is not valid JSON: {exc}") from None
    if isinstance(raw, dict) and any(name in raw for name in _V1_FIELDS):
        raise GenesisError(
            f"genesis file {path} is a v1 genesis (immediate rewards: reward_numerator/"
            "reward_denominator); SPEC 6 v1.1 chains pay by an emission schedule "
            "(subsidy0, halving_interval, epoch_length) and a v1 chain cannot be replayed "
            "under it: create a new chain with `hashcloud node init`"
        )
    try:
        return Genesis.model_validate_json(text)
    except ValidationError as exc:
        raise GenesisError(
            f"genesis file {path} is invalid: {describe_validation_error(exc)}"
        ) from None


def make_local_genesis(
    node_key: PrivateKey,
    extra_alloc: dict[str, int] | None = None,
    chain_id: str = DEFAULT_CHAIN_ID,
    timestamp: int = 0,
    subsidy0: int = DEFAULT_SUBSIDY0,
    halving_interval: int = DEFAULT_HALVING_INTERVAL,
    epoch_length: int = DEFAULT_EPOCH_LENGTH,
) -> Genesis:
    """A single-node chain: `node_key` is the sole authority and sole PoC validator.

    The node's address receives `LOCAL_NODE_ALLOCATION` plus anything in `extra_alloc`.
    The default timestamp 0 makes the genesis (and its hash) a function of the key alone.
    """
    public_key = node_key.public_key
    allocations = {public_key.address: LOCAL_NODE_ALLOCATION}
    for address, amount in (extra_alloc or {}).items():
        allocations[address] = allocations.get(address, 0) + amount
    return Genesis(
        chain_id=chain_id,
        timestamp=timestamp,
        allocations=allocations,
        authorities=(public_key.hex(),),
        validators=(public_key.hex(),),
        subsidy0=subsidy0,
        halving_interval=halving_interval,
        epoch_length=epoch_length,
    )

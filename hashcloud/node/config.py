"""Node data directory: genesis, node key, chain store and validator state (SPEC 6, 7).

Layout of `DATA_DIR`: `genesis.json`, `keys/node.json` (the node key, 0600), `chain/` (the
flat-file chain store), `validator/` (audit histories), `mempool.journal`.
`init_data_dir` creates a single-node chain where the node key is the sole block proposer
and PoC validator; `load_data_dir` opens an initialised one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from hashcloud.chain.genesis import (
    DEFAULT_CHAIN_ID,
    Genesis,
    load_genesis,
    make_local_genesis,
    write_genesis,
)
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.keystore import Keystore
from hashcloud.errors import InvalidGenesisOptions, NodeConfigError
from hashcloud.types import describe_validation_error

NODE_KEY_NAME = "node"


@dataclass(frozen=True)
class NodeFiles:
    """Resolved paths and contents of an initialised data directory."""

    data_dir: Path
    genesis: Genesis
    key: PrivateKey

    @property
    def chain_dir(self) -> Path:
        """The chain store directory."""
        return self.data_dir / "chain"

    @property
    def validator_dir(self) -> Path:
        """The PoC validator's persistent state."""
        return self.data_dir

    @property
    def journal_path(self) -> Path:
        """The mempool journal (acknowledged transactions survive a crash)."""
        return self.data_dir / "mempool.journal"


def genesis_path(data_dir: Path) -> Path:
    """Where the genesis file lives."""
    return Path(data_dir) / "genesis.json"


def is_initialised(data_dir: Path) -> bool:
    """True if `data_dir` has a genesis file."""
    return genesis_path(data_dir).exists()


def init_data_dir(data_dir: Path, *, chain_id: str | None = None,
                  allocations: dict[str, int] | None = None,
                  block_time_ms: int | None = None) -> NodeFiles:
    """Create the node key and a single-node genesis in `data_dir` (refuses to overwrite)."""
    data_dir = Path(data_dir)
    if is_initialised(data_dir):
        raise NodeConfigError(f"{data_dir} is already initialised (genesis.json exists)")
    ks = Keystore(data_dir)
    existing = ks.exists(NODE_KEY_NAME)
    key = ks.load(NODE_KEY_NAME) if existing else PrivateKey.generate()
    try:  # validate the whole genesis before anything is written
        genesis = make_local_genesis(key, allocations, chain_id=chain_id or DEFAULT_CHAIN_ID)
        if block_time_ms is not None:
            genesis = Genesis.model_validate({**genesis.model_dump(),
                                              "block_time_ms": block_time_ms})
    except ValidationError as exc:
        raise InvalidGenesisOptions(
            f"invalid genesis: {describe_validation_error(exc)}") from None
    if not existing:
        ks.create(NODE_KEY_NAME, key)
    data_dir.mkdir(parents=True, exist_ok=True)
    write_genesis(genesis_path(data_dir), genesis)
    return NodeFiles(data_dir, genesis, key)


def load_data_dir(data_dir: Path) -> NodeFiles:
    """Open an initialised data directory, checking the node key is a genesis authority."""
    data_dir = Path(data_dir)
    if not is_initialised(data_dir):
        raise NodeConfigError(
            f"{data_dir} is not initialised: run `hashcloud node init --data-dir {data_dir}`")
    genesis = load_genesis(genesis_path(data_dir))
    key = Keystore(data_dir).load(NODE_KEY_NAME)
    pub = key.public_key.hex()
    if pub not in genesis.authorities or pub not in genesis.validators:
        raise NodeConfigError("the node key is not an authority and validator of this genesis")
    return NodeFiles(data_dir, genesis, key)

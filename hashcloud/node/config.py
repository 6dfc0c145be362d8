"""Node configuration: the data directory (SPEC 6, 7) and the PoC validator's knobs (SPEC 3).

Layout of `DATA_DIR`: `genesis.json`, `keys/node.json` (the node key, 0600), `chain/` (the
flat-file chain store), `validator/` (audit histories `history.json` and the challenge journal
`challenges.journal`, SPEC 3 v1.1), `mempool.journal`.
`init_data_dir` creates a single-node chain where the node key is the sole block proposer
and PoC validator; `load_data_dir` opens an initialised one.

`ValidatorConfig` is the one typed, frozen, validated set of operator options of the PoC
validator (lifetimes, rate limits, sample bounds, audit concurrency, audit policy); the node
start command, `NodeService` and `EmbeddedNode` all pass it as one value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
from hashcloud.errors import InvalidGenesisOptions, InvalidOption, NodeConfigError
from hashcloud.params import AUDIT_MODES, DEFAULT_AUDIT_ROWS, MAX_N, MAX_S_MAX
from hashcloud.poc.audit_policy import DEFAULT_POLICY, AuditPolicy
from hashcloud.poc.plan import AuditMode
from hashcloud.poc.sampling import DEFAULT_S_MAX
from hashcloud.types import describe_validation_error

NODE_KEY_NAME = "node"


def _is_int(value: object) -> bool:
    """A real int (a bool is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ValidatorConfig:
    """Operator options of the PoC validator (SPEC 3), validated on construction.

    Each field is one documented knob; the defaults are the node's policy. SPEC 3 only asks
    for "unexpired" challenges and "rate limits": the numbers are this node's choices.
    A bad value raises InvalidOption naming the field (CLI exit 2). Injectables that are not
    configuration (clock, CSPRNG, leaf function, reward estimate) are constructor arguments
    of `PocValidator` / `NodeService`, not fields here.
    """

    #: How long (ms) an issued challenge may be committed (its signed `expiry`).
    challenge_ttl_ms: int = 10 * 60_000
    #: How long (ms) after `expiry` a committed challenge may still be revealed; None: one
    #: more `challenge_ttl_ms`, so a round committed just before expiry can finish.
    reveal_grace_ms: int | None = None
    #: Challenges one worker may hold open (issued or in progress, unexpired) at once.
    max_open_per_worker: int = 4
    #: Challenge requests per worker address in any 60 s window.
    requests_per_minute_per_address: int = 60
    #: Challenge requests per client IP in any 60 s window (checked before any signature).
    requests_per_minute_per_ip: int = 240
    #: Largest distance (ms) of a request's `request_time_ms` from the node's clock.
    request_time_skew_ms: int = 120_000
    #: Upper bound on the sample count `s` (SPEC 3 default 256).
    s_max: int = DEFAULT_S_MAX
    #: Largest matrix size `n` the node issues challenges for (audit cost grows as n^3).
    max_n: int = MAX_N
    #: Leaf recomputations running at once; None: the CPU count.
    audit_slots: int | None = None
    #: Reveals that may wait for a slot (beyond: 429); None: four per slot.
    audit_queue: int | None = None
    #: Places of the audit queue only workers with a clean history (`policy.trusted_after`
    #: accepted rounds, no recent failure) may take (`AuditGate`); None: a quarter of the
    #: queue. With `audit_slots`, it also sizes the app's worker threads (`app.worker_threads`).
    audit_reserved: int | None = None
    #: How audited samples are checked (SPEC 3 v1.1): "rows" recomputes `audit_rows` drawn
    #: rows of each audited loop's revealed output, "full" recomputes whole leaves (v1).
    audit_mode: AuditMode = "rows"
    #: Rows `k` drawn per audited sample in "rows" mode (SPEC 3 v1.1 default 16; `min(n, k)`).
    audit_rows: int = DEFAULT_AUDIT_ROWS
    #: Failed audits per client IP in any hour before that IP gets no challenge.
    ip_failures_per_hour: int = 20
    #: The adaptive audit policy (how many samples to recompute, cooldowns).
    policy: AuditPolicy = field(default=DEFAULT_POLICY)

    def __post_init__(self) -> None:
        """Refuse unusable values with a message naming the field."""
        for name in ("challenge_ttl_ms", "max_open_per_worker",
                     "requests_per_minute_per_address", "requests_per_minute_per_ip",
                     "s_max", "max_n", "ip_failures_per_hour", "audit_rows"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InvalidOption(f"{name} must be a positive integer, got {value!r}")
        for name in ("request_time_skew_ms", "reveal_grace_ms", "audit_queue", "audit_reserved"):
            value = getattr(self, name)
            if value is None and name != "request_time_skew_ms":
                continue
            if not _is_int(value) or value < 0:
                raise InvalidOption(f"{name} must be a non-negative integer, got {value!r}")
        if self.s_max > MAX_S_MAX:
            raise InvalidOption(f"s_max must be at most {MAX_S_MAX} (the most samples a reveal "
                                f"carries), got {self.s_max}")
        if self.audit_slots is not None and (not _is_int(self.audit_slots)
                                             or self.audit_slots < 1):
            raise InvalidOption(f"audit_slots must be a positive integer, got "
                                f"{self.audit_slots!r}")
        if self.audit_mode not in AUDIT_MODES:
            raise InvalidOption(f"audit_mode must be one of {', '.join(AUDIT_MODES)}, got "
                                f"{self.audit_mode!r}")
        if self.audit_reserved is not None and self.audit_reserved > self.effective_audit_queue:
            raise InvalidOption(f"audit_reserved ({self.audit_reserved}) must not exceed the "
                                f"audit queue ({self.effective_audit_queue})")
        if not isinstance(self.policy, AuditPolicy):
            raise InvalidOption(f"policy must be an AuditPolicy, got {type(self.policy).__name__}")

    @property
    def effective_reveal_grace_ms(self) -> int:
        """`reveal_grace_ms`, or one `challenge_ttl_ms` when unset."""
        return self.challenge_ttl_ms if self.reveal_grace_ms is None else self.reveal_grace_ms

    @property
    def effective_audit_slots(self) -> int:
        """`audit_slots`, or this machine's CPU count when unset."""
        return self.audit_slots or os.cpu_count() or 1

    @property
    def effective_audit_queue(self) -> int:
        """`audit_queue`, or four waiting reveals per audit slot when unset."""
        return 4 * self.effective_audit_slots if self.audit_queue is None else self.audit_queue

    @property
    def effective_audit_reserved(self) -> int:
        """`audit_reserved`, or a quarter (rounded down) of the effective audit queue."""
        if self.audit_reserved is not None:
            return self.audit_reserved
        return self.effective_audit_queue // 4


DEFAULT_VALIDATOR_CONFIG = ValidatorConfig()
"""The node's default validator options."""


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
        """Where the PoC validator keeps its state (`validator/history.json` and
        `validator/challenges.journal` under it)."""
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
                  block_time_ms: int | None = None,
                  schedule: dict[str, int] | None = None,
                  passphrase: str | None = None,
                  validators: tuple[str, ...] | list[str] = ()) -> NodeFiles:
    """Create the node key and a single-node genesis in `data_dir` (refuses to overwrite).
    A node key already in `data_dir` is used (`passphrase` decrypts an encrypted one).
    `validators`: public keys (hex) of further PoC validators the genesis lists after the
    node's own (SPEC 6: any of them may sign receipts; `node.follower` runs one).

    `schedule` may set the emission schedule's `subsidy0`, `halving_interval` and
    `epoch_length` (SPEC 6 v1.1; genesis defaults otherwise)."""
    data_dir = Path(data_dir)
    if is_initialised(data_dir):
        raise NodeConfigError(f"{data_dir} is already initialised (genesis.json exists)")
    ks = Keystore(data_dir)
    existing = ks.exists(NODE_KEY_NAME)
    key = ks.load(NODE_KEY_NAME, passphrase) if existing else PrivateKey.generate()
    try:  # validate the whole genesis before anything is written
        genesis = make_local_genesis(key, allocations, chain_id=chain_id or DEFAULT_CHAIN_ID)
        overrides = {k: v for k, v in (schedule or {}).items() if v is not None}
        if block_time_ms is not None:
            overrides["block_time_ms"] = block_time_ms
        if validators:
            overrides["validators"] = [key.public_key.hex(), *(v.lower() for v in validators)]
        if overrides:
            genesis = Genesis.model_validate({**genesis.model_dump(), **overrides})
    except ValidationError as exc:
        raise InvalidGenesisOptions(
            f"invalid genesis: {describe_validation_error(exc)}") from None
    if not existing:
        ks.create(NODE_KEY_NAME, key)
    data_dir.mkdir(parents=True, exist_ok=True)
    write_genesis(genesis_path(data_dir), genesis)
    return NodeFiles(data_dir, genesis, key)


def load_data_dir(data_dir: Path, passphrase: str | None = None) -> NodeFiles:
    """Open an initialised data directory, checking the node key is a genesis authority;
    `passphrase` decrypts an encrypted node key (the CLI takes it from
    `HASHCLOUD_PASSPHRASE` or a prompt)."""
    data_dir = Path(data_dir)
    if not is_initialised(data_dir):
        raise NodeConfigError(
            f"{data_dir} is not initialised: run `hashcloud node init --data-dir {data_dir}`")
    genesis = load_genesis(genesis_path(data_dir))
    key = Keystore(data_dir).load(NODE_KEY_NAME, passphrase)
    pub = key.public_key.hex()
    if pub not in genesis.authorities or pub not in genesis.validators:
        raise NodeConfigError("the node key is not an authority and validator of this genesis")
    return NodeFiles(data_dir, genesis, key)

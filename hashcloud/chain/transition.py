"""The state transition: transaction validity, application, and whole blocks (SPEC 6).

One code path serves every block: `build_block` (local production) ends by running
`apply_block` on what it built, and imported blocks go through the same `apply_block`.
Validation raises (`InvalidTransaction` / `InvalidBlock` subclasses with a short reason),
it never returns a flag; a transaction is fully validated before the state is touched, and
a block is applied to a copy of the state that replaces the original only on success.

Transaction rules, in checking order:
1. gas: `gas_price >= 1000`, `gas_limit` equals the type's gas, `fee == gas_limit *
   gas_price`;
2. keys: `public_key` is a curve point whose address is `from_address`;
3. signature over `tx_signing_bytes(tx, chain_domain(genesis))` (low-S, SPEC 5 v1.1); a
   signature made for another chain id or another genesis does not verify here;
4. nonce equals the account's next nonce;
5. TRANSFER: balance covers `amount + fee`;
6. SUBMIT_RESULT: payload worker is the sender, payload signature by the sender, receipt
   decodes, names this chain, is signed by a genesis PoC validator, matches task id, worker,
   result hash and loops, and its task was never claimed.

Emission (SPEC 6 v1.1, `chain.epoch`): a block first closes the previous epoch if it is the
first block of a new one (`close_epoch` pays the pool pro rata to work, deferred claim fees
to this block's proposer), then adds its own subsidy to the open pool, then applies its
transactions. A SUBMIT_RESULT mints nothing: it records `W = loops * n^3` for the receipt's
payout address, and its fee is deferred to that payout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from hashcloud.chain.block import (
    Block,
    BlockHeader,
    block_hash,
    block_signing_bytes,
    compute_root,
    sign_header,
    tx_root,
)
from hashcloud.chain.epoch import claim_work, epoch_of, is_epoch_start, subsidy
from hashcloud.chain.genesis import Genesis, authority_addresses, chain_domain
from hashcloud.chain.state import (
    State,
    add_subsidy,
    close_epoch,
    credit,
    debit,
    get_account,
    increment_nonce,
    is_task_rewarded,
    mark_task_rewarded,
    record_work,
    state_root,
)
from hashcloud.chain.tx import (
    GAS_BY_TYPE,
    MIN_GAS_PRICE,
    SUBMIT_RESULT,
    TRANSFER,
    ComputeResult,
    Transaction,
    compute_result_signing_bytes,
    tx_id,
    tx_signing_bytes,
)
from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.crypto.signatures import ChainDomain, check_signature_encoding, verify
from hashcloud.errors import (
    AuditError,
    DecodeError,
    FeeMismatch,
    GasMismatch,
    InsufficientBalance,
    InvalidBlock,
    InvalidComputeResult,
    InvalidKey,
    InvalidReceipt,
    InvalidSignature,
    InvalidTransaction,
    InvalidTxSignature,
    NonceMismatch,
    SupplyOverflow,
    TaskAlreadyRewarded,
)
from hashcloud.poc.audit import check_receipt
from hashcloud.poc.receipt import Receipt, decode_receipt
from hashcloud.types import MAX_AMOUNT, MAX_U64

__all__ = [
    "MAX_BLOCK_TRANSACTIONS",
    "MAX_FUTURE_DRIFT_MS",
    "BuiltBlock",
    "apply_block",
    "apply_transaction",
    "begin_block",
    "build_block",
    "validate_transaction",
]

MAX_FUTURE_DRIFT_MS = 30_000
"""A block timestamp may be at most this far ahead of the validating node's clock."""

MAX_BLOCK_TRANSACTIONS = 5_000
"""Most transactions one block may carry (bounds validation work per block)."""


# ------------------------------------------------------------------ transactions


def _check_gas(tx: Transaction) -> None:
    """SPEC 6 gas rules: minimum price, fixed gas per type, fee = gas_limit * gas_price."""
    if tx.gas_price < MIN_GAS_PRICE:
        raise GasMismatch(f"gas_price {tx.gas_price} is below the minimum {MIN_GAS_PRICE}")
    expected_gas = GAS_BY_TYPE[tx.tx_type]
    if tx.gas_limit != expected_gas:
        raise GasMismatch(f"gas_limit {tx.gas_limit} but {tx.tx_type} needs {expected_gas}")
    if tx.fee != tx.gas_limit * tx.gas_price:
        raise FeeMismatch(
            f"fee {tx.fee} is not gas_limit * gas_price = {tx.gas_limit * tx.gas_price}"
        )
    if not 0 <= tx.amount < MAX_AMOUNT:
        raise InvalidTransaction(f"amount {tx.amount} outside [0, 2**96)")


@lru_cache(maxsize=1 << 14)
def _key_and_address(public_key_hex: str) -> tuple[PublicKey, str]:
    """Parse a public key and derive its address (cached: senders recur)."""
    public_key = PublicKey.from_hex(public_key_hex)
    return public_key, public_key.address


def _sender_key(tx: Transaction) -> PublicKey:
    """The sender's public key, which must hash to `from_address`."""
    try:
        public_key, address = _key_and_address(tx.public_key)
    except InvalidKey as exc:
        raise InvalidTxSignature(f"public key is invalid: {exc}") from None
    if address != tx.from_address:
        raise InvalidTxSignature("public key does not match from_address")
    return public_key


def _check_signature(public_key: PublicKey, message: bytes, signature_hex: str,
                     what: str, domain: ChainDomain) -> None:
    """Verify a domain-tagged signature, naming the chain when it does not verify."""
    signature = bytes.fromhex(signature_hex)
    try:
        check_signature_encoding(signature)
    except InvalidSignature as exc:
        raise InvalidTxSignature(f"bad {what} signature: {exc}") from None
    try:
        verify(public_key, message, signature)
    except InvalidSignature:
        raise InvalidTxSignature(
            f"{what} signature does not verify for chain {domain} (chain id/genesis)"
        ) from None


def _check_nonce(state: State, tx: Transaction) -> None:
    """The nonce must be exactly the sender's next nonce (no gaps, no replays)."""
    expected = get_account(state, tx.from_address).nonce
    if tx.nonce != expected:
        raise NonceMismatch(f"nonce {tx.nonce} but account expects {expected}")
    if tx.nonce + 1 >= MAX_U64:
        raise NonceMismatch("account nonce is exhausted")


def _check_receipt(result: ComputeResult, genesis: Genesis) -> Receipt:
    """Decode the receipt inside a ComputeResult and match it to the result (SPEC 6) through
    the one receipt check of the audit (`poc.audit.check_receipt`); return it."""
    try:
        receipt = decode_receipt(bytes.fromhex(result.proof))
    except DecodeError as exc:
        raise InvalidComputeResult(f"receipt does not decode: {exc}") from None
    try:
        return check_receipt(
            receipt,
            genesis.validators,
            domain=chain_domain(genesis),
            task_id=result.task_id,
            worker_address=result.worker_address,
            merkle_root=bytes.fromhex(result.result_hash),
            loops=result.nonce,
        )
    except (AuditError, InvalidReceipt, InvalidSignature) as exc:
        raise InvalidComputeResult(str(exc)) from None


class _Claim(NamedTuple):
    """What a valid SUBMIT_RESULT records: `work` for `payout_address` (SPEC 6 v1.1)."""

    payout_address: str
    work: int


def _check_compute_result(state: State, tx: Transaction, public_key: PublicKey,
                          genesis: Genesis) -> _Claim:
    """All SUBMIT_RESULT rules (SPEC 6); return the work to record and for whom."""
    result = tx.payload
    if result is None or tx.to_address is not None or tx.amount != 0:
        raise InvalidComputeResult("SUBMIT_RESULT needs a payload, no to_address, amount 0")
    if result.worker_address != tx.from_address:
        raise InvalidComputeResult("payload worker_address is not the sender")
    domain = chain_domain(genesis)
    _check_signature(public_key, compute_result_signing_bytes(result, domain),
                     result.signature, "compute result", domain)
    receipt = _check_receipt(result, genesis)
    if is_task_rewarded(state, result.task_id):
        raise TaskAlreadyRewarded(f"task {result.task_id} was already rewarded")
    return _Claim(receipt.payout_address, claim_work(receipt.loops, receipt.n))


def validate_transaction(state: State, tx: Transaction, genesis: Genesis) -> int:
    """Raise an InvalidTransaction subclass unless `tx` applies to `state` (SPEC 6).

    Returns the work `loops * n^3` a valid SUBMIT_RESULT records (0 for a TRANSFER); never
    mutates.
    """
    claim = _validate(state, tx, genesis)
    return 0 if claim is None else claim.work


def _validate(state: State, tx: Transaction, genesis: Genesis) -> _Claim | None:
    """`validate_transaction`, returning the claim of a SUBMIT_RESULT (None for a TRANSFER)."""
    _check_gas(tx)
    public_key = _sender_key(tx)
    domain = chain_domain(genesis)
    _check_signature(public_key, tx_signing_bytes(tx, domain), tx.signature,
                     "transaction", domain)
    _check_nonce(state, tx)
    if tx.tx_type == TRANSFER:
        if tx.to_address is None or tx.payload is not None:
            raise InvalidTransaction("TRANSFER needs a to_address and no payload")
        balance = get_account(state, tx.from_address).balance
        if balance < tx.amount + tx.fee:
            raise InsufficientBalance(
                f"insufficient balance: {balance} < amount + fee = {tx.amount + tx.fee}"
            )
        return None
    if tx.tx_type == SUBMIT_RESULT:
        return _check_compute_result(state, tx, public_key, genesis)
    raise InvalidTransaction(f"unknown transaction type {tx.tx_type!r}")  # pragma: no cover


def _check_credits_fit(state: State, tx: Transaction, proposer: str) -> None:
    """Refuse a TRANSFER whose credits would push a balance to 2**96 *before* anything is
    debited, so a refused transaction leaves the state untouched (a half-applied transfer
    would make the built block's root differ from its re-validation and stall production)."""
    gains = {tx.to_address: tx.amount}
    gains[proposer] = gains.get(proposer, 0) + tx.fee
    gains[tx.from_address] = gains.get(tx.from_address, 0) - tx.amount - tx.fee
    for address, gain in gains.items():
        if gain > 0 and get_account(state, address).balance + gain >= MAX_AMOUNT:
            raise SupplyOverflow(f"balance of {address} would exceed 2**96")


def apply_transaction(state: State, tx: Transaction, genesis: Genesis, proposer: str) -> None:
    """Validate `tx`, then apply it to `state`, paying its fee to `proposer` (SPEC 6).

    TRANSFER: sender pays amount + fee (to `proposer`), recipient gets amount. SUBMIT_RESULT
    (SPEC 6 v1.1): the task is marked claimed and its work recorded for the payout address
    in the open epoch, with the fee deferred to that epoch's payout (paid then to the
    proposer of the paying block). Either way the sender's nonce advances. `state` is
    untouched when validation fails.
    """
    claim = _validate(state, tx, genesis)
    if claim is None:
        _check_credits_fit(state, tx, proposer)
        debit(state, tx.from_address, tx.amount + tx.fee)
        credit(state, tx.to_address, tx.amount)  # type: ignore[arg-type]
        credit(state, proposer, tx.fee)
    else:
        record_work(state, claim.payout_address, tx.from_address, claim.work, tx.fee)
        mark_task_rewarded(state, tx.payload.task_id)  # type: ignore[union-attr]
    increment_nonce(state, tx.from_address)


# ------------------------------------------------------------------ blocks


def _check_header(header: BlockHeader, parent: BlockHeader, genesis: Genesis,
                  now_ms: int | None) -> None:
    """Height, parent link, timestamp window, proposer authority and signature."""
    if header.height != parent.height + 1:
        raise InvalidBlock(f"block height {header.height} but parent is {parent.height}")
    if header.prev_hash != block_hash(parent):
        raise InvalidBlock("prev_hash does not match the parent block's hash")
    if header.timestamp < parent.timestamp:
        raise InvalidBlock(
            f"timestamp {header.timestamp} is before the parent's {parent.timestamp}"
        )
    if now_ms is not None and header.timestamp > now_ms + MAX_FUTURE_DRIFT_MS:
        raise InvalidBlock(f"timestamp {header.timestamp} is more than 30 s in the future")
    authorities = authority_addresses(genesis)
    if header.proposer not in authorities:
        raise InvalidBlock(f"proposer {header.proposer!r} is not a genesis authority")
    if not header.signature:
        raise InvalidBlock("block is not signed")
    domain = chain_domain(genesis)
    try:
        verify(_key_and_address(authorities[header.proposer])[0],
               block_signing_bytes(header, domain), bytes.fromhex(header.signature))
    except InvalidSignature as exc:
        # Names the domain: a block signed for another genesis (or before SPEC 5 v1.1).
        raise InvalidBlock(f"block signature is invalid for chain {domain}: {exc}") from None


def begin_block(state: State, height: int, proposer: str, genesis: Genesis) -> None:
    """The emission step that opens block `height`, before its transactions (SPEC 6 v1.1):
    the first block of an epoch pays the previous epoch's pool (its fees to `proposer`),
    then every block adds its scheduled subsidy to the open epoch's pool."""
    epoch = epoch_of(height, genesis.epoch_length)
    try:
        if is_epoch_start(height, genesis.epoch_length) and epoch > 0:
            if state.totals.epoch != epoch - 1:
                raise InvalidBlock(f"state is in epoch {state.totals.epoch}, not {epoch - 1}")
            close_epoch(state, proposer)
        add_subsidy(state, subsidy(height, genesis.subsidy0, genesis.halving_interval))
    except InvalidTransaction as exc:  # a balance or the supply would pass 2**96
        raise InvalidBlock(f"epoch payout or subsidy of block {height} fails: {exc}") from None


def apply_block(state: State, block: Block, parent_header: BlockHeader, genesis: Genesis,
                now_ms: int | None = None) -> State:
    """Validate `block` on top of `parent_header` and return the state after it (SPEC 6).

    `state` (the state after the parent) is not modified: the block is applied to a copy,
    returned on success. `now_ms` (the node's clock) bounds how far in the future the
    timestamp may be; `None` skips that check (replaying stored history). Raises
    InvalidBlock naming the first problem.
    """
    header = block.header
    _check_header(header, parent_header, genesis, now_ms)
    if len(block.transactions) > MAX_BLOCK_TRANSACTIONS:
        raise InvalidBlock(f"block has more than {MAX_BLOCK_TRANSACTIONS} transactions")
    ids = [tx_id(tx) for tx in block.transactions]
    if len(set(ids)) != len(ids):
        raise InvalidBlock("block contains a duplicate transaction")
    if header.tx_root != tx_root(ids):
        raise InvalidBlock("tx_root does not match the block's transactions")
    if header.compute_root != compute_root(block.transactions):
        raise InvalidBlock("compute_root does not match the block's compute results")
    new_state = state.copy()
    begin_block(new_state, header.height, header.proposer, genesis)
    for index, (tx, txid) in enumerate(zip(block.transactions, ids, strict=True)):
        try:
            apply_transaction(new_state, tx, genesis, header.proposer)
        except InvalidTransaction as exc:
            raise InvalidBlock(f"transaction {index} ({txid}) is invalid: {exc}") from None
    if header.state_root != state_root(new_state):
        raise InvalidBlock("state_root does not match the state after the block")
    return new_state


class BuiltBlock(NamedTuple):
    """What `build_block` returns: the block, the state after it, and the refused txs."""

    block: Block
    state: State
    rejected: tuple[tuple[Transaction, str], ...]


@dataclass(frozen=True, slots=True)
class _Selection:
    """Transactions chosen for a block and the state after them."""

    transactions: tuple[Transaction, ...]
    ids: tuple[str, ...]
    state: State
    rejected: tuple[tuple[Transaction, str], ...]


def _select_transactions(state: State, candidates: list[Transaction], genesis: Genesis,
                         proposer: str, height: int) -> _Selection:
    """Apply candidates in order to a copy, keeping those that validate."""
    working = state.copy()
    begin_block(working, height, proposer, genesis)
    chosen: list[Transaction] = []
    ids: list[str] = []
    seen: set[str] = set()
    rejected: list[tuple[Transaction, str]] = []
    for tx in candidates:
        txid = tx_id(tx)
        if txid in seen:
            rejected.append((tx, "duplicate transaction"))
            continue
        if len(chosen) >= MAX_BLOCK_TRANSACTIONS:
            rejected.append((tx, "block is full"))
            continue
        try:
            apply_transaction(working, tx, genesis, proposer)
        except InvalidTransaction as exc:
            rejected.append((tx, str(exc)))
            continue
        seen.add(txid)
        chosen.append(tx)
        ids.append(txid)
    return _Selection(tuple(chosen), tuple(ids), working, tuple(rejected))


def build_block(state: State, parent_header: BlockHeader, candidate_txs: list[Transaction],
                genesis: Genesis, proposer_key: PrivateKey,
                timestamp_ms: int | None = None) -> BuiltBlock:
    """Produce and sign the next block from the candidates that validate (SPEC 6).

    Invalid candidates are skipped and returned in `rejected` with the reason. The result
    is then checked by `apply_block`, the same path every imported block takes.
    """
    proposer = proposer_key.public_key.address
    if proposer not in authority_addresses(genesis):
        raise InvalidBlock(f"{proposer} is not a genesis authority and cannot propose")
    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    selection = _select_transactions(state, list(candidate_txs), genesis, proposer,
                                     parent_header.height + 1)
    header = BlockHeader(
        height=parent_header.height + 1,
        prev_hash=block_hash(parent_header),
        timestamp=max(now, parent_header.timestamp),
        proposer=proposer,
        tx_root=tx_root(list(selection.ids)),
        state_root=state_root(selection.state),
        compute_root=compute_root(selection.transactions),
        signature="",
    )
    block = Block(header=sign_header(header, proposer_key, chain_domain(genesis)),
                  transactions=selection.transactions)
    new_state = apply_block(state, block, parent_header, genesis, now_ms=None)
    return BuiltBlock(block, new_state, selection.rejected)

"""The single HashCloud error tree: every error raised on purpose, in one module.

Core code raises these (validation raises, it never returns a flag). Nothing here knows about
HTTP or exit codes: the node's HTTP layer maps classes to status codes (`node/app.py`), the CLI
maps `InputError` to exit 2 and every other `HashCloudError` to exit 1 (`cli/common.py`).
Messages are short, say what is wrong and never include secrets.

Shape (SPEC section in brackets):

    HashCloudError
    +-- InputError            unusable input: unreadable file, wrong kind, bad option (exit 2)
    |   +-- UsageError        bad command-line usage (the CLI's own)
    |   +-- UnreadableInput   a file that cannot be read or is not the expected kind
    |   +-- InvalidOption     an option value that cannot be used (node URL, genesis options)
    +-- DecodeError           non-canonical or malformed bytes/text of a record
    |   +-- FrameCorrupt      a framed log (block log, mempool journal) damaged at an offset
    +-- CryptoError           [5] InvalidKey, InvalidSignature, InvalidAddress
    +-- KeystoreError         key files
    +-- EngineError           [1] BackendUnavailable
    +-- ProofError            [2, 4] MerkleError, AuditError -> ValidatorError -> ...
    +-- ChainError            [6] InvalidTransaction -> ..., InvalidBlock, StoreError, ...
    +-- NodeError             a node answered with an error or could not be reached
"""

from __future__ import annotations


class HashCloudError(Exception):
    """Root of every error HashCloud raises on purpose."""


# ----------------------------------------------------------------------------- input


class InputError(HashCloudError):
    """Input that cannot be used at all (CLI exit 2), as opposed to a refusal (exit 1)."""


class UsageError(InputError):
    """Bad command-line input (CLI exit code 2)."""


class UnreadableInput(InputError):
    """A file that cannot be read, is too large, or is not the expected kind of file."""


class InvalidOption(InputError):
    """An option value that cannot be used: a malformed node URL, bad genesis options."""


class InvalidAmount(InputError):
    """An amount a user typed that is not a valid number of HC or base units (SPEC 6 v1.1
    units): negative, too many decimals, not a decimal number, or 2**96 base units or more."""


class DecodeError(HashCloudError):
    """Bytes or text that are not a canonical encoding of the expected record."""


class FrameCorrupt(DecodeError):
    """A framed log (`fsutil.FrameScan`) is damaged at `offset`, never a torn tail.

    `reason` says how (`fsutil.BAD_MAGIC`, `BAD_HEADER`, `DIGEST_MISMATCH`, ...). A
    `DecodeError`: the log's bytes are not a valid encoding. The block store turns it into
    a `StoreError` naming the height; the mempool journal reports it and starts afresh.
    """

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"corrupt record at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


# ---------------------------------------------------------------------------- crypto


class CryptoError(HashCloudError):
    """Key, signature or address problems (SPEC 5)."""


class InvalidKey(CryptoError):
    """A private or public key that is malformed or outside the curve's range."""


class InvalidSignature(CryptoError):
    """A signature that is malformed, high-S or does not verify (SPEC 5)."""


class InvalidAddress(CryptoError):
    """A `cpc1...` address with a wrong hrp, checksum, case or payload length (SPEC 5)."""


class KeystoreError(HashCloudError):
    """Key file problems: missing, already existing, unreadable or wrong passphrase."""


class KeyFileExposed(KeystoreError):
    """A key file that group or others may access, or that another user owns: refused
    before it is read, as ssh refuses an unprotected private key (POSIX only)."""


# ---------------------------------------------------------------------------- engine


class EngineError(HashCloudError):
    """The compute engine cannot run as asked (bad n, backend unavailable) (SPEC 1)."""


class BackendUnavailable(EngineError):
    """The requested array backend (e.g. CuPy/CUDA) is not usable on this machine."""


# ------------------------------------------------------------------------------- PoC


class ProofError(HashCloudError):
    """A proof file or one of its parts is invalid (SPEC 4)."""


class MerkleError(ProofError):
    """A Merkle inclusion proof that does not verify or is malformed (SPEC 2)."""


class AuditError(ProofError):
    """A commitment, reveal or receipt that does not pass the SPEC 3 audit."""


class ValidatorError(AuditError):
    """A request refused by the node's PoC validator (SPEC 3)."""


class ChallengeNotFound(ValidatorError):
    """No such challenge: never issued here, forgotten after expiry, or lost on restart."""


class ChallengeExpired(ValidatorError):
    """The challenge's commit (or reveal) deadline has passed (SPEC 3 "unexpired")."""


class ChallengeUsed(ValidatorError):
    """The challenge is not in the state this call needs: committed twice, revealed before
    its commitment, revealed again after a rejection, or an audit already in progress."""


class RateLimited(ValidatorError):
    """Too many requests from one address or IP, too many open challenges, or a full audit
    queue (SPEC 3 rate limits). `retry_after`: seconds after which a retry may succeed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(0.0, retry_after)


class CoolingDown(RateLimited):
    """The worker failed too many recent audits and gets no challenge until `until` (unix
    seconds) (SPEC 3 adaptive audit / penalty)."""

    def __init__(self, message: str, retry_after: float, until: float) -> None:
        super().__init__(message, retry_after)
        self.until = until


class RequestRefused(ValidatorError):
    """A challenge request with a bad signature, a key that is not the worker's, a stale
    request time or an n above the node's maximum (SPEC 3, 5)."""


class CommitRefused(ValidatorError):
    """A commitment failing a SPEC 3 sanity check: bad `device_signature` (e.g. another
    worker's key), compute time longer than elapsed, unknown backend, rate above peak."""


class RevealUnauthorized(ValidatorError):
    """A reveal not signed by the challenge's worker (SPEC 3 v1.1). Refused without touching
    the challenge: nobody but the worker can use up or fail its round."""


class MalformedReveal(ValidatorError):
    """A correctly signed reveal whose indices or shape do not match what the node drew (SPEC
    3 v1.1): refused as malformed; the challenge stays open until its expiry."""


class RevealRefused(ValidatorError):
    """A reveal that fails the audit (SPEC 3): the challenge is burned and the worker's
    history records a failed audit."""


class AuditFailed(RevealRefused):
    """An inclusion proof or a recomputed leaf failed (SPEC 2, 3); the message names the
    index and the reason. The challenge is burned and the failure recorded."""


# ----------------------------------------------------------------------------- chain


class ChainError(HashCloudError):
    """Chain-level failures (SPEC 6)."""


class GenesisError(ChainError):
    """A genesis document that is malformed or inconsistent (SPEC 6)."""


class InvalidReceipt(ChainError):
    """A receipt that is not signed by an allowed PoC validator or is malformed (SPEC 6)."""


class InvalidTransaction(ChainError):
    """A transaction that fails validation against the state (SPEC 6)."""


class InvalidTxSignature(InvalidTransaction):
    """Bad, high-S or non-verifying signature, or a key that does not own from_address."""


class NonceMismatch(InvalidTransaction):
    """The nonce is not the sender account's next nonce."""


class GasMismatch(InvalidTransaction):
    """gas_price below the minimum or gas_limit not the type's fixed gas."""


class FeeMismatch(InvalidTransaction):
    """fee is not gas_limit * gas_price."""


class InsufficientBalance(InvalidTransaction):
    """An account cannot pay an amount (plus fee)."""


class SupplyOverflow(InvalidTransaction):
    """A credit or mint would push a balance or the supply past 2**96."""


class InvalidComputeResult(InvalidTransaction):
    """A SUBMIT_RESULT payload or receipt that does not entitle the sender to a reward."""


class TaskAlreadyRewarded(InvalidComputeResult):
    """The challenge was already paid (no double claims)."""


class RewardBelowFee(InvalidComputeResult):
    """The reward would not cover the fee, so the claim is invalid (SPEC 6)."""


class MempoolFull(InvalidTransaction):
    """The pool (or this sender's share of it) is full; retry later."""


class DuplicateTransaction(InvalidTransaction):
    """The transaction is already pooled or included."""


class InvalidBlock(ChainError):
    """A block that fails validation (SPEC 6)."""


class StoreError(ChainError):
    """The flat-file chain store is corrupt, locked or inconsistent with genesis."""


class StoreLocked(StoreError):
    """Another process holds the chain store's writer lock."""


class StoreRolledBack(StoreError):
    """The chain store is missing or behind what this node once acknowledged (its watermark
    or its journal): refused unless the operator accepts the rollback (SPEC 6 storage)."""


class ChainAuditFailed(ChainError):
    """`audit_chain` found a problem; the message names the first one (and its height)."""


# ------------------------------------------------------------------------------ node


class NotFound(HashCloudError):
    """A block, transaction or challenge that does not exist."""


class StorageUnavailable(HashCloudError):
    """A durable write the node must make before it answers failed (disk full, I/O error):
    the request is undone and answered 503, so the client simply retries later."""


class NodeConfigError(HashCloudError):
    """The data directory is missing, half-initialised or inconsistent."""


class InvalidGenesisOptions(NodeConfigError, InvalidOption):
    """The options given for a new genesis do not make a valid one (CLI exit 2)."""


class NodeError(HashCloudError):
    """A node answered with an error or could not be reached."""


class NodeRejected(NodeError):
    """The node refused the request (4xx); `status` and the node's `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"node refused ({status}): {detail}")
        self.status = status
        self.detail = detail


class ProducerUnavailable(NodeError):
    """A follower cannot relay a request: its producer is unreachable, answered 5xx, or was
    refused by the follower (SPEC 7 v1.1 followers); answered 503 with the reason."""


class FollowRefused(ChainError):
    """A follower's producer served an invalid or conflicting block, another genesis, or
    an answer this node cannot follow: the follower stops following and keeps the blocks it
    already accepted (SPEC 6, 7 v1.1)."""


class ProducerChainRefused(FollowRefused):
    """A verdict on the producer's chain itself (an invalid or conflicting block, another
    genesis): kept on disk across restarts until the operator reconsiders (`node.refusal`).
    Other refusals (a 4xx, a malformed answer: a proxy or a mistyped URL) last one run."""

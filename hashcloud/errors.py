"""The single HashCloud error tree.

Core code raises these (validation raises, it never returns a flag); the CLI maps them to a
message on stderr and exit code 1, and the node maps them to 4xx responses. Messages are
short and say what is wrong, never include secrets.
"""


class HashCloudError(Exception):
    """Root of every error HashCloud raises on purpose."""


class UsageError(HashCloudError):
    """Bad command-line input or unreadable input file (CLI exit code 2)."""


class DecodeError(HashCloudError):
    """Bytes or text that are not a canonical encoding of the expected record."""


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


class EngineError(HashCloudError):
    """The compute engine cannot run as asked (bad n, backend unavailable) (SPEC 1)."""


class BackendUnavailable(EngineError):
    """The requested array backend (e.g. CuPy/CUDA) is not usable on this machine."""


class ProofError(HashCloudError):
    """A proof file or one of its parts is invalid (SPEC 4)."""


class MerkleError(ProofError):
    """A Merkle inclusion proof that does not verify or is malformed (SPEC 2)."""


class AuditError(ProofError):
    """A commitment or reveal refused by the PoC validator (SPEC 3)."""


class ChainError(HashCloudError):
    """Chain-level failures (SPEC 6)."""


class InvalidTransaction(ChainError):
    """A transaction that fails validation against the state (SPEC 6)."""


class InvalidBlock(ChainError):
    """A block that fails validation (SPEC 6)."""


class StoreError(ChainError):
    """The flat-file chain store is corrupt, locked or inconsistent with genesis."""


class StoreLocked(StoreError):
    """Another process holds the chain store's writer lock."""


class NodeError(HashCloudError):
    """A node answered with an error or could not be reached."""

"""The state snapshot ``state.snap`` (SPEC 6 storage): the state after one stored block.

``b"HCSNAP1\\n"`` + u32 BE version + u32 BE body length + msgpack ``[height, hash, state]`` +
SHA-256 of everything before it. Written atomically (temp file, fsync, rename) so a crash
leaves the old snapshot or the new one. A snapshot that is missing, corrupt or stale reads as
None: the ledger then rebuilds the state by replaying blocks, so a snapshot is never needed
for correctness, only for a fast open.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from pathlib import Path

import msgpack

from hashcloud.chain.store.blocklog import FORMAT_VERSION, HASH_LEN
from hashcloud.errors import StoreError
from hashcloud.fsutil import atomic_replace, read_rebuildable

logger = logging.getLogger(__name__)

__all__ = ["SNAPSHOT_NAME", "Snapshot", "encode_snapshot", "parse_snapshot", "read_snapshot",
           "write_snapshot"]

SNAPSHOT_NAME = "state.snap"
SNAP_MAGIC = b"HCSNAP1\n"
_SNAP_HEAD = struct.Struct(">8sII")  # magic, version, body length
_DIGEST_LEN = 32

Snapshot = tuple[int, bytes, bytes]
"""``(height, block_hash, state_bytes)``."""


def encode_snapshot(height: int, block_hash: bytes, state_bytes: bytes) -> bytes:
    """The file bytes of a snapshot of ``state_bytes`` taken after block ``height``."""
    body = msgpack.packb([height, block_hash, bytes(state_bytes)], use_bin_type=True)
    data = _SNAP_HEAD.pack(SNAP_MAGIC, FORMAT_VERSION, len(body)) + body
    return data + hashlib.sha256(data).digest()


def parse_snapshot(data: bytes) -> Snapshot | None:
    """Decode and checksum-verify snapshot file bytes; None when anything is off."""
    if len(data) < _SNAP_HEAD.size + _DIGEST_LEN:
        return None
    if hashlib.sha256(data[:-_DIGEST_LEN]).digest() != data[-_DIGEST_LEN:]:
        return None
    magic, version, body_len = _SNAP_HEAD.unpack_from(data)
    if (
        magic != SNAP_MAGIC
        or version != FORMAT_VERSION
        or len(data) != _SNAP_HEAD.size + body_len + _DIGEST_LEN
    ):
        return None
    try:
        obj = msgpack.unpackb(data[_SNAP_HEAD.size : -_DIGEST_LEN], raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if not (isinstance(obj, list) and len(obj) == 3):
        return None
    height, block_hash, state = obj
    if type(height) is not int or not isinstance(block_hash, bytes):
        return None
    if len(block_hash) != HASH_LEN or not isinstance(state, bytes):
        return None
    return height, block_hash, state


def write_snapshot(path: Path, height: int, block_hash: bytes, state_bytes: bytes) -> None:
    """Atomically and durably replace the snapshot at ``path``; StoreError on I/O failure."""
    try:
        atomic_replace(path, encode_snapshot(height, block_hash, state_bytes))
    except OSError as exc:
        raise StoreError(f"cannot write snapshot: {exc.strerror}") from None


def read_snapshot(path: Path) -> Snapshot | None:
    """The snapshot at ``path``, or None (with a log line) if it is missing or corrupt.

    Whether it matches the block log is the store's check (it knows the hashes).
    """
    data = read_rebuildable(path, missing="no state snapshot; state will be rebuilt by replay",
                            unreadable="state snapshot unreadable; ignoring it", logger=logger)
    if data is None:
        return None
    parsed = parse_snapshot(data)
    if parsed is None:
        logger.warning("state snapshot corrupt; ignoring it")
    return parsed

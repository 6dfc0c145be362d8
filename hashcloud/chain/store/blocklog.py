"""The block log ``blocks.log``: the store's source of truth (SPEC 6 chain storage).

File header ``b"HCBLOG1\\n"`` + u32 big-endian format version (12 bytes), then one record per
block, framed by :func:`hashcloud.fsutil.frame` with magic ``b"HCRB"``::

    magic  b"HCRB"                       4 bytes
    length u32 BE of body                4 bytes
    hcrc   u32 BE CRC-32 of magic+length 4 bytes
    body   msgpack [height, hash, payload]   length bytes (canonical, bin types)
    digest SHA-256(magic+length+hcrc+body)  32 bytes

Heights are contiguous from 0 and block hashes are unique. This module encodes and decodes
records, scans the log (telling a torn tail from corruption, see ``FrameScan``) and cuts a
torn tail off; it never interprets a payload.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from hashcloud.errors import FrameCorrupt, StoreError
from hashcloud.fsutil import (
    DIGEST_MISMATCH,
    FrameScan,
    atomic_replace,
    frame,
    read_frame_at,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BlockRecord",
    "FORMAT_VERSION",
    "HASH_LEN",
    "LOG_HEADER",
    "LOG_NAME",
    "MAX_PAYLOAD",
    "RECORD_MAGIC",
    "ScanResult",
    "check_log_header",
    "corrupt",
    "create_log",
    "cut_torn_tail",
    "decode_body",
    "encode_record",
    "read_record_at",
    "scan_log",
]

BlockRecord = tuple[int, bytes, bytes]
"""One stored block: ``(height, block_hash, payload)``."""

LOG_NAME = "blocks.log"
FORMAT_VERSION = 1
LOG_MAGIC = b"HCBLOG1\n"
LOG_HEADER = LOG_MAGIC + struct.pack(">I", FORMAT_VERSION)
RECORD_MAGIC = b"HCRB"
HASH_LEN = 32
MAX_PAYLOAD = 64 * 1024 * 1024
"""Largest payload accepted; bounds the body length a record header may claim."""
MAX_BODY = MAX_PAYLOAD + 64  # payload plus msgpack framing, height and hash
_READ_CHUNK = 1 << 20


def encode_record(height: int, block_hash: bytes, payload: bytes) -> bytes:
    """Return the on-disk bytes of one block record (header, body, digest)."""
    return frame(RECORD_MAGIC, msgpack.packb([height, block_hash, payload], use_bin_type=True))


def decode_body(body: bytes) -> BlockRecord:
    """Decode a record body, rejecting anything but canonical ``[int, bytes32, bytes]``.

    Raises ValueError naming the problem (the caller adds the offset).
    """
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ValueError(f"undecodable body ({exc.__class__.__name__})") from None
    if not (isinstance(obj, list) and len(obj) == 3):
        raise ValueError("body is not [height, hash, payload]")
    height, block_hash, payload = obj
    if type(height) is not int or height < 0:
        raise ValueError("bad height field")
    if not isinstance(block_hash, bytes) or len(block_hash) != HASH_LEN:
        raise ValueError("bad hash field")
    if not isinstance(payload, bytes):
        raise ValueError("bad payload field")
    # Canonical only: one block has one byte form, so equal records compare equal.
    if msgpack.packb(obj, use_bin_type=True) != body:
        raise ValueError("non-canonical body")
    return height, block_hash, payload


def corrupt(offset: int, why: str) -> StoreError:
    """Build the one error shape used for every log corruption."""
    return StoreError(f"block log corrupt at offset {offset}: {why}")


def create_log(log_path: Path) -> None:
    """Create an empty block log (just the file header), atomically and durably."""
    atomic_replace(log_path, LOG_HEADER)


def check_log_header(log_path: Path) -> None:
    """Refuse a log whose file header is missing or wrong (never repaired)."""
    with open(log_path, "rb") as fh:
        if fh.read(len(LOG_HEADER)) != LOG_HEADER:
            raise corrupt(0, "bad file header")


@dataclass(slots=True)
class ScanResult:
    """What a log scan found: good records, where they end, and a torn tail if any."""

    offsets: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    end: int = 0
    torn_bytes: int = 0


def scan_log(
    path: Path, start: int, first_height: int, known_hashes: dict[bytes, int]
) -> ScanResult:
    """Verify records from ``start`` to end of file, expecting heights from ``first_height``.

    Raises StoreError at the first corruption (bad frame, undecodable body, wrong height,
    duplicate hash); a torn tail is reported in ``torn_bytes``, never raised.
    """
    res = ScanResult(end=start)
    seen: set[bytes] = set()
    height = first_height
    with open(path, "rb", buffering=_READ_CHUNK) as fh:
        scan = FrameScan(fh, RECORD_MAGIC, max_body=MAX_BODY, start=start,
                         size=os.fstat(fh.fileno()).st_size)
        try:
            for pos, body in scan:
                try:
                    rec_height, block_hash, _ = decode_body(body)
                except ValueError as exc:
                    raise corrupt(pos, str(exc)) from None
                if rec_height != height:
                    raise corrupt(pos, f"height {rec_height} where {height} was expected")
                if block_hash in known_hashes or block_hash in seen:
                    raise corrupt(pos, f"duplicate block hash {block_hash.hex()}")
                seen.add(block_hash)
                res.offsets.append(pos)
                res.hashes.append(block_hash)
                height += 1
        except FrameCorrupt as exc:
            why = exc.reason
            if why == DIGEST_MISMATCH:
                why = f"{why} in record of height {height}"
            raise corrupt(exc.offset, why) from None
        res.end, res.torn_bytes = scan.end, scan.torn_bytes
    return res


def read_record_at(fd: int, offset: int) -> BlockRecord:
    """Read and verify the record at ``offset`` of open log ``fd``; StoreError if it is bad."""
    try:
        body = read_frame_at(fd, offset, RECORD_MAGIC, max_body=MAX_BODY)
    except FrameCorrupt as exc:
        raise corrupt(offset, exc.reason) from None
    try:
        return decode_body(body)
    except ValueError as exc:
        raise corrupt(offset, str(exc)) from None


def cut_torn_tail(log_path: Path, end: int, torn_bytes: int) -> None:
    """Writer recovery: truncate the log to ``end`` durably and say so in the log (WARNING).

    Only ever called for a torn tail (an interrupted, unacknowledged append); corruption is
    raised by the scan and never reaches here.
    """
    with open(log_path, "r+b") as fh:
        fh.truncate(end)
        fh.flush()
        os.fsync(fh.fileno())
    logger.warning(
        "block log: removed %d bytes of a torn last record at offset %d (interrupted append)",
        torn_bytes,
        end,
    )

"""The acknowledged-height watermark ``chain.watermark`` (SPEC 6 storage, rollback guard).

The block log is the store's source of truth, so the log alone cannot tell that it was
rolled back: an older copy of ``blocks.log``, a log cut at a record boundary or a deleted
``chain/`` directory all open as a valid, shorter chain. The watermark records the highest
block the node ever acknowledged (its height and hash, and the genesis it belongs to) in a
file the node keeps *outside* the store directory, updated durably after every append and
before the new head becomes visible; a store that is behind it, or holds another block at
its height, is refused (`ChainStore.guard`) unless the operator accepts the rollback.

Format: two fixed-size slots of ``SLOT_SIZE`` bytes; each holds one frame
(:func:`hashcloud.fsutil.frame`, magic ``b"HCWM"``) of ``u64 sequence || u64 height ||
32-byte genesis hash || 32-byte block hash``, zero-padded. An update overwrites the slot of
the older sequence in place (``pwrite`` + ``fdatasync``: no allocation, so it still works on
a full disk), so a torn write damages at most one slot and the other still holds the previous
mark. The file is created whole with ``fsutil.atomic_replace``.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from hashcloud.chain.store.blocklog import HASH_LEN
from hashcloud.errors import FrameCorrupt, StoreError
from hashcloud.fsutil import atomic_replace, frame, read_frame_at

logger = logging.getLogger(__name__)

__all__ = ["SLOT_SIZE", "WATERMARK_NAME", "Mark", "Watermark"]

WATERMARK_NAME = "chain.watermark"
"""File name of the watermark, kept beside (never inside) the store directory."""
MARK_MAGIC = b"HCWM"
_BODY = struct.Struct(">QQ32s32s")  # sequence, height, genesis hash, block hash
SLOT_SIZE = 128
"""Bytes per slot: one frame (12 + 80 + 32 = 124 bytes) and padding."""


@dataclass(frozen=True, slots=True)
class Mark:
    """The highest acknowledged block: its height and hash, and the store's genesis hash."""

    height: int
    block_hash: bytes
    genesis_hash: bytes

    def describe(self) -> str:
        """``height H (block abcd…)`` for messages."""
        return f"height {self.height} (block {self.block_hash.hex()[:16]})"


def _encode_slot(sequence: int, mark: Mark) -> bytes:
    """One slot's bytes."""
    body = _BODY.pack(sequence, mark.height, mark.genesis_hash, mark.block_hash)
    return frame(MARK_MAGIC, body).ljust(SLOT_SIZE, b"\0")


def _decode_slot(fd: int, slot: int) -> tuple[int, Mark] | None:
    """``(sequence, mark)`` of slot ``slot``, or None when it is damaged or absent."""
    try:
        body = read_frame_at(fd, slot * SLOT_SIZE, MARK_MAGIC, max_body=_BODY.size)
    except FrameCorrupt:
        return None
    if len(body) != _BODY.size:
        return None
    sequence, height, genesis, block = _BODY.unpack(body)
    return sequence, Mark(height, block, genesis)


class Watermark:
    """The watermark file at ``path`` (see module doc). Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        """Remember the path; nothing is opened or created before `read` / `set`."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._sequence = -1  # sequence of the newest good slot; -1: not read yet

    def read(self) -> Mark | None:
        """The recorded mark; None when there is no file.

        Raises StoreError when the file exists but neither slot holds a good mark (the
        caller must not guess the acknowledged height).
        """
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StoreError(f"cannot read {self.path}: {exc.strerror}") from None
            try:
                slots = [s for s in (_decode_slot(fd, 0), _decode_slot(fd, 1)) if s]
            finally:
                os.close(fd)
            if not slots:
                raise StoreError(f"watermark {self.path} is damaged (no readable mark)")
            sequence, mark = max(slots, key=lambda s: s[0])
            self._sequence = sequence
            return mark

    def set(self, mark: Mark) -> None:
        """Record `mark` durably (forwards, or backwards for an accepted rollback).

        Raises OSError when the write or its fdatasync fails; the previous mark then still
        reads back (only the slot being written can be damaged).
        """
        if len(mark.block_hash) != HASH_LEN or len(mark.genesis_hash) != HASH_LEN:
            raise StoreError("watermark hashes must be 32 bytes")
        with self._lock:
            if self._fd is None and not self._open_existing():
                atomic_replace(self.path, _encode_slot(1, mark) + _encode_slot(0, mark))
                self._sequence = 1
                self._fd = os.open(self.path, os.O_RDWR)
                return
            assert self._fd is not None
            sequence = self._sequence + 1
            data = _encode_slot(sequence, mark)
            written = os.pwrite(self._fd, data, (sequence % 2) * SLOT_SIZE)
            if written != len(data):
                raise OSError(f"short write to {self.path}")
            os.fdatasync(self._fd)
            self._sequence = sequence

    def _open_existing(self) -> bool:
        """Open an existing, readable file for updates (locked); False to create it anew."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        slots = [s for s in (_decode_slot(fd, 0), _decode_slot(fd, 1)) if s]
        if not slots or os.fstat(fd).st_size != 2 * SLOT_SIZE:
            os.close(fd)
            return False
        self._sequence = max(s[0] for s in slots)
        self._fd = fd
        return True

    def close(self) -> None:
        """Close the file handle (idempotent)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

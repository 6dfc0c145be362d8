"""Durable file operations, written once (acknowledged means durable).

- `fsync_dir`: make a rename or a new directory entry durable.
- `atomic_replace`: replace a file with new bytes so a crash leaves the old or the new file,
  never a mix (temp file in the same directory, fsync, rename, fsync of the directory).
- `create_exclusive`: create a new file that must not exist yet, atomically and never
  replacing anything (O_EXCL temp file, fsync, hard link to the final name, fsync dir); key
  files and proof files use it, so a name that exists (a key!) is never overwritten.

Record framing, one format for every append-only log (the block log, SPEC 6, and the
mempool journal): `frame` encodes one record, `FrameScan` reads a log of them back and tells
a *torn tail* (what an interrupted append leaves: a valid prefix of a record) from
*corruption* (anything else, raised as `errors.FrameCorrupt`), `read_frame_at` reads one record at a
known offset. A frame is::

    magic  4 bytes, chosen by the log (b"HCRB" block records, b"HCTJ" journal records)
    length u32 big-endian, body length (at most the log's `max_body`)
    hcrc   u32 big-endian, CRC-32 of magic+length (a flipped length is caught, never
           mistaken for a torn tail)
    body   `length` bytes
    digest SHA-256(magic+length+hcrc+body), 32 bytes

This module is a bottom layer: it imports nothing from hashcloud but `hashcloud.errors`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from hashcloud.errors import FrameCorrupt

__all__ = [
    "FRAME_DIGEST_LEN",
    "FRAME_HEAD",
    "FrameScan",
    "atomic_replace",
    "create_exclusive",
    "frame",
    "frame_size",
    "fsync_dir",
    "read_frame_at",
    "read_rebuildable",
]


def read_rebuildable(path: Path | str, *, missing: str, unreadable: str,
                     logger: logging.Logger) -> bytes | None:
    """The bytes of a file the caller can rebuild (an index, a snapshot), or None: a missing
    file logs `missing` at INFO, an unreadable one `unreadable` (with the reason) at WARNING.
    The caller then rebuilds from its source of truth; it never fails on such a file."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        logger.info("%s", missing)
    except OSError as exc:
        logger.warning("%s (%s)", unreadable, exc.strerror or exc)
    return None


def fsync_dir(path: Path | str) -> None:
    """fsync directory `path`, so a rename or file creation inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    """A fresh hidden temp name beside `path` (same directory, so rename/link is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_replace(path: Path | str, data: bytes, *, durable: bool = True,
                   mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically; with `durable`, fsync file and directory.

    The temp file is removed on any failure, so an error leaves `path` as it was.
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def create_exclusive(path: Path | str, data: bytes, *, mode: int = 0o644) -> None:
    """Create `path` holding `data`, durably, raising FileExistsError if it exists.

    Readers never see a partial file (the name appears only once the content is on disk),
    and two racing creators cannot both succeed: the hard link is the atomic test-and-set.
    """
    path = Path(path)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


# ---------------------------------------------------------------------- record framing

FRAME_HEAD = struct.Struct(">4sII")
"""Frame header: magic, body length, CRC-32 of magic+length."""
FRAME_DIGEST_LEN = 32
"""Length of the SHA-256 digest that ends every frame."""

# The reasons FrameCorrupt carries (callers may match on them, e.g. to name a height).
BAD_MAGIC = "bad record magic"
BAD_HEADER = "bad record header checksum"
DIGEST_MISMATCH = "checksum mismatch"


def _check_magic(magic: bytes) -> None:
    """Frames are told apart by a 4-byte magic; refuse anything else (a programming error)."""
    if not isinstance(magic, bytes) or len(magic) != 4:
        raise ValueError("frame magic must be 4 bytes")


def _header_crc(magic: bytes, body_len: int) -> int:
    """CRC-32 protecting a frame's magic and length field."""
    return zlib.crc32(magic + struct.pack(">I", body_len))


def frame_size(body_len: int) -> int:
    """Bytes one frame with a body of `body_len` bytes takes on disk."""
    return FRAME_HEAD.size + body_len + FRAME_DIGEST_LEN


def frame(magic: bytes, body: bytes) -> bytes:
    """Return the on-disk bytes of one record: header, body, SHA-256 digest."""
    _check_magic(magic)
    body = bytes(body)
    head = FRAME_HEAD.pack(magic, len(body), _header_crc(magic, len(body)))
    return head + body + hashlib.sha256(head + body).digest()


class FrameScan:
    """Iterate `(offset, body)` over the frames of `fh` from `start` to `size` (default EOF).

    Raises FrameCorrupt at the first damaged frame. Iteration ends early, without an error,
    at a torn tail: afterwards `end` is the offset just past the last good frame and
    `torn_bytes` the length of the incomplete record after it (0 if none). A tail is torn
    only when its bytes are a valid prefix of a frame: a partial header that starts like the
    magic, or a header whose CRC checks out with the body or digest cut short. A complete
    frame whose digest fails, even at the very end, is corruption: a torn `write` cannot
    produce it, so it is never silently dropped (SPEC 6 store recovery).
    """

    def __init__(self, fh: BinaryIO, magic: bytes, *, max_body: int, start: int = 0,
                 size: int | None = None) -> None:
        """Prepare a scan; nothing is read until iteration."""
        _check_magic(magic)
        self._fh = fh
        self._magic = magic
        self._max_body = max_body
        self._start = start
        self._size = size
        self.end = start
        self.torn_bytes = 0

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Yield each good frame's offset and body, in file order."""
        fh, magic = self._fh, self._magic
        size = self._size
        if size is None:
            size = fh.seek(0, os.SEEK_END)
        fh.seek(self._start)
        pos = self._start
        head_size = FRAME_HEAD.size
        while pos < size:
            remaining = size - pos
            head = fh.read(min(head_size, remaining))
            if len(head) < head_size:
                # A partial header is torn only if what is there is a prefix of a header.
                if head[: len(magic)] != magic[: len(head)]:
                    raise FrameCorrupt(pos, BAD_MAGIC)
                self.torn_bytes = remaining
                break
            got_magic, body_len, crc = FRAME_HEAD.unpack(head)
            if got_magic != magic:
                raise FrameCorrupt(pos, BAD_MAGIC)
            if crc != _header_crc(magic, body_len) or body_len > self._max_body:
                raise FrameCorrupt(pos, BAD_HEADER)
            rec_len = head_size + body_len + FRAME_DIGEST_LEN
            if remaining < rec_len:
                self.torn_bytes = remaining
                break
            rest = fh.read(body_len + FRAME_DIGEST_LEN)
            body, digest = rest[:body_len], rest[body_len:]
            if hashlib.sha256(head + body).digest() != digest:
                raise FrameCorrupt(pos, DIGEST_MISMATCH)
            yield pos, body
            pos += rec_len
            self.end = pos
        self.end = pos


def read_frame_at(fd: int, offset: int, magic: bytes, *, max_body: int) -> bytes:
    """Read and verify the frame at `offset` of open file `fd`; return its body.

    Raises FrameCorrupt ("record truncated", "bad record header", "checksum mismatch").
    """
    head = os.pread(fd, FRAME_HEAD.size, offset)
    if len(head) != FRAME_HEAD.size:
        raise FrameCorrupt(offset, "record truncated")
    got_magic, body_len, crc = FRAME_HEAD.unpack(head)
    if got_magic != magic or crc != _header_crc(magic, body_len) or body_len > max_body:
        raise FrameCorrupt(offset, "bad record header")
    rest = os.pread(fd, body_len + FRAME_DIGEST_LEN, offset + FRAME_HEAD.size)
    body, digest = rest[:body_len], rest[body_len:]
    if len(digest) != FRAME_DIGEST_LEN or hashlib.sha256(head + body).digest() != digest:
        raise FrameCorrupt(offset, DIGEST_MISMATCH)
    return body

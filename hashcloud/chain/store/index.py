"""The block index ``blocks.idx``: a cache of where each block record starts (SPEC 6 storage).

The log is the source of truth; the index only lets a store open without re-reading every
record (``verify=False``) and is rebuilt or extended from the log whenever it is missing,
short, stale or damaged. It is maintained *incrementally*: each append to the log appends
one fixed-size entry per block, so its cost does not grow with the chain; the file is
rewritten whole only when it has to be rebuilt (missing, unreadable header, old format).

Format 2 (format 1, one whole-file checksum that forced a full rewrite on every save, is
read as "old" and rebuilt transparently)::

    header  b"HCBIDX1\\n" + u32 BE version (2) + u32 BE entry size (48)     16 bytes
    entry   u64 record offset + u32 record length + 32-byte block hash
            + u32 CRC-32 of the 44 bytes before it                        48 bytes each

Entry ``i`` describes the block at height ``i``. Entries are written without fsync (the log's
fsync is what acknowledges a block): after a crash the file may end in a partial or garbage
entry, which the per-entry CRC and the contiguity check (each record starts where the
previous one ends) detect; the good prefix is kept and the rest re-derived from the log.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from hashcloud.chain.store.blocklog import LOG_HEADER
from hashcloud.fsutil import atomic_replace, read_rebuildable

logger = logging.getLogger(__name__)

__all__ = ["INDEX_NAME", "INDEX_VERSION", "IndexEntry", "IndexWriter", "encode_entries",
           "read_index"]

INDEX_NAME = "blocks.idx"
INDEX_MAGIC = b"HCBIDX1\n"
INDEX_VERSION = 2
_HEAD = struct.Struct(">8sII")  # magic, version, entry size
_ENTRY = struct.Struct(">QI32sI")  # record offset, record length, block hash, CRC-32
_ENTRY_BODY = _ENTRY.size - 4
HEADER = _HEAD.pack(INDEX_MAGIC, INDEX_VERSION, _ENTRY.size)

IndexEntry = tuple[int, int, bytes]
"""One index entry: ``(record offset, record length, block hash)``."""


def _pack_entry(offset: int, length: int, block_hash: bytes) -> bytes:
    """One entry's bytes, with the CRC that lets a damaged entry be found on its own."""
    body = struct.pack(">QI32s", offset, length, block_hash)
    return body + struct.pack(">I", zlib.crc32(body))


def encode_entries(entries: Sequence[IndexEntry]) -> bytes:
    """The on-disk bytes of ``entries``, to append after the header (or after entry N-1)."""
    return b"".join(_pack_entry(o, n, h) for o, n, h in entries)


def read_index(path: Path) -> list[IndexEntry] | None:
    """Return the good prefix of the entries in ``path`` (maybe all, maybe none).

    None when there is no usable index at all (missing, unreadable, bad header, old format):
    the caller then rebuilds it whole. A damaged, partial or inconsistent entry ends the
    prefix (logged at WARNING); the caller re-derives what follows from the log.
    """
    data = read_rebuildable(path, missing="block index missing; building it from the log",
                            unreadable="block index unreadable; rebuilding", logger=logger)
    if data is None:
        return None
    if len(data) < _HEAD.size:
        logger.warning("block index truncated; rebuilding")
        return None
    magic, version, entry_size = _HEAD.unpack_from(data)
    if magic != INDEX_MAGIC:
        logger.warning("block index corrupt (bad header); rebuilding")
        return None
    if version != INDEX_VERSION or entry_size != _ENTRY.size:
        if version < INDEX_VERSION:
            logger.info("block index has old format %d; rebuilding it in format %d",
                        version, INDEX_VERSION)
        else:
            logger.warning("block index corrupt (format %d); rebuilding", version)
        return None
    entries: list[IndexEntry] = []
    seen: set[bytes] = set()
    expected_offset = len(LOG_HEADER)
    body = memoryview(data)[_HEAD.size :]
    whole = len(body) - len(body) % _ENTRY.size
    crc32 = zlib.crc32
    for i, (offset, length, block_hash, crc) in enumerate(_ENTRY.iter_unpack(body[:whole])):
        start = i * _ENTRY.size
        if crc32(body[start : start + _ENTRY_BODY]) != crc:
            logger.warning("block index damaged at entry %d; re-deriving the rest from the log",
                           i)
            return entries
        if offset != expected_offset or length == 0 or block_hash in seen:
            logger.warning("block index inconsistent at entry %d; re-deriving the rest from "
                           "the log", i)
            return entries
        entries.append((offset, length, block_hash))
        seen.add(block_hash)
        expected_offset = offset + length
    if whole != len(body):
        logger.warning("block index ends in a partial entry (interrupted write); ignoring it")
    return entries


class IndexWriter:
    """The writer's handle on ``blocks.idx``: brings it in step with the log, then appends.

    Best effort: an I/O error is logged and disables incremental writes for this session
    (``close`` then tries one whole rewrite); the log stays the source of truth and the next
    open repairs the index.
    """

    def __init__(self, path: Path) -> None:
        """Remember the path; nothing is opened before :meth:`sync`."""
        self.path = path
        self._fd: int | None = None
        self._count = 0  # entries in the file known to equal the store's first entries
        self.enabled = False

    def sync(self, on_disk: list[IndexEntry] | None, entries: Sequence[IndexEntry]) -> None:
        """Make the file hold exactly ``entries``, given its good prefix ``on_disk``.

        Keeps the longest prefix that agrees with the log and appends the rest; rewrites the
        file whole only when there is no usable prefix (``on_disk`` is None).
        """
        try:
            if on_disk is None:
                self._rewrite(entries)
                return
            keep = 0
            for disk_entry, log_entry in zip(on_disk, entries, strict=False):
                if disk_entry != log_entry:
                    break
                keep += 1
            self._fd = os.open(self.path, os.O_WRONLY)
            size = os.fstat(self._fd).st_size
            if keep == len(entries) and size == len(HEADER) + keep * _ENTRY.size:
                self._count, self.enabled = keep, True
                return
            if keep < len(on_disk):
                logger.info("block index stale from entry %d; re-deriving it from the log", keep)
            elif keep < len(entries):
                logger.info("block index covers %d of %d blocks; extending it from the log",
                            keep, len(entries))
            os.ftruncate(self._fd, len(HEADER) + keep * _ENTRY.size)
            self._count, self.enabled = keep, True
            self.append(entries[keep:])
        except OSError as exc:
            self._disable(exc)

    def append(self, entries: Sequence[IndexEntry]) -> None:
        """Append entries for blocks just added to the log (one ``pwrite``, no fsync)."""
        if not self.enabled or not entries:
            return
        assert self._fd is not None
        data = encode_entries(entries)
        try:
            pos = len(HEADER) + self._count * _ENTRY.size
            view = memoryview(data)
            while view:
                n = os.pwrite(self._fd, view, pos)
                view, pos = view[n:], pos + n
        except OSError as exc:
            self._disable(exc)
            return
        self._count += len(entries)

    def close(self, entries: Sequence[IndexEntry] | None = None) -> None:
        """Close the file; after a disabled session, first try to rewrite it from ``entries``."""
        if not self.enabled and entries is not None:
            try:
                self._rewrite(entries)
            except OSError as exc:
                logger.warning("could not write block index: %s", exc.strerror)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.enabled = False

    def _rewrite(self, entries: Sequence[IndexEntry]) -> None:
        """Replace the file whole (temp + rename, no fsync: it is a cache) and reopen it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        atomic_replace(self.path, HEADER + encode_entries(entries), durable=False)
        self._fd = os.open(self.path, os.O_WRONLY)
        self._count, self.enabled = len(entries), True

    def _disable(self, exc: OSError) -> None:
        """Stop incremental writes after an I/O error (the next open repairs the index)."""
        logger.warning("could not write block index: %s", exc.strerror or exc)
        self.enabled = False

"""Crash-safe flat-file chain store (SPEC 6): an append-only block log, a rebuildable index,
atomic state snapshots and a writer lock.

The store is generic over opaque block records ``(height, block_hash, payload)``: ``payload``
is the canonical msgpack encoding of a block, which this module never interprets. Files in
``data_dir``:

``blocks.log`` (source of truth)
    File header ``b"HCBLOG1\\n"`` + u32 big-endian format version (12 bytes), then records::

        magic  b"HCRB"                      4 bytes
        length u32 BE of body               4 bytes
        hcrc   u32 BE CRC-32 of magic+length 4 bytes   (a flipped length is caught, not
                                                        mistaken for a torn tail)
        body   msgpack [height, hash, payload]   length bytes (canonical, bin types)
        digest SHA-256(magic+length+hcrc+body)  32 bytes

    Heights are contiguous from 0 and block hashes are unique. A block is acknowledged only
    after its record was written and ``os.fsync``-ed.

``blocks.idx`` (cache, rebuilt from the log whenever missing, corrupt or stale)
    ``b"HCBIDX1\\n"`` + u32 version + u64 covered log size + u64 count, then ``count`` entries
    of u64 record offset + 32-byte block hash, then SHA-256 of everything before it.

``state.snap`` (latest state snapshot, written atomically)
    ``b"HCSNAP1\\n"`` + u32 version + u32 body length + msgpack [height, hash, state] +
    SHA-256 of everything before it.

``meta.json``
    ``{"format": 1, "genesis_hash": "<hex>" | null}``: binds the store to one genesis.

``LOCK``
    Held with ``flock(LOCK_EX | LOCK_NB)`` by the single writer, which writes its pid into it.

Recovery rule on open: a *torn tail* -- the log ends inside a record whose bytes so far are a
valid prefix (partial header, or a header that checks out with the body/digest cut short) --
is what an interrupted append leaves; a writer cuts it off (truncate + fsync, logged as a
warning) and a reader ignores it. Anything else is corruption and raises
``StoreError("block log corrupt at offset N: ...")`` without touching the file, including a
record of complete length whose checksum fails at the very end of the file: a torn
``write`` cannot produce that, so it is treated as damage, never silently dropped.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import msgpack

from hashcloud.errors import StoreError, StoreLocked

logger = logging.getLogger(__name__)

__all__ = [
    "ChainStore",
    "BlockRecord",
    "LOG_NAME",
    "INDEX_NAME",
    "SNAPSHOT_NAME",
    "META_NAME",
    "LOCK_NAME",
    "MAX_PAYLOAD",
]

BlockRecord = tuple[int, bytes, bytes]
"""One stored block: ``(height, block_hash, payload)``."""

LOG_NAME = "blocks.log"
INDEX_NAME = "blocks.idx"
SNAPSHOT_NAME = "state.snap"
META_NAME = "meta.json"
LOCK_NAME = "LOCK"

FORMAT_VERSION = 1
LOG_MAGIC = b"HCBLOG1\n"
LOG_HEADER = LOG_MAGIC + struct.pack(">I", FORMAT_VERSION)
RECORD_MAGIC = b"HCRB"
_REC_HEAD = struct.Struct(">4sII")  # magic, body length, CRC-32 of magic+length
_DIGEST_LEN = 32
INDEX_MAGIC = b"HCBIDX1\n"
_IDX_HEAD = struct.Struct(">8sIQQ")  # magic, version, covered log size, count
_IDX_ENTRY = struct.Struct(">Q32s")  # record offset, block hash
SNAP_MAGIC = b"HCSNAP1\n"
_SNAP_HEAD = struct.Struct(">8sII")  # magic, version, body length

HASH_LEN = 32
MAX_PAYLOAD = 64 * 1024 * 1024
"""Largest payload accepted; bounds the body length a record header may claim."""
_MAX_BODY = MAX_PAYLOAD + 64  # payload plus msgpack framing, height and hash
_READ_CHUNK = 1 << 20


def _header_crc(body_len: int) -> int:
    """CRC-32 protecting a record's magic and length field."""
    return zlib.crc32(RECORD_MAGIC + struct.pack(">I", body_len))


def encode_record(height: int, block_hash: bytes, payload: bytes) -> bytes:
    """Return the on-disk bytes of one block record (header, body, digest)."""
    body = msgpack.packb([height, block_hash, payload], use_bin_type=True)
    head = _REC_HEAD.pack(RECORD_MAGIC, len(body), _header_crc(len(body)))
    return head + body + hashlib.sha256(head + body).digest()


def _decode_body(body: bytes) -> BlockRecord:
    """Decode a record body, rejecting anything but canonical ``[int, bytes32, bytes]``."""
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
    if msgpack.packb(obj, use_bin_type=True) != body:
        raise ValueError("non-canonical body")
    return height, block_hash, payload


def _corrupt(offset: int, why: str) -> StoreError:
    """Build the one error shape used for every log corruption."""
    return StoreError(f"block log corrupt at offset {offset}: {why}")


def _fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or file creation inside it is durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: temp file in the same dir, fsync, rename."""
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


class _ScanResult:
    """What a log scan found: good records, where they end, and a torn tail if any."""

    __slots__ = ("offsets", "hashes", "end", "torn_bytes")

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.hashes: list[bytes] = []
        self.end = 0
        self.torn_bytes = 0


def _scan_log(
    path: Path, start: int, first_height: int, known_hashes: dict[bytes, int]
) -> _ScanResult:
    """Verify records from ``start`` to end of file, expecting heights from ``first_height``.

    Raises StoreError at the first corruption; a torn tail is reported in ``torn_bytes``.
    """
    res = _ScanResult()
    res.end = start
    seen: dict[bytes, int] = {}
    with open(path, "rb", buffering=_READ_CHUNK) as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(start)
        pos = start
        height = first_height
        while pos < size:
            remaining = size - pos
            head = fh.read(min(_REC_HEAD.size, remaining))
            if len(head) < _REC_HEAD.size:
                # A partial header is torn only if what is there is a prefix of a header.
                if head[: len(RECORD_MAGIC)] != RECORD_MAGIC[: len(head)]:
                    raise _corrupt(pos, "bad record magic")
                res.torn_bytes = remaining
                break
            magic, body_len, crc = _REC_HEAD.unpack(head)
            if magic != RECORD_MAGIC:
                raise _corrupt(pos, "bad record magic")
            if crc != _header_crc(body_len) or body_len > _MAX_BODY:
                raise _corrupt(pos, "bad record header checksum")
            rec_len = _REC_HEAD.size + body_len + _DIGEST_LEN
            if remaining < rec_len:
                res.torn_bytes = remaining
                break
            rest = fh.read(body_len + _DIGEST_LEN)
            body, digest = rest[:body_len], rest[body_len:]
            if hashlib.sha256(head + body).digest() != digest:
                raise _corrupt(pos, f"checksum mismatch in record of height {height}")
            try:
                rec_height, block_hash, _ = _decode_body(body)
            except ValueError as exc:
                raise _corrupt(pos, str(exc)) from None
            if rec_height != height:
                raise _corrupt(pos, f"height {rec_height} where {height} was expected")
            if block_hash in known_hashes or block_hash in seen:
                raise _corrupt(pos, f"duplicate block hash {block_hash.hex()}")
            seen[block_hash] = height
            res.offsets.append(pos)
            res.hashes.append(block_hash)
            pos += rec_len
            height += 1
        res.end = pos
    return res


class ChainStore:
    """Flat-file store of opaque block records with crash recovery (SPEC 6).

    One writer (holding ``LOCK``) may append; any number of readers (``readonly=True``) may
    read at the same time, never modify a file and call :meth:`refresh` to see new blocks.
    ``verify=True`` (default) checks every record's checksum on open; ``verify=False``
    trusts a valid index for the prefix it covers and only scans the log past it (faster
    open for large chains; :meth:`verify_log` still audits everything). Reads re-check the
    checksum of each record they return. Methods are safe to call from several threads.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        readonly: bool = False,
        genesis_hash: bytes | None = None,
        verify: bool = True,
    ) -> None:
        """Open (creating it in writer mode if needed) the store in ``data_dir``.

        Raises StoreLocked if another writer holds the lock, StoreError if the store is
        missing (readonly), bound to another genesis, or its block log is corrupt.
        """
        self.data_dir = Path(data_dir)
        self.readonly = readonly
        self._mutex = threading.RLock()
        self._lock_fd: int | None = None
        self._read_fd: int | None = None
        self._write_fd: int | None = None
        self._offsets: list[int] = []
        self._hashes: list[bytes] = []
        self._by_hash: dict[bytes, int] = {}
        self._end = len(LOG_HEADER)
        self._index_dirty = False
        self._failed: str | None = None
        self._closed = False
        self._genesis_hash: bytes | None = None
        try:
            self._open(genesis_hash, verify)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        *,
        genesis_hash: bytes | None = None,
        readonly: bool = False,
        verify: bool = True,
    ) -> ChainStore:
        """Open the store bound to ``genesis_hash`` (recorded on first writer open)."""
        return cls(data_dir, readonly=readonly, genesis_hash=genesis_hash, verify=verify)

    # ----------------------------------------------------------------- opening / closing

    def _open(self, genesis_hash: bytes | None, verify: bool) -> None:
        """Lock, check genesis binding, recover the log and load or rebuild the index."""
        log_path = self.data_dir / LOG_NAME
        if self.readonly:
            if not log_path.is_file():
                raise StoreError(f"no chain store at {self.data_dir}")
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
            self._remove_stale_temp_files()
        self._bind_genesis(genesis_hash)
        if not log_path.exists():
            _write_atomic(log_path, LOG_HEADER)
        self._check_log_header(log_path)
        self._read_fd = os.open(log_path, os.O_RDONLY)
        if not self._load_from_index(verify):
            self._full_scan()
        if not self.readonly:
            self._write_fd = os.open(log_path, os.O_WRONLY)
            if self._index_dirty:
                self._persist_index()

    def _acquire_lock(self) -> None:
        """Take the exclusive writer lock or raise StoreLocked naming the holder's pid."""
        fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise StoreError(f"cannot lock chain store: {exc.strerror}") from None
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(f"chain store is locked by another process (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _remove_stale_temp_files(self) -> None:
        """Delete temp files left by a writer killed during an atomic replace."""
        for tmp in self.data_dir.glob("*.tmp.*"):
            logger.info("removing leftover temp file %s", tmp.name)
            tmp.unlink(missing_ok=True)

    def _bind_genesis(self, genesis_hash: bytes | None) -> None:
        """Check ``meta.json`` against ``genesis_hash``; record it when the writer can."""
        if genesis_hash is not None and (
            not isinstance(genesis_hash, bytes) or len(genesis_hash) != HASH_LEN
        ):
            raise StoreError("genesis hash must be 32 bytes")
        meta_path = self.data_dir / META_NAME
        recorded: bytes | None = None
        exists = meta_path.exists()
        if exists:
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                raw = meta["genesis_hash"]
                recorded = None if raw is None else bytes.fromhex(raw)
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
                raise StoreError(f"{META_NAME} unreadable: {exc.__class__.__name__}") from None
            if meta.get("format") != FORMAT_VERSION:
                raise StoreError(f"unsupported store format {meta.get('format')!r}")
        if recorded is not None and genesis_hash is not None and recorded != genesis_hash:
            raise StoreError(
                "store belongs to a different genesis: "
                f"recorded {recorded.hex()}, expected {genesis_hash.hex()}"
            )
        log_path = self.data_dir / LOG_NAME
        fresh = not log_path.exists() or log_path.stat().st_size <= len(LOG_HEADER)
        if recorded is None and genesis_hash is not None and not self.readonly and fresh:
            # Only a store with no blocks is bound here; one that already has blocks is bound
            # by `bind_genesis` once its block 0 has been checked against this genesis.
            recorded = genesis_hash
            exists = False  # rewrite below
        if not exists and not self.readonly:
            meta = {
                "format": FORMAT_VERSION,
                "genesis_hash": None if recorded is None else recorded.hex(),
            }
            _write_atomic(meta_path, json.dumps(meta, sort_keys=True).encode() + b"\n")
        self._genesis_hash = recorded

    def bind_genesis(self, genesis_hash: bytes) -> None:
        """Record the genesis of an unbound store whose block 0 the caller has checked."""
        if self.readonly:
            raise StoreError("a read-only store cannot be bound")
        if self._genesis_hash is not None:
            if self._genesis_hash != genesis_hash:
                raise StoreError("store belongs to a different genesis")
            return
        logger.info("binding chain store to genesis %s", genesis_hash.hex())
        meta = {"format": FORMAT_VERSION, "genesis_hash": genesis_hash.hex()}
        _write_atomic(self.data_dir / META_NAME, json.dumps(meta, sort_keys=True).encode() + b"\n")
        self._genesis_hash = genesis_hash

    @staticmethod
    def _check_log_header(log_path: Path) -> None:
        """Refuse a log whose file header is missing or wrong (never repaired)."""
        with open(log_path, "rb") as fh:
            if fh.read(len(LOG_HEADER)) != LOG_HEADER:
                raise _corrupt(0, "bad file header")

    def _full_scan(self) -> None:
        """Rebuild the in-memory index from the whole log, recovering a torn tail."""
        res = _scan_log(self.data_dir / LOG_NAME, len(LOG_HEADER), 0, {})
        self._offsets, self._hashes = res.offsets, res.hashes
        self._by_hash = {h: i for i, h in enumerate(res.hashes)}
        self._end = res.end
        self._handle_torn_tail(res)
        if not self.readonly:
            self._compare_persisted_index()

    def _handle_torn_tail(self, res: _ScanResult) -> None:
        """Cut a torn tail off (writer) or ignore it as not yet written (reader)."""
        if not res.torn_bytes:
            return
        if self.readonly:
            logger.debug("block log: ignoring %d-byte incomplete tail", res.torn_bytes)
            return
        with open(self.data_dir / LOG_NAME, "r+b") as fh:
            fh.truncate(res.end)
            fh.flush()
            os.fsync(fh.fileno())
        logger.warning(
            "block log: removed %d bytes of a torn last record at offset %d (interrupted append)",
            res.torn_bytes,
            res.end,
        )

    def _read_index_file(self) -> tuple[int, list[int], list[bytes]] | None:
        """Parse ``blocks.idx``; None (with a log line) when missing or corrupt."""
        path = self.data_dir / INDEX_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            logger.info("block index missing; building it from the log")
            return None
        except OSError as exc:
            logger.warning("block index unreadable (%s); rebuilding", exc.strerror)
            return None
        head_len = _IDX_HEAD.size
        if len(data) < head_len + _DIGEST_LEN:
            logger.warning("block index truncated; rebuilding")
            return None
        magic, version, covered, count = _IDX_HEAD.unpack_from(data)
        expected_len = head_len + count * _IDX_ENTRY.size + _DIGEST_LEN
        if (
            magic != INDEX_MAGIC
            or version != FORMAT_VERSION
            or len(data) != expected_len
            or hashlib.sha256(data[:-_DIGEST_LEN]).digest() != data[-_DIGEST_LEN:]
        ):
            logger.warning("block index corrupt; rebuilding")
            return None
        offsets: list[int] = []
        hashes: list[bytes] = []
        for off, block_hash in _IDX_ENTRY.iter_unpack(data[head_len:-_DIGEST_LEN]):
            offsets.append(off)
            hashes.append(block_hash)
        return covered, offsets, hashes

    def _compare_persisted_index(self) -> None:
        """After a full scan, mark the persisted index dirty unless it matches exactly."""
        parsed = self._read_index_file()
        if parsed is None:
            self._index_dirty = True
            return
        covered, offsets, hashes = parsed
        if covered != self._end or offsets != self._offsets or hashes != self._hashes:
            logger.info("block index stale or inconsistent with the log; rebuilding")
            self._index_dirty = True

    def _load_from_index(self, verify: bool) -> bool:
        """Fast open: trust a valid index prefix and scan only past it. False to fall back."""
        if verify:
            return False
        parsed = self._read_index_file()
        if parsed is None:
            return False
        covered, offsets, hashes = parsed
        log_size = os.fstat(self._read_fd).st_size
        consistent = covered <= log_size and len(set(hashes)) == len(hashes)
        if consistent and offsets:
            try:
                rec = self._read_record_at(offsets[-1])
            except StoreError:
                rec = None
            consistent = (
                rec is not None
                and rec[0] == len(offsets) - 1
                and rec[1] == hashes[-1]
                and offsets[-1] + len(encode_record(*rec)) == covered
            )
        elif consistent:
            consistent = covered == len(LOG_HEADER)
        if not consistent:
            logger.info("block index inconsistent with the log; rebuilding")
            return False
        by_hash = {h: i for i, h in enumerate(hashes)}
        res = _scan_log(self.data_dir / LOG_NAME, covered, len(offsets), by_hash)
        self._offsets = offsets + res.offsets
        self._hashes = hashes + res.hashes
        by_hash.update((h, len(offsets) + i) for i, h in enumerate(res.hashes))
        self._by_hash = by_hash
        self._end = res.end
        self._index_dirty = bool(res.offsets)
        self._handle_torn_tail(res)
        return True

    def _persist_index(self) -> None:
        """Write ``blocks.idx`` atomically, best effort (the log stays the source of truth)."""
        parts = [_IDX_HEAD.pack(INDEX_MAGIC, FORMAT_VERSION, self._end, len(self._offsets))]
        parts.extend(
            _IDX_ENTRY.pack(o, h) for o, h in zip(self._offsets, self._hashes, strict=True)
        )
        data = b"".join(parts)
        try:
            _write_atomic(
                self.data_dir / INDEX_NAME, data + hashlib.sha256(data).digest(), durable=False
            )
        except OSError as exc:
            logger.warning("could not write block index: %s", exc.strerror)
            return
        self._index_dirty = False

    def close(self) -> None:
        """Persist the index (writer), close files and release the lock. Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            if self._write_fd is not None and self._index_dirty and self._failed is None:
                self._persist_index()
            for fd in (self._write_fd, self._read_fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._write_fd = self._read_fd = self._lock_fd = None

    def __enter__(self) -> ChainStore:
        """Return the open store."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()

    def _check_open(self) -> None:
        """Raise StoreError when the store was closed."""
        if self._closed:
            raise StoreError("chain store is closed")

    # ------------------------------------------------------------------------- writing

    def append_block(self, height: int, block_hash: bytes, payload: bytes) -> None:
        """Append one block durably (written and fsync-ed before returning).

        Raises StoreError for a height other than ``self.height + 1``, a hash that is not
        32 bytes or already stored, an oversized payload, a readonly store or an I/O error.
        """
        self.append_blocks([(height, block_hash, payload)])

    def append_blocks(self, records: Iterable[BlockRecord]) -> None:
        """Append several contiguous blocks with one write and one fsync (e.g. during sync).

        All-or-nothing from the caller's view: validation errors append nothing, and after
        an I/O error the log is cut back to its previous end.
        """
        with self._mutex:
            self._check_open()
            if self.readonly:
                raise StoreError("chain store is open read-only")
            if self._failed is not None:
                raise StoreError(f"chain store unusable after I/O error ({self._failed})")
            encoded: list[bytes] = []
            new_hashes: list[bytes] = []
            batch_hashes: set[bytes] = set()
            expected = len(self._offsets)
            for height, block_hash, payload in records:
                payload = self._check_record(expected, height, block_hash, payload)
                if block_hash in self._by_hash or block_hash in batch_hashes:
                    raise StoreError(f"block hash {block_hash.hex()} already stored")
                batch_hashes.add(block_hash)
                encoded.append(encode_record(height, block_hash, payload))
                new_hashes.append(block_hash)
                expected += 1
            if not encoded:
                return
            self._write_durably(b"".join(encoded))
            pos = self._end
            for rec, block_hash in zip(encoded, new_hashes, strict=True):
                self._by_hash[block_hash] = len(self._offsets)
                self._offsets.append(pos)
                self._hashes.append(block_hash)
                pos += len(rec)
            self._end = pos
            self._index_dirty = True

    @staticmethod
    def _check_record(expected: int, height: int, block_hash: bytes, payload: bytes) -> bytes:
        """Validate one record to append; return the payload as ``bytes``."""
        if type(height) is not int or height != expected:
            raise StoreError(f"cannot append block at height {height}: expected {expected}")
        if not isinstance(block_hash, bytes) or len(block_hash) != HASH_LEN:
            raise StoreError("block hash must be 32 bytes")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise StoreError("block payload must be bytes")
        payload = bytes(payload)
        if len(payload) > MAX_PAYLOAD:
            raise StoreError(f"block payload too large ({len(payload)} bytes)")
        return payload

    def _write_durably(self, data: bytes) -> None:
        """Write ``data`` at the log end and fsync; on failure cut back and raise."""
        assert self._write_fd is not None
        fd = self._write_fd
        try:
            view = memoryview(data)
            pos = self._end
            while view:
                n = os.pwrite(fd, view, pos)
                view = view[n:]
                pos += n
            os.fsync(fd)
        except OSError as exc:
            # After a failed write/fsync the page cache can't be trusted: cut back and
            # refuse further appends until the store is reopened (and re-scanned).
            try:
                os.ftruncate(fd, self._end)
                os.fsync(fd)
            except OSError:
                pass
            self._failed = exc.strerror or exc.__class__.__name__
            raise StoreError(f"cannot append to block log: {self._failed}") from None

    # --------------------------------------------------------------------- snapshots

    def write_snapshot(self, height: int, block_hash: bytes, state_bytes: bytes) -> None:
        """Atomically replace the state snapshot taken after block ``height``.

        Raises StoreError if the store is readonly or ``(height, block_hash)`` is not a
        block in the log (a snapshot must describe a stored block).
        """
        with self._mutex:
            self._check_open()
            if self.readonly:
                raise StoreError("chain store is open read-only")
            if not (0 <= height < len(self._hashes)) or self._hashes[height] != block_hash:
                raise StoreError(f"snapshot does not match a stored block at height {height}")
            body = msgpack.packb([height, block_hash, bytes(state_bytes)], use_bin_type=True)
            data = _SNAP_HEAD.pack(SNAP_MAGIC, FORMAT_VERSION, len(body)) + body
            try:
                _write_atomic(self.data_dir / SNAPSHOT_NAME, data + hashlib.sha256(data).digest())
            except OSError as exc:
                raise StoreError(f"cannot write snapshot: {exc.strerror}") from None

    def read_snapshot(self) -> tuple[int, bytes, bytes] | None:
        """Return ``(height, block_hash, state_bytes)`` of the latest snapshot, or None.

        None (with a log line) when there is no snapshot, it is corrupt, or it is stale
        (its block is not in the log): the caller then rebuilds state by replaying blocks.
        """
        with self._mutex:
            self._check_open()
            try:
                data = (self.data_dir / SNAPSHOT_NAME).read_bytes()
            except FileNotFoundError:
                logger.info("no state snapshot; state will be rebuilt by replay")
                return None
            except OSError as exc:
                logger.warning("state snapshot unreadable (%s); ignoring it", exc.strerror)
                return None
            parsed = self._parse_snapshot(data)
            if parsed is None:
                logger.warning("state snapshot corrupt; ignoring it")
                return None
            height, block_hash, _ = parsed
            if not (0 <= height < len(self._hashes)) or self._hashes[height] != block_hash:
                logger.warning(
                    "state snapshot at height %d does not match the block log; ignoring it",
                    height,
                )
                return None
            return parsed

    @staticmethod
    def _parse_snapshot(data: bytes) -> tuple[int, bytes, bytes] | None:
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

    # ------------------------------------------------------------------------- reading

    @property
    def height(self) -> int:
        """Height of the head block, or -1 when the store holds no block."""
        return len(self._offsets) - 1

    @property
    def head_hash(self) -> bytes | None:
        """Hash of the head block, or None when the store is empty."""
        hashes = self._hashes
        return hashes[-1] if hashes else None

    @property
    def genesis_hash(self) -> bytes | None:
        """Genesis hash recorded in ``meta.json`` (None if the store was never bound)."""
        return self._genesis_hash

    def _read_record_at(self, offset: int) -> BlockRecord:
        """Read and verify the record at ``offset``; StoreError if it does not check out."""
        assert self._read_fd is not None
        head = os.pread(self._read_fd, _REC_HEAD.size, offset)
        if len(head) != _REC_HEAD.size:
            raise _corrupt(offset, "record truncated")
        magic, body_len, crc = _REC_HEAD.unpack(head)
        if magic != RECORD_MAGIC or crc != _header_crc(body_len) or body_len > _MAX_BODY:
            raise _corrupt(offset, "bad record header")
        rest = os.pread(self._read_fd, body_len + _DIGEST_LEN, offset + _REC_HEAD.size)
        body, digest = rest[:body_len], rest[body_len:]
        if len(digest) != _DIGEST_LEN or hashlib.sha256(head + body).digest() != digest:
            raise _corrupt(offset, "checksum mismatch")
        try:
            return _decode_body(body)
        except ValueError as exc:
            raise _corrupt(offset, str(exc)) from None

    def find_block(self, height: int) -> bytes | None:
        """Return the payload of the block at ``height``, or None if there is none."""
        with self._mutex:
            self._check_open()
            if type(height) is not int or not 0 <= height < len(self._offsets):
                return None
            rec = self._read_record_at(self._offsets[height])
            if rec[0] != height or rec[1] != self._hashes[height]:
                raise _corrupt(self._offsets[height], "record does not match the index")
            return rec[2]

    def get_block(self, height: int) -> bytes:
        """Return the payload of the block at ``height``; StoreError if there is none."""
        payload = self.find_block(height)
        if payload is None:
            raise StoreError(f"no block at height {height}")
        return payload

    def find_block_hash(self, height: int) -> bytes | None:
        """Return the hash of the block at ``height`` (from the index), or None."""
        hashes = self._hashes
        if type(height) is not int or not 0 <= height < len(hashes):
            return None
        return hashes[height]

    def find_by_hash(self, block_hash: bytes) -> tuple[int, bytes] | None:
        """Return ``(height, payload)`` of the block with ``block_hash``, or None."""
        height = self._by_hash.get(block_hash)
        if height is None:
            return None
        payload = self.find_block(height)
        return None if payload is None else (height, payload)

    def get_by_hash(self, block_hash: bytes) -> tuple[int, bytes]:
        """Return ``(height, payload)`` of the block with ``block_hash``; StoreError if none."""
        found = self.find_by_hash(block_hash)
        if found is None:
            shown = block_hash.hex() if isinstance(block_hash, bytes) else repr(block_hash)
            raise StoreError(f"no block with hash {shown}")
        return found

    def has_block_hash(self, block_hash: bytes) -> bool:
        """True if a block with ``block_hash`` is stored."""
        return block_hash in self._by_hash

    def iter_blocks(self, start: int = 0) -> Iterator[BlockRecord]:
        """Yield ``(height, block_hash, payload)`` from ``start`` to the head, in order.

        Blocks appended while iterating are included; each record is checksum-verified.
        """
        if type(start) is not int or start < 0:
            raise StoreError(f"bad start height {start!r}")
        height = start
        while True:
            with self._mutex:
                self._check_open()
                if height >= len(self._offsets):
                    return
                rec = self._read_record_at(self._offsets[height])
            if rec[0] != height:
                raise _corrupt(self._offsets[height], "record does not match the index")
            yield rec
            height += 1

    def refresh(self) -> int:
        """Pick up blocks appended by the writer since open (readers); return the head height.

        An incomplete record at the end is ignored until the writer finishes it.
        """
        with self._mutex:
            self._check_open()
            res = _scan_log(self.data_dir / LOG_NAME, self._end, len(self._offsets), self._by_hash)
            base = len(self._offsets)
            self._offsets.extend(res.offsets)
            self._hashes.extend(res.hashes)
            self._by_hash.update((h, base + i) for i, h in enumerate(res.hashes))
            self._end = res.end
            if res.offsets and not self.readonly:
                self._index_dirty = True
            return self.height

    def writer_active(self) -> bool:
        """True if some process holds the writer lock (a node is running on this store)."""
        if not self.readonly:
            return True
        try:
            fd = os.open(self.data_dir / LOCK_NAME, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def verify_log(self, *, allow_torn_tail: bool | None = None) -> None:
        """Re-read and verify the whole log; StoreError at the first problem (audit).

        Checks the file header, every record's checksum, contiguous heights, unique hashes,
        agreement with the in-memory index and that no bytes follow the last block. An
        incomplete last record is tolerated only while a writer may be appending it
        (default: when a reader sees the writer lock held).
        """
        with self._mutex:
            self._check_open()
            log_path = self.data_dir / LOG_NAME
            self._check_log_header(log_path)
            res = _scan_log(log_path, len(LOG_HEADER), 0, {})
            if allow_torn_tail is None:
                allow_torn_tail = self.readonly and self.writer_active()
            if res.torn_bytes and not allow_torn_tail:
                raise _corrupt(res.end, f"{res.torn_bytes} bytes of an incomplete last record "
                                        "(an interrupted append; the next writer cuts it)")
            known = len(self._offsets)
            if res.offsets[:known] != self._offsets or res.hashes[:known] != self._hashes:
                raise StoreError("block log does not match the store's index (file replaced?)")

"""`ChainStore`: the crash-safe flat-file chain store, over its five files (SPEC 6 storage).

The store is generic over opaque block records ``(height, block_hash, payload)``: ``payload``
is the canonical msgpack encoding of a block, which the store never interprets. One module
per file format: ``blocklog`` (``blocks.log``, source of truth), ``index`` (``blocks.idx``,
rebuildable cache), ``snapshot`` (``state.snap``), ``meta`` (``meta.json``, genesis binding),
``lock`` (``LOCK``, the single writer). A block is acknowledged only after its record was
written and ``os.fsync``-ed.

Rollback guard: the block log alone cannot show that it was replaced by an older copy or
cut at a record boundary. A node attaches its ``watermark.Watermark`` (a file kept outside
the store directory) with :meth:`ChainStore.guard`: the store must hold the acknowledged
block, and every append moves the watermark forward before it returns (SPEC 6 storage).

Disk full: a failed append cuts the log back to its previous end and reports the failure in
:attr:`ChainStore.write_problem`; the next append tries again (after re-checking the log's
end), so the store resumes by itself once space returns.

Recovery rule on open: a *torn tail* -- the log ends inside a record whose bytes so far are a
valid prefix -- is what an interrupted append leaves; a writer cuts it off (truncate + fsync,
logged as a warning) and a reader ignores it. Anything else is corruption and raises
``StoreError("block log corrupt at offset N: ...")`` without touching the file, including a
record of complete length whose checksum fails at the very end of the file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from hashcloud.chain.store.blocklog import (
    HASH_LEN,
    LOG_HEADER,
    LOG_NAME,
    MAX_PAYLOAD,
    BlockRecord,
    ScanResult,
    check_log_header,
    corrupt,
    create_log,
    cut_torn_tail,
    encode_record,
    read_record_at,
    scan_log,
)
from hashcloud.chain.store.index import INDEX_NAME, IndexEntry, IndexWriter, read_index
from hashcloud.chain.store.lock import acquire_writer_lock, writer_active
from hashcloud.chain.store.meta import META_NAME, read_meta, write_meta
from hashcloud.chain.store.snapshot import SNAPSHOT_NAME, Snapshot, read_snapshot, write_snapshot
from hashcloud.chain.store.watermark import Mark, Watermark
from hashcloud.errors import StoreError, StoreRolledBack

logger = logging.getLogger(__name__)

__all__ = ["ChainStore"]

# Files an atomic replace may leave a temp copy of when the writer is killed mid-write.
_REPLACED_FILES = (INDEX_NAME, SNAPSHOT_NAME, META_NAME, LOG_NAME)


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
        self._index = IndexWriter(self.data_dir / INDEX_NAME)
        self._offsets: list[int] = []
        self._hashes: list[bytes] = []
        self._by_hash: dict[bytes, int] = {}
        self._end = len(LOG_HEADER)
        self._failed: str | None = None  # the log's end is uncertain since this I/O error
        self._write_problem: str | None = None  # why the last append failed (until one works)
        self._watermark: Watermark | None = None
        self._watermark_failed = False
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
        """Lock, check genesis binding, recover the log and load, extend or rebuild the index."""
        log_path = self.data_dir / LOG_NAME
        if self.readonly:
            if not log_path.is_file():
                raise StoreError(f"no chain store at {self.data_dir}")
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = acquire_writer_lock(self.data_dir)
            self._remove_stale_temp_files()
        self._bind_genesis(genesis_hash)
        if not log_path.exists():
            create_log(log_path)
        check_log_header(log_path)
        self._read_fd = os.open(log_path, os.O_RDONLY)
        # A verifying reader never needs the index; everyone else reads its good prefix.
        on_disk = None if (verify and self.readonly) else read_index(self.data_dir / INDEX_NAME)
        if verify or not self._load_from_index(on_disk):
            self._full_scan()
        if not self.readonly:
            self._write_fd = os.open(log_path, os.O_WRONLY)
            self._index.sync(on_disk, self._index_entries(0))

    def _remove_stale_temp_files(self) -> None:
        """Delete temp files left by a writer killed during an atomic replace."""
        leftovers = set(self.data_dir.glob("*.tmp.*"))  # names of older versions
        for name in _REPLACED_FILES:
            leftovers.update(self.data_dir.glob(f".{name}.*.tmp"))  # fsutil.atomic_replace
        for tmp in sorted(leftovers):
            logger.info("removing leftover temp file %s", tmp.name)
            tmp.unlink(missing_ok=True)

    def _bind_genesis(self, genesis_hash: bytes | None) -> None:
        """Check ``meta.json`` against ``genesis_hash``; record it when the writer can."""
        if genesis_hash is not None and (
            not isinstance(genesis_hash, bytes) or len(genesis_hash) != HASH_LEN
        ):
            raise StoreError("genesis hash must be 32 bytes")
        meta_path = self.data_dir / META_NAME
        exists, recorded = read_meta(meta_path)
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
            write_meta(meta_path, recorded)
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
        write_meta(self.data_dir / META_NAME, genesis_hash)
        self._genesis_hash = genesis_hash

    def _full_scan(self) -> None:
        """Rebuild the in-memory index from the whole log, recovering a torn tail."""
        res = scan_log(self.data_dir / LOG_NAME, len(LOG_HEADER), 0, {})
        self._offsets, self._hashes = res.offsets, res.hashes
        self._by_hash = {h: i for i, h in enumerate(res.hashes)}
        self._end = res.end
        self._handle_torn_tail(res)

    def _handle_torn_tail(self, res: ScanResult) -> None:
        """Cut a torn tail off (writer) or ignore it as not yet written (reader)."""
        if not res.torn_bytes:
            return
        if self.readonly:
            logger.debug("block log: ignoring %d-byte incomplete tail", res.torn_bytes)
            return
        cut_torn_tail(self.data_dir / LOG_NAME, res.end, res.torn_bytes)

    def _load_from_index(self, on_disk: list[IndexEntry] | None) -> bool:
        """Fast open: trust the index's good prefix and scan only past it. False to fall back."""
        if on_disk is None:
            return False
        assert self._read_fd is not None
        covered = on_disk[-1][0] + on_disk[-1][1] if on_disk else len(LOG_HEADER)
        consistent = covered <= os.fstat(self._read_fd).st_size
        if consistent and on_disk:
            # The last entry must describe the log's record exactly (height, hash, length).
            offset, length, last_hash = on_disk[-1]
            try:
                rec = read_record_at(self._read_fd, offset)
            except StoreError:
                rec = None
            consistent = (
                rec is not None
                and rec[0] == len(on_disk) - 1
                and rec[1] == last_hash
                and len(encode_record(*rec)) == length
            )
        if not consistent:
            logger.info("block index inconsistent with the log; rebuilding")
            return False
        offsets = [entry[0] for entry in on_disk]
        hashes = [entry[2] for entry in on_disk]
        by_hash = {h: i for i, h in enumerate(hashes)}
        res = scan_log(self.data_dir / LOG_NAME, covered, len(offsets), by_hash)
        self._offsets = offsets + res.offsets
        self._hashes = hashes + res.hashes
        by_hash.update((h, len(offsets) + i) for i, h in enumerate(res.hashes))
        self._by_hash = by_hash
        self._end = res.end
        self._handle_torn_tail(res)
        return True

    def _index_entries(self, start: int) -> list[IndexEntry]:
        """Index entries ``(offset, length, hash)`` of the stored blocks from ``start``."""
        offsets, hashes = self._offsets, self._hashes
        if start >= len(offsets):
            return []
        ends = offsets[start + 1 :] + [self._end]
        return [
            (offsets[i], end - offsets[i], hashes[i])
            for i, end in zip(range(start, len(offsets)), ends, strict=True)
        ]

    def close(self) -> None:
        """Close files (the index is already up to date) and release the lock. Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            # Only a writer whose index writes failed earlier rewrites it here, once.
            entries = None
            if self._write_fd is not None and self._failed is None and not self._index.enabled:
                entries = self._index_entries(0)
            self._index.close(entries)
            if self._watermark is not None:
                self._watermark.close()
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
        an I/O error the log is cut back to its previous end. The index gets one entry per
        block, appended after the fsync (its cost does not depend on the height).
        """
        with self._mutex:
            self._check_open()
            if self.readonly:
                raise StoreError("chain store is open read-only")
            if self._failed is not None:
                self._recover_end()
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
            entries: list[IndexEntry] = []
            for rec, block_hash in zip(encoded, new_hashes, strict=True):
                self._by_hash[block_hash] = len(self._offsets)
                self._offsets.append(pos)
                self._hashes.append(block_hash)
                entries.append((pos, len(rec), block_hash))
                pos += len(rec)
            self._end = pos
            self._index.append(entries)
            if self._write_problem is not None:
                logger.warning("block log writable again (after: %s)", self._write_problem)
                self._write_problem = None
            self._advance_watermark()

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
            # Nothing of this write is acknowledged: cut the log back to its previous end
            # (every record before it was fsync-ed by an earlier, successful append). Until
            # that is confirmed, the next append first re-checks the end (`_recover_end`).
            reason = exc.strerror or exc.__class__.__name__
            if self._write_problem != reason:
                logger.error("cannot append to block log: %s (retrying with the next block)",
                             reason)
            self._write_problem = reason
            self._failed = reason
            try:
                self._recover_end()
            except StoreError:
                pass
            raise StoreError(f"cannot append to block log: {reason}") from None

    def _recover_end(self) -> None:
        """After a failed append: cut the log back to the last acknowledged record, make
        that durable, reopen the write handle and re-read the last record; StoreError if
        any of it fails (the next append tries again). Locked."""
        assert self._write_fd is not None
        try:
            os.ftruncate(self._write_fd, self._end)
            os.fsync(self._write_fd)
            # A fresh handle: an error reported on the old one must not hide a later one.
            new_fd = os.open(self.data_dir / LOG_NAME, os.O_WRONLY)
            os.close(self._write_fd)
            self._write_fd = new_fd
            if os.fstat(new_fd).st_size != self._end:
                raise OSError(f"block log is not {self._end} bytes long after the cut")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StoreError(f"chain store unusable after I/O error ({self._failed}; "
                             f"recovery: {reason})") from None
        if self._offsets:
            assert self._read_fd is not None
            rec = read_record_at(self._read_fd, self._offsets[-1])
            if rec[1] != self._hashes[-1]:
                raise corrupt(self._offsets[-1], "last record changed after an I/O error")
        self._failed = None

    @property
    def write_problem(self) -> str | None:
        """Why the last append failed (e.g. "No space left on device"), or None when the
        store can write: cleared by the next append that succeeds."""
        return self._write_problem

    # --------------------------------------------------------------------- watermark

    def guard(self, watermark: Watermark, *, accept_rollback: bool = False) -> int | None:
        """Check the store holds the block `watermark` records, then keep it current.

        A store that is behind the mark, or holds another block at its height, raises
        StoreRolledBack naming both heights, unless `accept_rollback`: then the mark is
        reset to this store's head (logged at ERROR) and the number of acknowledged blocks
        given up is returned. A missing watermark is created from the head; one behind the
        head (the node stopped between an append and its watermark update) moves forward.
        Afterwards every append updates the watermark before it returns. None when nothing
        was rolled back.
        """
        with self._mutex:
            self._check_open()
            if self.readonly:
                raise StoreError("a read-only store cannot be guarded")
            if self.height < 0 or self._genesis_hash is None:
                raise StoreError("guard a store only once it holds its bound genesis block")
            try:
                mark = watermark.read()
                problem = None if mark is None else self.rollback_problem(mark)
            except StoreError as exc:  # a damaged watermark: the height is unknown
                mark, problem = None, str(exc)
            lost: int | None = None
            if problem is not None:
                if not accept_rollback:
                    raise StoreRolledBack(problem)
                lost = max(0, mark.height - self.height) if mark is not None else 0
                logger.error("ACCEPTING ROLLBACK (--accept-rollback): %s; the watermark is "
                             "reset to height %d and %d acknowledged block(s) after it are "
                             "given up", problem, self.height, lost)
            self._watermark = watermark
            if mark is None or problem is not None or mark.height < self.height:
                self._set_watermark(self.height)
            return lost

    def rollback_problem(self, mark: Mark) -> str | None:
        """Why this store cannot be the one that acknowledged `mark`, or None if it can."""
        if self._genesis_hash is not None and mark.genesis_hash != self._genesis_hash:
            return (f"the watermark belongs to genesis {mark.genesis_hash.hex()[:16]}, the "
                    f"store to {self._genesis_hash.hex()[:16]}")
        if mark.height > self.height:
            return (f"the block log holds blocks to height {self.height} but this node "
                    f"acknowledged {mark.describe()}: blocks.log was replaced by an older "
                    f"copy or cut")
        if self._hashes[mark.height] != mark.block_hash:
            return (f"the block log holds another block at {mark.describe()} "
                    f"({self._hashes[mark.height].hex()[:16]}): blocks.log was replaced")
        return None

    def _advance_watermark(self) -> None:
        """Move the watermark to the head after an append (locked). A failure is logged and
        retried with the next append: the watermark lags, never leads, the log."""
        if self._watermark is not None:
            self._set_watermark(self.height)

    def _set_watermark(self, height: int) -> None:
        """Record block `height` in the watermark; an I/O error is logged (locked)."""
        assert self._watermark is not None and self._genesis_hash is not None
        try:
            self._watermark.set(Mark(height, self._hashes[height], self._genesis_hash))
        except OSError as exc:
            if not self._watermark_failed:
                logger.error("cannot update the watermark %s: %s (retrying with the next "
                             "block)", self._watermark.path, exc.strerror or exc)
            self._watermark_failed = True
            return
        self._watermark_failed = False

    def reset_derived(self) -> None:
        """Rewrite the block index whole from the (just scanned) log and delete the state
        snapshot, for `hashcloud node reindex`: both are rebuilt from the log."""
        with self._mutex:
            self._check_open()
            if self.readonly:
                raise StoreError("chain store is open read-only")
            try:
                self._index.close()
                self._index.sync(None, self._index_entries(0))
                (self.data_dir / SNAPSHOT_NAME).unlink(missing_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot reset the index and snapshot: {exc.strerror}") from None

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
            write_snapshot(self.data_dir / SNAPSHOT_NAME, height, block_hash, state_bytes)

    def read_snapshot(self) -> Snapshot | None:
        """Return ``(height, block_hash, state_bytes)`` of the latest snapshot, or None.

        None (with a log line) when there is no snapshot, it is corrupt, or it is stale
        (its block is not in the log): the caller then rebuilds state by replaying blocks.
        """
        with self._mutex:
            self._check_open()
            parsed = read_snapshot(self.data_dir / SNAPSHOT_NAME)
            if parsed is None:
                return None
            height, block_hash, _ = parsed
            if not (0 <= height < len(self._hashes)) or self._hashes[height] != block_hash:
                logger.warning(
                    "state snapshot at height %d does not match the block log; ignoring it",
                    height,
                )
                return None
            return parsed

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

    def find_block(self, height: int) -> bytes | None:
        """Return the payload of the block at ``height``, or None if there is none."""
        with self._mutex:
            self._check_open()
            if type(height) is not int or not 0 <= height < len(self._offsets):
                return None
            assert self._read_fd is not None
            rec = read_record_at(self._read_fd, self._offsets[height])
            if rec[0] != height or rec[1] != self._hashes[height]:
                raise corrupt(self._offsets[height], "record does not match the index")
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
                assert self._read_fd is not None
                rec = read_record_at(self._read_fd, self._offsets[height])
            if rec[0] != height:
                raise corrupt(self._offsets[height], "record does not match the index")
            yield rec
            height += 1

    def refresh(self) -> int:
        """Pick up blocks appended by the writer since open (readers); return the head height.

        An incomplete record at the end is ignored until the writer finishes it.
        """
        with self._mutex:
            self._check_open()
            res = scan_log(self.data_dir / LOG_NAME, self._end, len(self._offsets), self._by_hash)
            base = len(self._offsets)
            self._offsets.extend(res.offsets)
            self._hashes.extend(res.hashes)
            self._by_hash.update((h, base + i) for i, h in enumerate(res.hashes))
            self._end = res.end
            if res.offsets and not self.readonly:
                self._index.append(self._index_entries(base))
            return self.height

    def writer_active(self) -> bool:
        """True if some process holds the writer lock (a node is running on this store)."""
        if not self.readonly:
            return True
        return writer_active(self.data_dir)

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
            check_log_header(log_path)
            res = scan_log(log_path, len(LOG_HEADER), 0, {})
            if allow_torn_tail is None:
                allow_torn_tail = self.readonly and self.writer_active()
            if res.torn_bytes and not allow_torn_tail:
                raise corrupt(res.end, f"{res.torn_bytes} bytes of an incomplete last record "
                                       "(an interrupted append; the next writer cuts it)")
            known = len(self._offsets)
            if res.offsets[:known] != self._offsets or res.hashes[:known] != self._hashes:
                raise StoreError("block log does not match the store's index (file replaced?)")

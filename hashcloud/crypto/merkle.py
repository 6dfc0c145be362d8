"""HC-MERKLE-v1: the RFC 6962 / RFC 9162 Merkle Tree Hash with SHA-256 (SPEC 2).

The tree commits to the loop leaves `leaf_0 .. leaf_{L-1}` of SPEC 1. Each tree leaf is the
domain-separated hash `SHA256(0x00 || leaf_i)` and each interior node
`SHA256(0x01 || left || right)`; the root is `MTH` exactly as RFC 6962 defines it, and
inclusion proofs are RFC 6962 audit paths verified with the RFC 9162 section 2.1.3.2
algorithm, which binds both the leaf index and the tree size.

Building bottom-up (pair adjacent nodes, carry an odd last node up *unchanged*) gives the same
root and audit paths as the recursive "largest power of two smaller than L" split, because
every split point of the recursion is a power of two and so falls on a pair boundary at every
level. The tests check this against a literal recursive reference.

Each level is kept as one flat `bytes` buffer of 32-byte hashes (half the memory of a list of
`bytes` objects), so an audit path is `O(log L)` slices. On request (`workers > 1`) large
trees are hashed in worker processes on power-of-two aligned chunks (each chunk is a complete
subtree), since hashlib holds the GIL for inputs this small; that only pays on idle cores.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from hashcloud.errors import MerkleError

__all__ = [
    "COMPACT_CHUNK_LEVELS",
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "CompactMerkleBuilder",
    "CompactMerkleTree",
    "LeafStore",
    "MerkleTree",
    "is_included",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "verify_inclusion",
]

# Bound once: attribute lookups dominate the per-hash cost in pure Python.
_sha256 = hashlib.sha256

#: Size in bytes of every tree hash (SHA-256).
HASH_SIZE = 32
#: RFC 6962 domain-separation byte for leaf hashes.
LEAF_PREFIX = b"\x00"
#: RFC 6962 domain-separation byte for interior nodes.
NODE_PREFIX = b"\x01"
#: `MTH({})`: the root of the empty tree is the hash of the empty string (SPEC 2).
EMPTY_ROOT = _sha256(b"").digest()

# Below this many leaves, starting worker processes costs more than it saves.
_PARALLEL_MIN_LEAVES = 1 << 16
# Aim for about this many chunks per worker so uneven chunks still balance the load.
_CHUNKS_PER_WORKER = 4


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash `SHA256(0x00 || data)` (SPEC 2)."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash `SHA256(0x01 || left || right)` (SPEC 2)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _hash_leaves(leaves: Sequence[bytes]) -> bytes:
    """Leaf hashes of `leaves`, concatenated into one flat buffer."""
    sha, prefix = _sha256, LEAF_PREFIX
    return b"".join([sha(prefix + d).digest() for d in leaves])


def _parent_level(level: bytes) -> bytes:
    """Hash adjacent pairs of a flat level; an odd last node is carried up unchanged."""
    sha, prefix = _sha256, NODE_PREFIX
    pair_bytes = len(level) // (2 * HASH_SIZE) * (2 * HASH_SIZE)
    parents = b"".join(
        [sha(prefix + level[i : i + 2 * HASH_SIZE]).digest() for i in range(0, pair_bytes, 64)]
    )
    # No duplication of the last node (SPEC 2): it moves up as is.
    return parents + level[pair_bytes:]


def _levels_from_hashes(level: bytes) -> list[bytes]:
    """All levels, bottom (leaf hashes) first, above a flat level of hashes."""
    levels = [level]
    while len(level) > HASH_SIZE:
        level = _parent_level(level)
        levels.append(level)
    return levels


def _subtree_levels(leaves: Sequence[bytes]) -> list[bytes]:
    """Levels of the tree over `leaves`, bottom (leaf hashes) first."""
    return _levels_from_hashes(_hash_leaves(leaves))


def _flat_subtree_levels(flat: bytes, width: int) -> list[bytes]:
    """Levels of the tree over equal-width leaves packed in `flat` (worker entry point).

    Shipping one flat buffer to a worker is a memory copy; pickling a million small `bytes`
    objects costs about as much as hashing them.
    """
    sha, prefix = _sha256, LEAF_PREFIX
    hashes = b"".join(
        [sha(prefix + flat[i : i + width]).digest() for i in range(0, len(flat), width)]
    )
    return _levels_from_hashes(hashes)


def _usable_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _parallel_levels(leaves: Sequence[bytes], workers: int) -> list[bytes]:
    """Levels of the tree over `leaves`, hashing aligned chunks in `workers` processes.

    A chunk of `2^c` leaves starting at a multiple of `2^c` is a complete subtree, so level
    `h <= c` of the whole tree is the concatenation of the chunks' levels `h` (only the last,
    possibly short, chunk carries an odd node, and it is last at every level too).
    """
    size = len(leaves)
    # Largest power of two not above size / (workers * _CHUNKS_PER_WORKER).
    chunk = 1 << (max(1, size // (workers * _CHUNKS_PER_WORKER)).bit_length() - 1)
    width = len(leaves[0])
    # "spawn": never fork a process that may hold other threads' locks (node, CUDA).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        if all(len(d) == width for d in leaves):
            flat = b"".join(leaves)
            step = chunk * width
            pieces = [flat[i : i + step] for i in range(0, len(flat), step)]
            results = list(pool.map(_flat_subtree_levels, pieces, [width] * len(pieces)))
        else:
            pieces = [leaves[i : i + chunk] for i in range(0, size, chunk)]
            results = list(pool.map(_subtree_levels, pieces))
    chunk_height = chunk.bit_length() - 1
    # A short last chunk has fewer levels; its root is carried up unchanged to the top.
    levels = [b"".join([r[min(h, len(r) - 1)] for r in results]) for h in range(chunk_height + 1)]
    # Above the chunk roots, finish in this process.
    return levels[:-1] + _levels_from_hashes(levels[-1])


def _build_levels(leaves: Sequence[bytes], workers: int | None) -> list[bytes]:
    """Levels of the tree over `leaves`, in `workers` processes when that can pay off."""
    if workers is None:
        # In-process by default: measured on a shared 2-core host, the process start-up and
        # data transfer cost more than they saved; callers on idle cores opt in.
        workers = 1
    elif workers == 0:
        workers = _usable_cpus()
    if len(leaves) < _PARALLEL_MIN_LEAVES:
        workers = 1
    # Daemonic processes (e.g. a multiprocessing worker) may not start children.
    if workers > 1 and len(leaves) >= 2 * workers and not multiprocessing.current_process().daemon:
        try:
            return _parallel_levels(leaves, workers)
        except (OSError, BrokenProcessPool):
            pass  # Processes unavailable (sandbox, unguarded __main__): hash in-process.
    return _subtree_levels(leaves)


def _siblings(levels: Sequence[bytes], index: int) -> list[bytes]:
    """The RFC 6962 audit path of node `index` through `levels` (flat 32-byte hashes, lowest
    first): at each level the sibling of node `j` is `j ^ 1`; a node with no sibling is the
    odd last node, carried up unchanged, and contributes nothing (SPEC 2)."""
    path = []
    for level in levels:
        sibling = (index ^ 1) * HASH_SIZE
        if sibling < len(level):
            path.append(level[sibling : sibling + HASH_SIZE])
        index >>= 1
    return path


def _check_leaf_index(index: object, size: int) -> None:
    """Reject a leaf index that is not an integer in `[0, size)`."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise MerkleError("leaf index must be an integer")
    if not 0 <= index < size:
        raise MerkleError(f"leaf index {index} out of range for tree size {size}")


class MerkleTree:
    """An HC-MERKLE-v1 tree over a fixed list of leaves, built once (SPEC 2).

    `root` is `MTH(leaves)`; `audit_path(m)` is the RFC 6962 `PATH(m, D[n])`, leaf level
    first. `workers` sets the number of hashing processes for trees of at least 65,536
    leaves: `None` or `1` hashes in this process, `0` uses one process per usable CPU.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, leaves: Sequence[bytes], *, workers: int | None = None) -> None:
        """Hash every level of the tree over `leaves` (SPEC 2)."""
        if workers is not None and workers < 0:
            raise MerkleError("workers must be non-negative")
        self._size = len(leaves)
        self._levels = _build_levels(leaves, workers) if self._size else []

    @classmethod
    def _from_levels(cls, levels: list[bytes], size: int) -> MerkleTree:
        """A tree from already-hashed levels (bottom first), as `MerkleBuilder` makes."""
        tree = cls.__new__(cls)
        tree._levels, tree._size = levels, size
        return tree

    @property
    def size(self) -> int:
        """Number of leaves `L` (SPEC 2)."""
        return self._size

    @property
    def root(self) -> bytes:
        """`MTH` of the leaves; `SHA256("")` for the empty tree (SPEC 2)."""
        return self._levels[-1] if self._levels else EMPTY_ROOT

    def leaf_hash_at(self, index: int) -> bytes:
        """The stored leaf hash `SHA256(0x00 || leaf_index)` (SPEC 2)."""
        self._check_index(index)
        return self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE]

    def audit_path(self, index: int) -> list[bytes]:
        """RFC 6962 audit path for leaf `index`: sibling hashes, leaf level first (SPEC 2).

        At each level the sibling of node `j` is `j ^ 1`; a node with no sibling is the odd
        last node, carried up unchanged, and contributes nothing to the path.
        """
        _check_leaf_index(index, self._size)
        return _siblings(self._levels[:-1], index)

    def _check_index(self, index: int) -> None:
        """Reject an index outside `[0, size)`."""
        _check_leaf_index(index, self._size)

    def __repr__(self) -> str:
        """Size and root, for debugging."""
        return f"MerkleTree(size={self._size}, root={self.root.hex()})"


class MerkleBuilder:
    """Builds an HC-MERKLE-v1 tree while its leaves arrive (SPEC 2), for mining rounds.

    `extend` hashes each new leaf and every pair it completes, level by level, so about two
    hashes per leaf are spread over the round and `finish` only settles the O(log L) nodes
    of the ragged right edge: the tree is ready the moment the last loop ends, however
    long the round was. The result equals `MerkleTree(all_leaves)` exactly.
    """

    __slots__ = ("_levels", "_size", "_done")

    def __init__(self) -> None:
        self._levels: list[bytearray] = []
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        """Leaves added so far."""
        return self._size

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Add leaves (in order) and hash every pair they complete."""
        if self._done:
            raise MerkleError("the tree is finished; no more leaves can be added")
        if leaves:
            self._append(0, _hash_leaves(leaves))
            self._size += len(leaves)

    def _append(self, k: int, hashes: bytes) -> None:
        """Append node hashes to level k and hash the pairs that completes into level k+1."""
        levels = self._levels
        while True:
            if k == len(levels):
                levels.append(bytearray())
            level = levels[k]
            level += hashes
            parents_done = len(levels[k + 1]) // HASH_SIZE if k + 1 < len(levels) else 0
            pairs = len(level) // (2 * HASH_SIZE)
            if pairs <= parents_done:
                return
            start, stop = parents_done * 2 * HASH_SIZE, pairs * 2 * HASH_SIZE
            sha, prefix = _sha256, NODE_PREFIX
            hashes = b"".join([sha(prefix + level[i : i + 2 * HASH_SIZE]).digest()
                               for i in range(start, stop, 2 * HASH_SIZE)])
            k += 1

    def finish(self) -> MerkleTree:
        """Carry the odd last nodes up (RFC 6962: never duplicated) and return the tree."""
        self._done = True
        k = 0
        while k < len(self._levels):
            count = len(self._levels[k]) // HASH_SIZE
            if k == len(self._levels) - 1 and count == 1:
                break  # the root
            if count % 2:
                self._append(k + 1, bytes(self._levels[k][-HASH_SIZE:]))
            k += 1
        return MerkleTree._from_levels([bytes(level) for level in self._levels], self._size)


class LeafStore(Sequence[bytes]):
    """Fixed-width leaves in one flat `bytearray`: 32 bytes per 32-byte leaf, no per-leaf
    object (a list of `bytes` costs about 73 bytes per leaf). Read as a sequence of `bytes`.
    """

    __slots__ = ("_buf", "_width")

    def __init__(self, width: int = HASH_SIZE) -> None:
        self._buf = bytearray()
        self._width = width

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append leaves in order; each must be exactly `width` bytes."""
        joined = b"".join(leaves)
        if len(joined) != len(leaves) * self._width or any(
                len(d) != self._width for d in leaves):
            raise MerkleError(f"every leaf must be {self._width} bytes")
        self._buf += joined

    def __len__(self) -> int:
        return len(self._buf) // self._width

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError("leaf index must be an integer")
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"leaf index {index} out of range for {size} leaves")
        w = self._width
        return bytes(self._buf[index * w : (index + 1) * w])

    def raw(self, start: int, stop: int) -> bytes:
        """Leaves [start, stop) as one flat bytes object."""
        w = self._width
        return bytes(self._buf[start * w : stop * w])

    @property
    def nbytes(self) -> int:
        """Bytes held (the payload; the bytearray may reserve up to ~1/8 more)."""
        return len(self._buf)


COMPACT_CHUNK_LEVELS = 5
"""Levels a `CompactMerkleTree` does not store: chunks of 2^5 = 32 leaves are rehashed (63
hashes, ~30 us) when an audit path needs them; the stored levels above cost ~2 bytes per
leaf."""


class CompactMerkleTree:
    """An HC-MERKLE-v1 tree (SPEC 2) keeping the leaves flat plus only the levels from
    `2^chunk_levels`-leaf chunk roots upward: ~34 bytes per 32-byte leaf instead of ~140.

    Same root and audit paths as `MerkleTree` over the same leaves: an aligned chunk of
    `2^c` leaves is a complete subtree, so level `h <= c` of the whole tree restricted to a
    chunk is that chunk's own bottom-up tree (the last, short chunk carries its odd nodes up
    exactly as the whole tree does); the lower part of a path is recomputed from the chunk.
    """

    __slots__ = ("_leaves", "_upper", "_chunk_levels", "_size")

    def __init__(self, leaves: LeafStore, upper: list[bytes], chunk_levels: int) -> None:
        self._leaves = leaves
        self._upper = upper
        self._chunk_levels = chunk_levels
        self._size = len(leaves)

    @property
    def size(self) -> int:
        """Number of leaves `L` (SPEC 2)."""
        return self._size

    @property
    def leaves(self) -> LeafStore:
        """The committed leaves `leaf_0 .. leaf_{L-1}`."""
        return self._leaves

    @property
    def root(self) -> bytes:
        """`MTH` of the leaves; `SHA256("")` for the empty tree (SPEC 2)."""
        return self._upper[-1] if self._upper else EMPTY_ROOT

    def leaf_hash_at(self, index: int) -> bytes:
        """`SHA256(0x00 || leaf_index)` (SPEC 2), recomputed."""
        self._check_index(index)
        return leaf_hash(self._leaves[index])

    def audit_path(self, index: int) -> list[bytes]:
        """RFC 6962 audit path for leaf `index`, leaf level first (SPEC 2): the chunk's
        levels recomputed from its leaves, then the stored levels above."""
        self._check_index(index)
        c = self._chunk_levels
        lo = (index >> c) << c
        hi = min(self._size, lo + (1 << c))
        w = HASH_SIZE
        flat = self._leaves.raw(lo, hi)
        low = _subtree_levels([flat[i : i + w] for i in range(0, len(flat), w)])
        return _siblings(low[:-1], index - lo) + _siblings(self._upper[:-1], index >> c)

    def _check_index(self, index: int) -> None:
        """Reject an index outside `[0, size)`."""
        _check_leaf_index(index, self._size)

    def stored_bytes(self) -> int:
        """Bytes of leaves plus stored tree levels (what a round keeps per loop * L)."""
        return self._leaves.nbytes + sum(len(level) for level in self._upper)


class CompactMerkleBuilder:
    """Builds a `CompactMerkleTree` while leaves arrive (SPEC 2), for mining rounds.

    Leaves go into a flat `LeafStore`; each completed chunk of `2^chunk_levels` leaves is
    hashed at once (leaf hashes and its subtree, then discarded) and its root fed to a
    `MerkleBuilder` of the levels above, so memory is ~34 bytes per loop and `finish` only
    settles the last chunk and the ragged right edge. Root equals `merkle_root(leaves)`.
    """

    __slots__ = ("_leaves", "_upper", "_chunk_levels", "_done_chunks", "_finished")

    def __init__(self, chunk_levels: int = COMPACT_CHUNK_LEVELS) -> None:
        if chunk_levels < 0:
            raise MerkleError("chunk_levels must be non-negative")
        self._leaves = LeafStore()
        self._upper = MerkleBuilder()
        self._chunk_levels = chunk_levels
        self._done_chunks = 0
        self._finished = False

    @property
    def leaves(self) -> LeafStore:
        """The leaves added so far (flat)."""
        return self._leaves

    @property
    def size(self) -> int:
        """Leaves added so far."""
        return len(self._leaves)

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Add 32-byte leaves (in order); hash every chunk they complete."""
        if self._finished:
            raise MerkleError("the tree is finished; no more leaves can be added")
        self._leaves.extend(leaves)
        self._hash_complete_chunks()

    @classmethod
    def over(cls, leaves: LeafStore,
             chunk_levels: int = COMPACT_CHUNK_LEVELS) -> CompactMerkleBuilder:
        """A builder over leaves already stored (no copy), every complete chunk hashed.

        Why: an interrupt (Ctrl-C, SIGTERM) can land inside `extend` after the leaves were
        stored but before their chunks were hashed; the leaf store is always whole (one
        append), so the tree of an interrupted round is rebuilt from it."""
        builder = cls(chunk_levels)
        builder._leaves = leaves
        builder._hash_complete_chunks()
        return builder

    def _hash_complete_chunks(self) -> None:
        """Hash every complete chunk not hashed yet into the levels above."""
        chunk = 1 << self._chunk_levels
        full = len(self._leaves) // chunk
        if full > self._done_chunks:
            roots = b"".join(self._chunk_root(k) for k in range(self._done_chunks, full))
            self._upper._append(0, roots)
            self._done_chunks = full

    def _chunk_root(self, k: int) -> bytes:
        """Root of chunk k (leaves [k 2^c, min((k+1) 2^c, L)))."""
        c = self._chunk_levels
        flat = self._leaves.raw(k << c, min(len(self._leaves), (k + 1) << c))
        w = HASH_SIZE
        return _subtree_levels([flat[i : i + w] for i in range(0, len(flat), w)])[-1]

    def finish(self) -> CompactMerkleTree:
        """Hash the last, short chunk, carry odd nodes up (never duplicated), return the tree."""
        self._finished = True
        chunk = 1 << self._chunk_levels
        if len(self._leaves) > self._done_chunks * chunk:
            self._upper._append(0, self._chunk_root(self._done_chunks))
            self._done_chunks += 1
        if not len(self._leaves):
            return CompactMerkleTree(self._leaves, [], self._chunk_levels)
        upper = self._upper.finish()
        return CompactMerkleTree(self._leaves, upper._levels, self._chunk_levels)


def merkle_root(leaves: Sequence[bytes], *, workers: int | None = None) -> bytes:
    """Return `MTH(leaves)` (SPEC 2); the empty list gives `SHA256("")`."""
    return MerkleTree(leaves, workers=workers).root


def _check_hash(value: object, what: str) -> None:
    """Require a 32-byte `bytes` hash."""
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise MerkleError(f"{what} is not {HASH_SIZE} bytes")


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf` is leaf `index` of the size-`size` tree with `root` (SPEC 2).

    This is RFC 9162 section 2.1.3.2 verbatim: the path must have exactly the length and the
    left/right shape of `PATH(index, size)`, so a proof for one index never passes for
    another, and one for another size passes only where both sizes give that index the same
    shape (e.g. index 0 of sizes 3 and 4). The commitment's signature binds `size` (loops)
    to `root` (SPEC 3). `leaf` is the committed data `leaf_i`; its leaf hash is computed
    here. Raises `MerkleError` with a short reason; returns `None` when the proof holds.
    """
    if not isinstance(leaf, bytes):
        raise MerkleError("leaf is not bytes")
    for value, what in ((index, "leaf index"), (size, "tree size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise MerkleError(f"{what} must be a non-negative integer")
    if index >= size:
        raise MerkleError(f"leaf index {index} out of range for tree size {size}")
    _check_hash(root, "root")
    for k, node in enumerate(path):
        _check_hash(node, f"path element {k}")

    fn, sn = index, size - 1
    r = leaf_hash(leaf)
    for node in path:
        if sn == 0:
            raise MerkleError("audit path too long")
        if fn & 1 or fn == sn:
            r = node_hash(node, r)
            # Skip the levels where this node is the carried-up last node.
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("audit path too short")
    if r != root:
        raise MerkleError("root mismatch")


def is_included(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """`verify_inclusion` as a boolean, for callers that only branch on it (SPEC 2)."""
    try:
        verify_inclusion(leaf, index, size, path, root)
    except MerkleError:
        return False
    return True

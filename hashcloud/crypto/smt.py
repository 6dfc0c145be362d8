"""A persistent sparse Merkle tree over 256-bit key paths (the state commitment, SPEC 6 v1.1).

Why: the chain's `state_root` must commit to every account, rewarded task, epoch work entry
and worker record, yet a block may only pay for the keys it touches. A sparse Merkle tree
gives that: an update rehashes one root-to-leaf path, the root is cached in the root node,
and any key has a membership or non-membership proof (for light clients later). An additive
multiset hash would be cheaper still but falls to Wagner's generalized-birthday attack.

Shape (the compact form of the Diem/Aptos Jellyfish tree, over the same 256-bit paths as the
classic full-depth tree): a key's path is its 32 bytes, most significant bit first (bit 0
chooses the left (0) or right (1) child of the root). Every subtree holding no key is the
default empty subtree, hash `EMPTY` (32 zero bytes); a subtree holding exactly one key is
that key's leaf, placed as high as it is alone; a subtree holding two or more keys is a
branch. Hashes are domain separated:

    leaf   = SHA256(0x00 || path || SHA256(value))
    branch = SHA256(0x01 || left || right)          (EMPTY for an empty child)

so the tree, and its root, is a function of the key set alone (insertion order does not
matter) and its depth is about log2(keys), never more than 256. Nodes are immutable: an
update copies only its path (O(depth) new nodes and hashes) and shares the rest, so a copy
of a tree is free and an old root stays valid (the state's copy-on-apply relies on it).
`update` applies many changes in one pass, building each changed node once (the state folds
a block's writes with it).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from hashcloud.crypto.hashing import sha256
from hashcloud.errors import MerkleError

__all__ = [
    "EMPTY",
    "KEY_BITS",
    "SMTProof",
    "SparseMerkleTree",
    "branch_hash",
    "leaf_hash",
    "verify_proof",
]

EMPTY = bytes(32)
"""Hash of the default empty subtree (and the root of an empty tree)."""

KEY_BITS = 256
"""Length of every key path in bits."""

_LEAF = b"\x00"
_BRANCH = b"\x01"


def leaf_hash(path: bytes, value: bytes) -> bytes:
    """`SHA256(0x00 || path || SHA256(value))`: the hash of a one-key subtree."""
    return sha256(_LEAF + path + sha256(value))


def branch_hash(left: bytes, right: bytes) -> bytes:
    """`SHA256(0x01 || left || right)`: the hash of a subtree holding two or more keys."""
    return sha256(_BRANCH + left + right)


def _bit(path: bytes, depth: int) -> int:
    """Bit `depth` of `path`, most significant bit of byte 0 first."""
    return (path[depth >> 3] >> (7 - (depth & 7))) & 1


class _Leaf:
    """One key and its value; `hash` computed once."""

    __slots__ = ("path", "value", "hash")

    def __init__(self, path: bytes, value: bytes) -> None:
        self.path = path
        self.value = value
        self.hash = leaf_hash(path, value)


class _Branch:
    """Two children (None = empty subtree) of a subtree with at least two keys."""

    __slots__ = ("left", "right", "hash")

    def __init__(self, left: _Node, right: _Node) -> None:
        self.left = left
        self.right = right
        self.hash = branch_hash(EMPTY if left is None else left.hash,
                                EMPTY if right is None else right.hash)


_Node = _Leaf | _Branch | None


def _join(left: _Node, right: _Node) -> _Node:
    """The subtree with these children, collapsing to the lone leaf (or nothing) if alone."""
    if left is None and (right is None or isinstance(right, _Leaf)):
        return right
    if right is None and isinstance(left, _Leaf):
        return left
    return _Branch(left, right)


def _split(a: _Leaf, b: _Leaf, depth: int) -> _Node:
    """The subtree at `depth` holding the two distinct leaves `a` and `b`."""
    bit_a, bit_b = _bit(a.path, depth), _bit(b.path, depth)
    if bit_a != bit_b:
        return _Branch(a, b) if bit_a == 0 else _Branch(b, a)
    below = _split(a, b, depth + 1)
    return _Branch(below, None) if bit_a == 0 else _Branch(None, below)


def _set(node: _Node, leaf: _Leaf, depth: int) -> _Node:
    """`node` (the subtree at `depth` on `leaf.path`) with `leaf` stored in it."""
    if node is None:
        return leaf
    if isinstance(node, _Leaf):
        return leaf if node.path == leaf.path else _split(node, leaf, depth)
    if _bit(leaf.path, depth) == 0:
        return _Branch(_set(node.left, leaf, depth + 1), node.right)
    return _Branch(node.left, _set(node.right, leaf, depth + 1))


def _delete(node: _Node, path: bytes, depth: int) -> _Node:
    """`node` without the key `path` (unchanged, the same object, if it was absent)."""
    if node is None:
        return None
    if isinstance(node, _Leaf):
        return None if node.path == path else node
    if _bit(path, depth) == 0:
        left = _delete(node.left, path, depth + 1)
        return node if left is node.left else _join(left, node.right)
    right = _delete(node.right, path, depth + 1)
    return node if right is node.right else _join(node.left, right)


def _build(leaves: Sequence[_Leaf], depth: int) -> _Node:
    """The subtree at `depth` over `leaves` (sorted by path, distinct, sharing the prefix)."""
    if not leaves:
        return None
    if len(leaves) == 1:
        return leaves[0]
    lo, hi = 0, len(leaves)
    while lo < hi:  # `_first_one` over the leaves' paths, without building their list
        mid = (lo + hi) // 2
        if _bit(leaves[mid].path, depth):
            hi = mid
        else:
            lo = mid + 1
    left, right = _build(leaves[:lo], depth + 1), _build(leaves[lo:], depth + 1)
    return _Branch(left, right)


def _first_one(paths: Sequence[bytes], depth: int) -> int:
    """Index of the first of `paths` (sorted, sharing their first `depth` bits) whose bit
    `depth` is 1 (`len(paths)` if none). A plain loop: `bisect` with a key function is
    slower here, on the state root's path."""
    lo, hi = 0, len(paths)
    while lo < hi:
        mid = (lo + hi) // 2
        if _bit(paths[mid], depth):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _update(node: _Node, paths: Sequence[bytes], values: Sequence[bytes | None],
            depth: int) -> tuple[_Node, int]:
    """`node` (the subtree at `depth` holding `paths`' common prefix) with every path mapped
    to its value (None: deleted), and the change in its key count. Each new node is built
    (and hashed) once however many of the changes lie below it."""
    if not paths:
        return node, 0
    if not isinstance(node, _Branch):
        # An empty subtree or a lone leaf: the result is built from its (at most one) old
        # key and the changes, bottom-up.
        leaves = [_Leaf(p, v) for p, v in zip(paths, values, strict=True) if v is not None]
        old = 0
        if isinstance(node, _Leaf):
            old = 1
            i = _first_at_least(paths, node.path)
            if i == len(paths) or paths[i] != node.path:
                at = _first_at_least([leaf.path for leaf in leaves], node.path)
                leaves.insert(at, node)
        if len(leaves) == 1 and isinstance(node, _Leaf) and leaves[0] is node:
            return node, 0
        return _build(leaves, depth), len(leaves) - old
    split = _first_one(paths, depth)
    left, dl = _update(node.left, paths[:split], values[:split], depth + 1)
    right, dr = _update(node.right, paths[split:], values[split:], depth + 1)
    if left is node.left and right is node.right:
        return node, 0
    return _join(left, right), dl + dr


def _first_at_least(paths: Sequence[bytes], path: bytes) -> int:
    """Index of the first of the sorted `paths` that is >= `path`."""
    return bisect_left(paths, path)


def _check_path(path: bytes) -> bytes:
    """Require a 32-byte key path."""
    if not isinstance(path, bytes) or len(path) != KEY_BITS // 8:
        raise MerkleError("a sparse Merkle tree key path is exactly 32 bytes")
    return path


@dataclass(frozen=True, slots=True)
class SMTProof:
    """A proof about one key: the sibling hashes from the root down (`siblings[d]` is the
    sibling at depth d) and what the key's path ends at: the leaf `(path, SHA256(value))`
    found there, or None for an empty subtree. It proves membership when the leaf's path is
    the key's, non-membership otherwise."""

    siblings: tuple[bytes, ...]
    leaf: tuple[bytes, bytes] | None


class SparseMerkleTree:
    """An immutable sparse Merkle tree: `set`/`delete` return a new tree sharing structure.

    `root` is cached (it is the root node's hash), so reading it costs nothing.
    """

    __slots__ = ("_root", "_size")

    def __init__(self, _root: _Node = None, _size: int = 0) -> None:
        self._root = _root
        self._size = _size

    @classmethod
    def from_items(cls, items: dict[bytes, bytes]) -> SparseMerkleTree:
        """A tree holding `items` (path -> value), built bottom-up in O(n log n)."""
        leaves = sorted((_Leaf(_check_path(p), v) for p, v in items.items()),
                        key=lambda leaf: leaf.path)
        return cls(_build(leaves, 0), len(leaves))

    @property
    def root(self) -> bytes:
        """The 32-byte root hash (`EMPTY` for an empty tree)."""
        return EMPTY if self._root is None else self._root.hash

    def __len__(self) -> int:
        return self._size

    def get(self, path: bytes) -> bytes | None:
        """The value stored at `path`, or None."""
        node, depth = self._root, 0
        while isinstance(node, _Branch):
            node = node.right if _bit(path, depth) else node.left
            depth += 1
        return node.value if node is not None and node.path == path else None

    def set(self, path: bytes, value: bytes) -> SparseMerkleTree:
        """A tree with `path` mapped to `value` (O(depth) new nodes)."""
        present = self.get(_check_path(path)) is not None
        return SparseMerkleTree(_set(self._root, _Leaf(path, bytes(value)), 0),
                                self._size + (0 if present else 1))

    def delete(self, path: bytes) -> SparseMerkleTree:
        """A tree without `path` (this tree itself if `path` is absent)."""
        root = _delete(self._root, _check_path(path), 0)
        return self if root is self._root else SparseMerkleTree(root, self._size - 1)

    def update(self, changes: Mapping[bytes, bytes | None]) -> SparseMerkleTree:
        """A tree with every `path -> value` of `changes` applied (None: delete the path).

        The same tree as applying them one by one with `set`/`delete` (the tree is a
        function of its key set), but each new node is hashed once: a block's many changes
        share the upper levels of their paths, which one-by-one updates rehash per change.
        """
        if not changes:
            return self
        paths = sorted(_check_path(p) for p in changes)
        values = [None if (v := changes[p]) is None else bytes(v) for p in paths]
        root, delta = _update(self._root, paths, values, 0)
        return self if root is self._root else SparseMerkleTree(root, self._size + delta)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every `(path, value)`, in path order."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            if isinstance(node, _Leaf):
                yield node.path, node.value
            elif isinstance(node, _Branch):
                stack.append(node.right)
                stack.append(node.left)

    def prove(self, path: bytes) -> SMTProof:
        """A membership proof for `path` if it is present, else a non-membership proof."""
        _check_path(path)
        siblings: list[bytes] = []
        node, depth = self._root, 0
        while isinstance(node, _Branch):
            if _bit(path, depth):
                sibling, node = node.left, node.right
            else:
                sibling, node = node.right, node.left
            siblings.append(EMPTY if sibling is None else sibling.hash)
            depth += 1
        leaf = None if node is None else (node.path, sha256(node.value))
        return SMTProof(tuple(siblings), leaf)


def verify_proof(root: bytes, path: bytes, value: bytes | None, proof: SMTProof) -> None:
    """Raise MerkleError unless `proof` shows that `path` maps to `value` under `root`
    (`value=None`: that `path` is absent)."""
    _check_path(path)
    depth = len(proof.siblings)
    if depth > KEY_BITS:
        raise MerkleError("proof is deeper than the key path")
    if proof.leaf is None:
        if value is not None:
            raise MerkleError("proof ends at an empty subtree: the key is absent")
        node = EMPTY
    else:
        leaf_path, value_hash = proof.leaf
        _check_path(leaf_path)
        if any(_bit(leaf_path, d) != _bit(path, d) for d in range(depth)):
            raise MerkleError("proof leaf does not lie on the key's path")
        if value is None:
            if leaf_path == path:
                raise MerkleError("proof shows the key is present")
        elif leaf_path != path or value_hash != sha256(value):
            raise MerkleError("proof leaf is not this key and value")
        node = sha256(_LEAF + leaf_path + value_hash)
    for d in range(depth - 1, -1, -1):
        sibling = proof.siblings[d]
        node = branch_hash(sibling, node) if _bit(path, d) else branch_hash(node, sibling)
    if node != root:
        raise MerkleError("proof does not lead to the root")

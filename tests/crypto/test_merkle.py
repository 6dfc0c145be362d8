"""HC-MERKLE-v1 (SPEC 2): shared vectors, a recursive MTH reference and RFC 9162 proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.crypto.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    is_included,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
)
from hashcloud.errors import MerkleError

DERANDOMIZED = settings(derandomize=True, deadline=None, max_examples=60)


def vector_leaf(k: int) -> bytes:
    """`leaf_k = SHA256(ascii('leaf' + str(k)))`, as the vector file states."""
    return hashlib.sha256(f"leaf{k}".encode("ascii")).digest()


def unhex(value: str) -> bytes:
    """Decode SPEC "0x" hex."""
    assert value.startswith("0x")
    return bytes.fromhex(value[2:])


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH written literally from its recursive definition (SPEC 2)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)  # largest power of two < n
    left, right = reference_mth(leaves[:k]), reference_mth(leaves[k:])
    return hashlib.sha256(b"\x01" + left + right).digest()


def reference_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 PATH(m, D[n]) written literally (leaf level first)."""
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return reference_path(m, leaves[:k]) + [reference_mth(leaves[k:])]
    return reference_path(m - k, leaves[k:]) + [reference_mth(leaves[:k])]


def path_shape(m: int, n: int) -> list[bool]:
    """Which side each sibling of PATH(m, D[n]) is on (True: right), leaf level first."""
    if n <= 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return path_shape(m, k) + [True]
    return path_shape(m - k, n - k) + [False]


def leaves_of(size: int, salt: int = 0) -> list[bytes]:
    """`size` distinct 32-byte leaves."""
    return [hashlib.sha256(b"%d:%d" % (salt, i)).digest() for i in range(size)]


# --- shared vectors -------------------------------------------------------------------------


def test_vector_roots(vectors) -> None:
    ran = 0
    for size, root_hex in vectors["merkle"]["roots"].items():
        leaves = [vector_leaf(k) for k in range(int(size))]
        assert merkle_root(leaves) == unhex(root_hex), size
        assert MerkleTree(leaves).root == unhex(root_hex), size
        assert reference_mth(leaves) == unhex(root_hex), size
        ran += 1
    assert ran >= 12


def test_vector_paths(vectors) -> None:
    ran = 0
    for vector in vectors["merkle"]["paths"]:
        index, size = vector["index"], vector["size"]
        leaves = [vector_leaf(k) for k in range(size)]
        leaf, root = unhex(vector["leaf"]), unhex(vector["root"])
        proof = [unhex(p) for p in vector["proof"]]
        assert leaves[index] == leaf
        tree = MerkleTree(leaves)
        assert tree.root == root
        assert tree.audit_path(index) == proof
        verify_inclusion(leaf, index, size, proof, root)
        ran += 1
    assert ran >= 10


def test_empty_and_single() -> None:
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    tree = MerkleTree([])
    assert tree.size == 0 and tree.root == EMPTY_ROOT
    with pytest.raises(MerkleError):
        tree.audit_path(0)
    assert merkle_root([b"x"]) == leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


# --- against the recursive definition --------------------------------------------------------


@DERANDOMIZED
@given(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=2**16))
def test_root_matches_recursive_mth(size: int, salt: int) -> None:
    leaves = leaves_of(size, salt)
    assert merkle_root(leaves) == reference_mth(leaves)


def test_root_matches_recursive_mth_every_small_size() -> None:
    for size in range(0, 70):
        leaves = leaves_of(size)
        tree = MerkleTree(leaves)
        assert tree.root == reference_mth(leaves)
        for m in range(size):
            assert tree.audit_path(m) == reference_path(m, leaves)


def test_variable_length_leaves() -> None:
    leaves = [b"", b"a", b"bc" * 40, bytes(range(7))]
    assert merkle_root(leaves) == reference_mth(leaves)


@DERANDOMIZED
@given(st.integers(min_value=1, max_value=150))
def test_every_index_verifies(size: int) -> None:
    leaves = leaves_of(size, 7)
    tree = MerkleTree(leaves)
    for m in range(size):
        path = tree.audit_path(m)
        verify_inclusion(leaves[m], m, size, path, tree.root)
        assert is_included(leaves[m], m, size, path, tree.root)
        assert tree.leaf_hash_at(m) == leaf_hash(leaves[m])


def test_parallel_build_matches_sequential() -> None:
    # Uneven size: the last chunk is short and its root is carried up.
    size = (1 << 16) + 77
    leaves = leaves_of(size, 3)
    sequential = MerkleTree(leaves, workers=1)
    parallel = MerkleTree(leaves, workers=2)
    assert parallel.root == sequential.root == reference_mth(leaves)
    for m in (0, 1, size // 2, size - 78, size - 1):
        assert parallel.audit_path(m) == sequential.audit_path(m)
    mixed = leaves[:-1] + [b"short"]  # unequal widths take the list transport
    assert MerkleTree(mixed, workers=2).root == reference_mth(mixed)


# --- tampering must fail ----------------------------------------------------------------------


def flip(data: bytes, position: int) -> bytes:
    """`data` with one bit of byte `position` flipped."""
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@DERANDOMIZED
@given(st.data())
def test_any_tampering_fails(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=120), label="size")
    m = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    leaves = leaves_of(size, 11)
    tree = MerkleTree(leaves)
    leaf, path, root = leaves[m], tree.audit_path(m), tree.root
    verify_inclusion(leaf, m, size, path, root)

    def fails(*args: object) -> None:
        with pytest.raises(MerkleError):
            verify_inclusion(*args)  # type: ignore[arg-type]
        assert not is_included(*args)  # type: ignore[arg-type]

    byte = data.draw(st.integers(min_value=0, max_value=31), label="byte")
    fails(flip(leaf, byte), m, size, path, root)
    fails(leaf, m, size, path, flip(root, byte))
    for k in range(len(path)):
        fails(leaf, m, size, [*path[:k], flip(path[k], byte), *path[k + 1 :]], root)
    # A proof fixes the side of every sibling, which is all RFC 9162 can check about
    # (index, size): another pair passes exactly when its PATH has the same shape (e.g.
    # index 0 of sizes 3 and 4). The signed commitment binds the size to the root.
    shape = path_shape(m, size)
    for other in range(size):
        if other != m:
            assert path_shape(other, size) != shape
            fails(leaf, other, size, path, root)
    for other_size in range(max(0, m - 2), size + 70):
        if other_size == size:
            continue
        if other_size > m and path_shape(m, other_size) == shape:
            verify_inclusion(leaf, m, other_size, path, root)
        else:
            fails(leaf, m, other_size, path, root)
    fails(leaf, m, size, [*path, path[0] if path else root], root)
    if path:
        fails(leaf, m, size, path[:-1], root)
        fails(leaf, m, size, path[1:], root)
        if len(path) > 1:
            fails(leaf, m, size, path[::-1], root)
    fails(leaf, size, size, path, root)
    fails(leaf, -1, size, path, root)


def test_malformed_inputs_raise_merkle_error() -> None:
    leaves = leaves_of(5)
    tree = MerkleTree(leaves)
    path, root = tree.audit_path(2), tree.root
    bad_cases = [
        ("leaf", (leaves[2].hex(), 2, 5, path, root)),
        ("bool index", (leaves[2], True, 5, path, root)),
        ("float size", (leaves[2], 2, 5.0, path, root)),
        ("short root", (leaves[2], 2, 5, path, root[:31])),
        ("short node", (leaves[2], 2, 5, [path[0][:31], *path[1:]], root)),
        ("str node", (leaves[2], 2, 5, [path[0].hex(), *path[1:]], root)),
        ("empty tree", (leaves[2], 0, 0, [], EMPTY_ROOT)),
    ]
    for name, args in bad_cases:
        with pytest.raises(MerkleError):
            verify_inclusion(*args)  # type: ignore[arg-type]
        assert not is_included(*args), name  # type: ignore[arg-type]
    for index in (-1, 5, True, 1.0):
        with pytest.raises(MerkleError):
            tree.audit_path(index)  # type: ignore[arg-type]
    with pytest.raises(MerkleError):
        MerkleTree(leaves, workers=-1)


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=140), st.data())
def test_incremental_builder_equals_batch_tree(leaves, data):
    """MerkleBuilder fed in random chunks gives the same root and every audit path."""
    from hashcloud.crypto.merkle import MerkleBuilder

    builder = MerkleBuilder()
    i = 0
    while i < len(leaves):
        step = data.draw(st.integers(1, 9))
        builder.extend(leaves[i : i + step])
        i += step
    tree = builder.finish()
    ref = MerkleTree(leaves)
    assert tree.size == ref.size == len(leaves)
    assert tree.root == ref.root
    for m in range(len(leaves)):
        assert tree.audit_path(m) == ref.audit_path(m)


def test_builder_refuses_leaves_after_finish():
    from hashcloud.crypto.merkle import MerkleBuilder

    builder = MerkleBuilder()
    builder.extend([b"\x00" * 32])
    builder.finish()
    with pytest.raises(MerkleError):
        builder.extend([b"\x01" * 32])


# --- compact tree: flat leaves + levels above 2^c-leaf chunks (the miner's round) ----------


@DERANDOMIZED
@given(size=st.integers(0, 300), chunk_levels=st.integers(0, 6), step=st.integers(1, 40))
def test_compact_tree_equals_full_tree(size: int, chunk_levels: int, step: int) -> None:
    from hashcloud.crypto.merkle import CompactMerkleBuilder

    leaves = leaves_of(size, salt=chunk_levels)
    builder = CompactMerkleBuilder(chunk_levels)
    for i in range(0, size, step):
        builder.extend(leaves[i : i + step])
    tree = builder.finish()
    assert tree.root == merkle_root(leaves) == reference_mth(leaves)
    assert tree.size == size and list(tree.leaves) == leaves
    full = MerkleTree(leaves)
    for m in {0, size // 2, size - 1} - {-1}:
        if 0 <= m < size:
            assert tree.audit_path(m) == full.audit_path(m) == reference_path(m, leaves)
            assert tree.leaf_hash_at(m) == full.leaf_hash_at(m)
            verify_inclusion(leaves[m], m, size, tree.audit_path(m), tree.root)


def test_compact_tree_every_path_across_chunk_edges() -> None:
    from hashcloud.crypto.merkle import CompactMerkleBuilder

    for size in (31, 32, 33, 64, 65, 97):
        leaves = leaves_of(size, salt=7)
        builder = CompactMerkleBuilder()
        builder.extend(leaves)
        tree = builder.finish()
        for m in range(size):
            assert tree.audit_path(m) == reference_path(m, leaves), (size, m)
        with pytest.raises(MerkleError):
            tree.audit_path(size)


def test_leaf_store_rejects_bad_leaves_and_finished_builder() -> None:
    from hashcloud.crypto.merkle import CompactMerkleBuilder, LeafStore

    store = LeafStore()
    with pytest.raises(MerkleError, match="32 bytes"):
        store.extend([b"\x00" * 31])
    with pytest.raises(MerkleError, match="32 bytes"):
        store.extend([b"\x00" * 31, b"\x00" * 33])  # right total, wrong widths
    store.extend(leaves_of(3))
    assert store[-1] == leaves_of(3)[2] and store[0:2] == leaves_of(3)[:2]
    with pytest.raises(IndexError):
        store[3]
    builder = CompactMerkleBuilder()
    builder.finish()
    with pytest.raises(MerkleError, match="finished"):
        builder.extend(leaves_of(1))


def test_compact_builder_keeps_at_most_40_bytes_per_leaf() -> None:
    import tracemalloc

    from hashcloud.crypto.merkle import CompactMerkleBuilder

    size = 50_000
    leaves = leaves_of(size)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    builder = CompactMerkleBuilder()
    for i in range(0, size, 256):
        builder.extend(leaves[i : i + 256])
    tree = builder.finish()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert tree.stored_bytes() / size < 35  # 32 bytes of leaf + ~2 of upper levels
    assert held / size <= 40, held / size  # what the process really holds (bytearray slack)
    assert tree.root == merkle_root(leaves)

"""Sparse Merkle tree (crypto/smt.py, SPEC 6 v1.1 state commitment): known answers written
from the hash definitions, proofs, and properties (order independence, rebuild equality)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.crypto.smt import EMPTY, SMTProof, SparseMerkleTree, verify_proof
from hashcloud.errors import MerkleError

PROPS = settings(derandomize=True, deadline=None, max_examples=60)


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(path: bytes, value: bytes) -> bytes:
    return h(b"\x00" + path + h(value))


def node(left: bytes, right: bytes) -> bytes:
    return h(b"\x01" + left + right)


def path_with(prefix_bits: str, fill: int = 0) -> bytes:
    """A 32-byte path starting with `prefix_bits` ('0'/'1'), the rest `fill` bits."""
    bits = prefix_bits + str(fill) * (256 - len(prefix_bits))
    return int(bits, 2).to_bytes(32, "big")


def test_known_answers():
    tree = SparseMerkleTree()
    assert tree.root == EMPTY and len(tree) == 0
    a, b, c = path_with("0"), path_with("1"), path_with("01", 1)
    one = tree.set(a, b"va")
    assert one.root == leaf(a, b"va")  # a lone key is its leaf, at the top
    two = one.set(b, b"vb")
    assert two.root == node(leaf(a, b"va"), leaf(b, b"vb"))
    three = two.set(c, b"vc")  # a = 000.., c = 011..: they part at bit 1
    assert three.root == node(node(leaf(a, b"va"), leaf(c, b"vc")), leaf(b, b"vb"))
    assert three.delete(b).root == node(node(leaf(a, b"va"), leaf(c, b"vc")), EMPTY)
    # a and d share 255 bits: the branch reaches the last level
    d = path_with("0" * 255 + "1")
    deep = one.set(d, b"vd")
    expected = node(leaf(a, b"va"), leaf(d, b"vd"))
    for _ in range(255):
        expected = node(expected, EMPTY)
    assert deep.root == expected
    assert deep.delete(d).root == leaf(a, b"va")  # collapses back up


def test_immutable_and_get():
    a, b = path_with("0"), path_with("1")
    t1 = SparseMerkleTree().set(a, b"1")
    t2 = t1.set(b, b"2").set(a, b"3")
    assert t1.get(a) == b"1" and t1.get(b) is None
    assert t2.get(a) == b"3" and t2.get(b) == b"2" and len(t2) == 2
    assert t2.delete(path_with("11")) is t2  # absent key: same tree


def test_bad_path():
    with pytest.raises(MerkleError):
        SparseMerkleTree().set(b"short", b"x")


keys = st.binary(min_size=32, max_size=32)
entries = st.dictionaries(keys, st.binary(max_size=8), max_size=40)


@PROPS
@given(entries, st.randoms(use_true_random=False))
def test_root_independent_of_insertion_order(items, rnd):
    order = list(items.items())
    rnd.shuffle(order)
    tree = SparseMerkleTree()
    for path, value in order:
        tree = tree.set(path, value)
    assert tree.root == SparseMerkleTree.from_items(items).root
    assert dict(tree.items()) == items and len(tree) == len(items)
    assert [p for p, _ in tree.items()] == sorted(items)


@PROPS
@given(entries, st.lists(st.tuples(keys, st.one_of(st.none(), st.binary(max_size=8))),
                         max_size=40))
def test_updates_match_rebuild(items, updates):
    tree = SparseMerkleTree.from_items(items)
    model = dict(items)
    for path, value in updates:
        if value is None:
            tree = tree.delete(path)
            model.pop(path, None)
        else:
            tree = tree.set(path, value)
            model[path] = value
    assert tree.root == SparseMerkleTree.from_items(model).root
    assert len(tree) == len(model)


@PROPS
@given(entries, keys)
def test_proofs_verify(items, absent):
    tree = SparseMerkleTree.from_items(items)
    for path, value in items.items():
        proof = tree.prove(path)
        verify_proof(tree.root, path, value, proof)
        with pytest.raises(MerkleError):
            verify_proof(tree.root, path, value + b"!", proof)
        with pytest.raises(MerkleError):
            verify_proof(tree.root, path, None, proof)
    if absent not in items:
        proof = tree.prove(absent)
        verify_proof(tree.root, absent, None, proof)
        with pytest.raises(MerkleError):
            verify_proof(tree.root, absent, b"x", proof)


def test_forged_proofs_fail():
    a, b, c = path_with("0"), path_with("1"), path_with("01", 1)
    tree = SparseMerkleTree.from_items({a: b"va", b: b"vb", c: b"vc"})
    proof = tree.prove(a)
    # a padded path (extra empty sibling) or a shortened one leads elsewhere
    padded = SMTProof(proof.siblings + (EMPTY,), proof.leaf)
    with pytest.raises(MerkleError):
        verify_proof(tree.root, a, b"va", padded)
    with pytest.raises(MerkleError):
        verify_proof(tree.root, a, b"va", SMTProof(proof.siblings[:1], proof.leaf))
    # claiming c is absent with a's leaf (which is off c's path past bit 1) fails
    with pytest.raises(MerkleError):
        verify_proof(tree.root, c, None, proof)
    with pytest.raises(MerkleError):
        verify_proof(tree.root, b, None, SMTProof((), None))


@PROPS
@given(st.integers(0, 2**256 - 1),
       st.lists(st.tuples(st.integers(0, 255), st.one_of(st.none(), st.binary(max_size=4))),
                max_size=40))
def test_clustered_keys_match_rebuild_and_prove(base, updates):
    # Keys sharing up to 248 leading bits: deep splits when inserted, collapses when deleted.
    tree, model = SparseMerkleTree(), {}
    for low, value in updates:
        path = (base ^ low).to_bytes(32, "big")
        if value is None:
            tree, _ = tree.delete(path), model.pop(path, None)
        else:
            tree, model[path] = tree.set(path, value), value
    assert tree.root == SparseMerkleTree.from_items(model).root
    for low in range(0, 256, 37):
        path = (base ^ low).to_bytes(32, "big")
        verify_proof(tree.root, path, model.get(path), tree.prove(path))


def _apply_one_by_one(tree: SparseMerkleTree, changes: dict) -> SparseMerkleTree:
    for path, value in changes.items():
        tree = tree.delete(path) if value is None else tree.set(path, value)
    return tree


@PROPS
@given(entries, st.lists(st.dictionaries(keys, st.one_of(st.none(), st.binary(max_size=8)),
                                         max_size=20), max_size=5))
def test_batch_update_matches_rebuild_and_single_updates(items, batches):
    # `update` (the state's fold) gives the tree of the resulting key set, the same as the
    # one-by-one updates, with the right size; items, proofs and reads agree.
    tree = single = SparseMerkleTree.from_items(items)
    model = dict(items)
    for changes in batches:
        # re-set some present keys and delete some to reach the leaf/collapse cases
        changes = {**{p: None for p in list(model)[:2]}, **changes}
        tree, single = tree.update(changes), _apply_one_by_one(single, changes)
        for path, value in changes.items():
            if value is None:
                model.pop(path, None)
            else:
                model[path] = value
        assert tree.root == single.root == SparseMerkleTree.from_items(model).root
        assert len(tree) == len(model) and dict(tree.items()) == model
    for path in list(model)[:3]:
        verify_proof(tree.root, path, model[path], tree.prove(path))


@PROPS
@given(st.integers(0, 2**256 - 1),
       st.dictionaries(st.integers(0, 255), st.binary(max_size=4), max_size=30),
       st.dictionaries(st.integers(0, 255), st.one_of(st.none(), st.binary(max_size=4)),
                       max_size=30))
def test_batch_update_of_clustered_keys(base, first, second):
    # Keys sharing up to 248 leading bits: the batch splits deep and collapses on deletes.
    def path(low: int) -> bytes:
        return (base ^ low).to_bytes(32, "big")

    start = {path(k): v for k, v in first.items()}
    changes = {path(k): v for k, v in second.items()}
    tree = SparseMerkleTree.from_items(start).update(changes)
    model = {p: v for p, v in {**start, **changes}.items() if v is not None}
    assert tree.root == SparseMerkleTree.from_items(model).root and len(tree) == len(model)


def test_batch_update_edge_cases():
    a, b = path_with("0"), path_with("1")
    one = SparseMerkleTree().set(a, b"1")
    assert one.update({}) is one
    assert one.update({b: None}) is one  # deleting an absent key changes nothing
    assert one.update({a: None}).root == EMPTY and len(one.update({a: None})) == 0
    assert one.update({a: b"2", b: b"3"}).root == node(leaf(a, b"2"), leaf(b, b"3"))
    assert SparseMerkleTree().update({a: None}).root == EMPTY
    with pytest.raises(MerkleError):
        one.update({b"short": b"x"})

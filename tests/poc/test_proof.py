"""SPEC 4 proof files: building, strict loading, and refusal of every kind of tampering."""

from __future__ import annotations

import json

import pytest

from hashcloud.crypto.keys import PrivateKey
from hashcloud.engine.mining import Engine
from hashcloud.errors import ProofError, UnreadableInput
from hashcloud.poc.proof import load_proof, parse_proof
from hashcloud.poc.round import new_offline_challenge, offline_proof, run_loops
from hashcloud.poc.verify import verify_proof

KEY = PrivateKey(0xC0FFEE)


@pytest.fixture(scope="module")
def proof_obj() -> dict:
    with Engine("numpy", n=64) as engine:
        cid, seed = new_offline_challenge()
        work = run_loops(engine, seed, 0, max_loops=1200)
        return json.loads(offline_proof(KEY, engine, cid, work).to_json())


def test_honest_offline_proof_verifies(proof_obj):
    proof = parse_proof(proof_obj)
    assert proof.loops == 1200 and len(proof.samples) == 12  # s = max(10, ceil(12))
    report = verify_proof(proof)
    assert report.valid, report.errors
    assert report.recomputed == sorted(s.index for s in proof.samples)
    assert report.p_detect_one_forged == 1.0


def _mutations(obj: dict):
    """Every field changed in a way that must make verification fail."""
    other = PrivateKey(7).public_key
    s0 = obj["samples"][0]
    flip = lambda h: h[:-1] + ("0" if h[-1] != "0" else "1")  # noqa: E731
    yield "challenge_id", {**obj, "challenge_id": "ab" * 16}
    yield "seed", {**obj, "seed": "cd" * 32}
    yield "n", {**obj, "n": 128}
    yield "worker_address", {**obj, "worker_address": other.address}
    yield "loops", {**obj, "loops": obj["loops"] + 1}
    yield "compute_time", {**obj, "compute_time": obj["compute_time"] + 1.0}
    yield "merkle_root", {**obj, "merkle_root": flip(obj["merkle_root"])}
    yield "public_key", {**obj, "public_key": "0x" + other.hex()}
    yield "device_signature", {**obj, "device_signature": flip(obj["device_signature"])}
    yield "sample.leaf", {**obj, "samples": [{**s0, "leaf": flip(s0["leaf"])}] + obj["samples"][1:]}
    yield (
        "sample.index",
        {**obj, "samples": [{**s0, "index": s0["index"] + 1}] + obj["samples"][1:]},
    )
    yield (
        "sample.proof",
        {
            **obj,
            "samples": [{**s0, "proof": [flip(s0["proof"][0])] + s0["proof"][1:]}]
            + obj["samples"][1:],
        },
    )
    yield (
        "sample.proof.truncated",
        {**obj, "samples": [{**s0, "proof": s0["proof"][:-1]}] + obj["samples"][1:]},
    )
    yield "samples.dropped", {**obj, "samples": obj["samples"][1:]}
    yield "samples.duplicated", {**obj, "samples": [s0] + obj["samples"][1:] + [s0]}
    yield "offline", {**obj, "offline": False}
    yield "token", {**obj, "token": "0x" + "11" * 64}


@pytest.mark.parametrize(
    "name",
    [
        m[0]
        for m in _mutations(
            {
                "samples": [{"index": 0, "leaf": "0x00", "proof": ["0x00"]}],
                "challenge_id": "",
                "seed": "",
                "n": 0,
                "loops": 0,
                "compute_time": 0.0,
                "merkle_root": "0x0",
                "device_signature": "0x0",
            }
        )
    ],
)
def test_every_tampered_field_is_refused(proof_obj, name):
    mutated = dict(_mutations(proof_obj))[name]
    try:
        proof = parse_proof(mutated)
    except ProofError:
        return  # refused at schema level
    report = verify_proof(proof)
    assert not report.valid, name
    assert report.errors


@pytest.mark.parametrize(
    "change,match",
    [
        ({"n": "64"}, "n"),
        ({"n": 100}, "multiple of 64"),
        ({"loops": 0}, "loops"),
        ({"loops": True}, "loops"),
        ({"merkle_root": "ab" * 32}, "merkle_root"),
        ({"merkle_root": "0x" + "AB" * 32}, "merkle_root"),
        ({"public_key": "0x04" + "00" * 32}, "public_key"),
        ({"samples": []}, "samples"),
        ({"samples": [{"index": -1, "leaf": "0x" + "00" * 32, "proof": []}]}, "index"),
        ({"compute_time": "fast"}, "compute_time"),
        ({"worker_address": "cpc1notanaddress"}, "worker_address"),
        ({"version": 2}, "version"),
        ({"device": {"name": "x"}}, "device.backend"),
    ],
)
def test_schema_errors_name_the_field(proof_obj, change, match):
    with pytest.raises(ProofError, match=match):
        parse_proof({**proof_obj, **change})


@pytest.mark.parametrize("missing", ["seed", "samples", "device_signature", "offline", "token"])
def test_missing_keys_are_invalid(proof_obj, missing):
    obj = {k: v for k, v in proof_obj.items() if k != missing}
    with pytest.raises(ProofError, match=missing):
        parse_proof(obj)


def test_unknown_keys_are_ignored(proof_obj):
    assert verify_proof(parse_proof({**proof_obj, "miner_note": "hello"})).valid


def test_unreadable_inputs_are_usage_errors(tmp_path):
    cases = {
        "empty": b"",
        "truncated": b'{"version": 1, "seed"',
        "list": b"[1, 2]",
        "binary": b"\xff\xfe\x00",
        "noversion": b'{"a": 1}',
    }
    for name, data in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_bytes(data)
        with pytest.raises(UnreadableInput):
            load_proof(p)
    with pytest.raises(UnreadableInput):
        load_proof(tmp_path / "missing.json")


def test_partial_recomputation_reports_detection_probability(proof_obj):
    report = verify_proof(parse_proof(proof_obj), audit=3, rng_seed=1)
    assert report.valid and len(report.recomputed) == 3
    assert report.p_detect_one_forged == pytest.approx(3 / 12)


def _forged_proof(leaf_of, output_of, loops: int = 40):
    """An offline proof a cheating miner could write: leaves and outputs of its choosing,
    a consistent tree, the offline indices of that tree, signed by its key."""
    from hashcloud.crypto.merkle import MerkleTree
    from hashcloud.poc.round import RoundWork, make_samples, sign_commit
    from hashcloud.poc.sampling import offline_indices, sample_count

    with Engine("numpy", n=64) as engine:
        cid, seed = new_offline_challenge()
        work = run_loops(engine, seed, 0, max_loops=loops)
        honest = offline_proof(KEY, engine, cid, work)
    leaves = [leaf_of(seed, i, work.leaves[i]) for i in range(loops)]
    tree = MerkleTree(leaves)
    fake = RoundWork(seed, 64, leaves, work.compute_time, False, tree)
    indices = offline_indices(tree.root, loops, sample_count(loops))
    return honest.model_copy(update={
        "merkle_root": tree.root,
        "samples": make_samples(tree, leaves, indices,
                                {i: output_of(seed, i) for i in indices}),
        "device_signature": sign_commit(KEY, cid, fake),
    })


def test_forged_leaf_with_consistent_tree_is_caught_by_recomputation():
    """A miner that commits garbage leaves with valid Merkle paths fails: the honest outputs
    no longer hash to the leaves, and whole-leaf recomputation disagrees too."""
    from hashcloud.engine.rows import loop_output

    proof = _forged_proof(lambda seed, i, leaf: bytes([1 + i]) * 32,
                          lambda seed, i: loop_output(seed, i, 64))
    report = verify_proof(proof)
    assert not report.valid
    assert any(e.startswith("outputs: index ") and "output does not hash to the leaf" in e
               for e in report.errors), report.errors
    assert not verify_proof(proof, full=True).valid  # whole leaves catch it too


def test_forged_output_with_consistent_leaf_and_tree_is_caught_by_rows():
    """A miner that commits a wrong output (its leaf hashing that output, paths valid) is
    caught by the row audit: every row of a garbage output is wrong (SPEC 3 v1.1)."""
    from hashcloud.engine.gemm import leaf_hash, loop_seed
    from hashcloud.engine.rows import loop_output

    def output_of(seed, i):  # the honest output with row 5's digest changed
        out = bytearray(loop_output(seed, i, 64))
        out[8 * 5] ^= 1
        return bytes(out)

    proof = _forged_proof(lambda seed, i, leaf: leaf_hash(loop_seed(seed, i), output_of(seed, i)),
                          output_of)
    report = verify_proof(proof, rows=64)  # every row: row 5 is among them
    assert [c.name for c in report.checks if not c.ok] == ["recomputation"], report.errors
    assert "row 5 digest does not match" in report.errors[0]
    assert verify_proof(proof, rows=64, full=True).errors[0].startswith("recomputation")


@pytest.mark.parametrize("version", [True, 1.0, "1", 2, None])
def test_mistyped_version_is_invalid(proof_obj, version):
    with pytest.raises(ProofError, match="version"):
        parse_proof({**proof_obj, "version": version})


def test_huge_compute_time_is_invalid_not_a_crash(proof_obj):
    with pytest.raises(ProofError, match="compute_time"):
        parse_proof({**proof_obj, "compute_time": 1e306})


def test_node_proof_with_a_malformed_challenge_id_fails_cleanly(proof_obj):
    obj = {**proof_obj, "offline": False, "token": "0x" + "11" * 64,
           "node": {"chain_id": "hc", "genesis": "ab" * 8,
                    "public_key": PrivateKey(9).public_key.hex()},
           "challenge": {"issued_height": 1, "block_hash": "ab" * 32, "expiry": 5},
           "indices_signature": "0x" + "22" * 64}
    obj["challenge_id"] = "abcd"
    report = verify_proof(parse_proof(obj), 0)
    assert not report.valid
    assert any("challenge token" in e for e in report.errors)


def test_odd_length_hex_seed_is_accepted_like_the_engine(proof_obj):
    """SPEC 1: a seed is any lower-case hex; an offline proof may use an odd-length one."""
    with Engine("numpy", n=64) as engine:
        work = run_loops(engine, "f", 0, max_loops=12)
        proof = offline_proof(KEY, engine, "abc", work)
    assert verify_proof(parse_proof(json.loads(proof.to_json()))).valid


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"device": {"name": "x", "backend": "quantum"}}, "unknown backend"),
        ({"compute_time": 1e-9}, "above the numpy peak"),
    ],
)
def test_verify_runs_the_commitment_sanity_checks(proof_obj, change, needle):
    """`verify` runs the node's SPEC 3 sanity checks (one audit): a proof re-signed by its
    own worker with an unknown backend or an impossible rate is invalid."""
    from hashcloud.poc.proof import ProofFile
    from hashcloud.poc.round import RoundWork, sign_commit

    proof = parse_proof({**proof_obj, **change})
    fake = RoundWork(proof.seed, proof.n, [b""] * proof.loops, proof.compute_time, False,
                     type("T", (), {"root": proof.merkle_root})())
    resigned = ProofFile.model_validate(
        {**proof.model_dump(), "device_signature": sign_commit(KEY, proof.challenge_id, fake)})
    report = verify_proof(resigned)
    assert [e for e in report.errors if e.startswith("commitment:")], report.errors
    assert needle in report.errors[0]


def test_an_engine_that_disagrees_with_the_cpu_output_is_an_engine_error():
    """The miner checks each recomputed output against its committed leaf before revealing:
    a device fault is reported as such, never sent to be failed by the node."""
    from hashcloud.errors import EngineError
    from hashcloud.poc.round import sample_outputs

    with Engine("numpy", n=64) as engine:
        work = run_loops(engine, "ab" * 32, 0, max_loops=4)
    assert set(sample_outputs(work.seed, 64, [1, 3], leaves=work.leaves)) == {1, 3}
    bad = list(work.leaves)
    bad[3] = bytes(32)
    with pytest.raises(EngineError, match="loop 3: the committed leaf"):
        sample_outputs(work.seed, 64, [1, 3], leaves=bad)


def test_v11_output_rules(proof_obj):
    """SPEC 3 v1.1: an offline proof that carries outputs carries every one (a v1 proof with
    none is still checked by whole leaves); oversized or out-of-range numbers are invalid, not
    a crash."""
    stripped = {**proof_obj, "samples": [{**proof_obj["samples"][0], "output": None},
                                         *proof_obj["samples"][1:]]}
    report = verify_proof(parse_proof(stripped))
    assert any(e.startswith("outputs: index ") and "offline proofs carry every output" in e
               for e in report.errors), report.errors
    v1 = {**proof_obj, "samples": [{**s, "output": None} for s in proof_obj["samples"]]}
    assert verify_proof(parse_proof(v1)).valid
    for field, value in (("index", 2**70), ("index", 2**40)):
        bad = {**proof_obj, "samples": [{**proof_obj["samples"][0], field: value},
                                        *proof_obj["samples"][1:]]}
        with pytest.raises(ProofError, match="samples.0.index"):
            parse_proof(bad)
    with pytest.raises(ProofError, match="samples"):
        parse_proof({**proof_obj, "samples": proof_obj["samples"] * 30})


def test_sample_outputs_on_several_threads_equal_one_thread():
    from hashcloud.engine.rows import loop_output
    from hashcloud.poc.round import sample_outputs

    indices = [0, 3, 5, 7, 11]
    one = sample_outputs("cd" * 32, 64, indices, workers=1)
    many = sample_outputs("cd" * 32, 64, indices, workers=4)
    assert list(many) == indices and many == one
    assert one[5] == loop_output("cd" * 32, 5, 64)


def test_an_interrupt_inside_the_tree_update_still_gives_a_whole_tree(monkeypatch):
    """Ctrl-C or SIGTERM (raised as KeyboardInterrupt) can land inside the builder's update,
    after a batch's leaves were stored but before their chunks were hashed: the tree had too
    few chunk roots and a mined round was rejected ("audit path too short", seen in a real
    SIGTERM test). The interrupted round's tree must still be the tree of its leaves."""
    from hashcloud.crypto.merkle import CompactMerkleBuilder, MerkleTree, verify_inclusion

    real = CompactMerkleBuilder._hash_complete_chunks
    calls = {"n": 0}

    def interrupted_on_the_third_batch(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # after `extend` stored the batch, before hashing it
        real(self)

    monkeypatch.setattr(CompactMerkleBuilder, "_hash_complete_chunks",
                        interrupted_on_the_third_batch)
    with Engine("numpy", 64, batch_size=100) as engine:
        work = run_loops(engine, "ab" * 8, 60.0, max_loops=1000)
    monkeypatch.setattr(CompactMerkleBuilder, "_hash_complete_chunks", real)
    assert work.interrupted and len(work.leaves) > 100
    full = MerkleTree(list(work.leaves))
    assert work.tree.root == full.root
    for i in (0, len(work.leaves) - 1, len(work.leaves) // 2):
        assert work.tree.audit_path(i) == full.audit_path(i)
        verify_inclusion(work.leaves[i], i, len(work.leaves), work.tree.audit_path(i),
                         work.tree.root)

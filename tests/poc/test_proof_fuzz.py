"""Whatever a proof file holds, loading and verifying it raises only HashCloudErrors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.crypto.keys import PrivateKey
from hashcloud.engine.mining import Engine
from hashcloud.errors import HashCloudError
from hashcloud.poc.proof import parse_proof
from hashcloud.poc.round import new_offline_challenge, offline_proof, run_loops
from hashcloud.poc.verify import verify_proof

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
    | st.sampled_from(["0x" + "ab" * 32, "ab" * 32, "0x", "0x" + "ab" * 64, "cpc1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def proof_obj() -> dict:
    with Engine("numpy", n=64) as engine:
        cid, seed = new_offline_challenge()
        work = run_loops(engine, seed, 0, max_loops=40)
        return json.loads(offline_proof(PrivateKey(3), engine, cid, work).to_json())


def _check(obj: object) -> None:
    try:
        proof = parse_proof(obj)
    except HashCloudError:
        return
    report = verify_proof(proof, 2)  # must return, never raise
    assert isinstance(report.valid, bool)


@settings(max_examples=150)
@given(st.data())
def test_random_field_values_never_crash(proof_obj, data):
    obj = dict(proof_obj)
    for key in data.draw(st.lists(st.sampled_from(sorted(obj)), min_size=1, max_size=3)):
        obj[key] = data.draw(json_values)
    _check(obj)


@settings(max_examples=100)
@given(st.data())
def test_random_sample_contents_never_crash(proof_obj, data):
    samples = [dict(s) for s in proof_obj["samples"]]
    i = data.draw(st.integers(0, len(samples) - 1))
    field = data.draw(st.sampled_from(["index", "leaf", "proof"]))
    samples[i][field] = data.draw(json_values | st.integers(0, 10**6))
    _check({**proof_obj, "samples": samples})


@given(json_values)
def test_arbitrary_json_never_crashes(value):
    _check(value)

"""Genesis (SPEC 6): record validation, canonical encoding, hash, block 0, JSON files."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hashcloud.chain.block import EMPTY_TX_ROOT, block_hash
from hashcloud.chain.genesis import (
    LOCAL_NODE_ALLOCATION,
    chain_domain,
    decode_genesis,
    encode_genesis,
    genesis_block,
    genesis_hash,
    genesis_state,
    load_genesis,
    make_local_genesis,
    write_genesis,
)
from hashcloud.chain.state import state_root
from hashcloud.codec import decode_canonical, encode_canonical
from hashcloud.crypto.hashing import sha256
from hashcloud.crypto.keys import PrivateKey
from hashcloud.errors import DecodeError, GenesisError
from tests.chain.test_tx import ALICE, BOB, make_genesis

ADDRESSES = [PrivateKey(i).public_key.address for i in range(1, 6)]


@settings(max_examples=20)
@given(
    alloc=st.dictionaries(st.sampled_from(ADDRESSES), st.integers(0, 2**80), max_size=5),
    timestamp=st.integers(0, 2**63), subsidy0=st.integers(0, 2**64 - 1),
    halving=st.integers(1, 2**64 - 1), epoch_length=st.integers(1, 2**32 - 1),
    chain_id=st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True),
)
def test_encoding_round_trip(alloc, timestamp, subsidy0, halving, epoch_length, chain_id):
    g = make_genesis(allocations=alloc, timestamp=timestamp, subsidy0=subsidy0,
                     halving_interval=halving, epoch_length=epoch_length, chain_id=chain_id)
    data = encode_genesis(g)
    assert decode_genesis(data) == g
    assert genesis_hash(g) == sha256(data).hex()
    with pytest.raises(DecodeError):
        decode_genesis(data + b"\x00")


def test_allocations_are_sorted_so_order_does_not_change_the_hash():
    a = make_genesis(allocations={ALICE.public_key.address: 1, BOB.public_key.address: 2})
    b = make_genesis(allocations={BOB.public_key.address: 2, ALICE.public_key.address: 1})
    assert list(a.allocations) == sorted(a.allocations)
    assert genesis_hash(a) == genesis_hash(b)


def test_decode_rejects_unsorted_allocations():
    fields = decode_canonical(encode_genesis(make_genesis()))
    fields[3] = list(reversed(fields[3]))
    with pytest.raises(DecodeError, match="sorted"):
        decode_genesis(encode_canonical(fields))


def test_every_field_changes_the_hash():
    base = make_genesis()
    changes = dict(chain_id="other", timestamp=1, allocations={}, validators=(),
                   authorities=(BOB.public_key.hex(),), subsidy0=2, halving_interval=2,
                   epoch_length=2, block_time_ms=1000)
    hashes = {genesis_hash(base)}
    for field, value in changes.items():
        hashes.add(genesis_hash(base.model_copy(update={field: value})))
    assert len(hashes) == len(changes) + 1


def test_genesis_block_is_deterministic():
    g = make_genesis()
    block = genesis_block(g)
    h = block.header
    assert (h.height, h.prev_hash, h.timestamp, h.proposer, h.signature) == (
        0, genesis_hash(g), g.timestamp, "", "")
    assert h.tx_root == EMPTY_TX_ROOT and h.compute_root == "" and block.transactions == ()
    assert h.state_root == state_root(genesis_state(g))
    assert block_hash(genesis_block(make_genesis()).header) == block_hash(h)


def test_genesis_block_hash_commits_to_every_genesis_field():
    """SPEC 5 v1.1 `g` (the first 16 hex digits of the genesis block hash) must tell apart two
    chains that share a chain id, timestamp and allocations but differ in authorities,
    validators, schedule or block time: otherwise their signatures replay on each other."""
    base = make_genesis()
    other = PrivateKey(0xBEEF).public_key.hex()
    changes = {"authorities": (other,), "validators": (other,), "subsidy0": 7,
               "halving_interval": 9, "epoch_length": 3, "block_time_ms": 1234}
    hashes = {block_hash(genesis_block(base).header)}
    domains = {chain_domain(base)}
    for field, value in changes.items():
        changed = base.model_copy(update={field: value})
        hashes.add(block_hash(genesis_block(changed).header))
        domains.add(chain_domain(changed))
    assert len(hashes) == len(domains) == len(changes) + 1


def test_genesis_state_counts_allocations():
    state = genesis_state(make_genesis())
    assert state.total_supply == 2 * 10**12
    assert (state.totals.emitted, state.totals.pool, state.totals.epoch) == (0, 0, 0)


def test_schedule_defaults():
    g = make_genesis()
    assert (g.subsidy0, g.halving_interval, g.epoch_length) == (50 * 10**9, 1_051_200, 720)


def test_v1_genesis_file_is_refused_with_a_reason(tmp_path):
    # A v1 genesis (immediate rewards) cannot found a v1.1 chain: refused, not migrated.
    obj = json.loads(make_genesis().model_dump_json())
    for name in ("subsidy0", "halving_interval", "epoch_length"):
        del obj[name]
    obj.update(reward_numerator=1, reward_denominator=1)
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(GenesisError, match="v1 genesis .*node init"):
        load_genesis(path)
    v1_bytes = encode_canonical([1, *decode_canonical(encode_genesis(make_genesis()))[1:]])
    with pytest.raises(DecodeError, match="format 1"):
        decode_genesis(v1_bytes)


@pytest.mark.parametrize(
    "field,value",
    [("chain_id", "Upper"), ("chain_id", ""), ("chain_id", "x" * 33), ("chain_id", "a/b"),
     ("authorities", ()), ("authorities", (ALICE.public_key.hex(),) * 2),
     ("authorities", ("02" + "00" * 32,)), ("validators", ("zz",)),
     ("allocations", {"cpc1bad": 1}), ("allocations", {ALICE.public_key.address: -1}),
     ("allocations", {ALICE.public_key.address: 2**95, BOB.public_key.address: 2**95}),
     ("halving_interval", 0), ("epoch_length", 0), ("subsidy0", -1), ("subsidy0", 2**64),
     ("timestamp", -1), ("timestamp", 1.5)],
)
def test_field_validation(field, value):
    with pytest.raises(ValidationError):
        make_genesis(**{field: value})


def test_write_and_load(tmp_path):
    g = make_genesis()
    path = tmp_path / "genesis.json"
    write_genesis(path, g)
    assert load_genesis(path) == g
    assert json.loads(path.read_text())["chain_id"] == g.chain_id


@pytest.mark.parametrize(
    "text,needle",
    [("{not json", "not valid JSON"), ("[]", "invalid"), ('{"chain_id": "x"}', "invalid")],
)
def test_load_malformed(tmp_path, text, needle):
    path = tmp_path / "genesis.json"
    path.write_text(text)
    with pytest.raises(GenesisError, match=needle):
        load_genesis(path)


def test_load_missing(tmp_path):
    with pytest.raises(GenesisError, match="not found"):
        load_genesis(tmp_path / "nope.json")


def test_load_rejects_wrong_types(tmp_path):
    obj = json.loads(make_genesis().model_dump_json())
    obj["timestamp"] = "1000"
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(GenesisError, match="timestamp"):
        load_genesis(path)


def test_make_local_genesis():
    key = PrivateKey(77)
    g = make_local_genesis(key, extra_alloc={ALICE.public_key.address: 5})
    assert g.authorities == g.validators == (key.public_key.hex(),)
    assert g.allocations[key.public_key.address] == LOCAL_NODE_ALLOCATION
    assert g.allocations[ALICE.public_key.address] == 5
    assert g.chain_id == "hashcloud-local"
    assert genesis_hash(g) == genesis_hash(make_local_genesis(key, {ALICE.public_key.address: 5}))

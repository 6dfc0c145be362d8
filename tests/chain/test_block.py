"""Blocks (SPEC 6): hashes, roots, encodings, and apply_block's header checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashcloud.chain.block import (
    EMPTY_TX_ROOT,
    Block,
    BlockHeader,
    block_hash,
    block_signing_bytes,
    block_to_json,
    compute_root,
    decode_block,
    encode_block,
    header_hash_bytes,
    sign_header,
    tx_root,
)
from hashcloud.chain.genesis import chain_domain, genesis_block, genesis_state
from hashcloud.chain.state import state_root
from hashcloud.chain.transition import MAX_FUTURE_DRIFT_MS, apply_block, build_block
from hashcloud.chain.tx import compute_result_hash, tx_id, tx_to_json
from hashcloud.codec import decode_canonical, encode_canonical
from hashcloud.crypto.hashing import sha256
from hashcloud.crypto.merkle import merkle_root
from hashcloud.crypto.signatures import ChainDomain
from hashcloud.errors import DecodeError, InvalidBlock
from tests.chain.test_tx import (
    ALICE,
    AUTHORITY,
    BOB,
    CHAIN,
    WORKER,
    make_genesis,
    submit,
    transfer,
)

GENESIS = make_genesis()
GENESIS_HEADER = genesis_block(GENESIS).header
T1 = GENESIS.timestamp + 2000


def build(txs=(), key=AUTHORITY, timestamp=T1, genesis=GENESIS):
    return build_block(genesis_state(genesis), genesis_block(genesis).header, list(txs),
                       genesis, key, timestamp)


@pytest.fixture(scope="module")
def built():
    """A block with two transfers and two compute results."""
    txs = [transfer(), submit(task_id="01" * 16), transfer(BOB, ALICE, 7),
           submit(nonce=1, task_id="02" * 16, loops=2000)]
    result = build(txs)
    assert not result.rejected
    return result


def test_block_hash_covers_header_without_signature(built):
    header = built.block.header
    fields = decode_canonical(header_hash_bytes(header))
    assert fields == [header.height, header.prev_hash, header.timestamp, header.proposer,
                      header.tx_root, header.state_root, header.compute_root]
    assert block_hash(header) == sha256(header_hash_bytes(header)).hex()
    assert block_hash(header.model_copy(update={"signature": "11" * 64})) == block_hash(header)


def test_roots(built):
    block = built.block
    ids = [tx_id(tx) for tx in block.transactions]
    assert block.header.tx_root == merkle_root([bytes.fromhex(i) for i in ids]).hex()
    results = [tx.payload for tx in block.transactions if tx.payload is not None]
    assert len(results) == 2
    assert block.header.compute_root == merkle_root(
        [compute_result_hash(r) for r in results]
    ).hex()
    assert block.header.state_root == state_root(built.state)


def test_empty_block_roots():
    block = build().block
    assert block.header.tx_root == EMPTY_TX_ROOT == sha256(b"").hex() == tx_root([])
    assert block.header.compute_root == "" == compute_root([transfer()])


def test_local_block_imports_after_encode_decode(built):
    data = encode_block(built.block)
    imported = decode_block(data)
    assert imported == built.block
    state = apply_block(genesis_state(GENESIS), imported, GENESIS_HEADER, GENESIS,
                        now_ms=T1)
    assert state == built.state


def test_apply_block_leaves_input_state_untouched(built):
    before = genesis_state(GENESIS)
    apply_block(before, built.block, GENESIS_HEADER, GENESIS)
    assert before == genesis_state(GENESIS)


@settings(max_examples=10)
@given(st.lists(st.integers(0, 10**6), max_size=3), st.integers(0, 10**9))
def test_block_encoding_round_trip(amounts, delay):
    txs = [transfer(amount=a, nonce=i) for i, a in enumerate(amounts)]
    block = build(txs, timestamp=T1 + delay).block
    data = encode_block(block)
    assert decode_block(data) == block
    assert encode_block(decode_block(data)) == data
    with pytest.raises(DecodeError, match="trailing"):
        decode_block(data + b"\x00")


def test_decode_block_rejects_non_canonical(built):
    header_obj, txs_obj = decode_canonical(encode_block(built.block))
    header_obj[2] = header_obj[2] + 0  # unchanged
    data = encode_canonical([header_obj, txs_obj])
    assert data[0] == 0x92
    with pytest.raises(DecodeError, match="non-canonical"):
        decode_block(b"\xdc\x00\x02" + data[1:])
    with pytest.raises(DecodeError):
        decode_block(encode_canonical([header_obj[:-1], txs_obj]))


def test_block_to_json_shape(built):
    obj = block_to_json(built.block)
    assert obj["hash"] == block_hash(built.block.header)
    assert set(obj["header"]) == {"height", "prev_hash", "timestamp", "proposer", "tx_root",
                                  "state_root", "compute_root", "signature"}
    first = obj["transactions"][1]
    assert first["tx_id"] == tx_id(built.block.transactions[1])
    assert isinstance(first["payload"], dict)
    assert {k: v for k, v in first.items() if k != "tx_id"} == tx_to_json(
        built.block.transactions[1]
    )


# ---------------------------------------------------------------------- tampering


def _tampered(block: Block, resign: bool = True, **changes) -> Block:
    header = block.header.model_copy(update=changes)
    if resign:
        header = sign_header(header, AUTHORITY, CHAIN)
    return block.model_copy(update={"header": header})


TAMPERS = [
    ({"height": 2}, "block height 2 but parent is 0"),
    ({"prev_hash": "ab" * 32}, "prev_hash does not match"),
    ({"tx_root": "ab" * 32}, "tx_root does not match"),
    ({"state_root": "ab" * 32}, "state_root does not match"),
    ({"compute_root": "ab" * 32}, "compute_root does not match"),
    ({"compute_root": ""}, "compute_root does not match"),
    ({"timestamp": GENESIS.timestamp - 1}, "before the parent"),
]


@pytest.mark.parametrize("changes,needle", TAMPERS)
def test_tampered_header_refused_even_when_resigned(built, changes, needle):
    with pytest.raises(InvalidBlock, match=needle):
        apply_block(genesis_state(GENESIS), _tampered(built.block, **changes),
                    GENESIS_HEADER, GENESIS)


@pytest.mark.parametrize("changes,_", TAMPERS + [({"proposer": BOB.public_key.address}, "")])
def test_tampered_header_without_resigning_breaks_signature(built, changes, _):
    block = _tampered(built.block, resign=False, **changes)
    with pytest.raises(InvalidBlock):
        apply_block(genesis_state(GENESIS), block, GENESIS_HEADER, GENESIS)


def test_signature_altered(built):
    sig = built.block.header.signature
    flipped = sig[:-2] + ("00" if sig[-2:] != "00" else "01")
    block = built.block.model_copy(
        update={"header": built.block.header.model_copy(update={"signature": flipped})}
    )
    with pytest.raises(InvalidBlock, match="block signature is invalid"):
        apply_block(genesis_state(GENESIS), block, GENESIS_HEADER, GENESIS)


def test_unsigned_block_refused(built):
    with pytest.raises(InvalidBlock, match="not signed"):
        apply_block(genesis_state(GENESIS), _tampered(built.block, False, signature=""),
                    GENESIS_HEADER, GENESIS)


def test_proposer_must_be_authority():
    block = build().block
    forged = sign_header(block.header.model_copy(update={"proposer": BOB.public_key.address}),
                         BOB, CHAIN)
    with pytest.raises(InvalidBlock, match="is not a genesis authority"):
        apply_block(genesis_state(GENESIS), Block(header=forged), GENESIS_HEADER, GENESIS)
    with pytest.raises(InvalidBlock, match="cannot propose"):
        build(key=BOB)


@pytest.mark.parametrize("domain", [
    ChainDomain("other-chain", CHAIN.genesis),  # another chain id
    chain_domain(make_genesis(timestamp=2_000_000)),  # same chain id, another genesis
])
def test_authority_key_signing_for_other_chain_refused(domain):
    block = build().block
    other = sign_header(block.header, AUTHORITY, domain)
    with pytest.raises(InvalidBlock, match="block signature is invalid"):
        apply_block(genesis_state(GENESIS), Block(header=other), GENESIS_HEADER, GENESIS)


def test_block_signing_bytes_name_chain_and_genesis():
    header = build().block.header
    tag = f"hc/block/v1/test-chain/{CHAIN.genesis}".encode()
    assert block_signing_bytes(header, CHAIN) == tag + bytes.fromhex(block_hash(header))


def test_timestamp_not_too_far_in_future():
    block = build(timestamp=T1).block
    apply_block(genesis_state(GENESIS), block, GENESIS_HEADER, GENESIS,
                now_ms=T1 - MAX_FUTURE_DRIFT_MS)
    with pytest.raises(InvalidBlock, match="in the future"):
        apply_block(genesis_state(GENESIS), block, GENESIS_HEADER, GENESIS,
                    now_ms=T1 - MAX_FUTURE_DRIFT_MS - 1)


def test_invalid_transaction_makes_block_invalid(built):
    bad = transfer(nonce=9)
    block = built.block.model_copy(update={"transactions": (*built.block.transactions, bad)})
    ids = [tx_id(tx) for tx in block.transactions]
    block = _tampered(block, tx_root=tx_root(ids))
    with pytest.raises(InvalidBlock, match="transaction 4 .* nonce 9 but account expects 1"):
        apply_block(genesis_state(GENESIS), block, GENESIS_HEADER, GENESIS)


def test_duplicate_transaction_refused():
    tx = transfer()
    header = build([tx]).block.header
    block = Block(header=header, transactions=(tx, tx))
    with pytest.raises(InvalidBlock, match="duplicate"):
        apply_block(genesis_state(GENESIS), block, GENESIS_HEADER, GENESIS)


def test_build_block_skips_invalid_candidates():
    good, bad = transfer(), transfer(WORKER, ALICE, 1)  # WORKER has no coins
    result = build([good, bad, good])
    assert result.block.transactions == (good,)
    reasons = [reason for _, reason in result.rejected]
    assert "insufficient balance" in reasons[0] and reasons[1] == "duplicate transaction"


def test_header_field_validation():
    values = build().block.header.model_dump()
    for field, value in [("prev_hash", "AB" * 32), ("proposer", "cpc1bad"),
                         ("signature", "ab"), ("compute_root", "x"), ("height", -1)]:
        with pytest.raises(ValueError):
            BlockHeader(**{**values, field: value})

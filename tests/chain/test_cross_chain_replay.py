"""Cross-chain replay through the state transition (SPEC 5 v1.1, issue 11 item 3).

Two chains share the chain id `test-chain` but not their genesis (another timestamp, or
other allocations). Every domain-tagged signature made on one (transfer, ComputeResult,
receipt, block, challenge) must be refused on the other, although the same keys hold the
same balances on both.
"""

from __future__ import annotations

import pytest

from hashcloud.chain.block import block_hash, sign_header
from hashcloud.chain.genesis import chain_domain, genesis_block, genesis_state
from hashcloud.chain.transition import apply_block, build_block, validate_transaction
from hashcloud.chain.tx import make_submit_result, tx_signing_bytes
from hashcloud.codec import decode_canonical, encode_canonical
from hashcloud.crypto.signatures import sign
from hashcloud.errors import AuditError, InvalidBlock, InvalidComputeResult, InvalidTxSignature
from hashcloud.poc.challenge import issue_challenge, verify_challenge
from tests.chain.test_tx import (
    ALICE,
    AUTHORITY,
    BOB,
    START_BALANCE,
    VALIDATOR,
    WORKER,
    make_genesis,
    make_receipt,
    transfer,
)

HERE = make_genesis()
THERE = {
    "timestamp": make_genesis(timestamp=2_000_000),
    "allocations": make_genesis(allocations={ALICE.public_key.address: START_BALANCE,
                                             BOB.public_key.address: START_BALANCE,
                                             WORKER.public_key.address: 1}),
}


@pytest.fixture(params=sorted(THERE))
def there(request):
    """A chain with HERE's chain id and keys, another genesis."""
    return THERE[request.param]


def test_the_chains_share_an_id_not_a_domain(there):
    assert there.chain_id == HERE.chain_id
    assert chain_domain(there) != chain_domain(HERE)
    assert chain_domain(there).genesis != chain_domain(HERE).genesis


def test_transfer_is_refused_on_the_other_chain(there):
    tx = transfer(domain=chain_domain(HERE))
    validate_transaction(genesis_state(HERE), tx, HERE)
    with pytest.raises(InvalidTxSignature, match="does not verify for chain test-chain/"):
        validate_transaction(genesis_state(there), tx, there)
    # Signed for `there`, it is valid there and refused here: the check is symmetric.
    mirrored = transfer(domain=chain_domain(there))
    validate_transaction(genesis_state(there), mirrored, there)
    with pytest.raises(InvalidTxSignature):
        validate_transaction(genesis_state(HERE), mirrored, HERE)


def test_submit_result_is_refused_on_the_other_chain(there):
    claim = make_submit_result(WORKER, make_receipt(domain=chain_domain(HERE)), 0,
                               domain=chain_domain(HERE))
    validate_transaction(genesis_state(HERE), claim, HERE)
    with pytest.raises(InvalidTxSignature):
        validate_transaction(genesis_state(there), claim, there)


def test_receipt_is_refused_on_the_other_chain(there):
    """The worker re-signs its claim for `there` but carries HERE's receipt: the validator's
    signature on the receipt names HERE's genesis, so `there` refuses it."""
    claim = make_submit_result(WORKER, make_receipt(domain=chain_domain(HERE)), 0,
                               domain=chain_domain(there))
    with pytest.raises(InvalidComputeResult, match="receipt signature is invalid"):
        validate_transaction(genesis_state(there), claim, there)
    honest = make_submit_result(WORKER, make_receipt(domain=chain_domain(there)), 0,
                                domain=chain_domain(there))
    validate_transaction(genesis_state(there), honest, there)


def test_block_is_refused_on_the_other_chain(there):
    """`there`'s next block, signed by the same authority under HERE's domain, is refused."""
    parent = genesis_block(there).header
    own = build_block(genesis_state(there), parent, [], there, AUTHORITY,
                      parent.timestamp + 2000).block
    apply_block(genesis_state(there), own, parent, there)
    forged = sign_header(own.header, AUTHORITY, chain_domain(HERE))
    with pytest.raises(InvalidBlock, match="block signature is invalid"):
        apply_block(genesis_state(there), own.model_copy(update={"header": forged}),
                    parent, there)


def test_challenge_is_refused_on_the_other_chain(there):
    head = genesis_block(HERE).header
    ch = issue_challenge(VALIDATOR, chain_domain(HERE), WORKER.public_key.address, 64, 0,
                         "ab" * 32, head.timestamp + 60_000)
    verify_challenge(ch, VALIDATOR.public_key, chain_domain(HERE))
    with pytest.raises(AuditError, match="not signed by this node"):
        verify_challenge(ch, VALIDATOR.public_key, chain_domain(there))


def test_signatures_of_the_v1_tags_are_refused():
    """Stored data signed before SPEC 5 v1.1 (`hc/<kind>/v1/<chain_id>`, no genesis) does not
    verify: a v1 data dir is refused, naming the first block and the domain it needs."""
    parent = genesis_block(HERE).header
    block = build_block(genesis_state(HERE), parent, [], HERE, AUTHORITY,
                        parent.timestamp + 2000).block
    v1_message = b"hc/block/v1/test-chain" + bytes.fromhex(block_hash(block.header))
    v1_header = block.header.model_copy(update={"signature": sign(AUTHORITY, v1_message).hex()})
    needed = f"invalid for chain test-chain/{chain_domain(HERE).genesis}"
    with pytest.raises(InvalidBlock, match=needed):
        apply_block(genesis_state(HERE), block.model_copy(update={"header": v1_header}), parent,
                    HERE)
    tx = transfer(domain=chain_domain(HERE))
    draft = tx.model_copy(update={"signature": "00" * 64})
    v1_tx_bytes = encode_canonical([b"hc/tx/v1/test-chain", *decode_canonical(
        tx_signing_bytes(draft, chain_domain(HERE)))[1:]])
    v1_tx = tx.model_copy(update={"signature": sign(ALICE, v1_tx_bytes).hex()})
    with pytest.raises(InvalidTxSignature):
        validate_transaction(genesis_state(HERE), v1_tx, HERE)

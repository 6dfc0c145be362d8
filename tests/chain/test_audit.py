"""The offline chain audit (hashcloud.chain.audit, SPEC 6): everything it must catch."""

from __future__ import annotations

import pytest

from hashcloud.chain.audit import audit_chain
from hashcloud.chain.block import block_hash, encode_block
from hashcloud.chain.genesis import chain_domain, genesis_block, genesis_state
from hashcloud.chain.ledger import Ledger
from hashcloud.chain.state import encode_state
from hashcloud.chain.store import LOG_NAME, ChainStore
from hashcloud.chain.transition import build_block
from hashcloud.errors import ChainAuditFailed, ChainError
from tests.chain.test_ledger import GENESIS, T0, grow
from tests.chain.test_tx import AUTHORITY, BOB, make_genesis, submit, transfer


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "chain"


def test_audit_detects_a_snapshot_not_matching_its_block(data_dir):
    with Ledger.open(data_dir, GENESIS, snapshot_interval=1000) as ledger:
        grow(ledger, 3)
        wrong = genesis_state(GENESIS)
        ledger.store.write_snapshot(3, bytes.fromhex(ledger.head_hash), encode_state(wrong))
    with pytest.raises(ChainAuditFailed, match="snapshot at height 3 differs"):
        audit_chain(data_dir, GENESIS)


def test_audit_clean_chain(data_dir):
    with Ledger.open(data_dir, GENESIS, snapshot_interval=3) as ledger:
        grow(ledger, 4)
        ledger.produce_block([submit()], AUTHORITY, ledger.head.timestamp + 1)
        head, state = ledger.head_hash, ledger.state
    report = audit_chain(data_dir, GENESIS)
    assert (report.height, report.blocks, report.transactions) == (5, 6, 5)
    assert report.head_hash == head and report.emitted == state.totals.emitted == 5 * 50 * 10**9
    assert report.minted == 0 and report.pool == report.emitted  # epoch 0 is still open
    assert report.snapshot_height == 3


def test_audit_other_genesis(data_dir):
    Ledger.open(data_dir, GENESIS).close()
    with pytest.raises(ChainAuditFailed, match="different genesis"):
        audit_chain(data_dir, make_genesis(chain_id="other-chain"))


def test_audit_detects_every_flipped_byte_position(data_dir):
    with Ledger.open(data_dir, GENESIS) as ledger:
        grow(ledger, 3)
    log = data_dir / LOG_NAME
    original = log.read_bytes()
    # Every 7th byte, plus the very first and last: header, record heads, bodies, digests.
    positions = sorted({0, len(original) - 1, *range(0, len(original), 7)})
    for pos in positions:
        damaged = bytearray(original)
        damaged[pos] ^= 0x01
        log.write_bytes(bytes(damaged))
        (data_dir / "blocks.idx").unlink(missing_ok=True)
        with pytest.raises(ChainAuditFailed):
            audit_chain(data_dir, GENESIS)
    log.write_bytes(original)
    audit_chain(data_dir, GENESIS)


def test_audit_detects_a_well_checksummed_invalid_block(data_dir):
    with Ledger.open(data_dir, GENESIS) as ledger:
        grow(ledger, 2)
        built = build_block(ledger.state, ledger.head, [transfer(nonce=2)], GENESIS,
                            AUTHORITY, ledger.head.timestamp + 1)
        # Written straight into the store, bypassing validation: proposer forged.
        forged = built.block.header.model_copy(update={"proposer": BOB.public_key.address})
        block = built.block.model_copy(update={"header": forged})
        ledger.store.append_block(3, bytes.fromhex(block_hash(forged)), encode_block(block))
    with pytest.raises(ChainAuditFailed, match="block 3: proposer .* not a genesis authority"):
        audit_chain(data_dir, GENESIS)
    with pytest.raises(ChainError, match="stored block 3 is invalid"):
        Ledger.open(data_dir, GENESIS)


def test_audit_detects_stored_hash_mismatch(data_dir):
    Ledger.open(data_dir, GENESIS).close()
    with ChainStore(data_dir) as store:
        g = genesis_block(GENESIS)
        built = build_block(genesis_state(GENESIS), g.header, [], GENESIS, AUTHORITY, T0 + 1)
        store.append_block(1, b"\x01" * 32, encode_block(built.block))
    with pytest.raises(ChainAuditFailed, match="does not hash to its recorded hash"):
        audit_chain(data_dir, GENESIS)


def test_audit_reports_a_torn_tail_when_no_writer_runs(tmp_path):
    """A truncated last record (crash mid-append) is not 'chain OK' for an offline audit."""
    from hashcloud.chain.genesis import make_local_genesis
    from hashcloud.chain.tx import make_transfer
    from hashcloud.crypto.keys import PrivateKey

    key = PrivateKey(21)
    genesis = make_local_genesis(key)
    with Ledger.open(tmp_path, genesis) as ledger:
        for nonce in range(2):
            tx = make_transfer(key, PrivateKey(22).public_key.address, 5, nonce,
                               domain=chain_domain(genesis))
            ledger.produce_block([tx], key)
    assert audit_chain(tmp_path, genesis).height == 2
    log = tmp_path / "blocks.log"
    log.write_bytes(log.read_bytes()[:-40])  # cut into the last record
    with pytest.raises(ChainAuditFailed, match="incomplete last record"):
        audit_chain(tmp_path, genesis)


def test_audit_replays_through_the_ledgers_replay(data_dir, monkeypatch):
    """One replay loop: the audit applies blocks via `ledger.replay`, like `Ledger.open`."""
    import hashcloud.chain.ledger as ledger_module

    with Ledger.open(data_dir, GENESIS) as ledger:
        grow(ledger, 3)
    applied = []
    real_apply = ledger_module.apply_block

    def counting_apply(*args, **kwargs):
        applied.append(args[1].header.height)
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(ledger_module, "apply_block", counting_apply)
    assert audit_chain(data_dir, GENESIS).height == 3
    assert applied == [1, 2, 3]


def test_audit_and_ledger_report_an_undecodable_block(data_dir):
    Ledger.open(data_dir, GENESIS).close()
    with ChainStore(data_dir) as store:
        store.append_block(1, b"\x02" * 32, b"\xc1 not a block")
    with pytest.raises(ChainAuditFailed, match="block 1: does not decode"):
        audit_chain(data_dir, GENESIS)
    with pytest.raises(ChainError, match="stored block 1 is invalid: does not decode"):
        Ledger.open(data_dir, GENESIS)


def test_audit_and_ledger_share_the_block_0_check(data_dir, monkeypatch):
    """Block 0 of another genesis, in a store bound to this one: one check, one message."""
    from hashcloud.chain import ledger as ledger_module
    from hashcloud.chain.genesis import genesis_hash

    other = genesis_block(make_genesis(timestamp=2_000_000))
    with ChainStore(data_dir, genesis_hash=bytes.fromhex(genesis_hash(GENESIS))) as store:
        store.append_block(0, bytes.fromhex(block_hash(other.header)), encode_block(other))
    calls = []
    real_check = ledger_module.check_genesis_block

    def counting_check(*args, **kwargs):
        calls.append(args[1])
        return real_check(*args, **kwargs)

    monkeypatch.setattr(ledger_module, "check_genesis_block", counting_check)
    monkeypatch.setattr("hashcloud.chain.audit.check_genesis_block", counting_check)
    message = "block 0 of the store is not this genesis's block"
    with pytest.raises(ChainAuditFailed, match=f"block 0: {message}"):
        audit_chain(data_dir, GENESIS)
    with pytest.raises(ChainError, match=message):
        Ledger.open(data_dir, GENESIS)
    assert calls == [GENESIS, GENESIS]

"""The ledger (SPEC 6): genesis binding, block production/import, reopen, replay."""

from __future__ import annotations

import pytest

import hashcloud.chain.ledger as ledger_module
from hashcloud.chain.block import block_hash, sign_header
from hashcloud.chain.genesis import genesis_block, genesis_state
from hashcloud.chain.ledger import Ledger
from hashcloud.chain.state import balances_total, encode_state, get_account, pending_work
from hashcloud.chain.transition import build_block
from hashcloud.chain.tx import tx_id
from hashcloud.errors import InvalidBlock, StoreError
from tests.chain.test_tx import (
    ALICE,
    AUTHORITY,
    BOB,
    CHAIN,
    START_BALANCE,
    WORKER,
    make_genesis,
    submit,
    transfer,
)

GENESIS = make_genesis()
T0 = GENESIS.timestamp


def grow(ledger: Ledger, blocks: int) -> list[str]:
    """Add `blocks` blocks, each with one ALICE -> BOB transfer; return the tx ids."""
    ids = []
    for _ in range(blocks):
        nonce = ledger.account(ALICE.public_key.address).nonce
        tx = transfer(amount=10 + nonce, nonce=nonce)
        built = ledger.produce_block([tx], AUTHORITY, ledger.head.timestamp + 2000)
        assert not built.rejected
        ids.append(tx_id(tx))
    return ids


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "chain"


def test_open_creates_genesis(data_dir):
    with Ledger.open(data_dir, GENESIS) as ledger:
        assert ledger.height == 0
        assert ledger.head == genesis_block(GENESIS).header
        assert ledger.account(ALICE.public_key.address).balance == START_BALANCE
        assert ledger.get_block(0) == genesis_block(GENESIS)
        assert ledger.get_block(1) is None


def test_produce_and_query(data_dir):
    with Ledger.open(data_dir, GENESIS) as ledger:
        ids = grow(ledger, 2)
        claim = submit()
        built = ledger.produce_block([claim], AUTHORITY, ledger.head.timestamp + 2000)
        assert ledger.height == 3
        assert ledger.find_tx(ids[1]) == (2, 0)
        assert ledger.find_tx(tx_id(claim)) == (3, 0)
        assert ledger.get_transaction(tx_id(claim)) == claim
        assert ledger.find_tx("00" * 32) is None
        assert ledger.get_block_by_hash(ledger.head_hash) == built.block
        assert ledger.get_block_by_hash("zz") is None
        assert ledger.get_block_by_hash("00" * 32) is None
        state = ledger.state
        assert pending_work(state, WORKER.public_key.address).work > 0  # paid at epoch close
        assert balances_total(state) == state.total_supply
        assert state.total_supply == 2 * START_BALANCE + state.totals.emitted - state.totals.pool


def test_add_block_imports_a_block_built_elsewhere(tmp_path):
    with Ledger.open(tmp_path / "a", GENESIS) as producer, \
            Ledger.open(tmp_path / "b", GENESIS) as follower:
        grow(producer, 3)
        for height in range(1, 4):
            follower.add_block(producer.get_block(height), now_ms=T0 + 10_000)
        assert follower.head == producer.head
        assert encode_state(follower.state) == encode_state(producer.state)


def test_invalid_block_changes_nothing(data_dir):
    with Ledger.open(data_dir, GENESIS) as ledger:
        grow(ledger, 1)
        built = build_block(ledger.state, ledger.head, [transfer(nonce=1)], GENESIS,
                            AUTHORITY, ledger.head.timestamp + 40_000)
        bad = built.block.model_copy(update={"header": sign_header(
            built.block.header.model_copy(update={"state_root": "00" * 32}), AUTHORITY, CHAIN)})
        before = (ledger.head, encode_state(ledger.state), ledger.store.height)
        with pytest.raises(InvalidBlock, match="state_root"):
            ledger.add_block(bad, now_ms=T0 + 100_000)
        assert (ledger.head, encode_state(ledger.state), ledger.store.height) == before
        with pytest.raises(InvalidBlock, match="in the future"):
            ledger.add_block(built.block, now_ms=ledger.head.timestamp)
        ledger.add_block(built.block, now_ms=ledger.head.timestamp + 10_000)
        assert ledger.height == 2


def test_other_genesis_refused(data_dir):
    Ledger.open(data_dir, GENESIS).close()
    with pytest.raises(StoreError, match="different genesis"):
        Ledger.open(data_dir, make_genesis(chain_id="other-chain"))


@pytest.mark.parametrize("interval", [1000, 4], ids=["replay", "snapshot"])
def test_reopen_restores_state(data_dir, interval, monkeypatch):
    with Ledger.open(data_dir, GENESIS, snapshot_interval=interval) as ledger:
        ids = grow(ledger, 10)
        head, state = ledger.head, encode_state(ledger.state)
    applied = []
    real_apply = ledger_module.apply_block

    def counting_apply(*args, **kwargs):
        applied.append(args[1].header.height)
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(ledger_module, "apply_block", counting_apply)
    with Ledger.open(data_dir, GENESIS, snapshot_interval=interval) as reopened:
        assert reopened.head == head
        assert encode_state(reopened.state) == state
        assert reopened.find_tx(ids[0]) == (1, 0) and reopened.find_tx(ids[9]) == (10, 0)
        grow(reopened, 1)
    # Replay applies every block; the snapshot at height 8 leaves only blocks 9 and 10.
    assert applied == (list(range(1, 11)) if interval == 1000 else [9, 10])


def test_snapshot_not_matching_its_block_is_ignored(data_dir):
    with Ledger.open(data_dir, GENESIS, snapshot_interval=1000) as ledger:
        grow(ledger, 3)
        wrong = genesis_state(GENESIS)
        ledger.store.write_snapshot(3, bytes.fromhex(ledger.head_hash), encode_state(wrong))
        state = encode_state(ledger.state)
    with Ledger.open(data_dir, GENESIS) as reopened:
        assert encode_state(reopened.state) == state


def test_reader_refresh_sees_new_blocks(data_dir):
    with Ledger.open(data_dir, GENESIS) as writer:
        grow(writer, 1)
        with Ledger.open(data_dir, GENESIS, readonly=True) as reader:
            assert reader.height == 1
            grow(writer, 2)
            assert reader.refresh() == 3
            assert reader.head == writer.head
            assert get_account(reader.state, BOB.public_key.address) == get_account(
                writer.state, BOB.public_key.address)
            with pytest.raises(StoreError):
                reader.produce_block([], AUTHORITY, writer.head.timestamp + 1)


def test_readonly_open_of_missing_store(tmp_path):
    with pytest.raises(StoreError):
        Ledger.open(tmp_path / "nothing", GENESIS, readonly=True)


def test_unbound_store_is_only_bound_after_block_0_matches(tmp_path):
    """A refused open must not bind the store to the wrong genesis (meta.json deleted)."""
    from hashcloud.chain.genesis import genesis_hash as _gh
    from hashcloud.chain.genesis import make_local_genesis
    from hashcloud.chain.ledger import Ledger
    from hashcloud.crypto.keys import PrivateKey
    from hashcloud.errors import StoreError

    right = make_local_genesis(PrivateKey(11))
    wrong = make_local_genesis(PrivateKey(12))
    with Ledger.open(tmp_path, right):
        pass
    (tmp_path / "meta.json").unlink()
    with pytest.raises(StoreError, match="block 0"):
        Ledger.open(tmp_path, wrong)
    meta = tmp_path / "meta.json"
    assert not meta.exists() or _gh(wrong) not in meta.read_text()
    with Ledger.open(tmp_path, right) as ledger:
        assert ledger.store.genesis_hash == bytes.fromhex(_gh(right))
    assert _gh(right) in (tmp_path / "meta.json").read_text()


# ------------------------------------------------------------------ add_blocks (catch-up)


def _tampered(block):
    """`block` with a wrong state_root, re-signed by the authority (valid but for the root)."""
    return block.model_copy(update={"header": sign_header(
        block.header.model_copy(update={"state_root": "00" * 32}), AUTHORITY, CHAIN)})


@pytest.fixture
def producer(tmp_path):
    with Ledger.open(tmp_path / "producer", GENESIS) as ledger:
        grow(ledger, 6)
        yield ledger


def test_add_blocks_stores_a_range_with_one_fsync(tmp_path, producer, monkeypatch):
    import hashcloud.chain.store.chainstore as chainstore_module

    syncs = []
    real_fsync = chainstore_module.os.fsync
    with Ledger.open(tmp_path / "f", GENESIS, snapshot_interval=1000) as follower:
        monkeypatch.setattr(chainstore_module.os, "fsync",
                            lambda fd: (syncs.append(fd), real_fsync(fd)))
        blocks = [producer.get_block(h) for h in range(1, 7)]
        assert follower.add_blocks(blocks, now_ms=T0 + 100_000) == 6
        monkeypatch.undo()
        assert len(syncs) == 1
        assert follower.head == producer.head
        assert encode_state(follower.state) == encode_state(producer.state)
        assert follower.find_tx(tx_id(blocks[3].transactions[0])) == (4, 0)
        assert follower.add_blocks([], now_ms=T0 + 100_000) == 6
    with Ledger.open(tmp_path / "f", GENESIS) as reopened:
        assert reopened.head == producer.head


def test_add_blocks_keeps_the_blocks_before_a_bad_one(tmp_path, producer):
    blocks = [producer.get_block(h) for h in range(1, 7)]
    with Ledger.open(tmp_path / "f", GENESIS) as follower:
        with pytest.raises(InvalidBlock, match="state_root"):
            follower.add_blocks(blocks[:3] + [_tampered(blocks[3])] + blocks[4:],
                                now_ms=T0 + 100_000)
        assert follower.height == 3 and follower.store.height == 3
        assert follower.head == blocks[2].header
        assert follower.find_tx(tx_id(blocks[4].transactions[0])) is None
        state3 = encode_state(follower.state)
        # A range whose first block is bad stores nothing.
        with pytest.raises(InvalidBlock):
            follower.add_blocks([_tampered(blocks[3]), blocks[4]], now_ms=T0 + 100_000)
        assert follower.height == 3 and encode_state(follower.state) == state3
    with Ledger.open(tmp_path / "f", GENESIS) as reopened:
        assert reopened.height == 3 and encode_state(reopened.state) == state3
        assert reopened.add_blocks(blocks[3:], now_ms=T0 + 100_000) == 6
        assert encode_state(reopened.state) == encode_state(producer.state)


def test_add_blocks_snapshots_at_the_interval_inside_a_range(tmp_path, producer):
    with Ledger.open(tmp_path / "f", GENESIS, snapshot_interval=4) as follower:
        follower.add_blocks([producer.get_block(h) for h in range(1, 7)], now_ms=T0 + 100_000)
        height, digest, _ = follower.store.read_snapshot()
        assert (height, digest.hex()) == (4, block_hash(producer.get_block(4).header))
    with Ledger.open(tmp_path / "f", GENESIS, snapshot_interval=4) as reopened:
        assert encode_state(reopened.state) == encode_state(producer.state)


def test_add_blocks_kill_during_the_write_leaves_a_valid_prefix(tmp_path, producer):
    """A kill while the range is written leaves a torn tail; the store cuts it at a record
    boundary, so the ledger reopens at a block of the range with that block's state, and the
    watermark (advanced only after the fsync) never names a block that is not there."""
    import shutil

    from hashcloud.chain.store import LOG_NAME, Watermark

    states = {}
    with Ledger.open(tmp_path / "ref", GENESIS) as ref:
        for h in range(1, 7):
            ref.add_block(producer.get_block(h), now_ms=T0 + 100_000)
            states[h] = (ref.head, encode_state(ref.state))
    src = tmp_path / "src"
    with Ledger.open(src / "chain", GENESIS) as follower:
        follower.add_blocks([producer.get_block(1)], now_ms=T0 + 100_000)
        follower.store.guard(Watermark(src / "chain.watermark"))
        before = (src / "chain" / LOG_NAME).stat().st_size
        follower.add_blocks([producer.get_block(h) for h in range(2, 7)], now_ms=T0 + 100_000)
        assert Watermark(src / "chain.watermark").read().height == 6
    full = (src / "chain" / LOG_NAME).read_bytes()
    seen = set()
    for cut in range(before, len(full), max(1, (len(full) - before) // 23)):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        (d / "chain" / LOG_NAME).write_bytes(full[:cut])
        with Ledger.open(d / "chain", GENESIS) as reopened:
            h = reopened.height
            assert 1 <= h <= 6 and (reopened.head, encode_state(reopened.state)) == states[h]
            seen.add(h)
            # it takes the rest of the range again
            reopened.add_blocks([producer.get_block(k) for k in range(h + 1, 7)],
                                now_ms=T0 + 100_000)
            assert reopened.head == states[6][0]
        shutil.rmtree(d)
    assert len(seen) >= 4  # the cuts fall inside different blocks of the range

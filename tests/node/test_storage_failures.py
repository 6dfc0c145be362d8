"""Disk errors, damaged stores and out-of-range input never become a 500, a false answer or
a silent loss of acknowledged data (SPEC 6, 7; issue 11 items 2 and 4).

A transaction whose journal write fails (ENOSPC, via /dev/full) is answered 503 and not kept;
a failed journal rewrite after a block keeps the block and block production going; a reveal
with an index beyond what the encoding carries is refused, not a 500.

Damaged stores, with real files damaged on disk and a real `hashcloud node start` process
for each case (a deleted `blocks.log`, a deleted `chain/`, an older copy of `blocks.log`, a
log cut at its last whole record, and a rollback with the watermark deleted too): the node
exits 1 naming what is missing and how to recover, `--accept-rollback` recovers (and a plain
start works afterwards), `audit --chain` reports a store behind its watermark, and
`node reindex` rebuilds a damaged index and snapshot. Journal entries dropped on replay are
WARNINGs naming the transaction.

A full disk, for real: the node runs on a small tmpfs mounted in a user + mount namespace
(`unshare -rm`, no root needed; skipped where the kernel forbids it), filled through
/proc/PID/root by the test; the same contract is also checked in-process with `os.pwrite`
failing with ENOSPC, which runs everywhere.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from hashcloud.chain.store import INDEX_NAME, LOG_NAME, SNAPSHOT_NAME, WATERMARK_NAME, ChainStore
from hashcloud.chain.store.index import read_index
from hashcloud.chain.tx import encode_tx, tx_id, tx_to_json
from hashcloud.node.config import load_data_dir
from hashcloud.node.service import NodeService

from .conftest import (
    LISTEN_RE,
    NodeDir,
    cli_env,
    hashcloud_cmd,
    make_node_dir,
    run_cli,
    start_node,
    stop_process,
    transfer,
)

needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


@needs_dev_full
def test_unjournaled_transaction_is_503_and_not_kept(api: TestClient, service: NodeService,
                                                     node_dir: NodeDir) -> None:
    journal = service.journal
    real, journal._fh = journal._fh, open("/dev/full", "ab")  # noqa: SIM115 - the log closes it
    tx = transfer(node_dir, 0)
    resp = api.post("/v1/transactions", json=tx_to_json(tx))
    real.close()
    assert resp.status_code == 503, resp.text
    assert "not accepted" in resp.json()["detail"]
    assert len(service.mempool) == 0
    assert service.produce_block() is None  # nothing was kept, so nothing is included
    again = api.post("/v1/transactions", json=tx_to_json(tx))  # the journal works again
    assert again.status_code == 200, again.text
    assert service.produce_block() is not None
    assert api.get(f"/v1/transactions/{tx_id(tx)}").json()["status"] == "included"


@needs_dev_full
def test_failed_journal_rewrite_keeps_the_block_and_production(
        api: TestClient, service: NodeService, node_dir: NodeDir) -> None:
    assert api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 0))).status_code == 200
    journal = service.journal
    real_path = journal.path
    journal.path = Path("/dev/full/journal")  # the rewrite's temp file cannot be created
    block = service.produce_block()
    journal.path = real_path
    assert block is not None and service.ledger.height == 1
    assert api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 1))).status_code == 200
    assert service.produce_block() is not None and service.ledger.height == 2


def test_reveal_index_beyond_the_encoding_is_refused_not_500(api: TestClient) -> None:
    body = {"samples": [{"index": 2**70, "leaf": "0x" + "ab" * 32, "proof": []}],
            "signature": "11" * 64}
    resp = api.post(f"/v1/challenges/{'ab' * 16}/reveal", json=body)
    assert 400 <= resp.status_code < 500, resp.text


def test_node_start_on_an_unusable_data_dir_is_a_usage_error(tmp_path: Path) -> None:
    """SPEC 7: unreadable input is exit 2 with one line, never a traceback."""
    from typer.testing import CliRunner

    from hashcloud.cli.main import app

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "h"), "node", "start",
                                      "--data-dir", str(blocker / "node"), "--port", "0"])
    assert result.exit_code == 2, result.output
    assert "cannot be used" in result.output and "Traceback" not in result.output


# ------------------------------------------- damaged stores (issue 11 item 2): real nodes

ACKED_TXS = 3  # transfers acknowledged and included before the older copy, and after it


def _submit_and_wait(url: str, nd: NodeDir, nonces: range) -> int:
    """POST transfers with `nonces` to the node at `url`, wait until all are included;
    return the head height."""
    with httpx.Client(base_url=url, timeout=10) as http:
        ids = []
        for nonce in nonces:
            resp = http.post("/v1/transactions", json=tx_to_json(transfer(nd, nonce)))
            assert resp.status_code == 200, resp.text
            ids.append(resp.json()["tx_id"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = [http.get(f"/v1/transactions/{t}").json()["status"] for t in ids]
            if all(s == "included" for s in states):
                return int(http.get("/v1/head").json()["height"])
            time.sleep(0.1)
    pytest.fail(f"transactions not included: {states}")


@pytest.fixture(scope="module")
def acked_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, int, int]:
    """A data dir whose node acknowledged blocks in two runs: (path, blocks.log as it was
    after the first run, height after the first run, final height)."""
    base = tmp_path_factory.mktemp("acked")
    nd = make_node_dir(base / "node")
    node = start_node(nd.path, base / "home")
    try:
        first = _submit_and_wait(node.url, nd, range(ACKED_TXS))
    finally:
        node.stop()
    older = (nd.path / "chain" / LOG_NAME).read_bytes()
    node = start_node(nd.path, base / "home")
    try:
        final = _submit_and_wait(node.url, nd, range(ACKED_TXS, 2 * ACKED_TXS))
    finally:
        node.stop()
    assert final > first >= 1
    return nd.path, older, first, final


def _copy(template: Path, tmp_path: Path) -> Path:
    """A private copy of the template data dir."""
    dest = tmp_path / "node"
    shutil.copytree(template, dest)
    (dest / "chain" / "LOCK").unlink(missing_ok=True)
    return dest


def _refused(data_dir: Path, home: Path, *needles: str) -> str:
    """`node start` must exit 1 at once, saying `needles` on stderr (never a traceback)."""
    res = run_cli(home, "node", "start", "--data-dir", str(data_dir), "--port", "0",
                  timeout=60)
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    text = " ".join(res.stderr.split())
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in res.stderr and "listening" not in res.stdout
    return text


def _recovers_with_accept_rollback(data_dir: Path, home: Path, height: int) -> None:
    """`--accept-rollback` starts at `height` (logged at ERROR); then a plain open works."""
    node = start_node(data_dir, home, extra_args=("--accept-rollback",))
    try:
        with httpx.Client(base_url=node.url, timeout=10) as http:
            assert http.get("/v1/head").json()["height"] == height
    finally:
        node.stop()
    assert "ACCEPTING ROLLBACK" in node.stderr()
    again = NodeService(load_data_dir(data_dir))  # the watermark was reset: no flag needed
    try:
        assert again.ledger.height >= height
    finally:
        again.close()


@pytest.mark.timeout(120)
def test_deleted_block_log_is_refused(acked_template, tmp_path: Path) -> None:
    template, _, _, final = acked_template
    dd = _copy(template, tmp_path)
    (dd / "chain" / LOG_NAME).unlink()
    _refused(dd, tmp_path / "home", "blocks.log is missing", "held a chain",
             f"acknowledged blocks up to height {final}", "--accept-rollback", "backup")
    assert not (dd / "chain" / LOG_NAME).exists()  # a refused start creates nothing
    _recovers_with_accept_rollback(dd, tmp_path / "home", 0)


@pytest.mark.timeout(120)
def test_deleted_chain_dir_is_refused(acked_template, tmp_path: Path) -> None:
    template, _, _, final = acked_template
    dd = _copy(template, tmp_path)
    shutil.rmtree(dd / "chain")
    _refused(dd, tmp_path / "home", "chain directory", "is missing",
             f"up to height {final}", "--accept-rollback")
    assert not (dd / "chain").exists()
    _recovers_with_accept_rollback(dd, tmp_path / "home", 0)


@pytest.mark.timeout(120)
def test_older_block_log_copy_is_refused(acked_template, tmp_path: Path) -> None:
    template, older, first, final = acked_template
    dd = _copy(template, tmp_path)
    (dd / "chain" / LOG_NAME).write_bytes(older)
    _refused(dd, tmp_path / "home", f"holds blocks to height {first} but this node "
             f"acknowledged height {final}", "--accept-rollback")
    audit = run_cli(tmp_path / "home", "audit", "--chain", "--data-dir", str(dd))
    assert audit.returncode == 1 and "behind its watermark" in audit.stderr, audit.stderr
    _recovers_with_accept_rollback(dd, tmp_path / "home", first)


@pytest.mark.timeout(120)
def test_block_log_cut_at_its_last_record_is_refused(acked_template, tmp_path: Path) -> None:
    template, _, _, final = acked_template
    dd = _copy(template, tmp_path)
    log = dd / "chain" / LOG_NAME
    with ChainStore(dd / "chain", readonly=True) as store:
        last = store._offsets[-1]  # noqa: SLF001 - where the last whole record starts
    log.write_bytes(log.read_bytes()[:last])
    _refused(dd, tmp_path / "home", f"holds blocks to height {final - 1} but this node "
             f"acknowledged height {final}")
    _recovers_with_accept_rollback(dd, tmp_path / "home", final - 1)


@pytest.mark.timeout(120)
def test_journal_head_mark_refuses_a_rollback_without_the_watermark(
        acked_template, tmp_path: Path) -> None:
    template, older, first, final = acked_template
    dd = _copy(template, tmp_path)
    (dd / WATERMARK_NAME).unlink()
    (dd / "chain" / LOG_NAME).write_bytes(older)
    _refused(dd, tmp_path / "home", f"mempool journal was last rewritten after block {final}",
             "--accept-rollback")
    _recovers_with_accept_rollback(dd, tmp_path / "home", first)


@pytest.mark.timeout(120)
def test_reindex_rebuilds_index_and_snapshot(acked_template, tmp_path: Path) -> None:
    template, _, _, final = acked_template
    dd = _copy(template, tmp_path)
    chain = dd / "chain"
    (chain / INDEX_NAME).write_bytes(b"garbage")
    (chain / SNAPSHOT_NAME).write_bytes(b"garbage")
    res = run_cli(tmp_path / "home", "node", "reindex", "--data-dir", str(dd), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["height"] == final and report["snapshot_height"] == final
    assert report["behind_watermark"] is None
    assert read_index(chain / INDEX_NAME) is not None
    assert len(read_index(chain / INDEX_NAME) or []) == final + 1
    with ChainStore(chain, readonly=True) as store:
        snap = store.read_snapshot()
    assert snap is not None and snap[0] == final
    node = start_node(dd, tmp_path / "home")
    try:
        assert httpx.get(f"{node.url}/v1/head", timeout=10).json()["height"] == final
        locked = run_cli(tmp_path / "home", "node", "reindex", "--data-dir", str(dd))
        assert locked.returncode == 1 and "locked" in locked.stderr, locked.stderr
    finally:
        node.stop()
    (chain / LOG_NAME).unlink()
    gone = run_cli(tmp_path / "home", "node", "reindex", "--data-dir", str(dd))
    assert gone.returncode == 1 and "nothing to reindex" in " ".join(gone.stderr.split())


def test_dropped_journal_entries_are_warnings_with_the_tx_id(
        node_dir: NodeDir, caplog: pytest.LogCaptureFixture) -> None:
    svc = NodeService(node_dir.files)
    good, bad = transfer(node_dir, 0), transfer(node_dir, 5)  # nonce 5: never valid next
    svc.journal.append(encode_tx(good))
    svc.journal.append(encode_tx(bad))
    svc.journal.append(b"\x93not a transaction")
    svc.close()
    with caplog.at_level(logging.WARNING, logger="hashcloud.node.service"):
        again = NodeService(node_dir.files)
    try:
        assert tx_id(good) in again.mempool and tx_id(bad) not in again.mempool
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(tx_id(bad) in w and "dropped on replay" in w for w in warnings), warnings
        assert any("undecodable record" in w for w in warnings), warnings
    finally:
        again.close()


# --------------------------------------------------- a full disk (issue 11 item 4): real node

TMPFS_BYTES = 4 * 1024 * 1024
FILL_SCRIPT = ('mount -t tmpfs -o size={size} tmpfs "$1" && cp -a "$2" "$1/node" && shift 2 '
               '&& exec "$@"')


def _can_mount_tmpfs() -> bool:
    """Whether this user may mount a tmpfs in a new user + mount namespace (no root)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True, timeout=20, check=False)
    return probe.returncode == 0


def _fill(root: Path) -> Path:
    """Write a filler file on the filesystem at `root` until it is full; return its path."""
    filler = root / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for chunk in (65536, 4096, 1):  # big writes first, then down to the last byte
            try:
                while fh.write(b"\0" * chunk):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def _challenge_body(nd: NodeDir) -> dict:
    """A well-formed challenge request (its signature is refused, but only after the storage
    check)."""
    key = nd.funded
    return {"worker_address": key.public_key.address, "public_key": key.public_key.hex(),
            "n": 64, "request_time_ms": int(time.time() * 1000), "signature": "11" * 64}


@pytest.mark.timeout(180)
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and a user-namespace tmpfs")
def test_full_disk_refuses_with_503_then_resumes_by_itself(tmp_path: Path) -> None:
    """A real node whose data dir is on a real 4 MiB tmpfs (mounted in a user + mount
    namespace; the test reaches it through /proc/PID/root). Filled to the last byte: every
    transaction is answered 200 and later included, or 503 and never included; once the
    store cannot write, transactions and rounds get 503 naming the reason; freeing the space
    resumes block production without a restart."""
    nd = make_node_dir(tmp_path / "template")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    argv = ["unshare", "-rm", "sh", "-c", FILL_SCRIPT.format(size=TMPFS_BYTES), "sh",
            str(mnt), str(nd.path),
            *hashcloud_cmd(home, "node", "start", "--data-dir", str(mnt / "node"), "--port",
                           "0", "--block-time", "0.2")]
    stderr_path = tmp_path / "node.stderr"
    with open(stderr_path, "w") as err_fh:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err_fh, text=True,
                                env=cli_env(), cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = LISTEN_RE.search(line)
        assert match, (line, stderr_path.read_text())
        url = match.group(1)
        root = Path(f"/proc/{proc.pid}/root{mnt}")  # the node's view of its tmpfs
        assert (root / "node" / "genesis.json").exists()
        with httpx.Client(base_url=url, timeout=10) as http:
            _submit_and_wait(url, nd, range(1))
            filler = _fill(root)
            acked, refused, reasons = [], [], []
            nonce = 1
            for _ in range(60):  # until the store itself cannot write
                tx = transfer(nd, nonce)
                resp = http.post("/v1/transactions", json=tx_to_json(tx))
                assert resp.status_code in (200, 503), resp.text
                if resp.status_code == 200:
                    acked.append(tx_id(tx))
                    nonce += 1
                else:
                    refused.append(tx_id(tx))
                    reasons.append(resp.json()["detail"])
                if any("chain store" in r for r in reasons):
                    break
                time.sleep(0.25)
            assert any("chain store" in r and "No space left" in r for r in reasons), reasons
            ch = http.post("/v1/challenges", json=_challenge_body(nd))
            assert ch.status_code == 503 and "chain store" in ch.json()["detail"], ch.text
            filler.unlink()  # space is back: production resumes by itself
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = [http.get(f"/v1/transactions/{t}").json()["status"] for t in acked]
                if all(s == "included" for s in states):
                    break
                time.sleep(0.2)
            assert all(s == "included" for s in states), states
            for t in refused:  # never included after a failure answer
                got = http.get(f"/v1/transactions/{t}")
                assert got.status_code == 404 or got.json()["status"] != "included", got.text
            assert http.post("/v1/challenges", json=_challenge_body(nd)).status_code != 503
            _submit_and_wait(url, nd, range(nonce, nonce + 1))
    finally:
        stop_process(proc)
    text = stderr_path.read_text()
    assert "Traceback" not in text and "No space left on device" in text, text


def test_store_write_failure_refuses_then_resumes_in_process(
        api: TestClient, service: NodeService, node_dir: NodeDir,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same contract in-process, where no tmpfs can be mounted: writes to the block log
    fail with ENOSPC at the OS boundary (`os.pwrite`) until the "disk" is freed."""
    assert api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 0))).status_code == 200
    real_pwrite = os.pwrite

    def full_disk(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full_disk)
    assert service.produce_block() is None  # not made; nothing lost
    assert service.ledger.height == 0 and len(service.mempool) == 1
    assert service.storage_problem() == "No space left on device"
    refused = api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 1)))
    assert refused.status_code == 503 and "No space left" in refused.json()["detail"]
    challenge = api.post("/v1/challenges", json=_challenge_body(node_dir))
    assert challenge.status_code == 503 and "chain store" in challenge.json()["detail"]
    assert service.produce_block() is None  # still full: tried again, still nothing
    monkeypatch.setattr(os, "pwrite", real_pwrite)  # space is back
    block = service.produce_block()
    assert block is not None and service.storage_problem() is None
    assert len(block.transactions) == 1 and service.ledger.height == 1
    assert api.post("/v1/transactions", json=tx_to_json(transfer(node_dir, 1))).status_code == 200
    assert service.produce_block() is not None

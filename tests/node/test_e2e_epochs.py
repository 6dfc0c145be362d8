"""End to end (SPEC 6 v1.1): a real node on 127.0.0.1 with short epochs, two miners of
different speeds mining for payout addresses with the real CLI; the epoch's pool is paid pro
rata to their audited work (not to their time or speed), the payout addresses hold exactly
what `hashcloud epoch` reports, and `audit --chain` checks the supply invariant."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from hashcloud.crypto.keys import PrivateKey
from hashcloud.poc.receipt import decode_receipt
from tests.node.conftest import cli_env, hashcloud_cmd, run_cli, start_node

pytestmark = pytest.mark.e2e

EPOCH_LENGTH = 40  # blocks of 0.3 s: both claims land in epoch 0 unless a round stalls
SUBSIDY0 = 10**12
PAYOUT_A = PrivateKey(0xA0A0).public_key.address
PAYOUT_B = PrivateKey(0xB0B0).public_key.address


def json_of(proc: subprocess.CompletedProcess[str]) -> dict:
    """The last JSON line of a successful CLI run."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.strip()][-1])


def api(url: str, path: str) -> dict:
    """GET a JSON document from the node."""
    resp = httpx.get(url + path, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def mine(home: Path, url: str, n: int, duration: float, payout: str) -> subprocess.Popen[str]:
    """A `hashcloud mine` round in the background for `payout`."""
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        hashcloud_cmd(home, "mine", "--node", url, "--n", str(n), "--duration", str(duration),
                      "--payout", payout, "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
        cwd=home.parent)


@pytest.mark.timeout(240)
def test_two_miners_are_paid_pro_rata_to_audited_work(tmp_path: Path) -> None:
    data_dir, admin = tmp_path / "node", tmp_path / "admin"
    init = json_of(run_cli(admin, "node", "init", "--data-dir", str(data_dir), "--json",
                           "--epoch-length", str(EPOCH_LENGTH), "--subsidy0", str(SUBSIDY0),
                           "--halving-interval", "1000000"))
    assert (init["epoch_length"], init["subsidy0"]) == (EPOCH_LENGTH, SUBSIDY0)
    node = start_node(data_dir, admin)
    try:
        # Same device, different speeds of work: n=64 for 1 s and n=128 for 2 s.
        procs = [mine(tmp_path / "a", node.url, 64, 1, PAYOUT_A),
                 mine(tmp_path / "b", node.url, 128, 2, PAYOUT_B)]
        rounds = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=150)
            rounds.append(json_of(subprocess.CompletedProcess([], proc.returncode, stdout,
                                                              stderr)))
        work = {}
        for row, payout in zip(rounds, (PAYOUT_A, PAYOUT_B), strict=True):
            assert row["accepted"] is True and row["payout_address"] == payout, row
            proof = json.loads(Path(row["proof_path"]).read_text())
            receipt = decode_receipt(bytes.fromhex(proof["receipt"][2:]))
            assert receipt.payout_address == payout and proof["payout_address"] == payout
            work[payout] = receipt.loops * receipt.n**3  # the audited work
            assert row["work"] == work[payout]
            # The rig's key holds nothing: the work is credited to the payout address, whose
            # balance the round reports.
            assert row["address"] == payout != receipt.worker_address
            mined_by = api(node.url, f"/v1/accounts/{receipt.worker_address}")
            assert mined_by["balance"] == 0 and mined_by["pending_work"] == 0
        verified = json_of(run_cli(admin, "verify", rounds[1]["proof_path"], "--json"))
        assert verified["valid"] is True  # the payout is part of the signed commit
        heights = {row["height"] for row in rounds}
        epochs = {(h - 1) // EPOCH_LENGTH for h in heights}
        last = max(epochs)
        deadline = time.monotonic() + 120  # the node keeps making blocks while work waits
        while True:
            view = api(node.url, f"/v1/epochs/{last}")
            if view["status"] == "closed" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert view["status"] == "closed", view
        paid: dict[str, int] = {}
        for number in sorted(epochs):
            view = json_of(run_cli(admin, "epoch", str(number), "--node", node.url, "--json"))
            in_epoch = {p: w for p, w in work.items()
                        if (rounds[0 if p == PAYOUT_A else 1]["height"] - 1) // EPOCH_LENGTH
                        == number}
            total = sum(in_epoch.values())
            assert view["total_work"] == total
            assert {p["address"]: p["work"] for p in view["payouts"]} == in_epoch
            for p in view["payouts"]:
                assert p["amount"] == view["pool"] * p["work"] // total  # exact pro-rata floor
                paid[p["address"]] = paid.get(p["address"], 0) + p["net"]
            assert view["carried"] == view["pool"] - sum(p["amount"] for p in view["payouts"])
        if len(epochs) == 1:  # the usual case: one pool split between the two miners
            ratio = view["payouts"][0]["amount"] / view["payouts"][1]["amount"]
            works = [work[p["address"]] for p in view["payouts"]]
            assert ratio == pytest.approx(works[0] / works[1], rel=1e-6)
        bal = json_of(run_cli(admin, "balance", PAYOUT_A, "--node", node.url, "--json"))
        assert bal["balance"] == paid[PAYOUT_A] > 0
        assert api(node.url, f"/v1/accounts/{PAYOUT_B}")["balance"] == paid[PAYOUT_B] > 0
        human = run_cli(admin, "epoch", str(last), "--node", node.url)
        assert human.returncode == 0 and f"epoch {last}" in human.stdout
        assert "closed" in human.stdout and PAYOUT_B in human.stdout
        future = run_cli(admin, "epoch", "999999", "--node", node.url)
        assert future.returncode == 1 and "has not started" in future.stderr
    finally:
        node.stop()
    audit = json_of(run_cli(admin, "audit", "--chain", "--data-dir", str(data_dir), "--json"))
    assert audit["valid"] is True and audit["epochs_closed"] >= 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args,needle", [
    (("--payout", "cpc1notanaddress"), "--payout"),
    (("--payout", PAYOUT_A, "--offline"), "offline proofs are never rewarded"),
])
def test_mine_refuses_a_bad_payout_before_any_work(tmp_path: Path, args, needle) -> None:
    proc = run_cli(tmp_path / "home", "mine", "--duration", "0.1", "--n", "64", *args)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr

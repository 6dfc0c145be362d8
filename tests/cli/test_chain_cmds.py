"""Online `mine` against the embedded node, then the chain-reading commands (SPEC 7)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hashcloud.chain.epoch import scheduled_subsidy
from hashcloud.chain.genesis import load_genesis
from hashcloud.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> dict:
    """One embedded-node round (real uvicorn server on 127.0.0.1 in a thread)."""
    home = tmp_path_factory.mktemp("home")
    r = runner.invoke(app, ["--home", str(home), "mine", "--duration", "1", "--n", "64",
                            "--json"], env={"HASHCLOUD_NODE": ""})
    assert r.exit_code == 0, r.output
    assert "created a local chain" in r.stderr
    return {"home": home, "result": json.loads(r.stdout)}


@pytest.mark.timeout(120)
def test_embedded_round_is_accepted_included_and_rewarded(mined):
    res = mined["result"]
    assert res["accepted"] is True and res["embedded"] is True
    assert res["height"] >= 1 and len(res["tx_id"]) == 64
    genesis = load_genesis(mined["home"] / "node" / "genesis.json")
    # SPEC 6 v1.1: work is credited now and paid at the epoch's close; the sole miner of
    # epoch 0 expects its whole pool (an estimate), and holds nothing yet.
    assert res["work"] == res["loops"] * 64**3
    assert res["reward"] == scheduled_subsidy(1, genesis.epoch_length, genesis.subsidy0,
                                              genesis.halving_interval)
    assert res["balance"] == 0


@pytest.mark.timeout(120)
def test_balance_inspect_and_chain_audit(mined):
    home = str(mined["home"])
    res = mined["result"]
    b = runner.invoke(app, ["--home", home, "balance", "--json"])
    assert b.exit_code == 0, b.output
    bal = json.loads(b.stdout)
    assert {k: bal[k] for k in ("address", "balance", "nonce")} == {
        "address": res["address"], "balance": res["balance"], "nonce": 1}
    assert bal["pending_work"] == res["work"] and bal["epoch"] == 0  # SPEC 6 v1.1
    e = runner.invoke(app, ["--home", home, "epoch", "--json"])
    assert e.exit_code == 0, e.output
    view = json.loads(e.stdout)
    assert view["status"] == "open" and view["pending"][0]["work"] == res["work"]
    blk = runner.invoke(app, ["--home", home, "inspect-block", str(res["height"]), "--json"])
    assert blk.exit_code == 0, blk.output
    obj = json.loads(blk.stdout)
    assert set(obj) == {"hash", "header", "transactions"}
    assert {"height", "prev_hash", "timestamp", "proposer", "tx_root", "state_root",
            "compute_root", "signature"} <= set(obj["header"])
    assert obj["header"]["compute_root"] != ""
    tx = obj["transactions"][0]
    assert tx["tx_id"] == res["tx_id"] and tx["tx_type"] == "SUBMIT_RESULT"
    assert tx["payload"]["task_id"] in res["proof_path"]
    a = runner.invoke(app, ["--home", home, "audit", "--chain", "--json"])
    assert a.exit_code == 0, a.output
    assert json.loads(a.stdout)["valid"] is True
    latest = runner.invoke(app, ["--home", home, "inspect-block", "latest"])
    assert latest.exit_code == 0 and "block" in latest.stdout


@pytest.mark.timeout(120)
def test_proof_audit_and_replayed_claim(mined):
    home = str(mined["home"])
    path = mined["result"]["proof_path"]
    v = runner.invoke(app, ["verify", path, "--json"])
    assert v.exit_code == 0, v.output
    names = {c["name"] for c in json.loads(v.stdout)["checks"]}
    assert {"challenge token", "indices signature", "receipt"} <= names
    a = runner.invoke(app, ["audit", path, "--m", "2", "--json"])
    assert a.exit_code == 0, a.output
    table = json.loads(a.stdout)["p_detect"]
    assert table[-1]["p_detect"] == 1.0 and table[0]["forged"] == 1
    s = runner.invoke(app, ["--home", home, "submit", path], env={"HASHCLOUD_NODE": ""})
    assert s.exit_code == 1
    assert "already rewarded" in s.stderr


def test_usage_errors(tmp_path):
    home = str(tmp_path)
    assert runner.invoke(app, ["--home", home, "inspect-block", "xyz"]).exit_code == 2
    assert runner.invoke(app, ["--home", home, "balance", "cpc1bad"]).exit_code == 2
    assert runner.invoke(app, ["--home", home, "audit"]).exit_code == 2
    r = runner.invoke(app, ["--home", home, "audit", "--chain"])
    assert r.exit_code == 1 and "not initialised" in r.stderr


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_rounds_zero_mines_until_ctrl_c(tmp_path):
    """`--rounds 0` keeps mining (embedded node) until SIGINT, then reports every round."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "HASHCLOUD_NODE"}
    env["HASHCLOUD_HOME"] = str(tmp_path / "h")
    proc = subprocess.Popen([sys.executable, "-m", "hashcloud", "mine", "--rounds", "0",
                             "--duration", "0.5", "--n", "64", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    proofs = tmp_path / "h" / "proofs"
    while time.monotonic() < deadline and len(list(proofs.glob("*.json"))) < 3:
        time.sleep(0.2)
    if len(list(proofs.glob("*.json"))) < 3:
        proc.kill()
        pytest.fail(f"mine wrote fewer than 3 proofs in 60 s: {proc.communicate()[1][-2000:]}")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]  # one line per round
    res = rows[-1]
    assert res["accepted_rounds"] >= 2, res
    assert len(rows) >= 2 and res["rewards"] > 0
    assert [r["round"] for r in rows] == list(range(1, len(rows) + 1))


def test_epoch_comes_a_page_at_a_time(mined):
    home = str(mined["home"])
    page = runner.invoke(app, ["--home", home, "epoch", "--json", "--limit", "1"])
    assert page.exit_code == 0, page.output
    view = json.loads(page.stdout)
    assert (view["count"], view["next_after"]) == (1, None)
    last = view["pending"][0]["address"]
    past = runner.invoke(app, ["--home", home, "epoch", "--after", last])
    assert past.exit_code == 0 and "no rows after that address (1 in all)" in past.stdout
    too_many = runner.invoke(app, ["--home", home, "epoch", "--limit", "1001"])
    assert too_many.exit_code == 2


def test_epoch_table_says_where_the_next_page_starts(capsys):
    from hashcloud.cli.chain_cmds import _print_epoch

    row = {"address": "cpc1" + "q" * 38, "work": 5, "amount": 10, "fees": 1, "net": 9}
    _print_epoch({"epoch": 3, "status": "closed", "first_height": 7, "last_height": 9,
                  "pool": 30, "total_work": 15, "carried": 0, "count": 3,
                  "next_after": row["address"], "payouts": [row]})
    assert f"1 of 3 rows; next page: --after {row['address']}" in capsys.readouterr().out

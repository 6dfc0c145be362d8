"""`mine --offline` then `verify`, through the runner and as real subprocesses (SPEC 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hashcloud.cli.main import app

runner = CliRunner()


def test_offline_mine_json_then_verify(home, tmp_path):
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["mine", "--offline", "--duration", "0.5", "--n", "64",
                            "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert {"loops", "compute_time", "merkle_root", "accepted", "proof_path"} <= set(obj)
    assert obj["accepted"] is False and obj["loops"] >= 1
    assert "created key" in r.stderr  # default key made and said so
    v = runner.invoke(app, ["verify", str(out), "--json"])
    assert v.exit_code == 0, v.output
    res = json.loads(v.stdout)
    assert res["valid"] is True and res["errors"] == []
    v2 = runner.invoke(app, ["verify", str(out), "--m", "2"])
    assert v2.exit_code == 0 and "VALID" in v2.stdout
    assert runner.invoke(app, ["verify", str(out), "--m", "2", "--all"]).exit_code == 2
    # SPEC 3 v1.1: an offline proof carries every output; rows are audited by default.
    saved = json.loads(out.read_text())
    assert all(len(smp["output"]) == 2 + 2 * 8 * 64 for smp in saved["samples"])
    checks = {c["name"]: c for c in res["checks"]}
    assert checks["outputs"]["ok"] and "16 rows" in checks["recomputation"]["detail"]
    rows = json.loads(runner.invoke(app, ["verify", str(out), "--rows", "3", "--json"]).stdout)
    assert rows["valid"] and "3 rows" in {c["name"]: c for c in rows["checks"]}[
        "recomputation"]["detail"]
    full = json.loads(runner.invoke(app, ["verify", str(out), "--full", "--json"]).stdout)
    assert full["valid"] and "leaves recomputed" in {c["name"]: c for c in full["checks"]}[
        "recomputation"]["detail"]
    assert runner.invoke(app, ["verify", str(out), "--rows", "3", "--full"]).exit_code == 2


def test_verify_exit_codes(home, tmp_path):
    out = tmp_path / "p.json"
    assert runner.invoke(app, ["mine", "--offline", "--duration", "0.3", "--n", "64",
                               "--out", str(out), "--json"]).exit_code == 0
    obj = json.loads(out.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**obj, "loops": obj["loops"] + 1}))
    r = runner.invoke(app, ["verify", str(bad), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["valid"] is False
    bad.write_text(json.dumps({**obj, "n": "sixty-four"}))
    r = runner.invoke(app, ["verify", str(bad)])
    assert r.exit_code == 1 and "n" in r.stderr
    for junk in ("", "{", "[]", "null", '{"x": 1}'):
        bad.write_text(junk)
        r = runner.invoke(app, ["verify", str(bad), "--json"])
        assert r.exit_code == 2, junk
        assert json.loads(r.stdout)["valid"] is False
    r = runner.invoke(app, ["verify", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_bad_backend_and_n_are_clear(home):
    r = runner.invoke(app, ["mine", "--offline", "--backend", "tpu"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["mine", "--offline", "--n", "100", "--duration", "0.2"])
    assert r.exit_code == 2 and "multiple of 64" in r.stderr
    r = runner.invoke(app, ["mine", "--offline", "--backend", "cupy", "--duration", "0.2"])
    assert r.exit_code == 1 and "cupy" in r.stderr.lower()


def test_selftest_json(home):
    r = runner.invoke(app, ["selftest", "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["ok"] is True and obj["backends"][0]["backend"] == "numpy"


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_offline_round_real_subprocess(tmp_path):
    env = {**os.environ, "HASHCLOUD_HOME": str(tmp_path / "h")}
    env.pop("HASHCLOUD_NODE", None)
    out = tmp_path / "proof.json"
    p = subprocess.run([sys.executable, "-m", "hashcloud", "mine", "--offline", "--duration",
                        "1", "--n", "64", "--out", str(out), "--json"],
                       capture_output=True, text=True, env=env, timeout=100)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["proof_path"] == str(out)
    v = subprocess.run([sys.executable, "-m", "hashcloud", "verify", str(out), "--json"],
                       capture_output=True, text=True, env=env, timeout=100)
    assert v.returncode == 0, v.stderr
    assert json.loads(v.stdout)["valid"] is True


def test_offline_mine_human_output(home, tmp_path):
    r = runner.invoke(app, ["mine", "--offline", "--duration", "0.3", "--n", "64",
                            "--out", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    assert "round summary" in r.stdout and "offline proof" in r.stdout
    assert "backend: numpy" in r.stderr


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_ctrl_c_ends_the_round_early_and_still_writes_a_valid_proof(tmp_path):
    import signal
    import time

    env = {**os.environ, "HASHCLOUD_HOME": str(tmp_path / "h")}
    out = tmp_path / "proof.json"
    proc = subprocess.Popen([sys.executable, "-m", "hashcloud", "mine", "--offline",
                             "--duration", "60", "--n", "64", "--out", str(out), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    key_file = tmp_path / "h" / "keys" / "default.json"  # written just before the loops
    deadline = time.monotonic() + 60
    while not key_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key_file.exists(), "mine never created its key"
    time.sleep(1.5)  # into the loops: with --json nothing shows progress to poll for
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    res = json.loads(stdout)
    assert res["interrupted"] is True and res["compute_time"] < 30
    v = subprocess.run([sys.executable, "-m", "hashcloud", "verify", str(out), "--json"],
                       capture_output=True, text=True, env=env, timeout=100)
    assert v.returncode == 0, v.stdout

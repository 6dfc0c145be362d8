"""`hashcloud keygen` / `keys list` through Typer's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hashcloud.cli.main import app

runner = CliRunner()
C0FFEE = "0000000000000000000000000000000000000000000000000000000000c0ffee"


def test_keygen_json_and_no_overwrite(home):
    r = runner.invoke(app, ["keygen", "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["address"].startswith("cpc1") and len(obj["public_key"]) == 66
    assert stat.S_IMODE(os.stat(obj["path"]).st_mode) == 0o600
    r2 = runner.invoke(app, ["keygen"])
    assert r2.exit_code == 1
    assert "already exists" in r2.stderr


def test_import_from_stdin(home, vectors):
    r = runner.invoke(app, ["keygen", "--name", "v", "--import", "-", "--json"], input=C0FFEE)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["address"] == vectors["keys"][1]["address"]


@pytest.mark.parametrize(
    "stdin", ["", "xyz", "0" * 64, "f" * 64, C0FFEE + "00"]
)
def test_import_refuses_bad_keys(home, stdin):
    r = runner.invoke(app, ["keygen", "--import", "-"], input=stdin)
    assert r.exit_code == 2  # unreadable input (SPEC 7)
    assert "private key" in r.stderr
    assert "Traceback" not in r.output


def test_import_never_from_argv(home):
    r = runner.invoke(app, ["keygen", "--import", C0FFEE])
    assert r.exit_code == 2
    assert not (home / "keys" / "default.json").exists()


def test_encrypted_keygen_with_env_passphrase(home, monkeypatch):
    monkeypatch.setenv("HASHCLOUD_PASSPHRASE", "s3cret")
    r = runner.invoke(app, ["keygen", "--name", "e", "--encrypt", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["encrypted"] is True
    r = runner.invoke(app, ["keys", "list", "--json"])
    assert [k["name"] for k in json.loads(r.stdout)["keys"]] == ["e"]


def test_bad_name_is_usage_error(home):
    r = runner.invoke(app, ["keygen", "--name", "../evil"])
    assert r.exit_code == 2


def test_home_option_overrides_env(home, tmp_path):
    other = tmp_path / "other"
    r = runner.invoke(app, ["--home", str(other), "keygen", "--json"])
    assert r.exit_code == 0
    assert json.loads(r.stdout)["path"].startswith(str(other))


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_keygen_real_subprocess(tmp_path):
    env = {**os.environ, "HASHCLOUD_HOME": str(tmp_path / "h")}
    cmd = [sys.executable, "-m", "hashcloud", "keygen", "--import", "-", "--json"]
    p = subprocess.run(cmd, input=C0FFEE + "\n", capture_output=True, text=True, env=env,
                       timeout=50)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["address"] == "cpc1lxvp7agw998t68qm76ek6t20gh320yrs6jw5h9"
    p2 = subprocess.run(cmd, input=C0FFEE, capture_output=True, text=True, env=env, timeout=50)
    assert p2.returncode == 1 and "already exists" in p2.stderr
    assert "Traceback" not in p2.stderr


# ------------------------------------------------------------- issue 11 item 7: key files

MINE_OFFLINE = ["mine", "--offline", "--duration", "0.1", "--n", "64", "--json"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes only")
def test_key_file_readable_by_others_is_refused_like_ssh(home):
    r = runner.invoke(app, ["keygen", "--json"])
    path = json.loads(r.stdout)["path"]
    os.chmod(path, 0o644)
    r = runner.invoke(app, MINE_OFFLINE)
    assert r.exit_code == 1
    assert f"permissions 0644 for key file {path} are too open" in r.stderr
    assert json.loads(r.stdout)["exit_code"] == 1  # --json: still one object on stdout
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["keys", "list", "--json"])
    assert "too open" in json.loads(r.stdout)["keys"][0]["error"]
    r = runner.invoke(app, ["keys", "list"])
    assert r.exit_code == 0 and "unusable" in r.stdout


@pytest.mark.parametrize("crypto", [[1], "x", None])
def test_crypto_of_the_wrong_shape_is_a_clear_error(home, crypto):
    r = runner.invoke(app, ["keygen", "--json"])
    path = json.loads(r.stdout)["path"]
    record = json.loads(open(path).read())
    with open(path, "w") as fh:
        fh.write(json.dumps({**record, "crypto": crypto}))
    r = runner.invoke(app, MINE_OFFLINE)
    assert r.exit_code == 1, r.output
    assert "damaged: 'crypto' is not an object" in r.stderr
    assert "Traceback" not in r.output


def test_wrong_passphrase_or_damage_is_named_as_such(home, monkeypatch):
    monkeypatch.setenv("HASHCLOUD_PASSPHRASE", "right")
    assert runner.invoke(app, ["keygen", "--encrypt"]).exit_code == 0
    monkeypatch.setenv("HASHCLOUD_PASSPHRASE", "wrong")
    r = runner.invoke(app, MINE_OFFLINE)
    assert r.exit_code == 1
    assert "wrong passphrase or damaged key file" in r.stderr


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_encrypted_node_key_runs_node_start_with_passphrase_env(tmp_path):
    """`keygen --encrypt` as the node key, `node init` and `node start` with
    HASHCLOUD_PASSPHRASE: the node runs on it; without or with a wrong passphrase it exits 1
    saying why (real subprocesses)."""
    from tests.cli.conftest import LISTEN_RE, cli_env, hashcloud_cmd, run_cli

    dd, home = tmp_path / "node", tmp_path / "home"

    def run(*args: str, passphrase: str | None) -> subprocess.CompletedProcess[str]:
        env = cli_env(HASHCLOUD_PASSPHRASE=passphrase) if passphrase else cli_env()
        return subprocess.run(hashcloud_cmd(home, *args), capture_output=True, text=True,
                              env=env, stdin=subprocess.DEVNULL, timeout=60)

    r = run("--home", str(dd), "keygen", "--name", "node", "--encrypt", "--json",
            passphrase="n0de")
    assert r.returncode == 0, r.stderr
    address = json.loads(r.stdout)["address"]
    r = run("node", "init", "--data-dir", str(dd), "--json", passphrase="n0de")
    assert r.returncode == 0, r.stderr
    genesis = json.loads((dd / "genesis.json").read_text())
    assert address in genesis["allocations"]  # the encrypted key is the node's key

    start = ("node", "start", "--data-dir", str(dd), "--port", "0", "--block-time", "0.3")
    r = run(*start, passphrase=None)
    assert r.returncode == 1
    assert "needs a passphrase: set HASHCLOUD_PASSPHRASE" in r.stderr
    r = run(*start, passphrase="wrong")
    assert r.returncode == 1 and "wrong passphrase or damaged key file" in r.stderr
    assert "Traceback" not in r.stderr

    proc = subprocess.Popen(hashcloud_cmd(home, *start), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                            env=cli_env(HASHCLOUD_PASSPHRASE="n0de"))
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the node prints its listening line once it serves
            if LISTEN_RE.search(line):
                break
        else:
            pytest.fail(f"node exited ({proc.wait()}) without listening")
        url = LISTEN_RE.search(line).group(1)
        assert run_cli(home, "balance", address, "--node", url, "--json").returncode == 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)

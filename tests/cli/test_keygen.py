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

"""Human output is never wrapped at 80 columns on a pipe (issue 12): real subprocesses whose
stdout and stderr are pipes and whose environment has no `$COLUMNS`."""

from __future__ import annotations

import pytest

from hashcloud.crypto.keys import PrivateKey
from tests.cli.conftest import run_cli

ADDRESS = PrivateKey(0xABCDEF).public_key.address
RICH = 123_456_789_012_345_678_901  # 123456789012.345678901 HC: the line passes 80 columns


@pytest.fixture
def genesis_only(tmp_path):
    """A data dir initialised (never started) whose genesis gives ADDRESS `RICH`."""
    home, data_dir = tmp_path / "home", tmp_path / "node"
    r = run_cli(home, "node", "init", "--data-dir", str(data_dir),
                "--alloc", f"{ADDRESS}={RICH}")
    assert r.returncode == 0, r.stderr
    return home, data_dir


@pytest.mark.timeout(60)
def test_balance_is_one_awkable_line_on_a_pipe(genesis_only):
    home, data_dir = genesis_only
    r = run_cli(home, "balance", ADDRESS, "--data-dir", str(data_dir))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and len(lines[0]) > 80, r.stdout
    fields = lines[0].split()
    assert fields[0] == f"{ADDRESS}:" and fields[2:4] == ["123456789012.345678901", "HC,"]
    assert "chain: data dir" in r.stderr  # which chain was read, on stderr only


@pytest.mark.timeout(60)
def test_keys_list_rows_are_whole_lines(tmp_path):
    home = tmp_path / ("a-rather-long-home-directory-name-" * 3)
    r = run_cli(home, "keygen", "--name", "rig-01")
    assert r.returncode == 0, r.stderr
    address = r.stdout.split()[0]
    r = run_cli(home, "keys", "list")
    assert r.returncode == 0, r.stderr
    row = [line for line in r.stdout.splitlines() if "rig-01" in line]
    assert len(row) == 1 and address in row[0] and str(home / "keys") in row[0], r.stdout


@pytest.mark.timeout(90)
def test_offline_round_summary_and_audit_title_keep_the_proof_path_whole(tmp_path):
    proof = tmp_path / ("proofs-of-a-long-named-rig-" * 3) / "round-0001.json"
    home = tmp_path / "home"
    r = run_cli(home, "mine", "--offline", "--duration", "0.3", "--n", "64", "--out",
                str(proof))
    assert r.returncode == 0, r.stderr
    assert len(str(proof)) > 80
    assert any(str(proof) in line for line in r.stdout.splitlines()), r.stdout
    a = run_cli(home, "audit", str(proof), "--m", "1")
    assert a.returncode == 0, a.stderr
    title = [line for line in a.stdout.splitlines() if line.startswith("audit of ")]
    assert len(title) == 1 and str(proof) in title[0], a.stdout


def test_an_explicit_columns_still_wins(tmp_path):
    """`$COLUMNS` set by the user is respected (the pipe default is only a default)."""
    import subprocess
    import sys

    from tests.cli.conftest import cli_env

    code = ("from hashcloud.cli.display import fit_width\n"
            "from rich.console import Console\n"
            "c = Console()\nfit_width(c)\nprint(c.width)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env(COLUMNS="100"), timeout=30)
    assert out.stdout.strip() == "100"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env(), timeout=30)
    assert int(out.stdout.strip()) > 1000

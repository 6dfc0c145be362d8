"""Bad input to every command: a clear message, the right exit code, no traceback, no
data loss (the bugs a black-box review found, each pinned by a test)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hashcloud.cli.main import app

runner = CliRunner()


def invoke(*args: str, **kw):
    r = runner.invoke(app, list(args), **kw)
    assert "Traceback" not in r.output, r.output
    return r


def test_mine_out_never_overwrites_a_key_file(home):
    assert invoke("keygen").exit_code == 0
    key_file = home / "keys" / "default.json"
    before = key_file.read_bytes()
    r = invoke("mine", "--offline", "--n", "64", "--duration", "0.2", "--out", str(key_file))
    assert r.exit_code == 2 and "already exists" in r.stderr
    assert key_file.read_bytes() == before


@pytest.mark.parametrize("bad", ["", "dir", "file/x"])
def test_mine_out_bad_paths_are_usage_errors_before_any_work(home, tmp_path, bad):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    target = "" if bad == "" else str(tmp_path / bad)
    r = invoke("mine", "--offline", "--n", "64", "--duration", "30", "--out", target)
    assert r.exit_code == 2, r.output
    assert not (home / "proofs").exists()  # refused before computing anything
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("args", [
    ("mine", "--offline", "--duration", "inf"),
    ("mine", "--offline", "--duration", "1e400"),
    ("bench", "--n", "64", "--seconds", "inf"),
    ("bench", "--n", "100"),
    ("bench", "--backend", "tpu"),
    ("selftest", "--n", "100"),
    ("mine", "--node", "foo"),
    ("mine", "--node", "http://[::1"),
    ("mine", "--offline", "--rounds", "3"),
    ("balance", "--node", "http://127.0.0.1:99999", "cpc1w508d6qejxtdg4y5r3zarvary0c5xw7k32stzz"),
    ("node", "start", "--log-level", "nonsense"),
])
def test_usage_errors_exit_2(home, args):
    r = invoke(*args)
    assert r.exit_code == 2, r.output


def test_named_key_must_exist_for_mining(home):
    r = invoke("mine", "--offline", "--key", "typo", "--n", "64", "--duration", "0.2")
    assert r.exit_code == 1 and "no key named 'typo'" in r.stderr
    assert not (home / "keys" / "typo.json").exists()


def test_json_failures_still_print_one_json_object(home):
    assert invoke("keygen").exit_code == 0
    r = invoke("keygen", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["error"].startswith("key 'default' already exists")


def test_passphrase_prompt_goes_to_stderr(home):
    r = invoke("keygen", "--name", "p", "--encrypt", "--json", input="pw\npw\n")
    # CliRunner is not a tty, so the prompt is refused; with a tty it goes to stderr.
    assert r.exit_code == 1 and "HASHCLOUD_PASSPHRASE" in r.stderr
    import inspect

    from hashcloud.cli import common

    assert "err=True" in inspect.getsource(common.passphrase_from_env_or_prompt)


def test_deeply_nested_json_is_unreadable_input(home, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    for cmd in (("verify", str(deep), "--json"), ("audit", str(deep))):
        r = invoke(*cmd)
        assert r.exit_code == 2, (cmd, r.output)


def test_node_init_bad_options_leave_nothing_behind(home, tmp_path):
    for opts in (["--alloc", "cpc1zzz=5"], ["--alloc", "=5"], ["--chain-id", "x/y"],
                 ["--block-time", "1e9"]):
        dd = tmp_path / "nd"
        r = invoke("node", "init", "--data-dir", str(dd), *opts)
        assert r.exit_code == 2, (opts, r.output)
        assert not dd.exists() or not any(dd.rglob("*")), opts


def test_home_that_is_a_file_is_a_clear_error(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    r = invoke("--home", str(f), "keygen")
    assert r.exit_code == 1 and "afile" in r.stderr


def test_keys_list_shows_damaged_files(home):
    assert invoke("keygen", "--name", "good").exit_code == 0
    (home / "keys" / "bad.json").write_text("{garbage")
    (home / "keys" / "odd.json").write_text('{"version": 1, "address": 123}')
    r = invoke("keys", "list", "--json")
    keys = {k["name"]: k for k in json.loads(r.stdout)["keys"]}
    assert keys["good"]["error"] is None
    assert "unreadable" in keys["bad"]["error"]
    assert keys["odd"]["error"] and keys["odd"]["address"] == ""


def test_all_upper_address_is_accepted_mixed_case_is_not(home, tmp_path):
    dd = tmp_path / "nd"
    assert invoke("node", "init", "--data-dir", str(dd)).exit_code == 0
    addr = "cpc1w508d6qejxtdg4y5r3zarvary0c5xw7k32stzz"
    r = invoke("balance", addr.upper(), "--data-dir", str(dd), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["address"] == addr
    mixed = addr[:5] + addr[5:].upper()
    assert invoke("balance", mixed, "--data-dir", str(dd)).exit_code == 2


def test_duplicate_alloc_is_a_usage_error(tmp_path):
    addr = "cpc1w508d6qejxtdg4y5r3zarvary0c5xw7k32stzz"
    r = invoke("node", "init", "--data-dir", str(tmp_path / "nd"), "--alloc", f"{addr}=5",
               "--alloc", f"{addr}=6")
    assert r.exit_code == 2 and "twice" in r.stderr

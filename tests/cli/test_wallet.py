"""`send`, `tx`, `history`, `balance --key` (SPEC 7 v1.1) against a real node process, and the
read commands' rule: they say which chain they read and never create one."""

from __future__ import annotations

import json

import pytest

from hashcloud.chain.tx import MIN_GAS_PRICE, TRANSFER_GAS
from hashcloud.crypto.keys import PrivateKey
from tests.cli.conftest import FUNDED_AMOUNT, FUNDED_KEY, NodeProc, run_cli
from tests.fake_http import FakeNode

FEE = TRANSFER_GAS * MIN_GAS_PRICE
OTHER = PrivateKey(0x5EED_0001).public_key.address


def cli_json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def account(proc) -> dict:
    """The SPEC 7 fields of a `balance --json` answer (the node may add more)."""
    return {k: v for k, v in cli_json(proc).items() if k in ("address", "balance", "nonce")}


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_send_then_look_it_up_everywhere(funded_node: NodeProc):
    node, home = funded_node, funded_node.home
    sender = FUNDED_KEY.public_key.address
    sent = cli_json(run_cli(home, "send", OTHER, "1.5", "--node", node.url, "--wait",
                            "--json"))
    assert sent["included_height"] >= 1 and len(sent["tx_id"]) == 64
    assert sent["amount"] == 1_500_000_000 and sent["fee"] == FEE and sent["nonce"] == 0
    r = run_cli(home, "send", OTHER, "250u", "--node", node.url, "--wait")
    assert r.returncode == 0, r.stderr
    assert "sent 0.00000025 HC to " + OTHER in r.stdout and "included in block" in r.stdout

    # Balances: base units under --json, HC for people; --key reads the key's address.
    assert account(run_cli(home, "balance", OTHER, "--node", node.url, "--json")) == {
        "address": OTHER, "balance": 1_500_000_250, "nonce": 0}
    mine = account(run_cli(home, "balance", "--key", "default", "--node", node.url, "--json"))
    assert mine == {"address": sender, "balance": FUNDED_AMOUNT - 1_500_000_250 - 2 * FEE,
                    "nonce": 2}
    human = run_cli(home, "balance", OTHER, "--node", node.url)
    assert human.stdout.strip() == f"{OTHER}: balance 1.50000025 HC, nonce 0"
    assert f"chain: node {node.url}" in human.stderr

    # tx: from the node and from the data dir (read-only, while the node runs).
    by_node = cli_json(run_cli(home, "tx", sent["tx_id"], "--node", node.url, "--json"))
    assert by_node["status"] == "included" and by_node["height"] == sent["included_height"]
    assert by_node["transaction"]["amount"] == 1_500_000_000
    assert by_node["transaction"]["to_address"] == OTHER
    by_dir = cli_json(run_cli(home, "tx", sent["tx_id"], "--data-dir", str(node.data_dir),
                              "--json"))
    assert by_dir["transaction"] == by_node["transaction"]
    shown = run_cli(home, "tx", sent["tx_id"], "--node", node.url)
    assert "1.5 HC" in shown.stdout and "0.021 HC" in shown.stdout

    # history: newest first, both directions, same answer from node and data dir.
    hist = cli_json(run_cli(home, "history", "--node", node.url, "--json"))
    assert hist["address"] == sender
    assert [t["amount"] for t in hist["transactions"]] == [250, 1_500_000_000]
    theirs = cli_json(run_cli(home, "history", OTHER, "--node", node.url, "--json"))
    local = cli_json(run_cli(home, "history", OTHER, "--data-dir", str(node.data_dir),
                             "--json"))
    assert theirs == local and len(theirs["transactions"]) == 2
    assert cli_json(run_cli(home, "history", OTHER, "--node", node.url, "--limit", "1",
                            "--json"))["transactions"] == theirs["transactions"][:1]
    table = run_cli(home, "history", OTHER, "--node", node.url)
    assert "+1.5 HC" in table.stdout and "in" in table.stdout


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_send_refusals(funded_node: NodeProc):
    node, home = funded_node, funded_node.home
    for amount, why in (("-1", "negative"), ("1.0000000001", "more than 9 decimals"),
                        ("abc", "not a number"), ("0", "more than 0"),
                        (str(2**96) + "u", "too large")):
        r = run_cli(home, "send", "--node", node.url, "--", OTHER, amount)  # "--": "-1"
        assert r.returncode == 2 and why in r.stderr, (amount, r.stderr)
    r = run_cli(home, "send", "cpc1notanaddress", "1", "--node", node.url)
    assert r.returncode == 2
    r = run_cli(home, "send", OTHER, "1", "--node", node.url, "--key", "nosuchkey")
    assert r.returncode == 1 and "no key named 'nosuchkey'" in r.stderr
    r = run_cli(home, "keygen", "--name", "empty")
    assert r.returncode == 0
    r = run_cli(home, "send", OTHER, "1", "--node", node.url, "--key", "empty", "--json")
    assert r.returncode == 1 and "not enough" in r.stderr
    assert json.loads(r.stdout)["exit_code"] == 1
    r = run_cli(home, "send", OTHER, "2000000", "--node", node.url)  # more than it holds
    assert r.returncode == 1 and "1000000 HC" in r.stderr
    r = run_cli(home, "tx", "ab" * 32, "--node", node.url)
    assert r.returncode == 1 and "unknown transaction" in r.stderr
    assert run_cli(home, "tx", "xyz", "--node", node.url).returncode == 2


@pytest.mark.timeout(60)
def test_read_commands_never_create_a_chain(tmp_path):
    home = tmp_path / "home"
    for args in (("balance", OTHER), ("history", OTHER), ("tx", "ab" * 32),
                 ("inspect-block", "latest")):
        r = run_cli(home, *args)
        assert r.returncode == 2 and "no --node given and no local chain" in r.stderr, r.stderr
    assert not (home / "node").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli(home, "balance", OTHER, "--data-dir", str(empty))
    assert r.returncode == 2 and "no genesis.json" in r.stderr
    assert list(empty.iterdir()) == []
    r = run_cli(home, "balance", OTHER, "--node", "")
    assert r.returncode == 2 and "--node is empty" in r.stderr
    r = run_cli(home, "send", OTHER, "1")
    assert r.returncode == 2 and "no local chain" in r.stderr
    assert not (home / "node").exists()


@pytest.mark.timeout(60)
def test_a_never_started_data_dir_reads_as_its_genesis_and_says_so(tmp_path):
    home, data_dir = tmp_path / "home", tmp_path / "node"
    r = run_cli(home, "node", "init", "--data-dir", str(data_dir), "--alloc", f"{OTHER}=7")
    assert r.returncode == 0, r.stderr
    b = run_cli(home, "balance", OTHER, "--data-dir", str(data_dir), "--json")
    assert account(b)["balance"] == 7
    assert "genesis only" in b.stderr and str(data_dir) in b.stderr
    assert not (data_dir / "chain").exists()
    h = run_cli(home, "history", OTHER, "--data-dir", str(data_dir), "--json")
    assert json.loads(h.stdout)["transactions"] == []


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_send_without_node_uses_the_local_chain_and_says_so(tmp_path):
    """No --node and an initialised local chain: `send` starts the embedded node on it."""
    home = tmp_path / "home"
    assert run_cli(home, "keygen", "--import", "-", stdin=FUNDED_KEY.hex() + "\n").returncode == 0
    r = run_cli(home, "node", "init", "--block-time", "0.3", "--alloc",
                f"{FUNDED_KEY.public_key.address}={FUNDED_AMOUNT}")
    assert r.returncode == 0, r.stderr
    r = run_cli(home, "send", OTHER, "2.5", "--wait")
    assert r.returncode == 0, r.stderr
    assert "using the embedded node" in r.stderr and "included in block 1" in r.stdout
    b = run_cli(home, "balance", OTHER)
    assert b.stdout.strip() == f"{OTHER}: balance 2.5 HC, nonce 0"
    assert f"chain: data dir {home / 'node'} (height 1)" in b.stderr
    h = run_cli(home, "history")
    assert "1 transaction, newest first" in h.stdout and "-2.5 HC" in h.stdout


HISTORY_PATH = f"/v1/accounts/{OTHER}/history"
ITEM = {"tx_id": "ab" * 32, "height": 4, "index": 0, "timestamp": 1_700_000_000_000,
        "tx_type": "TRANSFER", "from_address": FUNDED_KEY.public_key.address,
        "to_address": OTHER, "amount": 5, "fee": FEE, "nonce": 0}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("pages", "reason"), [
    # A node repeating its `next_before` (or going up) would be asked forever.
    ([{"address": OTHER, "transactions": [], "next_before": 5}] * 3, "does not move back"),
    ([{"address": OTHER, "transactions": [], "next_before": 5},
      {"address": OTHER, "transactions": [], "next_before": 9}], "does not move back"),
    # Items that are not history entries would crash the table.
    ([{"address": OTHER, "transactions": [{"tx_id": "ab" * 32}], "next_before": None}],
     "unexpected answer"),
    ([{"address": OTHER, "transactions": [[1]], "next_before": None}], "unexpected answer"),
    ([{"address": OTHER, "transactions": [{**ITEM, "amount": "5"}], "next_before": None}],
     "unexpected answer"),
    ([{"address": OTHER, "transactions": [], "next_before": "x"}], "unexpected answer"),
], ids=["repeats", "goes-up", "no-height", "not-an-object", "amount-string", "bad-cursor"])
def test_history_refuses_a_node_whose_pages_do_not_make_sense(pages: list, reason: str,
                                                              tmp_path) -> None:
    """`history --node` against a fake node: a clear error and exit 1, never a traceback or a
    query loop that does not end."""
    answers = iter(pages)

    def page(path: str) -> tuple[int, object]:
        return 200, next(answers, pages[-1])

    with FakeNode({HISTORY_PATH: page}) as fake:
        for extra in ((), ("--json",)):
            answers = iter(pages)
            r = run_cli(tmp_path / "home", "history", OTHER, "--node", fake.url, *extra,
                        timeout=30)
            assert r.returncode == 1, r.stderr
            assert reason in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(fake.requests) <= 2 * len(pages)


@pytest.mark.timeout(60)
def test_history_reads_a_newer_nodes_pages(tmp_path) -> None:
    """Extra keys (a newer node's) are kept; pages continue while `next_before` goes down."""
    pages = iter([
        {"address": OTHER, "transactions": [{**ITEM, "memo": "hi"}], "next_before": 4},
        {"address": OTHER, "transactions": [{**ITEM, "height": 2, "tx_id": "cd" * 32}],
         "next_before": None, "scanned": 3}])
    with FakeNode({HISTORY_PATH: lambda path: (200, next(pages))}) as fake:
        r = run_cli(tmp_path / "home", "history", OTHER, "--node", fake.url, "--json")
        got = cli_json(r)["transactions"]
        assert [t["height"] for t in got] == [4, 2] and got[0]["memo"] == "hi"
        assert fake.requests[1].endswith("before=4")

"""Where chain-reading commands get their data: a node URL or a data directory (SPEC 7).

`--node URL` (or `$HASHCLOUD_NODE`) asks a running node over HTTP; `--data-dir DIR` (default
`<home>/node`) opens the flat-file store read-only, which works while a node is writing it.

A read command never creates a chain: a data directory without a genesis, or a chain store
that is not there, is an error (exit 2) naming what is missing and how to point the command at
a chain, never an empty chain that shows a balance of 0. Every read says on stderr which chain
it read (`source_line`), so a surprising answer is never silent; stdout keeps the result
(and its one JSON object under `--json`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hashcloud.chain.block import block_hash, block_to_json
from hashcloud.chain.genesis import Genesis, genesis_block, genesis_state, load_genesis
from hashcloud.chain.ledger import Ledger
from hashcloud.chain.state import get_account
from hashcloud.chain.store import LOG_NAME
from hashcloud.chain.tx import tx_to_json
from hashcloud.cli.common import CliState, err
from hashcloud.client.http import NodeClient
from hashcloud.errors import NodeError, NodeRejected, NotFound, UnreadableInput, UsageError
from hashcloud.node.config import genesis_path, is_initialised
from hashcloud.node.service import address_history


class ChainSource:
    """Uniform read access (`account`, `block`, `transaction`, `history`) over HTTP or a
    read-only ledger; `description` says which chain it is (for the stderr line)."""

    def __init__(self, client: NodeClient | None = None, ledger: Ledger | None = None,
                 genesis: Genesis | None = None, description: str = "") -> None:
        self.client, self.ledger, self.genesis = client, ledger, genesis
        self.description = description

    def account(self, address: str) -> dict:
        """`{"address", "balance", "nonce"}` at the head."""
        if self.client is not None:
            return self.client.account(address).model_dump(mode="json")
        if self.genesis is not None:
            acct = get_account(genesis_state(self.genesis), address)
        else:
            assert self.ledger is not None
            acct = self.ledger.account(address)
        return {"address": address, "balance": acct.balance, "nonce": acct.nonce}

    def block(self, ref: str) -> dict:
        """SPEC 7 inspect-block JSON of `latest`, a height or a hash."""
        if self.client is not None:
            try:
                return self.client.block(ref)
            except NodeRejected as exc:
                raise NodeError(exc.detail) from None
        if self.genesis is not None:
            blk0 = genesis_block(self.genesis)
            if ref in ("latest", "0") or ref.lower() == block_hash(blk0.header):
                return block_to_json(blk0)
            raise NodeError(f"no block {ref!r} (the chain has only its genesis block)")
        assert self.ledger is not None
        blk = self.ledger.find_block(ref)
        if blk is None:
            raise NodeError(f"no block {ref!r} (head is at height {self.ledger.height})")
        return block_to_json(blk)

    def transaction(self, txid: str) -> dict:
        """`{"tx_id", "status", "height"?, "index"?, "block_hash"?, "transaction"?}`: the
        transaction's status and, once included, its fields (SPEC 7 v1.1 `tx`). A pending
        one has no body here: the node's API gives the status of a pooled transaction only."""
        if self.client is not None:
            try:
                status = self.client.tx_status(txid).model_dump(mode="json")
            except NodeRejected as exc:
                raise NotFound(exc.detail) from None
            if status["status"] == "included" and status["height"] is not None:
                blk = self.block(str(status["height"]))
                tx = blk["transactions"][status["index"]]
                return {**status, "block_hash": blk["hash"], "transaction": tx}
            return status
        where = self.ledger.find_tx(txid) if self.ledger is not None else None
        if where is None:
            raise NotFound(f"unknown transaction {txid} in {self.description} "
                           "(a pending one is known to its node only: use --node)")
        assert self.ledger is not None
        blk = self.ledger.get_block(where[0])
        assert blk is not None
        tx = blk.transactions[where[1]]
        return {"tx_id": txid, "status": "included", "height": where[0], "index": where[1],
                "block_hash": block_hash(blk.header),
                "transaction": {"tx_id": txid, **tx_to_json(tx)}}

    def history(self, address: str, limit: int) -> list[dict]:
        """Up to `limit` transactions from or to `address`, newest first, however many
        bounded pages that takes (SPEC 7 v1.1 `history`). A node whose `next_before` does not
        move back is a NodeError (it would be asked for the same page forever)."""
        found: list[dict] = []
        before: int | None = None
        while len(found) < limit:
            if self.client is not None:
                page = self.client.history(address, before, min(500, limit - len(found)))
            elif self.ledger is not None:
                page = address_history(self.ledger, address, before=before,
                                       limit=limit - len(found))
            else:  # genesis only: no transaction yet
                return []
            found.extend(page["transactions"])
            after = page.get("next_before")
            if after is None:
                break
            if before is not None and after >= before:  # would ask for the same page again
                raise NodeError(f"the history of {address} from {self.description} does not "
                                f"move back: page before {before} continues at {after}")
            before = after
        return found[:limit]


def source_line(src: ChainSource) -> None:
    """Say on stderr which chain a read command read (SPEC 7: reads never guess silently)."""
    err.print(f"[dim]chain: {src.description}[/]", soft_wrap=True)


@contextlib.contextmanager
def open_source(st: CliState, node: str | None, data_dir: Path | None, *,
                announce: bool = True) -> Iterator[ChainSource]:
    """A ChainSource for `--node` or `--data-dir` (default: the home's embedded node data).

    Never creates anything: a missing or uninitialised data dir, or an initialised one whose
    chain store is damaged, raises instead. `--node ""` is a usage error, not "no node"."""
    if node is not None and not node.strip():
        raise UsageError("--node is empty: give a node URL, or leave --node out to read "
                         "the local chain")
    if node and data_dir:
        raise UsageError("--node and --data-dir exclude each other")
    if node:
        with NodeClient(node, retries=2) as client:
            src = ChainSource(client=client, description=f"node {client.base_url}")
            if announce:
                source_line(src)
            yield src
        return
    src = _open_data_dir(data_dir or st.home / "node", default=data_dir is None)
    try:
        if announce:
            source_line(src)
        yield src
    finally:
        if src.ledger is not None:
            src.ledger.close()


def _open_data_dir(dd: Path, *, default: bool) -> ChainSource:
    """The read-only ChainSource of data directory `dd` (see `open_source`)."""
    hint = ("give --node URL (or set HASHCLOUD_NODE) to ask a running node, or --data-dir "
            "DIR for a node's data directory")
    if not dd.exists():
        what = "no --node given and no local chain" if default else "no chain"
        raise UnreadableInput(f"{what} at {dd}: {hint}")
    if not is_initialised(dd):
        raise UnreadableInput(f"{dd} holds no chain (no genesis.json): {hint}")
    genesis = load_genesis(genesis_path(dd))
    chain_dir = dd / "chain"
    if not (chain_dir / LOG_NAME).exists():
        # Initialised but never started: the chain is its genesis block alone (no file made).
        return ChainSource(genesis=genesis, description=f"data dir {dd} (genesis only: the "
                           "node was never started)")
    ledger = Ledger.open(chain_dir, genesis, readonly=True)
    return ChainSource(ledger=ledger, description=f"data dir {dd} (height {ledger.height})")

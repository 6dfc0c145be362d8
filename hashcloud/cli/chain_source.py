"""Where chain-reading commands get their data: a node URL or a data directory (SPEC 7).

`--node URL` (or `$HASHCLOUD_NODE`) asks a running node over HTTP; `--data-dir DIR` (default
`<home>/node`) opens the flat-file store read-only, which works while a node is writing it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hashcloud.chain.block import block_hash, block_to_json
from hashcloud.chain.genesis import Genesis, genesis_block, genesis_state
from hashcloud.chain.ledger import Ledger
from hashcloud.chain.state import get_account
from hashcloud.chain.store import LOG_NAME
from hashcloud.cli.common import CliState
from hashcloud.client.http import NodeClient
from hashcloud.errors import NodeError, NodeRejected, UsageError
from hashcloud.node.config import load_data_dir


class ChainSource:
    """Uniform read access (`account`, `block`) over HTTP or a read-only ledger."""

    def __init__(self, client: NodeClient | None = None, ledger: Ledger | None = None,
                 genesis: Genesis | None = None) -> None:
        self.client, self.ledger, self.genesis = client, ledger, genesis

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


@contextlib.contextmanager
def open_source(st: CliState, node: str | None, data_dir: Path | None) -> Iterator[ChainSource]:
    """A ChainSource for `--node` or `--data-dir` (default: the home's embedded node data)."""
    if node and data_dir:
        raise UsageError("--node and --data-dir exclude each other")
    if node:
        with NodeClient(node, retries=2) as client:
            yield ChainSource(client=client)
        return
    files = load_data_dir(data_dir or st.home / "node")
    if not (files.chain_dir / LOG_NAME).exists():
        # Initialised but never started: the chain is its genesis block alone.
        yield ChainSource(genesis=files.genesis)
        return
    with Ledger.open(files.chain_dir, files.genesis, readonly=True) as ledger:
        yield ChainSource(ledger=ledger)

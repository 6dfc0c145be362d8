"""The cheaper intake path of transaction batches (SPEC 5, 6; `POST /v1/transactions/batch`).

`prevalidate` checks the signatures of a batch on `VERIFY_THREADS` threads before the node
takes its lock. It decides nothing: its only effect is to fill `crypto.signatures`' memo of
curve checks, so that the mempool's entry validation (`apply_transaction`, run under the
node lock, one transaction after the other) and later the block's own validation find each
answer there instead of spending a curve check each on a single core. libsecp256k1 (through
coincurve's cffi) releases the GIL, so the threads really run in parallel. A transaction
whose key or signature is malformed is skipped here and refused, with its reason, by the
mempool as usual.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from hashcloud.chain.genesis import Genesis, chain_domain
from hashcloud.chain.tx import Transaction, tx_signing_bytes
from hashcloud.crypto.keys import PublicKey
from hashcloud.crypto.signatures import verify
from hashcloud.errors import HashCloudError

__all__ = ["MIN_PARALLEL", "VERIFY_THREADS", "prevalidate"]

VERIFY_THREADS = max(1, min(8, os.cpu_count() or 1))
"""Threads checking a batch's signatures (one per core, at most 8)."""
MIN_PARALLEL = 64
"""Batches smaller than this are left to the mempool's own checks (threads would cost more)."""

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    """The process's verification pool (created on first use)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="hc-verify")
    return _pool


def _check(chunk: Sequence[Transaction], genesis: Genesis) -> None:
    """Curve-check each transaction's signature (answers land in the verification memo)."""
    domain = chain_domain(genesis)
    for tx in chunk:
        try:
            verify(PublicKey.from_hex(tx.public_key), tx_signing_bytes(tx, domain),
                   bytes.fromhex(tx.signature))
        except (HashCloudError, ValueError):
            continue  # the mempool refuses it with the reason


def prevalidate(genesis: Genesis, txs: Sequence[Transaction]) -> None:
    """Check the signatures of `txs` in parallel (module doc); returns when all are done."""
    if len(txs) < MIN_PARALLEL or VERIFY_THREADS < 2:
        return
    step = -(-len(txs) // VERIFY_THREADS)
    futures = [_executor().submit(_check, txs[i:i + step], genesis)
               for i in range(0, len(txs), step)]
    for fut in futures:
        fut.result()

"""The cheaper intake paths of transactions (SPEC 5, 6): batches and single submissions.

`prevalidate` checks the signatures of a batch on `VERIFY_THREADS` threads before the node
takes its lock. It decides nothing: its only effect is to fill `crypto.signatures`' memo of
curve checks, so that the mempool's entry validation (`apply_transaction`, run under the
node lock, one transaction after the other) and later the block's own validation find each
answer there instead of spending a curve check each on a single core. libsecp256k1 (through
coincurve's cffi) releases the GIL, so the threads really run in parallel. A transaction
whose key or signature is malformed is skipped here and refused, with its reason, by the
mempool as usual.

`SubmitThreads` runs single submissions (`POST /v1/transactions`) off the event loop with one
`run_in_executor` hand-off each: a submission holds its thread through the journal's fsync,
and concurrent ones share that fsync (group commit, `journal.AppendLog`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from hashcloud.chain.genesis import Genesis, chain_domain
from hashcloud.chain.tx import Transaction, tx_signing_bytes
from hashcloud.crypto.keys import PublicKey
from hashcloud.crypto.signatures import verify
from hashcloud.errors import HashCloudError

__all__ = ["MIN_PARALLEL", "SUBMIT_THREADS", "VERIFY_THREADS", "SubmitThreads", "prevalidate"]

T = TypeVar("T")

VERIFY_THREADS = max(1, min(8, os.cpu_count() or 1))
"""Threads checking a batch's signatures (one per core, at most 8)."""
MIN_PARALLEL = 64
"""Batches smaller than this are left to the mempool's own checks (threads would cost more)."""
SUBMIT_THREADS = 64
"""Threads of single submissions: as many concurrent submissions share one journal fsync."""

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


class SubmitThreads:
    """The threads that run single submissions (`POST /v1/transactions`), one
    `loop.run_in_executor` hand-off per request.

    Not anyio's worker threads (FastAPI's sync routes, `anyio.to_thread.run_sync`): an anyio
    hand-off also takes a capacity-limiter token, opens a cancel scope and looks up the
    loop's token, and a sync route with a `response_model` hands off twice (the endpoint,
    then the response's validation). On the 2-core bench box that came to about 0.2 ms of
    event-loop CPU per transaction, as much as the submission's own checks
    (`scripts/bench_tx.py --modes single`). The pool is made on first use and made afresh
    after `close` (an app may be started again, as tests do)."""

    def __init__(self, threads: int = SUBMIT_THREADS) -> None:
        """At most `threads` submissions run at once (more wait in the pool's queue)."""
        self.threads = threads
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        """The pool (created if none is open)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="hc-submit")
            return self._pool

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on one of the threads; its result (or its exception) once done."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)

    def close(self) -> None:
        """Wait for the running submissions to finish and stop the threads (blocking: the
        node's service must not close under a submission writing its journal)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

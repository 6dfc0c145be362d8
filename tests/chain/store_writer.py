"""Crash-test helper: append blocks to a ChainStore forever, acknowledging each on stdout.

Run as ``python store_writer.py DATA_DIR [WATERMARK]``; with ``WATERMARK`` the store is
bound to `GENESIS` and guarded by that watermark file (`ChainStore.guard`). After
``append_block`` returns for height ``h`` the script prints ``h`` and flushes, so every
printed height is an acknowledged block that must survive a SIGKILL. Payloads and hashes
are deterministic functions of the height (:func:`block_payload`, :func:`block_hash`) so
the test can check what was read back.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from hashcloud.chain.store import ChainStore, Watermark

GENESIS = hashlib.sha256(b"crash-test-genesis").digest()
"""Genesis hash a guarded writer binds its store to."""


def block_hash(height: int) -> bytes:
    """Deterministic 32-byte hash for the block at ``height``."""
    return hashlib.sha256(b"crash-test-hash:%d" % height).digest()


def block_payload(height: int) -> bytes:
    """Deterministic payload of varying size (up to ~64 KB, so some writes are long)."""
    size = 64 + (height * 7919) % 65_536
    seed = hashlib.sha256(b"crash-test-payload:%d" % height).digest()
    return (seed * (size // 32 + 1))[:size]


def main(argv: list[str]) -> int:
    """Open the store at ``argv[1]`` and append blocks until killed."""
    watermark = Watermark(argv[2]) if len(argv) > 2 else None
    with ChainStore(Path(argv[1]), genesis_hash=GENESIS if watermark else None) as store:
        if watermark is not None:
            if store.height < 0:
                store.append_block(0, block_hash(0), block_payload(0))
            store.guard(watermark)
        print(f"ready {store.height}", flush=True)
        height = store.height + 1
        while True:
            store.append_block(height, block_hash(height), block_payload(height))
            print(height, flush=True)
            height += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

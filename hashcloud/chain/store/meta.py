"""``meta.json``: binds a chain store to one genesis (SPEC 6 storage).

``{"format": 1, "genesis_hash": "<hex>" | null}``, written atomically and durably. A store is
bound when it is created empty for a genesis, or later by the ledger once block 0 has been
checked against the genesis (`ChainStore.bind_genesis`); a store is never re-bound.
"""

from __future__ import annotations

import json
from pathlib import Path

from hashcloud.chain.store.blocklog import FORMAT_VERSION
from hashcloud.errors import StoreError
from hashcloud.fsutil import atomic_replace

__all__ = ["META_NAME", "read_meta", "write_meta"]

META_NAME = "meta.json"


def read_meta(path: Path) -> tuple[bool, bytes | None]:
    """Return ``(exists, recorded genesis hash or None)`` of the meta file at ``path``.

    Raises StoreError when the file exists but is unreadable or of another format.
    """
    if not path.exists():
        return False, None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        raw = meta["genesis_hash"]
        recorded = None if raw is None else bytes.fromhex(raw)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise StoreError(f"{META_NAME} unreadable: {exc.__class__.__name__}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise StoreError(f"unsupported store format {meta.get('format')!r}")
    return True, recorded


def write_meta(path: Path, genesis_hash: bytes | None) -> None:
    """Atomically and durably write the meta file recording ``genesis_hash`` (or none)."""
    meta = {
        "format": FORMAT_VERSION,
        "genesis_hash": None if genesis_hash is None else genesis_hash.hex(),
    }
    atomic_replace(path, json.dumps(meta, sort_keys=True).encode() + b"\n")

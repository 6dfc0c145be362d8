"""Crash-safe flat-file chain store (SPEC 6): facade over one module per file format.

``from hashcloud.chain.store import ChainStore`` is the way in; the names below are what the
rest of the code and the tests use. The modules behind it:

- ``blocklog``: ``blocks.log``, the length-prefixed, checksummed block log (source of truth),
  its scan and the torn-tail repair;
- ``index``: ``blocks.idx``, the incrementally maintained, rebuildable offset index;
- ``snapshot``: ``state.snap``, the atomic state snapshot;
- ``meta``: ``meta.json``, the genesis binding;
- ``lock``: ``LOCK``, the single-writer flock;
- ``watermark``: ``chain.watermark`` beside the store, the highest acknowledged block;
- ``chainstore``: :class:`ChainStore`, which ties them together and owns the recovery rule.
"""

from __future__ import annotations

from hashcloud.chain.store.blocklog import (
    FORMAT_VERSION,
    HASH_LEN,
    LOG_HEADER,
    LOG_NAME,
    MAX_PAYLOAD,
    RECORD_MAGIC,
    BlockRecord,
    encode_record,
)
from hashcloud.chain.store.chainstore import ChainStore
from hashcloud.chain.store.index import INDEX_NAME, INDEX_VERSION
from hashcloud.chain.store.lock import LOCK_NAME
from hashcloud.chain.store.meta import META_NAME
from hashcloud.chain.store.snapshot import SNAPSHOT_NAME
from hashcloud.chain.store.watermark import WATERMARK_NAME, Mark, Watermark

__all__ = [
    "FORMAT_VERSION",
    "HASH_LEN",
    "INDEX_NAME",
    "INDEX_VERSION",
    "LOCK_NAME",
    "LOG_HEADER",
    "LOG_NAME",
    "MAX_PAYLOAD",
    "META_NAME",
    "RECORD_MAGIC",
    "SNAPSHOT_NAME",
    "WATERMARK_NAME",
    "BlockRecord",
    "ChainStore",
    "Mark",
    "Watermark",
    "encode_record",
]

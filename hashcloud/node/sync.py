"""Block ranges between nodes: what a producer serves and how a follower reads it (SPEC 6, 7).

`GET /v1/blocks?from=H&limit=N` answers `block_range`: consecutive stored blocks from height
`H`, each as `{height, hash, data}` where `data` is the hex of the chain store payload (the
canonical block encoding, SPEC 6), so a follower decodes and re-validates exactly the bytes
the producer stored, never a re-serialisation. A range is bounded by `MAX_RANGE_BLOCKS`
blocks and `MAX_RANGE_BYTES` payload bytes (at least one block, whatever its size), so one
request never makes the node read or send an unbounded amount.

`decode_range` is the follower's side: every record must decode, carry the height it claims,
hash to the hash it claims (`ledger.decode_stored_block`, the check the ledger applies to its
own store), and follow the previous one. A record that fails is an `InvalidBlock`; whether
it applies on the follower's chain is then `apply_block`'s verdict, as for any block.
"""

from __future__ import annotations

from hashcloud.api.models import BlockRange, BlockRecord, HeadInfo
from hashcloud.chain.block import Block
from hashcloud.chain.ledger import Ledger, decode_stored_block
from hashcloud.errors import InvalidBlock

__all__ = ["DEFAULT_RANGE_BLOCKS", "MAX_RANGE_BLOCKS", "MAX_RANGE_BYTES", "block_range",
           "decode_range"]

MAX_RANGE_BLOCKS = 512
"""Most blocks one range answer carries."""
DEFAULT_RANGE_BLOCKS = 128
"""Blocks per range when the request names no limit."""
MAX_RANGE_BYTES = 4 << 20
"""Payload bytes after which a range stops (the JSON answer is about twice that: hex)."""


def block_range(ledger: Ledger, head: HeadInfo, start: int, limit: int) -> BlockRange:
    """Blocks `start`, `start + 1`, ... of `ledger` (at most `limit`, `MAX_RANGE_BLOCKS` and
    about `MAX_RANGE_BYTES`), with `head`; empty past the head."""
    limit = max(1, min(limit, MAX_RANGE_BLOCKS))
    records: list[BlockRecord] = []
    size = 0
    if start <= ledger.height:
        for height, digest, payload in ledger.store.iter_blocks(start):
            if len(records) >= limit or (records and size + len(payload) > MAX_RANGE_BYTES):
                break
            records.append(BlockRecord(height=height, hash=digest.hex(), data=payload.hex()))
            size += len(payload)
    return BlockRange(blocks=records, head=head)


def decode_range(blocks: list[BlockRecord], start: int) -> list[Block]:
    """The blocks of a range that must begin at height `start`, each checked against its own
    record (height, hash, canonical decoding). Raises InvalidBlock naming the height."""
    out: list[Block] = []
    for offset, rec in enumerate(blocks):
        height = start + offset
        if rec.height != height:
            raise InvalidBlock(f"range answer has block {rec.height} where {height} belongs")
        try:
            payload = bytes.fromhex(rec.data)
        except ValueError:
            raise InvalidBlock(f"block {height}: data is not hex") from None
        try:
            out.append(decode_stored_block(height, bytes.fromhex(rec.hash), payload))
        except InvalidBlock as exc:
            raise InvalidBlock(f"block {height} {exc}") from None
    return out

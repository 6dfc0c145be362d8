"""The audit plan (SPEC 3 v1.1): which samples a round's audit recomputes, and how.

When the node draws the `s` sample indices it also draws the plan: `mode` (`rows` by default,
or `full`), the `audited` subset of `m` sample indices, and in `rows` mode `k` distinct row
numbers in `[0, n)` for each audited sample (CSPRNG). The plan is signed with the indices
(`challenge.indices_signing_bytes`), so the miner learns it with the indices; that is safe,
because every leaf, and through the leaf every loop output, is already bound by the committed
root. An offline proof (no node) derives its rows Fiat-Shamir style (`offline_rows`) and
audits every sample.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from random import Random
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hashcloud.errors import ProofError
from hashcloud.params import DEFAULT_AUDIT_ROWS, MAX_LOOPS, MAX_N, MAX_S_MAX

__all__ = [
    "AuditMode",
    "AuditPlan",
    "draw_plan",
    "offline_plan",
    "offline_rows",
    "rows_per_sample",
]

AuditMode = Literal["rows", "full"]
"""The plan's mode; the names are `params.AUDIT_MODES`."""

# Domain tag of the offline (Fiat-Shamir) row derivation (SPEC 3 v1.1).
_OFFLINE_ROWS_TAG = "hc-fs-rows:"


class AuditPlan(BaseModel):
    """A round's audit plan: `mode`, the `audited` sample indices (ascending) and, in `rows`
    mode, `rows[j]`: the distinct row numbers recomputed for `audited[j]` (SPEC 3 v1.1).

    In `full` mode `rows` is empty: each audited leaf is recomputed whole. Unknown keys are
    ignored (it is read from proof files, SPEC 4)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    mode: AuditMode
    audited: list[Annotated[int, Field(ge=0, lt=MAX_LOOPS)]] = Field(
        min_length=1, max_length=MAX_S_MAX)
    rows: list[list[Annotated[int, Field(ge=0, lt=MAX_N)]]] = Field(max_length=MAX_S_MAX)

    @model_validator(mode="after")
    def _check_shape(self) -> AuditPlan:
        """Audited indices strictly ascending; one row list per audited sample in `rows`
        mode (none in `full` mode), each non-empty with distinct non-negative rows."""
        if any(i < 0 for i in self.audited) or any(
            a >= b for a, b in zip(self.audited, self.audited[1:], strict=False)
        ):
            raise ValueError("audited indices must be distinct, non-negative and ascending")
        if self.mode == "full":
            if self.rows:
                raise ValueError("a full audit plan has no rows")
            return self
        if len(self.rows) != len(self.audited):
            raise ValueError("a rows audit plan needs one row list per audited sample")
        for rows in self.rows:
            if not rows or len(set(rows)) != len(rows) or min(rows) < 0:
                raise ValueError("each audited sample needs distinct non-negative rows")
        return self

    def check_fits(self, indices: Sequence[int], n: int) -> None:
        """Raise ProofError unless every audited index is one of `indices` and every row
        lies in `[0, n)` (what a plan must satisfy for a round of these samples)."""
        drawn = set(indices)
        if any(i not in drawn for i in self.audited):
            raise ProofError("the audit plan names a sample that was not drawn")
        if any(r >= n for rows in self.rows for r in rows):
            raise ProofError(f"the audit plan names a row outside [0, {n})")


def rows_per_sample(n: int, k: int) -> int:
    """`min(n, k)`: the rows drawn per audited sample (SPEC 3 v1.1)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ProofError("the number of audited rows must be a positive integer")
    return min(n, k)


def draw_plan(
    indices: Sequence[int],
    m: int,
    n: int,
    *,
    mode: AuditMode = "rows",
    k: int = DEFAULT_AUDIT_ROWS,
    rng: Random | None = None,
) -> AuditPlan:
    """The node's plan for a commitment: `m` of the drawn `indices` and, in `rows` mode,
    `min(n, k)` distinct rows for each, all from the CSPRNG (SPEC 3 v1.1).

    `rng` defaults to the OS CSPRNG; tests may pass a seeded `random.Random`.
    """
    rng = secrets.SystemRandom() if rng is None else rng
    if not indices or not 1 <= m <= len(indices):
        raise ProofError("the audit plan needs 1 <= m <= s")
    audited = sorted(rng.sample(list(indices), m))
    if mode == "full":
        return AuditPlan(mode="full", audited=audited, rows=[])
    per = rows_per_sample(n, k)
    rows = [sorted(rng.sample(range(n), per)) for _ in audited]
    return AuditPlan(mode="rows", audited=audited, rows=rows)


def offline_rows(merkle_root: bytes, index: int, n: int, k: int) -> list[int]:
    """The Fiat-Shamir rows of sample `index` of an offline proof (SPEC 3 v1.1).

    Row `t` is `int(SHA256(ascii("hc-fs-rows:" + merkle_root_hex + ":" + str(index) + ":" +
    str(t))), "big") % n`, repeats skipped, for `t = 0, 1, ...` until `min(n, k)` distinct
    rows (in the order drawn); `merkle_root_hex` is the root's `0x` hex.
    """
    if not isinstance(merkle_root, bytes) or len(merkle_root) != 32:
        raise ProofError("merkle root must be 32 bytes")
    want = rows_per_sample(n, k)
    prefix = f"{_OFFLINE_ROWS_TAG}0x{merkle_root.hex()}:{index}:"
    rows: list[int] = []
    seen: set[int] = set()
    t = 0
    while len(rows) < want:
        digest = hashlib.sha256(f"{prefix}{t}".encode("ascii")).digest()
        row = int.from_bytes(digest, "big") % n
        if row not in seen:
            seen.add(row)
            rows.append(row)
        t += 1
    return rows


def offline_plan(merkle_root: bytes, indices: Sequence[int], n: int,
                 k: int = DEFAULT_AUDIT_ROWS) -> AuditPlan:
    """The plan of an offline proof: every sample audited, Fiat-Shamir rows (SPEC 3 v1.1)."""
    audited = sorted(indices)
    return AuditPlan(mode="rows", audited=audited,
                     rows=[offline_rows(merkle_root, i, n, k) for i in audited])

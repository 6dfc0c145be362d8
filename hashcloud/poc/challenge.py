"""Challenges and the node's signed messages around a round (SPEC 3).

A node issues a `Challenge` whose `token` is its signature over the canonical encoding of
every other field; the seed is bound to the chain head, the worker and the challenge id.
After the commitment the node signs the sample indices it drew (`indices_signature`).
Signed bytes are canonical msgpack arrays that start with a domain tag naming the message
kind and the chain (its id and genesis, SPEC 5 v1.1), so no signature can be replayed as
another message or on another chain; the SPEC 4 commit message keeps its fixed form.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from hashcloud.codec import encode_canonical
from hashcloud.crypto.hashing import sha256
from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.crypto.signatures import ChainDomain, domain_tag, sign, verify
from hashcloud.errors import AuditError, InvalidSignature
from hashcloud.poc.plan import AuditPlan
from hashcloud.types import U64, AddressStr, Hex32, HexId16, MatrixSize, Signature, to_phex


class Challenge(BaseModel):
    """A node-issued challenge `{challenge_id, seed, n, worker_address, issued_height,
    block_hash, expiry, token}` (SPEC 3); `expiry` is unix milliseconds."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    challenge_id: HexId16
    seed: Hex32
    n: MatrixSize
    worker_address: AddressStr
    issued_height: U64
    block_hash: Hex32
    expiry: U64
    token: Signature


def derive_seed(block_hash: str, worker_address: str, challenge_id: str) -> str:
    """`hex(SHA256(ascii(block_hash + ":" + worker_address + ":" + challenge_id)))` (SPEC 3)."""
    return sha256(f"{block_hash}:{worker_address}:{challenge_id}".encode("ascii")).hex()


def challenge_signing_bytes(
    domain: ChainDomain,
    challenge_id: str,
    seed: str,
    n: int,
    worker_address: str,
    issued_height: int,
    block_hash: str,
    expiry: int,
) -> bytes:
    """Canonical bytes the token signs: domain tag + every challenge field but the token."""
    return encode_canonical(
        [
            domain_tag("challenge", domain).decode(),
            challenge_id,
            seed,
            n,
            worker_address,
            issued_height,
            block_hash,
            expiry,
        ]
    )


def issue_challenge(
    node_key: PrivateKey,
    domain: ChainDomain,
    worker_address: str,
    n: int,
    head_height: int,
    head_hash: str,
    expiry_ms: int,
    challenge_id: str | None = None,
) -> Challenge:
    """Make and sign a fresh challenge for `worker_address` bound to the chain head."""
    cid = challenge_id or secrets.token_hex(16)
    seed = derive_seed(head_hash, worker_address, cid)
    token = sign(
        node_key,
        challenge_signing_bytes(
            domain, cid, seed, n, worker_address, head_height, head_hash, expiry_ms
        ),
    )
    return Challenge(
        challenge_id=cid,
        seed=seed,
        n=n,
        worker_address=worker_address,
        issued_height=head_height,
        block_hash=head_hash,
        expiry=expiry_ms,
        token=token,
    )


def verify_challenge(challenge: Challenge, node_public_key: PublicKey,
                     domain: ChainDomain) -> None:
    """Raise unless the token is the node's signature and the seed is derived per SPEC 3."""
    if challenge.seed != derive_seed(
        challenge.block_hash, challenge.worker_address, challenge.challenge_id
    ):
        raise AuditError("challenge seed is not derived from block hash, worker and id")
    message = challenge_signing_bytes(
        domain,
        challenge.challenge_id,
        challenge.seed,
        challenge.n,
        challenge.worker_address,
        challenge.issued_height,
        challenge.block_hash,
        challenge.expiry,
    )
    try:
        verify(node_public_key, message, challenge.token)
    except InvalidSignature:
        raise AuditError("challenge token is not signed by this node") from None


def indices_signing_bytes(
    domain: ChainDomain,
    challenge_id: str,
    merkle_root: bytes,
    loops: int,
    indices: Sequence[int],
    plan: AuditPlan | None = None,
) -> bytes:
    """Canonical bytes of the node's signature over the sample indices it drew and, since
    v1.1, the audit plan drawn with them (SPEC 3); the root appears as its `0x` hex text.

    `plan=None` is the v1 message (indices only), which proof files of v1 nodes carry."""
    fields: list = [domain_tag("indices", domain).decode(), challenge_id, to_phex(merkle_root),
                    loops, list(indices)]
    if plan is not None:
        fields += [plan.mode, list(plan.audited), [list(rows) for rows in plan.rows]]
    return encode_canonical(fields)


def reveal_signing_bytes(
    domain: ChainDomain,
    challenge_id: str,
    merkle_root: bytes,
    samples: Sequence[tuple[int, bytes, bytes | None, Sequence[bytes]]],
) -> bytes:
    """Canonical bytes the worker signs over its reveal (SPEC 3 v1.1, domain kind `reveal`):
    `[tag, challenge_id, merkle_root, [[index, leaf, SHA256(output) or b"", SHA256(path)],
    ...]]`, so nobody but the challenge's worker can use up or fail its round.

    `samples` holds `(index, leaf, output or None, audit path)` in reveal order. Deviation
    from SPEC 3 v1.1, which signs `(index, leaf, SHA256(output) or empty)` only: a wrong path
    is a failed audit, so an unsigned path would let anyone holding a copy of the signed
    reveal alter one hash and burn the round; `SHA256(path)` (the concatenated sibling hashes,
    leaf level first) closes that."""
    return encode_canonical([
        domain_tag("reveal", domain).decode(),
        challenge_id,
        merkle_root,
        [[index, leaf, sha256(output) if output is not None else b"", sha256(b"".join(path))]
         for index, leaf, output, path in samples],
    ])


def commit_message(
    challenge_id: str,
    seed: str,
    n: int,
    worker_address: str,
    loops: int,
    compute_time: float,
    merkle_root: bytes,
    payout_address: str | None = None,
) -> bytes:
    """The SPEC 4 commit message the worker signs (`device_signature`); the root appears as
    its `0x` hex.

    SPEC 6 v1.1 makes the payout address part of the signed commit. A payout other than the
    worker's own address is appended as `"|" + payout_address`; the default payout (None or
    the worker address) leaves the SPEC 4 message unchanged, so v1 proofs and offline proofs
    keep verifying and each message still names exactly one payout (the root before it has a
    fixed width, so the two forms cannot be confused)."""
    message = (
        f"hc/commit/v1|{challenge_id}|{seed}|{n}|{worker_address}|{loops}|"
        f"{round(compute_time * 1000)}|{to_phex(merkle_root)}"
    )
    if payout_address is not None and payout_address != worker_address:
        message += f"|{payout_address}"
    return message.encode("ascii")


def challenge_request_bytes(
    domain: ChainDomain, worker_address: str, n: int, request_time_ms: int
) -> bytes:
    """Canonical bytes a worker signs to ask for a challenge (proves it holds the key)."""
    return encode_canonical(
        [domain_tag("challenge-request", domain).decode(), worker_address, n,
         request_time_ms]
    )

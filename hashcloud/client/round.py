"""The miner's side of an online round (SPEC 3): challenge -> compute -> commit -> reveal
-> receipt -> SUBMIT_RESULT claim, against any node reachable through `NodeClient`.

Every node signature is checked as it arrives (token, indices, receipt), so a miner never
spends a round on a forged challenge, and the proof file it writes carries all of them so
`hashcloud verify` can check the round offline later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hashcloud.api.models import (
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    DeviceModel,
    NodeInfo,
    RevealRequest,
    SampleModel,
)
from hashcloud.chain.tx import MIN_GAS_PRICE, Transaction, make_submit_result, tx_id
from hashcloud.client.http import NodeClient
from hashcloud.crypto.keys import PrivateKey, PublicKey
from hashcloud.crypto.signatures import ChainDomain, sign
from hashcloud.engine.rows import loop_output
from hashcloud.errors import AuditError, NodeError, NodeRejected, ProofError
from hashcloud.poc.audit import check_indices_signature, check_receipt
from hashcloud.poc.challenge import (
    challenge_request_bytes,
    verify_challenge,
)
from hashcloud.poc.proof import ChallengeInfo, DeviceInfo, IssuerInfo, ProofFile
from hashcloud.poc.receipt import Receipt, decode_receipt
from hashcloud.poc.round import (
    OutputFn,
    RoundWork,
    make_samples,
    sample_outputs,
    sign_commit,
    sign_reveal,
)

REVEAL_PATIENCE = 60.0
"""Seconds past a challenge's commit deadline that the commit and reveal keep retrying an
unreachable node (the node journals open challenges, so it knows the round after a restart;
its reveal grace decides whether a late reveal still counts)."""

ComputeFn = Callable[[str], RoundWork]
"""Runs the loops of one round for a seed and returns the work."""


@dataclass
class RoundOutcome:
    """What happened in one online round."""

    proof: ProofFile
    work: RoundWork
    accepted: bool
    reason: str | None = None
    receipt: Receipt | None = None
    reward_estimate: int = 0
    """Expected payout at the epoch's close (SPEC 6 v1.1: an estimate, nothing is minted)."""
    work_credited: int = 0
    """Work `loops * n^3` credited to the payout address once the claim is in a block."""


def node_domain(info: NodeInfo) -> ChainDomain:
    """The chain a node signs for (SPEC 5 v1.1), from its `/v1/info`; NodeError when the
    node reports a malformed chain id."""
    try:
        return info.chain_domain()
    except ValueError as exc:
        raise NodeError(f"node reports an invalid chain: {exc}") from None


def request_challenge(client: NodeClient, key: PrivateKey, n: int, info: NodeInfo
                      ) -> ChallengeResponse:
    """Ask for a challenge (signed request) and check the node's token on it."""
    now_ms = int(time.time() * 1000)
    address = key.public_key.address
    domain = node_domain(info)
    sig = sign(key, challenge_request_bytes(domain, address, n, now_ms))
    resp = client.request_challenge(ChallengeRequest(
        worker_address=address, public_key=key.public_key.data, n=n,
        request_time_ms=now_ms, signature=sig))
    ch = resp.challenge
    if ch.worker_address != address or ch.n != n:
        raise AuditError("node issued a challenge for another worker or size")
    verify_challenge(ch, PublicKey(info.node_public_key), domain)
    return resp


def run_online_round(client: NodeClient, key: PrivateKey, n: int, device: DeviceInfo,
                     compute: ComputeFn, info: NodeInfo | None = None, *,
                     output_fn: OutputFn = loop_output,
                     payout_address: str | None = None) -> RoundOutcome:
    """One audited round; a refused reveal returns accepted=False with the node's reason.

    `payout_address` (SPEC 6 v1.1; default the worker's address) is signed into the commit
    and must come back in the node's receipt: the chain credits the work to it.

    The node's indices and audit plan are checked against its signature; the reveal carries
    the audited loops' outputs (row audit) and is signed by the worker (SPEC 3 v1.1)."""
    info = info or client.info()
    domain = node_domain(info)
    node_key = PublicKey(info.node_public_key)
    issued = request_challenge(client, key, n, info)
    ch = issued.challenge
    work = compute(ch.seed)
    device_signature = sign_commit(key, ch.challenge_id, work, payout_address)
    # A node restart while the challenge is valid is ridden out, not a lost round.
    patience = ch.expiry / 1000 + REVEAL_PATIENCE
    with client.retrying_until(patience):
        commit = client.commit(ch.challenge_id, CommitRequest(
            loops=work.loops, compute_time=work.compute_time, merkle_root=work.merkle_root,
            device=DeviceModel(name=device.name, backend=device.backend),
            device_signature=device_signature, payout_address=payout_address))
    plan = commit.audit
    check_indices_signature(node_key, domain, ch.challenge_id, work.tree.root,
                            work.loops, commit.indices, commit.indices_signature, plan)
    plan.check_fits(commit.indices, ch.n)
    # A row audit needs the audited loops' outputs: recomputed here (m loops of work).
    outputs = (sample_outputs(ch.seed, ch.n, plan.audited, output_fn, work.leaves)
               if plan.mode == "rows" else {})
    samples = make_samples(work.tree, work.leaves, commit.indices, outputs)
    signature = sign_reveal(key, domain, ch.challenge_id, work.tree.root, samples)
    accepted, reason, receipt, reward, credited = False, None, None, 0, 0
    try:
        with client.retrying_until(patience):
            rev = client.reveal(ch.challenge_id, RevealRequest(
                samples=[SampleModel.model_validate(s, from_attributes=True) for s in samples],
                signature=signature))
        receipt = check_receipt(
            decode_receipt(rev.receipt), [info.node_public_key.hex()],
            domain=domain, task_id=ch.challenge_id, worker_address=ch.worker_address,
            merkle_root=work.tree.root, loops=work.loops, seed=ch.seed, n=ch.n,
            payout_address=payout_address or ch.worker_address)
        accepted, reward, credited = rev.accepted, rev.reward_estimate, rev.work
    except NodeRejected as exc:
        reason = exc.detail
    proof = ProofFile(
        version=1, challenge_id=ch.challenge_id, token=ch.token,
        seed=ch.seed, n=ch.n, worker_address=ch.worker_address, loops=work.loops,
        compute_time=work.compute_time, merkle_root=work.merkle_root, samples=samples,
        public_key=key.public_key.data,
        device_signature=device_signature, device=device, offline=False,
        indices_signature=commit.indices_signature, audit=plan,
        receipt=rev.receipt if receipt is not None else None,
        node=IssuerInfo(chain_id=domain.chain_id, genesis=domain.genesis,
                        public_key=info.node_public_key, s_max=issued.s_max),
        challenge=ChallengeInfo(issued_height=ch.issued_height, block_hash=ch.block_hash,
                                expiry=ch.expiry),
        payout_address=payout_address,
    )
    return RoundOutcome(proof, work, accepted, reason, receipt, reward, credited)


def claim_transaction(client: NodeClient, key: PrivateKey, proof: ProofFile,
                      gas_price: int = MIN_GAS_PRICE) -> Transaction:
    """The SUBMIT_RESULT transaction claiming the reward of an audited proof (SPEC 6)."""
    if proof.receipt is None or proof.node is None:
        raise ProofError("the proof has no node receipt: only audited rounds can be claimed")
    if key.public_key.address != proof.worker_address:
        raise ProofError("the proof belongs to another worker's key")
    receipt = decode_receipt(proof.receipt)
    nonce = client.next_nonce(key.public_key.address)
    return make_submit_result(key, receipt, nonce, gas_price, domain=proof.node.domain())


def submit_claim(client: NodeClient, key: PrivateKey, proof: ProofFile, *, wait: bool = True,
                 timeout: float = 60.0) -> tuple[str, int | None]:
    """Send the claim; with `wait`, block until included. Returns (tx_id, height)."""
    tx = claim_transaction(client, key, proof)
    txid = client.submit_transaction(tx).tx_id
    if txid != tx_id(tx):
        raise NodeError("node returned a different transaction id")
    if not wait:
        return txid, None
    status = client.wait_for_inclusion(txid, timeout=timeout)
    return txid, status.height

"""One mining round (SPEC 1-4): run loops for a duration, commit, and build proofs.

The loop runner keeps only the 32-byte leaves, flat, plus the Merkle levels above 32-leaf
chunks (`CompactMerkleBuilder`; the engine reuses its buffers): about 34 bytes per loop
whatever the matrix size (scripts/bench_merkle.py measures it). Ctrl-C (KeyboardInterrupt)
or a stop event ends the round early; what was computed is still committed and proven.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import CompactMerkleBuilder, CompactMerkleTree, MerkleTree
from hashcloud.crypto.signatures import ChainDomain, sign
from hashcloud.engine.device import cpu_core_count
from hashcloud.engine.gemm import leaf_hash, loop_seed
from hashcloud.engine.mining import Engine
from hashcloud.engine.rows import loop_output
from hashcloud.errors import EngineError
from hashcloud.poc.challenge import commit_message, reveal_signing_bytes
from hashcloud.poc.proof import DeviceInfo, ProofFile, Sample
from hashcloud.poc.sampling import offline_indices, sample_count

OutputFn = Callable[[str, int, int], bytes]
"""`output_fn(seed, index, n) -> output_i` (SPEC 1.8); `engine.rows.loop_output`."""

ProgressFn = Callable[[int, float], None]
"""Called as `progress(loops_done, elapsed_seconds)` after every batch."""


@dataclass
class RoundWork:
    """The result of running loops: leaves, the committed tree and the compute time."""

    seed: str
    n: int
    leaves: Sequence[bytes]
    """Flat `LeafStore` from `run_loops` (a list elsewhere): `leaves[i]` is 32 bytes."""
    compute_time: float
    interrupted: bool
    tree: MerkleTree | CompactMerkleTree

    @property
    def loops(self) -> int:
        """Number of loops computed (L)."""
        return len(self.leaves)

    @property
    def merkle_root(self) -> bytes:
        """The Merkle root of the leaves (SPEC 2)."""
        return self.tree.root


def run_loops(
    engine: Engine,
    seed: str,
    duration: float,
    *,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    max_loops: int | None = None,
) -> RoundWork:
    """Run loops 0, 1, 2, ... of `seed` until `duration` seconds, `max_loops` or a stop.

    At least one loop is always computed (SPEC 3 requires loops >= 1)."""
    if duration <= 0 and not max_loops:
        raise EngineError("duration must be positive")
    if duration <= 0:
        duration = float("inf")  # bounded by max_loops only
    # Leaves go flat into the builder, which hashes each 32-leaf chunk as it completes and
    # keeps only the levels above: ~34 bytes per loop, tree ready when the round ends.
    builder = CompactMerkleBuilder()
    leaves = builder.leaves
    interrupted = False
    start = time.perf_counter()
    try:
        while True:
            elapsed = time.perf_counter() - start
            if leaves and (elapsed >= duration or (stop is not None and stop.is_set())):
                break
            if max_loops is not None and len(leaves) >= max_loops:
                break
            # Size batches to the time left so a round ends close to `duration`.
            if leaves:
                per_loop = elapsed / len(leaves)
                left = (duration - elapsed) / per_loop if per_loop > 0 else engine.batch_size
                count = max(1, min(engine.batch_size, int(min(left, 1e9)) + 1))
            else:
                count = 1
            if max_loops is not None:
                count = min(count, max_loops - len(leaves))
            batch = engine.compute_batch(seed, len(leaves), count)
            builder.extend(batch)
            if progress is not None:
                progress(len(leaves), time.perf_counter() - start)
    except KeyboardInterrupt:
        interrupted = True
        if not leaves:
            raise
        # The interrupt may have landed inside `builder.extend`, between storing a batch's
        # leaves and hashing their chunks: rebuild the tree from the (always whole) leaves.
        builder = CompactMerkleBuilder.over(leaves)
    compute_time = time.perf_counter() - start
    return RoundWork(seed, engine.n, leaves, compute_time, interrupted, builder.finish())


def make_samples(
    tree: MerkleTree,
    leaves: Sequence[bytes],
    indices: Sequence[int],
    outputs: Mapping[int, bytes] | None = None,
) -> list[Sample]:
    """The revealed samples for `indices`: each leaf with its RFC 6962 audit path (SPEC 3)
    and, where `outputs` has one, the loop's output (SPEC 3 v1.1 row audits)."""
    outputs = outputs or {}
    return [
        Sample(index=i, leaf=leaves[i], proof=tree.audit_path(i), output=outputs.get(i))
        for i in indices
    ]


def sample_outputs(seed: str, n: int, indices: Iterable[int],
                   output_fn: OutputFn = loop_output,
                   leaves: Sequence[bytes] | None = None,
                   workers: int | None = None) -> dict[int, bytes]:
    """The loop outputs of `indices`, recomputed (SPEC 1.8): a round keeps only 32-byte
    leaves, so the few outputs an audit asks for are computed again (m loops of work; every
    sample of an offline proof). Loops run on `workers` threads (default: one per core, each
    with a single-threaded BLAS), so s outputs at n=4096 cost s/cores loop times.

    With the round's `leaves`, each output is checked against its committed leaf first, so
    a disagreement between the mining engine and this CPU path (a device fault) is an
    EngineError here rather than a failed audit at the node."""
    wanted = list(indices)
    threads = max(1, min(len(wanted), workers or cpu_core_count()))
    if threads == 1:
        outputs = {i: output_fn(seed, i, n) for i in wanted}
    else:
        with ThreadPoolExecutor(threads, "hc-output") as pool:
            computed = list(pool.map(lambda i: output_fn(seed, i, n), wanted))
        outputs = dict(zip(wanted, computed, strict=True))
    if leaves is not None:
        for i, output in outputs.items():
            if leaf_hash(loop_seed(seed, i), output) != leaves[i]:
                raise EngineError(f"loop {i}: the committed leaf is not the hash of its "
                                  "recomputed output (the mining engine disagrees with the "
                                  "CPU reference; run `hashcloud selftest`)")
    return outputs


def sign_reveal(key: PrivateKey, domain: ChainDomain, challenge_id: str, merkle_root: bytes,
                samples: Sequence[Sample]) -> bytes:
    """The worker's signature over its reveal (SPEC 3 v1.1, `reveal_signing_bytes`)."""
    items = [(s.index, s.leaf, s.output, s.proof) for s in samples]
    return sign(key, reveal_signing_bytes(domain, challenge_id, merkle_root, items))


def sign_commit(key: PrivateKey, challenge_id: str, work: RoundWork,
                payout_address: str | None = None) -> bytes:
    """The worker's `device_signature` over the SPEC 4 commit message (naming
    `payout_address` when it is not the worker's own, SPEC 6 v1.1)."""
    msg = commit_message(
        challenge_id,
        work.seed,
        work.n,
        key.public_key.address,
        work.loops,
        work.compute_time,
        work.merkle_root,
        payout_address,
    )
    return sign(key, msg)


def new_offline_challenge() -> tuple[str, str]:
    """A fresh (challenge_id, seed) pair for an offline round (SPEC 4)."""
    return secrets.token_hex(16), secrets.token_hex(32)


def offline_proof(key: PrivateKey, engine: Engine, challenge_id: str, work: RoundWork) -> ProofFile:
    """A self-audited offline proof: indices derived from the root (SPEC 3), never rewarded.

    Every sample carries its output, so `verify` can audit Fiat-Shamir rows (SPEC 3 v1.1)."""
    s = sample_count(work.loops)
    indices = offline_indices(work.merkle_root, work.loops, s)
    outputs = sample_outputs(work.seed, work.n, indices, leaves=work.leaves)
    return ProofFile(
        version=1,
        challenge_id=challenge_id,
        token=None,
        seed=work.seed,
        n=work.n,
        worker_address=key.public_key.address,
        loops=work.loops,
        compute_time=work.compute_time,
        merkle_root=work.merkle_root,
        samples=make_samples(work.tree, work.leaves, indices, outputs),
        public_key=key.public_key.data,
        device_signature=sign_commit(key, challenge_id, work),
        device=DeviceInfo(name=engine.device, backend=engine.backend),
        offline=True,
    )

"""SPEC 3 detection rate, end to end: dishonest miners against a real node process.

Each round a fresh worker key (so no penalty history raises m) computes a fraction F of
its leaves honestly and commits garbage leaves, with valid Merkle paths, for the rest.
The node's audit recomputes m = 3 of the s revealed samples; the round is caught iff an
audited sample is forged. With X forged among s, SPEC 3 predicts
P_detect = 1 - C(s - X, m) / C(s, m). The observed catch count must match the sum of the
per-round predictions within 4 standard errors (the node's CSPRNG is not seeded, so this
is the stated tolerance: a false failure has probability below 1e-4).
"""

from __future__ import annotations

import math
import random

import pytest

from hashcloud.client.http import NodeClient
from hashcloud.client.round import run_online_round
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import MerkleBuilder
from hashcloud.engine.mining import Engine
from hashcloud.poc.detection import p_detect
from hashcloud.poc.proof import DeviceInfo
from hashcloud.poc.round import RoundWork
from tests.node.conftest import make_node_dir, start_node

ROUNDS = 60
LOOPS = 200  # s = max(10, ceil(0.01 * 200)) = 10 samples, m = 3 audited
HONEST_FRACTION = 0.7
N = 64


def dishonest_work(engine: Engine, seed: str, rng: random.Random) -> RoundWork:
    """Honest leaves for a random 70% of the loops, random bytes for the others."""
    honest = set(rng.sample(range(LOOPS), int(HONEST_FRACTION * LOOPS)))
    leaves = [engine.compute_batch(seed, i, 1)[0] if i in honest else rng.randbytes(32)
              for i in range(LOOPS)]
    builder = MerkleBuilder()
    builder.extend(leaves)
    return RoundWork(seed, N, leaves, 0.05, False, builder.finish())


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_forged_rounds_are_caught_at_the_predicted_rate(tmp_path):
    nd = make_node_dir(tmp_path / "node")
    # Every dishonest worker comes from 127.0.0.1: lift the per-IP failure limit. Whole
    # leaves are recomputed (`full`, SPEC 3's leaf-level P_detect): in `rows` mode the miner
    # would have to reveal outputs of its garbage leaves, which it cannot make up.
    node = start_node(nd.path, tmp_path / "home",
                      extra_args=("--ip-failures", "1000", "--audit-mode", "full"))
    rng = random.Random(20261121)
    predicted: list[float] = []
    caught = 0
    forged_by_round: dict[str, int] = {}
    try:
        with Engine("numpy", n=N) as engine, NodeClient(node.url, retries=3) as client:
            info = client.info()
            for r in range(ROUNDS):
                key = PrivateKey(rng.randrange(1, 2**255))
                state: dict[str, RoundWork] = {}

                def compute(seed: str, state=state) -> RoundWork:
                    state["work"] = dishonest_work(engine, seed, rng)
                    return state["work"]

                outcome = run_online_round(client, key, N, DeviceInfo(name="cpu",
                                                                      backend="numpy"),
                                           compute, info)
                work = state["work"]
                samples = outcome.proof.samples
                forged = sum(1 for smp in samples
                             if smp.leaf != engine.compute_batch(work.seed, smp.index, 1)[0])
                forged_by_round[str(r)] = forged
                s = len(samples)
                predicted.append(p_detect(s, forged, 3))
                if not outcome.accepted:
                    caught += 1
                    assert "leaf" in (outcome.reason or ""), outcome.reason
    finally:
        node.stop()
    expected = sum(predicted)
    sd = math.sqrt(sum(p * (1 - p) for p in predicted))
    print(f"caught {caught} of {ROUNDS}, predicted {expected:.1f} +- {sd:.1f}")
    assert abs(caught - expected) <= 4 * sd + 1, (caught, expected, sd, forged_by_round)
    # And the test has teeth: most rounds had forged samples, many were caught.
    assert sum(1 for x in forged_by_round.values() if x) > ROUNDS // 2
    assert caught > ROUNDS // 4

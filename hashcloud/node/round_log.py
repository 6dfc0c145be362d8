"""What a node operator sees of PoC rounds: one log line per audited round and per-worker
counters with bounded cardinality (SPEC 3; issue 12 "node operators see nothing").

`RoundLog` is told when the node issues a challenge (worker, n), accepts a commitment (loops)
and finishes a reveal (its `validator.REVEAL_OUTCOMES` label). An audited round, accepted or
failed, is logged at INFO as one line:

    round accepted: worker=cpc1... n=1024 loops=812 audited=3/64 challenge=9f2c...
    round failed: worker=cpc1... n=1024 loops=812 challenge=9f2c... reason=...

and counted in `hc_worker_rounds_total{worker, outcome}` and (accepted ones)
`hc_worker_loops_total{worker}`. Cardinality is bounded: the first `top_workers` distinct
workers seen since the node started get their own `worker` label, every later one is counted
as `other`, so a flood of fresh keys cannot grow the metrics without bound. Rounds are
remembered (worker, n, loops) for at most `remember` open challenges; a round the node no
longer remembers (issued before a restart) is logged with `worker=?`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

__all__ = ["OTHER_WORKERS", "RoundLog"]

OTHER_WORKERS = "other"
"""The `worker` label of every worker beyond the first `top_workers`."""

#: Reveal outcomes (`validator.REVEAL_OUTCOMES`) that are audited rounds.
AUDITED = ("accepted", "failed")


@dataclass
class _Round:
    """What the node knows of one open round."""

    worker: str
    n: int
    loops: int | None = None


class RoundLog:
    """Round log lines and per-worker counters (module doc). Thread-safe."""

    def __init__(self, registry: CollectorRegistry, *, top_workers: int = 32,
                 remember: int = 65_536) -> None:
        """Register the counters on `registry`."""
        self.top_workers = top_workers
        self.remember = remember
        self._lock = threading.Lock()
        self._rounds: OrderedDict[str, _Round] = OrderedDict()
        self._labelled: set[str] = set()
        self.rounds = Counter("hc_worker_rounds", "Audited rounds by worker (first workers "
                              "seen; the rest as 'other') and outcome", ["worker", "outcome"],
                              registry=registry)
        self.loops = Counter("hc_worker_loops", "Audited loops of accepted rounds by worker",
                             ["worker"], registry=registry)

    def label(self, worker: str) -> str:
        """`worker`'s metric label: itself for the first `top_workers`, else `other`."""
        with self._lock:
            if worker in self._labelled:
                return worker
            if len(self._labelled) < self.top_workers:
                self._labelled.add(worker)
                return worker
            return OTHER_WORKERS

    def issued(self, challenge_id: str, worker: str, n: int) -> None:
        """A challenge for `worker` at size `n` was issued."""
        with self._lock:
            self._rounds[challenge_id] = _Round(worker, n)
            while len(self._rounds) > self.remember:
                self._rounds.popitem(last=False)

    def committed(self, challenge_id: str, loops: int) -> None:
        """The round's commitment claims `loops` loops."""
        with self._lock:
            found = self._rounds.get(challenge_id)
            if found is not None:
                found.loops = loops

    def finished(self, challenge_id: str, outcome: str, *, audited: str = "",
                 reason: str = "") -> None:
        """A reveal ended with `outcome`: log and count it if it was an audited round."""
        if outcome not in AUDITED:
            return
        with self._lock:
            found = self._rounds.pop(challenge_id, None)
        worker = found.worker if found else "?"
        n = found.n if found else "?"
        loops = found.loops if found and found.loops is not None else "?"
        extra = f" audited={audited}" if audited else ""
        tail = f" reason={reason}" if reason else ""
        log.info("round %s: worker=%s n=%s loops=%s%s challenge=%s%s", outcome, worker, n,
                 loops, extra, challenge_id, tail)
        if found is None:
            return
        label = self.label(found.worker)
        self.rounds.labels(label, outcome).inc()
        if outcome == "accepted" and found.loops is not None:
            self.loops.labels(label).inc(found.loops)

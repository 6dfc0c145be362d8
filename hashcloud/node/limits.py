"""Abuse bounds of the PoC validator: rate limits, replay guard, open and audit bounds (SPEC 3).

SPEC 3 lists "rate limits" among the sanity checks before any recomputation; these are the
node's. Everything but `AuditGate` and `WriteLimits` (own locks) is pure bookkeeping: the
caller passes `now` (unix seconds) and holds its own lock (`PocValidator` guards all of it
with one lock).

- `SlidingWindow`: at most `limit` events per key in any `window` seconds. One class serves
  the per-address and per-IP challenge-request limits (60 s windows) and the failed audits
  per client IP (one hour: fresh addresses are free, IPs are not).
- `RequestLimits`: those three windows plus the replay guard of signed challenge requests,
  raising RateLimited / RequestRefused with the message and `retry_after` the client sees.
- `check_open_bound`: the bound on a worker's open challenges.
- `WriteLimits`: per-IP windows of the other write routes (transactions, reveals), checked
  at the HTTP edge (`node.edge`) with its own lock.
- `AuditGate`: the audit recomputation is the node's only expensive step, so at most `slots`
  audits run at once and at most `queue` more wait; beyond that a reveal is refused with
  `AuditQueueFull` (a RateLimited, 429) and its challenge stays committed, so an honest miner
  simply retries. Known-good workers go first (the priority rule, see `AuditGate`).

Failed audits count per client address at reveal time too (SPEC 3 v1.1 "Abuse bounds"):
`RequestLimits.check_ip_failures` runs before a challenge is issued and before a reveal is
audited, and `record_failure` charges every address involved in a failed round.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from itertools import repeat

from hashcloud.errors import InvalidTransaction, RateLimited, RequestRefused

__all__ = [
    "FAILURE_WINDOW",
    "RATE_WINDOW",
    "AuditGate",
    "AuditQueueFull",
    "RequestLimits",
    "SlidingWindow",
    "WriteLimits",
    "check_open_bound",
]

#: Length (seconds) of the challenge-request rate-limit windows.
RATE_WINDOW = 60.0
#: Length (seconds) of the failed-audits-per-IP window.
FAILURE_WINDOW = 3600.0


class SlidingWindow:
    """At most `limit` events per key in any `window` seconds (sliding, exact).

    Keeps the times of each key's events inside the window; an event at `t` stops counting
    once `now >= t + window`. Not thread-safe: the caller holds its lock.
    """

    def __init__(self, limit: int, window: float) -> None:
        """Track up to `limit` events per key over `window` seconds."""
        if limit < 1 or window <= 0:
            raise ValueError("a sliding window needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._times: dict[Hashable, deque[float]] = {}

    def retry_after(self, key: Hashable, now: float, count: int = 1) -> float | None:
        """Seconds until `count` more events of `key` fit under the limit, or None if they fit
        now (infinity if `count` exceeds the limit: they never fit)."""
        if count > self.limit:
            return math.inf
        times = self._times.get(key)
        if times is None:
            return None
        self._prune(times, now)
        if len(times) + count <= self.limit:
            return None
        # The event that must leave the window for `count` more to fit.
        return times[len(times) + count - self.limit - 1] + self.window - now

    def record(self, key: Hashable, now: float, count: int = 1) -> None:
        """Count `count` events of `key` at `now` (whether or not they fit: failures always
        count)."""
        times = self._times.setdefault(key, deque())
        if count == 1:
            times.append(now)
        else:
            times.extend(repeat(now, count))

    def take(self, key: Hashable, now: float, count: int = 1) -> float | None:
        """Count `count` events if they all fit and return None; else return `retry_after`
        (none counted)."""
        retry = self.retry_after(key, now, count)
        if retry is None:
            self.record(key, now, count)
        return retry

    def prune(self, now: float) -> None:
        """Forget events older than the window and keys left without any (bounds memory)."""
        for key in list(self._times):
            times = self._times[key]
            self._prune(times, now)
            if not times:
                del self._times[key]

    def __len__(self) -> int:
        """Number of keys with events still tracked."""
        return len(self._times)

    def _prune(self, times: deque[float], now: float) -> None:
        """Drop the events of one key that left the window."""
        while times and times[0] <= now - self.window:
            times.popleft()


class RequestLimits:
    """The per-request bounds of challenge issuing (SPEC 3 "rate limits"). Caller-locked.

    `take_ip` runs first (before any signature work, so a flood is cheap to refuse), then
    `check_ip_failures`; after the request's signature: `check_fresh` (replay guard),
    `take_address`. `record_failure` counts a failed audit against the client IP and
    `remember_request` marks a signed request as used once it got a challenge.
    """

    def __init__(self, per_address: int, per_ip: int, ip_failures: int) -> None:
        """Limits per minute per address and per IP; failed audits per IP and hour."""
        self.per_address = SlidingWindow(per_address, RATE_WINDOW)
        self.per_ip = SlidingWindow(per_ip, RATE_WINDOW)
        self.ip_failures = SlidingWindow(ip_failures, FAILURE_WINDOW)
        # (address, request_time_ms) of requests that got a challenge -> unix time to forget.
        self._used: dict[tuple[str, int], float] = {}

    def take_ip(self, client_ip: str, now: float) -> None:
        """Count a challenge request from `client_ip` or raise RateLimited."""
        _take(self.per_ip, client_ip, now, f"IP {client_ip}")

    def take_address(self, address: str, now: float) -> None:
        """Count a challenge request of worker `address` or raise RateLimited."""
        _take(self.per_address, address, now, f"address {address}")

    def check_ip_failures(self, client_ip: str, now: float) -> None:
        """Raise RateLimited while `client_ip` has too many failed audits in the last hour."""
        retry = self.ip_failures.retry_after(client_ip, now)
        if retry is not None:
            raise RateLimited(f"too many failed audits from IP {client_ip}; retry in "
                              f"{math.ceil(retry)} s", retry)

    def record_failure(self, client_ips: str | tuple[str, ...], now: float) -> None:
        """Count one failed audit against each distinct address of `client_ips` (the one that
        asked for the challenge and the one that revealed it, SPEC 3 v1.1)."""
        ips = (client_ips,) if isinstance(client_ips, str) else client_ips
        for ip in dict.fromkeys(ips):  # distinct, in order: one failure is one failure
            self.ip_failures.record(ip, now)

    def check_fresh(self, address: str, request_time_ms: int) -> None:
        """Raise RequestRefused if this signed request already got a challenge (a replay)."""
        if (address, request_time_ms) in self._used:
            raise RequestRefused("challenge request already used; sign a fresh request")

    def remember_request(self, address: str, request_time_ms: int, forget_at: float) -> None:
        """Mark a request as used until `forget_at` (when the skew check refuses it anyway)."""
        self._used[(address, request_time_ms)] = forget_at

    def prune(self, now: float) -> None:
        """Drop stale window entries and used requests past their forget time."""
        for window in (self.per_address, self.per_ip, self.ip_failures):
            window.prune(now)
        for key in [k for k, t in self._used.items() if t <= now]:
            del self._used[key]


def _take(window: SlidingWindow, key: str, now: float, what: str) -> None:
    """`window.take` or RateLimited saying which limit and when to retry."""
    retry = window.take(key, now)
    if retry is not None:
        raise RateLimited(
            f"rate limit of {window.limit} requests per minute for {what} exceeded; "
            f"retry in {math.ceil(retry)} s",
            retry,
        )


def check_open_bound(open_now: int, limit: int, next_expiry: float, now: float) -> None:
    """Raise RateLimited if a worker already holds `limit` open challenges.

    `next_expiry` (unix seconds) is when its first open challenge expires: the retry hint.
    """
    if open_now >= limit:
        retry = next_expiry - now
        raise RateLimited(
            f"too many open challenges ({open_now} of {limit}); "
            f"finish one or retry in {math.ceil(retry)} s",
            retry,
        )


class AuditQueueFull(RateLimited):
    """The audit queue has no place for this reveal (429): not the miner's fault, the
    challenge stays committed and may be revealed again after `retry_after` seconds."""


class AuditGate:
    """Bounded concurrency of the audit recomputation, known-good workers first.

    At most `slots` audits run at once and at most `queue` more wait. The priority rule
    (SPEC 3 v1.1 "Abuse bounds": a flood of reveals from fresh keys must not starve the
    workers the node already knows):

    - *admission*: `reserved` of the `queue` places are kept for trusted reveals: an unknown
      reveal is admitted only while fewer than `slots + queue - reserved` audits are
      admitted, a trusted one while fewer than `slots + queue`; beyond, AuditQueueFull;
    - *order*: when a slot frees, a waiting trusted audit takes it before any waiting unknown
      one (no order is promised within a class).

    *Trusted* is the caller's call; the validator's rule: the worker has at least
    `AuditPolicy.trusted_after` accepted rounds (one cheap round must not buy priority) and
    no recent failed audit (`AuditPolicy.recent_failures`). Thread-safe:
    `admit()` takes a place or raises; every admitted audit calls `release()` exactly once;
    `slot(trusted)` is held around the recomputation itself.
    """

    def __init__(self, slots: int, queue: int, reserved: int = 0) -> None:
        """At most `slots` recomputations at once and `queue` admitted audits waiting,
        `reserved` of those places for trusted reveals."""
        if slots < 1 or queue < 0 or not 0 <= reserved <= queue:
            raise ValueError("an audit gate needs slots >= 1 and 0 <= reserved <= queue")
        self.slots = slots
        self.queue = queue
        self.reserved = reserved
        self._cond = threading.Condition(threading.Lock())
        self._pending = 0  # admitted, not yet released
        self._running = 0  # holding a slot
        self._waiting = 0  # waiting for a slot
        self._trusted_waiting = 0  # trusted audits among them

    @property
    def pending(self) -> int:
        """Audits admitted and not yet released (running or waiting)."""
        with self._cond:
            return self._pending

    @property
    def waiting(self) -> int:
        """Audits blocked in `slot()` until a slot frees."""
        with self._cond:
            return self._waiting

    def admit(self, trusted: bool = False) -> None:
        """Take a place in the bounded audit queue or raise AuditQueueFull (429)."""
        limit = self.slots + self.queue - (0 if trusted else self.reserved)
        with self._cond:
            if self._pending >= limit:
                raise AuditQueueFull(
                    "the node's audit queue is full; retry the reveal shortly", 1.0)
            self._pending += 1

    def release(self) -> None:
        """Give back the place taken by `admit`."""
        with self._cond:
            self._pending -= 1

    @contextmanager
    def slot(self, trusted: bool = False) -> Iterator[None]:
        """Hold one of the `slots` recomputation slots, waiting while all are busy (or, for
        an unknown worker, while a trusted audit waits for one)."""
        with self._cond:
            self._waiting += 1
            self._trusted_waiting += trusted
            try:
                while self._running >= self.slots or (not trusted and self._trusted_waiting):
                    self._cond.wait()
                self._running += 1
            finally:
                self._waiting -= 1
                if trusted:
                    self._trusted_waiting -= 1
                    self._cond.notify_all()  # unknown waiters may be free to go now
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()


class WriteLimits:
    """Per-client-address rate limits of the write routes beside challenge issuing
    (issue 11: transactions and reveals), `RATE_WINDOW` windows. Thread-safe.

    Checked at the HTTP edge before the body is read (`node.edge.WriteRateLimit`), so a
    flood of transactions or reveals costs the node no parsing and no signature check.

    The `transactions` window counts transactions, not requests: a single submission takes
    one, a batch (`POST /v1/transactions/batch`, up to `api.models.MAX_BATCH` signature
    checks) takes its transaction count, charged by the batch route once it has the body
    (`take_transactions`). Before the body is read, a batch request takes one place in the
    `batches` window (same limit: it bounds the bodies parsed) and is refused while the
    transactions window has no room left for even one transaction."""

    def __init__(self, transactions_per_minute: int, reveals_per_minute: int) -> None:
        """At most that many transactions (reveals) per client address in any minute."""
        self.windows = {"transactions": SlidingWindow(transactions_per_minute, RATE_WINDOW),
                        "batches": SlidingWindow(transactions_per_minute, RATE_WINDOW),
                        "reveals": SlidingWindow(reveals_per_minute, RATE_WINDOW)}
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def take(self, route: str, client_ip: str, now: float) -> None:
        """Count one request of `client_ip` to `route` ("transactions", "batches" or
        "reveals") or raise RateLimited with the time to retry. A batch request needs room
        for one transaction as well (its count is charged by `take_transactions`)."""
        window = self.windows[route]
        with self._lock:
            self._prune(now)
            if route == "batches":
                self._check_room(client_ip, now, 1)
            _take(window, client_ip, now, f"{route} from IP {client_ip}")

    def take_transactions(self, client_ip: str, count: int, now: float) -> None:
        """Count a batch's `count` transactions of `client_ip`, all or none: RateLimited
        (429, retry when all of them fit) while the window lacks room; InvalidTransaction
        (400, final) if `count` is more than the window ever holds."""
        window = self.windows["transactions"]
        if count > window.limit:
            raise InvalidTransaction(
                f"a batch of {count} transactions is more than this node admits from one IP "
                f"in a minute ({window.limit}); send smaller batches")
        with self._lock:
            self._prune(now)
            self._check_room(client_ip, now, count)
            window.record(client_ip, now, count)

    def _check_room(self, client_ip: str, now: float, count: int) -> None:
        """RateLimited unless `count` more transactions of `client_ip` fit now (lock held)."""
        window = self.windows["transactions"]
        retry = window.retry_after(client_ip, now, count)
        if retry is not None:
            raise RateLimited(
                f"rate limit of {window.limit} transactions per minute from IP {client_ip} "
                f"exceeded (room needed for {count}); retry in {math.ceil(retry)} s", retry)

    def _prune(self, now: float) -> None:
        """Forget departed clients once per window (lock held)."""
        if now >= self._next_prune:
            for w in self.windows.values():
                w.prune(now)
            self._next_prune = now + RATE_WINDOW

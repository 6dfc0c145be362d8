"""Live mining display: elapsed/remaining, loops, loops/s, effective GFLOP/s over windows.

Miners expect hashrate-style figures over 10 s / 60 s / 15 min windows; `RateMeter` keeps
(time, loops) points and answers the rate over any window. Rendering is rich-only.
"""

from __future__ import annotations

import os
import time
from collections import deque

from rich.console import Console
from rich.table import Table

PIPE_WIDTH = 10_000
"""Console width when the output is not a terminal: wide enough that no line a command prints
(an address, a proof path, a table row) is ever wrapped, so `hashcloud balance ADDR | awk`
sees whole lines. An explicit `$COLUMNS` still wins."""


def fit_width(console: Console) -> None:
    """Stop `console` wrapping at rich's default 80 columns when it writes to a pipe or file.

    rich sizes a console that is not a terminal from `$COLUMNS` or, failing that, 80 columns
    (or the size of whichever std stream is a terminal), which cuts long lines of piped output.
    A terminal keeps its own width; so does an explicit `$COLUMNS`."""
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        console.width = None  # type: ignore[assignment]  # back to the terminal's own size
    else:
        console.width = PIPE_WIDTH


class RateMeter:
    """Loops/s over sliding windows, from cumulative loop counts (points kept <= 15 min)."""

    def __init__(self, horizon: float = 900.0) -> None:
        self.horizon = horizon
        self.points: deque[tuple[float, int]] = deque()
        self.total = 0

    def add(self, loops: int, now: float | None = None) -> None:
        """Record `loops` more loops done at `now`."""
        now = time.monotonic() if now is None else now
        self.total += loops
        self.points.append((now, self.total))
        while self.points and now - self.points[0][0] > self.horizon:
            self.points.popleft()

    def rate(self, window: float, now: float | None = None) -> float:
        """Loops per second over the last `window` seconds (0 without two points)."""
        now = time.monotonic() if now is None else now
        inside = [p for p in self.points if now - p[0] <= window]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def gflops(loops_per_s: float, n: int) -> float:
    """Effective GFLOP/s of `loops_per_s` n x n GEMMs (2 n^3 FLOP each)."""
    return loops_per_s * 2 * n**3 / 1e9


def round_table(
    *, phase: str, elapsed: float, duration: float, loops: int, n: int, meter: RateMeter,
    backend: str, device: str, accepted: int = 0, rejected: int = 0, rewards: int = 0,
) -> Table:
    """The live panel shown while a round runs."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold cyan")
    t.add_column()
    rate10, rate60, rate900 = meter.rate(10), meter.rate(60), meter.rate(900)
    overall = loops / elapsed if elapsed > 0 else 0.0
    t.add_row("phase", phase)
    t.add_row("device", f"{device} ({backend})")
    t.add_row("elapsed", f"{elapsed:6.1f} s  (remaining {max(0.0, duration - elapsed):5.1f} s)")
    t.add_row("loops", f"{loops}  (n = {n})")
    t.add_row("loops/s", f"{overall:,.1f}  [dim]10s {rate10:,.1f} | 60s {rate60:,.1f} | "
              f"15m {rate900:,.1f}[/]")
    t.add_row("GFLOP/s", f"{gflops(overall, n):,.2f}  [dim]10s {gflops(rate10, n):,.2f}[/]")
    if accepted or rejected or rewards:
        t.add_row("rounds", f"[green]{accepted} accepted[/] / [red]{rejected} rejected[/]")
        t.add_row("rewards", f"{rewards:,}")
    return t


def speed_line(phase: str, elapsed: float, loops: int, n: int, meter: RateMeter) -> str:
    """One plain progress line (no markup, no redraw) for output that is not a terminal:
    `round 3: 10.0 s, 412 loops, 41.2 loops/s (10s 40.9), 21.61 GFLOP/s, n=1024`."""
    overall = loops / elapsed if elapsed > 0 else 0.0
    return (f"{phase}: {elapsed:.1f} s, {loops} loops, {overall:,.1f} loops/s "
            f"(10s {meter.rate(10):,.1f}), {gflops(overall, n):,.2f} GFLOP/s, n={n}")

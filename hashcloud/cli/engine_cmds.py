"""`hashcloud selftest` and `hashcloud bench` (engine checks for GPU owners).

The engine (NumPy, and CuPy where present) is imported inside each command, so that building
the app for another command or for `--help` does not load it.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hashcloud.cli.common import check_engine_options, cli_command, out, print_json
from hashcloud.params import DEFAULT_N


@cli_command
def selftest(
    n: Annotated[int, typer.Option(help="Matrix size for the loops checked.")] = 64,
    loops: Annotated[int, typer.Option(min=1, help="Loops per backend.")] = 4,
    backend: Annotated[str, typer.Option(
        help="auto (every usable backend) | numpy | cupy (fails if it cannot run)")] = "auto",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run a few loops on the backends; compare with NumPy and the golden vectors."""
    from hashcloud.engine.selftest import run_selftest

    check_engine_options(n, backend)
    results = run_selftest(n=n, loops=loops, backend=backend)
    rows = [{"backend": r.backend, "device": r.device, "reason": r.reason, "ok": r.ok,
             "skipped": r.skipped, "checks": r.checks, "failures": list(r.failures),
             "seconds": r.seconds}
            for r in results]
    ok = bool(rows) and all(r["ok"] for r in rows)
    if json_:
        print_json({"ok": ok, "backends": rows})
    else:
        table = Table("backend", "device", "checks", "result", "details")
        for r in rows:
            result = ("[yellow]skipped[/]" if r["skipped"]
                      else "[green]ok[/]" if r["ok"] else "[red]FAIL[/]")
            details = r["reason"] if r["skipped"] or r["ok"] else "; ".join(r["failures"])
            table.add_row(r["backend"], escape(r["device"]), str(r["checks"]), result,
                          escape(details))
        out.print(table)
    if not ok:
        raise typer.Exit(1)


@cli_command
def bench(
    n: Annotated[int, typer.Option(help="Matrix size.")] = DEFAULT_N,
    seconds: Annotated[float, typer.Option(min=0.5, max=3600,
                                           help="Total seconds (mining and raw GEMM).")] = 5.0,
    backend: Annotated[str, typer.Option(help="auto | numpy | cupy")] = "auto",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Loops/s, effective GFLOP/s and the ratio to a raw GEMM of the same size."""
    from hashcloud.engine.bench import bench as run_bench

    check_engine_options(n, backend)
    result = run_bench(backend=backend, n=n, seconds=seconds)
    if json_:
        print_json(result)
        return
    table = Table("metric", "value")
    for k, v in result.items():
        table.add_row(k, f"{v:,.3f}" if isinstance(v, float) else str(v))
    out.print(table)

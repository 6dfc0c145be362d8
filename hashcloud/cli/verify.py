"""`hashcloud verify PROOF [--m K | --all] [--rows K | --full] [--json]` (SPEC 7): check a
proof file alone. Samples that carry their output get a row audit (SPEC 3 v1.1), the others a
whole-leaf recomputation; `--full` recomputes every chosen sample whole.

Exit 0 valid, 1 invalid, 2 unreadable or not a proof; never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from hashcloud.cli.common import EXIT_FAIL, EXIT_USAGE, err, out, print_json
from hashcloud.errors import HashCloudError, InputError, ProofError

if TYPE_CHECKING:  # the proof modules load pydantic and NumPy: only when a proof is checked
    from hashcloud.poc.verify import VerificationReport


def report_json(path: Path, report: VerificationReport, loops: int | None) -> dict:
    """The SPEC 7 JSON shape `{"valid", "errors", ...}` of a report."""
    return {
        "valid": report.valid, "errors": report.errors, "proof": str(path), "loops": loops,
        "samples": report.samples, "recomputed": report.recomputed,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks],
        "p_detect": {"one_forged": report.p_detect_one_forged,
                     "ten_percent_forged": report.p_detect_10pct_forged},
    }


def verify(
    proof: Annotated[Path, typer.Argument(help="Proof file (JSON) to check.")],
    m: Annotated[int | None, typer.Option("--m", min=0, help="Recompute K sample leaves.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Recompute every sample (default).")] = False,
    rows: Annotated[int | None, typer.Option(
        "--rows", min=1, help="Rows recomputed per sample that carries its output "
                             "(default 16; SPEC 3 v1.1 row audit).")] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Recompute whole leaves, even of samples that carry outputs.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check a proof file: schema, signatures, inclusion proofs and recomputed leaves."""
    from hashcloud.poc.proof import load_proof
    from hashcloud.poc.verify import verify_proof

    if m is not None and all_:
        raise _bad(json_, proof, "use either --m K or --all, not both", EXIT_USAGE)
    if rows is not None and full:
        raise _bad(json_, proof, "use either --rows K or --full, not both", EXIT_USAGE)
    try:
        pf = load_proof(proof)
        report = verify_proof(pf, None if all_ else m, rows=rows, full=full)
    except InputError as exc:
        raise _bad(json_, proof, str(exc), EXIT_USAGE) from None
    except ProofError as exc:
        raise _bad(json_, proof, str(exc), EXIT_FAIL) from None
    except HashCloudError as exc:
        raise _bad(json_, proof, str(exc), EXIT_FAIL) from None
    if json_:
        print_json(report_json(proof, report, pf.loops))
    else:
        table = Table(title=f"verify {proof}", show_header=True)
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail")
        for c in report.checks:
            table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail)
        out.print(table)
        out.print(f"{pf.loops} loops at n={pf.n}, {report.samples} samples, "
                  f"{len(report.recomputed)} recomputed: P_detect = "
                  f"{report.p_detect_one_forged:.3f} if one sample is forged, "
                  f"{report.p_detect_10pct_forged:.3f} if 10% are")
        out.print("[bold green]VALID[/]" if report.valid else "[bold red]INVALID[/]")
    if not report.valid:
        if not json_:
            for e in report.errors:
                err.print(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_FAIL)


def _bad(json_: bool, path: Path, message: str, code: int) -> typer.Exit:
    if json_:
        print_json({"valid": False, "errors": [message], "proof": str(path)})
    else:
        err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)

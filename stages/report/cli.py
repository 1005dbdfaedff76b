"""``qdllm report``: paper-style tables and figures over every finished student run (trains nothing)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Paper-style tables and figures over all student runs.", invoke_without_command=True)


@app.callback()
def report(
    ctx: typer.Context,
    paper_teachers: bool = typer.Option(True, "--paper-teachers/--no-paper-teachers",
                                        help="Count the LoRA parameters of the paper's five teachers for Table 3 "
                                             "(runs `qdllm teacher params`, about 7 s each)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a report over the same runs exists."),
) -> None:
    """Write cache/reports/<key>/report.md and its figures; print its path (reused when nothing changed)."""
    if ctx.invoked_subcommand is not None:
        return
    from stages.report.build import build_report

    path = build_report(paper_teachers=paper_teachers, force=force)
    print(path, flush=True)  # last line of output: where the report is

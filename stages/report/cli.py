"""``qdllm report``: placeholder until the report stage lands."""

from __future__ import annotations

import typer

from pipeline.errors import QdllmError

app = typer.Typer(help="Paper-style tables and figures over all student runs.", invoke_without_command=True)


@app.callback()
def report(ctx: typer.Context) -> None:
    raise QdllmError("The report stage has not landed yet in this version of qd-llm.")

"""``qdllm student``: placeholder until the student stage lands."""

from __future__ import annotations

import typer

from pipeline.errors import QdllmError

app = typer.Typer(help="Stage two: train the quantum student from a teacher cache only.", invoke_without_command=True)


@app.callback()
def student(ctx: typer.Context) -> None:
    raise QdllmError("The student stage has not landed yet in this version of qd-llm.")

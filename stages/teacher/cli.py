"""``qdllm teacher``: placeholder until the teacher stage lands."""

from __future__ import annotations

import typer

from pipeline.errors import QdllmError

app = typer.Typer(help="Stage one: LoRA fine-tune an LLM teacher and write the teacher-logit cache.", invoke_without_command=True)


@app.callback()
def teacher(ctx: typer.Context) -> None:
    raise QdllmError("The teacher stage has not landed yet in this version of qd-llm.")

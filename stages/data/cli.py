"""``qdllm data``: placeholder until the data stage lands."""

from __future__ import annotations

import typer

from pipeline.errors import QdllmError

app = typer.Typer(help="Build a dataset: data/<task>/<key>/{train,val,test}.parquet.", invoke_without_command=True)


@app.callback()
def data(ctx: typer.Context) -> None:
    raise QdllmError("The data stage has not landed yet in this version of qd-llm.")

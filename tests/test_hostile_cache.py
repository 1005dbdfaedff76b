"""Hostile input to ``qdllm cache`` and the cache readers: one sentence, a non-zero exit, no traceback, nothing written.

Each test runs the CLI in a subprocess where a user would (``helpers.run_cli``); the numbers in the comments are
the cases of the hostile-user report these tests pin.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from helpers import ROOT, fails, run_cli, write_synthetic_cache
from pipeline import remote as R

KEY = "aaaa000011112222"
OTHER = "bbbb000011112222"


@pytest.fixture
def root(tmp_path) -> Path:
    """The cache root of the test (QDLLM_CACHE_DIR) holding one good teacher cache of task ``good``."""
    write_synthetic_cache(tmp_path / "cache" / "teacher" / KEY, n=30, dim=4, key=KEY * 2, task="good")
    return tmp_path / "cache"


def tree(path: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and directory under ``path``: what "nothing was written" compares."""
    if not path.exists():
        return {}
    return {p.relative_to(path).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))}



def tar_edit(src: Path, dst: Path, edit) -> None:
    """Copy a tar member by member through ``edit(name, data) -> [(name, data), ...]``."""
    with tarfile.open(src) as t_in, tarfile.open(dst, "w") as t_out:
        for m in t_in.getmembers():
            for name, data in edit(m.name, t_in.extractfile(m).read()):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t_out.addfile(info, io.BytesIO(data))


def export(root: Path, tmp_path: Path, name: str = "ok.tar") -> Path:
    return R.export_tar(tmp_path / name, [("teacher", KEY)], cache_root=root)


# ------------------------------------------------------------------ 5, 15: manifests are checked where read

def _set(field, value):
    def edit(m):
        m[field] = value
        return m
    return edit


def _drop(field):
    def edit(m):
        m.pop(field)
        return m
    return edit


def _file(name):
    def edit(m):
        m["files"]["val"]["file"] = name
        return m
    return edit


BAD_MANIFESTS = {  # how the manifest is damaged -> what the one sentence must name
    "a JSON list": (lambda m: [], "holds a JSON array"),
    "a JSON string": (lambda m: "x", "holds a JSON string"),
    "no class_names": (_drop("class_names"), "class_names is missing"),
    "class_names not a list": (_set("class_names", 3), "class_names is missing or not a list"),
    "no files": (_drop("files"), "files is missing"),
    "files a list": (_set("files", []), "files is missing or not an object"),
    "no key": (_drop("key"), "key is missing"),
    "embedding_dim abc": (_set("embedding_dim", "abc"), "embedding_dim is 'abc'"),
    "embedding_dim zero": (_set("embedding_dim", 0), "embedding_dim is 0"),
    "file in a sibling cache": (_file("../base/val.parquet"), "'../base/val.parquet' is an unsafe file name"),
    "absolute file": (_file("/etc/passwd"), "'/etc/passwd' is an unsafe file name"),
    "file in a subdirectory": (_file("sub/val.parquet"), "'sub/val.parquet' is an unsafe file name"),
    "rows not a count": (lambda m: {**m, "files": {**m["files"], "val": {**m["files"]["val"], "rows": "12"}}},
                         "files.val.rows is '12'"),
    "adapter outside": (_set("adapter", "../other"), "adapter '../other' is an unsafe directory name"),
}


def damage(cache: Path, how: str) -> Path:
    """Damage ``cache``'s manifest as BAD_MANIFESTS[how] says; returns the manifest path."""
    path = cache / "manifest.json"
    manifest = BAD_MANIFESTS[how][0](json.loads(path.read_text()))
    path.write_text(json.dumps(manifest))
    if how == "file in a sibling cache":  # a real file there, so only the name is wrong
        (cache.parent / "base").mkdir(exist_ok=True)
        shutil.copy(cache / "val.parquet", cache.parent / "base" / "val.parquet")
    return path


@pytest.mark.parametrize("how", BAD_MANIFESTS)
def test_verify_rejects_a_bad_manifest_in_one_sentence(root, how):  # 5, 15
    manifest = damage(root / "teacher" / KEY, how)
    before = tree(root)
    for args in ((), (KEY,), (str(root / "teacher" / KEY),)):
        fails(run_cli("cache", "verify", *args), str(manifest), "not a valid teacher-cache manifest",
              BAD_MANIFESTS[how][1])
    assert tree(root) == before


@pytest.mark.parametrize("how", ["a JSON list", "no class_names", "embedding_dim abc", "file in a sibling cache"])
def test_ls_lists_the_good_caches_and_names_a_bad_one(root, how):  # 5
    write_synthetic_cache(root / "teacher" / OTHER, n=30, dim=4, key=OTHER * 2, task="other")
    manifest = damage(root / "teacher" / OTHER, how)
    proc = run_cli("cache", "ls", env={"COLUMNS": "250"})
    assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert KEY in proc.stdout and OTHER not in proc.stdout
    err = " ".join(proc.stderr.split())
    assert "warning: skipped:" in err and str(manifest) in err and BAD_MANIFESTS[how][1] in err


@pytest.mark.parametrize("how", BAD_MANIFESTS)
def test_teacher_selection_skips_a_bad_cache_with_a_warning(root, how, caplog):  # 5
    from stages.student.run import teacher_caches

    write_synthetic_cache(root / "teacher" / OTHER, n=30, dim=4, key=OTHER * 2, task="good")
    manifest = damage(root / "teacher" / OTHER, how)
    with caplog.at_level(logging.WARNING):
        assert teacher_caches(task="good") == [root / "teacher" / KEY]
        assert teacher_caches() == [root / "teacher" / KEY]
    assert str(manifest) in caplog.text and BAD_MANIFESTS[how][1] in caplog.text


def test_student_trains_for_a_task_although_another_cache_is_bad(root):  # 5
    write_synthetic_cache(root / "teacher" / OTHER, n=30, dim=4, key=OTHER * 2, task="other")
    manifest = damage(root / "teacher" / OTHER, "a JSON list")
    proc = run_cli("student", "--task", "good", "--student-model", "logreg", "--no-classical", "--no-ce-baseline",
                   "--epochs", "1", "--seeds", "0", "--jobs", "1", env={"COLUMNS": "250"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "Skipped a damaged teacher cache" in err and str(manifest) in err
    assert len(R.local_keys("student", root)) == 1
    # the bad cache named by key is one sentence
    fails(run_cli("student", "--teacher-key", OTHER), str(manifest), "holds a JSON array")


@pytest.mark.parametrize("how", ["a JSON list", "no files", "embedding_dim abc", "file in a sibling cache"])
def test_import_rejects_a_bad_manifest(root, tmp_path, how):  # 5, 15
    def edit(name, data):
        if name.endswith("manifest.json"):
            data = json.dumps(BAD_MANIFESTS[how][0](json.loads(data))).encode()
        return [(name, data)]

    bad = tmp_path / "bad.tar"
    tar_edit(export(root, tmp_path), bad, edit)
    other = tmp_path / "other"
    fails(run_cli("cache", "import", str(bad), env={"QDLLM_CACHE_DIR": str(other)}),
          f"{bad}: teacher/{KEY}/manifest.json is not a valid teacher-cache manifest", BAD_MANIFESTS[how][1])
    assert tree(other) == {}


@pytest.mark.parametrize("how", ["a JSON list", "no class_names", "embedding_dim abc", "absolute file"])
def test_pull_rejects_a_bad_remote_manifest(root, tmp_path, how):  # 5, 15
    remote = tmp_path / "shared"
    R.push("teacher", KEY, str(remote), cache_root=root)
    damage(remote / "teacher" / KEY, how)
    other = tmp_path / "other"
    for args in ((), ("--key", KEY)):
        fails(run_cli("cache", "pull", "--remote", str(remote), *args, env={"QDLLM_CACHE_DIR": str(other)}),
              f"{remote}: teacher/{KEY}/manifest.json is not a valid teacher-cache manifest", BAD_MANIFESTS[how][1])
    assert tree(other) == {}


@pytest.mark.parametrize("how", ["a JSON list", "embedding_dim abc"])
def test_push_and_export_reject_a_bad_local_manifest(root, tmp_path, how):  # 5
    manifest = damage(root / "teacher" / KEY, how)
    remote = tmp_path / "shared"
    remote.mkdir()
    fails(run_cli("cache", "push", "--remote", str(remote)), str(manifest), BAD_MANIFESTS[how][1])
    fails(run_cli("cache", "export", "--to", str(tmp_path / "out" / "x.tar")), str(manifest))
    assert tree(remote) == {}


# ------------------------------------------------------------------ 6, 7: export destinations

def _unprivileged() -> list[str] | None:
    """A command prefix under which a read-only directory refuses writes (root without DAC override)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return None
    drop = "-dac_override,-dac_read_search"
    prefix = [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_export_into_a_read_only_directory_is_one_error(root, tmp_path):  # 6
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("cannot drop root's permission override here")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "stages.cli", "cache", "export", "--to",
                               str(ro / "x.tar")], capture_output=True, text=True, cwd=ROOT, timeout=120)
        message = fails(proc, f"Cannot write {ro / 'x.tar'}", "permission denied")
        assert R.TMP_MARK not in message
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("where", ["missing directory", "a file as directory", "a directory"])
def test_export_to_a_bad_destination_is_one_sentence(root, tmp_path, where):  # 7
    before = tree(tmp_path / "dest")
    if where == "missing directory":
        to, words = tmp_path / "no" / "such" / "x.tar", ("no such file or directory",)
    elif where == "a file as directory":
        (tmp_path / "file").write_text("x")
        to, words = tmp_path / "file" / "x.tar", ("not a directory",)
    else:
        (tmp_path / "dest").mkdir()
        before = tree(tmp_path / "dest")
        to, words = tmp_path / "dest", ("is a directory", "caches.tar")
    fails(run_cli("cache", "export", "--to", str(to)), str(to), *words)
    assert not (tmp_path / "no").exists() and tree(tmp_path / "dest") == before
    assert not [p for p in tmp_path.rglob(f"*{R.TMP_MARK}*")]


# ------------------------------------------------------------------ 9, 13, 15: hostile archives

def test_import_rejects_an_index_listing_a_file_and_a_path_inside_it(root, tmp_path):  # 9
    def edit(name, data):
        if name.endswith("files.sha256"):
            data += b"".join(f"{hashlib.sha256(b'z').hexdigest()}  {rel}\n".encode() for rel in ("x", "x/y"))
            return [(f"teacher/{KEY}/x", b"z"), (f"teacher/{KEY}/x/y", b"z"), (name, data)]
        return [(name, data)]

    bad = tmp_path / "bad.tar"
    tar_edit(export(root, tmp_path), bad, edit)
    other = tmp_path / "other"
    fails(run_cli("cache", "import", str(bad), env={"QDLLM_CACHE_DIR": str(other)}),
          f"{bad}: teacher/{KEY}/files.sha256 is malformed", "'x' as a file", "'x/y'")
    assert tree(other) == {}


@pytest.mark.parametrize("name,damage_at", [("c.tar.gz", "truncated"), ("c.tar.xz", "truncated"),
                                            ("c.tar", "truncated"), ("c.tar.gz", "corrupt"), ("c.tar.xz", "corrupt"),
                                            ("c.tar", "corrupt")])
def test_import_of_a_truncated_or_corrupt_archive_is_one_sentence(root, tmp_path, name, damage_at):  # 13
    tar = export(root, tmp_path, name)
    data = tar.read_bytes()
    if damage_at == "truncated":
        data = data[: len(data) * 2 // 3]
    else:  # flip bytes inside the compressed stream
        mid = len(data) // 2
        data = data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:]
    tar.write_bytes(data)
    other = tmp_path / "other"
    proc = run_cli("cache", "import", str(tar), env={"QDLLM_CACHE_DIR": str(other)})
    fails(proc, str(tar))
    assert "Aborted" not in proc.stdout + proc.stderr
    assert "truncated" in proc.stderr or "corrupt" in proc.stderr
    assert not R.local_keys("teacher", other) and not [p for p in other.rglob(f"*{R.TMP_MARK}*")]


@pytest.mark.parametrize("bad_key", ["abcd.tmp-123-0badf00d", "x" * 200, "-abc", "a b", "ab\\c"])
def test_import_refuses_invalid_key_names(root, tmp_path, bad_key):  # 15
    bad = tmp_path / "bad.tar"
    tar_edit(export(root, tmp_path), bad, lambda name, data: [(name.replace(KEY, bad_key), data)])
    other = tmp_path / "other"
    fails(run_cli("cache", "import", str(bad), env={"QDLLM_CACHE_DIR": str(other)}),
          "not a valid cache key", repr(bad_key))
    assert tree(other) == {}


@pytest.mark.parametrize("cmd", ["push", "pull", "export"])
def test_invalid_keys_on_the_command_line_are_one_sentence(root, tmp_path, cmd):  # 15
    remote = tmp_path / "shared"
    remote.mkdir()
    where = ["--to", str(tmp_path / "x.tar")] if cmd == "export" else ["--remote", str(remote)]
    for key in ("../aaaa", "k.tmp-1-00000000"):
        fails(run_cli("cache", cmd, *where, "--key", key), repr(key), "is not a cache key")
    assert tree(remote) == {} and not (tmp_path / "x.tar").exists()


# ------------------------------------------------------------------ 12: remotes answer in bounded time

@pytest.mark.parametrize("cmd", ["pull", "ls"])
def test_gcs_remote_without_credentials_answers_in_bounded_time(root, cmd, monkeypatch):  # 12
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    env = {"QDLLM_REMOTE_TIMEOUT": "4", "COLUMNS": "250"}
    before = tree(root)
    t = time.perf_counter()
    proc = run_cli("cache", cmd, "--remote", "gs://no-such-bucket/x", env=env, timeout=25)
    assert time.perf_counter() - t < 20
    fails(proc, "gs://no-such-bucket/x")
    assert tree(root) == before


def test_a_bad_remote_timeout_setting_is_one_sentence(root):  # 12
    fails(run_cli("cache", "pull", "--remote", "gs://b/x", env={"QDLLM_REMOTE_TIMEOUT": "soon"}, timeout=25),
          "QDLLM_REMOTE_TIMEOUT='soon'")


# ------------------------------------------------------------------ 16: gc collects adapter leftovers

def test_gc_collects_an_interrupted_adapter_pull_but_keeps_a_live_one(root):  # 16
    teacher = root / "teacher"
    dead = teacher / f".{KEY}-adapter-k3q_9zxa"  # what SIGKILL leaves behind (tempfile's name)
    (dead / "adapter").mkdir(parents=True)
    (dead / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 1024)
    write_synthetic_cache(teacher / OTHER, n=30, dim=4, key=OTHER * 2, task="good")
    live = teacher / f".{OTHER}-adapter-a1b2c3d4"
    (live / "adapter").mkdir(parents=True)
    with open(teacher / f".{OTHER}.lock", "w") as held:  # a pull of OTHER is running: it holds the key lock
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = run_cli("cache", "gc", "--dry-run", env={"COLUMNS": "250"})
        assert proc.returncode == 0 and str(dead) in proc.stderr and str(live) not in proc.stderr
        assert dead.exists()
        proc = run_cli("cache", "gc", env={"COLUMNS": "250"})
        assert proc.returncode == 0, proc.stderr
        assert not dead.exists() and live.exists() and (teacher / f".{OTHER}.lock").exists()
    assert R.local_keys("teacher", root) == [KEY, OTHER]
    run_cli("cache", "gc")
    assert not live.exists()


# ------------------------------------------------------------------ 17: unknown kinds

@pytest.mark.parametrize("cmd", ["ls", "verify", "export", "push", "pull"])
def test_unknown_kind_names_the_valid_ones(root, tmp_path, cmd):  # 17
    remote = tmp_path / "shared"
    remote.mkdir()
    extra = {"export": ["--to", str(tmp_path / "x.tar")], "push": ["--remote", str(remote)],
             "pull": ["--remote", str(remote)]}.get(cmd, [])
    before = tree(root)
    fails(run_cli("cache", cmd, "--kind", "foo", *extra), "--kind 'foo' is not one of teacher, student")
    assert tree(root) == before and tree(remote) == {} and not (tmp_path / "x.tar").exists()


def test_local_verify_of_student_runs_says_what_to_do(root):  # 17
    fails(run_cli("cache", "verify", "--kind", "student"), "checks teacher caches", "--remote")

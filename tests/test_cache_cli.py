"""``qdllm cache`` export/import, gc, ls and verify on local caches (remotes: see test_remote.py)."""

import fcntl
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import run_cli, write_synthetic_cache
from pipeline import remote as R
from pipeline.cache import read_teacher_cache
from pipeline.errors import QdllmError

KEYS = ("aaaa000011112222", "bbbb000011112222")


@pytest.fixture
def local(tmp_path):
    root = tmp_path / "cache"
    for i, k in enumerate(KEYS):
        write_synthetic_cache(root / "teacher" / k, n=40 + 20 * i, dim=6, seed=i, key=k * 4, task=f"task{i}")
    return root


def test_export_import_round_trip(local, tmp_path):
    tar = tmp_path / "caches.tar"
    R.export_tar(tar, [("teacher", k) for k in KEYS], cache_root=local)
    with tarfile.open(tar) as t:
        names = t.getnames()
    assert names.index(f"teacher/{KEYS[0]}/manifest.json") > names.index(f"teacher/{KEYS[0]}/train.parquet")
    other = tmp_path / "other"
    assert R.import_tar(tar, cache_root=other) == [("teacher", k, "imported") for k in KEYS]
    for k in KEYS:
        assert read_teacher_cache(other / "teacher" / k).manifest == read_teacher_cache(local / "teacher" / k).manifest
    assert R.import_tar(tar, cache_root=other) == [("teacher", k, "present") for k in KEYS]


def _rewrite_tar(src: Path, dst: Path, edit) -> None:
    with tarfile.open(src) as t_in, tarfile.open(dst, "w") as t_out:
        for m in t_in.getmembers():
            data = t_in.extractfile(m).read()
            m, data = edit(m, data)
            if m is not None:
                m.size = len(data)
                t_out.addfile(m, io.BytesIO(data))


def test_import_detects_corruption_and_publishes_nothing(local, tmp_path):
    tar, bad = tmp_path / "ok.tar", tmp_path / "bad.tar"
    R.export_tar(tar, [("teacher", KEYS[0])], cache_root=local)

    def flip(m, data):
        if m.name.endswith("val.parquet"):
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        return m, data

    _rewrite_tar(tar, bad, flip)
    other = tmp_path / "other"
    with pytest.raises(QdllmError, match="val.parquet does not match its sha256"):
        R.import_tar(bad, cache_root=other)
    assert not (other / "teacher" / KEYS[0]).exists()
    assert not [p for p in (other / "teacher").iterdir() if R.TMP_MARK in p.name]


def test_import_refuses_incomplete_and_foreign_tars(local, tmp_path):
    tar = tmp_path / "ok.tar"
    R.export_tar(tar, [("teacher", KEYS[0])], cache_root=local)
    no_manifest = tmp_path / "nomanifest.tar"
    _rewrite_tar(tar, no_manifest, lambda m, d: (None, d) if m.name.endswith("manifest.json") else (m, d))
    with pytest.raises(QdllmError, match="has no manifest.json"):
        R.import_tar(no_manifest, cache_root=tmp_path / "x")
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as t:
        info = tarfile.TarInfo("teacher/../../etc/passwd")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(QdllmError, match="not part of an exported cache"):
        R.import_tar(evil, cache_root=tmp_path / "x")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 10)
    with pytest.raises(QdllmError, match="not a readable tar file"):
        R.import_tar(tmp_path / "junk.tar", cache_root=tmp_path / "x")


def test_export_refuses_a_corrupt_local_cache(local, tmp_path):
    p = local / "teacher" / KEYS[0] / "test.parquet"
    p.write_bytes(p.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(QdllmError, match="does not match the sha256 in its manifest"):
        R.export_tar(tmp_path / "x.tar", [("teacher", KEYS[0])], cache_root=local)
    assert not (tmp_path / "x.tar").exists() and not list(tmp_path.glob(".x.tar*"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_gc_removes_only_dead_writers_and_free_locks(local):
    teacher = local / "teacher"
    dead = teacher / f".{KEYS[0]}x{R.TMP_MARK}{_dead_pid()}-0123abcd"
    live = teacher / f".{KEYS[1]}x{R.TMP_MARK}{os.getpid()}-0123abcd"
    for d in (dead, live):
        d.mkdir()
        (d / "train.parquet").write_bytes(b"partial")
    old_json = teacher / KEYS[0] / f".manifest.json{R.TMP_MARK}deadbeef"
    old_json.write_text("{}")
    os.utime(old_json, (1, 1))
    free_lock, held_lock = teacher / f".{KEYS[0]}.lock", teacher / f".{KEYS[1]}.lock"
    free_lock.write_text("")
    with open(held_lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        assert set(R.gc([local], dry_run=True)) == {dead, old_json, free_lock}
        assert dead.exists() and free_lock.exists()
        assert set(R.gc([local])) == {dead, old_json, free_lock}
    assert not dead.exists() and not old_json.exists() and not free_lock.exists()
    assert live.exists() and held_lock.exists()
    for k in KEYS:
        read_teacher_cache(teacher / k)  # finished caches are never touched


def test_cli_gc_and_ls_and_verify(local, tmp_path):
    env = {"QDLLM_CACHE_DIR": str(local), "COLUMNS": "200"}
    stale = local / "teacher" / f".{KEYS[0]}{R.TMP_MARK}{_dead_pid()}-0123abcd"
    stale.mkdir()
    proc = run_cli("cache", "gc", env=env)
    assert proc.returncode == 0 and not stale.exists() and "1 leftover(s) removed" in proc.stderr
    proc = run_cli("cache", "ls", env=env)
    assert proc.returncode == 0, proc.stderr
    for k in KEYS:
        assert k in proc.stdout
    assert "task0" in proc.stdout and "24/8/8" in proc.stdout and "1.000/1.000" in proc.stdout
    proc = run_cli("cache", "verify", env=env)  # no argument: every local teacher cache
    assert proc.returncode == 0 and proc.stderr.count("ok ") == 2


def test_cli_export_import_and_dir_remote(local, tmp_path):
    tar = tmp_path / "c.tar.gz"
    proc = run_cli("cache", "export", "--to", str(tar), "--key", KEYS[1], env={"QDLLM_CACHE_DIR": str(local)})
    assert proc.returncode == 0, proc.stderr
    other = tmp_path / "other"
    proc = run_cli("cache", "import", str(tar), env={"QDLLM_CACHE_DIR": str(other)})
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (other / "teacher").iterdir() if not p.name.startswith(".")) == [KEYS[1]]
    read_teacher_cache(other / "teacher" / KEYS[1])

    shared = tmp_path / "mnt" / "shared"
    proc = run_cli("cache", "push", "--remote", str(shared), env={"QDLLM_CACHE_DIR": str(local)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads((shared / "teacher" / KEYS[0] / "manifest.json").read_text())["key"] == KEYS[0] * 4
    proc = run_cli("cache", "pull", "--remote", shared.as_uri(), env={"QDLLM_CACHE_DIR": str(other)})
    assert proc.returncode == 0, proc.stderr
    assert "pulled teacher/" + KEYS[0] in " ".join(proc.stderr.split())
    assert "present teacher/" + KEYS[1] in " ".join(proc.stderr.split())


def test_cli_user_errors(tmp_path):
    env = {"QDLLM_CACHE_DIR": str(tmp_path / "empty")}
    for args, text in ((("push", "--remote", str(tmp_path / "r")), "No complete local teacher caches"),
                       (("pull", "--remote", str(tmp_path / "nowhere")), "does not exist"),
                       (("ls", "--kind", "weights"), "is not one of"),
                       (("import", str(tmp_path / "none.tar")), "No file")):
        proc = run_cli("cache", *args, env=env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert text in " ".join(proc.stderr.split())


def test_import_refuses_a_manifest_naming_files_outside_the_cache(local, tmp_path):
    tar = tmp_path / "ok.tar"
    R.export_tar(tar, [("teacher", KEYS[0])], cache_root=local)
    evil = tmp_path / "evil.tar"

    def edit(m, data):
        if m.name.endswith(R.INDEX):
            return None, data  # no index: the manifest's own file list is used
        if m.name.endswith("manifest.json"):
            man = json.loads(data)
            man["files"]["train"]["file"] = "../../outside.parquet"
            data = json.dumps(man).encode()
        return m, data

    _rewrite_tar(tar, evil, edit)
    with pytest.raises(QdllmError, match="unsafe file name"):
        R.import_tar(evil, cache_root=tmp_path / "x" / "cache")
    assert not list(tmp_path.rglob("outside.parquet"))


def test_teacher_with_remote_pulls_the_key_instead_of_computing_it(tmp_path):
    env = {"QDLLM_CACHE_DIR": str(tmp_path / "cache"), "QDLLM_DATA_DIR": str(tmp_path / "data")}
    key = run_cli("-q", "key", "teacher", "--task", "emotion", env=env).stdout.strip()
    remote = tmp_path / "remote"
    elsewhere = tmp_path / "elsewhere"
    write_synthetic_cache(elsewhere / "teacher" / key, n=30, dim=6, key=key * 4, task="emotion")

    # The remote does not hold the key yet: the stage computes, and here fails because no dataset was built.
    missing = run_cli("teacher", "--task", "emotion", "--remote", str(remote), env=env)
    assert missing.returncode != 0 and "has not been built" in missing.stderr

    R.push("teacher", key, str(remote), cache_root=elsewhere)
    pulled = run_cli("teacher", "--task", "emotion", "--remote", str(remote), env=env)
    assert pulled.returncode == 0, pulled.stderr
    local = tmp_path / "cache" / "teacher" / key
    assert pulled.stdout.strip().endswith(key)
    assert read_teacher_cache(local).manifest["task"] == "emotion"

"""Hostile input, round three: data that is not what its key says, one key per setting, one sentence per error."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import fails, run_cli



def key(*args: str) -> str:
    proc = run_cli("key", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# ---------------------------------------------------------------- 9: equal settings, one key

@pytest.mark.parametrize("a,b", [
    (["--alpha", "-0"], ["--alpha", "0"]),
    (["--variant", "parallel:02"], ["--variant", "parallel:2"]),
    (["--gradient", "spsa", "--train-noise", "readout:0.02+depolarizing:0.001,0.01"],
     ["--gradient", "spsa", "--train-noise", "depolarizing:0.001,0.010+readout:0.020"]),
    (["--gradient", "spsa", "--train-noise", "none"], ["--gradient", "spsa"]),
])
def test_two_spellings_of_one_student_setting_give_one_key(a, b):
    assert key("student", "--teacher-key", "K", *a) == key("student", "--teacher-key", "K", *b)


def test_two_spellings_of_one_teacher_setting_give_one_key():
    assert key("teacher", "--weight-decay", "-0") == key("teacher", "--weight-decay", "0.0")


@pytest.mark.parametrize("args,words", [
    (["key", "student", "--teacher-key", "K", "--variant", "parallel:\u00b2"], ["parallel:\u00b2", "K from 2 to"]),
    (["key", "student", "--teacher-key", "K", "--variant", "parallel:\u0663"], ["K from 2 to"]),
    (["key", "teacher", "--lora-r", "1000000000000"], ["--lora-r", "<= 65536"]),
])
def test_values_that_used_to_crash_are_one_sentence(args, words):
    fails(run_cli(*args), *words)


def test_a_bad_thread_count_is_one_sentence(monkeypatch):
    from pipeline.errors import QdllmError
    from stages.lm.models import cpu_threads

    for bad in ("abc", "0", "-2", "1e3", "\u0663"):
        monkeypatch.setenv("QDLLM_THREADS", bad)
        with pytest.raises(QdllmError, match="QDLLM_THREADS"):
            cpu_threads()
    monkeypatch.setenv("QDLLM_THREADS", "3")
    assert cpu_threads() == 3


# ---------------------------------------------------------------- 7, 8: labels as text, texts as one form

def _built(root: Path) -> tuple[dict, pl.DataFrame]:
    (manifest,) = (root / "data").rglob("manifest.json")
    frames = [pl.read_parquet(p) for p in manifest.parent.glob("*.parquet")]
    return json.loads(manifest.read_text()), pl.concat(frames, how="diagonal_relaxed")


def test_integer_labels_beyond_float_precision_stay_apart(isolated_dirs, tmp_path):
    big = ["12345678901234567891", "12345678901234567892", "9" * 400]
    rows = [{"text": f"an example text number {i} for class {i % 3}", "label": big[i % 3]} for i in range(45)]
    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli("data", "--task", "bigl", "--source", str(src))
    assert proc.returncode == 0, proc.stderr
    manifest, df = _built(isolated_dirs)
    assert sorted(manifest["class_names"]) == sorted(big)
    assert df["label"].n_unique() == 3


def test_nfc_and_nfd_copies_of_a_text_are_one_text(isolated_dirs, tmp_path):
    words = ["café", "naïve", "crème brûlée", "résumé", "über", "jalapeño", "façade", "piñata", "smörgåsbord",
             "déjà vu", "Ångström", "Zoë"]
    rows = []
    for i in range(40):
        text = f"{words[i % len(words)]} sentence {i // len(words)} with label {i % 2}"
        rows.append({"text": unicodedata.normalize("NFC", text), "label": i % 2})
        rows.append({"text": unicodedata.normalize("NFD", text), "label": i % 2})
    src = tmp_path / "forms.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    proc = run_cli("data", "--task", "forms", "--source", str(src))
    assert proc.returncode == 0, proc.stderr
    _, df = _built(isolated_dirs)
    assert df.height == 40 and df["text"].n_unique() == 40
    assert all(unicodedata.is_normalized("NFC", t) for t in df["text"])


# ---------------------------------------------------------------- 12, 13: remotes that would write where they must not

@pytest.mark.parametrize("remote,words", [
    ("file://data/qd", ["names the host 'data'", "file:///ABSOLUTE/PATH"]),
    ("file:rel/dir", ["neither a path nor a file:// URI"]),
    ("~nosuchuser_qdllm/x", ["cannot be resolved"]),
])
def test_a_remote_that_means_something_else_is_one_sentence(isolated_dirs, remote, words):
    before = sorted(p for p in isolated_dirs.rglob("*"))
    fails(run_cli("cache", "push", "--remote", remote), *words)
    assert sorted(p for p in isolated_dirs.rglob("*")) == before
    assert not Path("/qd").exists()


def test_a_remote_inside_the_cache_root_is_refused(isolated_dirs):
    from helpers import write_synthetic_cache

    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / ("a" * 16), n=30, dim=4, key="a" * 32, task="t")
    before = sorted(p for p in isolated_dirs.rglob("*"))
    for remote in (isolated_dirs / "cache" / "teacher" / ("a" * 16), isolated_dirs / "cache" / "teacher",
                   isolated_dirs / "cache"):
        fails(run_cli("cache", "push", "--remote", str(remote)), "inside the local cache root")
    assert sorted(p for p in isolated_dirs.rglob("*")) == before


def test_a_percent_encoded_file_uri_is_decoded(isolated_dirs):
    from helpers import write_synthetic_cache

    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / ("a" * 16), n=30, dim=4, key="a" * 32, task="t")
    target = isolated_dirs / "shared dir"
    target.mkdir()
    proc = run_cli("cache", "push", "--remote", "file://" + str(target).replace(" ", "%20"))
    assert proc.returncode == 0, proc.stderr
    assert (target / "teacher" / ("a" * 16) / "manifest.json").is_file()
    assert not (isolated_dirs / "shared%20dir").exists()


@pytest.mark.parametrize("env,words", [
    ({"QDLLM_REMOTE_TIMEOUT": "inf"}, ["QDLLM_REMOTE_TIMEOUT='inf'"]),
    ({"AWS_ENDPOINT_URL": "http://[::1"}, ["S3 endpoint", "not a URL"]),
])
def test_bad_remote_environment_is_one_sentence(env, words):
    fails(run_cli("cache", "pull", "--remote", "s3://bucket/x", env={"QDLLM_REMOTE_TIMEOUT": "4", **env}, timeout=60),
          *words)


# ---------------------------------------------------------------- 10: every file of a cache is in its manifest

def _cache_with_adapter(root: Path) -> Path:
    from helpers import synthetic_splits

    from pipeline.cache import write_teacher_cache

    adapter = root / "work-adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"\x01" * 256)
    (adapter / "adapter_config.json").write_text('{"r": 4}')
    return write_teacher_cache(root / "cache" / "teacher" / ("a" * 16), synthetic_splits(30, 2, 4), key="a" * 32,
                               inputs={}, task="t", class_names=["n", "p"], embedding_source="synthetic",
                               directories={"adapter": adapter})


@pytest.mark.parametrize("how,words", [
    ("extra script", ["run_me.sh", "does not list"]),
    ("edited card", ["README.md", "does not match the sha256"]),
    ("zeroed adapter", ["adapter_model.safetensors", "does not match the sha256"]),
])
def test_verify_and_import_check_every_file_of_a_cache(isolated_dirs, tmp_path, how, words):
    cache = _cache_with_adapter(isolated_dirs)
    assert set(json.loads((cache / "manifest.json").read_text())["contents"]) >= {
        "README.md", "train.parquet", "adapter/adapter_model.safetensors", "adapter/adapter_config.json"}
    assert run_cli("cache", "verify", str(cache)).returncode == 0
    tar = tmp_path / "good.tar"
    assert run_cli("cache", "export", "--to", str(tar)).returncode == 0
    if how == "extra script":
        (cache / "run_me.sh").write_text("#!/bin/sh\necho hi\n")
    elif how == "edited card":
        with open(cache / "README.md", "a") as f:
            f.write("\nTrust me.\n")
    else:
        (cache / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00" * 256)
    fails(run_cli("cache", "verify", str(cache)), *words)
    # the same cache as an archive: the index it ships with cannot vouch for it
    import io
    import tarfile

    bad = tmp_path / "bad.tar"
    with tarfile.open(tar) as t_in, tarfile.open(bad, "w") as t_out:
        for m in t_in.getmembers():
            data = t_in.extractfile(m).read()
            rel = m.name.split("/", 2)[2]
            if rel == "files.sha256":
                import hashlib
                lines = data.decode().splitlines()
                if how == "extra script":
                    lines.append(f"{hashlib.sha256(b'x').hexdigest()}  run_me.sh")
                else:
                    target = "README.md" if how == "edited card" else "adapter/adapter_model.safetensors"
                    new = (cache / target).read_bytes()
                    lines = [f"{hashlib.sha256(new).hexdigest()}  {target}" if ln.endswith("  " + target) else ln
                             for ln in lines]
                data = ("\n".join(lines) + "\n").encode()
            elif how != "extra script" and rel in ("README.md", "adapter/adapter_model.safetensors"):
                data = (cache / rel).read_bytes()
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            t_out.addfile(info, io.BytesIO(data))
        if how == "extra script":
            info = tarfile.TarInfo(f"teacher/{'a' * 16}/run_me.sh")
            info.size = 1
            t_out.addfile(info, io.BytesIO(b"x"))
    other = tmp_path / "elsewhere"
    proc = run_cli("cache", "import", str(bad), env={"QDLLM_CACHE_DIR": str(other)})
    fails(proc)
    assert not (other / "teacher" / ("a" * 16)).exists()


# ---------------------------------------------------------------- 11: degenerate caches are refused

@pytest.mark.parametrize("how,words", [
    ("one class", ["1 class", "at least two"]),
    ("duplicate names", ["repeats 'n'"]),
    ("empty test", ["test split is empty"]),
    ("probs of 7", ["teacher_probs", "not probabilities"]),
])
def test_degenerate_caches_are_refused_by_verify_and_the_student(isolated_dirs, how, words):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from helpers import write_synthetic_cache

    cache = write_synthetic_cache(isolated_dirs / "cache" / "teacher" / ("a" * 16), n=30, dim=4, key="a" * 32,
                                  task="t")
    manifest = json.loads((cache / "manifest.json").read_text())
    if how == "one class":
        manifest["class_names"] = ["n"]
    elif how == "duplicate names":
        manifest["class_names"] = ["n", "n"]
    elif how == "empty test":
        manifest["files"]["test"]["rows"] = 0
    else:
        table = pq.read_table(cache / "train.parquet")
        probs = np.array(table.column("teacher_probs").to_pylist(), dtype=np.float32)
        probs[2] = [7.0, -6.0]
        col = pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel(), pa.float32()), 2)
        pq.write_table(table.set_column(table.schema.get_field_index("teacher_probs"), "teacher_probs", col),
                       cache / "train.parquet")
        from pipeline.keys import sha256_file
        manifest["files"]["train"]["sha256"] = manifest["contents"]["train.parquet"] = sha256_file(
            cache / "train.parquet")
    (cache / "manifest.json").write_text(json.dumps(manifest))
    fails(run_cli("cache", "verify", str(cache)), *words)
    if how != "probs of 7":  # a student reads no probabilities: it trains on the logits
        fails(run_cli("student", "--teacher-key", "a" * 16, "--student-model", "logreg", "--epochs", "1",
                      "--seeds", "0", "--jobs", "1"), *words)
        assert not (isolated_dirs / "cache" / "student").exists() or not any(
            (isolated_dirs / "cache" / "student").glob("*/manifest.json"))


# ---------------------------------------------------------------- tracebacks that are one sentence now

@pytest.mark.parametrize("memo", ["[]", '"text"', "null", '{"x": 5}', '{"/a": [1, 2]}'])
def test_a_damaged_hash_memo_is_ignored(isolated_dirs, memo):
    memo_path = isolated_dirs / "file-hashes.json"
    memo_path.write_text(memo)
    src = str(Path(__file__).resolve().parent.parent / "data" / "fixtures" / "authors")
    first = run_cli("key", "data", "--task", "mine", "--source", src)
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    memo_path.unlink()
    assert run_cli("key", "data", "--task", "mine", "--source", src).stdout == first.stdout


def test_status_skips_manifests_of_the_wrong_shape(isolated_dirs):
    from helpers import write_synthetic_cache

    cache = write_synthetic_cache(isolated_dirs / "cache" / "teacher" / ("a" * 16), n=30, dim=4, key="a" * 32,
                                  task="emotion")
    m = json.loads((cache / "manifest.json").read_text())
    (cache / "manifest.json").write_text(json.dumps({**m, "task": 5}))
    d = isolated_dirs / "data" / "emotion" / "d1"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"inputs": {}, "task": ["x"], "config": "bad", "source_path": [1]}))
    proc = run_cli("status")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_a_stray_world_size_is_one_sentence(monkeypatch):
    from pipeline.errors import QdllmError
    from stages.teacher.train import launched_processes

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(QdllmError, match="WORLD_SIZE=2 is set, but no launcher"):
        launched_processes()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert launched_processes() == 2


def test_export_out_refuses_the_working_directory_and_links(isolated_dirs, tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    fails(run_cli("student", "export", "--run", "x", "--format", "qasm2", "--out", str(link)), "symbolic link")
    fails(run_cli("student", "export", "--run", "x", "--format", "qasm2", "--out", "."), "current or a parent")
    assert list(target.iterdir()) == []


def test_publishing_never_deletes_what_appeared_meanwhile(tmp_path):
    from pipeline.errors import QdllmError
    from pipeline.publish import publish_dir

    final = tmp_path / "out"
    with pytest.raises(QdllmError, match="appeared while the output was being written"):
        with publish_dir(final) as pub:
            (pub.path / "a.txt").write_text("ours")
            final.mkdir()
            (final / "theirs.txt").write_text("keep me")
    assert (final / "theirs.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_predict_refuses_an_empty_text():
    fails(run_cli("student", "predict", "--run", "x", ""), "Text 1 to classify is empty")


# ---------------------------------------------------------------- 6: the bytes parsed are the bytes hashed

@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_a_file_edited_between_key_and_build_is_refused(isolated_dirs, tmp_path, suffix):
    from pipeline.config import DataConfig
    from pipeline.errors import QdllmError
    from pipeline.plan import resolve
    from stages.data.build import build

    rows = [{"text": f"an example text number {i} about class {i % 2}", "label": i % 2} for i in range(40)]
    src = tmp_path / f"mine.{suffix}"

    def write(rs):
        if suffix == "jsonl":
            src.write_text("".join(json.dumps(r) + "\n" for r in rs))
        else:
            df = pl.DataFrame(rs)
            df.write_csv(src) if suffix == "csv" else df.write_parquet(src)

    write(rows)
    plan = resolve(data=DataConfig(task="mine", source=str(src)))
    write([{**r, "label": 1 - r["label"]} for r in rows])  # labels flipped after the key was computed
    with pytest.raises(QdllmError, match="changed while `qdllm data` was reading it"):
        build(plan)
    assert not list((isolated_dirs / "data").rglob("manifest.json"))
    write(rows)  # back as the key says: builds
    build(resolve(data=DataConfig(task="mine", source=str(src))))


@pytest.mark.parametrize("args,words", [
    (["data", "stego", "encode", "--bits", "0101", "--freq-bits", "0"], ["--freq-bits 0", "from 8"]),
    (["data", "stego", "encode", "--bits", "0101", "--threads", "100000"], ["--threads 100000", "1 to 1024"]),
    (["key", "data", "--task", "x", "--text-column", "a", "--label-column", "a"], ["also the text column"]),
    (["key", "student", "--teacher-key", "K", "--seeds", "0,,1"], ["'0,,1' has an empty item"]),
    (["key", "student", "--teacher-key", "K", "--seeds", "0,"], ["'0,' has an empty item"]),
])
def test_messages_name_the_setting_at_fault(args, words):
    fails(run_cli(*args), *words)


@pytest.mark.parametrize("content", ["garbage", '{"x": 1}', "[]"])
def test_a_scheduler_file_holding_garbage_is_one_sentence(isolated_dirs, tmp_path, content):
    from helpers import write_synthetic_cache

    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / ("a" * 16), n=30, dim=4, key="a" * 32, task="t")
    sched = tmp_path / "scheduler.json"
    sched.write_text(content)
    fails(run_cli("student", "--teacher-key", "a" * 16, "--epochs", "1", "--seeds", "0", "--no-classical",
                  "--no-ce-baseline", env={"QDLLM_CLUSTER": str(sched)}, timeout=120),
          f"QDLLM_CLUSTER={sched}")


# ---------------------------------------------------------------- leaks: gc finds every temporary whose writer died

def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_gc_removes_the_temporary_of_a_killed_export_beside_its_target(isolated_dirs, tmp_path):
    from helpers import write_synthetic_cache

    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / ("a" * 16), n=30, dim=4, key="a" * 32, task="t")
    elsewhere = tmp_path / "exports"
    elsewhere.mkdir()
    pid = _dead_pid()
    tmp = elsewhere / f".caches.tar.xz.tmp-{pid}-0123abcd"
    tmp.write_bytes(b"half a tar")
    keep = elsewhere / "keep.txt"
    keep.write_text("mine")
    records = isolated_dirs / "cache" / ".exports"
    records.mkdir()
    (records / f".export.tmp-{pid}-89abcdef").write_text(str(tmp))
    # a record pointing at a file that is not one of our temporaries never deletes it
    (records / f".export.tmp-{pid}-fedcba98").write_text(str(keep))
    proc = run_cli("cache", "gc")
    assert proc.returncode == 0, proc.stderr
    assert not tmp.exists() and keep.read_text() == "mine"
    assert list(records.iterdir()) == []


def test_a_finished_export_leaves_no_record(isolated_dirs, tmp_path):
    from helpers import write_synthetic_cache

    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / ("a" * 16), n=30, dim=4, key="a" * 32, task="t")
    assert run_cli("cache", "export", "--to", str(tmp_path / "x.tar.gz")).returncode == 0
    assert list((isolated_dirs / "cache" / ".exports").iterdir()) == []


def test_a_temporary_whose_pid_was_reused_is_stale(tmp_path):
    import os
    import time

    from pipeline.remote import is_stale

    mine = tmp_path / f".out.tmp-{os.getpid()}-0123abcd"  # a live pid: ours
    mine.mkdir()
    assert not is_stale(mine)
    old = time.time() - 10 * 24 * 3600  # written long before this process started: not by it
    os.utime(mine, (old, old))
    assert is_stale(mine)


def test_a_full_disk_while_polars_writes_is_the_full_disk_sentence(isolated_dirs, monkeypatch):
    from stages.cli import environment_error
    from stages.data import dataset

    def full(self, path, *a, **kw):
        raise pl.exceptions.ComputeError(f"failed to write {path}: No space left on device (os error 28)")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    df = dataset.frame(["a text"], [0])
    with pytest.raises(OSError) as info:
        dataset._write_parquet(df, isolated_dirs / "x.parquet")
    assert "no space left on the device" in environment_error(info.value)

import os
import subprocess
import sys
import time

import pytest

from pipeline import keys
from pipeline.config import DataConfig, StudentConfig, TeacherConfig
from pipeline.plan import data_key, student_key, teacher_key


def test_canonical_json_ignores_key_order():
    assert keys.digest({"a": 1, "b": [1, 2]}) == keys.digest({"b": [1, 2], "a": 1})
    assert keys.digest({"a": 1}) != keys.digest({"a": 2})


def test_file_hash_memo_tracks_content_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(keys, "RACY_SECONDS", -1.0)  # remember even a file written a moment ago
    f = tmp_path / "x.txt"
    f.write_text("one")
    first = keys.hash_files([f])[str(f)]
    assert first == keys.sha256_file(f)
    real = keys.sha256_file
    monkeypatch.setattr(keys, "sha256_file", lambda p: pytest.fail("the memo should have served this digest"))
    assert keys.hash_files([f])[str(f)] == first  # served from the memo
    monkeypatch.setattr(keys, "sha256_file", real)
    f.write_text("two!")  # new size (and mtime) invalidates the memo entry
    assert keys.hash_files([f])[str(f)] == keys.sha256_file(f) != first


@pytest.mark.parametrize("how", ["in place", "renamed over"])
def test_file_hash_memo_never_serves_a_replaced_file_of_the_same_size_and_mtime(tmp_path, monkeypatch, how):
    """Labels flipped in a source file of the same size, its mtime set back: the key must still change."""
    monkeypatch.setattr(keys, "RACY_SECONDS", -1.0)
    f = tmp_path / "data.csv"
    f.write_text("text,label\ngood,1\nbad,0\n")
    st = f.stat()
    before = keys.hash_files([f])[str(f)]
    time.sleep(0.05)  # past the file system's timestamp granularity
    flipped = "text,label\ngood,0\nbad,1\n"
    if how == "in place":
        f.write_text(flipped)
    else:
        (tmp_path / "new.csv").write_text(flipped)
        os.replace(tmp_path / "new.csv", f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert keys.hash_files([f])[str(f)] == keys.sha256_file(f) != before


def test_a_file_changed_just_now_is_hashed_but_not_remembered(tmp_path):
    f = tmp_path / "fresh.txt"
    f.write_text("just written")
    assert keys.hash_files([f])[str(f)] == keys.sha256_file(f)
    memo = keys._load_memo()
    assert str(f.resolve()) not in memo  # within RACY_SECONDS of its change: a rewrite could keep every stamp


def test_the_memo_lives_under_the_cache_root_by_default(tmp_path, monkeypatch):
    from pipeline import paths

    monkeypatch.delenv("QDLLM_HASH_MEMO")
    monkeypatch.setenv("QDLLM_CACHE_DIR", str(tmp_path / "somewhere"))
    assert paths.hash_memo() == tmp_path / "somewhere" / ".file-hashes.json"
    monkeypatch.setenv("QDLLM_HASH_MEMO", str(tmp_path / "m.json"))
    assert paths.hash_memo() == tmp_path / "m.json"


def test_hash_tree_changes_when_any_file_changes(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    before = keys.hash_tree(tmp_path, ("*.py",))
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert keys.hash_tree(tmp_path, ("*.py",)) != before


def test_each_setting_changes_its_key_and_downstream_keys(tmp_path):
    src = tmp_path / "mine.csv"
    src.write_text("text,label\na,0\nb,1\n")
    d0 = data_key(DataConfig(task="mine", source=str(src)))
    d1 = data_key(DataConfig(task="mine", source=str(src), seed=1))
    assert d0.short != d1.short and len(d0.short) == keys.SHORT
    t0 = teacher_key(d0, TeacherConfig())
    assert teacher_key(d1, TeacherConfig()).short != t0.short
    assert teacher_key(d0, TeacherConfig(lora_r=8)).short != t0.short
    assert teacher_key(d0, TeacherConfig(embedder="teacher-input")).short != t0.short
    s0 = student_key(t0.short, StudentConfig())
    assert student_key(t0.short, StudentConfig(loss="ce")).short != s0.short
    assert student_key("other", StudentConfig()).short != s0.short
    # data content matters, its path does not
    src.write_text("text,label\na,0\nc,1\n")
    assert data_key(DataConfig(task="mine", source=str(src))).short != d0.short


def test_keys_are_stable_across_processes(tmp_path):
    code = "from pipeline.config import DataConfig; from pipeline.plan import data_key; print(data_key(DataConfig()))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(i)}).stdout for i in range(2)}
    assert len(outs) == 1

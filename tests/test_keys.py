import os
import subprocess
import sys

from pipeline import keys
from pipeline.config import DataConfig, StudentConfig, TeacherConfig
from pipeline.plan import data_key, student_key, teacher_key


def test_canonical_json_ignores_key_order():
    assert keys.digest({"a": 1, "b": [1, 2]}) == keys.digest({"b": [1, 2], "a": 1})
    assert keys.digest({"a": 1}) != keys.digest({"a": 2})


def test_file_hash_memo_tracks_content_changes(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("one")
    first = keys.hash_files([f])[str(f)]
    assert first == keys.sha256_file(f)
    assert keys.hash_files([f])[str(f)] == first  # served from the memo
    f.write_text("two!")  # new size (and mtime) invalidates the memo entry
    assert keys.hash_files([f])[str(f)] == keys.sha256_file(f) != first


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

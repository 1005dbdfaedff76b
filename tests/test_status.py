"""`qdllm status`: whether each stage is current and, if not, the one-line cause of each change since its last build."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace

import pytest
from helpers import ROOT, run_cli
from tiny_models import text, tiny_model_dir, tiny_teacher

from pipeline.config import DataConfig, StudentConfig
from pipeline.plan import resolve
from pipeline.status import status

TEACHER_FLAGS = ("lora_r", "lora_alpha", "lora_dropout", "lr", "epochs", "batch_size", "max_length",
                 "max_train_examples", "max_export_examples", "embedder", "profile", "precision")


@pytest.fixture
def built(isolated_dirs, tmp_path):
    """Data, a tiny teacher and a tiny quantum student built from a CSV of a task of the user's own."""
    import numpy as np

    from stages.data.build import build
    from stages.student.run import run_student
    from stages.teacher.run import run_teacher

    rng = np.random.default_rng(0)
    src = tmp_path / "mine.csv"
    src.write_text("text,label\n" + "".join(f"{text(rng, i % 2)} {i},{i % 2}\n" for i in range(60)))
    old = time.time() - 10  # older than the file-hash memo's racy window
    os.utime(src, (old, old))
    data = DataConfig(task="mine", source=str(src))
    teacher = tiny_teacher(tiny_model_dir(tmp_path, "llama"), epochs=1, precision="fp32")
    student = StudentConfig(n_qubits=2, n_layers=1, epochs=1, seeds=(0,), batch_size=8)
    plan = resolve(data=data, teacher=teacher, student=student)
    build(plan)
    run_teacher(plan)
    run_student(plan.teacher.dir, student)
    return src, data, teacher, student


def causes(data, teacher, student) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {s.stage: (s.state, s.changes) for s in status("mine", data, teacher, student)}


def test_everything_built_is_current(built):
    _, data, teacher, student = built
    assert causes(data, teacher, student) == {"data": ("current", ()), "teacher": ("current", ()),
                                              "student": ("current", ())}


def test_editing_a_student_module_names_that_file(built, tmp_path, monkeypatch):
    import pipeline.paths

    _, data, teacher, student = built
    repo = tmp_path / "repo"
    for part in ("stages", "pipeline"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pipeline.paths, "PROJECT_ROOT", repo)
    losses = repo / "stages" / "student" / "losses.py"
    losses.write_text(losses.read_text() + "\n# edited\n")
    assert causes(data, teacher, student) == {
        "data": ("current", ()), "teacher": ("current", ()),
        "student": ("changed", ("code stages/student/losses.py changed",))}


def test_changing_the_epochs_names_the_setting(built):
    _, data, teacher, student = built
    got = causes(data, replace(teacher, epochs=3), replace(student, epochs=4))
    assert got["data"] == ("current", ())
    assert got["teacher"] == ("changed", ("config.epochs: 1 → 3",))
    assert got["student"][0] == "changed" and got["student"][1][0] == "config.epochs: 1 → 4"
    assert got["student"][1][1].startswith("teacher changed (teacher key ")  # the cause upstream, one line
    assert len(got["student"][1]) == 2


def test_a_source_file_with_new_content_names_the_file_and_each_stage_downstream(built):
    src, data, teacher, student = built
    src.write_text(src.read_text().replace(",0\n", ",2\n").replace(",1\n", ",0\n").replace(",2\n", ",1\n"))
    got = causes(data, teacher, student)
    assert got["data"] == ("changed", ("source file mine.csv changed",))
    assert got["teacher"][0] == "changed" and len(got["teacher"][1]) == 1
    assert got["teacher"][1][0].startswith("data changed (data key ")
    assert got["student"][1][0].startswith("teacher changed (teacher key ")


def test_cli_lists_every_task_present_and_a_task_never_built(built):
    src, _, teacher, _ = built
    flags = ["--model", teacher.model, "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1",
             "--teacher-lr", "0.005", "--teacher-epochs", "1", "--teacher-batch-size", "8", "--max-length", "16",
             "--max-train-examples", "0", "--max-export-examples", "0", "--embedder", "teacher-input",
             "--profile", "cpu", "--precision", "fp32", "--qubits", "2", "--layers", "1", "--epochs", "1",
             "--seeds", "0"]
    r = run_cli("status", *flags)  # no --task: every task with outputs here; mine's source from its last build
    assert r.returncode == 0, r.stderr
    lines = " ".join(r.stderr.split())
    assert "mine data: current" in lines and "mine teacher: current" in lines and "mine student: current" in lines
    r = run_cli("status", "--task", "thematic", *flags)
    assert r.returncode == 0 and "thematic data: not built" in " ".join(r.stderr.split()), r.stderr
    r = run_cli("status", "--task", "never-built", *flags)
    assert r.returncode == 2 and "--source" in r.stderr and "Traceback" not in r.stderr

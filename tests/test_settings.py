"""Every setting declared once; the key `qdllm key` prints is the directory a stage writes; keys follow content."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from helpers import ROOT, run_cli, write_synthetic_cache
from pipeline import config as C
from pipeline.config import TEACHER_PROFILES, DataConfig, StudentConfig, TeacherConfig
from pipeline.errors import QdllmError
from pipeline.plan import resolve
from pipeline.settings import options_for, specs

FIX = ROOT / "data" / "fixtures"
CLASSES = (DataConfig, TeacherConfig, StudentConfig)


def visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith(".")) if path.is_dir() else []


# ---------------------------------------------------------------- declared once


def test_every_field_is_a_declared_setting_with_help_and_configs_are_keyword_only():
    for cls in CLASSES:
        declared = specs(cls)
        assert set(declared) == {f.name for f in dataclasses.fields(cls) if f.init}, cls  # not derived fields
        assert all(s.help.strip() for s in declared.values())
        with pytest.raises(TypeError):
            cls("positional")


def test_cli_options_are_derived_from_the_declarations():
    """The options of every command are the config fields: same flags, same defaults, no restatement."""
    opts = {o.spec.flag: o for o in options_for(*CLASSES)}
    proc = run_cli("key", "all", "--help", env={"COLUMNS": "250"})
    for flag in opts:
        for name in flag.split("/"):  # a boolean declares "--on/--off"
            assert name in proc.stdout, name
    assert opts["--seed"].targets == ((DataConfig, "seed"), (TeacherConfig, "seed"))  # one flag feeds both
    assert opts["--lr"].default == StudentConfig.lr and opts["--teacher-lr"].default == TeacherConfig.lr
    for cmd in (["data"], ["teacher"], ["student"], ["student", "ablations"], ["key", "teacher"]):
        assert run_cli(*cmd, "--help").returncode == 0


def test_makefile_variables_map_to_declared_flags():
    text = (ROOT / "Makefile").read_text()
    from stages.baselines.config import BaselineConfig

    # the baselines' options are their own (their --lr and --epochs default apart from the student's)
    flags = {o.spec.flag for o in options_for(*CLASSES)} | {o.spec.flag for o in options_for(BaselineConfig)}
    used = re.findall(r"\$\(call flag,(\w+),(--[\w-]+)\)", text)
    assert len(used) >= 10
    for var, flag in used:
        assert flag in flags or flag in ("--remote", "--jobs", "--cluster", "--teacher-key"), (var, flag)  # where and how, not what
        assert re.search(rf"^{var}\s*\?=\s*$", text, re.M), f"{var} restates a default in the Makefile"
    # every variable a user sets passes a declared flag, or says which inputs and runs (not what they compute)
    settable = set(re.findall(r"^(\w+)\s*\?=\s*$", text, re.M))
    assert settable - {var for var, _ in used} <= {"TEACHER_KEY", "FULL_GRID", "DATA_ROOT", "MODELS"}
    # the student's settings reach `make student` and `make ablations` as the data and teacher ones reach theirs
    assert {flag for _, flag in used} >= {"--temperature", "--loss", "--alpha", "--qubits", "--layers", "--epochs",
                                         "--lr", "--batch-size", "--seeds"}
    for target in ("student", "ablations", "_demo"):
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M).group(1)
        assert "$(STUDENT_ARGS)" in recipe, target


def test_teacher_config_resolves_its_profile_when_made():
    """`TeacherConfig()` is what `qdllm teacher` runs: unset budget settings come from the resolved profile."""
    cpu = TeacherConfig(profile="cpu")
    assert {k: getattr(cpu, k) for k in TEACHER_PROFILES["cpu"]} == TEACHER_PROFILES["cpu"]
    assert cpu.max_export_examples == 0  # every profile exports every row
    auto = TeacherConfig()
    assert auto.profile in ("cpu", "gpu") and auto == TeacherConfig(profile=auto.profile)
    assert TeacherConfig(profile="cpu", max_export_examples=500).max_export_examples == 500  # explicit wins
    assert dataclasses.replace(cpu, lora_r=8).max_train_examples == TEACHER_PROFILES["cpu"]["max_train_examples"]
    assert all(p["max_export_examples"] == 0 for p in TEACHER_PROFILES.values())
    # the embedder follows the profile (the cpu teacher is above MiniLM's probe, not mpnet's); explicit wins
    assert (cpu.embedder, TeacherConfig(profile="gpu").embedder) == ("minilm", "mpnet")
    assert TeacherConfig(profile="cpu", embedder="mpnet").embedder == "mpnet"


# ---------------------------------------------------------------- validation before any work


BAD = [
    (["--batch-size", "0"], "--batch-size 0 is not valid: it must be >= 1."),
    (["--epochs", "0"], "--epochs 0 is not valid: it must be >= 1."),
    (["--lr", "-1"], "--lr -1.0 is not valid: it must be > 0."),
    (["--temperature", "0"], "--temperature 0.0 is not valid: it must be > 0."),
    (["--alpha", "2"], "--alpha 2.0 is not valid: it must be >= 0 and <= 1."),
    (["--layers", "-1"], "--layers -1 is not valid: it must be >= 0."),
    (["--seeds", ","], "--seeds needs at least one seed"),
    (["--qubits", "0"], "--qubits 0 is not valid: it must be >= 1."),
    (["--qubits", "30"], "--qubits 30 does not fit"),
    (["--loss", "mse"], "Unknown loss 'mse' (--loss)"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_student_settings_stop_before_any_work(isolated_dirs, args, message):
    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=30, dim=8)
    proc = run_cli("student", "--teacher-key", "t1", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and message in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert visible(isolated_dirs / "cache" / "student") == []


def test_qubit_limit_names_the_memory_and_the_reason():
    with pytest.raises(QdllmError) as err:
        StudentConfig(n_qubits=C.max_qubits(8) + 1)
    assert "GiB of memory holds at most" in str(err.value) and "2^n complex amplitudes" in str(err.value)
    StudentConfig(n_qubits=C.max_qubits(8))  # the limit itself is accepted
    StudentConfig(model="logreg", n_qubits=40)  # classical students hold no state vector


@pytest.mark.parametrize("args,message", [
    (["teacher", "--teacher-lr", "0"], "--teacher-lr 0.0 is not valid"),
    (["teacher", "--quantize", "2bit"], "Unknown quantize '2bit'"),
    (["teacher", "--profile", "tpu"], "Unknown profile 'tpu'"),
    (["teacher", "--teacher-epochs", "0"], "--teacher-epochs 0 is not valid"),
    (["data", "--max-per-class", "-3"], "--max-per-class -3 is not valid"),
    (["data", "--split", "0.5,0.5,0.5"], "--split '0.5,0.5,0.5' is not valid"),
])
def test_bad_data_and_teacher_settings_stop_before_any_work(isolated_dirs, args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert visible(isolated_dirs / "cache") == [] and visible(isolated_dirs / "data") == []


def test_options_before_a_subcommand_are_honoured_or_rejected(isolated_dirs, monkeypatch):
    """``qdllm student --task hiding ablations ...``: the task given before the subcommand selects the caches the
    ablation grid is trained from (the grid itself is recorded, not trained: tests/test_student_train.py trains)."""
    from typer.testing import CliRunner

    from stages import cli as app_cli
    from stages.student import cli

    seen = []
    monkeypatch.setattr(cli, "_train_all", lambda configs, *where: seen.append((list(configs), where)))
    result = CliRunner().invoke(app_cli.app, ["student", "--task", "hiding", "--jobs", "1", "ablations", "--qubits",
                                              "2", "--epochs", "1", "--seeds", "0"])
    assert result.exit_code == 0, result.output
    ((configs, (task, teacher_key, remote, jobs, *_)),) = seen
    assert (task, teacher_key, remote, jobs) == ("hiding", None, None, 1)
    base = StudentConfig(n_qubits=2, epochs=1, seeds=(0,))
    assert configs == cli.ablation_configs(base) and all(c.n_qubits == 2 for c in configs)
    for args in (["student", "--loss", "ce", "ablations"], ["teacher", "--lora-r", "4", "params"],
                 ["data", "--seed", "3", "info"]):
        proc = run_cli(*args)
        assert proc.returncode == 2 and "would not be used by it" in proc.stderr, (args, proc.stderr)


# ---------------------------------------------------------------- `qdllm key` is the directory the stage writes


def _key(*args: str) -> str:
    proc = run_cli("-q", "key", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()[0]


def test_data_key_equals_the_directory_written(isolated_dirs):
    own = ["--task", "mine", "--source", str(FIX / "reviews.csv"), "--text-column", "review",
           "--label-column", "label", "--max-per-class", "5", "--seed", "2"]
    for args in (own, ["--task", "mine", "--source", str(FIX / "authors")]):
        assert run_cli("-q", "data", *args).returncode == 0
        assert (isolated_dirs / "data" / "mine" / _key("data", *args) / "manifest.json").is_file()
    assert len(visible(isolated_dirs / "data" / "mine")) == 2
    # the teacher takes the same data options, so it finds that dataset (it used to recompute another key)
    assert _key("teacher", *own, "--profile", "cpu").startswith(tuple("0123456789abcdef"))
    plan = resolve(data=DataConfig(task="mine", source=str(FIX / "reviews.csv"), text_column="review",
                                   label_column="label", max_per_class=5, seed=2),
                   teacher=TeacherConfig(profile="cpu", seed=2))  # --seed feeds both stages
    assert plan.data.key.short == _key("data", *own)
    assert plan.teacher.key.short == _key("teacher", *own, "--profile", "cpu")


def test_teacher_key_equals_the_directory_written(isolated_dirs, tmp_path_factory):
    pytest.importorskip("transformers")
    from tiny_models import tiny_model_dir

    model = tiny_model_dir(tmp_path_factory.mktemp("models"), "llama")
    data = ["--task", "mine", "--source", str(FIX / "reviews.csv"), "--text-column", "review",
            "--label-column", "label", "--max-per-class", "8"]
    teacher = ["--model", str(model), "--embedder", "teacher-input", "--profile", "cpu", "--lora-r", "4",
               "--lora-alpha", "8", "--teacher-epochs", "1", "--max-length", "16", "--max-train-examples", "0",
               "--max-export-examples", "0", "--teacher-batch-size", "8"]
    assert run_cli("-q", "data", *data).returncode == 0
    proc = run_cli("-q", "teacher", *data, *teacher)
    assert proc.returncode == 0, proc.stderr
    key = _key("teacher", *data, *teacher)
    assert proc.stdout.strip().endswith(key) and [p.name for p in visible(isolated_dirs / "cache" / "teacher")] == [key]
    manifest = json.loads((isolated_dirs / "cache" / "teacher" / key / "manifest.json").read_text())
    assert manifest["inputs"]["config"]["embedder"] == "teacher-input" and manifest["inputs"]["config"]["lora_r"] == 4


def test_student_key_equals_the_directory_written(isolated_dirs):
    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=30, dim=8)
    for args in ([], ["--qubits", "3", "--layers", "1", "--loss", "ce", "--alpha", "0.5", "--temperature", "2",
                      "--lr", "0.01", "--batch-size", "4", "--variant", "u3"]):
        fast = ["--epochs", "1", "--seeds", "0", *([] if args else ["--qubits", "2"])]
        proc = run_cli("-q", "student", "--teacher-key", "t1", "--no-classical", "--no-ce-baseline", *args, *fast)
        assert proc.returncode == 0, proc.stderr
        assert (isolated_dirs / "cache" / "student" / _key("student", "--teacher-key", "t1", *args, *fast)).is_dir()
    assert len(visible(isolated_dirs / "cache" / "student")) == 2


def test_student_trains_a_ce_baseline_beside_a_distilled_student(isolated_dirs):
    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=30, dim=8)
    fast = ["--teacher-key", "t1", "--qubits", "2", "--epochs", "1", "--seeds", "0"]
    assert run_cli("-q", "student", "--no-classical", *fast).returncode == 0
    written = sorted(p.name for p in visible(isolated_dirs / "cache" / "student"))
    assert written == sorted([_key("student", *fast), _key("student", *fast, "--loss", "ce")])
    assert run_cli("-q", "student", "--no-classical", "--loss", "ce", *fast).returncode == 0  # already there: no twin
    assert len(visible(isolated_dirs / "cache" / "student")) == 2


def test_key_explain_and_against_say_which_inputs_differ(isolated_dirs):
    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=30, dim=8)
    assert run_cli("-q", "student", "--teacher-key", "t1", "--no-classical", "--no-ce-baseline", "--qubits", "2",
                   "--epochs", "1", "--seeds", "0").returncode == 0
    old = _key("student", "--teacher-key", "t1", "--qubits", "2", "--epochs", "1", "--seeds", "0")
    proc = run_cli("key", "student", "--teacher-key", "t1", "--qubits", "2", "--epochs", "2", "--seeds", "0",
                   "--explain")
    assert "config.epochs = 2" in proc.stderr and "code.stages/student/losses.py = " in proc.stderr
    proc = run_cli("key", "student", "--teacher-key", "t1", "--qubits", "2", "--epochs", "2", "--seeds", "0",
                   "--against", old)
    assert proc.returncode == 0 and "1 input(s) differ" in proc.stderr and "config.epochs: 1 → 2" in proc.stderr
    proc = run_cli("key", "student", "--teacher-key", "t1", "--against", "0123456789abcdef")
    assert proc.returncode == 2 and "to compare with" in proc.stderr


# ---------------------------------------------------------------- keys follow exactly the content-deciding code


def test_every_stage_module_is_reviewed_for_the_keys():
    listed = {f for files in C.STAGE_CODE.values() for f in files} | set(C.NOT_CONTENT)
    present = {str(p.relative_to(ROOT)) for p in (ROOT / "stages").glob("*/*.py") if p.name != "__init__.py"}
    assert present <= listed, f"add these to STAGE_CODE or NOT_CONTENT in pipeline/config.py: {present - listed}"
    assert all((ROOT / f).is_file() for f in listed)
    assert not set(C.NOT_CONTENT) & {f for k, files in C.STAGE_CODE.items() if k != "teacher-params" for f in files}


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    """A copy of the code whose edits the keys are computed from."""
    import pipeline.paths

    root = tmp_path / "repo"
    for part in ("stages", "pipeline"):
        shutil.copytree(ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pipeline.paths, "PROJECT_ROOT", root)
    return root


def _all_keys(tmp_path) -> dict[str, str]:
    src = tmp_path / "mine.csv"
    if not src.exists():
        src.write_text("text,label\na,0\nb,1\n")
    out = {}
    for task, source in (("mine", str(src)), ("hiding", "")):
        plan = resolve(data=DataConfig(task=task, source=source), teacher=TeacherConfig(profile="cpu"),
                       student=StudentConfig())
        out |= {f"{task}-data": plan.data.key.short, f"{task}-teacher": plan.teacher.key.short,
                f"{task}-student": plan.student.key.short}
    return out


def _edit(path: Path, line: str = "\n# edited\n") -> None:
    path.write_text(path.read_text() + line)


def test_editing_a_cli_help_text_or_progress_output_changes_no_key(repo_copy, tmp_path):
    before = _all_keys(tmp_path)
    for f in ("stages/teacher/cli.py", "stages/student/cli.py", "stages/data/cli.py", "stages/cli.py",
              "stages/data/info.py", "pipeline/console.py"):
        text = (repo_copy / f).read_text()
        (repo_copy / f).write_text(text.replace('help="', 'help="Edited. ', 1) + "\n# edited\n")
    assert _all_keys(tmp_path) == before


@pytest.mark.parametrize("module,changed", [
    ("stages/student/losses.py", {"student"}),
    ("stages/student/fused.py", {"student"}),
    ("stages/teacher/train.py", {"teacher", "student"}),
    ("stages/teacher/run.py", {"teacher", "student"}),
    ("stages/lm/embed.py", {"teacher", "student"}),
    ("stages/data/build.py", {"data", "teacher", "student"}),
    ("stages/data/stego.py", {"hiding"}),  # the generator decides only the hiding corpus
])
def test_editing_content_deciding_code_changes_exactly_the_right_keys(repo_copy, tmp_path, module, changed):
    before = _all_keys(tmp_path)
    _edit(repo_copy / module)
    after = _all_keys(tmp_path)
    moved = {name for name in before if before[name] != after[name]}
    if changed == {"hiding"}:
        assert moved == {"hiding-data", "hiding-teacher", "hiding-student"}
    else:
        assert moved == {f"{task}-{stage}" for task in ("mine", "hiding") for stage in changed}

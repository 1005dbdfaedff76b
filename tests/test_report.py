"""The report stage: tables carry the numbers of the metrics files, figures are real PNGs, publishing is atomic.

Runs and teacher manifests are synthetic but written in exactly the student and teacher
stages' formats; the numbers are random, so a table that copied the wrong field fails.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from pipeline.config import StudentConfig
from pipeline.errors import QdllmError

PRF = ("accuracy", "precision", "recall", "f1")
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect width="40" height="20"/></svg>'


# ---------------------------------------------------------------- synthetic inputs


def write_teacher(cache: Path, key: str, task: str = "emotion", model: str = "smollm2-135m",
                  classes=("negative", "positive"), seed: int = 0, lora: int = 4_843_776) -> dict:
    rng = np.random.default_rng(seed)
    m = {
        "schema_version": 1, "kind": "teacher-cache", "key": key + "0" * 48, "task": task,
        "class_names": list(classes), "num_classes": len(classes), "embedding_dim": 384,
        "embedding_source": "minilm mean-pooled token embeddings",
        "files": {s: {"file": f"{s}.parquet", "rows": n, "sha256": "0" * 64, "bytes": 1}
                  for s, n in (("train", 600), ("val", 200), ("test", 200))},
        "inputs": {"stage": "teacher", "data_key": "d" * 16,
                   "config": {"model": model, "embedder": "minilm", "lora_r": 200, "profile": "cpu", "epochs": 1,
                              "max_length": 48, "max_train_examples": 1200}},
        "teacher_metrics": {s: {k: float(rng.uniform(0.6, 0.95)) for k in PRF} for s in ("val", "test")},
        "lora_trainable_params": lora, "model": model, "embedder": "minilm", "profile": "cpu",
        "timings": {"finetune": float(rng.uniform(50, 500)), "export": 12.0},
        "device": {"platform": "Linux", "cpus": 2, "gpu": None},
    }
    d = cache / "teacher" / key
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps(m))
    return m


def write_run(cache: Path, key: str, teacher: dict, model: str = "quantum", n_seeds: int = 3, seed: int = 0,
              params: int | None = None, epochs: int = 4, **config) -> dict:
    """A student run directory in the student stage's format with random but consistent numbers."""
    rng = np.random.default_rng(seed)
    cfg = {**StudentConfig(model=model).settings(), "epochs": epochs, "seeds": list(range(n_seeds)), **config}
    c = len(teacher["class_names"])
    seeds = []
    for s in range(n_seeds):
        conf = rng.integers(0, 40, size=(c, c)).tolist()
        curves = {"epoch": list(range(1, epochs + 1)),
                  "train_loss": np.sort(rng.uniform(0.2, 1.0, epochs))[::-1].tolist(),
                  "val_loss": np.sort(rng.uniform(0.3, 1.1, epochs))[::-1].tolist(),
                  "train_accuracy": rng.uniform(0.5, 0.9, epochs).tolist(),
                  "val_accuracy": rng.uniform(0.5, 0.9, epochs).tolist()}
        seeds.append({"seed": s, "best_epoch": int(np.argmax(curves["val_accuracy"])) + 1,
                      "val": {k: float(rng.uniform(0.5, 0.9)) for k in PRF},
                      "test": {**{k: float(rng.uniform(0.5, 0.9)) for k in PRF}, "confusion": conf},
                      "train_seconds_per_epoch": float(rng.uniform(0.01, 30)),
                      "train_seconds_total": float(rng.uniform(1, 300)),
                      "inference_us_per_example": float(rng.uniform(1, 900)), "curves": curves})

    def ms(vals):
        return {"mean": float(np.mean(vals)), "std": float(np.std(vals))}

    params = params or {"quantum": 4_265, "twin": 4_259, "logreg": 770, "mlp": 4_300}[model]
    acc = np.mean([s["test"]["accuracy"] for s in seeds])
    tot = np.mean([s["train_seconds_total"] for s in seeds])
    metrics = {
        "task": teacher["task"], "teacher_key": teacher["key"][:16], "model": model, "config": cfg,
        "class_names": teacher["class_names"], "trainable_params": params,
        "teacher": {"val": teacher["teacher_metrics"]["val"], "test": teacher["teacher_metrics"]["test"],
                    "model": teacher["model"], "embedder": teacher["embedder"],
                    "lora_trainable_params": teacher["lora_trainable_params"]},
        "seeds": seeds,
        "summary": {"test": {k: ms([s["test"][k] for s in seeds]) for k in PRF},
                    "val": {k: ms([s["val"][k] for s in seeds]) for k in PRF},
                    "train_seconds_per_epoch": ms([s["train_seconds_per_epoch"] for s in seeds]),
                    "inference_us_per_example": ms([s["inference_us_per_example"] for s in seeds]),
                    "acc_per_param": float(acc / params), "acc_per_tkd": float(acc / tot)},
    }
    d = cache / "student" / key
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    if model == "quantum":
        (d / "circuit.svg").write_text(SVG)
    (d / "manifest.json").write_text(json.dumps({
        "kind": "student-run", "key": key + "f" * 48, "inputs": {"config": cfg}, "teacher_key": teacher["key"][:16],
        "task": teacher["task"], "class_names": teacher["class_names"], "config": cfg,
        "created": "2025-01-01T00:00:00Z"}))
    return metrics


def populate(cache: Path) -> dict:
    """Two tasks, two teachers on one task, three student models, loss and size ablations."""
    t1 = write_teacher(cache, "a" * 16, seed=1)
    t2 = write_teacher(cache, "b" * 16, model="bloomz-1b1", seed=2, lora=29_494_272)
    t3 = write_teacher(cache, "c" * 16, task="thematic", classes=("business", "politics", "sport", "tech"), seed=3)
    runs = {
        "q1": write_run(cache, "1000000000000001", t1, "quantum", seed=10),
        "l1": write_run(cache, "1000000000000002", t1, "logreg", seed=11),
        "m1": write_run(cache, "1000000000000003", t1, "mlp", seed=12),
        "q1ce": write_run(cache, "1000000000000004", t1, "quantum", seed=13, loss="ce"),
        "q1kl": write_run(cache, "1000000000000005", t1, "quantum", seed=14, loss="kl"),
        "q1l1": write_run(cache, "1000000000000006", t1, "quantum", seed=15, n_layers=1, params=4_199),
        "q1q4": write_run(cache, "1000000000000007", t1, "quantum", seed=16, n_qubits=4, params=1_600),
        "q2": write_run(cache, "2000000000000001", t2, "quantum", seed=20),
        "q3": write_run(cache, "3000000000000001", t3, "quantum", seed=30, n_seeds=2),
        "m3": write_run(cache, "3000000000000002", t3, "mlp", seed=31, n_seeds=2),
    }
    (cache / "student" / ".4000000000000000.tmp-1-abc").mkdir()  # an interrupted run: ignored
    return {"teachers": {"a": t1, "b": t2, "c": t3}, "runs": runs}


# ---------------------------------------------------------------- markdown parsing


def tables(md: str) -> dict[str, list[dict[str, str]]]:
    """Every markdown table of the report by its bold title, as dicts header -> cell."""
    out, lines = {}, md.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("**") and i + 2 < len(lines) and lines[i + 2].startswith("| "):
            headers = [h.strip() for h in lines[i + 2].strip("|").split("|")]
            rows, j = [], i + 4
            while j < len(lines) and lines[j].startswith("| "):
                rows.append(dict(zip(headers, (c.strip() for c in lines[j].strip().strip("|").split(" | ")))))
                j += 1
            out[ln.strip("*")] = rows
    return out


def pct(mean, std=None) -> str:
    return f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def sci(v) -> str:
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.3e}"


def is_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    w, h = struct.unpack(">II", data[16:24])
    return w, h


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Build the report once, in-process, over the synthetic runs, with fake paper-teacher counts."""
    from stages.report import build

    root = tmp_path_factory.mktemp("report")
    data = populate(root / "cache")
    fake = [{"model": m, "lora_trainable_params": n, "paper_table3": p}
            for m, n, p in (("bloomz-1b1", 29_494_272, 29.50e6), ("llama2-7b", 157_320_000, 157.32e6))]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QDLLM_CACHE_DIR", str(root / "cache"))
        mp.setenv("QDLLM_HASH_MEMO", str(root / "memo.json"))
        mp.setattr(build, "paper_teacher_params", lambda: (fake, ""))
        path = build.build_report()
    return path, path.read_text(), data, fake


def test_performance_tables_match_metrics_files(report):
    path, md, data, _ = report
    tabs = tables(md)
    runs_dir = path.parents[2] / "student"
    checked = 0
    for title, rows in tabs.items():
        if not title.startswith("Table 4–6"):
            continue
        for row in rows:
            if row["Method"].startswith("teacher"):
                tkey = row["Run"]
                t = json.loads((path.parents[2] / "teacher" / tkey / "manifest.json").read_text())
                for col, k in zip(("Acc (%)", "P (%)", "R (%)", "F1 (%)"), PRF):
                    assert row[col] == pct(t["teacher_metrics"]["test"][k])
                acc = t["teacher_metrics"]["test"]["accuracy"]
                assert row["Acc/Param"] == sci(acc / t["lora_trainable_params"])
                assert row["Acc/T_kd (1/s)"] == sci(acc / t["timings"]["finetune"])
                continue
            m = json.loads((runs_dir / row["Run"] / "metrics.json").read_text())
            s = m["summary"]
            for col, k in zip(("Acc (%)", "P (%)", "R (%)", "F1 (%)"), PRF):
                assert row[col] == pct(s["test"][k]["mean"], s["test"][k]["std"]), (title, row, col)
            assert row["Acc/Param"] == sci(s["acc_per_param"])
            assert row["Acc/T_kd (1/s)"] == sci(s["acc_per_tkd"])
            assert row["Seeds"] == str(len(m["seeds"]))
            assert row["Trainable params"].replace(",", "") == str(m["trainable_params"])
            checked += 1
    # one table per (task, teacher); the default-config run of each model is the one shown
    assert sum(t.startswith("Table 4–6") for t in tabs) == 3
    assert checked == 3 + 1 + 2
    main = next(rows for t, rows in tabs.items() if t.startswith("Table 4–6") and "a" * 16 in t)
    assert [r["Run"] for r in main[1:]] == ["1000000000000001", "1000000000000002", "1000000000000003"]


def test_parameter_table(report):
    _, md, data, fake = report
    rows = next(r for t, r in tables(md).items() if t.startswith("Table 3"))
    paper = [r for r in rows if r["Role"].startswith("teacher, paper")]
    assert [(r["Model"], r["Exact count"]) for r in paper] == [(f["model"], f"{f['lora_trainable_params']:,}")
                                                               for f in fake]
    assert paper[0]["Paper (Table 3)"] == "29.50M" and paper[0]["Trainable params"] == "29.49M"
    used = {r["Model"]: r["Exact count"] for r in rows if r["Role"].startswith("teacher, used")}
    assert used["bloomz-1b1"] == f"{data['teachers']['b']['lora_trainable_params']:,}"
    students = {r["Model"]: r["Exact count"] for r in rows if "student" in r["Role"]}
    assert students["quantum"] == "4,265" and students["logreg"] == "770" and students["mlp"] == "4,300"
    assert students["quantum (1 layer)"] == "4,199" and students["quantum (4 qubits)"] == "1,600"


def test_ablation_tables(report):
    path, md, data, _ = report
    tabs = tables(md)
    loss = [rows for t, rows in tabs.items() if t.startswith("Table 7")]
    assert len(loss) == 1
    assert [r["Loss"] for r in loss[0]] == ["ce", "kl", "kl+js+ce"]
    for r, name in zip(loss[0], ("q1ce", "q1kl", "q1")):
        s = data["runs"][name]["summary"]["test"]
        assert r["Acc (%)"] == pct(s["accuracy"]["mean"], s["accuracy"]["std"])
        assert r["F1 (%)"] == pct(s["f1"]["mean"], s["f1"]["std"])
    teacher = [rows for t, rows in tabs.items() if t.startswith("Table 8")]
    assert len(teacher) == 1 and len(teacher[0]) == 2
    for r in teacher[0]:
        m = json.loads((path.parents[2] / "student" / r["Run"] / "metrics.json").read_text())
        tk = next(t for t in data["teachers"].values() if t["key"][:16] == m["teacher_key"])
        assert r["Teacher Acc (%)"] == pct(tk["teacher_metrics"]["test"]["accuracy"])
        assert r["Student Acc (%)"] == pct(m["summary"]["test"]["accuracy"]["mean"],
                                           m["summary"]["test"]["accuracy"]["std"])
    size = [rows for t, rows in tabs.items() if t.startswith("Qubits and layers")]
    assert len(size) == 1
    assert [(r["Qubits"], r["Layers"]) for r in size[0]] == [("4", "2"), ("11", "1"), ("11", "2")]


def test_figures_are_pngs_and_report_links_them(report):
    path, md, _, _ = report
    out = path.parent
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    pngs = [f for f in linked if f.endswith(".png")]
    # where the quantum student stands, curves, confusion, timing per (task, teacher) + accuracy vs parameters
    assert len(pngs) == 4 * 3 + 1
    for f in pngs:
        w, h = is_png(out / f)
        assert w > 300 and h > 200
    svgs = [f for f in linked if f.endswith(".svg")]
    assert svgs and all((out / f).read_text() == SVG for f in svgs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"report.md", *linked}
    assert not any(p.name.startswith(".") for p in out.parent.iterdir() if p.is_dir())


def test_report_states_sources_hardware_and_differences(report):
    _, md, _, _ = report
    assert "smollm2-135m instead of the paper's" in md
    assert "CPU profile" in md and "1200 training examples" in md
    assert "minilm" in md and "BERT" in md
    assert "## Hardware" in md and "CPU cores" in md
    assert "Skipped" not in md  # the hidden temporary directory is not a run


def test_unchanged_runs_reuse_the_report_and_a_failed_build_leaves_nothing(isolated_dirs, monkeypatch):
    from stages.report import build

    cache = isolated_dirs / "cache"
    t = write_teacher(cache, "a" * 16)
    write_run(cache, "1000000000000001", t, "logreg", seed=1)
    monkeypatch.setattr(build, "paper_teacher_params", lambda: ([], ""))
    first = build.build_report()
    real_writer = build.write_report

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build, "write_report", broken)
    assert build.build_report() == first  # complete: reused, the writer is not called
    write_run(cache, "1000000000000002", t, "mlp", seed=2)  # a new run: a new key
    with pytest.raises(RuntimeError):
        build.build_report()
    assert [p for p in (cache / "reports").iterdir() if p.is_dir()] == [first.parent]  # no temporary left
    monkeypatch.setattr(build, "write_report", real_writer)
    second = build.build_report()
    assert second.parent != first.parent and first.is_file() and second.is_file()
    assert "1000000000000002" in second.read_text() and "1000000000000002" not in first.read_text()


def test_no_runs_is_one_clear_error(isolated_dirs):
    from stages.report.build import build_report

    with pytest.raises(QdllmError, match="make student"):
        build_report()
    r = run_cli("report", "--no-paper-teachers")
    assert r.returncode == 2 and "make student" in r.stderr and "Traceback" not in r.stderr


def test_cli_prints_report_path(isolated_dirs):
    cache = isolated_dirs / "cache"
    t = write_teacher(cache, "a" * 16)
    write_run(cache, "1000000000000001", t, "quantum", seed=1)
    write_run(cache, "1000000000000002", t, "logreg", seed=2)
    r = run_cli("report", "--no-paper-teachers")
    assert r.returncode == 0, r.stderr
    printed = Path(r.stdout.strip().splitlines()[-1])
    assert printed.name == "report.md" and printed.is_file()
    assert printed.parent.parent == cache / "reports"
    assert "not requested" in printed.read_text()
    again = run_cli("report", "--no-paper-teachers")
    assert again.stdout.strip().splitlines()[-1] == str(printed)


def test_report_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; import stages.report.cli, stages.report.build, stages.report.figures, "
            "stages.report.tables; print(' '.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.split()
    heavy = {m.split(".")[0] for m in out} & {"torch", "transformers", "mindspore", "mindquantum"}
    assert not heavy


def test_paper_teacher_counts_parse_the_command_and_survive_its_failure(monkeypatch):
    import subprocess

    from stages.report import build

    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        model = cmd[cmd.index("--model") + 1]
        if model == "opt-6.7b":
            return subprocess.CompletedProcess(cmd, 2, "", "error: No architecture config for 'opt-6.7b'.\n")
        info = {"model": model, "lora_trainable_params": 1000 + len(calls), "paper_table3": 1e6}
        return subprocess.CompletedProcess(cmd, 0, "some log line\n" + json.dumps(info) + "\n", "warning\n")

    monkeypatch.setattr(build.subprocess, "run", fake_run)
    ok, note = build.paper_teacher_params(("bloomz-1b1", "llama3-8b"))
    assert note == "" and [(p["model"], p["lora_trainable_params"]) for p in ok] == [("bloomz-1b1", 1001),
                                                                                    ("llama3-8b", 1002)]
    assert calls[0][1:] == ["-m", "stages.cli", "-q", "teacher", "params", "--model", "bloomz-1b1", "--json"]
    rows, note = build.paper_teacher_params(("bloomz-1b1", "opt-6.7b", "llama3-8b"))
    assert rows == [] and "opt-6.7b" in note and "No architecture config" in note


def test_an_unreadable_run_is_skipped_and_named(isolated_dirs, monkeypatch):
    from stages.report import build

    cache = isolated_dirs / "cache"
    t = write_teacher(cache, "a" * 16)
    write_run(cache, "1000000000000001", t, "quantum", seed=1)
    broken = cache / "student" / "9000000000000009"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    (broken / "metrics.json").write_text("{not json")
    monkeypatch.setattr(build, "paper_teacher_params", lambda: ([], ""))
    md = build.build_report().read_text()
    assert "Skipped (incomplete or unreadable) runs: 9000000000000009" in md
    rows = next(r for t, r in tables(md).items() if t.startswith("Table 4–6"))
    assert [r["Run"] for r in rows] == ["a" * 16, "1000000000000001"]

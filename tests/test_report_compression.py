"""The paper's comparison in the report: transformer students beside the quantum student, labelled by what they
are, the paper's table after ours, the Pareto front and the sentence on where the quantum student sits."""

from __future__ import annotations

import json
from pathlib import Path

from test_report import tables, write_run, write_teacher
from test_report_standing import set_accuracy

from stages.report.compression import pareto, sentence, students
from stages.report.runs import Run, load_runs


def baseline_run(cache: Path, key: str, teacher: dict, method: str, params: int, acc: float, epoch_s: float,
                 description: str) -> None:
    """A run as stages/baselines writes one: model = the method, a description, its parameters and timings."""
    write_run(cache, key, teacher, "mlp", seed=int(key[-2:]))
    path = cache / "student" / key / "metrics.json"
    m = json.loads(path.read_text())
    m.update(model=method, description=description, trainable_params=params,
             parameters={"classical": params, "circuit": 0})
    m["config"] = {"method": method, "lr": 5e-5, "epochs": 2, "seeds": [0, 1, 2]}
    m["summary"]["test"]["accuracy"] = {"mean": acc, "std": 0.004}
    m["summary"]["val"]["accuracy"] = {"mean": acc, "std": 0.004}
    m["summary"]["train_seconds_per_epoch"] = {"mean": epoch_s, "std": 1.0}
    path.write_text(json.dumps(m))


def test_transformer_students_stand_beside_the_quantum_one(isolated_dirs):
    from stages.report.build import build_report

    cache = isolated_dirs / "cache"
    t = write_teacher(cache, "a" * 16, seed=1)
    write_run(cache, "1000000000000001", t, "quantum", seed=1)
    set_accuracy(cache, "1000000000000001", (0.76, 0.005), 0.77, {"classical": 4270, "circuit": 64})
    write_run(cache, "1000000000000002", t, "mlp", seed=2)
    set_accuracy(cache, "1000000000000002", (0.755, 0.003), 0.76, {"classical": 4259, "circuit": 0})
    baseline_run(cache, "3000000000000011", t, "distilbert", 67_000_000, 0.80, 300.0,
                 "DistilBERT-style: mpnet 6/12 layers, 67.0M")
    baseline_run(cache, "3000000000000012", t, "tinybert", 17_400_000, 0.74, 40.0,
                 "TinyBERT-style: paraphrase-MiniLM-L3-v2, 17.4M")
    runs, _ = load_runs()
    (group,) = students(runs).values()
    assert [r.model for r in group][-2:] == ["tinybert", "distilbert"]  # the paper's order after ours
    text = sentence("emotion", group)
    assert "DistilBERT-style: mpnet 6/12 layers, 67.0M, is 4.00 points more accurate at 15,459× the parameters and " in text
    assert text.endswith("× the distillation time per epoch.")
    assert "the quantum student (4,334 parameters, 76.00 ± 0.50 %) is on the accuracy-parameters front" in text

    md = build_report(paper_teachers=False).read_text()
    section = md[md.index("## The paper's comparison"):md.index("## Data and teachers")]
    (title,) = [t for t in tables(section) if t.startswith("The paper's comparison: emotion")]
    rows = {r["Student"]: r for r in tables(section)[title]}
    assert rows["DistilBERT-style: mpnet 6/12 layers, 67.0M"]["Method"] == "DistilBERT"
    assert rows["quantum"]["Method"] == "qd-llm" and rows["mlp"]["Method"] == "qd-llm baseline"
    assert "**Paper's Table 4 (" in section and md.count("**Paper's Table 4 (") == 1  # after ours, once
    assert "![Accuracy against size and distillation time: emotion](compression-emotion-" in section
    # the transformer students are not in the first section's ranking of students of the quantum student's size
    standing = md[md.index("## Where the quantum student stands"):md.index("## Distillation gain")]
    assert "DistilBERT-style" not in standing and "distilbert" not in standing


def test_pareto_front_keeps_only_undominated_students():
    a, b, c, d = (Run(k, Path(k), {}, {}) for k in "abcd")
    front = pareto([(10.0, 70.0, a), (100.0, 69.0, b), (1000.0, 80.0, c), (50.0, 75.0, d)])
    assert front == [a, d, c]  # b costs more than d and is less accurate


def test_without_baselines_the_section_says_how_to_make_them(isolated_dirs):
    from stages.report.build import build_report

    cache = isolated_dirs / "cache"
    t = write_teacher(cache, "a" * 16, seed=1)
    write_run(cache, "1000000000000001", t, "quantum", seed=1)
    md = build_report(paper_teachers=False).read_text()
    assert "No transformer student yet; `make baselines`" in md
    assert md.count("**Paper's Table 4 (") == 1  # still after the Table 4–6 style table

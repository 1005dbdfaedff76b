"""The report's opening: does distillation pay off here? One table per task and teacher cache.

For each student model, the run trained with the paper's loss (``kl+js+ce``) is paired with the run
that differs only in the loss (``ce``); the gain is the test-accuracy difference per seed, mean ± std
over the seeds both runs share (paired). Beside it: the student–teacher agreement, the teacher's test
accuracy and the probe ceiling (a logistic regression on the cache's own embeddings, from the teacher
manifest). When the teacher is not clearly above the probe, one sentence says that distillation cannot
help with this teacher and embedder.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from pipeline.config import MODEL_BUDGETS
from pipeline.probe import distillation_can_help
from stages.report.runs import Run, Teacher
from stages.report.tables import DASH, Table, pct


def _twin_key(r: Run) -> tuple:
    cfg = {k: v for k, v in r.config.items() if k not in ("loss", "seeds")}
    return r.task, r.teacher_key, r.model, tuple(sorted((k, str(v)) for k, v in cfg.items()))


def own_budget(r: Run) -> bool:
    """Whether a run trained at its model's own default budget (``pipeline.config.MODEL_BUDGETS``): the gain of a
    pair is the model's own only then; at another budget it is a gain at that budget."""
    return all(r.config.get(f) == v for f, v in MODEL_BUDGETS.get(r.model, {}).items())


def _seed_values(r: Run, metric: str) -> dict[int, float]:
    return {int(s["seed"]): float(s["test"][metric]) for s in r.seeds if metric in s.get("test", {})}


def gain_rows(runs: list[Run]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(task, teacher key) -> one row per pair of runs differing only in loss (kl+js+ce vs ce)."""
    pairs: dict[tuple, dict[str, Run]] = defaultdict(dict)
    for r in runs:
        if r.config.get("loss") in ("kl+js+ce", "ce"):
            pairs[_twin_key(r)][r.config["loss"]] = r
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (task, tkey, model, _), pair in sorted(pairs.items(), key=lambda kv: str(kv[0])):
        if len(pair) < 2:
            continue
        kd, ce = _seed_values(pair["kl+js+ce"], "accuracy"), _seed_values(pair["ce"], "accuracy")
        common = sorted(set(kd) & set(ce))
        if not common:
            continue
        diff = np.array([kd[s] - ce[s] for s in common])
        agree = list(_seed_values(pair["kl+js+ce"], "agreement").values())
        out[(task, tkey)].append({
            "model": model, "label": pair["kl+js+ce"].label,
            "budget": pair["kl+js+ce"].budget + ("" if own_budget(pair["kl+js+ce"]) else " (not the model's own)"),
            "seeds": len(common),
            "gain": (float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0),
            "kd": pair["kl+js+ce"].stat("test", "accuracy"), "ce": pair["ce"].stat("test", "accuracy"),
            "agreement": (float(np.mean(agree)), float(np.std(agree, ddof=1)) if len(agree) > 1 else 0.0)
            if agree else None,
            "runs": f"{pair['kl+js+ce'].key} / {pair['ce'].key}"})
    return out


def _points(stat: tuple[float, float]) -> str:
    m, s = stat
    return f"{m * 100:+.2f} ± {s * 100:.2f}"


def probe_accuracy(teacher: Teacher) -> float | None:
    probe = (teacher.manifest or {}).get("probe_ceiling") or teacher.from_runs.get("probe_ceiling") or {}
    v = (probe.get("test") or {}).get("accuracy")
    return None if v is None else float(v)


def distillation_section(runs: list[Run], teachers: dict[str, Teacher]) -> list[str]:
    """Markdown lines: the "Distillation gain" tables and the probe verdicts."""
    md = ["## Distillation gain", ""]
    rows = gain_rows(runs)
    if not rows:
        return md + ["No pair of runs differing only in the loss (kl+js+ce and ce) yet; `make student` trains "
                     "both (unless --no-ce-baseline).", ""]
    for (task, tkey), items in rows.items():
        teacher = teachers.get(tkey) or Teacher(tkey, None)
        t_acc, p_acc = teacher.metric("test", "accuracy"), probe_accuracy(teacher)
        tab = Table(
            title=f"Distillation gain: {task}, teacher {teacher.name} (cache {tkey}), embedder {teacher.embedder}",
            headers=["Student", "Budget", "Seeds", "KL+JS+CE acc (%)", "CE acc (%)", "Gain (points)", "Agreement (%)",
                     "Teacher acc (%)", "Probe ceiling (%)", "Runs"],
            note=("Gain = KL+JS+CE minus CE test accuracy at otherwise equal settings (the same budget: the model's "
                  "own unless marked), mean ± std over the seeds both runs share (paired). Agreement: share of test examples where the student's class is the "
                  "teacher's. Probe ceiling: a logistic regression with CE on the cache's own embeddings."))
        for it in items:
            tab.rows.append([it["label"], it["budget"], str(it["seeds"]), pct(it["kd"]), pct(it["ce"]), _points(it["gain"]),
                             pct(it["agreement"]) if it["agreement"] else DASH, pct(t_acc), pct(p_acc), it["runs"]])
        md += [tab.markdown(), ""]
        if t_acc is not None and p_acc is not None and not distillation_can_help(t_acc, p_acc):
            md += [f"The teacher ({t_acc * 100:.2f} %) is not clearly above the probe ceiling of its embeddings "
                   f"({p_acc * 100:.2f} %), so distillation cannot help with this teacher and embedder.", ""]
    return md

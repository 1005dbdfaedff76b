"""The report's first section, "Where the quantum student stands": per task and teacher, every quantum variant,
the dequantised twin, the classical students of matching size, the probe ceiling and the teacher, in one table and
one figure, and sentences that say what the numbers say — including that a classical model of equal size does
better, when it does.

Every student here is the distilled one (the default loss): CE twins are the distillation gain's business
(``distill.py``). Each model's budget (one-standard-error rule), the best quantum student and the best classical one
are chosen on validation accuracy, never on test; two students are "level" when their test means differ by no more
than the larger of their stds over seeds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from stages.report.runs import DEFAULTS, LABEL_FIELDS, TRAINING_FIELDS, Run, Teacher
from stages.report.tables import DASH, Table, count, pct

CLASSICAL = ("twin", "logreg", "mlp")


def parameters(r: Run) -> dict[str, int]:
    """Classical and circuit parameters of a run (metrics.json's split; older runs: all classical but quantum)."""
    groups = r.metrics.get("parameters")
    if isinstance(groups, dict) and {"classical", "circuit"} <= set(groups):
        return {"classical": int(groups["classical"]), "circuit": int(groups["circuit"])}
    return {"classical": r.params, "circuit": 0}


def budget_key(r: Run) -> tuple:
    """What a budget grid varies: the training fields that do not name a run (learning rate, warm-up, epochs, …)."""
    cfg = r.config
    return tuple((f, str(cfg.get(f))) for f in TRAINING_FIELDS if f not in LABEL_FIELDS)


def grids(runs: list[Run]) -> dict[tuple[str, str, str], frozenset]:
    """(task, teacher key, label) -> the budgets trained for that distilled student: the grid its budget was chosen
    from on validation (one budget when only `make student` ran)."""
    out: dict[tuple[str, str, str], set] = defaultdict(set)
    for r in runs:
        if r.config.get("loss", DEFAULTS.loss) == DEFAULTS.loss:
            out[(r.task, r.teacher_key, r.label)].add(budget_key(r))
    return {k: frozenset(v) for k, v in out.items()}


def fair(a: Run, b: Run, grid: dict[tuple[str, str, str], frozenset]) -> bool:
    """Whether a and b may be ranked: each one's budget was chosen on validation from the same grid of budgets
    (at least two). Otherwise a difference between them may be a difference of budgets (Bowles, Ahmed and Schuld,
    arXiv 2403.07059), and the report gives the numbers without a verdict."""
    ga, gb = grid.get((a.task, a.teacher_key, a.label)), grid.get((b.task, b.teacher_key, b.label))
    return ga is not None and ga == gb and len(ga) > 1


def _not_ranked(a: Run, b: Run, grid: dict[tuple[str, str, str], frozenset]) -> str:
    """The clause that replaces a verdict when ``fair`` does not hold: what was searched, and the command that fixes it."""
    na, nb = (len(grid.get((r.task, r.teacher_key, r.label), ())) for r in (a, b))
    how = ("at one budget each (each model's own default)" if na == nb == 1 else
           f"not on the same grid of budgets ({a.label}: {na}, {b.label}: {nb})")
    return (f"a comparison {how}, so no verdict: `make ablations TASK={a.task}` trains every model on the same grid of "
            "budgets and makes it fair")


def contenders(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Per (task, teacher): the distilled students (default loss), one per label. Among runs of one label that
    differ only in their budget (learning rate, warm-up, epochs, batch; ``make ablations`` trains a grid of them)
    the one-standard-error rule chooses: the run closest to the defaults whose validation accuracy is within one
    standard error (std over seeds / √seeds) of the best one's, so a budget must beat the default by more than
    seed noise to replace it."""
    by_label: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for r in runs:  # the transformer baselines have their own section (compression.py)
        if r.model in ("quantum", *CLASSICAL) and r.config.get("loss", DEFAULTS.loss) == DEFAULTS.loss:
            by_label[(r.task, r.teacher_key, f"{r.model}|{r.label}")].append(r)
    out: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for (task, tkey, _), rs in sorted(by_label.items()):
        out[(task, tkey)].append(_one_standard_error(rs))
    return {k: sorted(v, key=lambda r: (r.model != "quantum", r.sort_key())) for k, v in out.items()}


def _one_standard_error(rs: list[Run]) -> Run:
    """The run closest to the defaults (``Run.sort_key``) among those within one standard error of the best
    validation accuracy; runs without one are chosen only when no run has it."""
    scored = [r for r in rs if _mean_std(r, "val") is not None]
    if not scored:
        return min(rs, key=Run.sort_key)
    top = max(scored, key=lambda r: _mean_std(r, "val")[0])
    mean, std = _mean_std(top, "val")
    floor = mean - std / math.sqrt(max(len(top.seeds), 1))
    return min((r for r in scored if _mean_std(r, "val")[0] >= floor), key=Run.sort_key)


def _mean_std(r: Run, split: str = "test") -> tuple[float, float] | None:
    return r.stat(split, "accuracy")


def _by_validation(rs: list[Run]) -> Run | None:
    scored = [r for r in rs if _mean_std(r, "val") is not None and _mean_std(r) is not None]
    return max(scored, key=lambda r: _mean_std(r, "val")[0]) if scored else None


def _compare(a: tuple[float, float], b: tuple[float, float]) -> int:
    """+1 when a is above b beyond the larger std, −1 when below, 0 when level."""
    d = a[0] - b[0]
    return 0 if abs(d) <= max(a[1], b[1]) else (1 if d > 0 else -1)


def probe_accuracy(t: Teacher) -> float | None:
    probe = (t.manifest or {}).get("probe_ceiling") or t.from_runs.get("probe_ceiling") or {}
    v = (probe.get("test") or {}).get("accuracy")
    return None if v is None else float(v)


def verdict(task: str, rs: list[Run], teacher: Teacher, grid: dict[tuple[str, str, str], frozenset] | None = None
            ) -> list[str]:
    """The sentences that state what the numbers say. Two students are ranked ("above", "does better", "beyond one
    std") only when ``fair``: each one's budget chosen on validation from the same grid (``grid``, from ``grids``)."""
    grid = grid if grid is not None else grids(rs)
    task = f"{task} ({teacher.embedder} embeddings)"  # a task can have caches of several embedders
    quantum = [r for r in rs if r.model == "quantum"]
    q = _by_validation(quantum)
    if q is None:
        return [f"On {task} there is no distilled quantum student yet (`make student`)."]
    qa = _mean_std(q)
    size = sum(parameters(q).values())
    classical = [r for r in rs if r.model in CLASSICAL and sum(parameters(r).values()) <= size * 1.05]
    c = _by_validation(classical)
    lines = []
    if c is None:
        lines.append(f"On {task} the best quantum student on validation, {q.label}, reaches {pct(qa)} % on test; "
                     "no classical student of its size was trained beside it (`make student` trains them).")
    else:
        ca = _mean_std(c)
        how = _compare(qa, ca)
        if not fair(q, c, grid):
            lines.append(f"On {task} the best quantum student, {q.label} ({count(size)} parameters, {pct(qa)} %), "
                         f"and the best classical student of at most its size, {c.label} "
                         f"({count(sum(parameters(c).values()))}, {pct(ca)} %): {_not_ranked(q, c, grid)}.")
        elif how < 0:
            lines.append(f"On {task} a classical model of equal size does better: {c.label} "
                         f"({count(sum(parameters(c).values()))} parameters) reaches {pct(ca)} % against "
                         f"{pct(qa)} % for the best quantum student, {q.label} ({count(size)}).")
        else:
            word = "is level with" if how == 0 else "is above"
            lines.append(f"On {task} the best quantum student, {q.label} ({count(size)} parameters, {pct(qa)} %), "
                         f"{word} the best classical student of at most its size, {c.label} "
                         f"({count(sum(parameters(c).values()))}, {pct(ca)} %), each one's budget chosen on "
                         f"validation from the same grid of {len(grid[(q.task, q.teacher_key, q.label)])}.")
    probe = probe_accuracy(teacher)
    if probe is not None:
        rel = "below" if qa[0] + qa[1] < probe else "above" if qa[0] - qa[1] > probe else "at"
        lines.append(f"The probe ceiling (a logistic regression on the same embeddings, fit by CE) is "
                     f"{pct(probe)} %: the quantum student is {rel} it.")
    by_variant = {r.config.get("variant"): r for r in quantum if r.label in ("quantum", "quantum (noent)")}
    if "paper" in by_variant and "noent" in by_variant:
        p, n = _mean_std(by_variant["paper"]), _mean_std(by_variant["noent"])
        d = 100 * (p[0] - n[0])
        lines.append(f"Removing every entangling gate (noent) changes the test accuracy by {-d:+.2f} points, "
                     + (_not_ranked(by_variant["paper"], by_variant["noent"], grid) + "."
                        if not fair(by_variant["paper"], by_variant["noent"], grid) else
                        "within one std: the entanglement adds nothing measurable here." if _compare(p, n) == 0 else
                        "beyond one std."))
    twin = next((r for r in rs if r.model == "twin" and r.label == "twin"), None)
    paper = by_variant.get("paper")
    if twin is not None and paper is not None:
        pa, ta = _mean_std(paper), _mean_std(twin)
        d = 100 * (pa[0] - ta[0])
        how = _compare(pa, ta)
        if not fair(paper, twin, grid):
            lines.append(f"The dequantised twin (the same encoder and head around cos(z), the circuit's product-state "
                         f"map) reaches {pct(ta)} %, the paper circuit {pct(pa)} % ({d:+.2f} points): "
                         f"{_not_ranked(paper, twin, grid)}.")
        else:
            lines.append(f"The dequantised twin (the same encoder and head around cos(z), the circuit's product-state "
                         f"map) reaches {pct(ta)} %: the paper circuit adds {d:+.2f} points beyond its classical "
                         "parts, " + ("within one std: nothing measurable." if how == 0 else "beyond one std." if how > 0
                                      else "beyond one std: the classical twin does better."))
    return lines


def standing_table(task: str, teacher: Teacher, rs: list[Run]) -> Table:
    t = Table(title=f"Where the quantum student stands: {task}, teacher {teacher.name}, embedder {teacher.embedder} "
                    f"(cache {teacher.key})",
              headers=["Model", "Kind", "Classical params", "Circuit params", "Budget (chosen on val)", "Val acc (%)",
                       "Test acc (%)", "Run"],
              note="Distilled students (default loss), mean ± std over seeds; each model's learning rate and epochs, "
                   "and the best of each kind, are chosen on validation. The twin is the quantum student with its "
                   "circuit replaced by cos(z).")
    acc = teacher.metric("test", "accuracy")
    t.rows.append([f"teacher: {teacher.name} + LoRA", "teacher", count(teacher.lora_params), DASH, DASH,
                   pct(teacher.metric("val", "accuracy")), pct(acc), teacher.key])
    probe = probe_accuracy(teacher)
    if probe is not None:
        t.rows.append(["probe ceiling (logistic regression, CE)", "classical", DASH, DASH, DASH, DASH, pct(probe),
                       teacher.key])
    for r in rs:
        p = parameters(r)
        kind = "quantum" if r.model == "quantum" else "dequantised" if r.model == "twin" else "classical"
        t.rows.append([r.label, kind, count(p["classical"]), count(p["circuit"]), r.budget, pct(_mean_std(r, "val")),
                       pct(_mean_std(r)), r.key])
    return t


def standing_figure(task: str, teacher: Teacher, rs: list[Run], out: Path, name: str) -> str:
    """Test accuracy ± std of every contender, the teacher and the probe ceiling as vertical lines."""
    from stages.report import figures as F

    plt = F.plt
    scored = [r for r in rs if _mean_std(r) is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(scored), 2) + 1.4))
    for i, r in enumerate(scored):
        m, s = _mean_std(r)
        ax.barh(i, 100 * m, xerr=100 * s, color=F.COLORS.get(r.model, "#999999"), alpha=0.85, capsize=3)
    ax.set_yticks(range(len(scored)), [f"{r.label} ({count(sum(parameters(r).values()))})" for r in scored])
    ax.invert_yaxis()
    lines = [("teacher", teacher.metric("test", "accuracy"), F.COLORS["teacher"], "-"),
             ("probe ceiling", probe_accuracy(teacher), "#444444", "--")]
    for label, v, color, style in lines:
        if v is not None:
            ax.axvline(100 * v, color=color, linestyle=style, label=f"{label} {100 * v:.2f} %")
    lows = [100 * (_mean_std(r)[0] - _mean_std(r)[1]) for r in scored] + [100 * v for _, v, _, _ in lines if v]
    ax.set_xlim(max(0.0, min(lows, default=50) - 5), 100)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(f"Where the quantum student stands: {task}, {teacher.embedder} embeddings ({teacher.key})")
    ax.legend(loc="lower right", fontsize=8)
    return F._save(fig, out, name)


def standing_section(runs: list[Run], teachers: dict[str, Teacher], out: Path) -> tuple[list[str], list[str]]:
    """The section's markdown lines and the figure files it wrote into ``out``."""
    md, files = ["## Where the quantum student stands", ""], []
    groups, grid = contenders(runs), grids(runs)
    if not groups:
        return md + ["No distilled student runs yet; `make student` trains them.", ""], files
    for (task, tkey), rs in groups.items():
        teacher = teachers[tkey]
        name = standing_figure(task, teacher, rs, out, f"standing-{task}-{tkey}.png")
        files.append(name)
        md += [" ".join(verdict(task, rs, teacher, grid)), "", standing_table(task, teacher, rs).markdown(), "",
               f"![Where the quantum student stands: {task}]({name})", ""]
    return md, files

"""The paper's comparison: the quantum student beside the transformer students distilled from the same cache.

The paper (Tables 4–6, Figure 3) sets its QD-LLM student beside four compression baselines — TinyBERT, MiniLLM,
DistilBERT, PKD — on accuracy, P/R/F1, size, knowledge-distillation seconds per epoch and inference time. Here each
baseline is a run of ``stages/baselines`` (a transformer fine-tuned end to end from the cache's texts and teacher
logits), labelled by what it really is (its ``description``: method and model), never as the paper's checkpoint.
Per task and teacher: one table in the paper's layout with every student that exists (quantum, twin, logreg, MLP,
the baselines) and the teacher, one figure of accuracy against trainable parameters and against KD seconds per epoch
(log x, the Pareto front drawn, the teacher a star), and one sentence saying where the quantum student sits on
that front. Every time is this machine's (named in the report's hardware section), all from one run directory each.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from stages.report.runs import PRF, Run, Teacher
from stages.report.standing import contenders
from stages.report.tables import DASH, TRANSFORMERS, Table, count, pct, sci

BASELINES = TRANSFORMERS  # the paper's four, by the method each run reproduces
PAPER_NAMES = {"tinybert": "TinyBERT", "minillm": "MiniLLM", "distilbert": "DistilBERT", "pkd": "PKD"}


def _label(r: Run) -> str:
    """What a run really is: a baseline's own description ("DistilBERT-style: mpnet 6/12 layers, 67.0M")."""
    desc = r.metrics.get("description")
    return str(desc) if r.model in BASELINES and desc else r.label


def _acc(r: Run) -> tuple[float, float] | None:
    return r.stat("test", "accuracy")


def students(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Per (task, teacher) with at least one baseline: the distilled students the first section chose (one per
    label, budgets by the one-standard-error rule) plus the best baseline run of each method on validation."""
    base: dict[tuple[str, str, str], Run] = {}
    for r in runs:
        if r.model in BASELINES and _acc(r) is not None:
            k = (r.task, r.teacher_key, r.model)
            val = r.stat("val", "accuracy")
            best = base.get(k)
            if best is None or (val and best.stat("val", "accuracy") and val[0] > best.stat("val", "accuracy")[0]):
                base[k] = r
    out: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for (task, tkey, _), r in base.items():
        out[(task, tkey)].append(r)
    chosen = contenders([r for r in runs if r.model not in BASELINES])
    for key in out:
        out[key] = [r for r in chosen.get(key, []) if _acc(r) is not None] + sorted(
            out[key], key=lambda r: BASELINES.index(r.model))
    return dict(sorted(out.items()))


def comparison_table(task: str, teacher: Teacher, rs: list[Run]) -> Table:
    t = Table(title=f"The paper's comparison: {task}, teacher {teacher.name} (cache {teacher.key}), test split",
              headers=["Student", "Method", "Trainable params", "Seeds", "Acc (%)", "P (%)", "R (%)", "F1 (%)",
                       "Acc/Param", "KD s/epoch", "Acc/T_kd (1/s)", "Inference µs/example", "Run"],
              note="Every student distilled from this one teacher cache, on this machine; mean ± std over seeds. KD "
                   "s/epoch: one distillation epoch over the cache's training rows (the paper's T_kd); Acc/T_kd = "
                   "mean test accuracy / KD seconds per epoch. The transformer students are labelled by what they "
                   "are (method and model), not as the paper's checkpoints.")
    acc, tsec = teacher.metric("test", "accuracy"), teacher.train_seconds
    t.rows.append([f"teacher: {teacher.name} + LoRA", "teacher (fine-tune)", count(teacher.lora_params), "1",
                   *(pct(teacher.metric("test", m)) for m in PRF), DASH, DASH,
                   sci(acc / tsec if acc is not None and tsec else None), _time(_teacher_us(teacher)), teacher.key])
    for r in rs:
        epoch = r.stat("", "train_seconds_per_epoch")
        a = _acc(r)
        t.rows.append([_label(r), PAPER_NAMES.get(r.model, "qd-llm" if r.model == "quantum" else "qd-llm baseline"),
                       count(r.params), str(len(r.seeds)), *(pct(r.stat("test", m)) for m in PRF),
                       sci(a[0] / r.params if a and r.params else None), _time(epoch),
                       sci(a[0] / epoch[0] if a and epoch and epoch[0] else None),
                       _time(r.stat("", "inference_us_per_example")), r.key])
    return t


def _time(stat: tuple[float, float] | None) -> str:
    """Seconds or microseconds as people read them: 14,019 ± 120, 352.5, 0.512 ± 0.004."""
    if stat is None:
        return DASH
    def num(v: float) -> str:
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return num(stat[0]) + (f" ± {num(stat[1])}" if stat[1] else "")


def _teacher_us(teacher: Teacher) -> tuple[float, float] | None:
    """The teacher's inference µs per example: its logit export's seconds over the rows it exported."""
    m = teacher.manifest or {}
    seconds = (m.get("timings") or {}).get("export_logits")
    rows = sum(int(v.get("rows") or 0) for v in (m.get("files") or {}).values() if isinstance(v, dict))
    return (1e6 * float(seconds) / rows, 0.0) if seconds and rows else None


def pareto(points: list[tuple[float, float, Run]]) -> list[Run]:
    """The runs no other run beats on both axes (lower cost, higher accuracy), cheapest first."""
    front, best = [], float("-inf")
    for cost, a, r in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            front.append(r)
            best = a
    return front


def sentence(task: str, rs: list[Run]) -> str:
    """Where the quantum student sits on the accuracy-parameters front, against the most accurate student."""
    q = max((r for r in rs if r.model == "quantum"), key=lambda r: _acc(r)[0], default=None)
    top = max(rs, key=lambda r: _acc(r)[0])
    if q is None:
        return f"On {task} there is no quantum student beside the transformer students yet (`make student`)."
    front = pareto([(float(r.params), _acc(r)[0], r) for r in rs if r.params])
    on = "on" if q in front else "below"
    qa, ta = _acc(q), _acc(top)
    if top is q:
        return (f"On {task} the quantum student ({count(q.params)} parameters, {pct(qa)} %) is the most accurate "
                "student here, on the accuracy-parameters front.")
    qe, te = q.stat("", "train_seconds_per_epoch"), top.stat("", "train_seconds_per_epoch")
    cost = (f" and {te[0] / qe[0]:.1f}× the distillation time per epoch" if qe and te and qe[0] else "")
    return (f"On {task} the quantum student ({count(q.params)} parameters, {pct(qa)} %) is {on} the "
            f"accuracy-parameters front; the most accurate student, {_label(top)}, is "
            f"{100 * (ta[0] - qa[0]):.2f} points more accurate at {top.params / max(q.params, 1):,.0f}× the parameters"
            f"{cost}.")


def comparison_figure(task: str, teacher: Teacher, rs: list[Run], out: Path, name: str) -> str:
    """Accuracy against trainable parameters and against KD seconds per epoch (log x), each student with its std,
    the Pareto front drawn, the teacher a star."""
    from stages.report import figures as F

    plt = F.plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, (what, cost) in zip(axes, (("trainable parameters", lambda r: float(r.params or 0)),
                                       ("KD seconds per epoch", lambda r: (r.stat("", "train_seconds_per_epoch")
                                                                           or (0.0, 0.0))[0]))):
        points = [(cost(r), 100 * _acc(r)[0], r) for r in rs if cost(r) > 0]
        for x, y, r in points:
            ax.errorbar(x, y, yerr=100 * _acc(r)[1], fmt=F.MARKERS.get(r.model, "D"), capsize=3,
                        color=F.COLORS.get(r.model, "#ff7f00"), label=_label(r))
        front = pareto(points)
        fx = [x for x, _, r in sorted(points, key=lambda p: p[0]) if r in front]
        fy = [y for _, y, r in sorted(points, key=lambda p: p[0]) if r in front]
        ax.step(fx, fy, where="post", color="#777777", linestyle="--", linewidth=1, label="Pareto front")
        tx = float(teacher.lora_params or 0) if what == "trainable parameters" else float(teacher.train_seconds or 0)
        ta = teacher.metric("test", "accuracy")
        if tx > 0 and ta is not None:
            ax.plot([tx], [100 * ta], "*", ms=16, color=F.COLORS["teacher"], mec="black",
                    label=f"teacher {teacher.name} ({'LoRA' if what == 'trainable parameters' else 'fine-tune'})")
        ax.set_xscale("log")
        ax.set_xlabel(what + " (log)")
        ax.set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Accuracy against size and distillation time: {task} ({teacher.key})")
    return F._save(fig, out, name)


def compression_section(runs: list[Run], teachers: dict[str, Teacher], out: Path
                        ) -> tuple[list[str], list[str], set[str]]:
    """Markdown lines and figure files of "The paper's comparison", and the tasks whose paper Table 4/5/6 it showed
    after their table here (not to be shown again after the Table 4–6 style table)."""
    from stages.report import paper as P

    md, files = ["## The paper's comparison: the quantum student beside transformer students", ""], []
    groups, shown = students(runs), set()
    if not groups:
        return md + ["No transformer student yet; `make baselines` distils the TinyBERT-, MiniLLM- and "
                     "DistilBERT-style students from the same teacher caches.", ""], files, shown
    for (task, tkey), rs in groups.items():
        teacher = teachers.get(tkey) or Teacher(tkey, None)
        name = comparison_figure(task, teacher, rs, out, f"compression-{task}-{tkey}.png")
        files.append(name)
        md += [sentence(task, rs), "", comparison_table(task, teacher, rs).markdown(), "",
               f"![Accuracy against size and distillation time: {task}]({name})", ""]
        if task not in shown:
            md += P.task_markdown(task)
            shown.add(task)
    return md, files, shown

"""The paper's tables (3 to 8) built from run metrics: numbers in, markdown out.

Each builder returns a ``Table`` whose cells are already formatted; every number comes
straight from a run's ``metrics.json`` summary or a teacher manifest, nothing is
recomputed except the teacher's Acc/Param and Acc/T_kd (one division each).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import LOSSES
from pipeline.keys import short
from pipeline.models import PACKAGED_MODELS
from stages.report.runs import PRF, Run, Teacher, defaults_of

DASH = "—"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def markdown(self) -> str:
        def esc(c: str) -> str:
            return str(c).replace("|", "\\|")

        lines = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


# ---------------------------------------------------------------- formatting


def pct(stat: tuple[float, float] | float | None) -> str:
    """Accuracy-like values in percent: ``mean ± std`` over seeds, or a single value."""
    if stat is None:
        return DASH
    if isinstance(stat, tuple):
        return f"{100 * stat[0]:.2f} ± {100 * stat[1]:.2f}"
    return f"{100 * stat:.2f}"


def sci(v: float | None) -> str:
    """Small ratios (Acc/Param, Acc/T_kd) with three significant digits."""
    if v is None:
        return DASH
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.3e}"


def count(n: int | float | None) -> str:
    """Parameter counts: exact below a million, ``29.50M`` above (as the paper writes them)."""
    if n is None or n == 0:
        return DASH
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{int(n):,}"


def secs(stat: tuple[float, float] | None, digits: int = 3) -> str:
    if stat is None:
        return DASH
    return f"{stat[0]:.{digits}g} ± {stat[1]:.2g}"


# ---------------------------------------------------------------- selecting runs


def main_runs(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Per (task, teacher): one run per student model, the one closest to the paper's default configuration."""
    best: dict[tuple[str, str, str], Run] = {}
    for r in runs:
        k = (r.task, r.teacher_key, r.model)
        if k not in best or r.sort_key() < best[k].sort_key():
            best[k] = r
    out: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for (task, tkey, _), r in best.items():
        out[(task, tkey)].append(r)
    return {k: sorted(v, key=Run.sort_key) for k, v in sorted(out.items())}


def params_panels(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Per (task, teacher): the main runs plus the quantum runs that differ from them only in circuit size."""
    out = main_runs(runs)
    for group in _groups(runs, ("n_qubits", "n_layers"), models=("quantum",)):
        panel = out.setdefault((group[0].task, group[0].teacher_key), [])
        panel += [r for r in group if r not in panel]
    return {k: sorted(v, key=lambda r: (r.params, r.sort_key())) for k, v in sorted(out.items())}


def _groups(runs: list[Run], vary: tuple[str, ...] | None, models: tuple[str, ...] | None = None
            ) -> list[list[Run]]:
    """Runs that agree on everything except ``vary`` (or, with ``vary=None``, except the teacher)."""
    groups: dict[tuple, dict[Any, Run]] = defaultdict(dict)
    for r in runs:
        if models and r.model not in models:
            continue
        cfg = r.config
        fixed = tuple((f, cfg.get(f)) for f in r.fields if not vary or f not in vary)
        gkey = (r.task, None if vary is None else r.teacher_key, r.model, fixed)
        v = r.teacher_key if vary is None else tuple(cfg.get(f) for f in vary)
        if v not in groups[gkey] or r.sort_key() < groups[gkey][v].sort_key():
            groups[gkey][v] = r
    return [list(d.values()) for _, d in sorted(groups.items(), key=lambda kv: str(kv[0])) if len(d) > 1]


# ---------------------------------------------------------------- tables


def performance_table(task: str, teacher: Teacher, runs: list[Run], number: str = "4–6") -> Table:
    """Tables 4–6: teacher and students on one task, mean ± std over seeds on the test split."""
    t = Table(
        title=f"Table {number} style: {task}, teacher {teacher.name} (cache {teacher.key}), test split",
        headers=["Method", "Trainable params", "Budget", "Seeds", "Acc (%)", "P (%)", "R (%)", "F1 (%)", "Acc/Param",
                 "Acc/T_kd (1/s)", "Run"],
        note=("Students: each model at its own default budget (the run closest to its defaults), mean ± std over "
              "seeds of the checkpoint chosen on validation; these rows are not a ranking (the first section ranks "
              "students only when their budgets were searched on the same grid). Acc/Param = mean test "
              "accuracy / trainable parameters; Acc/T_kd = mean test accuracy / mean training seconds. "
              "Teacher: one fine-tune, its LoRA trainable parameters and fine-tune seconds."),
    )
    acc = teacher.metric("test", "accuracy")
    params, tsec = teacher.lora_params, teacher.train_seconds
    t.rows.append([f"teacher: {teacher.name} + LoRA", count(params), DASH, "1",
                   *(pct(teacher.metric("test", m)) for m in PRF),
                   sci(acc / params if acc is not None and params else None),
                   sci(acc / tsec if acc is not None and tsec else None), teacher.key])
    for r in runs:
        s = r.summary
        t.rows.append([f"student: {r.label}", count(r.params), r.budget, str(len(r.seeds)),
                       *(pct(r.stat("test", m)) for m in PRF),
                       sci(s.get("acc_per_param")), sci(s.get("acc_per_tkd")), r.key])
    return t


def parameter_table(paper: list[dict[str, Any]], teachers: dict[str, Teacher], runs: list[Run]) -> Table:
    """Table 3: trainable parameters of the paper's teachers, the teachers used and every student."""
    t = Table(title="Table 3 style: trainable parameters",
              headers=["Role", "Model", "Trainable params", "Exact count", "Paper (Table 3)"])
    for p in paper:
        n = p.get("lora_trainable_params")
        ref = p.get("paper_table3")
        role = "teacher, paper" if ref or p["model"] not in PACKAGED_MODELS else "teacher, offline ladder"
        t.rows.append([f"{role} (LoRA r=200, counted)", str(p["model"]), count(n),
                       f"{int(n):,}" if n else DASH, count(ref) if ref else DASH])
    for tk in sorted(teachers.values(), key=lambda x: (x.name, x.key)):
        n = tk.lora_params
        t.rows.append([f"teacher, used (cache {tk.key})", tk.name, count(n), f"{n:,}" if n else DASH, DASH])
    seen = set()
    for r in sorted(runs, key=Run.sort_key):
        k = (r.label, r.params)
        if k in seen:
            continue
        seen.add(k)
        role = ("quantum student" if r.model == "quantum" else "transformer student" if r.model in TRANSFORMERS
                else "classical student")
        t.rows.append([role, r.label, count(r.params), f"{r.params:,}", DASH])
    return t


TRANSFORMERS = ("tinybert", "minillm", "distilbert", "pkd")  # the compression baselines (stages/baselines)


def loss_ablation_tables(runs: list[Run], teachers: dict[str, Teacher]) -> list[Table]:
    """Table 7: the same teacher and student, trained with different losses."""
    out = []
    for group in _groups(runs, ("loss", "alpha")):
        if len({r.config.get("loss") for r in group}) < 2:
            continue
        group.sort(key=lambda r: (LOSSES.index(r.config["loss"]) if r.config.get("loss") in LOSSES else 9,
                                  r.config.get("alpha", 0)))
        r0 = group[0]
        tk = teachers.get(r0.teacher_key)
        t = Table(title=f"Table 7 style: loss ablation, {r0.task}, teacher {tk.name if tk else r0.teacher_key}, "
                        f"{_without(r0, ('loss', 'alpha'))}",
                  headers=["Loss", "α", "Seeds", "Acc (%)", "P (%)", "R (%)", "F1 (%)", "Run"])
        for r in group:
            t.rows.append([str(r.config.get("loss")), str(r.config.get("alpha")), str(len(r.seeds)),
                           *(pct(r.stat("test", m)) for m in PRF), r.key])
        out.append(t)
    return out


def teacher_data_key(teacher: Teacher | None) -> str | None:
    """The dataset a teacher was fine-tuned and exported on (its manifest's ``data_key``, short form); None when its
    cache manifest is not here, so the data it saw is unknown."""
    m = (teacher.manifest if teacher is not None else None) or {}
    k = m.get("data_key") or (m.get("inputs") or {}).get("data_key")
    return short(str(k)) if k else None


def teacher_ablation_tables(runs: list[Run], teachers: dict[str, Teacher]) -> list[Table]:
    """Table 8: one task, dataset and student configuration distilled from different teachers.

    Only teachers of the same data are compared: runs are first split by their teacher's data key, so two caches
    of one task built from different datasets (e.g. movie reviews and tweets) never share a table, and a teacher
    whose data is unknown (its cache is not here) is in none.
    """
    by_data: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        dkey = teacher_data_key(teachers.get(r.teacher_key))
        if dkey is not None:
            by_data[dkey].append(r)
    out = []
    for dkey, same_data in sorted(by_data.items()):
        for group in _groups(same_data, None):
            group.sort(key=lambda r: (teachers[r.teacher_key].name, r.teacher_key))
            r0 = group[0]
            t = Table(title=f"Table 8 style: teacher ablation, {r0.task} on dataset {dkey}, student {_without(r0, ())}",
                      headers=["Teacher", "LoRA params", "Embedder", "Teacher Acc (%)", "Student Acc (%)", "P (%)",
                               "R (%)", "F1 (%)", "Distillation gain (points)", "Run"],
                      note=f"Every teacher here was fine-tuned on the same data (dataset key {dkey}) with the same "
                           "fine-tune budget unless its name says otherwise; the packaged teachers are 4-bit GGUF "
                           "files de-quantised, so their weights carry the quantisation loss. Distillation gain: "
                           "this student's test accuracy minus the same student's with plain CE from the same cache.")
            for r in group:
                tk = teachers[r.teacher_key]
                t.rows.append([f"{tk.name} ({tk.key})", count(tk.lora_params), tk.embedder,
                               pct(tk.metric("test", "accuracy")), *(pct(r.stat("test", m)) for m in PRF),
                               _gain(r, runs), r.key])
            out.append(t)
    return out


def _gain(r: Run, runs: list[Run]) -> str:
    """KD minus CE test accuracy (points) of ``r`` against its CE twin on the same cache, or a dash."""
    if r.config.get("loss") == "ce":
        return DASH
    same = {k: v for k, v in r.config.items() if k not in ("loss", "seeds")}
    for c in runs:
        if (c.teacher_key == r.teacher_key and c.model == r.model and c.config.get("loss") == "ce"
                and {k: v for k, v in c.config.items() if k not in ("loss", "seeds")} == same):
            a, b = r.stat("test", "accuracy"), c.stat("test", "accuracy")
            if a and b:
                return f"{100 * (a[0] - b[0]):+.2f}"
    return DASH


def size_ablation_tables(runs: list[Run], teachers: dict[str, Teacher]) -> list[Table]:
    """Circuit size: the quantum student with different numbers of qubits and layers."""
    out = []
    for group in _groups(runs, ("n_qubits", "n_layers"), models=("quantum",)):
        group.sort(key=lambda r: (r.config.get("n_qubits", 0), r.config.get("n_layers", 0)))
        r0 = group[0]
        tk = teachers.get(r0.teacher_key)
        t = Table(title=f"Qubits and layers ablation: {r0.task}, teacher {tk.name if tk else r0.teacher_key}, "
                        f"{_without(r0, ('n_qubits', 'n_layers'))}",
                  headers=["Qubits", "Layers", "Trainable params", "Seeds", "Acc (%)", "F1 (%)", "Acc/Param",
                           "Train s/epoch", "Run"])
        for r in group:
            t.rows.append([str(r.config.get("n_qubits")), str(r.config.get("n_layers")), count(r.params),
                           str(len(r.seeds)), pct(r.stat("test", "accuracy")), pct(r.stat("test", "f1")),
                           sci(r.summary.get("acc_per_param")), secs(r.stat("", "train_seconds_per_epoch")),
                           r.key])
        out.append(t)
    return out


def timing_table(runs: list[Run], where: str = "") -> Table:
    t = Table(title=f"Cost: training and inference time of the students{', ' + where if where else ''}",
              headers=["Method", "Train s/epoch", "Inference µs/example", "Run"])
    for r in runs:
        t.rows.append([r.label, secs(r.stat("", "train_seconds_per_epoch")),
                       secs(r.stat("", "inference_us_per_example")), r.key])
    return t


def _without(run: Run, vary: tuple[str, ...]) -> str:
    """The run's model and every setting (other than the varied ones) that differs from the defaults."""
    cfg = run.config
    diff = [f"{f}={cfg[f]}" for f in run.fields
            if f not in vary and f in cfg and cfg[f] != getattr(defaults_of(run.model), f)]
    return f"{run.model}, " + (", ".join(diff) if diff else "other settings at their defaults")


def shots_table(evals: list, runs: list[Run]) -> Table:
    """Shots needed to come within 1 point of the exact accuracy, per noise evaluation and noise model."""
    by_key = {r.key: r for r in runs}
    t = Table(title="Shots to come within 1 point of the exact accuracy",
              headers=["Student", "Acc/Param", "Split (examples)", "Noise model", "Exact acc (%)",
                       "Acc at most shots (%)", "Shots within 1 point", "Noisy sim (examples/s)", "Run", "Evaluation"],
              note=("Exact = state-vector ⟨Z⟩ of the run's best-validation seed on the evaluated examples (no noise, "
                    "infinite shots). Each noise model's accuracy at S shots is the mean ± std over sampling repeats; "
                    "'Shots within 1 point' is the fewest evaluated S from which on the mean accuracy stays within "
                    "1 point of the exact accuracy (— when even the most shots are not). Acc/Param is the run's, from its metrics."))
    for e in evals:
        r = by_key.get(e.run)
        exact = e.exact_accuracy
        models = e.data.get("models") or {}
        split = (e.data.get("settings") or {}).get("split", "test")
        for m in e.models:
            rows = e.rows(m)
            if not rows:
                continue
            top = rows[-1]
            acc = top.get("accuracy") or {}
            ok = []  # from here on every larger shot count is within 1 point too
            for x in reversed(rows):
                if exact is None or abs(x["accuracy"]["mean"] - exact) > 0.01 + 1e-12:
                    break
                ok.append(x["shots"])
            rate = (models.get(m) or {}).get("examples_per_second") if m != "none" else None
            t.rows.append([r.label if r else DASH, sci(r.summary.get("acc_per_param")) if r else DASH,
                           f"{split} ({e.data.get('examples', '?')})", m, pct(exact),
                           f"{pct((float(acc['mean']), float(acc.get('std') or 0.0)))} at {top['shots']:,}"
                           if acc.get("mean") is not None else DASH,
                           f"{min(ok):,}" if ok else DASH, f"{rate:.3g}" if rate else DASH, e.run, e.key])
    return t


def _duration(seconds: float | None) -> str:
    """Device time in the largest unit that keeps it readable (s, h, days, years)."""
    if seconds is None:
        return DASH
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:,.0f} s"


def _big(n: int | float | None) -> str:
    """Counts of circuits and shots: exact below a million, 975.5k style above a thousand, 3.2G style above 1e9."""
    if n is None:
        return DASH
    for suffix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if n >= size:
            return f"{n / size:,.2f}{suffix}"
    return f"{int(n):,}"


def device_cost_table(runs: list[Run]) -> Table | None:
    """What training each quantum run would take on a device (its metrics.json ``device_cost``); None when no run
    recorded one."""
    rows = [(r, r.metrics.get("device_cost")) for r in runs if r.model == "quantum"]
    rows = [(r, c) for r, c in rows if isinstance(c, dict) and c.get("circuits_per_epoch") is not None]
    if not rows:
        return None
    first = rows[0][1].get("assumptions") or {}
    t = Table(title="What training on hardware would cost",
              headers=["Student", "Trained by", "Shots", "Train noise", "Test acc (%)", "Simulator s/epoch",
                       "Circuits / example·step", "Circuits / epoch", "Shots / epoch", "Epochs × seeds", "Circuits in all",
                       "Shots in all", "Device time in all", "Run"],
              note=("Circuit executions and shots of the training circuits (forward and gradient circuits of every "
                    "example, epoch and seed; each register of parallel:K its own circuit), and the device time they "
                    f"would need at {1e6 * float(first.get('seconds_per_shot') or 0):.0f} µs per shot and "
                    f"{1e3 * float(first.get('seconds_per_circuit') or 0):g} ms per circuit (the runs' "
                    "--device-shot-us and --device-circuit-ms; docs/student.md says where the figures come from). "
                    "An adjoint run is exact, which no device is: it is costed as the same training by "
                    "parameter-shift at the shots its row names. 'In all' covers every epoch and seed of the run; "
                    "validation on the device is not included."))
    for r, c in rows:
        cfg = r.config
        trained = c.get("gradient", cfg.get("gradient", "adjoint"))
        if c.get("costed_as") and c.get("costed_as") != trained:
            trained += f" (costed as {c['costed_as']})"
        shots = cfg.get("shots")
        t.rows.append([r.label, trained, f"{c.get('shots_per_circuit'):,}" + ("" if shots else " (assumed)"),
                       cfg.get("train_noise") or "none", pct(r.stat("test", "accuracy")),
                       secs(r.stat("", "train_seconds_per_epoch")), f"{c.get('circuits_per_example_step'):,}",
                       _big(c.get("circuits_per_epoch")), _big(c.get("shots_per_epoch")),
                       f"{c.get('epochs', '?')} × {c.get('seeds', '?')}", _big(c.get("circuits_total")), _big(c.get("shots_total")),
                       _duration(c.get("seconds_estimate")), r.key])
    return t

"""The report's figures as PNG files (matplotlib, Agg backend: no display needed).

Each function takes runs, writes one PNG and returns its file name. Colours follow the
student model (quantum, logistic regression, MLP) across every figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stages.report.runs import Run, Teacher  # noqa: E402

COLORS = {"quantum": "#6a3d9a", "logreg": "#1f78b4", "mlp": "#33a02c", "teacher": "#e31a1c"}
MARKERS = {"quantum": "o", "logreg": "s", "mlp": "^"}
DPI = 110

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3,
                     "figure.autolayout": False})


def _short(v: float) -> str:
    """Axis numbers as people write parameter counts: 500, 4k, 30M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def _save(fig, out: Path, name: str) -> str:
    fig.savefig(Path(out) / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def training_curves(runs: list[Run], out: Path, name: str, title: str) -> str:
    """Per run: train/val loss and val accuracy per epoch, one line (colour) per seed."""
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.2 * len(runs)), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for row, r in zip(axes, runs):
        for i, s in enumerate(r.seeds):
            c = s.get("curves") or {}
            ep = c.get("epoch") or list(range(1, len(c.get("train_loss", [])) + 1))
            col = cmap(i % 10)
            if c.get("train_loss"):
                row[0].plot(ep, c["train_loss"], "-", color=col, label=f"seed {s.get('seed')} train")
            if c.get("val_loss"):
                row[0].plot(ep, c["val_loss"], "--", color=col, label=f"seed {s.get('seed')} val")
            if c.get("val_accuracy"):
                row[1].plot(ep, 100 * np.asarray(c["val_accuracy"], dtype=float), "-o", ms=3, color=col,
                            label=f"seed {s.get('seed')}")
            if s.get("best_epoch") is not None and c.get("val_accuracy") and s["best_epoch"] in ep:
                j = ep.index(s["best_epoch"])
                row[1].plot([ep[j]], [100 * c["val_accuracy"][j]], "*", ms=12, color=col, mec="black")
        row[0].set(title=f"{r.label}: loss (solid train, dashed val)", xlabel="epoch", ylabel="loss")
        row[1].set(title=f"{r.label}: validation accuracy (★ chosen epoch)", xlabel="epoch", ylabel="accuracy (%)")
        row[1].legend(fontsize=8, loc="best", ncol=2)
        for ax in row:
            ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return _save(fig, out, name)


def confusion_matrices(runs: list[Run], out: Path, name: str, title: str) -> str:
    """Test confusion matrix of each run, summed over seeds; colour = share of the true class."""
    fig, axes = plt.subplots(1, len(runs), figsize=(3.9 * len(runs), 3.9), squeeze=False)
    for ax, r in zip(axes[0], runs):
        mats = [np.asarray(s["test"]["confusion"], dtype=float) for s in r.seeds if s.get("test", {}).get("confusion")]
        if not mats:
            ax.set_axis_off()
            ax.set_title(f"{r.label}: no confusion matrix")
            continue
        m = np.sum(mats, axis=0)
        share = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        names = r.class_names or [str(i) for i in range(len(m))]
        ax.set_xticks(range(len(m)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(m)), names)
        ax.grid(False)
        for i in range(len(m)):
            for j in range(len(m)):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center",
                        color="white" if share[i, j] > 0.6 else "black", fontsize=9)
        ax.set(title=f"{r.label}\n(sum over {len(mats)} seeds)", xlabel="predicted", ylabel="true")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out, name)


def accuracy_vs_params(panels: dict[tuple[str, str], list[Run]], teachers: dict[str, Teacher], out: Path,
                       name: str) -> str:
    """Mean test accuracy (± std over seeds) against trainable parameters, log x; one panel per task and teacher."""
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.0 * ncol, 4.6 * nrow), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, ((task, tkey), runs) in zip(axes.flat, panels.items()):
        shown = set()
        for i, r in enumerate(runs):
            st = r.stat("test", "accuracy")
            if not st or not r.params:
                continue
            label = f"{r.model} student" if r.model not in shown else None
            shown.add(r.model)
            ax.errorbar([r.params], [100 * st[0]], yerr=[100 * st[1]], fmt=MARKERS.get(r.model, "o"), capsize=3,
                        ms=7, color=COLORS.get(r.model, "gray"), label=label)
            ax.annotate(r.label, (r.params, 100 * st[0]), fontsize=7, xytext=(6, 6 if i % 2 else -10),
                        textcoords="offset points", color=COLORS.get(r.model, "black"))
        tk = teachers[tkey]
        acc = tk.metric("test", "accuracy")
        if acc is not None and tk.lora_params:
            ax.plot([tk.lora_params], [100 * acc], "*", ms=15, color=COLORS["teacher"], mec="black",
                    label="teacher (LoRA)")
            ax.annotate(tk.name, (tk.lora_params, 100 * acc), fontsize=8, xytext=(-8, 8),
                        textcoords="offset points", ha="right")
        ax.set_xscale("log")
        ax.set(title=f"{task}, teacher {tk.name} ({tkey})", xlabel="trainable parameters (log scale)",
               ylabel="test accuracy (%)")
        ax.margins(x=0.25, y=0.15)
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, 0), min(hi, 101))
        lo, hi = ax.get_xlim()
        subs = (1.0, 2.0, 5.0) if hi / lo < 100 else (1.0,)  # a few ticks per decade only on narrow ranges
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _short(v)))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Test accuracy against trainable parameters")
    fig.tight_layout()
    return _save(fig, out, name)


def timings(runs: list[Run], out: Path, name: str, title: str) -> str:
    """Train seconds per epoch and inference µs per example per method (mean ± std over seeds, log y)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = [r.label for r in runs]
    for ax, metric, ylabel in ((axes[0], "train_seconds_per_epoch", "train seconds per epoch"),
                               (axes[1], "inference_us_per_example", "inference µs per example")):
        stats = [r.stat("", metric) or (np.nan, 0.0) for r in runs]
        means = np.array([s[0] for s in stats], dtype=float)
        stds = np.array([s[1] for s in stats], dtype=float)
        x = np.arange(len(runs))
        ax.bar(x, means, yerr=stds, capsize=4, color=[COLORS.get(r.model, "gray") for r in runs])
        for xi, m, sd in zip(x, means, stds):
            if np.isfinite(m):  # above the error bar, so the two never overlap
                ax.annotate(f"{m:,.0f}" if m >= 100 else f"{m:.3g}", (xi, m + (sd if np.isfinite(sd) else 0)), ha="center", va="bottom",
                            fontsize=8, xytext=(0, 3), textcoords="offset points")
        ok = means[np.isfinite(means)]
        if ok.size and ok.min() > 0 and ok.max() / ok.min() > 20:  # orders of magnitude apart
            ax.set_yscale("log")
            ylabel += " (log)"
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(x, labels, rotation=20, ha="right")
        ax.set(ylabel=ylabel, title=ylabel.removesuffix(" (log)"))
        ax.margins(y=0.2)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out, name)


def accuracy_vs_shots(evals: list, labels: dict[str, str], out: Path, name: str) -> str:
    """Accuracy (mean ± std over sampling repeats) against shots per example, log x, one line per noise model;
    the exact (state-vector, infinite-shot) accuracy dashed. One panel per noise evaluation."""
    ncol = min(2, len(evals))
    nrow = -(-len(evals) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.4 * ncol, 4.4 * nrow), squeeze=False)
    for ax in axes.flat[len(evals):]:
        ax.set_axis_off()
    cmap = plt.get_cmap("tab10")
    for ax, e in zip(axes.flat, evals):
        shots = set()
        for i, model in enumerate(e.models):
            rows = e.rows(model)
            x = [r["shots"] for r in rows]
            shots.update(x)
            y = [100 * r["accuracy"]["mean"] for r in rows]
            err = [100 * (r["accuracy"].get("std") or 0.0) for r in rows]
            ax.errorbar(x, y, yerr=err, fmt="-o", ms=4, capsize=3, color="black" if model == "none" else cmap(i % 10),
                        label="no noise (shots only)" if model == "none" else model)
        if e.exact_accuracy is not None:
            ax.axhline(100 * e.exact_accuracy, ls="--", color="gray", label="exact (state vector)")
        ax.set_xscale("log")
        if shots:
            ax.set_xticks(sorted(shots), [f"{s:,}" for s in sorted(shots)])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        split = (e.data.get("settings") or {}).get("split", "test")
        ax.set(title=f"{labels.get(e.run, e.run)} (run {e.run})\n{split}, {e.data.get('examples', '?')} examples",
               xlabel="shots per example (log scale)", ylabel="accuracy (%)")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Accuracy against shots")
    fig.tight_layout()
    return _save(fig, out, name)

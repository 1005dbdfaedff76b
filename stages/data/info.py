"""``qdllm data info``: what a built dataset holds, as rich tables (counts, balance, text lengths)."""

from __future__ import annotations

import numpy as np
from rich.table import Table

from stages.data.dataset import SPLITS, Dataset

LENGTH_BINS = (0, 5, 10, 15, 20, 30, 40, 60, 10**9)  # words


def _bin_labels() -> list[str]:
    labels = []
    for lo, hi in zip(LENGTH_BINS[:-1], LENGTH_BINS[1:]):
        labels.append(f"{lo + 1}–{hi}" if hi < 10**9 else f"{lo + 1}+")
    return labels


def tables(ds: Dataset) -> list[Table]:
    """Per-split counts and balance, word-length statistics, and a length histogram per class."""
    names = ds.class_names
    counts = Table(title=f"{ds.task} dataset {ds.manifest['key']} ({ds.path})")
    counts.add_column("split")
    counts.add_column("rows", justify="right")
    for n in names:
        counts.add_column(n, justify="right")
    counts.add_column("words mean", justify="right")
    counts.add_column("median", justify="right")
    counts.add_column("min–max", justify="right")
    words = {}
    for s in SPLITS:
        df = ds.splits[s]
        w = np.array([len(t.split()) for t in df["text"].to_list()])
        words[s] = (w, df["label"].to_numpy())
        cells = [f"{int((df['label'] == i).sum())} ({(df['label'] == i).mean():.0%})" if df.height else "0"
                 for i in range(len(names))]
        stats = [f"{w.mean():.1f}", f"{np.median(w):.0f}", f"{w.min()}–{w.max()}"] if len(w) else ["-"] * 3
        counts.add_row(s, str(df.height), *cells, *stats)

    allw = np.concatenate([words[s][0] for s in SPLITS])
    ally = np.concatenate([words[s][1] for s in SPLITS])
    hist = Table(title="text length in words, per class (all splits)")
    hist.add_column("class")
    hist.add_column("mean", justify="right")
    hist.add_column("p10/p50/p90", justify="right")
    for b in _bin_labels():
        hist.add_column(b, justify="right")
    for i, n in enumerate(names):
        w = allw[ally == i]
        if not len(w):
            continue
        h, _ = np.histogram(w, bins=np.array(LENGTH_BINS) + 0.5)
        p10, p50, p90 = np.percentile(w, [10, 50, 90])
        hist.add_row(n, f"{w.mean():.1f}", f"{p10:.0f}/{p50:.0f}/{p90:.0f}",
                     *[f"{c / len(w):.0%}" for c in h])
    return [counts, hist]


def removed_line(ds: Dataset) -> str:
    build = ds.manifest.get("build", {})
    steps = build.get("removed", {})
    order = [k for k in ("empty", "conflicting", "duplicate", "balance", "cap") if k in steps]
    removed = ", ".join(f"{k} {steps[k]}" for k in order + sorted(set(steps) - set(order)))
    return f"rows in {build.get('rows_in', '?')}, out {build.get('rows_out', '?')}; removed: {removed}"

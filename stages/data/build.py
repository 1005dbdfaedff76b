"""From raw labelled texts to balanced train/val/test splits, and the ``qdllm data`` build itself.

Rules, in order (the manifest counts what each removed):
1. whitespace and Unicode are normalised (NFC: an NFD copy of a text is the same text), empty texts dropped;
2. texts that appear under two labels are dropped (all their copies);
3. exact duplicates are dropped (the first copy stays);
4. classes are balanced by downsampling to the smallest; ``max_per_class`` caps them further;
5. each class is split 6:2:2 with the seed. Grouped sources (articles) are split by group
   first, so no document leaks across splits, then balanced within each split.

Sampling depends only on the texts (sorted by id) and the seed, never on file order,
so ids and splits are stable across runs.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.cache import text_id
from pipeline.config import DataConfig
from pipeline.errors import QdllmError
from pipeline.plan import Plan
from pipeline.publish import is_complete, key_lock
from stages.data.dataset import SPLITS, frame, write_dataset
from stages.data.sources import Raw, check_read, load_source

log = logging.getLogger(__name__)

MIN_PER_CLASS = 5  # so that 6:2:2 leaves at least one example of each class in val and test


def clean(raw: Raw) -> tuple[list[tuple[str, int, str | None]], dict[str, int]]:
    """Normalise, then drop empties, cross-label conflicts and duplicates; returns rows and removal counts."""
    groups = raw.groups or [None] * len(raw.texts)
    rows = [(unicodedata.normalize("NFC", " ".join(str(t).split())), int(y), g)
            for t, y, g in zip(raw.texts, raw.labels, groups)]
    nonempty = [r for r in rows if r[0]]
    labels_of: dict[str, set[int]] = defaultdict(set)
    for t, y, _ in nonempty:
        labels_of[t].add(y)
    agreed = [r for r in nonempty if len(labels_of[r[0]]) == 1]
    seen: set[str] = set()
    unique = []
    for r in agreed:
        if r[0] not in seen:
            seen.add(r[0])
            unique.append(r)
    removed = {"empty": len(rows) - len(nonempty), "conflicting": len(nonempty) - len(agreed),
               "duplicate": len(agreed) - len(unique)}
    return unique, removed


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, *salt])


def _sample(texts: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` texts drawn without replacement, independent of the input order."""
    ordered = sorted(texts, key=text_id)
    return [ordered[i] for i in rng.permutation(len(ordered))[:n]]


def _split_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    n_train, n_val = round(n * fractions[0]), round(n * fractions[1])
    return n_train, n_val, n - n_train - n_val


def split_balanced(rows, class_names: list[str], cfg: DataConfig) -> tuple[dict[str, list], dict[str, int]]:
    """Balance and split rows of (text, label, group); returns per-split (text, label) lists and removals."""
    by_class: dict[int, list] = defaultdict(list)
    for r in rows:
        by_class[r[1]].append(r)
    present = [c for c in range(len(class_names)) if by_class.get(c)]
    if len(present) < 2:
        only = ", ".join(class_names[c] for c in present) or "none"
        raise QdllmError(f"After cleaning the data holds only one class ({only}); a classifier needs at least two.")
    counts = {c: len(by_class.get(c, [])) for c in range(len(class_names))}
    smallest = min(counts.values())
    if smallest < MIN_PER_CLASS:
        worst = min(counts, key=counts.get)
        raise QdllmError(f"Class {class_names[worst]!r} has {smallest} texts after cleaning; each class needs at "
                         f"least {MIN_PER_CLASS} for a 6:2:2 split.")
    grouped = any(r[2] is not None for r in rows)
    out: dict[str, list] = {s: [] for s in SPLITS}
    removed = {"balance": 0, "cap": 0}
    if not grouped:
        n = smallest if not cfg.max_per_class else min(smallest, cfg.max_per_class)
        removed["balance"] = sum(counts.values()) - smallest * len(counts)
        removed["cap"] = (smallest - n) * len(counts)
        sizes = _split_sizes(n, cfg.split)
        if min(sizes) == 0:
            need = next(m for m in range(n + 1, 10**6) if min(_split_sizes(m, cfg.split)) > 0)
            empty = SPLITS[sizes.index(0)]
            cause = (f"--max-per-class {cfg.max_per_class}" if cfg.max_per_class and cfg.max_per_class < smallest
                     else f"the smallest class ({smallest} texts after cleaning)")
            raise QdllmError(f"{cause} leaves the {empty} split empty with --split {','.join(f'{f:g}' for f in cfg.split)}; "
                             f"each class needs at least {need} texts, so raise --max-per-class or give more data.")
        for c in counts:
            picked = _sample([r[0] for r in by_class[c]], n, _rng(cfg.seed, c))
            start = 0
            for name, size in zip(SPLITS, sizes):
                out[name] += [(t, c) for t in picked[start:start + size]]
                start += size
        return out, removed
    # Grouped: whole groups go to one split (by where their middle falls), then balance within each split.
    per_split: dict[str, dict[int, list[str]]] = {s: defaultdict(list) for s in SPLITS}
    bounds = np.cumsum(cfg.split)
    for c in counts:
        texts_of: dict[str, list[str]] = defaultdict(list)
        for t, _, g in by_class[c]:
            texts_of[str(g)].append(t)
        names = sorted(texts_of)
        total, seen = counts[c], 0
        for gi in _rng(cfg.seed, c, 1).permutation(len(names)):
            g = names[gi]
            mid = (seen + len(texts_of[g]) / 2) / total
            split = SPLITS[min(int(np.searchsorted(bounds, mid, side="right")), 2)]
            per_split[split][c] += texts_of[g]
            seen += len(texts_of[g])
    for si, split in enumerate(SPLITS):
        m = min(len(per_split[split][c]) for c in counts)
        cap = round(cfg.max_per_class * cfg.split[si]) if cfg.max_per_class else m
        n = min(m, cap)
        removed["balance"] += sum(len(per_split[split][c]) - m for c in counts)
        removed["cap"] += (m - n) * len(counts)
        for c in counts:
            out[split] += [(t, c) for t in _sample(per_split[split][c], n, _rng(cfg.seed, c, 2, si))]
    for split in SPLITS:
        if not out[split]:
            raise QdllmError(f"The {split} split is empty because the data has too few documents per class; "
                             "give more data.")
    return out, removed


def prepare(raw: Raw, cfg: DataConfig) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """Clean, balance and split; the frames are sorted by id (a stable, label-mixed order)."""
    rows, removed = clean(raw)
    parts, removed2 = split_balanced(rows, raw.class_names, cfg)
    splits = {}
    for name in SPLITS:
        texts = [t for t, _ in parts[name]]
        labels = [y for _, y in parts[name]]
        splits[name] = frame(texts, labels).sort("id")
    report = {"rows_in": len(raw.texts), "removed": {**removed, **removed2},
              "rows_out": sum(df.height for df in splits.values()),
              "grouped_by": "document" if raw.groups else None, "source_notes": raw.notes}
    return splits, report


def build(plan: Plan) -> tuple[Path, bool]:
    """Build the dataset ``plan.data`` names unless it exists; returns (directory, whether it was built now)."""
    cfg, key, final = plan.data.config, plan.data.key, plan.data.dir
    if is_complete(final):
        return final, False
    with key_lock(final):
        if is_complete(final):  # another process built it while we waited
            return final, False
        t0 = time.perf_counter()
        raw = load_source(cfg)
        check_read(key.inputs["source"], cfg.source)  # what was parsed is what the key hashed
        t_load = time.perf_counter() - t0
        splits, report = prepare(raw, cfg)
        write_dataset(final, splits, task=cfg.task, class_names=raw.class_names, key=key.short, inputs=key.inputs,
                      extra={"key_full": key.full, "build": report, "source_path": cfg.source, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "timings": {"load_s": round(t_load, 3), "total_s": round(time.perf_counter() - t0, 3)}})
    return final, True

"""Test helpers: synthetic teacher caches with the real writer, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.cache import SPLITS, TeacherSplit, text_id, write_teacher_cache


def synthetic_splits(n: int = 60, num_classes: int = 2, dim: int = 16, seed: int = 0,
                     fractions=(0.6, 0.2, 0.2)) -> dict[str, TeacherSplit]:
    """Linearly separable-ish data whose teacher logits agree with the labels most of the time."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim)).astype(np.float32) * 2
    out = {}
    start = 0
    for name, frac in zip(SPLITS, fractions):
        m = max(num_classes, int(round(n * frac)))
        labels = np.arange(m) % num_classes
        emb = centers[labels] + rng.normal(size=(m, dim)).astype(np.float32)
        logits = (np.eye(num_classes, dtype=np.float32)[labels] * 3 + rng.normal(size=(m, num_classes))).astype(np.float32)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
        texts = [f"example {start + i} of class {int(y)}" for i, y in enumerate(labels)]
        start += m
        out[name] = TeacherSplit(ids=[text_id(t) for t in texts], texts=texts, labels=labels.astype(np.int64),
                                 logits=logits, probs=probs, embeddings=emb.astype(np.float32))
    return out


def write_synthetic_cache(final: Path, n: int = 60, num_classes: int = 2, dim: int = 16, seed: int = 0,
                          key: str = "synthetic", task: str = "synthetic", transfer: int = 0,
                          layers: tuple[int, int] | None = None) -> Path:
    """A cache from ``synthetic_splits``; ``transfer`` > 0 adds that many unlabeled rows (label null); ``layers``
    (K, H) adds a ``teacher_layers`` column (states that depend on the label), as layers 2, 4, ... of a 2K+2-layer
    teacher."""
    class_names = [f"class{i}" for i in range(num_classes)]
    splits = synthetic_splits(n, num_classes, dim, seed)
    if transfer:
        extra = synthetic_splits(transfer * 5, num_classes, dim, seed + 1, fractions=(0.2, 0.2, 0.2))["train"]
        extra.labels = np.full(len(extra.labels), -1, dtype=np.int64)
        extra.texts = [f"unlabeled {t}" for t in extra.texts]
        extra.ids = [text_id(t) for t in extra.texts]
        splits["transfer"] = extra
    info = None
    if layers:
        rng = np.random.default_rng(seed + 2)
        centers = rng.normal(size=(num_classes + 1, *layers)).astype(np.float32)
        for s in splits.values():
            s.layers = (centers[s.labels] + 0.3 * rng.normal(size=(len(s.labels), *layers))).astype(np.float32)
        info = {"layers": [2 * (j + 1) for j in range(layers[0])], "num_layers": 2 * layers[0] + 2}
    return write_teacher_cache(
        Path(final), splits, key=key, inputs={"synthetic": True},
        task=task, class_names=class_names, embedding_source="synthetic",
        extra={"teacher_metrics": {"val": {"accuracy": 1.0}, "test": {"accuracy": 1.0}}}, layers_info=info,
    )


ROOT = Path(__file__).resolve().parent.parent


def data_config(task: str = "emotion", source: str = "", **kw):
    from pipeline.config import DataConfig

    return DataConfig(task=task, source=source, **kw)


def build_data(cfg):
    """Build the dataset of a data config through the same plan the CLI resolves."""
    from pipeline.plan import resolve
    from stages.data.build import build

    return build(resolve(data=cfg))


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600):
    """Run ``qdllm`` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "stages.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT, timeout=timeout)


def fails(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Assert a clean failure: non-zero exit, no traceback, one ``error:`` naming ``words``; return the message."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    err = " ".join(proc.stderr.split())
    assert err.count("error:") == 1, out
    message = err[err.index("error:"):]
    for w in words:
        assert w in message, (w, message)
    return message


TIMINGS = ("train_seconds_per_epoch", "train_seconds_total", "inference_us_per_example")


def run_results(student_root: Path) -> dict:
    """Every run under ``student_root`` by key: its metrics without timings, and each checkpoint's metadata and
    tensor bytes (compared bit for bit; the key order inside a safetensors file is not part of the result)."""
    import json

    from safetensors import safe_open

    out = {}
    for run in sorted(p for p in Path(student_root).iterdir() if not p.name.startswith(".")):
        metrics = json.loads((run / "metrics.json").read_text())
        for s in metrics["seeds"]:
            for k in TIMINGS:
                s.pop(k)
        metrics.pop("summary")
        ckpts = {}
        for p in sorted(run.glob("weights-*")):
            with safe_open(str(p), "numpy") as f:
                ckpts[p.name] = (f.metadata(), {k: f.get_tensor(k).tobytes() for k in f.keys()})
        out[run.name] = (metrics, ckpts)
    return out


def bench_texts(n: int) -> list[str]:
    """``n`` texts for a benchmark: the built emotion dataset's training texts when present (cycled), else
    generated movie-review-like sentences."""
    found = sorted((ROOT / "data" / "emotion").glob("*/train.parquet"))
    if found:
        import polars as pl

        pool = pl.read_parquet(found[0])["text"].to_list()
    else:
        rng = np.random.default_rng(0)
        words = "the a film movie story was very good bad dull great awful plot acting of and".split()
        pool = [" ".join(rng.choice(words, size=rng.integers(5, 25))) for _ in range(2000)]
    return [pool[i % len(pool)] for i in range(n)]


def train_student(cache_root: Path, teacher_key: str, *flags: str) -> dict:
    """Train one quantum student (no classical or CE twins) on ``cache_root/teacher/<teacher_key>`` with
    ``qdllm student`` in a subprocess, as a user would; returns the new run's metrics.json."""
    runs = Path(cache_root) / "student"

    def listed() -> set[Path]:
        return {p for p in runs.iterdir() if not p.name.startswith(".")} if runs.is_dir() else set()  # no locks

    before = listed()
    subprocess.run([sys.executable, "-m", "stages.cli", "-q", "student", "--teacher-key", teacher_key,
                    "--no-classical", "--no-ce-baseline", *flags], check=True, cwd=ROOT,
                   env={**os.environ, "QDLLM_CACHE_DIR": str(cache_root)})
    (new,) = listed() - before
    return json.loads((new / "metrics.json").read_text())

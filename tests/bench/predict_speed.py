"""End-to-end `student predict` speed: frozen transformer embedder vs its static (model2vec) distillation.

For each embedder: load it once (not timed), then time embedding N texts and running the quantum student
(n=11, L=2) on them, medians of repeats; prints texts/s for the embedding, the circuit and both together.
Texts: the built emotion dataset when present, else generated sentences. The static embedder is distilled
once on first use (minutes).

``--accuracy-from KEY`` also trains the default quantum student (KL+JS+CE, n=11, L=2, every seed) on each
embedder from one teacher cache: the same rows and teacher logits, the ``embedding`` column recomputed from the
cache's ``text`` column (the cache's own embeddings reused for its own embedder), in a scratch cache directory;
prints test accuracy mean ± std over seeds and the agreement with the teacher.

Run: ``.venv/bin/python tests/bench/predict_speed.py [--n 8000] [--embedders minilm,minilm-static]
[--accuracy-from TEACHER_KEY]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import bench_texts, train_student

from pipeline.blas import describe
from stages.lm.embed import load_encoder


def student_accuracy(teacher_key: str, embedders: list[str]) -> None:
    """Train the default quantum student on each embedder's view of one teacher cache; print test accuracy."""
    from dataclasses import replace

    from pipeline.cache import read_teacher_cache, write_teacher_cache
    from pipeline.manifests import teacher_manifest
    from pipeline.paths import cache_dir

    src = cache_dir() / "teacher" / teacher_key
    manifest = json.loads((src / "manifest.json").read_text())
    own = teacher_manifest(src).embedder_name
    cache = read_teacher_cache(src, transfer=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in embedders:
            splits = dict(cache.splits)
            if name != own:
                encode = load_encoder(name)
                splits = {s: replace(v, embeddings=encode(v.texts)) for s, v in splits.items()}
            extra = {k: v for k, v in manifest.items() if k in ("teacher_metrics", "probe", "model", "profile")}
            write_teacher_cache(Path(tmp) / "teacher" / name, splits, key=name, inputs={"from": teacher_key},
                                task=manifest["task"], class_names=manifest["class_names"],
                                embedding_source=name, extra={**extra, "embedder": name})
            t0 = time.perf_counter()
            test = train_student(Path(tmp), name)["summary"]["test"]
            dim = splits["train"].embeddings.shape[1]
            print(f"{name:<16} D={dim:<4} quantum KL+JS+CE test accuracy {100 * test['accuracy']['mean']:.2f} ± "
                  f"{100 * test['accuracy']['std']:.2f} %, agreement {100 * test['agreement']['mean']:.1f} % "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--embedders", default="minilm,minilm-static")
    ap.add_argument("--accuracy-from", metavar="TEACHER_KEY", help="also train the quantum student on each embedder")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    from stages.student.model import QuantumStudent
    from stages.student.train import predict_logits

    print(describe())
    print(f"{args.n} texts, quantum student n=11 L=2; load average {os.getloadavg()[0]:.1f} on "
          f"{len(os.sched_getaffinity(0))} usable CPUs")
    xs = bench_texts(args.n)
    for name in [] if args.skip_speed else args.embedders.split(","):
        encode = load_encoder(name)
        encode(xs[:64])  # warm up
        te, tc = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            emb = encode(xs)
            t1 = time.perf_counter()
            model = QuantumStudent(emb.shape[1], 2, "paper", 11, 2, input_scaling="l2")
            predict_logits(model, model.init(np.random.default_rng(0)), emb)
            te.append(t1 - t0)
            tc.append(time.perf_counter() - t1)
        e, c = statistics.median(te), statistics.median(tc)
        print(f"{name:<16} D={emb.shape[1]:<4} embed {args.n / e:9,.0f} texts/s   circuit {args.n / c:9,.0f} texts/s   "
              f"end to end {args.n / (e + c):9,.0f} texts/s", flush=True)
    if args.accuracy_from:
        student_accuracy(args.accuracy_from, args.embedders.split(","))


if __name__ == "__main__":
    main()

"""End-to-end `student predict` speed: frozen transformer embedder vs its static (model2vec) distillation.

For each embedder: load it once (not timed), then time embedding N texts and running the quantum student
(n=11, L=2) on them, medians of repeats; prints texts/s for the embedding, the circuit and both together.
Texts: the built emotion dataset when present, else generated sentences. The static embedder is distilled
once on first use (minutes). Run: ``.venv/bin/python tests/bench/predict_speed.py [--n 8000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pipeline.blas import describe  # noqa: E402


def texts(n: int) -> list[str]:
    found = sorted((ROOT / "data" / "emotion").glob("*/train.parquet"))
    if found:
        import polars as pl

        pool = pl.read_parquet(found[0])["text"].to_list()
    else:
        rng = np.random.default_rng(0)
        words = "the a film movie story was very good bad dull great awful plot acting of and".split()
        pool = [" ".join(rng.choice(words, size=rng.integers(5, 25))) for _ in range(2000)]
    return [pool[i % len(pool)] for i in range(n)]


def encoder_for(name: str):
    """A callable texts -> (N, D) with the model already loaded."""
    from pipeline.models import STATIC_SUFFIX
    from stages.lm.models import resolve_embedder_dir

    path = resolve_embedder_dir(name)
    if name.endswith(STATIC_SUFFIX):
        from model2vec import StaticModel

        model = StaticModel.from_pretrained(path)
        return lambda xs: np.asarray(model.encode(xs, batch_size=4096, show_progress_bar=False), dtype=np.float64)
    import torch
    from transformers import AutoModel, AutoTokenizer

    from stages.lm.embed import _mean_pool
    from stages.lm.models import device_and_dtype

    device, _ = device_and_dtype()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).to(device).eval()

    def encode(xs):
        out = []
        with torch.inference_mode():
            for i in range(0, len(xs), 64):
                enc = tok(xs[i:i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
                out.append(_mean_pool(model(**enc).last_hidden_state.float(), enc["attention_mask"]).numpy())
        return np.concatenate(out).astype(np.float64)

    return encode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--embedders", default="minilm,minilm-static")
    args = ap.parse_args()
    from stages.student.model import QuantumStudent
    from stages.student.train import predict_logits

    print(describe())
    print(f"{args.n} texts, quantum student n=11 L=2; load average {os.getloadavg()[0]:.1f} on "
          f"{len(os.sched_getaffinity(0))} usable CPUs")
    xs = texts(args.n)
    for name in args.embedders.split(","):
        encode = encoder_for(name)
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
              f"end to end {args.n / (e + c):9,.0f} texts/s")


if __name__ == "__main__":
    main()

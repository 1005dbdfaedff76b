"""Which frozen embedder should be the default? Validation accuracy of the probe on each task, and the cost.

For every built dataset under data/<task>/ (one per task: the first found) and every embedder named, embed
up to --train training texts and every validation text, fit the probe (`pipeline.probe`: a logistic
regression with CE on the embeddings, the ceiling any student on those embeddings works under) and print
its validation accuracy and the embedding throughput. Test texts are never used.
Run: ``.venv/bin/python tests/bench/embedder_choice.py [--embedders minilm,mpnet] [--train 2000] [--tasks thematic]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from pipeline.blas import describe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embedders", default="minilm,mpnet")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=800)
    ap.add_argument("--tasks", default="", help="comma-separated task names (default: every built task)")
    args = ap.parse_args()
    import polars as pl

    from pipeline.probe import probe_ceiling
    from stages.lm.embed import embed_texts

    print(describe())
    print(f"load average {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} usable CPUs")
    wanted = set(filter(None, args.tasks.split(",")))
    for task_dir in sorted(p for p in (ROOT / "data").iterdir() if p.is_dir() and p.name != "fixtures"
                           and (not wanted or p.name in wanted)):
        built = sorted(d for d in task_dir.iterdir() if (d / "manifest.json").is_file())
        if not built:
            continue
        d = built[0]
        tr = pl.read_parquet(d / "train.parquet").sample(fraction=1.0, shuffle=True, seed=0).head(args.train)
        va = pl.read_parquet(d / "val.parquet").sample(fraction=1.0, shuffle=True, seed=0).head(args.val)
        classes = int(max(tr["label"].max(), va["label"].max())) + 1
        for name in args.embedders.split(","):
            texts = tr["text"].to_list() + va["text"].to_list()
            embed_texts(name, texts[:8])  # load once
            t0 = time.perf_counter()
            x = embed_texts(name, texts)
            dt = time.perf_counter() - t0
            n = tr.height
            yt, yv = tr["label"].to_numpy(), va["label"].to_numpy()
            p = probe_ceiling(x[:n], yt, x[n:], yv, x[n:], yv, classes)
            print(f"{task_dir.name:<9} {d.name}  {name:<14} D={x.shape[1]:<4} probe val acc {p['val']['accuracy'] * 100:6.2f} %"
                  f"   embed {len(texts) / dt:7.1f} texts/s   ({n} train, {va.height} val)", flush=True)


if __name__ == "__main__":
    main()

"""Seconds per training epoch of each circuit variant beside the paper circuit, in one run, and per gate.

One epoch of ``stages.student.train.train_epoch`` (fused simulator + MindSpore Adam, batch 8, one BLAS thread, as
``qdllm student`` trains) on a synthetic cache of the emotion default's size (6,460 training rows, D = 384, C = 2),
n = 11 qubits, L = 2 layers, for ``paper``, ``noent``, ``reupload``, ``parallel:3``, ``u3`` and the dequantised
``twin``; ``--repeats`` epochs each, medians. "Per gate" divides by the gates a training example passes through
(every register's), so it says whether the simulator handles a variant's gates as fast as the paper's (the target:
within 2x). Run: ``.venv/bin/python tests/bench/variants_speed.py [--repeats 3] [--rows 6460]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
from helpers import write_synthetic_cache  # noqa: E402

from pipeline.blas import describe  # noqa: E402
from pipeline.cache import read_teacher_cache  # noqa: E402
from pipeline.config import StudentConfig  # noqa: E402
from stages.student.model import AdamParameters, QuantumStudent, build_model  # noqa: E402
from stages.student.train import Split, learning_rates, train_epoch  # noqa: E402

VARIANTS = ("paper", "noent", "reupload", "parallel:3", "u3")


def gates_per_example(model) -> int:
    if isinstance(model, QuantumStudent):
        return len(model.spec.gates)  # every register's gates, the encodings included
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=6460)
    args = ap.parse_args()
    print(describe())
    from threadpoolctl import threadpool_info

    print("threadpool:", [(i["internal_api"], i.get("version"), i.get("architecture")) for i in threadpool_info()])
    with tempfile.TemporaryDirectory() as tmp:
        n = int(args.rows / 0.6)
        cache = read_teacher_cache(write_synthetic_cache(Path(tmp) / "t", n=n, dim=384, seed=0))
        train = cache.splits["train"]
        data = Split(train.embeddings.astype(np.float64), train.labels, train.logits.astype(np.float64))
        base = StudentConfig(epochs=1)
        configs = [("quantum " + v, replace(base, variant=v)) for v in VARIANTS]
        configs.append(("twin", replace(base, model="twin")))
        results = {}
        for name, cfg in configs:
            model = build_model(cfg, 384, 2)
            rng = np.random.default_rng(0)
            flat = model.init(rng)
            steps = -(-len(data.y) // cfg.batch_size)
            times = []
            for _ in range(args.repeats):
                opt = AdamParameters(flat, learning_rates(cfg, steps))
                t0 = time.perf_counter()
                train_epoch(model, opt, opt.value(), data, cfg, np.random.default_rng(1))
                times.append(time.perf_counter() - t0)
            results[name] = (statistics.median(times), gates_per_example(model), model)
    paper_s, paper_g, _ = results["quantum paper"]
    print(f"\n{len(data.y)} training rows, batch 8, n = 11, L = 2, {args.repeats} epochs each (median)")
    print(f"{'student':<20}{'s/epoch':>9}{'vs paper':>10}{'gates':>7}{'per gate vs paper':>19}{'params':>8}")
    for name, (s, g, model) in results.items():
        per_gate = f"{(s / g) / (paper_s / paper_g):.2f}x" if g else "—"
        print(f"{name:<20}{s:>9.2f}{s / paper_s:>9.2f}x{g:>7}{per_gate:>19}{model.size:>8}")


if __name__ == "__main__":
    main()

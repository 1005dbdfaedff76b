"""The ablation grid on one teacher cache with --jobs 1 and --jobs N, side by side in one run.

Each setting trains the default ablation grid (quantum: loss × layers × qubits × temperature around the
defaults; logreg and MLP twins) from the same synthetic cache into its own cache directory; prints the
wall time of each, the speed-up, and whether every run's metrics (timings aside) and checkpoint tensors are
identical. The default cache has the emotion task's size (10,768 rows) and mpnet's width (D=768); seeds and epochs are
cut so one setting takes minutes, not hours. Run: ``.venv/bin/python tests/bench/student_jobs.py [--jobs 2]
[--n 10768] [--seeds 0,1] [--epochs 2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import run_results, write_synthetic_cache

from pipeline.blas import describe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--n", type=int, default=10768, help="examples in the synthetic cache (60/20/20 split)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", default="2")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    print(describe())
    print(f"ablation grid, synthetic cache n={args.n} D={args.dim}, seeds {args.seeds}, {args.epochs} epochs; "
          f"load average {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} usable CPUs")
    times: dict[int, list[float]] = {}
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for jobs in (1, args.jobs):
                root = Path(tmp) / f"r{rep}-j{jobs}"
                write_synthetic_cache(root / "teacher" / "bench", n=args.n, dim=args.dim)
                env = {**os.environ, "QDLLM_CACHE_DIR": str(root), "QDLLM_HASH_MEMO": str(Path(tmp) / "memo.json")}
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "stages.cli", "-q", "student", "ablations", "--teacher-key",
                                "bench", "--seeds", args.seeds, "--epochs", args.epochs, "--jobs", str(jobs)],
                               check=True, cwd=ROOT, env=env)
                times.setdefault(jobs, []).append(time.perf_counter() - t0)
                found[jobs] = run_results(root / "student")
    t1, tn = statistics.median(times[1]), statistics.median(times[args.jobs])
    same = found[1] == found[args.jobs]
    print(f"--jobs 1: {t1:7.1f} s   --jobs {args.jobs}: {tn:7.1f} s   speed-up {t1 / tn:4.2f}x   "
          f"{len(found[1])} runs, identical metrics and tensors: {same}")


if __name__ == "__main__":
    main()

"""The ablation grid on one teacher cache with --jobs 1 and --jobs N, side by side in one run.

Four settings: ``--jobs 1`` as a user runs it (NumPy's BLAS may use every core inside the one process),
``--jobs 1`` held to one BLAS thread (the unit of work the pool multiplies), the same pinned to one core (as
every pool worker is; this shows how much of the pool's gain is the pinning itself), and ``--jobs N`` (N
single-threaded workers, one per core). For each: wall time, CPU time of the whole invocation and how many
cores that kept busy, and the speed-up over the two single-threaded baselines.

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
import resource
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
from stages.student.jobs import ONE_THREAD


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
    # --jobs 1 as it runs (BLAS may use every core inside the one process), --jobs 1 held to one BLAS thread
    # (the baseline the pool multiplies), the same pinned to one core (as each pool worker is), and --jobs N
    first_cpu = min(os.sched_getaffinity(0))
    settings = {"--jobs 1": (1, {}, None), "--jobs 1, one BLAS thread": (1, ONE_THREAD, None),
                "--jobs 1, one BLAS thread, one core": (1, ONE_THREAD, first_cpu),
                f"--jobs {args.jobs}": (args.jobs, {}, None)}
    times: dict[str, list[tuple[float, float]]] = {}
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name, (jobs, extra, cpu) in settings.items():
                root = Path(tmp) / f"r{rep}-{len(found)}"
                write_synthetic_cache(root / "teacher" / "bench", n=args.n, dim=args.dim)
                env = {**os.environ, **extra, "QDLLM_CACHE_DIR": str(root),
                       "QDLLM_HASH_MEMO": str(Path(tmp) / "memo.json")}
                cpu0, t0 = _children_cpu(), time.perf_counter()
                subprocess.run([sys.executable, "-m", "stages.cli", "-q", "student", "ablations", "--teacher-key",
                                "bench", "--seeds", args.seeds, "--epochs", args.epochs, "--jobs", str(jobs)],
                               check=True, cwd=ROOT, env=env,
                               preexec_fn=None if cpu is None else (lambda c=cpu: os.sched_setaffinity(0, {c})))
                times.setdefault(name, []).append((time.perf_counter() - t0, _children_cpu() - cpu0))
                found[(rep, name)] = run_results(root / "student")
    base = statistics.median(w for w, _ in times["--jobs 1, one BLAS thread"])
    pinned = statistics.median(w for w, _ in times["--jobs 1, one BLAS thread, one core"])
    first = next(iter(found.values()))
    for name, runs in times.items():
        wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        print(f"{name:<36} {wall:7.1f} s wall  {cpu:7.1f} s CPU ({cpu / wall:.2f} cores busy)  "
              f"speed-up over one BLAS thread {base / wall:4.2f}x, over one pinned core {pinned / wall:4.2f}x",
              flush=True)
    print(f"{len(first)} runs; identical metrics and tensors in every setting and repeat: "
          f"{all(f == first for f in found.values())}")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    main()

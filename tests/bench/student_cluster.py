"""The ablation grid with --jobs 1, the local pool and a 2-worker Dask LocalCluster, side by side in one run.

Three settings, each a fresh `qdllm student ablations` process on the same synthetic teacher cache (each in its own
cache directory, so nothing is reused): ``--jobs 1``; ``--jobs N`` (the local pool: N spawned single-threaded workers
pinned to a core each); ``--cluster local --jobs N`` (a Dask LocalCluster of N single-threaded worker processes,
pinned the same way; the client, scheduler and nannies in the qdllm process). Each wall time includes starting its
workers, as a user would see it. Prints the wall time of each, its ratio to ``--jobs 1``, the cluster's ratio to the
pool, and whether every run's metrics (timings aside) and checkpoint tensors are identical across the three.

Reduced so one run takes a few minutes on 2 cores: the default ablation grid (every loss, temperature, variant ×
layers × schedule, learning rate × epochs, and the twin, logreg and MLP beside them) but with 2 seeds and 1 epoch
(``--seeds 0,1 --epochs 1``), on a synthetic cache of 2,000 rows (60/20/20 split) and MiniLM's width (D=384), not the
emotion task's 10,768 rows; each unit then takes a fraction of a second to a few seconds, so per-unit overheads show
more than on a real grid. Run: ``.venv/bin/python tests/bench/student_cluster.py [--jobs 2] [--n 2000] [--dim 384]
[--seeds 0,1] [--epochs 1]``.
"""

from __future__ import annotations

import argparse
import os
import resource
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
    ap.add_argument("--n", type=int, default=2000, help="examples in the synthetic cache (60/20/20 split)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", default="1")
    args = ap.parse_args()
    from threadpoolctl import threadpool_info

    import dask
    import distributed

    print(describe())
    print("threadpoolctl:", "; ".join(f"{i['internal_api']} {i.get('version')} {i.get('architecture')} "
                                      f"{i['num_threads']} thread(s)" for i in threadpool_info()))
    print(f"dask {dask.__version__}, distributed {distributed.__version__}; default ablation grid, synthetic cache "
          f"n={args.n} D={args.dim}, seeds {args.seeds}, {args.epochs} epoch(s); load average "
          f"{os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} usable CPUs", flush=True)
    settings = {"--jobs 1": ["--jobs", "1"], f"--jobs {args.jobs} (local pool)": ["--jobs", str(args.jobs)],
                f"--cluster local --jobs {args.jobs} (Dask LocalCluster)": ["--cluster", "local", "--jobs",
                                                                            str(args.jobs)]}
    walls, cpus, found = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, flags) in enumerate(settings.items()):
            root = Path(tmp) / f"s{i}"
            write_synthetic_cache(root / "teacher" / "bench", n=args.n, dim=args.dim)
            env = {**os.environ, "QDLLM_CACHE_DIR": str(root), "QDLLM_HASH_MEMO": str(Path(tmp) / "memo.json")}
            env.pop("QDLLM_CLUSTER", None)
            cpu0, t0 = _children_cpu(), time.perf_counter()
            subprocess.run([sys.executable, "-m", "stages.cli", "-q", "student", "ablations", "--teacher-key", "bench",
                            "--seeds", args.seeds, "--epochs", args.epochs, *flags], check=True, cwd=ROOT, env=env)
            walls[name], cpus[name] = time.perf_counter() - t0, _children_cpu() - cpu0
            found[name] = run_results(root / "student")
            print(f"{name:<42} {walls[name]:7.1f} s wall  {cpus[name]:7.1f} s CPU in this process's children "
                  f"(load average now {os.getloadavg()[0]:.1f})", flush=True)
    base = walls["--jobs 1"]
    pool, cluster = list(walls.values())[1:]
    print()
    for name, wall in walls.items():
        print(f"{name:<42} {wall:7.1f} s   {base / wall:4.2f}x faster than --jobs 1")
    print(f"the LocalCluster takes {cluster / pool:.3f}x the local pool's wall time ({100 * (cluster / pool - 1):+.1f} %)")
    first = next(iter(found.values()))
    print(f"{len(first)} runs; identical metrics and tensors in all three: {all(f == first for f in found.values())}")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    main()

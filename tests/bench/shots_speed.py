"""Shots and noise for a trained 11-qubit student (``stages/student/noise.py``): speed and the accuracy figures.

On a synthetic teacher cache (``write_synthetic_cache``: 10,000 examples, 2,000 in test, dim 4, two overlapping
classes) an 11-qubit ``paper`` student (L=2) is trained with ``StudentRun`` (3 epochs, seed 0), then:

1. exact outcome probabilities of the 2,000 test examples (fused simulator, complex128);
2. shot sampling + head + metrics for the 2,000 examples at 5 shot counts (16, 64, 256, 1024, 8192): one sampling
   repeat (the requirement: under 10 s) and the default 5 repeats;
3. noisy-simulation throughput: MindQuantum trajectories (depolarizing:0.001,0.01) and Qiskit Aer's density matrix
   of a calibrated fake backend (device:sherbrooke), in examples/s;
4. the full ``evaluate_noise`` with no noise: accuracy at each shot count against the exact accuracy.

Medians of ``--repeats`` timings. Run: ``.venv/bin/python tests/bench/shots_speed.py`` (``--cache DIR`` keeps the
trained run between invocations; ``--no-device`` skips the Qiskit part).
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

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None, help="QDLLM_CACHE_DIR to use (default: a temporary one).")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trajectory-examples", type=int, default=20)
    ap.add_argument("--trajectories", type=int, default=1000)
    ap.add_argument("--device", default="sherbrooke")
    ap.add_argument("--device-examples", type=int, default=4)
    ap.add_argument("--no-device", action="store_true")
    args = ap.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="qdllm-shots-"))
    os.environ["QDLLM_CACHE_DIR"] = str(cache)
    os.environ.setdefault("QDLLM_HASH_MEMO", str(cache / "file-hashes.json"))

    import numpy as np

    from pipeline.blas import describe

    print(describe(), flush=True)
    from helpers import write_synthetic_cache

    from pipeline.config import StudentConfig
    from stages.student import noise as N
    from stages.student import noise_sim as S
    from pipeline.noise import parse_noise
    from stages.student.noise_config import NoiseConfig
    from stages.student.run import StudentRun

    tdir = cache / "teacher" / "synthetic-10000-d4"
    if not (tdir / "manifest.json").is_file():
        write_synthetic_cache(tdir, n=10000, dim=4, key="synthetic-10000-d4")
    t0 = time.perf_counter()
    run = StudentRun.plan(tdir, StudentConfig(n_qubits=11, n_layers=2, epochs=3, seeds=(0,)))
    trained = run.train()
    print(f"run {run.path.name}: 11-qubit paper student, "
          f"{'trained in %.0f s' % (time.perf_counter() - t0) if trained else 'reused'}")

    student, ckpt = N.open_quantum_run(run.path.name)
    x, y = N.load_split(student, "test", None)
    spec = ckpt.model.spec
    z, theta = ckpt.model.encoding_angles(ckpt.weights, x), ckpt.model.unpack(ckpt.weights)["theta"]
    print(f"{len(y)} test examples, {spec.n_qubits} qubits, 2^n = {2 ** spec.n_qubits} outcomes")

    sec, probs = timed(lambda: S.exact_probabilities(spec, z, theta), args.repeats)
    print(f"exact outcome probabilities (fused, complex128): {sec:.2f} s, {len(y) / sec:,.0f} examples/s")
    sampler = S.ShotSampler(probs)
    exact_pred = N._logits(ckpt, sampler.exact()).argmax(axis=1)
    defaults = NoiseConfig()
    shots = defaults.shots
    for seeds in ((0,), defaults.seeds):
        cfg = NoiseConfig(seeds=seeds)

        def sample():
            return N.shot_rows(ckpt, S.ShotSampler(probs), y, exact_pred, "none", cfg)

        sec, rows = timed(sample, args.repeats)
        print(f"sampling + head + metrics, {len(y)} examples x {len(shots)} shot counts x {len(seeds)} repeat(s): "
              f"{sec:.2f} s (median of {args.repeats})")
    per = {s: timed(lambda s=s: sampler.counts(s, np.random.default_rng(s)), args.repeats)[0] for s in shots}
    print("  counts only, one repeat: " + ", ".join(f"{s}: {t:.3f} s" for s, t in per.items()))

    k = args.trajectory_examples
    model = parse_noise("depolarizing:0.001,0.01")
    sec, (p_noisy, info) = timed(lambda: S.trajectory_probabilities(spec, model, z[:k], theta,
                                                                    args.trajectories, 0), 1)
    print(f"trajectories (MindQuantum mqvector, {model.text}, T={args.trajectories}): {k} examples in {sec:.1f} s = "
          f"{k / sec:.2f} examples/s ({sec / k / args.trajectories * 1e3:.2f} ms per trajectory); "
          f"stderr of <Z> mean {info['z_stderr']['mean']:.4f}, max {info['z_stderr']['max']:.4f}")
    if not args.no_device:
        kd = args.device_examples
        backend = S.device_backend(args.device, spec.n_qubits)
        sec, (p_dev, dinfo) = timed(lambda: S.device_probabilities(spec, args.device, z[:kd], theta, 0,
                                                                   backend), 1)
        sim = sec - dinfo["setup_seconds"]
        print(f"device:{args.device} (Aer density matrix, {dinfo['active_qubits']} active qubits, depth "
              f"{dinfo['transpiled_depth']}, ops {dinfo['transpiled_ops']}): setup {dinfo['setup_seconds']:.1f} s, "
              f"{kd} examples in {sim:.1f} s = {kd / sim:.3f} examples/s")

    t0 = time.perf_counter()
    path = N.evaluate_noise(run.path.name)
    d = json.loads(Path(path).read_text())
    print(f"evaluate_noise (none, defaults) in {time.perf_counter() - t0:.1f} s -> {path}")
    print(f"exact accuracy {100 * d['exact']['accuracy']:.2f} % (run's own test accuracy "
          f"{100 * d['run_metrics']['accuracy']:.2f} %), F1 {100 * d['exact']['f1']:.2f} %")
    for r in d["shots"]:
        print(f"  {r['shots']:>5} shots: accuracy {100 * r['accuracy']['mean']:.2f} ± {100 * r['accuracy']['std']:.2f} %"
              f", F1 {100 * r['f1']['mean']:.2f} %, agreement with exact {100 * r['agreement']['mean']:.2f} %")
    print(f"shots needed to stay within 1 point: {d['models']['none']['shots_needed']}")


if __name__ == "__main__":
    main()

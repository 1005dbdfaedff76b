"""Shots and noise: how a trained quantum student would fare on a real quantum device.

Every accuracy a run reports uses exact ⟨Z_i⟩ from a state vector. A device estimates each ⟨Z_i⟩ from S shots
(bitstrings) under gate and readout noise. ``evaluate_noise`` takes a published run (its best-validation seed,
``StudentRun.best``), never retrains or modifies it, and writes ``cache/noise/<key>/noise.json``:

- **shots**: per example, the 2^n outcome probabilities (exact, or a noise model's); S bitstrings are sampled from
  them (``ShotSampler``: inverse CDF for S ≤ 2^n/4, multinomial counts above, both exact samplers); one set of shots
  estimates every ⟨Z_i⟩ = (counts · signs_i)/S; then the Dense head. Accuracy, F1 and agreement with the exact
  prediction, mean ± std over sampling repeats (``seeds``).
- **noise** (``--noise``, the grammar of ``noise_config``): gate channels (``depolarizing:P1,P2``,
  ``damping:GAMMA``) by trajectories on MindQuantum, readout bit flips (``readout:P``) applied exactly to the
  outcome distribution, ``device:NAME`` as a density matrix by Qiskit Aer (``noise_sim``). docs/noise.md says why
  each method.

This module is the evaluation; ``noise_config`` holds its settings and ``noise_sim`` the simulators. The output key
digests the run's full key, every setting, the source of those three modules and the versions of the simulators
used; the directory is published atomically (``publish_dir`` under ``key_lock``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from pipeline import keys, paths
from pipeline.cache import STUDENT_COLUMNS, library_versions
from pipeline.errors import QdllmError
from pipeline.metrics import classification_metrics, mean_std
from pipeline.publish import is_complete, key_lock, publish_dir, write_json
from pipeline.noise import NoiseSpec
from stages.student.noise_config import NoiseConfig
from stages.student.noise_sim import (ShotSampler, apply_readout, bit_flip, channels_text, device_backend,
                                      device_probabilities, exact_probabilities, trajectory_probabilities)
from stages.student.run import Checkpoint, StudentRun, make_output_dir

log = logging.getLogger(__name__)

NOISE_FILE = "noise.json"
SCHEMA = 1
MODULES = ("noise.py", "noise_config.py", "noise_sim.py")  # the code behind an evaluation's key
EXACT = "exact state vector (fused NumPy simulator, complex128)"


def noise_root() -> Path:
    return paths.cache_dir() / "noise"


def source_digest() -> dict[str, str]:
    """sha256 of each noise module's source: a changed evaluation gives a new output key."""
    here = Path(__file__).parent
    return {name: keys.sha256_file(here / name) for name in MODULES}


def _versions(cfg: NoiseConfig) -> dict[str, str]:
    names = ["numpy"]
    if any(m.gate_noise for m in cfg.models):
        names.append("mindquantum")
    if any(m.device for m in cfg.models):
        names += ["qiskit", "qiskit-aer", "qiskit-ibm-runtime"]
    return library_versions(*names)


def noise_key(run: StudentRun, cfg: NoiseConfig) -> tuple[str, dict]:
    inputs = {"stage": "noise", "schema": SCHEMA, "run_key": run.key.full, "settings": cfg.key_inputs(),
              "code": source_digest(), "versions": _versions(cfg)}
    return keys.digest(inputs), inputs


# ---------------------------------------------------------------- the run and its examples


def open_quantum_run(run: str | Path) -> tuple[StudentRun, Checkpoint]:
    """A published quantum run and its best-validation checkpoint; one sentence for a classical or missing run."""
    student = StudentRun.open(run)
    if student.kind != "quantum":
        raise QdllmError(f"The run {student.path.name} is a classical {student.kind} student; shots and noise apply "
                         "only to quantum students, so give the key of a quantum run.")
    return student, student.best()


def load_split(run: StudentRun, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings float64, labels) of the first ``limit`` rows of a split of the run's teacher cache."""
    s = run.teacher_split(split, columns=STUDENT_COLUMNS)
    n = len(s.labels) if limit is None else min(limit, len(s.labels))
    if n == 0:
        raise QdllmError(f"The {split} split of teacher cache {run.manifest.teacher_key} is empty; evaluate another "
                         "split.")
    return s.embeddings[:n].astype(np.float64), np.asarray(s.labels[:n], dtype=np.int64)


# ---------------------------------------------------------------- shots


def _rng(seed: int, shots: int, model: str) -> np.random.Generator:
    tag = int(hashlib.sha256(model.encode()).hexdigest()[:8], 16)
    return np.random.default_rng([seed, shots, tag])


def _angles(ckpt: Checkpoint, x: np.ndarray) -> np.ndarray:
    """The encoding angles of each example (``QuantumStudent.encoding_angles``)."""
    return ckpt.model.encoding_angles(ckpt.weights, x)


def _logits(ckpt: Checkpoint, e: np.ndarray) -> np.ndarray:
    """The Dense head on the ⟨Z_i⟩ of each example (exact or estimated from shots)."""
    p = ckpt.model.unpack(ckpt.weights)
    return e @ p["head_w"] + p["head_b"]


def _scores(ckpt: Checkpoint, e: np.ndarray, y: np.ndarray, exact_pred: np.ndarray | None) -> dict:
    pred = _logits(ckpt, e).argmax(axis=1)
    m = classification_metrics(y, pred, ckpt.model.num_classes)
    out = {"accuracy": m["accuracy"], "precision": m["precision"], "recall": m["recall"], "f1": m["f1"]}
    if exact_pred is not None:
        out["agreement"] = float(np.mean(pred == exact_pred))
    return out


def shot_rows(ckpt: Checkpoint, sampler: ShotSampler, y: np.ndarray, exact_pred: np.ndarray, model: str,
              cfg: NoiseConfig) -> list[dict]:
    rows = []
    for shots in cfg.shots:
        reps = [_scores(ckpt, sampler.expectations(shots, _rng(seed, shots, model)), y, exact_pred)
                for seed in cfg.seeds]
        rows.append({"shots": shots, "noise": model, "repeats": len(reps),
                     **{k: mean_std(r[k] for r in reps) for k in ("accuracy", "f1", "agreement")}})
    return rows


def shots_needed(rows: list[dict], exact_accuracy: float, tolerance: float = 0.01) -> int | None:
    """Fewest evaluated shots from which on the mean accuracy is within ``tolerance`` of the exact accuracy (at
    that shot count and every larger one evaluated); None when the largest is not."""
    needed = None
    for r in sorted(rows, key=lambda r: -r["shots"]):
        if abs(r["accuracy"]["mean"] - exact_accuracy) > tolerance + 1e-12:
            break
        needed = r["shots"]
    return needed


# ---------------------------------------------------------------- noise models


def noisy_probabilities(spec, model: NoiseSpec, z: np.ndarray, theta: np.ndarray, exact: np.ndarray,
                        cfg: NoiseConfig, bar, backend=None) -> tuple[np.ndarray, dict]:
    """The outcome distributions of ``model``: a device's as a density matrix; otherwise the gate channels by
    trajectories (``exact`` when there are none), then the readout errors applied exactly. ``bar``: a progress
    display for the simulations, or None."""
    tick = None
    if bar is not None and (model.device or model.gate_noise):
        task = bar.add_task(f"noise {model.text}", total=len(z))
        tick = lambda: bar.advance(task)  # noqa: E731
    if model.device:
        probs, info = device_probabilities(spec, model.device, z, theta, cfg.seeds[0], backend, tick)
        return probs, {**info, "method": "density matrix (Qiskit Aer, AerSimulator(method='density_matrix'))"}
    if model.gate_noise:
        probs, info = trajectory_probabilities(spec, model, z, theta, cfg.trajectories, cfg.seeds[0], tick)
        info["method"] = "trajectories (MindQuantum Simulator('mqvector'), one Kraus branch per channel per run)"
    else:
        probs, info = exact, {"method": EXACT}
    if model.readout:
        probs = apply_readout(probs, [bit_flip(model.readout)] * spec.n_qubits)
        info["method"] += "; readout errors applied exactly to the outcome distribution"
        if "z_stderr" in info:  # a flip of probability p scales every ⟨Z_i⟩, and so its error, by 1 - 2p
            info["z_stderr"] = {k: None if v is None else v * abs(1 - 2 * model.readout)
                                for k, v in info["z_stderr"].items()}
    return probs, {**info, "channels": channels_text(model)}


# ---------------------------------------------------------------- evaluation


def evaluate_noise(run: str | Path, cfg: NoiseConfig | None = None) -> Path:
    """Evaluate a published quantum run under finite shots and noise; returns the path of its noise.json.

    Every setting is checked before any work (``NoiseConfig``); a finished evaluation with the same key is reused."""
    cfg = cfg or NoiseConfig()
    student, ckpt = open_quantum_run(run)
    backends = {m.device: device_backend(m.device, ckpt.model.spec.n_qubits) for m in cfg.models if m.device}
    full, inputs = noise_key(student, cfg)
    final = noise_root() / keys.short(full)
    if is_complete(final):
        log.info("noise evaluation %s of run %s is up to date", final.name, student.path.name)
        return final / NOISE_FILE
    make_output_dir(final.parent, "QDLLM_CACHE_DIR")
    with key_lock(final):
        if is_complete(final):
            return final / NOISE_FILE
        result = _evaluate(student, ckpt, cfg, backends)
        with publish_dir(final) as pub:
            write_json(pub.path / NOISE_FILE, {**result, "key": full, "inputs": inputs})
            pub.manifest = {"kind": "student-noise", "key": full, "inputs": inputs, "run": student.path.name,
                            "files": [NOISE_FILE], "created": result["created"]}
    log.info("noise evaluation of run %s → %s", student.path.name, final)
    return final / NOISE_FILE


def _evaluate(run: StudentRun, ckpt: Checkpoint, cfg: NoiseConfig, backends: dict) -> dict:
    from pipeline.console import progress

    t_start = time.perf_counter()
    x, y = load_split(run, cfg.split, cfg.limit)
    spec, theta = ckpt.model.spec, ckpt.model.unpack(ckpt.weights)["theta"]
    z = _angles(ckpt, x)
    t_load = time.perf_counter()
    exact_probs = exact_probabilities(spec, z, theta)
    exact_sampler = ShotSampler(exact_probs)
    e_exact = exact_sampler.exact()
    exact = _scores(ckpt, e_exact, y, None)
    exact_pred = _logits(ckpt, e_exact).argmax(axis=1)
    t_exact = time.perf_counter()
    rows = shot_rows(ckpt, exact_sampler, y, exact_pred, "none", cfg)
    models = {"none": {"method": EXACT, "infinite_shots": {**_subset(exact), "agreement": 1.0},
                       "simulation_seconds": t_exact - t_load,
                       "examples_per_second": len(y) / max(t_exact - t_load, 1e-9),
                       "sampling_seconds": time.perf_counter() - t_exact}}
    with progress() as bar:
        for model in cfg.models[1:]:  # after "none"
            t0 = time.perf_counter()
            p, info = noisy_probabilities(spec, model, z, theta, exact_probs, cfg, bar, backends.get(model.device))
            t1 = time.perf_counter()
            sampler = ShotSampler(p)
            rows += shot_rows(ckpt, sampler, y, exact_pred, model.text, cfg)
            sim_seconds = t1 - t0 - info.get("setup_seconds", 0.0)
            models[model.text] = {**info, "infinite_shots": _subset(_scores(ckpt, sampler.exact(), y, exact_pred)),
                                  "simulation_seconds": sim_seconds, "sampling_seconds": time.perf_counter() - t1,
                                  "examples_per_second": len(y) / max(sim_seconds, 1e-9)}
    for name, info in models.items():
        info["shots_needed"] = shots_needed([r for r in rows if r["noise"] == name], exact["accuracy"])
    timings = {"load_seconds": t_load - t_start, "exact_seconds": t_exact - t_load,
               "sampling_seconds": sum(m["sampling_seconds"] for m in models.values()),
               "noise_seconds": sum(m["simulation_seconds"] for k, m in models.items() if k != "none"),
               "total_seconds": time.perf_counter() - t_start}
    return _record(run, ckpt, cfg, len(y), exact, models, rows, timings)


def _record(run: StudentRun, ckpt: Checkpoint, cfg: NoiseConfig, examples: int, exact: dict, models: dict,
            rows: list[dict], timings: dict) -> dict:
    """noise.json: what was evaluated, how, the results and what it cost."""
    spec, m = ckpt.model.spec, run.manifest
    run_seed = next((s for s in run.metrics.get("seeds", []) if s.get("seed") == ckpt.seed), {})
    sampled = examples * len(cfg.shots) * len(cfg.seeds) / max(models["none"]["sampling_seconds"], 1e-9)
    return {
        "kind": "student-noise", "schema": SCHEMA, "run": run.path.name, "run_key": m.key, "task": m.task,
        "teacher_key": m.teacher_key, "class_names": m.class_names, "seed": ckpt.seed,
        "circuit": {"variant": spec.variant, "n_qubits": spec.n_qubits, "n_layers": spec.n_layers,
                    "gates": len(spec.gates)},
        "settings": {**cfg.key_inputs(), "trajectories": cfg.trajectories}, "examples": examples,
        "exact": _subset(exact), "run_metrics": {"split": "test", **_subset(run_seed.get("test") or {})},
        "models": models, "shots": rows, "timings": timings,
        "throughput": {"exact_examples_per_second": models["none"]["examples_per_second"],
                       "sampled_example_shot_counts_per_second": sampled,
                       "noisy_examples_per_second": {k: v["examples_per_second"] for k, v in models.items()
                                                     if k != "none"}},
        "versions": _versions(cfg),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _subset(m: dict) -> dict:
    return {k: float(m[k]) for k in ("accuracy", "precision", "recall", "f1", "agreement")
            if isinstance(m.get(k), (int, float))}

"""Student training: losses and gradients, metrics, the run directory, CLI behaviour and errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli, run_results, write_synthetic_cache
from pipeline.config import StudentConfig
from pipeline.errors import QdllmError
from stages.student.losses import distill_loss
from pipeline.metrics import classification_metrics
from stages.student.model import MLP, QuantumStudent, build_model

ROOT = Path(__file__).resolve().parent.parent


def _numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        d = np.zeros_like(x)
        d.flat[i] = eps
        g.flat[i] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


@pytest.mark.parametrize("loss", ["ce", "kl", "js", "kl+js+ce"])
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_loss_gradients(loss, T):
    rng = np.random.default_rng(0)
    logits, teacher = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * 3
    labels = rng.integers(0, 3, 5)
    _, g = distill_loss(logits, labels, teacher, loss, 0.9, T)
    num = _numeric_grad(lambda z: distill_loss(z, labels, teacher, loss, 0.9, T)[0], logits)
    assert np.allclose(g, num, atol=1e-6)


def test_loss_values():
    logits = np.array([[2.0, 0.0]])
    ce, _ = distill_loss(logits, np.array([0]), logits, "ce")
    assert ce == pytest.approx(np.log1p(np.exp(-2.0)))
    assert distill_loss(logits, np.array([0]), logits, "kl")[0] == pytest.approx(0.0, abs=1e-12)
    assert distill_loss(logits, np.array([0]), logits, "js")[0] == pytest.approx(0.0, abs=1e-12)
    total, _ = distill_loss(logits, np.array([0]), logits, "kl+js+ce", alpha=0.9)
    assert total == pytest.approx(0.1 * ce)


@pytest.mark.parametrize("model", ["quantum", "logreg", "mlp"])
def test_model_gradients(model):
    cfg = StudentConfig(model=model, n_qubits=3, n_layers=2, variant="reference" if model == "quantum" else "paper")
    m = build_model(cfg, 5, 3)
    if model == "quantum":  # finite differences need double precision (complex64 is checked against MindQuantum)
        from stages.student.fused import FusedCircuit

        m.sim = FusedCircuit(m.spec)
    rng = np.random.default_rng(1)
    flat, x = m.init(rng), rng.normal(size=(4, 5))
    w = rng.normal(size=(4, 3))
    _, cache = m.forward(flat, x)
    g = m.backward(cache, w)
    num = _numeric_grad(lambda f: float((m.forward(f, x, grad=False) * w).sum()), flat)
    assert np.allclose(g, num, atol=1e-5)


def test_mlp_matches_quantum_parameter_count():
    for dim, classes in ((384, 2), (768, 4), (16, 2)):
        q = QuantumStudent(dim, classes).size
        mlp = build_model(StudentConfig(model="mlp"), dim, classes)
        assert isinstance(mlp, MLP) and abs(mlp.size - q) / q <= 0.05
    assert QuantumStudent(384, 2).size == 384 * 11 + 11 + 64 + 11 * 2 + 2


def test_metrics_binary_and_macro():
    m = classification_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1]), 2)
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5 and m["confusion"] == [[1, 1], [1, 1]]
    m = classification_metrics(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0]), 3)
    assert m["recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["precision"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_student_modules_import_no_torch():
    modules = sorted(f"stages.student.{p.stem}" for p in (ROOT / "stages" / "student").glob("*.py") if p.stem != "__init__")
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    loaded = {m.split(".")[0] for m in out.split()}
    assert not loaded & {"torch", "transformers", "peft"}, loaded & {"torch", "transformers", "peft"}


def test_adam_steps_run_on_the_calling_thread():
    """MindSpore's op queue thread (which busy-waits after each step and halves what two workers gain) is off."""
    code = ("import glob, numpy as np\n"
            "from stages.student.model import AdamParameters\n"
            "opt = AdamParameters(np.zeros(5), 0.1)\n"
            "w = opt.step(np.ones(5))\n"
            "print(w[0], sorted({open(t + '/comm').read().strip() for t in glob.glob('/proc/self/task/*')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    first, threads = out.split(" ", 1)
    assert float(first) == pytest.approx(-0.1, rel=1e-5)  # one Adam step of lr 0.1 moves every weight by lr
    assert "frontend_queue" not in threads, threads


FAST = ["--qubits", "4", "--epochs", "2", "--seeds", "0,1", "--no-ce-baseline"]


def test_cli_trains_publishes_and_skips(isolated_dirs):
    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=80, dim=12, task="thematic")
    r = run_cli("student", "--task", "thematic", *FAST)
    assert r.returncode == 0, r.stderr
    runs = sorted(p for p in (isolated_dirs / "cache" / "student").iterdir() if not p.name.startswith("."))
    assert len(runs) == 4  # the quantum student and its twin, logreg and MLP baselines
    kinds = set()
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        assert manifest["kind"] == "student-run" and len(manifest["key"]) == 64 and manifest["teacher_key"] == "t1"
        assert metrics["task"] == "thematic" and metrics["class_names"] == ["class0", "class1"]
        assert [s["seed"] for s in metrics["seeds"]] == [0, 1]
        seed = metrics["seeds"][0]
        assert set(seed["curves"]) == {"epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy"}
        assert len(seed["curves"]["epoch"]) == 2 and 1 <= seed["best_epoch"] <= 2
        assert set(seed["test"]) == {"accuracy", "precision", "recall", "f1", "confusion", "agreement", "ece"}
        assert 0 <= seed["test"]["agreement"] <= 1 and 0 <= seed["test"]["ece"] <= 1
        assert seed["test"]["accuracy"] > 0.5 or metrics["model"] == "quantum"
        summary = metrics["summary"]
        assert set(summary["test"]["f1"]) == {"mean", "std"}
        assert summary["acc_per_param"] == pytest.approx(summary["test"]["accuracy"]["mean"] / metrics["trainable_params"])
        assert metrics["teacher"]["test"] == {"accuracy": 1.0}
        assert (run / "weights-seed0.safetensors").is_file() and (run / "weights-seed1.safetensors").is_file()
        assert not list(run.glob("*.npz"))
        kinds.add(metrics["model"])
        assert (run / "circuit.qasm").is_file() == (metrics["model"] == "quantum")
    assert kinds == {"quantum", "twin", "logreg", "mlp"}
    again = run_cli("student", "--task", "thematic", *FAST)
    assert again.returncode == 0 and "0 student run(s) trained, 4 already complete" in again.stderr.replace("\n", " ")
    assert sorted(p for p in (isolated_dirs / "cache" / "student").iterdir() if not p.name.startswith(".")) == runs


def test_quantum_student_learns(isolated_dirs):
    """On separable synthetic data the quantum student beats the majority baseline by a wide margin."""
    from stages.student.run import StudentRun

    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t2", n=300, dim=16)
    run = StudentRun.plan(isolated_dirs / "cache" / "teacher" / "t2", StudentConfig(n_qubits=6, epochs=4, seeds=(0,)))
    trained = run.train()
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert trained and metrics["summary"]["test"]["accuracy"]["mean"] >= 0.85


def test_errors(isolated_dirs):
    from stages.student.run import StudentRun, teacher_caches

    with pytest.raises(QdllmError, match="make teacher"):
        teacher_caches(teacher_key="nope")
    r = run_cli("student", "--teacher-key", "nope")
    assert r.returncode == 2 and "make pull" in r.stderr and "Traceback" not in r.stderr
    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t3", n=40, dim=8)
    r = run_cli("student", "--teacher-key", "t3", "--qubits", "3", "--epochs", "1", "--seeds", "0")
    assert r.returncode == 0, r.stderr
    run = next(p for p in (isolated_dirs / "cache" / "student").iterdir() if not p.name.startswith("."))
    (run / "weights-seed0.safetensors").write_bytes(b"garbage")
    with pytest.raises(QdllmError, match="corrupt"):
        StudentRun.open(run).best()


def test_mismatched_cache_is_refused(isolated_dirs):
    from pipeline.cache import read_teacher_cache
    from stages.student.run import check_compatible

    cache = read_teacher_cache(write_synthetic_cache(isolated_dirs / "c", n=30, num_classes=3, dim=10))
    with pytest.raises(QdllmError, match="embedding dim 10 and 3 classes"):
        check_compatible(QuantumStudent(12, 3, n_qubits=3), cache)
    with pytest.raises(QdllmError, match="3 classes"):
        check_compatible(QuantumStudent(10, 2, n_qubits=3), cache)


def test_default_input_scaling_makes_embeddings_unit_norm():
    cfg = StudentConfig()
    assert cfg.input_scaling == "l2"
    model = build_model(cfg, dim=8, num_classes=2)
    x = np.random.default_rng(0).normal(size=(5, 8)) * 7.0
    np.testing.assert_allclose(np.linalg.norm(model.prepare(x), axis=1), 1.0, rtol=1e-12)


def test_unknown_input_scaling_is_rejected():
    with pytest.raises(QdllmError, match="Unknown input scaling 'zscore'"):
        StudentConfig(input_scaling="zscore")


def test_ablations_cover_losses_circuits_and_the_trainer_with_baselines_beside_them(monkeypatch):
    from stages.student import cli

    seen = []
    monkeypatch.setattr(cli, "_train_all", lambda configs, *a: seen.append(list(configs)))
    cli.ablations(task=None, teacher_key=None, remote=None, seeds="0", full_grid=False)
    cli.ablations(task=None, teacher_key=None, remote=None, seeds="0", full_grid=True)
    default, full = seen
    assert len(default) == len(set(default))  # each run once
    quantum = {c for c in default if c.model == "quantum"}
    d = StudentConfig()
    assert {c.loss for c in quantum} == set(cli.ABLATION_LOSSES) and {c.temperature for c in quantum} == {1.0, 2.0, 4.0}
    circuits = {(c.variant, c.n_layers, c.schedule) for c in quantum}
    assert circuits >= {(v, L, sc) for v in ("paper", "noent", "reupload", "u3", "reference") for L in (1, 2, 4)
                        for sc in ("constant", "cosine")}  # variant × layers × schedule
    assert {(c.lr, c.epochs) for c in quantum} == {(lr, ep) for lr in (0.02, 0.06, 0.2) for ep in (10, 20)}
    # the baselines beside every loss, temperature, schedule and rate of the default circuit
    for m in ("twin", "logreg", "mlp"):
        mine = {c for c in default if c.model == m}
        assert {c.loss for c in mine} == set(cli.ABLATION_LOSSES) and {c.schedule for c in mine} == {"constant", "cosine"}
        assert {(c.lr, c.epochs) for c in mine} == {(lr, ep) for lr in (0.02, 0.06, 0.2) for ep in (10, 20)}
        assert all(c.variant == d.variant and c.n_layers == d.n_layers for c in mine)
    extra = {c for c in full if c.model == "quantum"} - quantum
    assert {c.n_qubits for c in extra} >= {4, 8, 14} and {"parallel:2", "parallel:3"} <= {c.variant for c in extra}
    assert len({c for c in full if c.model == "quantum"}) > len(quantum) + 100  # and the paper's grid of 108


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--jobs 2 is refused on a machine with one usable core")
def test_jobs_2_gives_the_same_runs_bit_for_bit_as_jobs_1(tmp_path):
    results = []
    for jobs in ("1", "2"):
        root = tmp_path / f"jobs{jobs}"
        write_synthetic_cache(root / "cache" / "teacher" / "t1", n=60, dim=8)
        env = {"QDLLM_CACHE_DIR": str(root / "cache"), "QDLLM_DATA_DIR": str(root / "data")}
        r = run_cli("student", "--teacher-key", "t1", "--no-ce-baseline", "--qubits", "3", "--epochs", "2", "--seeds", "0,1,2",
                    "--jobs", jobs, env=env)
        assert r.returncode == 0, r.stderr
        assert f"on {jobs} worker(s)" in r.stderr.replace("\n", " ")
        results.append(run_results(root / "cache" / "student"))
    assert len(results[0]) == 4 and results[0].keys() == results[1].keys()
    for key in results[0]:
        assert results[0][key] == results[1][key], key


def test_generic_blas_kernels_get_one_warning_naming_the_fix(monkeypatch, caplog):
    from pipeline import blas

    monkeypatch.setattr(blas, "cpu_flags", lambda: {"avx2", "avx512f"})
    monkeypatch.setattr(blas, "blas_info", lambda: [{"internal_api": "openblas", "version": "0.3.23",
                                                     "architecture": "Prescott"}])
    blas.warn_if_generic.cache_clear()
    assert blas.warn_if_generic() is True
    assert "generic Prescott kernels" in caplog.text and "OPENBLAS_CORETYPE=SkylakeX" in caplog.text
    monkeypatch.setattr(blas, "blas_info", lambda: [{"internal_api": "openblas", "version": "0.3.31",
                                                     "architecture": "SkylakeX"}])
    blas.warn_if_generic.cache_clear()
    assert blas.warn_if_generic() is False
    blas.warn_if_generic.cache_clear()

"""Training as a device would (stages/student/device.py): shots, parameter-shift and SPSA gradients, noise, cost."""

import json
from dataclasses import replace

import numpy as np
import pytest

from helpers import synthetic_splits, write_synthetic_cache
from pipeline.config import MODEL_BUDGETS, StudentConfig
from pipeline.errors import QdllmError
from stages.student.circuit import build_circuit
from stages.student.device import (COST_SHOTS, DeviceTraining, circuits_per_example, device_cost, training_noise)
from stages.student.fused import FusedCircuit
from stages.student.model import QuantumStudent, build_model
from stages.student.train import Split, train_seed

VARIANTS = [("paper", 4, 2, "z"), ("paper", 3, 1, "z+zz"), ("reference", 4, 2, "z"), ("reference", 4, 1, "z+zz"),
            ("u3", 3, 2, "z"), ("noent", 3, 2, "z+zz"), ("reupload", 3, 3, "z"), ("parallel:2", 3, 2, "z+zz"),
            ("parallel:3", 2, 1, "z")]


def student(variant="paper", n=3, layers=2, readout="z", dim=6, classes=3, seed=0, dtype=np.complex128):
    """A quantum student with random (not near-identity) weights, its simulator in ``dtype``."""
    rng = np.random.default_rng(seed)
    m = QuantumStudent(dim, classes, variant, n, layers, "l2", readout, True)
    m.sim = FusedCircuit(m.register, dtype=dtype, readout=readout)
    flat = m.init(rng) + rng.normal(0, 0.4, m.size)
    return m, flat, rng


def config(variant="paper", n=3, layers=2, readout="z", **kw):
    return StudentConfig(variant=variant, n_qubits=n, n_layers=layers, readout=readout, **kw)


# ---------------------------------------------------------------- the simulator's shifted circuits


@pytest.mark.parametrize("variant,n,layers,readout", VARIANTS[:7])
def test_shifted_probabilities_equal_circuits_with_shifted_angles(variant, n, layers, readout):
    spec = build_circuit(variant, n, layers)
    sim = FusedCircuit(spec, dtype=np.complex128)
    rng = np.random.default_rng(1)
    theta = rng.normal(0, 1, spec.n_params)
    R = 3 * spec.n_params + 4
    z = rng.normal(size=(R, spec.n_encodings))
    param = rng.permutation(np.concatenate([np.tile(np.arange(spec.n_params), 3), [-1] * 4]))  # scattered rows
    offset = rng.choice([np.pi / 2, -np.pi / 2, 0.3], size=R)
    got = sim.shifted_probabilities(z, theta, param, offset)
    for r in range(R):
        shifted = theta.copy()
        if param[r] >= 0:
            shifted[param[r]] += offset[r]
        assert np.abs(got[r] - sim.probabilities(z[r:r + 1], shifted)[0]).max() < 1e-12
    assert np.abs(sim.shifted_probabilities(z, theta) - sim.probabilities(z, theta)).max() < 1e-12
    for p in sim.inert_params():  # a diagonal gate right before the readout changes no probability
        assert np.abs(sim.probabilities(z, theta + np.eye(spec.n_params)[p]) - sim.probabilities(z, theta)).max() < 1e-12


# ---------------------------------------------------------------- parameter-shift = adjoint, exactly


@pytest.mark.parametrize("variant,n,layers,readout", VARIANTS + [("paper", 11, 2, "z")])
def test_parameter_shift_with_exact_expectations_equals_the_adjoint_gradient(variant, n, layers, readout):
    m, flat, rng = student(variant, n, layers, readout)
    x = rng.normal(size=(5, m.dim))
    est = DeviceTraining(m, config(variant, n, layers, readout, gradient="parameter-shift"), 0, 10,
                         dtype=np.complex128)
    logits, cache = m.forward(flat, x)
    g = rng.normal(size=logits.shape)
    want = m.backward(cache, g)
    got_logits, got_cache = est.forward(flat, x)
    got = est.backward(got_cache, g)
    assert np.abs(got_logits - logits).max() < 1e-10
    assert np.abs(got - want).max() < 1e-8  # every parameter: encoder, scales, circuit angles, head
    E, P = m.register.n_encodings, m.register.n_params
    assert est.circuits == 5 * m.registers * (1 + 2 * (E + P)) == 5 * circuits_per_example(m, "parameter-shift")


def test_parameter_shift_agrees_with_pennylane():
    """An independent implementation: PennyLane's default.qubit with diff_method="parameter-shift" on the same gate
    list (RX, RY, RZ, IsingZZ = exp(-iθ/2 Z⊗Z), CNOT), every encoding and circuit angle a trainable argument."""
    qml = pytest.importorskip("pennylane")
    pnp = pytest.importorskip("pennylane.numpy")
    for variant, n, layers in (("paper", 3, 2), ("reference", 3, 1), ("reupload", 2, 2)):
        spec = build_circuit(variant, n, layers)
        m, flat, rng = student(variant, n, layers)
        z = m.encoding_angles(flat, rng.normal(size=(2, m.dim)))
        theta = m.unpack(flat)["theta"]
        est = DeviceTraining(m, config(variant, n, layers, gradient="parameter-shift"), 0, 10, dtype=np.complex128)
        ours = est.shift_jacobian(z, theta)  # (E + P, B, n)
        dev = qml.device("default.qubit", wires=n)

        @qml.qnode(dev, diff_method="parameter-shift")
        def circuit(enc, ang):
            for g in spec.gates:
                w = [n - 1 - q for q in g.qubits]  # PennyLane's wire 0 is the most significant bit; ours qubit 0 the least
                a = enc[g.encoding] if g.encoding is not None else (ang[g.param] if g.param is not None else None)
                if g.kind == "CNOT":
                    qml.CNOT(wires=w)
                elif g.kind == "ZZ":
                    qml.IsingZZ(a, wires=w)
                else:
                    getattr(qml, g.kind)(a, wires=w[0])
            return [qml.expval(qml.PauliZ(n - 1 - q)) for q in range(n)]

        for b in range(len(z)):
            enc, ang = pnp.array(z[b], requires_grad=True), pnp.array(theta, requires_grad=True)
            values = np.array(circuit(enc, ang))
            assert np.abs(values - m.sim.forward(z[b:b + 1], theta, grad=False)[0]).max() < 1e-10
            jac_enc, jac_ang = qml.jacobian(lambda e, a: pnp.stack(circuit(e, a)))(enc, ang)
            assert np.abs(np.asarray(jac_enc).T - ours[:spec.n_encodings, b]).max() < 1e-10
            assert np.abs(np.asarray(jac_ang).T - ours[spec.n_encodings:, b]).max() < 1e-10


# ---------------------------------------------------------------- shots: unbiased, variance 1/S


def test_shot_estimates_are_unbiased_with_variance_falling_as_one_over_shots():
    m, flat, rng = student("paper", 3, 1, "z+zz")
    x = rng.normal(size=(2, m.dim))
    logits, cache = m.forward(flat, x)
    g = rng.normal(size=logits.shape)
    exact = m.backward(cache, g)
    readouts = m.expectations(flat, x)
    variances = {}
    draws = 400
    for shots in (64, 256):
        est = DeviceTraining(m, config("paper", 3, 1, "z+zz", gradient="parameter-shift", shots=shots), shots, 10,
                             dtype=np.complex128)
        grads, outs = [], []
        for _ in range(draws):
            lg, c = est.forward(flat, x)
            outs.append(c[5])
            grads.append(est.backward(c, g))
        grads, outs = np.array(grads), np.array(outs)
        for values, truth in ((grads, exact), (outs, readouts)):
            mean, se = values.mean(0), values.std(0, ddof=1) / np.sqrt(draws)
            moving = se > 1e-12
            assert (np.abs(mean - truth)[moving] <= 3.5 * se[moving] + 1e-12).mean() >= 0.99  # within 3σ (a few tails)
            assert np.abs(mean - truth)[~moving].max(initial=0.0) < 1e-12
        variances[shots] = grads.var(0, ddof=1)
    moving = variances[64] > 1e-10
    ratio = np.median(variances[64][moving] / variances[256][moving])
    assert 3.0 < ratio < 5.3  # 4x the shots, a quarter of the variance


def test_shots_are_seeded_by_the_run_seed_and_training_is_reproducible():
    splits = {k: Split(s.embeddings.astype(np.float64), s.labels, s.logits.astype(np.float64))
              for k, s in synthetic_splits(40, dim=6).items()}
    for cfg in (config(gradient="parameter-shift", shots=32, epochs=2, batch_size=4, seeds=(0,)),
                config(gradient="spsa", shots=16, spsa_a=0.05, epochs=2, batch_size=4, seeds=(0,)),
                config(gradient="parameter-shift", train_noise="readout:0.05", shots=8, epochs=1, batch_size=4)):
        model = build_model(cfg, 6, 2)
        a, b = train_seed(model, splits, cfg, 3), train_seed(model, splits, cfg, 3)
        assert np.array_equal(a.weights, b.weights) and a.curves["train_loss"] == b.curves["train_loss"]
        c = train_seed(model, splits, cfg, 4)
        assert not np.array_equal(a.weights, c.weights)


def test_parameter_shift_training_with_exact_expectations_follows_adjoint_training():
    splits = {k: Split(s.embeddings.astype(np.float64), s.labels, s.logits.astype(np.float64))
              for k, s in synthetic_splits(40, dim=6).items()}
    cfg = config(epochs=1, batch_size=8)
    model = build_model(cfg, 6, 2)
    exact = train_seed(model, splits, cfg, 0)
    shifted = train_seed(model, splits, replace(cfg, gradient="parameter-shift"), 0)
    assert np.abs(exact.weights - shifted.weights).max() < 1e-4  # float32 Adam, complex64 states


# ---------------------------------------------------------------- SPSA


def test_spsa_expectation_is_aligned_with_the_gradient():
    m, flat, rng = student("paper", 3, 1)
    x = rng.normal(size=(2, m.dim))
    logits, cache = m.forward(flat, x)
    g = rng.normal(size=logits.shape)
    p = m.unpack(flat)
    G = g @ p["head_w"].T
    z, theta = cache[4], p["theta"]
    from stages.student.fused import FusedCircuit as F  # noqa: F401

    tape = m.sim.forward(z, theta)[1]
    gz_exact, gt_exact = m.sim.backward(tape, G)
    est = DeviceTraining(m, config("paper", 3, 1, gradient="spsa"), 0, 10, dtype=np.complex128)
    draws = 3000
    gz, gt = np.zeros_like(gz_exact), np.zeros_like(gt_exact)
    for _ in range(draws):
        a, b = est.spsa_gradient(z, theta, G, 0.05)
        gz += a / draws
        gt += b / draws
    both, truth = np.concatenate([gz.ravel(), gt]), np.concatenate([gz_exact.ravel(), gt_exact])
    cos = both @ truth / np.linalg.norm(both) / np.linalg.norm(truth)
    assert cos > 0.97, cos
    assert np.linalg.norm(both - truth) < 0.25 * np.linalg.norm(truth)
    assert est.circuits == 2 * draws * len(z)  # two perturbed circuits per example and step


def test_spsa_gains_and_plain_steps():
    m, flat, rng = student("paper", 3, 1, dim=6, classes=2)
    x = rng.normal(size=(4, m.dim))
    cfg = config("paper", 3, 1, gradient="spsa", spsa_a=0.3, spsa_c=0.1, spsa_stability=0.1)
    est = DeviceTraining(m, cfg, 0, 100, dtype=np.complex128)
    logits, cache = est.forward(flat, x)
    grad = est.backward(cache, np.ones_like(logits))
    assert not grad[m.slices["theta"]].any()  # Adam gets nothing for the circuit angles ...
    after = est.after_step(flat)  # ... which take the plain SPSA step a_0 ĝ instead
    moved = after[m.slices["theta"]] - flat[m.slices["theta"]]
    assert moved.any() and np.array_equal(after[m.slices["enc_w"]], flat[m.slices["enc_w"]])
    a0 = 0.3 / (1 + 10) ** 0.602
    assert np.allclose(np.abs(moved) / a0, np.abs(moved[0]) / a0)  # ±a_0·|Σ_b d_b| on every angle
    assert est.step == 1 and np.array_equal(est.after_step(after), after)


# ---------------------------------------------------------------- noise


def test_readout_noise_is_exact_and_gate_noise_runs_by_trajectories():
    m, flat, rng = student("paper", 3, 1)
    x = rng.normal(size=(3, m.dim))
    exact = m.expectations(flat, x)
    est = DeviceTraining(m, config("paper", 3, 1, gradient="parameter-shift", train_noise="readout:0.1"), 0, 10,
                         dtype=np.complex128)
    _, cache = est.forward(flat, x)
    assert np.abs(cache[5] - 0.8 * exact).max() < 1e-12  # a flip of probability p scales ⟨Z_i⟩ by 1 - 2p
    noisy = DeviceTraining(m, config("paper", 3, 1, gradient="parameter-shift", train_noise="depolarizing:0.02,0.05",
                                     train_trajectories=50), 0, 10, dtype=np.complex128)
    _, cache = noisy.forward(flat, x)
    assert np.abs(cache[5] - exact).max() < 0.3 and np.abs(cache[5]).max() <= 1
    grad = noisy.backward(cache, np.ones((3, 3)))
    assert np.isfinite(grad).all() and noisy.circuits == 3 * (1 + 2 * (3 + 8))
    assert len(noisy.inert) == 0  # under gate noise every shifted circuit is simulated (its own trajectories)


def test_flip_bits_is_the_evaluations_readout_model():
    from stages.student.device import flip_bits
    from stages.student.noise_sim import apply_readout, bit_flip

    probs = np.random.default_rng(0).dirichlet(np.ones(2**5), size=7)
    assert np.abs(flip_bits(probs, 0.03, 5) - apply_readout(probs, [bit_flip(0.03)] * 5)).max() < 1e-15


@pytest.mark.parametrize("readout", ["z", "z+zz"])
def test_readout_flips_on_shots_are_those_of_a_device(readout):
    """Every shot's bits flip independently: readouts scale by 1 − 2p (correlators by its square) on average, and each
    ⟨Z_i⟩ estimate has the variance of S shots of the flipped distribution, (1 − ⟨Z_i⟩²)/S."""
    m, flat, rng = student("paper", 3, 1, readout)
    x = rng.normal(size=(2, m.dim))
    exact = m.expectations(flat, x)
    p, shots, draws = 0.1, 64, 3000
    est = DeviceTraining(m, config("paper", 3, 1, readout, gradient="spsa", shots=shots,
                                   train_noise=f"readout:{p}"), 0, 10, dtype=np.complex128)
    probs = m.sim.probabilities(m.encoding_angles(flat, x), m.unpack(flat)["theta"])
    values = np.array([est.sampler.estimate(probs) for _ in range(draws)])
    truth = exact * np.concatenate([np.full(3, 1 - 2 * p), np.full(exact.shape[1] - 3, (1 - 2 * p) ** 2)])
    se = np.sqrt((1 - truth**2) / shots / draws)
    assert (np.abs(values.mean(0) - truth) <= 4 * se).all()
    assert np.allclose(values.var(0), (1 - truth**2) / shots, rtol=0.15)


def test_training_noise_grammar():
    assert training_noise(config()) is None
    assert training_noise(config(gradient="spsa", train_noise="none")) is None
    spec = training_noise(config(gradient="spsa", train_noise="depolarizing:0.001,0.01+readout:0.02"))
    assert spec.depolarizing == (0.001, 0.01) and spec.readout == 0.02
    # the config refuses what training cannot use, so neither a key nor a model is made of it
    with pytest.raises(QdllmError, match="evaluate with `qdllm student noise --noise device:NAME`"):
        config(gradient="spsa", train_noise="device:sherbrooke")
    with pytest.raises(QdllmError, match="Unknown noise model 'thermal:0.1' in --train-noise"):
        config(gradient="spsa", train_noise="thermal:0.1")
    with pytest.raises(QdllmError, match="--train-noise 'readout:2': 2 is outside"):
        config(gradient="spsa", train_noise="readout:2")


@pytest.mark.parametrize("kw,message", [
    (dict(shots=1024), "needs --gradient parameter-shift or spsa"),
    (dict(train_noise="readout:0.02"), "adjoint method does not apply to noisy channels"),
    (dict(model="logreg", gradient="parameter-shift"), "leave --gradient at adjoint"),
    (dict(model="mlp", gradient="adjoint", shots=None, train_noise="readout:0.1"), "quantum students only"),
    (dict(gradient="spsa", shots=0), "exact or a whole number of shots"),
    (dict(gradient="spsa", shots=2.5), "not a number of shots"),
    (dict(gradient="spsa", spsa_c=0.0), "--spsa-c"),
])
def test_device_settings_are_checked_in_one_sentence(kw, message):
    with pytest.raises(QdllmError, match=message):
        StudentConfig(**kw)


def test_shots_option_reads_exact_or_a_count():
    from pipeline.config import _parse_shots
    from pipeline.settings import options_for

    opt = {o.spec.flag: o for o in options_for(StudentConfig)}["--shots"]
    assert opt.type is not int and opt.spec.parse("exact") is None and opt.spec.parse("1,024") == 1024
    assert _parse_shots("1024") == 1024
    with pytest.raises(QdllmError, match="neither exact nor a number"):
        _parse_shots("many")


# ---------------------------------------------------------------- the cost model


def test_cost_model_counts_circuits_and_shots():
    m = QuantumStudent(384, 2, "paper", 11, 2, "l2", "z", True)
    cfg = StudentConfig(gradient="parameter-shift", shots=1024, epochs=10, seeds=(0, 1, 2, 3, 4))
    cost = device_cost(cfg, m, 6460, 2154)
    assert cost["circuits_per_example_step"] == 1 + 2 * (11 + 64) == 151
    assert cost["circuits_per_epoch"] == 151 * 6460 and cost["shots_per_epoch"] == 151 * 6460 * 1024
    assert cost["circuits_total"] == 151 * 6460 * 50 and cost["shots_total"] == cost["circuits_total"] * 1024
    assert cost["seconds_estimate"] == pytest.approx(cost["circuits_total"] * 1e-3 + cost["shots_total"] * 260e-6)
    adjoint = device_cost(StudentConfig(), m, 6460, 2154)
    assert adjoint["costed_as"] == "parameter-shift" and adjoint["shots_per_circuit"] == COST_SHOTS
    spsa = device_cost(replace(cfg, gradient="spsa"), m, 6460, 2154)
    assert spsa["circuits_per_example_step"] == 3 and spsa["circuits_per_epoch"] == 3 * 6460
    assert device_cost(replace(cfg, variant="parallel:2"), QuantumStudent(384, 2, "parallel:2", 11, 2), 10, 5)[
        "circuits_per_example_step"] == 2 * 151


def test_run_records_device_cost(isolated_dirs):
    from stages.student.run import StudentRun

    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "tc", n=40, dim=6)
    cfg = StudentConfig(n_qubits=3, n_layers=1, epochs=1, seeds=(0,), gradient="spsa", shots=16, batch_size=8)
    run = StudentRun.plan(isolated_dirs / "cache" / "teacher" / "tc", cfg)
    assert run.train()
    metrics = json.loads((run.path / "metrics.json").read_text())
    cost = metrics["device_cost"]
    assert cost["gradient"] == "spsa" and cost["circuits_per_epoch"] == 3 * cost["train_rows"]
    assert cost["shots_total"] == cost["circuits_total"] * 16 and cost["seconds_estimate"] > 0
    assert metrics["config"]["gradient"] == "spsa" and metrics["config"]["shots"] == 16


def test_baselines_of_a_device_trained_student_train_exactly():
    from stages.student.cli import _baselines

    cfg = StudentConfig(gradient="parameter-shift", shots=128, train_noise="readout:0.02", spsa_c=0.1)
    baselines = _baselines(cfg)
    assert [b.model for b in baselines] == ["twin", "logreg", "mlp"]
    assert all(b.gradient == "adjoint" and b.shots is None and not b.train_noise and b.spsa_c == 0.2
               for b in baselines)
    assert _baselines(cfg.replace(gradient="adjoint", shots=None, train_noise="", spsa_c=0.2)) == baselines
    assert [b.lr for b in baselines] == [MODEL_BUDGETS[m]["lr"] for m in ("twin", "logreg", "mlp")]  # their own


def test_report_shows_what_training_on_hardware_would_cost(tmp_path):
    from stages.report import tables as T
    from stages.report.runs import Run

    m = QuantumStudent(384, 2, "paper", 11, 2)
    cfg = StudentConfig(gradient="parameter-shift", shots=128, epochs=2, seeds=(0, 1))
    summary = {"test": {"accuracy": {"mean": 0.75, "std": 0.01}}, "train_seconds_per_epoch": {"mean": 90.0, "std": 1.0}}

    def run(key, model, config, cost):
        metrics = {"model": model, "config": config, "summary": summary, "seeds": [{"seed": 0}]}
        if cost:
            metrics["device_cost"] = cost
        return Run(key=key, path=tmp_path / key, manifest={}, metrics=metrics)

    runs = [run("ps", "quantum", {"gradient": "parameter-shift", "shots": 128}, device_cost(cfg, m, 6460, 2154)),
            run("adj", "quantum", {}, device_cost(StudentConfig(), m, 6460, 2154)),
            run("old", "quantum", {}, None), run("lr", "logreg", {}, None)]
    table = T.device_cost_table(runs)
    assert [row[-1] for row in table.rows] == ["ps", "adj"]
    ps, adj = table.rows
    assert ps[1] == "parameter-shift" and ps[2] == "128" and ps[6] == "151" and ps[7] == "975,460"
    assert ps[9] == "2 × 2" and ps[10] == "3.90M" and ps[11] == "499.44M"
    assert adj[1] == "adjoint (costed as parameter-shift)" and adj[2] == "1,024 (assumed)" and "days" in adj[12]
    assert "260 µs per shot" in table.note
    assert T.device_cost_table(runs[2:]) is None

"""Student models and the trainer's schedule: gradients against finite differences, parameter accounting, the
learning-rate schedules and weight decay."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.config import StudentConfig
from stages.student.model import MLP, LogReg, QuantumStudent, Twin, build_model
from stages.student.train import learning_rates


def finite_difference_check(model, x, rng, eps=1e-6, checks=40):
    """The model's backward equals central differences of Σ w·logits on randomly chosen parameters."""
    flat = model.init(rng) + rng.normal(0, 0.05, model.size)
    logits, cache = model.forward(flat, x)
    w = rng.normal(size=logits.shape)
    grad = model.backward(cache, w)
    for i in rng.choice(model.size, size=min(checks, model.size), replace=False):
        d = np.zeros(model.size)
        d[i] = eps
        up = (model.forward(flat + d, x, grad=False) * w).sum()
        down = (model.forward(flat - d, x, grad=False) * w).sum()
        assert abs((up - down) / (2 * eps) - grad[i]) < 1e-3 * max(1.0, abs(grad[i])), (i, grad[i])


def double(model):
    """The model's circuits in complex128, so finite differences are exact enough to compare."""
    from stages.student.fused import FusedCircuit

    if isinstance(model, QuantumStudent):
        model.sim = FusedCircuit(model.register, dtype=np.complex128, readout=model.readout)
    return model


@pytest.mark.parametrize("variant,readout,scale", [
    ("paper", "z", False), ("paper", "z", True), ("noent", "z", True), ("reupload", "z", True),
    ("parallel:3", "z", True), ("paper", "z+zz", True), ("reupload", "z+zz", False),
])
def test_quantum_student_gradients(variant, readout, scale):
    rng = np.random.default_rng(0)
    model = double(QuantumStudent(6, 3, variant, 3, 2, "l2", readout, scale))
    finite_difference_check(model, rng.normal(size=(5, 6)), rng)


@pytest.mark.parametrize("model", [Twin(6, 3, 4, "l2", True), Twin(6, 2, 3, "none", False), LogReg(6, 3, "l2"),
                                   MLP(6, 3, 5, "l2")])
def test_classical_student_gradients(model):
    rng = np.random.default_rng(1)
    finite_difference_check(model, rng.normal(size=(7, 6)), rng)


def test_parameters_are_split_into_classical_and_circuit():
    cfg = StudentConfig(n_qubits=11, n_layers=2)
    q = build_model(cfg, 384, 2)
    assert q.parameter_groups() == {"classical": 384 * 11 + 11 + 11 + 11 * 2 + 2, "circuit": 64}  # 11 scales
    q = build_model(replace(cfg, encoding_scale=False, variant="parallel:3"), 384, 2)
    assert q.parameter_groups() == {"classical": 384 * 33 + 33 + 33 * 2 + 2, "circuit": 3 * 64}
    q = build_model(replace(cfg, variant="reupload"), 384, 2)
    assert q.parameter_groups()["circuit"] == 64 and q.shapes["enc_scale"] == (22,)  # one scale per layer and qubit
    twin = build_model(replace(cfg, model="twin"), 384, 2)
    assert twin.parameter_groups() == {"classical": 384 * 11 + 11 + 11 + 11 * 2 + 2, "circuit": 0}
    mlp = build_model(replace(cfg, model="mlp"), 384, 2)  # matches the quantum student's size
    assert abs(mlp.size - build_model(cfg, 384, 2).size) <= 384 + 1 + 2


def test_twin_is_the_noent_circuit_reduced_to_cosines():
    """A product state's ⟨Z_i⟩ after RX(z_i), RY(a), RZ(b) is cos(a)·cos(z_i): the twin's cos(z_i) up to a head
    weight, which is what makes it the circuit's classical counterpart."""
    from stages.student.circuit import build_circuit
    from stages.student.fused import FusedCircuit

    rng = np.random.default_rng(2)
    spec = build_circuit("noent", 4, 1)
    z, theta = rng.uniform(-3, 3, (6, 4)), rng.uniform(-3, 3, spec.n_params)
    e = FusedCircuit(spec).forward(z, theta, grad=False)
    np.testing.assert_allclose(e, np.cos(z) * np.cos(theta[:4]), atol=1e-12)


def test_schedules():
    cfg = StudentConfig(lr=0.1, epochs=2, schedule="constant")
    assert learning_rates(cfg, 100) == 0.1
    cos = learning_rates(replace(cfg, schedule="cosine", warmup=0.1), 100)
    assert len(cos) == 100 and cos[0] == pytest.approx(0.01) and cos[9] == pytest.approx(0.1)  # warm-up
    assert cos[10] == pytest.approx(0.1) and cos[-1] < 1e-3 and all(a >= b for a, b in zip(cos[10:], cos[11:]))
    lin = learning_rates(replace(cfg, schedule="linear", warmup=0.0), 10)
    assert lin[0] == pytest.approx(0.1) and lin[5] == pytest.approx(0.05) and lin[-1] == pytest.approx(0.01)


def test_the_optimizer_follows_the_schedule():
    """MindSpore's Adam indexes a per-step list by its own step counter: a first step moves each weight by the
    step's rate (Adam's first step is lr·sign(g))."""
    from stages.student.model import AdamParameters

    opt = AdamParameters(np.zeros(3), [0.5, 0.25, 0.125])
    moved = [opt.step(np.ones(3)).copy() for _ in range(3)]
    np.testing.assert_allclose(moved[0], -0.5, rtol=1e-6)
    assert abs(moved[1][0] - moved[0][0]) == pytest.approx(0.25, rel=1e-3)
    assert abs(moved[2][0] - moved[1][0]) == pytest.approx(0.125, rel=1e-3)


def test_weight_decay_applies_only_to_weight_matrices():
    q = build_model(StudentConfig(n_qubits=3, n_layers=1), 4, 2)
    mask = q.unpack(q.decay_mask())
    assert mask["enc_w"].all() and mask["head_w"].all()
    assert not mask["enc_b"].any() and not mask["theta"].any() and not mask["enc_scale"].any()


def test_a_run_recorded_before_the_trainer_settings_existed_opens_as_it_was_trained(isolated_dirs):
    """Runs written before --schedule, --warmup, --encoding-scale and --readout recorded none of them: they were
    trained with a constant rate, no angle scales and the Z readout, whatever today's defaults are."""
    import json

    from helpers import run_cli, write_synthetic_cache

    from stages.student.run import StudentRun

    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=40, dim=6)
    r = run_cli("student", "--teacher-key", "t1", "--no-classical", "--no-ce-baseline", "--qubits", "2",
                "--epochs", "1", "--seeds", "0", "--schedule", "constant", "--warmup", "0", "--no-encoding-scale")
    assert r.returncode == 0, r.stderr
    (run,) = [p for p in (isolated_dirs / "cache" / "student").iterdir() if not p.name.startswith(".")]
    manifest = json.loads((run / "manifest.json").read_text())
    for name in ("schedule", "warmup", "encoding_scale", "readout", "weight_decay"):
        del manifest["config"][name]
    (run / "manifest.json").write_text(json.dumps(manifest))
    opened = StudentRun.open(run)
    assert (opened.config.schedule, opened.config.encoding_scale, opened.config.readout) == ("constant", False, "z")
    best = opened.best()
    assert "enc_scale" not in best.model.shapes and best.model.unpack(best.weights)["theta"].shape == (10,)  # 2 qubits, 2 layers

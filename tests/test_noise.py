"""Shots and noise (``qdllm student noise``): exact limit, unbiased shots, real noise channels, clear errors, report.

A 4-qubit quantum student and a logreg baseline are trained once (seconds) on a synthetic teacher cache; every
evaluation reads them and must leave them untouched.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from helpers import run_cli, write_synthetic_cache
from pipeline import keys
from pipeline.config import StudentConfig
from pipeline.errors import QdllmError
from stages.student import noise as N
from stages.student import noise_sim as S
from stages.student.circuit import build_circuit
from pipeline.noise import parse_noise
from stages.student.noise_config import NoiseConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from stages.student.run import StudentRun

    root = tmp_path_factory.mktemp("noise")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QDLLM_CACHE_DIR", str(root / "cache"))
        mp.setenv("QDLLM_HASH_MEMO", str(root / "memo.json"))
        tdir = write_synthetic_cache(root / "cache" / "teacher" / "t1", n=150, dim=3, key="t1")
        runs = [StudentRun.plan(tdir, StudentConfig(n_qubits=4, epochs=2, seeds=(0, 1))),
                StudentRun.plan(tdir, StudentConfig(model="logreg", epochs=1, seeds=(0,)))]
        for run in runs:
            run.train()
    return root, runs[0].path, runs[1].path


@pytest.fixture
def runs(trained, monkeypatch):
    root = trained[0]
    monkeypatch.setenv("QDLLM_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("QDLLM_HASH_MEMO", str(root / "memo.json"))
    return trained


def _snapshot(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


# ---------------------------------------------------------------- the exact limit


def test_no_noise_and_infinite_shots_reproduce_the_runs_exact_metrics(runs, monkeypatch):
    from mindquantum.simulator import Simulator

    from stages.student.circuit import enc_name, param_name, to_mindquantum
    from stages.student.fused import FusedCircuit
    from stages.student.run import best_seed_index

    root, quantum, _ = runs
    before = _snapshot(quantum)
    path = N.evaluate_noise(quantum.name, NoiseConfig(shots=(1024, 16), seeds=(0, 1)))
    d = json.loads(path.read_text())
    metrics = json.loads((quantum / "metrics.json").read_text())
    best = metrics["seeds"][best_seed_index(metrics["seeds"])]
    assert d["seed"] == best["seed"] and d["examples"] == sum(best["test"]["confusion"][0]) + sum(
        best["test"]["confusion"][1])
    for m in ("accuracy", "f1", "precision", "recall"):
        assert d["exact"][m] == pytest.approx(best["test"][m], abs=1e-12)
        assert d["models"]["none"]["infinite_shots"][m] == d["exact"][m]
    assert d["models"]["none"]["infinite_shots"]["agreement"] == 1.0
    assert [(r["shots"], r["noise"], r["repeats"]) for r in d["shots"]] == [(16, "none", 2), (1024, "none", 2)]
    assert all(set(r[k]) == {"mean", "std"} for r in d["shots"] for k in ("accuracy", "f1", "agreement"))
    assert d["settings"]["shots"] == [16, 1024] and d["settings"]["noise"] == ["none"]
    assert d["timings"]["total_seconds"] > 0 and d["throughput"]["exact_examples_per_second"] > 0
    # published atomically under its own key; the run is never modified
    assert path.name == "noise.json" and path.parent.parent == root / "cache" / "noise"
    assert path.parent.name == keys.short(d["key"]) and (path.parent / "manifest.json").is_file()
    assert _snapshot(quantum) == before
    # the same settings reuse the finished evaluation; other settings give another key
    monkeypatch.setattr(N, "_evaluate", lambda *a, **k: pytest.fail("recomputed a finished evaluation"))
    assert N.evaluate_noise(quantum.name, NoiseConfig(shots=(16, 1024), seeds=(0, 1))) == path
    student, best = N.open_quantum_run(quantum.name)
    assert N.noise_key(student, NoiseConfig(shots=(16,)))[0] != d["key"]

    # the outcome distribution is the circuit's: ⟨Z⟩ of the fused simulator, joint probabilities of MindQuantum
    x, _ = N.load_split(student, "test", 5)
    spec, theta = best.model.spec, best.model.unpack(best.weights)["theta"]
    z = N._angles(best, x)
    probs = S.exact_probabilities(spec, z, theta)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    signs = S.standard_signs(spec.n_qubits)
    assert np.allclose(probs @ signs, FusedCircuit(spec).forward(z, theta, grad=False), atol=1e-12)
    circ = to_mindquantum(spec)
    for b in range(len(z)):
        sim = Simulator("mqvector", spec.n_qubits)
        sim.apply_circuit(circ, {**{param_name(k): v for k, v in enumerate(theta)},
                                 **{enc_name(i): v for i, v in enumerate(z[b])}})
        mq = np.abs(sim.get_qs()) ** 2
        assert np.allclose(mq, probs[b], atol=1e-10)


# ---------------------------------------------------------------- shots


@pytest.mark.parametrize("n, shots", [(3, 64), (8, 16), (8, 300)])  # multinomial, inverse CDF, multinomial
def test_shot_estimator_is_unbiased(n, shots):
    rng = np.random.default_rng(n * 1000 + shots)
    p = rng.dirichlet(np.full(2**n, 0.3), size=6)
    sampler = S.ShotSampler(p)
    exact = sampler.exact()
    repeats = 400
    counts = np.stack([sampler.counts(shots, np.random.default_rng([5, r])) for r in range(repeats)])
    assert (counts.sum(axis=2) == shots).all() and (counts >= 0).all()
    est = counts @ S.standard_signs(n) / shots
    sd = np.sqrt((1 - exact**2) / shots)
    assert np.all(np.abs(est.mean(axis=0) - exact) <= 5 * sd / np.sqrt(repeats) + 1e-12)
    assert np.allclose(est.std(axis=0, ddof=1), sd, rtol=0.25, atol=1e-3)
    from scipy.stats import chi2  # the joint distribution too: pooled counts against p (small bins merged)

    pooled, expected = counts.sum(axis=0), p * shots * repeats
    for o, e in zip(pooled, expected):
        big = e >= 5
        obs, exp = np.append(o[big], o[~big].sum()), np.append(e[big], e[~big].sum())
        stat = (((obs - exp) ** 2) / np.maximum(exp, 1e-12))[exp > 0].sum()
        assert stat < chi2.ppf(1 - 1e-6, df=int((exp > 0).sum()) - 1), stat
    one = sampler.expectations(shots, np.random.default_rng(1))
    assert one.shape == (6, n) and np.all(np.abs(one) <= 1)


def test_shots_needed_is_the_fewest_shots_within_one_point():
    rows = [{"shots": s, "accuracy": {"mean": a}} for s, a in ((16, 0.80), (64, 0.838), (256, 0.853), (1024, 0.858))]
    assert N.shots_needed(rows, 0.85) == 256
    assert N.shots_needed(rows[::-1], 0.85) == 256  # order does not matter
    rows[1]["accuracy"]["mean"] = 0.845  # within at 64 and from 256 on, not at 16
    assert N.shots_needed(rows, 0.85) == 64
    rows[2]["accuracy"]["mean"] = 0.83  # dips out at 256: only 1024 counts
    assert N.shots_needed(rows, 0.85) == 1024
    assert N.shots_needed(rows, 0.95) is None


# ---------------------------------------------------------------- noise


def _angles(n: int, layers: int, seed: int = 0):
    spec = build_circuit("paper", n, layers)
    rng = np.random.default_rng(seed)
    return spec, rng.normal(0, 0.4, spec.n_params), rng.normal(0, 0.4, (2, n))


def test_full_depolarizing_drives_z_to_zero_and_no_noise_is_exact():
    from stages.student.fused import FusedCircuit

    spec, theta, z = _angles(3, 1)
    exact = FusedCircuit(spec).forward(z, theta, grad=False)
    assert np.abs(exact).max() > 0.5
    probs, info = S.trajectory_probabilities(spec, parse_noise("depolarizing:1,1"), z, theta, 400, seed=0)
    assert np.abs(probs @ S.standard_signs(3)).max() < 0.15
    assert info["z_stderr"]["max"] < 0.06
    weak, _ = S.trajectory_probabilities(spec, parse_noise("depolarizing:0.02,0.05"), z, theta, 400, seed=0)
    assert np.all(np.abs(weak @ S.standard_signs(3)) < np.abs(exact) + 0.05)
    clean, info = S.trajectory_probabilities(spec, parse_noise("depolarizing:0,0"), z, theta, 2, seed=0)
    assert np.allclose(clean @ S.standard_signs(3), exact, atol=1e-10) and info["z_stderr"]["max"] < 1e-12


def test_trajectories_agree_with_a_density_matrix_simulation():
    """MindQuantum's channels by trajectories against Qiskit Aer's density matrix of the same noise model."""
    pytest.importorskip("qiskit_aer")
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel, amplitude_damping_error, depolarizing_error

    spec, theta, z = _angles(3, 1, seed=3)
    p1, p2, gamma, flip = 0.05, 0.1, 0.05, 0.05
    model = parse_noise(f"depolarizing:{p1},{p2}+damping:{gamma}+readout:{flip}")
    exact = S.exact_probabilities(spec, z, theta)
    probs, info = N.noisy_probabilities(spec, model, z, theta, exact, NoiseConfig(trajectories=3000, seeds=(1,)), None)
    traj = probs @ S.standard_signs(3)

    damp = amplitude_damping_error(gamma)
    nm = NoiseModel(basis_gates=["rx", "ry", "rz", "rzz", "cx"])
    nm.add_all_qubit_quantum_error(depolarizing_error(p1, 1).compose(damp), ["rx", "ry", "rz"])
    nm.add_all_qubit_quantum_error(depolarizing_error(p2, 2).compose(damp.tensor(damp)), ["rzz", "cx"])
    qc, zpar = S.qiskit_circuit(spec, theta)
    qc.save_probabilities()
    circuits = [qc.assign_parameters({zpar: list(map(float, angles))}) for angles in z]
    res = AerSimulator(method="density_matrix", noise_model=nm).run(circuits, shots=1).result()
    dm = np.array([res.data(k)["probabilities"] for k in range(len(z))])
    flips = [np.array([[1 - flip, flip], [flip, 1 - flip]])] * 3
    exact = S.apply_readout(dm, flips) @ S.standard_signs(3)
    assert np.all(np.abs(traj - exact) <= 5 * info["z_stderr"]["max"] + 2e-3), (traj, exact)


def test_qiskit_circuit_and_readout_conventions():
    pytest.importorskip("qiskit_aer")
    from qiskit_aer import AerSimulator

    spec, theta, z = _angles(4, 2, seed=5)
    probs = S.exact_probabilities(spec, z, theta)
    qc, zpar = S.qiskit_circuit(spec, theta)
    qc.save_probabilities()
    res = AerSimulator(method="statevector").run([qc.assign_parameters({zpar: list(map(float, a))}) for a in z]).result()
    aer = np.array([res.data(k)["probabilities"] for k in range(len(z))])
    assert np.allclose(aer, probs, atol=1e-10)  # one basis order: qubit 0 the least significant bit
    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    swapped = S.apply_readout(aer, [x, np.eye(2), np.eye(2), np.eye(2)])  # flips qubit 0: index ^ 1
    assert np.allclose(swapped, aer[:, np.arange(16) ^ 1])
    assert np.allclose(S.apply_readout(aer, [np.eye(2)] * 4), aer)

@pytest.mark.parametrize("text", ["readout:0.1", "depolarizing:0.02,0.05+readout:0.1"])
def test_exact_readout_is_the_bit_flip_channel_by_trajectories(text):
    """``readout:P`` is applied exactly to the outcome distribution; it used to be simulated as a BitFlipChannel on
    every qubit before measurement, by trajectories. Both agree within the trajectories' standard errors."""
    from mindquantum.core.gates import BitFlipChannel
    from mindquantum.core.parameterresolver import ParameterResolver
    from mindquantum.simulator import Simulator

    from stages.student.circuit import enc_name, param_name

    spec, theta, z = _angles(3, 1, seed=7)
    model = parse_noise(text)
    exact = S.exact_probabilities(spec, z, theta)
    probs, info = N.noisy_probabilities(spec, model, z, theta, exact, NoiseConfig(trajectories=2000, seeds=(0,)), None)
    assert ("trajectories" in info["method"]) == model.gate_noise and "readout errors applied exactly" in info["method"]
    new_se = info["z_stderr"]["max"] if model.gate_noise else 0.0

    circ = S.noisy_mindquantum(spec, model)
    for q in range(spec.n_qubits):
        circ += BitFlipChannel(model.readout).on(q)
    runs, signs = 6000, S.standard_signs(spec.n_qubits)
    for b, angles in enumerate(z):
        sim = Simulator("mqvector", spec.n_qubits, seed=11 + b)
        pr = ParameterResolver({**{param_name(k): float(v) for k, v in enumerate(theta)},
                                **{enc_name(i): float(a) for i, a in enumerate(angles)}})
        dist = np.empty((runs, 2**spec.n_qubits))
        for t in range(runs):
            sim.reset()
            sim.apply_circuit(circ, pr)
            psi = sim.get_qs()
            dist[t] = psi.real**2 + psi.imag**2
        zs = dist @ signs
        old_se = zs.std(axis=0, ddof=1) / np.sqrt(runs)
        assert np.all(np.abs(zs.mean(axis=0) - probs[b] @ signs) <= 5 * np.hypot(old_se, new_se) + 1e-9)
        if not model.gate_noise:  # the exact distribution against the trajectories' estimate of every outcome
            p_se = dist.std(axis=0, ddof=1) / np.sqrt(runs)
            assert np.all(np.abs(dist.mean(axis=0) - probs[b]) <= 5 * p_se + 1e-9)


def test_calibrated_device_model(runs):
    pytest.importorskip("qiskit_ibm_runtime")
    _, quantum, _ = runs
    path = N.evaluate_noise(quantum.name, NoiseConfig(shots=(16, 256), seeds=(0,), noise=["device:manila"], limit=3))
    d = json.loads(path.read_text())
    dev = d["models"]["device:manila"]
    assert dev["backend"] == "fake_manila" and len(dev["layout"]) == 4 and dev["active_qubits"] == 4
    assert "density matrix" in dev["method"] and 0 < dev["readout_error_mean"] < 0.2
    assert dev["examples_per_second"] > 0 and {r["noise"] for r in d["shots"]} == {"none", "device:manila"}
    assert set(d["versions"]) >= {"qiskit", "qiskit-aer", "qiskit-ibm-runtime"}
    with pytest.raises(QdllmError, match="has 1 qubits but the student needs 4"):
        N.evaluate_noise(quantum.name, NoiseConfig(noise=["device:armonk"]))
    with pytest.raises(QdllmError, match="No fake backend 'atlantis'"):
        N.evaluate_noise(quantum.name, NoiseConfig(noise=["device:atlantis"]))


# ---------------------------------------------------------------- settings and errors


def test_noise_grammar():
    from pipeline.settings import specs

    assert parse_noise("none").is_none
    m = parse_noise(" Depolarizing:0.001,0.01 + readout:0.02+damping:1e-3")
    assert m.text == "depolarizing:0.001,0.01+damping:0.001+readout:0.02"
    assert parse_noise("device:Sherbrooke").device == "sherbrooke"
    s = NoiseConfig(noise=["none", "readout:0.1", "readout:0.1"], shots=(64, 16))
    assert s.noise == ("none", "readout:0.1") and s.shots == (16, 64)
    for bad, match in (("gaussian:0.1", "Unknown noise model"), ("depolarizing:0.1", "two probabilities"),
                       ("readout:1.5", "outside"), ("damping:-0.1", "outside"), ("readout:x", "not a number"),
                       ("readout:0.1+readout:0.2", "twice"), ("none+readout:0.1", "none alone"),
                       ("device:sherbrooke+readout:0.1", "complete calibrated"), ("", "empty")):
        with pytest.raises(QdllmError, match=match):
            parse_noise(bad)
    with pytest.raises(QdllmError, match="integers"):  # the text of --shots, parsed as declared
        specs(NoiseConfig)["shots"].parse("a")
    for kw, match in ((dict(shots=(16, -4)), "not a positive"), (dict(seeds=()), "empty"),
                      (dict(seeds=(1, 1)), "repeats"), (dict(limit=0), "no example"),
                      (dict(split="dev"), "not a split"), (dict(trajectories=0), "too few"),
                      (dict(noise=["thermal:0.1"]), "Unknown noise model")):
        with pytest.raises(QdllmError, match=match):
            NoiseConfig(**kw)


def test_bad_input_is_one_sentence_and_exit_2(runs):
    root, quantum, classical = runs
    env = {"QDLLM_CACHE_DIR": str(root / "cache"), "QDLLM_HASH_MEMO": str(root / "memo.json")}
    for args, says in ((["--run", quantum.name, "--noise", "thermal:0.1"], "Unknown noise model 'thermal:0.1'"),
                       (["--run", quantum.name, "--shots", "16,0"], "--shots 0 is not a positive number"),
                       (["--run", classical.name], "is a classical logreg student")):
        r = run_cli("student", "noise", *args, env=env)
        assert r.returncode == 2, (args, r.stderr)
        assert says in r.stderr and "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), r.stderr


def test_cli_prints_the_path_of_noise_json_last(runs):
    root, quantum, _ = runs
    env = {"QDLLM_CACHE_DIR": str(root / "cache"), "QDLLM_HASH_MEMO": str(root / "memo.json")}
    r = run_cli("student", "noise", "--run", quantum.name, "--shots", "8,32", "--seeds", "3", "--limit", "10", env=env)
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip().splitlines()[-1]
    d = json.loads(open(path).read())
    assert d["examples"] == 10 and list(d["models"]) == ["none"] and d["settings"]["seeds"] == [3]
    assert [r["shots"] for r in d["shots"]] == [8, 32]


# ---------------------------------------------------------------- the report


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_shows_accuracy_against_shots_and_the_shots_needed(isolated_dirs, monkeypatch):
    from test_report import tables, write_run, write_teacher

    from stages.report import build

    cache = isolated_dirs / "cache"
    t = write_teacher(cache, "a" * 16)
    write_run(cache, "1000000000000001", t, "quantum", seed=1)
    write_run(cache, "1000000000000002", t, "logreg", seed=2)
    monkeypatch.setattr(build, "paper_teacher_params", lambda: ([], ""))
    first = build.build_report().read_text()
    assert "No shot or noise evaluations yet" in first and "accuracy-vs-shots" not in first

    def row(s, model, acc):
        return {"shots": s, "noise": model, "repeats": 3, "accuracy": {"mean": acc, "std": 0.004},
                "f1": {"mean": acc, "std": 0.0}, "agreement": {"mean": 0.97, "std": 0.0}}

    rows = [row(s, "none", a) for s, a in ((16, 0.80), (64, 0.83), (256, 0.845), (1024, 0.851), (8192, 0.853))]
    rows += [row(s, "depolarizing:0.001,0.01", a) for s, a in ((16, 0.78), (64, 0.80), (256, 0.81), (1024, 0.82),
                                                                (8192, 0.82))]
    d = cache / "noise" / "00000000000000ab"
    d.mkdir(parents=True)
    (d / "noise.json").write_text(json.dumps({
        "run": "1000000000000001", "examples": 200, "settings": {"split": "test"}, "exact": {"accuracy": 0.854},
        "models": {"none": {}, "depolarizing:0.001,0.01": {"examples_per_second": 1.25}}, "shots": rows}))
    (d / "manifest.json").write_text("{}")
    (cache / "noise" / ".00000000000000cd.tmp-1-x").mkdir()  # an interrupted evaluation: ignored
    path = build.build_report()
    md = path.read_text()
    assert md != first and "![Accuracy against shots](accuracy-vs-shots.png)" in md
    w, h = _png_size(path.parent / "accuracy-vs-shots.png")
    assert w > 300 and h > 200
    table = next(r for title, r in tables(md).items() if title.startswith("Shots to come within 1 point"))
    assert [(r["Noise model"], r["Exact acc (%)"], r["Shots within 1 point"]) for r in table] == [
        ("none", "85.40", "256"), ("depolarizing:0.001,0.01", "85.40", "—")]
    assert table[0]["Acc at most shots (%)"] == "85.30 ± 0.40 at 8,192" and table[1]["Noisy sim (examples/s)"] == "1.25"
    assert table[0]["Run"] == "1000000000000001" and table[0]["Evaluation"] == "00000000000000ab"
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert "accuracy-vs-shots.png" in manifest["files"] and "00000000000000ab" in manifest["inputs"]["noise"]

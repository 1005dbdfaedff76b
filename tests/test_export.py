"""What leaves the project works elsewhere: exported OpenQASM in Qiskit (parsed strictly, simulated exactly),
checkpoints in plain NumPy by their documented tensor names, teacher caches in Hugging Face datasets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli, write_synthetic_cache
from pipeline.cache import text_id
from pipeline.config import StudentConfig
from pipeline.errors import QdllmError

qiskit = pytest.importorskip("qiskit")
from qiskit import qasm2, qasm3  # noqa: E402
from qiskit.quantum_info import Statevector  # noqa: E402

VARIANTS = ("paper", "reference", "u3")
CLASSES = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trained runs shared by this module's tests, trained on first use: ``runs(model, variant) -> run dir``.

    One synthetic cache (100 examples: 60 train, 20 val, 20 test; 3 classes, D = 10); students with 5 qubits,
    2 layers, 1 epoch, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("export-runs")
    teacher = write_synthetic_cache(root / "cache" / "teacher" / "t1", n=100, num_classes=CLASSES, dim=10)
    done: dict = {}

    def get(model: str = "quantum", variant: str = "paper") -> Path:
        if (model, variant) not in done:
            from stages.student.run import StudentRun

            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("QDLLM_CACHE_DIR", str(root / "cache"))
                cfg = StudentConfig(model=model, variant=variant, n_qubits=5, n_layers=2, epochs=1, seeds=(0, 1))
                run = StudentRun.plan(teacher, cfg)
                run.train()
                done[model, variant] = run.path
        return done[model, variant]

    get.root = root
    return get


@pytest.fixture
def use_runs(runs, monkeypatch):
    """The shared runs' cache directory for this test (run keys and the teacher cache resolve there)."""
    monkeypatch.setenv("QDLLM_CACHE_DIR", str(runs.root / "cache"))
    return runs


def z_expectations(circuit) -> np.ndarray:
    """<Z_i> of every qubit from the exact statevector (measurements removed); Qiskit's qubit 0 is the least
    significant bit of a basis-state index, as in the student's simulator."""
    probs = Statevector(circuit.remove_final_measurements(inplace=False)).probabilities()
    idx = np.arange(len(probs))
    return np.array([probs @ (1 - 2 * ((idx >> i) & 1)) for i in range(circuit.num_qubits)])


def _test_split(run: Path):
    from pipeline.cache import read_teacher_cache
    from pipeline.paths import teacher_dir

    manifest = json.loads((run / "manifest.json").read_text())
    return read_teacher_cache(teacher_dir(manifest["teacher_key"]), splits=("test",)).splits["test"]


# ---------------------------------------------------------------- OpenQASM in Qiskit


@pytest.mark.parametrize("variant", VARIANTS)
def test_exported_qasm_parses_strictly_and_its_statevector_gives_the_students_labels(use_runs, tmp_path, variant):
    from stages.student.export import export_run
    from stages.student.run import StudentRun
    from stages.student.train import predict_logits

    run = use_runs("quantum", variant)
    loaded = StudentRun.open(run).best()
    model, flat = loaded.model, loaded.weights
    split = _test_split(run)
    assert len(split) == 20
    x = split.embeddings.astype(np.float64)
    expected = model.expectations(flat, x)  # the fused simulator the student trains and predicts with
    predicted = predict_logits(model, flat, x).argmax(1)  # what `qdllm student predict` gives

    out2 = export_run(run.name, "qasm2", tmp_path / "q2", split="test", limit=20)
    files = sorted((out2 / "examples").iterdir())
    assert [f.name for f in files] == [f"{i:05d}-{split.ids[i]}.qasm" for i in range(20)]
    head = json.loads((out2 / "head.json").read_text())
    assert head["class_names"] == [f"class{i}" for i in range(CLASSES)]
    w, b = np.array(head["weight"]), np.array(head["bias"])
    records = [json.loads(line) for line in (out2 / "examples.jsonl").read_text().splitlines()]
    for k, f in enumerate(files):
        text = f.read_text()
        numbers = re.findall(r"\(([^)]*)\)", text.split("qreg")[1])
        assert numbers and all(re.fullmatch(r"-?\d+\.\d+", a) for a in numbers), "plain decimals only"
        qc = qasm2.loads(text, strict=True)
        names = {i.operation.name for i in qc.data}
        assert names <= {"rx", "ry", "rz", "cx", "measure"}, names
        measured = {qc.find_bit(i.qubits[0]).index for i in qc.data if i.operation.name == "measure"}
        assert measured == set(range(5)) and qc.num_clbits == 5
        z = z_expectations(qc)
        np.testing.assert_allclose(z, expected[k], atol=1e-5)
        assert int(np.argmax(z @ w + b)) == predicted[k]
        assert records[k]["predicted"] == head["class_names"][predicted[k]] and records[k]["row"] == k
        np.testing.assert_allclose(records[k]["expectations"], z, atol=1e-9)

    # the run's circuit.qasm and the export's template: the trained gate applied to zero encoding angles
    template = (run / "circuit.qasm").read_text()
    assert (out2 / "circuit.qasm").read_text() == template
    zero = qasm2.loads(template, strict=True)
    assert sum(i.operation.name == "measure" for i in zero.data) == 5
    theta = model.unpack(flat)["theta"]
    np.testing.assert_allclose(z_expectations(zero), model.sim.forward(np.zeros((1, 5)), theta, grad=False)[0],
                               atol=1e-5)

    # OpenQASM 3: one file with the encoding angles as inputs, and one bound file per example
    out3 = export_run(run, "qasm3", tmp_path / "q3", split="test")
    one = qasm3.loads((out3 / "circuit.qasm").read_text())
    assert sorted(p.name for p in one.parameters) == [f"z{i}" for i in range(5)]
    files3 = sorted((out3 / "examples").iterdir())
    assert [f.name for f in files3] == [f.name for f in files]
    for k, f in enumerate(files3):
        bound = one.assign_parameters({p: records[k]["z"][int(p.name[1:])] for p in one.parameters})
        np.testing.assert_allclose(z_expectations(bound), expected[k], atol=1e-5)
        if k < 5:  # the OpenQASM 3 importer is slow; five bound files are plenty
            np.testing.assert_allclose(z_expectations(qasm3.loads(f.read_text())), expected[k], atol=1e-5)
    manifest = json.loads((out3 / "manifest.json").read_text())
    assert manifest["kind"] == "student-export" and manifest["seed"] == loaded.seed and manifest["examples"] == 20


def test_export_uses_the_best_validation_seed_and_new_texts_in_file_order(use_runs, tmp_path, monkeypatch):
    from stages.student import export
    from stages.student.run import StudentRun

    run = use_runs("quantum", "paper")
    metrics = json.loads((run / "metrics.json").read_text())
    best = max(metrics["seeds"], key=lambda s: s["val"]["accuracy"])["seed"]
    texts = ["first text", "", "second one", "third"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    x = np.random.default_rng(0).normal(size=(3, 10))
    monkeypatch.setattr(StudentRun, "embed", lambda self, items: x[:len(items)])  # no embedder in this cache
    out = export.export_run(run, "qasm2", tmp_path / "out", texts=tmp_path / "texts.txt", limit=2)
    names = sorted(p.name for p in (out / "examples").iterdir())
    assert names == [f"00000-{text_id('first text')}.qasm", f"00001-{text_id('second one')}.qasm"]
    assert json.loads((out / "manifest.json").read_text())["seed"] == best == StudentRun.open(run).best().seed
    assert (out / "student.safetensors").read_bytes() == (run / f"weights-seed{best}.safetensors").read_bytes()
    records = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == ["first text", "second one"] and records[0]["label"] is None
    enc = json.loads((out / "encoder.json").read_text())
    z = (x[:2] / np.linalg.norm(x[:2], axis=1, keepdims=True)) @ np.array(enc["weight"]) + np.array(enc["bias"])
    z = z * np.array(enc["angle_scale"] or 1.0)  # encoder.json says how the angles are made
    np.testing.assert_allclose([r["z"] for r in records], z, atol=1e-12)


def test_angles_are_plain_decimals_that_round_trip():
    from stages.student.circuit import build_circuit, qasm_angle, to_qasm2

    assert qasm_angle(1e-05) == "0.00001" and qasm_angle(3.0) == "3.0" and qasm_angle(-0.0) == "-0.0"
    values = np.random.default_rng(0).normal(size=200) * np.logspace(-12, 3, 200)
    assert all(float(qasm_angle(v)) == v and "e" not in qasm_angle(v) for v in values)
    spec = build_circuit("paper", 2, 1)
    qc = qasm2.loads(to_qasm2(spec, np.array([1e-5, 2.5e-9, 1e-7, 7.0, 1e3]), np.array([1e-12, -4e-6])), strict=True)
    assert [float(i.operation.params[0]) for i in qc.data[:2]] == [1e-12, -4e-6]


# ---------------------------------------------------------------- checkpoints in plain NumPy


def _plain_numpy_expectations(gates, n: int, z: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """A gate-by-gate state-vector simulation (qubit 0 = least significant bit) of the documented circuit."""
    idx = np.arange(2**n)
    bit = lambda q: (idx >> q) & 1  # noqa: E731
    psi = np.zeros((len(z), 2**n), complex)
    psi[:, 0] = 1
    for g in gates:
        if g.kind == "CNOT":
            c, t = g.qubits
            psi = psi[:, idx ^ (bit(c) << t)]
            continue
        a = z[:, g.encoding] if g.encoding is not None else np.full(len(z), theta[g.param])
        if g.kind == "ZZ":
            sign = (1 - 2 * bit(g.qubits[0])) * (1 - 2 * bit(g.qubits[1]))
            psi = psi * np.exp(-0.5j * a[:, None] * sign)
            continue
        c, s = np.cos(a / 2), np.sin(a / 2)
        u = {"RX": [[c, -1j * s], [-1j * s, c]], "RY": [[c, -s], [s, c]],
             "RZ": [[np.exp(-0.5j * a), 0 * a], [0 * a, np.exp(0.5j * a)]]}[g.kind]
        u = np.moveaxis(np.array(u, dtype=complex), -1, 0)  # (batch, 2, 2)
        q = g.qubits[0]
        view = psi.reshape(len(z), 2 ** (n - 1 - q), 2, 2**q)
        psi = np.einsum("bxy,biyj->bixj", u, view).reshape(len(z), 2**n)
    probs = np.abs(psi) ** 2
    return np.stack([probs @ (1 - 2 * bit(q)) for q in range(n)], axis=1)


@pytest.mark.parametrize("kind", ["quantum", "logreg", "mlp"])
def test_checkpoint_reproduces_the_logits_with_plain_numpy_and_its_tensor_names(use_runs, kind):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from stages.student.circuit import build_circuit
    from stages.student.run import StudentRun
    from stages.student.train import predict_logits

    run = use_runs(kind, "paper")
    loaded = StudentRun.open(run).best()
    path = run / f"weights-seed{loaded.seed}.safetensors"
    t = load_file(str(path))
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    config = json.loads(meta["config"])
    assert meta["model"] == kind and meta["input_scaling"] == "l2" and "logits" in meta["forward"]
    assert json.loads(meta["class_names"]) == [f"class{i}" for i in range(CLASSES)] and config["seeds"] == [0, 1]
    e = _test_split(run).embeddings.astype(np.float64)
    x = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)  # input scaling l2
    if kind == "quantum":
        assert set(t) == {"enc_w", "enc_b", "enc_scale", "theta", "head_w", "head_b"} and t["enc_w"].shape == (10, 5)
        spec = build_circuit(config["variant"], config["n_qubits"], config["n_layers"])
        z = (x @ t["enc_w"] + t["enc_b"]) * t["enc_scale"]
        logits = _plain_numpy_expectations(spec.gates, 5, z, t["theta"]) @ t["head_w"] + t["head_b"]
    elif kind == "logreg":
        assert set(t) == {"w", "b"}
        logits = x @ t["w"] + t["b"]
    else:
        assert set(t) == {"w1", "b1", "w2", "b2"} and t["w1"].shape == (10, config["hidden"])
        logits = np.maximum(x @ t["w1"] + t["b1"], 0) @ t["w2"] + t["b2"]
    np.testing.assert_allclose(logits, predict_logits(loaded.model, loaded.weights, e), atol=1e-5)


def test_checkpoint_of_another_shape_or_an_old_npz_is_refused_in_one_sentence(use_runs, tmp_path):
    import shutil

    from safetensors.numpy import save_file

    from stages.student.run import StudentRun

    copy = tmp_path / "run"
    shutil.copytree(use_runs("logreg", "paper"), copy)
    for seed in (0, 1):
        save_file({"w": np.zeros((3, 3)), "b": np.zeros(3)}, str(copy / f"weights-seed{seed}.safetensors"))
    with pytest.raises(QdllmError, match="holds tensors") as err:
        StudentRun.open(copy).best()
    _one_sentence(str(err.value))
    for seed in (0, 1):
        (copy / f"weights-seed{seed}.safetensors").rename(copy / f"weights-seed{seed}.npz")
    with pytest.raises(QdllmError, match="older qdllm"):
        StudentRun.open(copy).best()


# ---------------------------------------------------------------- teacher caches in datasets


def test_teacher_cache_loads_with_datasets_and_names_its_classes(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = write_synthetic_cache(tmp_path / "t", n=40, num_classes=3, dim=6)
    ds = datasets.load_dataset("parquet", data_dir=str(path))
    assert {k: len(v) for k, v in ds.items()} == {"train": 24, "validation": 8, "test": 8}
    label = ds["train"].features["label"]
    assert isinstance(label, datasets.ClassLabel) and label.names == ["class0", "class1", "class2"]
    assert label.int2str(ds["test"][2]["label"]) == "class2"
    assert ds["train"].features["teacher_logits"].length == 3 and ds["train"].features["embedding"].length == 6


# ---------------------------------------------------------------- bad input: one sentence, nothing written


def _one_sentence(msg: str) -> None:
    assert msg.count(". ") == 0 and msg.endswith(".") and "\n" not in msg, msg


def test_bad_exports_fail_in_one_sentence_and_write_nothing(use_runs, tmp_path, monkeypatch):
    from stages.student import export

    run = use_runs("quantum", "paper")
    out = tmp_path / "out"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        (dict(run="nosuchrun", fmt="qasm2", out=out), "No complete student run"),
        (dict(run=use_runs("logreg", "paper"), fmt="qasm2", out=out), "no circuit to export"),
        (dict(run=run, fmt="qasm4", out=out), "Unknown export format 'qasm4'"),
        (dict(run=run, fmt="qasm2", out=out, texts=tmp_path / "missing.txt"), "does not exist"),
        (dict(run=run, fmt="qasm2", out=out, texts=tmp_path / "missing.txt", split="test"), "not both"),
        (dict(run=run, fmt="qasm2", out=out, split="dev"), "Unknown split 'dev'"),
        (dict(run=run, fmt="qasm2", out=out, limit=3), "--limit only applies"),
        (dict(run=run, fmt="qasm2", out=out, split="test", limit=0), "1 or more"),
        (dict(run=run, fmt="qasm2", out=tmp_path / "full"), "not an empty directory"),
    ]
    for kw, expected in cases:
        with pytest.raises(QdllmError, match=re.escape(expected)) as err:
            export.export_run(kw.pop("run"), kw.pop("fmt"), kw.pop("out"), **kw)
        _one_sentence(str(err.value))
    with monkeypatch.context() as mp:  # the run's teacher cache is not on this machine
        mp.setenv("QDLLM_CACHE_DIR", str(tmp_path / "elsewhere"))
        with pytest.raises(QdllmError, match="pull it") as err:
            export.export_run(run, "qasm2", out, split="test")
        _one_sentence(str(err.value))
    monkeypatch.setattr(export, "to_qasm2", lambda *a: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):
        export.export_run(run, "qasm2", out, split="test")
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # no partial directory, no temporary sibling
    assert list((tmp_path / "full").iterdir()) == [tmp_path / "full" / "x"]
    r = run_cli("student", "export", "--run", "nosuchrun", "--format", "qasm2", "--out", str(out),
                env={"QDLLM_CACHE_DIR": str(use_runs.root / "cache")})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "No complete student run" in r.stderr


def test_counts_read_back_as_docs_say_give_the_ideal_expectations(use_runs, tmp_path):
    """docs/student.md's recipe on a shot-based sampler: <Z_i> from counts (key printed c[n-1] first)."""
    aer = pytest.importorskip("qiskit_aer.primitives")
    from stages.student.export import export_run

    out = export_run(use_runs("quantum", "paper"), "qasm2", tmp_path / "hw", split="test", limit=3)
    records = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    files = sorted((out / "examples").glob("*.qasm"))
    circuits = [qasm2.loads(f.read_text(), strict=True) for f in files]
    shots = 20000
    results = aer.SamplerV2(seed=1).run(circuits, shots=shots).result()
    for record, result in zip(records, results):
        counts = result.data.c.get_counts()
        n = 5
        z = np.array([sum(m * (1 if key[n - 1 - i] == "0" else -1) for key, m in counts.items()) / shots
                      for i in range(n)])
        np.testing.assert_allclose(z, record["expectations"], atol=5 / np.sqrt(shots))  # 5 standard errors at most

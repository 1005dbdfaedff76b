"""Shots and noise: how a trained quantum student would fare on a real quantum device.

Every accuracy a run reports uses exact ⟨Z_i⟩ from a state vector. A device estimates each ⟨Z_i⟩ from S shots
(bitstrings) under gate and readout noise. ``evaluate_noise`` takes a published run (its best-validation seed, as
``load_best`` gives), never retrains or modifies it, and writes ``cache/noise/<key>/noise.json``:

- **shots**: per example, the 2^n outcome probabilities (the fused simulator's final state, complex128; or the
  noisy distribution below); S bitstrings are sampled from them (inverse CDF for S ≤ 2^n/4, multinomial counts
  above: both exact samplers); one set of shots estimates every ⟨Z_i⟩ = (counts · signs_i)/S; then the Dense head.
  Accuracy, F1 and agreement with the exact prediction, mean ± std over sampling repeats (``seeds``).
- **noise** (``--noise``): ``depolarizing:P1,P2`` (a depolarizing channel after every one-/two-qubit gate,
  encoding RX included), ``damping:GAMMA`` (amplitude damping on every qubit a gate touches, after the gate),
  ``readout:P`` (bit flip on every qubit before measurement), joined with ``+``: MindQuantum's
  ``DepolarizingChannel``, ``AmplitudeDampingChannel`` and ``BitFlipChannel`` in the circuit built from the
  ``CircuitSpec`` gate list, simulated by **trajectories** on ``Simulator('mqvector')`` (one Kraus branch sampled
  per channel per run; the outcome distribution is the mean of ``trajectories`` runs' |ψ|²).
  ``device:NAME``: a Qiskit fake backend's calibration (``qiskit_ibm_runtime.fake_provider``), the circuit
  transpiled to the backend (layout, native gates), ``qiskit_aer.noise.NoiseModel.from_backend`` simulated as a
  **density matrix** by Qiskit Aer, then the backend's per-qubit readout assignment matrices applied to the
  outcome distribution. docs/noise.md says why each method.

The output key digests the run's full key, every evaluation setting, this module's source and the versions of
the simulators used; the directory is published atomically (``publish_dir`` under ``key_lock``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import keys, paths
from pipeline.errors import QdllmError
from pipeline.metrics import classification_metrics, mean_std
from pipeline.publish import MANIFEST, is_complete, key_lock, publish_dir, write_json

log = logging.getLogger(__name__)

NOISE_FILE = "noise.json"
SCHEMA = 1
DEFAULT_SHOTS = (16, 64, 256, 1024, 8192)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_TRAJECTORIES = 1000
MAX_SHOTS = 10**9  # far above any device's limit; NumPy's multinomial sampler takes 64-bit counts
MAX_TRAJECTORIES = 10**6  # each is one full noisy simulation per example
SPLIT_NAMES = ("train", "val", "test")
CHUNK = 256  # examples per fused-simulator call
MAX_DEVICE_QUBITS = 13  # a density matrix of K active qubits holds 4^K complex amplitudes (16·4^13 B = 1 GiB)
KINDS = ("none", "depolarizing", "damping", "readout", "device")
GRAMMAR = "none, depolarizing:P1,P2, damping:GAMMA, readout:P or device:NAME (terms joined with +)"
DEVICE_PACKAGES = "pip install 'qiskit==2.6.1' 'qiskit-aer==0.18.2' 'qiskit-ibm-runtime==0.51.0'"


def noise_root() -> Path:
    return paths.cache_dir() / "noise"


def source_digest() -> str:
    """sha256 of this module's source: a changed evaluation gives a new output key."""
    return keys.sha256_file(Path(__file__))


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class NoiseSpec:
    """One noise model of the ``--noise`` grammar, with its canonical text (the name in noise.json)."""

    depolarizing: tuple[float, float] | None = None
    damping: float | None = None
    readout: float | None = None
    device: str | None = None

    @property
    def is_none(self) -> bool:
        return self == NoiseSpec()

    @property
    def text(self) -> str:
        parts = []
        if self.depolarizing is not None:
            parts.append(f"depolarizing:{_num(self.depolarizing[0])},{_num(self.depolarizing[1])}")
        if self.damping is not None:
            parts.append(f"damping:{_num(self.damping)}")
        if self.readout is not None:
            parts.append(f"readout:{_num(self.readout)}")
        if self.device is not None:
            parts.append(f"device:{self.device}")
        return "+".join(parts) or "none"


def _num(x: float) -> str:
    return repr(float(x))


def _probability(text: str, term: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise QdllmError(f"--noise {term!r}: {text!r} is not a number; give a probability in [0, 1].") from None
    if not 0.0 <= p <= 1.0:
        raise QdllmError(f"--noise {term!r}: {text} is outside [0, 1]; give a probability between 0 and 1.")
    return p


def parse_noise(text: str) -> NoiseSpec:
    """``none`` | ``depolarizing:P1,P2`` | ``damping:GAMMA`` | ``readout:P`` | ``device:NAME``, joined with ``+``."""
    raw = str(text).strip()
    if not raw:
        raise QdllmError(f"--noise is empty; give {GRAMMAR}.")
    found: dict[str, object] = {}
    for term in (t.strip() for t in raw.split("+")):
        kind, sep, arg = term.partition(":")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise QdllmError(f"Unknown noise model {term!r} in --noise {raw!r}; use {GRAMMAR}.")
        if kind in found:
            raise QdllmError(f"--noise {raw!r} names {kind} twice; give each noise term once.")
        if kind == "none":
            if sep:
                raise QdllmError(f"--noise {term!r}: none takes no argument; write none.")
            found[kind] = True
        elif kind == "depolarizing":
            values = [v for v in arg.split(",")]
            if len(values) != 2:
                raise QdllmError(f"--noise {term!r}: depolarizing needs two probabilities P1,P2 (after one- and "
                                 "two-qubit gates), e.g. depolarizing:0.001,0.01.")
            found[kind] = (_probability(values[0], term), _probability(values[1], term))
        elif kind in ("damping", "readout"):
            if not sep or not arg.strip():
                raise QdllmError(f"--noise {term!r}: {kind} needs a probability, e.g. {kind}:0.01.")
            found[kind] = _probability(arg, term)
        else:
            name = arg.strip().lower()
            if not name:
                raise QdllmError(f"--noise {term!r}: device needs a backend name, e.g. device:sherbrooke.")
            found[kind] = name
    if "none" in found and len(found) > 1:
        raise QdllmError(f"--noise {raw!r} combines none with other terms; give none alone.")
    if "device" in found and len(found) > 1:
        raise QdllmError(f"--noise {raw!r}: device:NAME is a complete calibrated noise model; do not combine it "
                         "with other terms.")
    return NoiseSpec(depolarizing=found.get("depolarizing"), damping=found.get("damping"),  # type: ignore[arg-type]
                     readout=found.get("readout"), device=found.get("device"))  # type: ignore[arg-type]


def _int_list(text, flag: str, example: str) -> tuple[int, ...]:
    if isinstance(text, (list, tuple)):
        items = [str(v) for v in text]
    else:
        items = [s for s in str(text).split(",") if s.strip()]
    try:
        values = tuple(int(s) for s in items)
    except ValueError:
        raise QdllmError(f"{flag} {text!r} is not a comma-separated list of integers, e.g. {example}.") from None
    if not values:
        raise QdllmError(f"{flag} is empty; give a comma-separated list of integers, e.g. {example}.")
    if len(set(values)) != len(values):
        raise QdllmError(f"{flag} {text!r} repeats a value; give each once.")
    return values


@dataclass(frozen=True)
class Settings:
    """Everything that decides a noise evaluation besides the run: validated before any work."""

    split: str = "test"
    shots: tuple[int, ...] = DEFAULT_SHOTS
    noise: tuple[NoiseSpec, ...] = (NoiseSpec(),)
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    limit: int | None = None
    trajectories: int = DEFAULT_TRAJECTORIES

    def key_inputs(self) -> dict:
        return {"split": self.split, "shots": list(self.shots), "noise": [m.text for m in self.noise],
                "seeds": list(self.seeds), "limit": self.limit,
                "trajectories": self.trajectories if any(_uses_trajectories(m) for m in self.noise) else None}


def make_settings(split: str = "test", shots=DEFAULT_SHOTS, noise=("none",), seeds=DEFAULT_SEEDS,
                  limit: int | None = None, trajectories: int = DEFAULT_TRAJECTORIES) -> Settings:
    """Parse and check every setting; one sentence (``QdllmError``) for the first bad one."""
    if split not in SPLIT_NAMES:
        raise QdllmError(f"--split {split!r} is not a split of a teacher cache; use one of {', '.join(SPLIT_NAMES)}.")
    shot_list = _int_list(shots, "--shots", "16,64,256,1024,8192")
    bad = [s for s in shot_list if s <= 0]
    if bad:
        raise QdllmError(f"--shots {bad[0]} is not a positive number of shots; give counts of 1 or more, "
                         "e.g. 16,64,256,1024,8192.")
    big = [s for s in shot_list if s > MAX_SHOTS]
    if big:
        raise QdllmError(f"--shots {big[0]} is more than the maximum of {MAX_SHOTS} shots per example; give "
                         f"counts from 1 to {MAX_SHOTS}.")
    seed_list = _int_list(seeds, "--seeds", "0,1,2,3,4")
    if any(s < 0 for s in seed_list):
        raise QdllmError(f"--seeds {seeds!r} holds a negative seed; give seeds of 0 or more.")
    if limit is not None and int(limit) < 1:
        raise QdllmError(f"--limit {limit} would evaluate no example; give 1 or more (or leave it out for all).")
    if int(trajectories) < 1:
        raise QdllmError(f"--trajectories {trajectories} is too few; give 1 or more (default {DEFAULT_TRAJECTORIES}).")
    if int(trajectories) > MAX_TRAJECTORIES:
        raise QdllmError(f"--trajectories {trajectories} is more than the maximum of {MAX_TRAJECTORIES}; give 1 to "
                         f"{MAX_TRAJECTORIES} (default {DEFAULT_TRAJECTORIES}).")
    texts = [noise] if isinstance(noise, str) else list(noise or ["none"])
    models = [NoiseSpec()] + [m for m in (parse_noise(t) for t in texts) if not m.is_none]
    unique = tuple(dict.fromkeys(models))  # "none" first: the reference line of every evaluation
    return Settings(split, tuple(sorted(shot_list)), unique, seed_list, None if limit is None else int(limit),
                    int(trajectories))


def _uses_trajectories(m: NoiseSpec) -> bool:
    return not m.is_none and m.device is None


# ---------------------------------------------------------------- the run


@dataclass
class Student:
    """The pieces of a trained quantum student the evaluation needs."""

    path: Path
    key: str
    manifest: dict
    metrics: dict
    model: object  # QuantumStudent
    weights: np.ndarray
    seed: int

    @property
    def parts(self) -> dict[str, np.ndarray]:
        return self.model.unpack(self.weights)

    @property
    def spec(self):
        return self.model.spec

    def encoding_angles(self, x: np.ndarray) -> np.ndarray:
        p = self.parts
        return self.model.prepare(x) @ p["enc_w"] + p["enc_b"]

    def logits(self, e: np.ndarray) -> np.ndarray:
        p = self.parts
        return e @ p["head_w"] + p["head_b"]


def load_student(run) -> Student:
    """The best-validation seed of a published quantum run; one sentence for a classical or missing run."""
    from stages.student.run import load_best, run_path

    path = run_path(run)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise QdllmError(f"{path} has an unreadable manifest.json; retrain the run.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config") or {}, dict):
        raise QdllmError(f"{path / MANIFEST} is not a student run's manifest, so the run is corrupt; retrain the "
                         "run.")
    kind = (manifest.get("config") or {}).get("model", "quantum")
    if kind != "quantum":
        raise QdllmError(f"The run {path.name} is a classical {kind} student; shots and noise apply only to quantum "
                         "students, so give the key of a quantum run.")
    loaded = load_best(path)
    m = loaded.manifest
    return Student(path, path.name, m.to_dict() if hasattr(m, "to_dict") else dict(m), loaded.metrics, loaded.model,
                   loaded.weights, loaded.seed)


def load_split(student: Student, split: str, limit: int | None):
    """(embeddings float64, labels) of the run's teacher cache split, the first ``limit`` rows."""
    from pipeline.cache import STUDENT_COLUMNS, read_teacher_cache

    tkey = student.manifest.get("teacher_key")
    tdir = paths.teacher_dir(str(tkey))
    if not tkey or not is_complete(tdir):
        raise QdllmError(f"The teacher cache {tkey} of run {student.key} is not under {tdir.parent}; fetch it with "
                         "`make pull REMOTE=...` (the evaluation needs its embeddings).")
    cache = read_teacher_cache(tdir, splits=(split,), columns=STUDENT_COLUMNS)
    s = cache.splits[split]
    n = len(s.labels) if limit is None else min(limit, len(s.labels))
    if n == 0:
        raise QdllmError(f"The {split} split of teacher cache {tkey} is empty; evaluate another split.")
    return s.embeddings[:n].astype(np.float64), np.asarray(s.labels[:n], dtype=np.int64)


# ---------------------------------------------------------------- exact outcome probabilities


def exact_probabilities(spec, z: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (B, 2^n), signs (2^n, n)) of the noiseless circuit from the fused simulator (complex128).

    The fused simulator folds a trailing permutation into its readout, so its basis is permuted: ``signs[x, i]``
    is the eigenvalue of Z_i on its basis state x, and ``probs @ signs`` is exactly its ⟨Z⟩."""
    from stages.student.fused import FusedCircuit

    sim = FusedCircuit(spec, dtype=np.complex128)
    out = np.empty((len(z), sim.dim))
    for start in range(0, len(z), CHUNK):
        zc = z[start:start + CHUNK]
        sim.forward(zc, theta, grad=False)
        probs = sim._workspace(len(zc), False)["probs"]  # |Re ψ|², |Im ψ|² interleaved, left by forward()
        np.sum(probs.reshape(len(zc), sim.dim, 2), axis=2, out=out[start:start + len(zc)])
    return out, np.asarray(sim.readout, dtype=np.float64)


def standard_signs(n: int) -> np.ndarray:
    """Z_i eigenvalues of the computational basis, qubit 0 the least significant bit (MindQuantum and Qiskit)."""
    idx = np.arange(2**n)
    return (1 - 2 * ((idx[:, None] >> np.arange(n)[None, :]) & 1)).astype(np.float64)


# ---------------------------------------------------------------- shots


class ShotSampler:
    """S bitstrings per example from its outcome distribution; ⟨Z_i⟩ estimated from the counts.

    Small S: inverse-CDF sampling (one ``searchsorted`` over every example's CDF laid end to end, offset by its
    row number); large S: multinomial counts (NumPy's Generator, cost independent of S). Both are exact samplers of
    the same distribution; the switch only follows speed."""

    def __init__(self, probs: np.ndarray, signs: np.ndarray):
        p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
        self.p = p / p.sum(axis=1, keepdims=True)
        self.signs = np.asarray(signs, dtype=np.float64)
        self.rows, self.dim = self.p.shape
        self._flat: np.ndarray | None = None

    def _cdf(self) -> np.ndarray:
        if self._flat is None:
            cdf = np.cumsum(self.p, axis=1)
            cdf[:, -1] = 1.0
            cdf += np.arange(self.rows)[:, None]
            self._flat = cdf.ravel()
        return self._flat

    def counts(self, shots: int, rng: np.random.Generator) -> np.ndarray:
        """(B, 2^n) outcome counts, each row summing to ``shots``."""
        if shots * 4 <= self.dim:
            u = rng.random((self.rows, shots))
            u += np.arange(self.rows)[:, None]
            idx = np.searchsorted(self._cdf(), u.ravel(), side="right")
            last = np.repeat(np.arange(1, self.rows + 1) * self.dim - 1, shots)
            np.minimum(idx, last, out=idx)  # u + row rounding up to row + 1
            return np.bincount(idx, minlength=self.rows * self.dim).reshape(self.rows, self.dim)
        return rng.multinomial(shots, self.p)

    def expectations(self, shots: int, rng: np.random.Generator) -> np.ndarray:
        """(B, n) estimates of ⟨Z_i⟩ from one set of ``shots`` bitstrings per example."""
        return (self.counts(shots, rng) @ self.signs) / shots

    def exact(self) -> np.ndarray:
        return self.p @ self.signs


def _rng(seed: int, shots: int, model: str) -> np.random.Generator:
    tag = int(hashlib.sha256(model.encode()).hexdigest()[:8], 16)
    return np.random.default_rng([seed, shots, tag])


# ---------------------------------------------------------------- MindQuantum noise (trajectories)


def noisy_mindquantum(spec, model: NoiseSpec):
    """The student's gate list as a MindQuantum circuit with the model's channels after each gate.

    Parameters are named as in ``circuit.to_mindquantum`` (``z{i}`` encoding, ``theta{k}`` ansatz)."""
    from mindquantum.core.circuit import Circuit
    from mindquantum.core.gates import RX, RY, RZ, AmplitudeDampingChannel, BitFlipChannel, DepolarizingChannel, Rzz, X

    from stages.student.circuit import enc_name, param_name

    kinds = {"RX": RX, "RY": RY, "RZ": RZ, "ZZ": Rzz}
    circ = Circuit()
    for g in spec.gates:
        if g.kind == "CNOT":
            circ += X.on(g.qubits[1], g.qubits[0])
        else:
            name = enc_name(g.encoding) if g.encoding is not None else param_name(g.param)
            circ += kinds[g.kind](name).on(list(g.qubits) if g.kind == "ZZ" else g.qubits[0])
        if model.depolarizing is not None:
            p = model.depolarizing[0] if len(g.qubits) == 1 else model.depolarizing[1]
            if p > 0:
                circ += DepolarizingChannel(p, len(g.qubits)).on(list(g.qubits))
        if model.damping:
            for q in g.qubits:
                circ += AmplitudeDampingChannel(model.damping).on(q)
    if model.readout:
        for q in range(spec.n_qubits):
            circ += BitFlipChannel(model.readout).on(q)
    return circ


def _example_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0]) % (2**23)


def trajectory_probabilities(spec, model: NoiseSpec, z: np.ndarray, theta: np.ndarray, trajectories: int,
                             seed: int, on_example=None) -> tuple[np.ndarray, dict]:
    """Noisy outcome distribution of each example: the mean |ψ|² over ``trajectories`` runs of MindQuantum's
    state-vector simulator, each run sampling one Kraus branch per channel. Also the standard error of the
    trajectory mean of ⟨Z_i⟩ (its mean and max over examples and qubits)."""
    from mindquantum.core.parameterresolver import ParameterResolver
    from mindquantum.simulator import Simulator

    from stages.student.circuit import enc_name, param_name

    circ = noisy_mindquantum(spec, model)
    n, dim = spec.n_qubits, 2**spec.n_qubits
    signs = standard_signs(n)
    base = {param_name(k): float(v) for k, v in enumerate(theta)}
    out = np.empty((len(z), dim))
    stderr = np.empty((len(z), n))
    for b, angles in enumerate(z):
        sim = Simulator("mqvector", n, seed=_example_seed(seed, b))
        pr = ParameterResolver({**base, **{enc_name(i): float(a) for i, a in enumerate(angles)}})
        acc = np.zeros(dim)
        zs = np.empty((trajectories, n))
        for t in range(trajectories):
            sim.reset()
            sim.apply_circuit(circ, pr)
            psi = sim.get_qs()
            pt = psi.real**2 + psi.imag**2
            acc += pt
            zs[t] = pt @ signs
        out[b] = acc / trajectories
        stderr[b] = zs.std(axis=0, ddof=1) / np.sqrt(trajectories) if trajectories > 1 else np.nan
        if on_example:
            on_example()
    info = {"z_stderr": {"mean": float(np.nanmean(stderr)) if trajectories > 1 else None,
                         "max": float(np.nanmax(stderr)) if trajectories > 1 else None},
            "channels": _channel_text(model)}
    return out, info


def _channel_text(model: NoiseSpec) -> str:
    parts = []
    if model.depolarizing is not None:
        parts.append(f"DepolarizingChannel({_num(model.depolarizing[0])}) after every one-qubit gate and "
                     f"DepolarizingChannel({_num(model.depolarizing[1])}, 2) after every two-qubit gate")
    if model.damping:
        parts.append(f"AmplitudeDampingChannel({_num(model.damping)}) on every qubit a gate acts on, after it")
    if model.readout:
        parts.append(f"BitFlipChannel({_num(model.readout)}) on every qubit before measurement")
    return "; ".join(parts) or "no channel (all probabilities are 0)"


# ---------------------------------------------------------------- calibrated device (Qiskit Aer)


def _device_modules():
    for name in ("qiskit", "qiskit_aer", "qiskit_ibm_runtime"):  # one INFO line per transpiler pass otherwise
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        import qiskit  # noqa: F401
        import qiskit_aer  # noqa: F401
        from qiskit_ibm_runtime import fake_provider
    except ImportError:
        raise QdllmError(f"--noise device:NAME needs Qiskit, Qiskit Aer and the IBM fake backends; install them with "
                         f"{DEVICE_PACKAGES} (the dev extra has them).") from None
    return fake_provider


def _norm(name: str) -> str:
    s = name.lower().replace("_", "").replace("-", "")
    return s.removeprefix("fake").removesuffix("v2")


def device_backend(name: str, n_qubits: int):
    """The fake backend called ``name`` (``sherbrooke``, ``fake_sherbrooke``, ``FakeSherbrooke``...), checked."""
    fp = _device_modules()
    classes = {_norm(c): c for c in dir(fp) if c.startswith("Fake") and "Provider" not in c and
               c not in ("FakeFractionalBackend",)}
    cls = classes.get(_norm(name))
    if cls is None:
        raise QdllmError(f"No fake backend {name!r} in qiskit_ibm_runtime.fake_provider; use one of "
                         f"{', '.join(sorted(classes))} (e.g. device:sherbrooke).")
    backend = getattr(fp, cls)()
    if backend.num_qubits < n_qubits:
        raise QdllmError(f"device:{name} has {backend.num_qubits} qubits but the student needs {n_qubits}; "
                         "choose a larger backend, e.g. device:sherbrooke.")
    return backend


def qiskit_circuit(spec, theta: np.ndarray):
    """The student as a Qiskit circuit: trained angles bound, encoding angles as parameters ``z[i]``."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    z = ParameterVector("z", spec.n_qubits)
    qc = QuantumCircuit(spec.n_qubits)
    for g in spec.gates:
        if g.kind == "CNOT":
            qc.cx(*g.qubits)
            continue
        angle = z[g.encoding] if g.encoding is not None else float(theta[g.param])
        if g.kind == "ZZ":
            qc.rzz(angle, *g.qubits)  # exp(-i θ/2 Z⊗Z), MindQuantum's Rzz
        else:
            getattr(qc, g.kind.lower())(angle, g.qubits[0])
    return qc, z


def readout_matrices(backend, physical: list[int]) -> list[np.ndarray]:
    """Per logical qubit, the 2×2 assignment matrix R[prepared, measured] of its physical qubit, from the same
    calibration values ``NoiseModel.from_backend`` uses."""
    from qiskit_aer.noise.device.models import basic_device_readout_errors

    errors = {int(q[0]): np.asarray(e.probabilities, dtype=np.float64)
              for q, e in basic_device_readout_errors(target=backend.target)}
    return [errors.get(q, np.eye(2)) for q in physical]


def apply_readout(probs: np.ndarray, mats: list[np.ndarray]) -> np.ndarray:
    """Distribution of measured bitstrings given the true ones: each qubit's assignment matrix on its bit."""
    B, n = len(probs), len(mats)
    t = probs.reshape((B,) + (2,) * n)  # axis 1 = qubit n-1 (most significant), axis n = qubit 0
    for q, m in enumerate(mats):
        axis = n - q
        t = np.moveaxis(np.tensordot(t, m, axes=([axis], [0])), -1, axis)
    return t.reshape(B, -1)


def device_probabilities(spec, name: str, z: np.ndarray, theta: np.ndarray, seed: int, backend=None,
                         on_example=None) -> tuple[np.ndarray, dict]:
    """Noisy outcome distributions on a calibrated fake backend: Qiskit Aer's density-matrix simulation of the
    transpiled circuit under ``NoiseModel.from_backend``, then the readout assignment matrices."""
    from qiskit import transpile
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel

    backend = backend or device_backend(name, spec.n_qubits)
    t0 = time.perf_counter()
    qc, zpar = qiskit_circuit(spec, theta)
    tqc = transpile(qc, backend, optimization_level=2, seed_transpiler=seed)  # Qiskit's default: noise-aware layout
    physical = list(tqc.layout.final_index_layout())[:spec.n_qubits]  # where logical qubit i is measured
    active = sorted({tqc.find_bit(q).index for inst in tqc.data for q in inst.qubits})
    if len(active) > MAX_DEVICE_QUBITS:
        raise QdllmError(f"On device:{name} the transpiled circuit touches {len(active)} qubits; its density matrix "
                         f"would need {16 * 4 ** len(active) / 2**30:.0f} GiB; use a backend whose coupling map "
                         "holds the circuit's chain (e.g. device:sherbrooke).")
    ops = {k: int(v) for k, v in tqc.count_ops().items()}
    tqc.save_probabilities(qubits=physical)
    noise_model = NoiseModel.from_backend(backend)
    sim = AerSimulator(method="density_matrix", noise_model=noise_model, seed_simulator=seed)
    mats = readout_matrices(backend, physical)
    setup = time.perf_counter() - t0
    out = np.empty((len(z), 2**spec.n_qubits))
    batch = 8
    for start in range(0, len(z), batch):
        circuits = [tqc.assign_parameters({zpar: [float(a) for a in angles]}) for angles in z[start:start + batch]]
        result = sim.run(circuits, shots=1).result()
        for k in range(len(circuits)):
            out[start + k] = np.asarray(result.data(k)["probabilities"], dtype=np.float64)
            if on_example:
                on_example()
    out = apply_readout(out, mats)
    info = {"backend": backend.name, "backend_qubits": int(backend.num_qubits), "layout": physical,
            "active_qubits": len(active), "transpiled_ops": ops, "transpiled_depth": int(tqc.depth()),
            "transpile": "qiskit.transpile(optimization_level=2, seed_transpiler=seed)",
            "noise_model": "qiskit_aer.noise.NoiseModel.from_backend (gate errors, thermal relaxation, readout)",
            "readout_error_mean": float(np.mean([(m[0, 1] + m[1, 0]) / 2 for m in mats])),
            "setup_seconds": setup}
    return out, info


# ---------------------------------------------------------------- evaluation


def _versions(models: tuple[NoiseSpec, ...]) -> dict[str, str]:
    from importlib import metadata

    names = ["numpy"]
    if any(_uses_trajectories(m) for m in models):
        names.append("mindquantum")
    if any(m.device for m in models):
        names += ["qiskit", "qiskit-aer", "qiskit-ibm-runtime"]
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def noise_key(student: Student, settings: Settings) -> tuple[str, dict]:
    inputs = {"stage": "noise", "schema": SCHEMA, "run_key": student.manifest.get("key") or student.key,
              "settings": settings.key_inputs(), "code": source_digest(), "versions": _versions(settings.noise)}
    return keys.digest(inputs), inputs


def _scores(student: Student, e: np.ndarray, y: np.ndarray, exact_pred: np.ndarray | None) -> dict:
    pred = student.logits(e).argmax(axis=1)
    m = classification_metrics(y, pred, len(student.manifest["class_names"]))
    out = {"accuracy": m["accuracy"], "precision": m["precision"], "recall": m["recall"], "f1": m["f1"]}
    if exact_pred is not None:
        out["agreement"] = float(np.mean(pred == exact_pred))
    return out


def shot_rows(student: Student, sampler: ShotSampler, y: np.ndarray, exact_pred: np.ndarray, model: str,
              settings: Settings) -> list[dict]:
    rows = []
    for shots in settings.shots:
        reps = [_scores(student, sampler.expectations(shots, _rng(seed, shots, model)), y, exact_pred)
                for seed in settings.seeds]
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


def _noisy_probabilities(student: Student, model: NoiseSpec, z, theta, settings: Settings, bar, backend=None):
    task = bar.add_task(f"noise {model.text}", total=len(z)) if bar else None
    tick = (lambda: bar.advance(task)) if bar else None
    if model.device:
        probs, info = device_probabilities(student.spec, model.device, z, theta, settings.seeds[0], backend, tick)
        info["method"] = "density matrix (Qiskit Aer, AerSimulator(method='density_matrix'))"
        return probs, standard_signs(student.spec.n_qubits), info
    probs, info = trajectory_probabilities(student.spec, model, z, theta, settings.trajectories, settings.seeds[0],
                                           tick)
    info["method"] = "trajectories (MindQuantum Simulator('mqvector'), one Kraus branch per channel per run)"
    info["trajectories"] = settings.trajectories
    return probs, standard_signs(student.spec.n_qubits), info


def evaluate_noise(run, split: str = "test", shots=DEFAULT_SHOTS, noise=("none",), seeds=DEFAULT_SEEDS,
                   limit: int | None = None, trajectories: int = DEFAULT_TRAJECTORIES) -> Path:
    """Evaluate a published quantum run under finite shots and noise; returns the path of its noise.json.

    Every setting is checked before any work; a finished evaluation with the same key is reused."""
    from stages.student.run import make_output_dir

    settings = make_settings(split, shots, noise, seeds, limit, trajectories)
    student = load_student(run)
    backends = {m.device: device_backend(m.device, student.spec.n_qubits) for m in settings.noise if m.device}
    full, inputs = noise_key(student, settings)
    final = noise_root() / keys.short(full)
    if is_complete(final):
        log.info("noise evaluation %s of run %s is up to date", final.name, student.key)
        return final / NOISE_FILE
    make_output_dir(final.parent, "QDLLM_CACHE_DIR")
    with key_lock(final):
        if is_complete(final):
            return final / NOISE_FILE
        result = _evaluate(student, settings, backends)
        with publish_dir(final) as pub:
            write_json(pub.path / NOISE_FILE, {**result, "key": full, "inputs": inputs})
            pub.manifest = {"kind": "student-noise", "key": full, "inputs": inputs, "run": student.key,
                            "files": [NOISE_FILE], "created": result["created"]}
    log.info("noise evaluation of run %s → %s", student.key, final)
    return final / NOISE_FILE


def _evaluate(student: Student, settings: Settings, backends: dict) -> dict:
    from pipeline.console import progress

    t_start = time.perf_counter()
    x, y = load_split(student, settings.split, settings.limit)
    theta = student.parts["theta"]
    z = student.encoding_angles(x)
    t_load = time.perf_counter()
    probs, signs = exact_probabilities(student.spec, z, theta)
    exact_sampler = ShotSampler(probs, signs)
    e_exact = exact_sampler.exact()
    exact = _scores(student, e_exact, y, None)
    exact_pred = student.logits(e_exact).argmax(axis=1)
    t_exact = time.perf_counter()
    models: dict[str, dict] = {"none": {"method": "exact state vector (fused NumPy simulator, complex128)",
                                        "infinite_shots": {**_subset(exact), "agreement": 1.0},
                                        "simulation_seconds": t_exact - t_load,
                                        "examples_per_second": len(y) / max(t_exact - t_load, 1e-9)}}
    rows = shot_rows(student, exact_sampler, y, exact_pred, "none", settings)
    sampling_seconds = time.perf_counter() - t_exact
    models["none"]["sampling_seconds"] = sampling_seconds
    with progress() as bar:
        for model in settings.noise:
            if model.is_none:
                continue
            t0 = time.perf_counter()
            p, s, info = _noisy_probabilities(student, model, z, theta, settings, bar, backends.get(model.device))
            t1 = time.perf_counter()
            sampler = ShotSampler(p, s)
            rows += shot_rows(student, sampler, y, exact_pred, model.text, settings)
            t2 = time.perf_counter()
            sim_seconds = t1 - t0 - info.get("setup_seconds", 0.0)
            models[model.text] = {**info, "infinite_shots": _subset(_scores(student, sampler.exact(), y, exact_pred)),
                                  "simulation_seconds": sim_seconds, "sampling_seconds": t2 - t1,
                                  "examples_per_second": len(y) / max(sim_seconds, 1e-9)}
    for name, info in models.items():
        info["shots_needed"] = shots_needed([r for r in rows if r["noise"] == name], exact["accuracy"])
    run_seed = next((s for s in student.metrics.get("seeds", []) if s.get("seed") == student.seed), {})
    total = time.perf_counter() - t_start
    return {
        "kind": "student-noise", "schema": SCHEMA, "run": student.key, "run_key": student.manifest.get("key"),
        "task": student.manifest.get("task"), "teacher_key": student.manifest.get("teacher_key"),
        "class_names": student.manifest.get("class_names"), "seed": student.seed,
        "circuit": {"variant": student.spec.variant, "n_qubits": student.spec.n_qubits,
                    "n_layers": student.spec.n_layers, "gates": len(student.spec.gates)},
        "settings": {**settings.key_inputs(), "trajectories": settings.trajectories}, "examples": len(y),
        "exact": _subset(exact),
        "run_metrics": {"split": "test", **_subset(run_seed.get("test") or {})},
        "models": models, "shots": rows,
        "timings": {"load_seconds": t_load - t_start, "exact_seconds": t_exact - t_load,
                    "sampling_seconds": sum(m["sampling_seconds"] for m in models.values()),
                    "noise_seconds": sum(m["simulation_seconds"] for k, m in models.items() if k != "none"),
                    "total_seconds": total},
        "throughput": {"exact_examples_per_second": models["none"]["examples_per_second"],
                       "sampled_example_shot_counts_per_second":
                           len(y) * len(settings.shots) * len(settings.seeds) / max(sampling_seconds, 1e-9),
                       "noisy_examples_per_second": {k: m["examples_per_second"] for k, m in models.items()
                                                     if k != "none"}},
        "versions": _versions(settings.noise),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _subset(m: dict) -> dict:
    return {k: float(m[k]) for k in ("accuracy", "precision", "recall", "f1", "agreement")
            if isinstance(m.get(k), (int, float))}

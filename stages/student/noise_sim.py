"""Simulators of a trained quantum student as a device would run it: outcome distributions and shots.

Every distribution is over the computational basis states, qubit 0 the least significant bit of a state's index
(MindQuantum's and Qiskit's order), so ``probs @ standard_signs(n)`` is ⟨Z_i⟩:

- ``exact_probabilities``: the noiseless circuit, from the fused state-vector simulator (complex128);
- ``trajectory_probabilities``: gate channels (``DepolarizingChannel``, ``AmplitudeDampingChannel``) in the circuit
  built from the ``CircuitSpec`` gate list, by trajectories on MindQuantum's ``Simulator('mqvector')``: one Kraus
  branch sampled per channel per run, the distribution the mean of the runs' |ψ|²;
- ``apply_readout``: readout errors act on outcomes, not on the state, so they are applied exactly to a
  distribution: each qubit's 2×2 assignment matrix on its bit (``readout:P`` is ``bit_flip(P)`` on every qubit);
- ``device_probabilities``: a Qiskit fake backend's calibration, the circuit transpiled to it and simulated as a
  density matrix by Qiskit Aer under ``NoiseModel.from_backend``, then the backend's readout assignment matrices;
- ``ShotSampler``: S bitstrings per example from a distribution, ⟨Z_i⟩ estimated from their counts.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from pipeline.errors import QdllmError
from pipeline.noise import NoiseSpec, num

CHUNK = 256  # examples per fused-simulator call
MAX_DEVICE_QUBITS = 13  # a density matrix of K active qubits holds 4^K complex amplitudes (16·4^13 B = 1 GiB)
DEVICE_PACKAGES = "pip install 'qiskit==2.6.1' 'qiskit-aer==0.18.2' 'qiskit-ibm-runtime==0.51.0'"


def standard_signs(n: int) -> np.ndarray:
    """Z_i eigenvalues of the computational basis, qubit 0 the least significant bit (MindQuantum and Qiskit)."""
    idx = np.arange(2**n)
    return (1 - 2 * ((idx[:, None] >> np.arange(n)[None, :]) & 1)).astype(np.float64)


def exact_probabilities(spec, z: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Outcome probabilities (B, 2^n) of the noiseless circuit: the fused simulator's final states (complex128)."""
    from stages.student.fused import FusedCircuit

    sim = FusedCircuit(spec, dtype=np.complex128)
    return np.concatenate([sim.probabilities(z[start:start + CHUNK], theta) for start in range(0, len(z), CHUNK)]
                          or [np.zeros((0, sim.dim))])


# ---------------------------------------------------------------- shots


class ShotSampler:
    """S bitstrings per example from its outcome distribution; ⟨Z_i⟩ estimated from the counts.

    Small S: inverse-CDF sampling (one ``searchsorted`` over every example's CDF laid end to end, offset by its
    row number); large S: multinomial counts (NumPy's Generator, cost independent of S). Both are exact samplers of
    the same distribution; the switch only follows speed."""

    def __init__(self, probs: np.ndarray):
        p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
        self.p = p / p.sum(axis=1, keepdims=True)
        self.rows, self.dim = self.p.shape
        self.signs = standard_signs(self.dim.bit_length() - 1)
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
        """(B, n) ⟨Z_i⟩ of the distribution itself (infinitely many shots)."""
        return self.p @ self.signs


def bit_flip(p: float) -> np.ndarray:
    """The assignment matrix R[prepared, measured] of a readout that flips the bit with probability ``p``."""
    return np.array([[1.0 - p, p], [p, 1.0 - p]])


def apply_readout(probs: np.ndarray, mats: list[np.ndarray]) -> np.ndarray:
    """Distribution of measured bitstrings given the true ones: each qubit's assignment matrix on its bit."""
    B, n = len(probs), len(mats)
    t = probs.reshape((B,) + (2,) * n)  # axis 1 = qubit n-1 (most significant), axis n = qubit 0
    for q, m in enumerate(mats):
        axis = n - q
        t = np.moveaxis(np.tensordot(t, m, axes=([axis], [0])), -1, axis)
    return t.reshape(B, -1)


# ---------------------------------------------------------------- gate channels (MindQuantum trajectories)


def noisy_mindquantum(spec, model: NoiseSpec):
    """The student's gate list as a MindQuantum circuit with the model's gate channels after each gate (readout
    errors are not part of it: ``apply_readout``).

    Parameters are named as in ``circuit.to_mindquantum`` (``z{i}`` encoding, ``theta{k}`` ansatz)."""
    from mindquantum.core.circuit import Circuit
    from mindquantum.core.gates import RX, RY, RZ, AmplitudeDampingChannel, DepolarizingChannel, Rzz, X

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
    return circ


def _example_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0]) % (2**23)


def trajectory_probabilities(spec, model: NoiseSpec, z: np.ndarray, theta: np.ndarray, trajectories: int,
                             seed: int, on_example=None, circuit=None) -> tuple[np.ndarray, dict]:
    """Outcome distribution of each example under the model's gate channels: the mean |ψ|² over ``trajectories``
    runs of MindQuantum's state-vector simulator, each run sampling one Kraus branch per channel. Also the standard
    error of the trajectory mean of ⟨Z_i⟩ (its mean and max over examples and qubits). Readout errors are left to
    ``apply_readout``. ``theta``: the trained angles, or one row of angles per example (training's shifted circuits);
    ``circuit``: the model's ``noisy_mindquantum`` circuit, when the caller keeps one."""
    from mindquantum.core.parameterresolver import ParameterResolver
    from mindquantum.simulator import Simulator

    from stages.student.circuit import enc_name, param_name

    circ = noisy_mindquantum(spec, model) if circuit is None else circuit
    n, dim = spec.n_qubits, 2**spec.n_qubits
    signs = standard_signs(n)
    theta = np.asarray(theta, dtype=np.float64)
    base = {param_name(k): float(v) for k, v in enumerate(theta)} if theta.ndim == 1 else None
    out = np.empty((len(z), dim))
    stderr = np.empty((len(z), n))
    for b, angles in enumerate(z):
        sim = Simulator("mqvector", n, seed=_example_seed(seed, b))
        row = base if base is not None else {param_name(k): float(v) for k, v in enumerate(theta[b])}
        pr = ParameterResolver({**row, **{enc_name(i): float(a) for i, a in enumerate(angles)}})
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
            "trajectories": trajectories}
    return out, info


def channels_text(model: NoiseSpec) -> str:
    """What ``trajectory_probabilities`` and ``apply_readout`` simulate for a model, in words (noise.json)."""
    parts = []
    if model.depolarizing is not None:
        parts.append(f"DepolarizingChannel({num(model.depolarizing[0])}) after every one-qubit gate and "
                     f"DepolarizingChannel({num(model.depolarizing[1])}, 2) after every two-qubit gate")
    if model.damping:
        parts.append(f"AmplitudeDampingChannel({num(model.damping)}) on every qubit a gate acts on, after it")
    if model.readout:
        parts.append(f"a bit flip of probability {num(model.readout)} on every qubit's outcome, applied exactly to "
                     "the outcome distribution")
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



"""Training a quantum student as a device would: readouts from shots, gradients by the parameter-shift rule or SPSA,
gate and readout noise, and what the training would cost on a device.

The exact trainer (``QuantumStudent.forward`` / ``backward``) reads exact ⟨Z⟩ from the state vector and gets every
gradient by the adjoint method in one backward pass. A device has neither. ``DeviceTraining`` stands in for the model
in ``train.train_epoch`` (same ``forward`` / ``backward``) and does what a device-based training would do:

- **forward**: every example's circuit is run once; with ``shots`` = S its readouts (⟨Z_i⟩, and ⟨Z_i Z_i+1⟩ for the
  z+zz readout) are estimated from S bitstrings drawn from the circuit's outcome distribution (``noise_sim.ShotSampler``:
  one set of shots for every readout, correlations included); the loss and the head see those estimates.
- **parameter-shift**: every gate here is exp(-iθ/2·P) with P a Pauli string, so ∂⟨O⟩/∂θ = (⟨O⟩(θ+π/2) −
  ⟨O⟩(θ−π/2))/2 exactly. Every gate angle is shifted: each circuit parameter, and each example's encoding angles
  (per example; a re-uploaded encoding gate is its own angle). Each shifted circuit is run at S shots; ∂L/∂angle is
  ∂L/∂readout (the head's exact classical gradient at the estimated readouts) times the estimated ∂readout/∂angle.
  The encoder's and head's gradients follow by the chain rule (``QuantumStudent.chain``). All 2·(E + P) shifted
  circuits of a batch are one batch for the fused simulator (``FusedCircuit.shifted_probabilities``), in chunks.
- **spsa**: per step one simultaneous ±1 perturbation Δθ of the circuit angles and one Δz_b of each example's
  encoding angles; two circuits per example (θ ± c_k Δθ, z_b ± c_k Δz_b) give the directional derivative
  d_b = ∂L/∂readout · (r⁺ − r⁻)/(2c_k), and ĝ_z_b = d_b Δz_b, ĝ_θ = Σ_b d_b Δθ (Spall's estimator on the circuit's
  inputs; c_k = c/(k+1)^0.101). The circuit angles take plain SPSA steps θ ← θ − a_k ĝ_θ (a_k = a/(k+1+A)^0.602)
  when ``spsa_a`` > 0, otherwise Adam applies ĝ like any gradient; the encoder and head always learn by Adam.
- **noise** (``train_noise``, the ``student noise`` grammar but ``device:``): readout flips exactly, on the readouts
  or the shots (``CircuitSampler.estimate``); gate channels by MindQuantum trajectories
  (``noise_sim.trajectory_probabilities``), ``train_trajectories`` per circuit.

Sampling, perturbations and trajectories draw from one generator seeded by the run's seed, so a run is reproducible
bit for bit. ``device_cost`` is the cost model recorded in metrics.json.
"""

from __future__ import annotations

import numpy as np

from pipeline.noise import NoiseSpec, parse_noise
from stages.student.fused import FusedCircuit
from stages.student.noise_sim import ShotSampler, noisy_mindquantum, trajectory_probabilities

SHIFT = np.pi / 2
CHUNK = 256  # circuits per fused-simulator call: 256 × 2^11 amplitudes (complex64) is 4 MiB per buffer
SPSA_ALPHA, SPSA_GAMMA = 0.602, 0.101  # Spall's gain exponents
DEVICE_STREAM = 0x0DE71CE  # the run's seed and this tag seed the generator of shots, perturbations and trajectories
COST_SHOTS = 1024  # shots per circuit the cost model assumes for a training with exact expectations


def training_noise(cfg) -> NoiseSpec | None:
    """The noise model a run trains under (None: noiseless); its config has checked it (``_check_train_noise``)."""
    text = str(getattr(cfg, "train_noise", "") or "").strip()
    spec = parse_noise(text, flag="--train-noise") if text else None
    return None if spec is None or spec.is_none else spec


def device_training(model, cfg, seed: int, steps: int):
    """The device-style estimator of a run, or None when it trains exactly (adjoint, exact shots, no noise)."""
    if getattr(cfg, "gradient", "adjoint") == "adjoint":
        return None
    return DeviceTraining(model, cfg, seed, steps)


class CircuitSampler:
    """Readouts of one register's circuits as a device would return them: the outcome distribution (exact, or under
    the noise model) and the readouts estimated from ``shots`` bitstrings of it (exact expectations when None)."""

    def __init__(self, sim: FusedCircuit, shots: int | None, noise: NoiseSpec | None, trajectories: int,
                 rng: np.random.Generator):
        self.sim, self.shots, self.noise, self.trajectories, self.rng = sim, shots, noise, trajectories, rng
        self.gate_noise = bool(noise and noise.gate_noise)
        self._circuit = noisy_mindquantum(sim.spec, noise) if self.gate_noise else None  # built once (seconds)
        self.circuits = 0
        self.shots_drawn = 0

    def probabilities(self, z: np.ndarray, theta: np.ndarray, param=None, offset=None) -> np.ndarray:
        """Outcome distributions (R, 2^n) of R circuits (``FusedCircuit.shifted_probabilities`` rows), noise applied."""
        if self.gate_noise:
            thetas = np.repeat(np.asarray(theta, dtype=np.float64)[None, :], len(z), axis=0)
            if param is not None:
                rows = np.flatnonzero(np.asarray(param) >= 0)
                thetas[rows, np.asarray(param)[rows]] += np.asarray(offset)[rows]
            seed = int(self.rng.integers(2**31))
            probs, _ = trajectory_probabilities(self.sim.spec, self.noise, z, thetas, self.trajectories, seed,
                                                circuit=self._circuit)
        else:
            probs = self.sim.shifted_probabilities(z, theta, param, offset)
        return probs

    def estimate(self, probs: np.ndarray) -> np.ndarray:
        """(R, outputs) readouts of outcome distributions (before readout errors) as the device reports them:
        exact, or from ``shots`` bitstrings each (one set for all readouts), with the readout flips of the noise
        model. A flip of probability p on every qubit, independently, scales ⟨Z_i⟩ by 1 − 2p and ⟨Z_i Z_j⟩ by
        (1 − 2p)²; with shots and the z readout, the flipped shots of each qubit are drawn per shot sign (two
        binomials per qubit: exact, and cheap); with shots and z+zz, the flips are applied to the distribution first
        (``flip_bits``) and the shots drawn from it."""
        self.circuits += len(probs)
        flip = self.noise.readout if self.noise and self.noise.readout else 0.0
        n, obs = self.sim.n, self.sim.observables
        if self.shots is None:
            out = probs @ obs
            if flip:
                out[:, :n] *= 1 - 2 * flip
                out[:, n:] *= (1 - 2 * flip) ** 2
            return out
        self.shots_drawn += len(probs) * self.shots
        out = np.empty((len(probs), self.sim.n_outputs))
        for start in range(0, len(probs), CHUNK):
            part = probs[start:start + CHUNK]
            if flip and self.sim.n_outputs > n:
                part = flip_bits(part, flip, n)
            counts = ShotSampler(part).counts(self.shots, self.rng)
            est = counts @ obs
            if flip and self.sim.n_outputs == n:  # shots of each sign whose bit flips: +1 → −1 and −1 → +1
                plus = np.rint((self.shots + est) / 2).astype(np.int64)
                est = est - 2 * self.rng.binomial(plus, flip) + 2 * self.rng.binomial(self.shots - plus, flip)
            out[start:start + CHUNK] = est / self.shots
        return out

    def readouts(self, z: np.ndarray, theta: np.ndarray, param=None, offset=None) -> np.ndarray:
        """Estimated readouts of R circuits, simulated and sampled in chunks (bounded memory)."""
        out = np.empty((len(z), self.sim.n_outputs))
        for start in range(0, len(z), CHUNK):
            sl = slice(start, start + CHUNK)
            out[sl] = self.estimate(self.probabilities(z[sl], theta, None if param is None else param[sl],
                                                       None if offset is None else offset[sl]))
        return out


class DeviceTraining:
    """``forward`` / ``backward`` of a ``QuantumStudent`` as a device would estimate them (module docstring);
    ``after_step`` puts plain-SPSA circuit angles back after Adam's step."""

    def __init__(self, model, cfg, seed: int, steps: int, dtype=np.complex64):
        self.model, self.cfg = model, cfg
        self.gradient = cfg.gradient
        if self.gradient not in ("parameter-shift", "spsa"):
            raise ValueError(f"no device estimator for gradient {self.gradient!r}")
        self.shots = cfg.shots
        self.noise = training_noise(cfg)
        self.rng = np.random.default_rng([int(seed), DEVICE_STREAM])
        sim = model.sim if np.dtype(dtype) == model.sim.complex else FusedCircuit(model.register, dtype=dtype,
                                                                                   readout=model.readout)
        self.sampler = CircuitSampler(sim, self.shots, self.noise, int(getattr(cfg, "train_trajectories", 1)),
                                      self.rng)
        self.inert = sim.inert_params() if not self.sampler.gate_noise else np.zeros(0, dtype=np.int64)
        self.step = 0  # SPSA's k
        self.stability = float(cfg.spsa_stability) * steps
        self._theta_next: np.ndarray | None = None

    # ------------------------------------------------------------ the model's interface

    def forward(self, flat, x):
        m = self.model
        p = m.unpack(flat)
        x = m.prepare(x)
        u = x @ p["enc_w"] + p["enc_b"]
        z0, z = m._angles(p, u)
        zs, thetas = m._split(z, m.register.n_encodings), m._split(p["theta"], m.register.n_params)
        probs = [self.sampler.probabilities(zr, tr) for zr, tr in zip(zs, thetas)]
        e = np.concatenate([self.sampler.estimate(pr) for pr in probs], axis=1)
        return e @ p["head_w"] + p["head_b"], (p, x, u, z0, z, e, probs)

    def backward(self, cache, g_logits: np.ndarray) -> np.ndarray:
        m = self.model
        p, x, u, z0, z, e, probs = cache
        G = g_logits @ p["head_w"].T  # ∂L/∂readout at the estimated readouts
        zs, thetas = m._split(z, m.register.n_encodings), m._split(p["theta"], m.register.n_params)
        gs = m._split(G, m.sim.n_outputs)
        c = self.cfg.spsa_c / (self.step + 1) ** SPSA_GAMMA
        parts = [self.shift_gradient(zr, tr, gr, pr) if self.gradient == "parameter-shift"
                 else self.spsa_gradient(zr, tr, gr, c) for zr, tr, gr, pr in zip(zs, thetas, gs, probs)]
        gz = np.concatenate([a for a, _ in parts], axis=1)
        gtheta = np.concatenate([b for _, b in parts])
        if self.gradient == "spsa" and self.cfg.spsa_a > 0:  # plain SPSA steps on the circuit angles
            a_k = self.cfg.spsa_a / (self.step + 1 + self.stability) ** SPSA_ALPHA
            self._theta_next = p["theta"] - a_k * gtheta
            gtheta = np.zeros_like(gtheta)  # Adam leaves them alone (its moments stay 0)
        self.step += 1
        return m.chain(p, x, u, z0, e, g_logits, gz, gtheta)

    def after_step(self, flat: np.ndarray) -> np.ndarray:
        if self._theta_next is None:
            return flat
        flat = flat.copy()
        flat[self.model.slices["theta"]] = self._theta_next
        self._theta_next = None
        return flat

    @property
    def circuits(self) -> int:
        return self.sampler.circuits

    @property
    def shots_drawn(self) -> int:
        return self.sampler.shots_drawn

    # ------------------------------------------------------------ gradient estimators (one register)

    def shift_jacobian(self, z: np.ndarray, theta: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        """Parameter-shift estimates of ∂readout/∂angle for one register: (E + P, B, outputs), the E encoding angles
        of each example first, then the P circuit parameters. ``base``: the unshifted circuits' distributions (B, 2^n),
        which the shifts of parameters in ``FusedCircuit.inert_params`` leave as they are."""
        B, E = z.shape
        P = len(theta)
        inert = set(self.inert.tolist())
        active = np.array([q for q in range(P) if q not in inert], dtype=np.int64)
        signs = (1.0, -1.0)
        # rows: for each angle (encodings, then active parameters) its +π/2 copies of the batch, then its −π/2 copies
        zz = [z + s * SHIFT * np.eye(E)[i] for i in range(E) for s in signs] + [z] * (2 * len(active))
        Z = np.concatenate(zz) if zz else np.zeros((0, E))
        param = np.concatenate([np.full(2 * E * B, -1), np.repeat(np.repeat(active, 2), B)]).astype(np.int64)
        offset = np.concatenate([np.zeros(2 * E * B), np.tile(np.repeat([SHIFT, -SHIFT], B), len(active))])
        r = self.sampler.readouts(Z, theta, param, offset).reshape(E + len(active), 2, B, -1)
        dr = np.zeros((E + P, B, r.shape[-1]))
        dr[:E] = (r[:E, 0] - r[:E, 1]) / 2
        dr[E + active] = (r[E:, 0] - r[E:, 1]) / 2
        if inert:  # their circuits' distributions are the unshifted ones: only the shots differ (a device runs them)
            idx = np.array(sorted(inert), dtype=np.int64)
            if self.shots is None:  # exact readouts of equal distributions: a difference of exactly 0
                self.sampler.circuits += 2 * len(idx) * B
            else:
                base = self.sampler.probabilities(z, theta) if base is None else base
                group = max(1, CHUNK // (2 * B))
                for start in range(0, len(idx), group):
                    sel = idx[start:start + group]
                    est = self.sampler.estimate(np.tile(base, (2 * len(sel), 1))).reshape(len(sel), 2, B, -1)
                    dr[E + sel] = (est[:, 0] - est[:, 1]) / 2
        return dr

    def shift_gradient(self, z: np.ndarray, theta: np.ndarray, G: np.ndarray, base: np.ndarray | None = None):
        """Parameter-shift estimates of ∂L/∂z (B, E) and ∂L/∂θ (P,) for one register, given ∂L/∂readout ``G``."""
        E = z.shape[1]
        contrib = np.einsum("abo,bo->ab", self.shift_jacobian(z, theta, base), G)  # (E + P, B)
        return contrib[:E].T.copy(), contrib[E:].sum(axis=1)

    def spsa_gradient(self, z: np.ndarray, theta: np.ndarray, G: np.ndarray, c: float):
        """SPSA estimates of ∂L/∂z (B, E) and ∂L/∂θ (P,) for one register from two perturbed circuits per example."""
        B, E = z.shape
        dth = self.rng.integers(0, 2, len(theta)) * 2.0 - 1.0
        dz = self.rng.integers(0, 2, (B, E)) * 2.0 - 1.0
        rp = self.sampler.readouts(z + c * dz, theta + c * dth)
        rm = self.sampler.readouts(z - c * dz, theta - c * dth)
        d = ((rp - rm) * G).sum(axis=1) / (2 * c)  # (B,) directional derivatives of each example's loss
        return d[:, None] * dz, d.sum() * dth


def flip_bits(probs: np.ndarray, p: float, n: int) -> np.ndarray:
    """The distribution of measured bitstrings when every bit of the true one flips with probability ``p``: the same
    as ``noise_sim.apply_readout`` with ``bit_flip(p)`` on every qubit, one butterfly per qubit in place of a tensor
    contraction (about 40x faster on 256 × 2^11 distributions)."""
    out = np.array(probs, dtype=np.float64)
    for q in range(n):
        v = out.reshape(len(out), -1, 2, 2**q)
        moved = p * (v[:, :, 1] - v[:, :, 0])  # probability that moves from bit 0 to bit 1, net
        v[:, :, 0] += moved
        v[:, :, 1] -= moved
    return out


# ---------------------------------------------------------------- the cost model


def circuits_per_example(model, gradient: str) -> int:
    """Circuit executions per example and optimizer step: the forward circuit plus the gradient's (each register of
    ``parallel:K`` counted as its own circuit)."""
    E, P, K = model.register.n_encodings, model.register.n_params, model.registers
    per = {"parameter-shift": 1 + 2 * (E + P), "spsa": 3}.get(gradient, 1 + 2 * (E + P))
    return K * per


def device_cost(cfg, model, train_rows: int, val_rows: int) -> dict:
    """What training this run on a device would take: circuit executions and shots per epoch and in all (every seed),
    and device time at ``cfg.device_circuit_ms`` per circuit and ``cfg.device_shot_us`` per shot. An adjoint run
    (exact, a simulator only) is costed as the same training by parameter-shift at ``COST_SHOTS`` shots."""
    gradient = getattr(cfg, "gradient", "adjoint")
    as_gradient = "parameter-shift" if gradient == "adjoint" else gradient
    shots = cfg.shots if cfg.shots is not None else COST_SHOTS
    per_example = circuits_per_example(model, as_gradient)
    circuits_epoch = per_example * train_rows
    runs = cfg.epochs * len(cfg.seeds)
    circuits_total = circuits_epoch * runs
    shots_total = circuits_total * shots
    circuit_s, shot_s = cfg.device_circuit_ms * 1e-3, cfg.device_shot_us * 1e-6
    seconds = circuits_total * circuit_s + shots_total * shot_s
    return {
        "gradient": gradient, "costed_as": as_gradient, "shots_per_circuit": shots,
        "circuits_per_example_step": per_example, "train_rows": train_rows,
        "circuits_per_epoch": circuits_epoch, "shots_per_epoch": circuits_epoch * shots,
        "epochs": cfg.epochs, "seeds": len(cfg.seeds),
        "circuits_total": circuits_total, "shots_total": shots_total,
        "seconds_estimate": seconds, "seconds_per_epoch": seconds / max(runs, 1),
        "validation_circuits_per_epoch": model.registers * val_rows,
        "assumptions": {
            "seconds_per_shot": shot_s, "seconds_per_circuit": circuit_s,
            "shots_for_exact_training": COST_SHOTS if cfg.shots is None else None,
            "what": ("training circuits only (forward and gradient circuits of every example, epoch and seed); "
                     "validating each epoch on the device would add validation_circuits_per_epoch circuits at the "
                     "same shots. Per shot: ibm_fez (IBM Heron r2) default repetition delay 250 µs "
                     "(qiskit-ibm-runtime FakeFez calibration snapshot) plus measurement 1.56 µs and the circuit; per "
                     "circuit: an assumed round number for loading and binding each circuit (--device-circuit-ms)."),
        },
    }

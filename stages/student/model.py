"""Student models over one flat parameter vector, and the MindSpore Cell that holds and updates it.

Forward and backward run in NumPy (the fused simulator for the circuit); MindSpore owns the
parameters (one ``Parameter``) and the Adam update. One flat vector means one Adam kernel per
step instead of one per tensor, which matters at batch 8.

- ``QuantumStudent``: Linear(D→n) → RX(z_i) → ansatz → ⟨Z_i⟩ → Dense(n→C).
- ``LogReg``: Dense(D→C) on the embedding.
- ``MLP``: Dense(D→h) → ReLU → Dense(h→C), h chosen so the parameter count matches a target.
"""

from __future__ import annotations

import os

import numpy as np

from pipeline.config import parallel_registers
from stages.student.circuit import build_circuit
from stages.student.fused import FusedCircuit


def minmax10(x: np.ndarray) -> np.ndarray:
    """The authors' input scaling: each example's features min-max scaled to [0, 10]."""
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    return 10.0 * (x - lo) / np.where(hi > lo, hi - lo, 1.0)


DECAYED = ("enc_w", "head_w", "w", "w1", "w2")  # weight matrices (weight decay); never biases, scales or angles


class FlatModel:
    """A model whose parameters are named slices of one float vector."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], input_scaling: str = "none"):
        self.shapes = shapes
        self.input_scaling = input_scaling
        self.slices, start = {}, 0
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            self.slices[name] = slice(start, start + size)
            start += size
        self.size = start

    def unpack(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        flat = np.asarray(flat, dtype=np.float64)
        return {k: flat[s].reshape(self.shapes[k]) for k, s in self.slices.items()}

    def pack(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        out = np.empty(self.size)
        for k, s in self.slices.items():
            out[s] = np.asarray(parts[k]).reshape(-1)
        return out

    def prepare(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.input_scaling == "l2":
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return minmax10(x) if self.input_scaling == "minmax10" else x

    @staticmethod
    def dense_init(rng: np.random.Generator, fan_in: int, shape) -> np.ndarray:
        """MindSpore's Dense default: uniform(±1/√fan_in)."""
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape)

    def logits(self, flat: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self.forward(flat, x, grad=False)

    def parameter_groups(self) -> dict[str, int]:
        """Trainable parameters by kind: classical (encoder, head, hidden layers) and circuit angles."""
        return {"classical": self.size, "circuit": 0}

    def decay_mask(self) -> np.ndarray:
        """1 on the weight matrices weight decay applies to, 0 on biases, scales and circuit angles."""
        mask = np.zeros(self.size)
        for name in DECAYED:
            if name in self.slices:
                mask[self.slices[name]] = 1.0
        return mask


class QuantumStudent(FlatModel):
    """Linear(D→K·n) → (× per-angle scale) → K registers of the circuit → readouts (⟨Z_i⟩, optionally ⟨Z_i Z_i+1⟩)
    concatenated → Dense(→C). K = 1 but for ``parallel:K``; ``reupload`` encodes before every layer, each layer
    with its own scales of the same encoder's angles."""

    def __init__(self, dim: int, num_classes: int, variant: str = "paper", n_qubits: int = 11, n_layers: int = 2,
                 input_scaling: str = "none", readout: str = "z", encoding_scale: bool = False):
        self.registers = parallel_registers(variant)
        self.spec = build_circuit(variant, n_qubits, n_layers)  # the whole circuit (K registers side by side)
        self.register = build_circuit(variant if self.registers == 1 else "paper", n_qubits, n_layers)
        # MindSpore's Adam is float32 anyway; complex64 halves the memory traffic
        self.readout = readout
        self.sim = FusedCircuit(self.register, dtype=np.complex64, readout=readout)
        n, k = n_qubits, self.registers
        self.n_enc = self.register.n_encodings // n  # encodings of each angle (L for reupload, else 1)
        shapes = {"enc_w": (dim, k * n), "enc_b": (k * n,)}
        if encoding_scale:
            shapes["enc_scale"] = (k * self.register.n_encodings,)
        shapes |= {"theta": (k * self.register.n_params,), "head_w": (k * self.sim.n_outputs, num_classes),
                   "head_b": (num_classes,)}
        super().__init__(shapes, input_scaling)
        self.dim, self.num_classes = dim, num_classes

    def init(self, rng: np.random.Generator) -> np.ndarray:
        parts = {
            "enc_w": self.dense_init(rng, self.dim, self.shapes["enc_w"]),
            "enc_b": self.dense_init(rng, self.dim, self.shapes["enc_b"]),
            "theta": rng.normal(0.0, 0.1, self.shapes["theta"]),  # near identity: trains far better than uniform
            "head_w": self.dense_init(rng, self.shapes["head_w"][0], self.shapes["head_w"]),
            "head_b": self.dense_init(rng, self.shapes["head_w"][0], self.shapes["head_b"]),
        }
        if "enc_scale" in self.shapes:
            parts["enc_scale"] = np.ones(self.shapes["enc_scale"])
        return self.pack(parts)

    def _angles(self, p: dict, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoding angles of every register (B, K·E), unscaled and scaled: u = x W + b repeated per encoding layer,
        times the scales."""
        B, n = len(u), self.register.n_qubits
        z0 = np.repeat(u.reshape(B, self.registers, 1, n), self.n_enc, axis=2).reshape(B, -1)
        return z0, (z0 * p["enc_scale"] if "enc_scale" in p else z0)

    def _split(self, a: np.ndarray, size: int) -> list[np.ndarray]:
        return [a[..., r * size:(r + 1) * size] for r in range(self.registers)]

    def forward(self, flat, x, grad: bool = True):
        p = self.unpack(flat)
        x = self.prepare(x)
        u = x @ p["enc_w"] + p["enc_b"]
        z0, z = self._angles(p, u)
        zs, thetas = self._split(z, self.register.n_encodings), self._split(p["theta"], self.register.n_params)
        if not grad:
            e = np.concatenate([self.sim.forward(zr, tr, grad=False) for zr, tr in zip(zs, thetas)], axis=1)
            return e @ p["head_w"] + p["head_b"]
        outs = [self.sim.forward(zr, tr) for zr, tr in zip(zs, thetas)]
        e = np.concatenate([o[0] for o in outs], axis=1)
        # a register's tape points into the simulator's workspace: keep copies when several registers share it
        tapes = [o[1] for o in outs] if self.registers == 1 else None
        return e @ p["head_w"] + p["head_b"], (p, x, u, z0, z, e, tapes)

    def backward(self, cache, g_logits: np.ndarray) -> np.ndarray:
        p, x, u, z0, z, e, tapes = cache
        g_e = g_logits @ p["head_w"].T
        zs, thetas = self._split(z, self.register.n_encodings), self._split(p["theta"], self.register.n_params)
        gz, gtheta = [], []
        for r, (zr, tr, ge) in enumerate(zip(zs, thetas, self._split(g_e, self.sim.n_outputs))):
            tape = tapes[r] if tapes is not None else self.sim.forward(zr, tr)[1]  # recompute: shared workspace
            a, b = self.sim.backward(tape, ge)
            gz.append(a)
            gtheta.append(b)
        return self.chain(p, x, u, z0, e, g_logits, np.concatenate(gz, axis=1), np.concatenate(gtheta))

    def chain(self, p: dict, x: np.ndarray, u: np.ndarray, z0: np.ndarray, e: np.ndarray, g_logits: np.ndarray,
              gz: np.ndarray, gtheta: np.ndarray) -> np.ndarray:
        """The flat gradient from the circuit's gradients, by the chain rule: ``gz`` (B, K·E) with respect to the
        encoding angles and ``gtheta`` with respect to the circuit angles (exact, or estimated as a device would:
        ``device.py``), the head's from the readouts ``e`` the loss saw."""
        grads = {"theta": gtheta, "head_w": e.T @ g_logits, "head_b": g_logits.sum(0)}
        if "enc_scale" in p:
            grads["enc_scale"] = (gz * z0).sum(0)
            gz = gz * p["enc_scale"]
        B, n = len(u), self.register.n_qubits
        gu = gz.reshape(B, self.registers, self.n_enc, n).sum(axis=2).reshape(B, -1)
        grads |= {"enc_w": x.T @ gu, "enc_b": gu.sum(0)}
        return self.pack(grads)

    def encoding_angles(self, flat, x) -> np.ndarray:
        """The angles an example binds in the circuit's encoding gates, (B, K·E): z = (scale(e) W + b) · enc_scale."""
        p = self.unpack(flat)
        return self._angles(p, self.prepare(x) @ p["enc_w"] + p["enc_b"])[1]

    def expectations(self, flat, x) -> np.ndarray:
        """The circuit's readouts (B, K·outputs) before the head."""
        p = self.unpack(flat)
        _, z = self._angles(p, self.prepare(x) @ p["enc_w"] + p["enc_b"])
        zs, thetas = self._split(z, self.register.n_encodings), self._split(p["theta"], self.register.n_params)
        return np.concatenate([self.sim.forward(zr, tr, grad=False) for zr, tr in zip(zs, thetas)], axis=1)

    def parameter_groups(self) -> dict[str, int]:
        circuit = self.shapes["theta"][0]
        return {"classical": self.size - circuit, "circuit": circuit}


class Twin(FlatModel):
    """The dequantised twin of a quantum student: its encoder and head around the classical map the circuit
    reduces to without entanglement. A product state's ⟨Z_i⟩ after RX(z_i) and single-qubit rotations is
    a_i·cos z_i + b_i·sin z_i = r_i·cos(z_i − φ_i); the encoder's bias absorbs φ_i and the head r_i, so the map is
    cos(z_i): Linear(D→n) → (× scale) → cos → Dense(n→C)."""

    def __init__(self, dim: int, num_classes: int, n_qubits: int = 11, input_scaling: str = "none",
                 encoding_scale: bool = False):
        shapes = {"enc_w": (dim, n_qubits), "enc_b": (n_qubits,)}
        if encoding_scale:
            shapes["enc_scale"] = (n_qubits,)
        shapes |= {"head_w": (n_qubits, num_classes), "head_b": (num_classes,)}
        super().__init__(shapes, input_scaling)
        self.dim, self.num_classes, self.n = dim, num_classes, n_qubits

    def init(self, rng):
        parts = {"enc_w": self.dense_init(rng, self.dim, (self.dim, self.n)),
                 "enc_b": self.dense_init(rng, self.dim, (self.n,)),
                 "head_w": self.dense_init(rng, self.n, (self.n, self.num_classes)),
                 "head_b": self.dense_init(rng, self.n, (self.num_classes,))}
        if "enc_scale" in self.shapes:
            parts["enc_scale"] = np.ones(self.n)
        return self.pack(parts)

    def forward(self, flat, x, grad: bool = True):
        p = self.unpack(flat)
        x = self.prepare(x)
        u = x @ p["enc_w"] + p["enc_b"]
        z = u * p["enc_scale"] if "enc_scale" in p else u
        c = np.cos(z)
        out = c @ p["head_w"] + p["head_b"]
        return out if not grad else (out, (p, x, u, z, c))

    def backward(self, cache, g):
        p, x, u, z, c = cache
        gz = -(g @ p["head_w"].T) * np.sin(z)
        grads = {"head_w": c.T @ g, "head_b": g.sum(0)}
        if "enc_scale" in p:
            grads["enc_scale"] = (gz * u).sum(0)
            gz = gz * p["enc_scale"]
        return self.pack(grads | {"enc_w": x.T @ gz, "enc_b": gz.sum(0)})


class LogReg(FlatModel):
    def __init__(self, dim: int, num_classes: int, input_scaling: str = "none"):
        super().__init__({"w": (dim, num_classes), "b": (num_classes,)}, input_scaling)
        self.dim, self.num_classes = dim, num_classes

    def init(self, rng):
        return self.pack({"w": self.dense_init(rng, self.dim, (self.dim, self.num_classes)),
                          "b": self.dense_init(rng, self.dim, (self.num_classes,))})

    def forward(self, flat, x, grad: bool = True):
        p = self.unpack(flat)
        x = self.prepare(x)
        out = x @ p["w"] + p["b"]
        return out if not grad else (out, x)

    def backward(self, x, g):
        return self.pack({"w": x.T @ g, "b": g.sum(0)})


class MLP(FlatModel):
    def __init__(self, dim: int, num_classes: int, hidden: int, input_scaling: str = "none"):
        super().__init__({"w1": (dim, hidden), "b1": (hidden,), "w2": (hidden, num_classes), "b2": (num_classes,)},
                         input_scaling)
        self.dim, self.num_classes, self.hidden = dim, num_classes, hidden

    @staticmethod
    def hidden_for(dim: int, num_classes: int, target_params: int) -> int:
        """Hidden width whose parameter count D·h + h + h·C + C is closest to ``target_params``."""
        return max(1, int(round((target_params - num_classes) / (dim + 1 + num_classes))))

    def init(self, rng):
        h = self.hidden
        return self.pack({"w1": self.dense_init(rng, self.dim, (self.dim, h)),
                          "b1": self.dense_init(rng, self.dim, (h,)),
                          "w2": self.dense_init(rng, h, (h, self.num_classes)),
                          "b2": self.dense_init(rng, h, (self.num_classes,))})

    def forward(self, flat, x, grad: bool = True):
        p = self.unpack(flat)
        x = self.prepare(x)
        a = x @ p["w1"] + p["b1"]
        h = np.maximum(a, 0)
        out = h @ p["w2"] + p["b2"]
        return out if not grad else (out, (p, x, a, h))

    def backward(self, cache, g):
        p, x, a, h = cache
        gh = (g @ p["w2"].T) * (a > 0)
        return self.pack({"w1": x.T @ gh, "b1": gh.sum(0), "w2": h.T @ g, "b2": g.sum(0)})


def build_model(cfg, dim: int, num_classes: int) -> FlatModel:
    """The student a ``StudentConfig`` describes; the MLP matches the quantum student's parameter count."""
    scale = getattr(cfg, "encoding_scale", False)
    if cfg.model == "quantum" and getattr(cfg, "train_noise", ""):
        from stages.student.device import training_noise

        training_noise(cfg)  # an unknown or untrainable noise model stops here, before any training
    if cfg.model == "quantum":
        return QuantumStudent(dim, num_classes, cfg.variant, cfg.n_qubits, cfg.n_layers, cfg.input_scaling,
                              getattr(cfg, "readout", "z"), scale)
    if cfg.model == "twin":
        return Twin(dim, num_classes, cfg.n_qubits, cfg.input_scaling, scale)
    if cfg.model == "logreg":
        return LogReg(dim, num_classes, cfg.input_scaling)
    target = QuantumStudent(dim, num_classes, cfg.variant, cfg.n_qubits, cfg.n_layers,
                            readout=getattr(cfg, "readout", "z"), encoding_scale=scale).size
    return MLP(dim, num_classes, MLP.hidden_for(dim, num_classes, target), cfg.input_scaling)


# Read by MindSpore when its runtime starts (the first op), so setting them here is early enough.
# GLOG_v=3: MindSpore's own log shows errors only (its deprecation notices are noise).
# MS_DEV_HOST_BLOCKING_RUN=1: run each op on the calling thread. By default PyNative hands every op to a
# "frontend_queue" thread and the caller busy-waits for it; that thread then spins about 1 ms after each
# Adam step. Alone that costs a fifth of a core; with one worker per core (``--jobs``) the waiting thread
# and the spinning one fight the other worker for CPU, and two units side by side took 1.8-1.9x the time of one
# (tests/bench/student_jobs.py). Same kernels, same results bit for bit.
MINDSPORE_ENV = {"GLOG_v": "3", "MS_DEV_HOST_BLOCKING_RUN": "1"}


class AdamParameters:
    """MindSpore holds the flat parameter vector and applies Adam to NumPy gradients."""

    def __init__(self, flat: np.ndarray, lr: float | list[float]):
        """``lr``: one rate, or one per step (a schedule; MindSpore indexes it by its step counter)."""
        for k, v in MINDSPORE_ENV.items():
            os.environ.setdefault(k, v)
        from pipeline import interrupt

        # Ctrl-C in the middle of MindSpore's import aborts the interpreter: hold it until the import is done. (Its
        # runtime then puts in its own SIGINT handler on every step, which answers Ctrl-C with SIGTERM to this
        # process: pipeline.interrupt turns that SIGTERM into the same clean stop.)
        with interrupt.deferred():
            import mindspore as ms
            from mindspore import nn

            interrupt.reclaim()
            self._tensor = ms.Tensor
            self.param = ms.Parameter(ms.Tensor(np.asarray(flat, dtype=np.float32)), name="weights")
            self.optimizer = nn.Adam([self.param], learning_rate=lr)

    def step(self, grad: np.ndarray) -> np.ndarray:
        self.optimizer((self._tensor(np.asarray(grad, dtype=np.float32)),))
        return self.value()

    def value(self) -> np.ndarray:
        return self.param.asnumpy().astype(np.float64)

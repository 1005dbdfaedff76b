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

from stages.student.circuit import build_circuit
from stages.student.fused import FusedCircuit


def minmax10(x: np.ndarray) -> np.ndarray:
    """The authors' input scaling: each example's features min-max scaled to [0, 10]."""
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    return 10.0 * (x - lo) / np.where(hi > lo, hi - lo, 1.0)


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


class QuantumStudent(FlatModel):
    def __init__(self, dim: int, num_classes: int, variant: str = "paper", n_qubits: int = 11, n_layers: int = 2,
                 input_scaling: str = "none"):
        self.spec = build_circuit(variant, n_qubits, n_layers)
        self.sim = FusedCircuit(self.spec, dtype=np.complex64)  # MindSpore's Adam is float32 anyway; half the memory traffic
        n = n_qubits
        super().__init__({"enc_w": (dim, n), "enc_b": (n,), "theta": (self.spec.n_params,),
                          "head_w": (n, num_classes), "head_b": (num_classes,)}, input_scaling)
        self.dim, self.num_classes = dim, num_classes

    def init(self, rng: np.random.Generator) -> np.ndarray:
        n = self.spec.n_qubits
        return self.pack({
            "enc_w": self.dense_init(rng, self.dim, (self.dim, n)),
            "enc_b": self.dense_init(rng, self.dim, (n,)),
            "theta": rng.normal(0.0, 0.1, self.spec.n_params),  # near identity: trains far better than uniform
            "head_w": self.dense_init(rng, n, (n, self.num_classes)),
            "head_b": self.dense_init(rng, n, (self.num_classes,)),
        })

    def forward(self, flat, x, grad: bool = True):
        p = self.unpack(flat)
        x = self.prepare(x)
        z = x @ p["enc_w"] + p["enc_b"]
        if not grad:
            return self.sim.forward(z, p["theta"], grad=False) @ p["head_w"] + p["head_b"]
        e, tape = self.sim.forward(z, p["theta"])
        return e @ p["head_w"] + p["head_b"], (p, x, e, tape)

    def backward(self, cache, g_logits: np.ndarray) -> np.ndarray:
        p, x, e, tape = cache
        g_e = g_logits @ p["head_w"].T
        gz, gtheta = self.sim.backward(tape, g_e)
        return self.pack({"enc_w": x.T @ gz, "enc_b": gz.sum(0), "theta": gtheta,
                          "head_w": e.T @ g_logits, "head_b": g_logits.sum(0)})

    def expectations(self, flat, x) -> np.ndarray:
        p = self.unpack(flat)
        return self.sim.forward(self.prepare(x) @ p["enc_w"] + p["enc_b"], p["theta"], grad=False)


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
    if cfg.model == "quantum":
        return QuantumStudent(dim, num_classes, cfg.variant, cfg.n_qubits, cfg.n_layers, cfg.input_scaling)
    if cfg.model == "logreg":
        return LogReg(dim, num_classes, cfg.input_scaling)
    target = QuantumStudent(dim, num_classes, cfg.variant, cfg.n_qubits, cfg.n_layers).size
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

    def __init__(self, flat: np.ndarray, lr: float):
        for k, v in MINDSPORE_ENV.items():
            os.environ.setdefault(k, v)
        import mindspore as ms
        from mindspore import nn

        self._tensor = ms.Tensor
        self.param = ms.Parameter(ms.Tensor(np.asarray(flat, dtype=np.float32)), name="weights")
        self.optimizer = nn.Adam([self.param], learning_rate=lr)

    def step(self, grad: np.ndarray) -> np.ndarray:
        self.optimizer((self._tensor(np.asarray(grad, dtype=np.float32)),))
        return self.value()

    def value(self) -> np.ndarray:
        return self.param.asnumpy().astype(np.float64)

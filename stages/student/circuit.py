"""The student circuit as plain data, plus its MindQuantum, OpenQASM and SVG forms.

A circuit is an ordered list of ``Gate`` s. Encoding gates ``RX(z_i)`` take the angle
``z_i = (W·e + b)_i`` of the example; ansatz gates take one trainable parameter each
(``param`` indexes the parameter vector). The same list feeds the fused simulator
(``fused.py``), MindQuantum (the reference simulator) and the exports, so there is one
source of truth for what the circuit is.

Variants (per ansatz layer; n qubits):

- ``paper``: RY(θ) on every qubit, ZZ(θ) on neighbours (i, i+1), RZ(θ) on every qubit,
  CNOT chain (control i, target i+1). 3n−1 parameters per layer.
- ``reference``: the authors' released code gate for gate (see ``reference_layer``).
  7n−5 parameters per layer (72 for n = 11).
- ``u3``: RZ·RY·RZ on every qubit (a general single-qubit unitary up to phase), then the
  paper's CNOT chain. 3n parameters per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import QdllmError

ROTATIONS = ("RX", "RY", "RZ", "ZZ")


@dataclass(frozen=True)
class Gate:
    """One gate: ``kind`` in RX, RY, RZ, ZZ, CNOT; ``qubits`` (for CNOT: control, target)."""

    kind: str
    qubits: tuple[int, ...]
    param: int | None = None  # index into the ansatz parameters
    encoding: int | None = None  # index into the encoding angles z


@dataclass(frozen=True)
class CircuitSpec:
    variant: str
    n_qubits: int
    n_layers: int
    gates: tuple[Gate, ...]
    n_params: int

    @property
    def encoding(self) -> tuple[Gate, ...]:
        return tuple(g for g in self.gates if g.encoding is not None)

    @property
    def ansatz(self) -> tuple[Gate, ...]:
        return tuple(g for g in self.gates if g.encoding is None)


class _Builder:
    def __init__(self) -> None:
        self.gates: list[Gate] = []
        self.n_params = 0

    def rot(self, kind: str, *qubits: int) -> None:
        self.gates.append(Gate(kind, tuple(qubits), param=self.n_params))
        self.n_params += 1

    def cnot(self, control: int, target: int) -> None:
        self.gates.append(Gate("CNOT", (control, target)))


def paper_layer(b: _Builder, n: int) -> None:
    """Paper section 4.2.2: unified RY, neighbour ZZ, unified RZ, CNOT chain."""
    for q in range(n):
        b.rot("RY", q)
    for q in range(n - 1):
        b.rot("ZZ", q, q + 1)
    for q in range(n):
        b.rot("RZ", q)
    for q in range(n - 1):
        b.cnot(q, q + 1)


def reference_layer(b: _Builder, n: int) -> None:
    """The authors' code, generalised from n = 11 (``X.on(target, control)`` in their notation).

    Quirks kept on purpose: three RY in a row on qubits 0..n−2 (one rotation with three
    redundant parameters), none on qubit n−1; the ZZ on (j+1, j+2) sits between the RYs of
    qubits j and j+1, so qubit 0 gets no ZZ; three RZ in a row on every qubit; then
    X.on(0, n−1) and, for k in 1..n−3, X.on(k+1, k) and X.on(k−1, k).
    """
    for j in range(n - 1):
        for _ in range(3):
            b.rot("RY", j)
        if j != n - 2:
            b.rot("ZZ", j + 1, j + 2)
    for q in range(n):
        for _ in range(3):
            b.rot("RZ", q)
    b.cnot(n - 1, 0)
    for k in range(1, n - 2):
        b.cnot(k, k + 1)
        b.cnot(k, k - 1)


def u3_layer(b: _Builder, n: int) -> None:
    """General single-qubit units RZ·RY·RZ on every qubit, then the paper's CNOT chain."""
    for q in range(n):
        b.rot("RZ", q)
        b.rot("RY", q)
        b.rot("RZ", q)
    for q in range(n - 1):
        b.cnot(q, q + 1)


LAYERS = {"paper": paper_layer, "reference": reference_layer, "u3": u3_layer}


def build_circuit(variant: str = "paper", n_qubits: int = 11, n_layers: int = 2) -> CircuitSpec:
    """Encoding RX(z_i) on every qubit, then ``n_layers`` ansatz layers of ``variant``."""
    if variant not in LAYERS:
        raise QdllmError(f"Unknown circuit variant {variant!r}: use one of {', '.join(LAYERS)}.")
    if n_qubits < (2 if variant == "reference" else 1) or n_layers < 0:
        raise QdllmError(f"The {variant} circuit needs at least {2 if variant == 'reference' else 1} qubits "
                         "and 0 or more layers; change --qubits or --layers.")
    b = _Builder()
    b.gates = [Gate("RX", (q,), encoding=q) for q in range(n_qubits)]
    for _ in range(n_layers):
        LAYERS[variant](b, n_qubits)
    return CircuitSpec(variant, n_qubits, n_layers, tuple(b.gates), b.n_params)


# ---------------------------------------------------------------- MindQuantum


def param_name(i: int) -> str:
    return f"theta{i}"


def enc_name(i: int) -> str:
    return f"z{i}"


def to_mindquantum(spec: CircuitSpec):
    """The MindQuantum circuit: encoder parameters ``z{i}``, ansatz parameters ``theta{k}``."""
    from mindquantum.core.circuit import Circuit
    from mindquantum.core.gates import RX, RY, RZ, Rzz, X

    enc, ans = Circuit(), Circuit()
    kinds = {"RX": RX, "RY": RY, "RZ": RZ, "ZZ": Rzz}
    for g in spec.gates:
        if g.kind == "CNOT":
            ans += X.on(g.qubits[1], g.qubits[0])
            continue
        name = enc_name(g.encoding) if g.encoding is not None else param_name(g.param)
        gate = kinds[g.kind](name).on(list(g.qubits) if g.kind == "ZZ" else g.qubits[0])
        if g.encoding is not None:
            enc += gate
        else:
            ans += gate
    return enc.as_encoder() + ans.as_ansatz()


def observables(n: int):
    """Pauli-Z on every qubit, as MindQuantum Hamiltonians."""
    from mindquantum.core.operators import Hamiltonian, QubitOperator

    return [Hamiltonian(QubitOperator(f"Z{q}")) for q in range(n)]


# ---------------------------------------------------------------- exports


def to_qasm(spec: CircuitSpec, theta: np.ndarray | None = None) -> str:
    """OpenQASM 2.0: the whole student as one gate ``qdllm_student(z0..)`` with the trained angles inlined.

    ``rzz`` is qelib1's (equal to ZZ(θ) = exp(−iθ/2·Z⊗Z) up to a global phase).
    """
    n = spec.n_qubits
    qs = ", ".join(f"q{i}" for i in range(n))
    zs = ", ".join(enc_name(i) for i in range(n))
    body = []
    for g in spec.gates:
        if g.kind == "CNOT":
            body.append(f"  cx q{g.qubits[0]}, q{g.qubits[1]};")
            continue
        angle = enc_name(g.encoding) if g.encoding is not None else (
            repr(float(theta[g.param])) if theta is not None else param_name(g.param))
        args = ", ".join(f"q{q}" for q in g.qubits)
        body.append(f"  {g.kind.lower() if g.kind != 'ZZ' else 'rzz'}({angle}) {args};")
    head = [
        "OPENQASM 2.0;",
        'include "qelib1.inc";',
        f"// qd-llm student: variant {spec.variant}, {n} qubits, {spec.n_layers} layers, {spec.n_params} parameters.",
        "// z_i = (W·e + b)_i are the encoded angles of one example; readout: <Z_i> of every qubit.",
    ]
    params = f"({zs}{', ' + ', '.join(param_name(i) for i in range(spec.n_params)) if theta is None and spec.n_params else ''})"
    return "\n".join(head + [f"gate qdllm_student{params} {qs}", "{", *body, "}",
                             f"qreg q[{n}];",
                             f"// per example: qdllm_student(z0, ..., z{n - 1}) q[0], ..., q[{n - 1}]; then measure Z.", ""])


def write_svg(spec: CircuitSpec, path: Path) -> None:
    """MindQuantum's drawing of the circuit (symbolic parameters)."""
    to_mindquantum(spec).svg().to_file(str(path))

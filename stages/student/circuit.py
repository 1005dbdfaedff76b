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
- ``noent``: ``paper`` with every entangling gate (ZZ, CNOT) removed: RY, RZ on every qubit.
  2n parameters per layer; a product state, so ⟨Z_i⟩ is a classical function of z_i alone.
- ``reupload``: ``paper`` with the encoding RX(z_i) repeated before every layer (data
  re-uploading); the model scales each layer's angles separately. n·L encoding angles.
- ``parallel:K``: K registers of ``paper`` side by side (K·n qubits, no gate between registers),
  each register with its own encoder angles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import PARALLEL, parallel_registers
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
    def n_encodings(self) -> int:
        """How many encoding angles an example binds (n, or n·L when the encoding is re-uploaded)."""
        return 1 + max((g.encoding for g in self.gates if g.encoding is not None), default=-1)

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


def noent_layer(b: _Builder, n: int) -> None:
    """The paper layer without its entangling gates (Bowles et al.'s ablation): RY and RZ on every qubit."""
    for q in range(n):
        b.rot("RY", q)
    for q in range(n):
        b.rot("RZ", q)


LAYERS = {"paper": paper_layer, "reference": reference_layer, "u3": u3_layer, "noent": noent_layer,
          "reupload": paper_layer}


def build_circuit(variant: str = "paper", n_qubits: int = 11, n_layers: int = 2) -> CircuitSpec:
    """Encoding RX(z_i) on every qubit (before every layer for ``reupload``), then ``n_layers`` ansatz layers of
    ``variant``; ``parallel:K`` is K registers of the paper circuit on qubits r·n .. r·n + n − 1."""
    k = parallel_registers(variant) if variant.startswith(PARALLEL) else 1
    layer = LAYERS.get("paper" if k > 1 else variant)
    if layer is None or (variant.startswith(PARALLEL) and k < 2):
        raise QdllmError(f"Unknown circuit variant {variant!r}: use one of {', '.join(LAYERS)} or {PARALLEL}K.")
    if n_qubits < (2 if variant == "reference" else 1) or n_layers < 0:
        raise QdllmError(f"The {variant} circuit needs at least {2 if variant == 'reference' else 1} qubits "
                         "and 0 or more layers; change --qubits or --layers.")
    b = _Builder()
    b.gates = [Gate("RX", (q,), encoding=q) for q in range(k * n_qubits)]  # every register's encoding first
    for r in range(k):
        start = len(b.gates)
        for layer_index in range(n_layers):
            if variant == "reupload" and layer_index:
                b.gates += [Gate("RX", (q,), encoding=layer_index * n_qubits + q) for q in range(n_qubits)]
            layer(b, n_qubits)
        if r:  # move this register's gates onto its own qubits
            off = r * n_qubits
            b.gates[start:] = [Gate(g.kind, tuple(q + off for q in g.qubits), g.param, g.encoding)
                               for g in b.gates[start:]]
    return CircuitSpec(variant, k * n_qubits, n_layers, tuple(b.gates), b.n_params)


# ---------------------------------------------------------------- MindQuantum


def param_name(i: int) -> str:
    return f"theta{i}"


def enc_name(i: int) -> str:
    return f"z{i}"


def to_mindquantum(spec: CircuitSpec):
    """The MindQuantum circuit: encoder parameters ``z{i}``, ansatz parameters ``theta{k}``."""
    from mindquantum.core.circuit import Circuit
    from mindquantum.core.gates import RX, RY, RZ, Rzz, X
    from mindquantum.core.parameterresolver import ParameterResolver

    circuit = Circuit()
    kinds = {"RX": RX, "RY": RY, "RZ": RZ, "ZZ": Rzz}
    for g in spec.gates:  # in order: re-uploaded encodings sit between ansatz layers
        if g.kind == "CNOT":
            circuit += X.on(g.qubits[1], g.qubits[0])
            continue
        if g.encoding is not None:
            angle = ParameterResolver(enc_name(g.encoding)).as_encoder()
        else:
            angle = ParameterResolver(param_name(g.param)).as_ansatz()
        circuit += kinds[g.kind](angle).on(list(g.qubits) if g.kind == "ZZ" else g.qubits[0])
    return circuit


def observables(n: int):
    """Pauli-Z on every qubit, as MindQuantum Hamiltonians."""
    from mindquantum.core.operators import Hamiltonian, QubitOperator

    return [Hamiltonian(QubitOperator(f"Z{q}")) for q in range(n)]


# ---------------------------------------------------------------- exports
# OpenQASM for any consumer: only qelib1.inc / stdgates.inc gates (rx, ry, rz, cx), every angle a plain decimal
# literal with a point at full float precision, measurements on every qubit. Qubit i of the student is q[i] and its
# measurement lands in c[i]; ZZ(t) = exp(-i t/2 Z(x)Z) is written as cx; rz(t); cx (qelib1 has no rzz).

QASM_CONVENTIONS = (
    "conventions: rx/ry/rz(t) = exp(-i t/2 X|Y|Z); qubit i of the student is q[i] and is measured into c[i].",
    "zz(t) on (a, b) = exp(-i t/2 Z_a Z_b) is written as: cx q[a], q[b]; rz(t) q[b]; cx q[a], q[b];",
    "readout: <Z_i> = P(c[i] = 0) - P(c[i] = 1); logits = <Z> @ head_w + head_b (checkpoint tensors; head.json).",
)


def qasm_angle(x: float) -> str:
    """A float as an OpenQASM real literal: plain decimal with a point, the shortest digits that round-trip.

    ``repr`` would give ``1e-05``, which strict OpenQASM 2 parsers reject (every real needs a point)."""
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"cannot write the angle {x!r} to OpenQASM")
    return np.format_float_positional(x, unique=True, trim="0")


def _gate_lines(spec: CircuitSpec, theta: np.ndarray, enc_angle, qubit) -> list[str]:
    """One OpenQASM statement per gate (three for ZZ, after a comment); ``enc_angle(i)`` spells the encoding angle."""
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape != (spec.n_params,):
        raise ValueError(f"the circuit has {spec.n_params} parameters, got angles of shape {theta.shape}")
    lines = []
    for g in spec.gates:
        if g.kind == "CNOT":
            lines.append(f"cx {qubit(g.qubits[0])}, {qubit(g.qubits[1])};")
            continue
        angle = enc_angle(g.encoding) if g.encoding is not None else qasm_angle(theta[g.param])
        if g.kind == "ZZ":
            a, b = (qubit(q) for q in g.qubits)
            lines += [f"// zz({angle}) {a}, {b}", f"cx {a}, {b};", f"rz({angle}) {b};", f"cx {a}, {b};"]
        else:
            lines.append(f"{g.kind.lower()}({angle}) {qubit(g.qubits[0])};")
    return lines


def _header(version: str, spec: CircuitSpec, what: str) -> list[str]:
    return [f"OPENQASM {version};", 'include "qelib1.inc";' if version == "2.0" else 'include "stdgates.inc";',
            f"// qd-llm quantum student: variant {spec.variant}, {spec.n_qubits} qubits, "
            f"{spec.n_layers} ansatz layer(s), "
            f"{spec.n_params} trained angles (bound below).", f"// {what}",
            *(f"// {line}" for line in QASM_CONVENTIONS)]


def _encoding_values(spec: CircuitSpec, z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.shape != (spec.n_encodings,):
        raise ValueError(f"the circuit encodes {spec.n_encodings} angles, got {z.shape}")
    return z


def to_qasm2(spec: CircuitSpec, theta: np.ndarray, z, comment: str = "") -> str:
    """OpenQASM 2.0 of one example: encoding angles ``z`` and trained angles ``theta`` bound, every qubit measured."""
    z = _encoding_values(spec, z)
    n = spec.n_qubits
    what = comment or "one example: its encoding angles z_i = (W e + b)_i are bound in the rx gates first."
    body = _gate_lines(spec, theta, lambda i: qasm_angle(z[i]), lambda q: f"q[{q}]")
    return "\n".join(_header("2.0", spec, what) + [f"qreg q[{n}];", f"creg c[{n}];", *body, "measure q -> c;", ""])


def to_qasm(spec: CircuitSpec, theta: np.ndarray) -> str:
    """OpenQASM 2.0 template of a trained student (a run's ``circuit.qasm``).

    The student is one gate ``qdllm_student(z0, ..., z{n-1})`` with the trained angles bound inside; it is applied
    once, with every encoding angle 0.0, and every qubit is measured. Replace the zeros with an example's
    z = W e + b, or let ``qdllm student export`` write one bound circuit per example.
    """
    n, m = spec.n_qubits, spec.n_encodings
    zs = ", ".join(enc_name(i) for i in range(m))
    qs = ", ".join(f"q{i}" for i in range(n))
    body = _gate_lines(spec, theta, enc_name, lambda q: f"q{q}")
    return "\n".join(_header("2.0", spec, "template: replace the 0.0 arguments of qdllm_student with an example's "
                                             "encoding angles z_i = (W e + b)_i.")
                     + [f"gate qdllm_student({zs}) {qs}", "{", *(f"  {line}" for line in body), "}",
                        f"qreg q[{n}];", f"creg c[{n}];",
                        f"qdllm_student({', '.join(['0.0'] * m)}) {', '.join(f'q[{i}]' for i in range(n))};",
                        "measure q -> c;", ""])


def to_qasm3(spec: CircuitSpec, theta: np.ndarray, z=None, comment: str = "") -> str:
    """OpenQASM 3.0 with the trained angles bound; the encoding angles are ``input float[64] z0 .. z{n-1}``,
    or bound too when ``z`` is given."""
    n = spec.n_qubits
    if z is None:
        what = comment or "one circuit for every example: bind the inputs z_i = (W e + b)_i of an example."
        inputs, enc = [f"input float[64] {enc_name(i)};" for i in range(spec.n_encodings)], enc_name
    else:
        values = _encoding_values(spec, z)
        what = comment or "one example: its encoding angles z_i = (W e + b)_i are bound in the rx gates first."
        inputs, enc = [], lambda i: qasm_angle(values[i])
    body = _gate_lines(spec, theta, enc, lambda q: f"q[{q}]")
    return "\n".join(_header("3.0", spec, what) + inputs + [f"qubit[{n}] q;", f"bit[{n}] c;", *body,
                                                           "c = measure q;", ""])


def write_svg(spec: CircuitSpec, path: Path) -> None:
    """MindQuantum's drawing of the circuit (symbolic parameters)."""
    to_mindquantum(spec).svg().to_file(str(path))

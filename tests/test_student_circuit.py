"""The student circuit: pinned parameter counts, and the fused simulator equals MindQuantum."""

import numpy as np
import pytest

from stages.student.circuit import build_circuit, to_qasm
from stages.student.fused import FusedCircuit


@pytest.mark.parametrize("variant,n,L,expected", [
    ("paper", 11, 2, 64), ("paper", 11, 1, 32), ("paper", 4, 2, 22), ("paper", 8, 4, 92),
    ("reference", 11, 2, 144), ("reference", 11, 1, 72), ("reference", 4, 2, 46), ("reference", 8, 1, 51),
    ("u3", 11, 2, 66), ("u3", 4, 1, 12), ("u3", 8, 4, 96),
    ("noent", 11, 2, 44), ("noent", 4, 1, 8), ("reupload", 11, 2, 64), ("reupload", 4, 3, 33),
    ("parallel:2", 11, 2, 128), ("parallel:3", 11, 2, 192), ("parallel:3", 4, 1, 33),
])
def test_parameter_counts(variant, n, L, expected):
    assert build_circuit(variant, n, L).n_params == expected


def test_reference_layer_gate_order():
    spec = build_circuit("reference", 11, 1)
    ans = spec.ansatz
    assert [(g.kind, g.qubits) for g in ans[:5]] == [("RY", (0,)), ("RY", (0,)), ("RY", (0,)), ("ZZ", (1, 2)), ("RY", (1,))]
    cnots = [g.qubits for g in ans if g.kind == "CNOT"]  # (control, target)
    assert cnots[0] == (10, 0) and cnots[1:3] == [(1, 2), (1, 0)] and len(cnots) == 17
    assert not any(g.kind == "RY" and g.qubits == (10,) for g in ans)


def _mindquantum(spec, z, theta, readout="z"):
    from mindquantum.core.operators import Hamiltonian, QubitOperator
    from mindquantum.simulator import Simulator

    from stages.student.circuit import observables, to_mindquantum

    n = spec.n_qubits
    obs = observables(n) + ([Hamiltonian(QubitOperator(f"Z{q} Z{q + 1}")) for q in range(n - 1)]
                            if readout == "z+zz" else [])
    circ = to_mindquantum(spec)
    ops = Simulator("mqvector", n).get_expectation_with_grad(obs, circ)
    zi = [int(s[1:]) for s in circ.encoder_params_name]
    ai = [int(s[5:]) for s in circ.ansatz_params_name]
    f, ge, ga = ops(z[:, zi], theta[ai])
    g_enc = np.zeros((len(z), len(obs), spec.n_encodings))
    g_enc[:, :, zi] = ge.real
    g_ans = np.zeros((len(z), len(obs), spec.n_params))
    g_ans[:, :, ai] = ga.real
    return f.real, g_enc, g_ans


CASES = [(v, n, L, "z") for v in ("paper", "reference", "u3", "noent", "reupload")
         for n, L in ((3, 1), (5, 2), (6, 3), (11, 2))]
CASES += [("parallel:2", 3, 1, "z"), ("parallel:3", 3, 2, "z"), ("paper", 5, 2, "z+zz"), ("reupload", 4, 3, "z+zz"),
          ("noent", 4, 2, "z+zz"), ("reference", 4, 1, "z+zz")]


@pytest.mark.parametrize("variant,n,L,readout", CASES)
def test_fused_equals_mindquantum(variant, n, L, readout):
    spec = build_circuit(variant, n, L)
    rng = np.random.default_rng(n * 10 + L)
    z, theta = rng.uniform(-3, 3, (3, spec.n_encodings)), rng.uniform(-3, 3, spec.n_params)
    f, g_enc, g_ans = _mindquantum(spec, z, theta, readout)
    for dtype, tol in ((np.complex128, 1e-9), (np.complex64, 1e-4)):
        sim = FusedCircuit(spec, dtype=dtype, readout=readout)
        e, tape = sim.forward(z, theta)
        w = rng.normal(size=e.shape)
        gz, gtheta = sim.backward(tape, w)
        assert e.shape == f.shape and np.abs(e - f).max() < tol
        assert np.abs(gz - np.einsum("bh,bhe->be", w, g_enc)).max() < tol
        assert np.abs(gtheta - np.einsum("bh,bhp->p", w, g_ans)).max() < tol
        assert np.abs(sim.forward(z, theta, grad=False) - f).max() < tol  # inference path


def test_qasm_lists_every_gate():
    spec = build_circuit("paper", 4, 2)
    text = to_qasm(spec, np.arange(spec.n_params, dtype=float))
    assert text.startswith('OPENQASM 2.0;\ninclude "qelib1.inc";')
    body = [line.strip() for line in text.split("{")[1].split("}")[0].splitlines() if line.strip()]
    ops = [line.split("(")[0].split(" ")[0] for line in body if not line.startswith("//")]
    # qelib1 has no rzz: each of the 6 ZZ gates is written as cx; rz; cx after a "// zz(...)" comment
    assert ops.count("rx") == 4 and ops.count("ry") == 8 and ops.count("rz") == 8 + 6 and ops.count("cx") == 6 + 2 * 6
    assert "rzz" not in text and sum(line.startswith("// zz(") for line in body) == 6


def test_svg(tmp_path):
    from stages.student.circuit import write_svg

    import collections
    import xml.etree.ElementTree as ET

    write_svg(build_circuit("paper", 3, 1), tmp_path / "c.svg")
    root = ET.parse(tmp_path / "c.svg").getroot()  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    labels = collections.Counter((t.text or "").strip() for t in root.iter() if t.tag.endswith("text"))
    # 3 qubits, 1 layer: an RX encoding, one RY and one RZ per qubit, ZZ between the 2 neighbour pairs
    assert (labels["RX"], labels["RY"], labels["RZ"], labels["Rzz"]) == (3, 3, 3, 2)
    assert {f"q{i}:" for i in range(3)} <= set(labels)

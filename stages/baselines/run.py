"""One baseline run: a ``BaselineConfig`` trained on one teacher cache, published whole as ``cache/student/<key>/``.

The recipe is the student's (``stages/student/run.py``): read and check the cache, train every seed (a fresh head,
dropout and data order each, ``train.train_seed``), publish atomically under the key's lock (a temporary sibling,
``manifest.json`` last). The run sits beside the student runs, so the report and ``qdllm cache push/pull`` read it
like one: ``metrics.json`` has the same fields (per-seed val/test accuracy, precision, recall, F1; ``summary`` with
mean ± std, ``trainable_params``, ``train_seconds_per_epoch``, ``inference_us_per_example``, ``acc_per_param``,
``acc_per_tkd``), with ``model`` = the method and ``description`` = what it really is. The best-validation seed's
weights are kept as ``weights-seed<S>.safetensors`` (the other seeds' are not: a DistilBERT-style run is 270 MB a
seed).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path


from pipeline import paths
from pipeline.cache import LAYERS, read_manifest, read_teacher_cache
from pipeline.console import progress
from pipeline.errors import QdllmError
from pipeline.keys import digest, short
from pipeline.manifests import RunManifest, teacher_manifest
from pipeline.metrics import run_summary
from pipeline.plan import Key
from pipeline.publish import is_complete, key_lock, publish_dir, write_json
from stages.baselines.config import BaselineConfig

log = logging.getLogger(__name__)
METRICS = "metrics.json"
WEIGHTS = "weights-seed{seed}.safetensors"
CHECKPOINT_FORMAT = "qdllm-baseline-checkpoint-1"
KIND = "baseline-run"


def baseline_key(teacher_key: str, cfg: BaselineConfig) -> Key:
    inputs = cfg.key_inputs(str(teacher_key))
    full = digest(inputs)
    return Key(short(full), full, inputs)


def baseline_path(key: Key | str) -> Path:
    return paths.student_dir(str(key))


def run_baseline(teacher_dir: Path, cfg: BaselineConfig) -> tuple[Path, bool]:
    """(run directory, whether it was trained now): train and publish ``cfg`` on the cache at ``teacher_dir``,
    unless that run is complete already (then nothing is loaded or trained)."""
    teacher_dir = Path(teacher_dir)
    key = baseline_key(teacher_dir.name, cfg)
    final = baseline_path(key)
    if is_complete(final):
        log.info("up to date: %s", final)
        return final, False
    if cfg.spec.layers:
        require_layers(teacher_dir, cfg.method)  # before anything is written
    from stages.student.run import make_output_dir

    make_output_dir(final.parent, "QDLLM_CACHE_DIR")
    with key_lock(final):
        if is_complete(final):
            return final, False
        _train_and_publish(teacher_dir, cfg, key, final)
    return final, True


# How to build a teacher cache with the teacher_layers column (PKD-Skip's 5 intermediate layers, a 6-layer student)
EXPORT_LAYERS_HINT = "make teacher TASK={task} EXPORT_LAYERS=5"


def has_layers(teacher_dir: Path) -> bool:
    """Whether a complete teacher cache declares the ``teacher_layers`` column (its manifest alone is read)."""
    return bool(read_manifest(Path(teacher_dir)).get(LAYERS))


def require_layers(teacher_dir: Path, method: str) -> None:
    """One sentence when a cache lacks the teacher layers ``method`` distils from, saying how to build one."""
    manifest = read_manifest(Path(teacher_dir))
    if not manifest.get(LAYERS):
        hint = EXPORT_LAYERS_HINT.format(task=manifest.get("task") or "TASK")
        raise QdllmError(f"The teacher cache {Path(teacher_dir).name} has no {LAYERS} column, which {method} distils "
                         f"from; build a cache with it by rerunning the teacher with the same settings plus "
                         f"--export-layers K (e.g. `{hint}`).")


def _train_and_publish(teacher_dir: Path, cfg: BaselineConfig, key: Key, final: Path) -> None:
    from stages.lm.models import quiet_libraries

    quiet_libraries()  # before transformers loads its optional backends
    import torch
    from transformers import set_seed

    from stages.baselines.models import build_classifier, count_parameters, describe, projection_parameters
    from stages.baselines.train import train_seed

    method = cfg.spec
    columns = ("id", "text", "label", "teacher_logits") + ((LAYERS,) if method.layers else ())
    cache = read_teacher_cache(teacher_dir, columns=columns, transfer=True)
    layers = cache.manifest.get(LAYERS) if method.layers else None
    splits = cache.splits
    if not len(splits["train"]) or not len(splits["val"]):
        raise QdllmError(f"The teacher cache {teacher_dir} has an empty train or val split; rebuild it with more data.")
    if any(not s.texts or any(not isinstance(t, str) for t in s.texts) for s in splits.values() if len(s)):
        raise QdllmError(f"The teacher cache {teacher_dir} holds rows without text; a transformer baseline reads the "
                         "texts, so rebuild the cache.")
    teacher = teacher_manifest(teacher_dir)
    log.info("baseline %s (%s) on %s", final.name, method.name, teacher_dir.name)
    results: list = []
    params, best, patient = 0, None, {}
    with progress() as bar:
        for seed in cfg.seeds:
            set_seed(seed)  # the head's initialisation, then dropout and data order (the Trainer seeds again)
            model, tokenizer = build_classifier(method, cache.num_classes, layers)
            params = count_parameters(model)
            if layers:
                patient = {"beta": cfg.beta, "teacher_layers": layers.get("layers"), "teacher_dim": layers["dim"],
                           "student_layers": list(model.student_layers), "projection_parameters":
                           projection_parameters(model), "projection": "one Linear(student width -> teacher width) "
                           "per layer, trained with the student, not part of the saved classifier"}
            r = train_seed(model, tokenizer, splits, cfg, seed, cache.num_classes, bar)
            log.info("%s seed %d: val %.4f test %.4f (epoch %d)", method.name, seed, r.val["accuracy"],
                     r.test["accuracy"], r.best_epoch)
            if not all(torch.isfinite(v).all() for v in r.state.values() if v.is_floating_point()):
                raise QdllmError(f"Training diverged: the {method.name} weights became NaN or infinite; this run was "
                                 "not published; lower --lr.")
            results.append(r)
            if best is None or r.val["accuracy"] > best.val["accuracy"]:  # the first best seed, as students pick
                if best is not None:
                    best.state = {}
                best = r
            else:
                r.state = {}  # only the best seed's weights are kept
    seeds = [{"seed": r.seed, "best_epoch": r.best_epoch, "val": r.val, "test": r.test,
              "train_seconds_per_epoch": r.train_seconds_per_epoch, "train_seconds_total": r.train_seconds_total,
              "inference_us_per_example": r.inference_us_per_example, "curves": r.curves} for r in results]
    description = describe(method, params, int(layers["count"]) if layers else 0)
    config = {**cfg.settings(), "loss": cfg.loss, "schedule": "linear", "source": method.source,
              "keep_layers": list(method.keep_layers) if method.keep_layers else None, "after": method.after,
              **({"patient": patient} if patient else {})}
    from stages.student.run import teacher_info  # the same teacher figures every student run carries

    metrics = {"task": teacher.task, "teacher_key": teacher_dir.name, "model": method.name, "kind": KIND,
               "description": description, "config": config, "class_names": cache.class_names,
               "trainable_params": params, "parameters": {"classical": params, "circuit": 0},
               "teacher": teacher_info(teacher), "seeds": seeds, "summary": run_summary(seeds, params)}
    with publish_dir(final) as pub:
        classifier = {k: v for k, v in best.state.items() if not k.startswith("projections.")}  # PKD's: training only
        save_weights(pub.path / WEIGHTS.format(seed=best.seed), classifier,
                     {"format": CHECKPOINT_FORMAT, "method": method.name, "seed": str(best.seed),
                      "best_epoch": str(best.best_epoch), "config": json.dumps(config, sort_keys=True),
                      "class_names": json.dumps(cache.class_names, ensure_ascii=False), "description": description,
                      "forward": "logits = head(mean of encoder token states over the attention mask)"})
        write_json(pub.path / METRICS, metrics)
        pub.manifest = RunManifest(key=key.full, inputs=key.inputs, teacher_key=teacher_dir.name, task=teacher.task,
                                   class_names=cache.class_names, config=config,
                                   created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), kind=KIND).to_dict()
    s = metrics["summary"]["test"]["accuracy"]
    log.info("%s test accuracy %.4f ± %.4f → %s", method.name, s["mean"], s["std"], final)


def save_weights(path: Path, state: dict, metadata: dict[str, str]) -> None:
    """Named tensors with their metadata (written like every other file of the run, with the process's umask)."""
    from safetensors.torch import save

    Path(path).write_bytes(save({k: v.contiguous() for k, v in state.items()}, metadata=metadata))


def teacher_dirs(task: str | None, teacher_key: str | None) -> list[Path]:
    """The complete teacher caches to train from: one key, or those of a task, or every one present; one sentence
    when there is none."""
    from stages.student.run import teacher_caches

    if teacher_key is not None:
        path = paths.teacher_dir(paths.check_name(teacher_key, "--teacher-key", "give a key as `qdllm cache ls` "
                                                  "prints it"))
        if not is_complete(path):
            raise QdllmError(f"No teacher cache {teacher_key} under {path.parent}; build one with `make teacher "
                             "TASK=...` or fetch it with `make pull REMOTE=...`.")
        return [path]
    return teacher_caches(task, None)

"""Stage one end to end: dataset → LoRA fine-tune → teacher logits + frozen embeddings → cache.

The cache directory appears only when complete (written by ``write_teacher_cache``,
the adapter added, then renamed into place); checkpoints live in
``cache/teacher/.work/<key>/`` so an interrupted run resumes.

Under ``accelerate launch`` or ``torchrun`` every process fine-tunes its share of each
global batch (DDP) and exports its share of the rows; only the main process takes the
key lock, writes checkpoints and the adapter, and writes and publishes the cache. The
other processes never write into ``cache/`` and exit 0 once the cache is published.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import paths
from pipeline.cache import SPLITS, TRANSFER, UNLABELED, TeacherSplit, text_id, write_teacher_cache
from pipeline.errors import QdllmError
from pipeline.metrics import classification_metrics, softmax
from pipeline.plan import Plan
from pipeline.probe import probe_ceiling
from pipeline.models import parse_embedder
from pipeline.publish import MANIFEST, is_complete, key_lock
from stages.teacher.train import Processes, launched_processes, shard

log = logging.getLogger(__name__)


def work_dir(key: str) -> Path:
    return paths.cache_dir() / "teacher" / ".work" / key


def runs_dir(key: str) -> Path:
    """Default home of the tracking logs (TensorBoard events) of the run of ``key``."""
    return paths.cache_dir() / "teacher" / ".runs" / key


def run_teacher(plan: Plan, *, report_to: tuple[str, ...] = (), logging_dir: str | Path | None = None,
                gradient_checkpointing: bool = False, pull=None, **train_kwargs: Any) -> Path:
    """Build (or reuse) the teacher cache ``plan.teacher`` names from the dataset ``plan.data``; returns its directory.

    ``report_to`` names trackers (tensorboard, mlflow) for the fine-tune metrics, TensorBoard's under
    ``logging_dir`` (default ``runs_dir(key)``); ``gradient_checkpointing`` trades compute for memory; ``pull``
    (called by the main process only) fetches the cache from a remote instead and returns its directory, or None
    when the remote lacks it. None of these change the cache. In a multi-process launch every process calls this
    and gets the same directory back."""
    tcfg, final = plan.teacher.config, plan.teacher.dir
    distributed = launched_processes() > 1
    if not distributed:
        if is_complete(final):
            log.info("teacher cache %s is already complete: nothing to do", final)
            return final
        if pull is not None and pull() is not None:
            return final
        _require_data(plan)
    from stages.lm.models import quiet_libraries
    from stages.teacher.model import check_quantize

    quiet_libraries()
    check_quantize(tcfg.quantize)
    procs = Processes.start(report_to=tuple(report_to), logging_dir=logging_dir or runs_dir(plan.teacher.key.short))
    if not procs.is_main:
        from pipeline.console import setup_logging

        setup_logging(0, quiet=True)  # one progress display and one log: the main process's
    try:
        if procs.is_main:
            if distributed and (is_complete(final) or (pull is not None and pull() is not None)):
                procs.broadcast(True)
                log.info("teacher cache %s is already complete: nothing to do", final)
                return final
            with key_lock(final):
                done = is_complete(final)
                procs.broadcast(done)
                if done:
                    log.info("teacher cache %s was finished by another run: nothing to do", final)
                else:
                    _build(plan, procs, gradient_checkpointing, train_kwargs)
        elif not procs.broadcast():
            _build(plan, procs, gradient_checkpointing, train_kwargs)
        procs.barrier()  # every process returns once the cache is published
    finally:
        procs.end()
    return final


def _require_data(plan: Plan) -> None:
    dcfg, dpath = plan.data.config, plan.data.dir
    if not (dpath / MANIFEST).is_file():
        raise QdllmError(f"The {dcfg.task} dataset ({dpath}) has not been built; run `qdllm data` with the same data "
                         f"options first (e.g. `make data TASK={dcfg.task}`).")


def _device_name(procs: Processes) -> str:
    import torch

    times = f" x {procs.world} processes" if procs.world > 1 else ""
    if procs.device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(procs.device)}){times}"
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()}){times}"


def _peak_gpu_memory(procs: Processes) -> dict | None:
    """The most GPU memory this (main) process held since it started: what torch allocated for tensors, and what its
    caching allocator reserved from the driver (no CUDA context, no other process); None off CUDA."""
    import torch

    if procs.device.type != "cuda":
        return None
    return {"allocated_bytes": int(torch.cuda.max_memory_allocated(procs.device)),
            "reserved_bytes": int(torch.cuda.max_memory_reserved(procs.device))}


def _cpu_threads(procs: Processes) -> None:
    """Processes sharing one machine's CPU share its cores: each takes its part of the idle ones."""
    if procs.device.type != "cpu" or procs.world == 1 or os.environ.get("QDLLM_THREADS"):
        return
    import torch

    local = int(os.environ.get("LOCAL_WORLD_SIZE", procs.world))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), cores // max(local, 1))))


def _sharded_embeddings(procs: Processes, name: str, texts: list[str]) -> np.ndarray:
    """Frozen-encoder embeddings of ``texts``, each process encoding its strided share of them sorted by length."""
    from stages.lm import embed

    mine = shard(np.argsort([len(t) for t in texts], kind="stable"), procs)
    where = f" (process {procs.rank + 1}/{procs.world})" if procs.world > 1 else ""
    local = embed.embed_texts(name, [texts[i] for i in mine], label=f"embeddings ({name}){where}")
    parts = procs.gather((mine, local))
    out = np.zeros((len(texts), parts[0][1].shape[1]), dtype=np.float32)
    for rows, vectors in parts:
        out[rows] = vectors
    return out


PRECISION_CHECK_ROWS = 16


def _export_precision(model, ids: list[list[int]], pad_id: int, precision: str, procs) -> dict:
    """How the cache's logits were computed, so that a user can reproduce them from the adapter: the autocast and
    the weights' dtype, and with bf16 arithmetic on fp32 weights, how far plain fp32 logits land from the cached
    ones (the largest difference over the first ``PRECISION_CHECK_ROWS`` test rows)."""
    from stages.teacher import train

    weights = str(model.dtype).removeprefix("torch.")
    record = {"precision": precision, "autocast": "bfloat16" if precision == "bf16" else None,
              "weights_dtype": weights}
    if precision == "bf16" and weights == "float32" and ids:
        few = ids[:PRECISION_CHECK_ROWS]
        bf16 = train.predict_logits(model, few, pad_id, label="precision check (bf16)", bf16=True, procs=procs)
        fp32 = train.predict_logits(model, few, pad_id, label="precision check (fp32)", bf16=False, procs=procs)
        record["fp32_max_abs_difference"] = float(np.abs(bf16 - fp32).max())
        record["rows_checked"] = len(few)
    return record


def load_transfer_texts(path: str, exclude: list[str]) -> list[str]:
    """The unlabeled texts of ``--transfer``, deduplicated, without any text of the dataset's splits (so the
    teacher's view of a validation or test text never reaches a student through the transfer split)."""
    if not path:
        return []
    p = Path(path)
    if p.suffix.lower() in (".txt", ""):
        raw = p.read_text(encoding="utf-8", errors="replace").splitlines()
    else:
        from stages.data.sources import read_table_columns

        table = read_table_columns(p, {"text": "--transfer reads the column `text`"})
        raw = [t for t in table["text"] if t is not None]
    seen = set(exclude)
    out = []
    for t in (" ".join(str(x).split()) for x in raw):
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


# ---------------------------------------------------------------- the recipe: one function per phase


@dataclass
class Rows:
    """The dataset rows the teacher reads: all of each split, which it exports, which it fine-tunes on."""

    class_names: list[str]
    frames: dict[str, Any]  # split -> polars DataFrame (id, text, label)
    texts: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    export_idx: dict[str, np.ndarray]  # the exported rows of each split, in dataset order
    tune_idx: np.ndarray  # the fine-tune rows of train

    def exported(self, split: str) -> list[str]:
        return [self.texts[split][i] for i in self.export_idx[split]]


@dataclass
class Teacher:
    """The LLM classifier with its LoRA adapter, its tokenizer, and the token ids of every row it reads."""

    model: Any
    tokenizer: Any
    model_dir: str
    trainable: int
    ids: dict[str, list[list[int]]]  # exported rows of each split
    tune_ids: list[list[int]]
    tune_lengths: list[int]  # untruncated token counts of the fine-tune rows
    num_layers: int = 0  # the LLM's decoder layers
    layers: tuple[int, ...] = ()  # hidden states exported with the logits (--export-layers; empty: none)


@dataclass
class Export:
    """Teacher logits of every exported row (val's from the fine-tune) and of the transfer texts, and with
    ``--export-layers`` their pooled hidden states (val's too, from one more pass over the val rows)."""

    logits: dict[str, np.ndarray]
    transfer_texts: list[str]
    tokens: int
    seconds: float
    layers: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (N, K, H); empty without --export-layers


def _setup_data(plan: Plan) -> Rows:
    """Which rows are fine-tuned on and exported: the seed's permutation of each split, capped by the budget."""
    from stages.data.dataset import load_dataset

    tcfg = plan.teacher.config
    ds = load_dataset(plan.data.dir)
    rng = np.random.default_rng(tcfg.seed)
    frames = {s: ds.splits[s] for s in SPLITS}
    perms = {s: rng.permutation(frames[s].height) for s in SPLITS}
    cap = tcfg.max_export_examples or None
    return Rows(class_names=ds.class_names, frames=frames,
                texts={s: frames[s]["text"].to_list() for s in SPLITS},
                labels={s: frames[s]["label"].to_numpy().astype(np.int64) for s in SPLITS},
                export_idx={s: np.sort(perms[s][:cap]) for s in SPLITS},
                # the first rows of the same permutation: exported too when the caps allow it
                tune_idx=perms["train"][:tcfg.max_train_examples or None])


def _setup_model(plan: Plan, rows: Rows, procs: Processes, gradient_checkpointing: bool) -> Teacher:
    """The base LLM with a classification head and LoRA, on this process's device, and the rows tokenized."""
    import torch

    from stages.lm import models
    from stages.teacher import model as classifier
    from stages.teacher import train

    tcfg = plan.teacher.config
    with procs.main_first():  # downloads and the packaged model's conversion happen once
        model_dir = models.resolve_model_dir(tcfg.model, tcfg.revision)
        if not parse_embedder(tcfg.embedder).needs_llm:
            models.resolve_embedder_dir(tcfg.embedder)
    models.set_offline(True)  # everything needed is local now
    torch.manual_seed(tcfg.seed)
    tok = models.load_tokenizer(model_dir)
    model = classifier.load_classifier(model_dir, len(rows.class_names), tok, quantize=tcfg.quantize, seed=tcfg.seed,
                                       precision=tcfg.precision, device=procs.device)
    num_layers = int(model.config.get_text_config().num_hidden_layers)
    # before any fine-tuning: a teacher too shallow for --export-layers stops here, in one sentence
    layers = train.export_layer_indices(num_layers, tcfg.export_layers) if tcfg.export_layers else ()
    _cpu_threads(procs)
    model = classifier.add_lora(model, r=tcfg.lora_r, alpha=tcfg.lora_alpha, dropout=tcfg.lora_dropout,
                                quantize=tcfg.quantize, seed=tcfg.seed, gradient_checkpointing=gradient_checkpointing)
    trainable = classifier.trainable_params(model)
    log.info("%s: %s LoRA trainable parameters (r=%d) on %s", tcfg.model, f"{trainable:,}", tcfg.lora_r,
             ", ".join(classifier.lora_targets(model.config.model_type)))
    if procs.world > 1:
        log.info("%d processes (%s, %s): each runs 1/%d of every global batch of %d and exports 1/%d of the rows",
                 procs.world, procs.device.type, procs.accelerator.distributed_type.value, procs.world,
                 tcfg.batch_size, procs.world)
    tune_texts = [rows.texts["train"][i] for i in rows.tune_idx]
    return Teacher(model=model, tokenizer=tok, model_dir=model_dir, trainable=trainable,
                   ids={s: train.tokenize(tok, rows.exported(s), tcfg.max_length) for s in SPLITS},
                   tune_ids=train.tokenize(tok, tune_texts, tcfg.max_length),
                   tune_lengths=[len(x) for x in tok(tune_texts)["input_ids"]], num_layers=num_layers, layers=layers)


def _fine_tune(plan: Plan, rows: Rows, teacher: Teacher, procs: Processes, train_kwargs: dict):
    """LoRA fine-tune, resumable from the work directory's checkpoints; the best state on validation is loaded."""
    from stages.teacher import train

    tcfg = plan.teacher.config
    procs.init_tracking("qdllm-teacher", {"teacher_key": plan.teacher.key.short, "data_key": plan.data.key.short,
                                          "processes": procs.world, **asdict(tcfg)}, run_name=plan.teacher.key.short)
    result = train.train(teacher.model, teacher.tune_ids, rows.labels["train"][rows.tune_idx], teacher.ids["val"],
                         rows.labels["val"][rows.export_idx["val"]], pad_id=teacher.tokenizer.pad_token_id,
                         lr=tcfg.lr, weight_decay=tcfg.weight_decay, epochs=tcfg.epochs, batch_size=tcfg.batch_size,
                         grad_accum=tcfg.grad_accum, seed=tcfg.seed, work_dir=work_dir(plan.teacher.key.short),
                         bf16=tcfg.precision == "bf16", procs=procs, **train_kwargs)
    train.load_trainable_state(teacher.model, result.best_state)
    return result


def _save_adapter(plan: Plan, rows: Rows, teacher: Teacher, procs: Processes) -> tuple[Path, dict]:
    """The adapter in peft's format (main process), into the work directory; and how the export computes logits."""
    from stages.teacher import model as classifier

    tcfg = plan.teacher.config
    precision = _export_precision(teacher.model, teacher.ids["test"], teacher.tokenizer.pad_token_id, tcfg.precision,
                                  procs)
    adapter = work_dir(plan.teacher.key.short) / "adapter"
    if procs.is_main:
        shutil.rmtree(adapter, ignore_errors=True)
        classifier.save_adapter(teacher.model, adapter, teacher.tokenizer, rows.class_names,
                                classifier.base_model_record(tcfg.model, tcfg.revision, teacher.model_dir),
                                {"task": plan.data.config.task, "max_length": tcfg.max_length,
                                 "teacher_key": plan.teacher.key.full, "export_precision": precision})
    return adapter, precision


def _export_logits(plan: Plan, rows: Rows, teacher: Teacher, val_logits: np.ndarray, procs: Processes) -> Export:
    """Teacher logits of the exported train and test rows and of the transfer texts (val's come from the fine-tune).

    With ``--export-layers`` each forward pass also returns the pooled hidden states of its rows (``train.predict``);
    the val rows, whose logits the fine-tune's validation computed without them, run once more for their states
    (their logits stay the fine-tune's, so the logit columns are those of the same cache without layers)."""
    from stages.teacher import train

    tcfg = plan.teacher.config
    tok, bf16 = teacher.tokenizer, tcfg.precision == "bf16"
    if tcfg.quantize == "none":
        teacher.model = teacher.model.merge_and_unload()  # same outputs, no LoRA detour: faster export
    logits, layers = {"val": val_logits}, {}
    start = time.perf_counter()

    def run(split: str) -> np.ndarray:
        what = "teacher logits" + (" and layers" if teacher.layers else "")
        out, states = train.predict(teacher.model, teacher.ids[split], tok.pad_token_id, layers=teacher.layers,
                                    label=f"{what} {split}", bf16=bf16, procs=procs)
        if states is not None:
            layers[split] = states
        return out

    for s in ("train", "test"):
        logits[s] = run(s)
    if teacher.layers:
        run("val")
    transfer = load_transfer_texts(tcfg.transfer, exclude=[t for s in SPLITS for t in rows.texts[s]])
    if transfer:
        teacher.ids[TRANSFER] = train.tokenize(tok, transfer, tcfg.max_length)
        logits[TRANSFER] = run(TRANSFER)
    exported = ("train", "test", TRANSFER) + (("val",) if teacher.layers else ())
    tokens = sum(len(x) for s in exported for x in teacher.ids.get(s, ()))
    return Export(logits, transfer, tokens, time.perf_counter() - start, layers)


def _embeddings(plan: Plan, rows: Rows, teacher: Teacher, export: Export, procs: Processes
                ) -> tuple[dict[str, np.ndarray] | None, str]:
    """The frozen embedding of every exported row and transfer text, and a sentence saying where it comes from."""
    from stages.lm import embed

    tcfg = plan.teacher.config
    texts = {s: rows.exported(s) for s in SPLITS}
    if export.transfer_texts:
        texts[TRANSFER] = export.transfer_texts
    if parse_embedder(tcfg.embedder).needs_llm:  # a lookup in the LLM's input-embedding layer: the main process alone
        emb = {s: embed.teacher_input_embeddings(teacher.model, teacher.tokenizer, texts[s], max_length=tcfg.max_length)
               for s in texts} if procs.is_main else None
        return emb, f"teacher-input ({tcfg.model}, input-embedding layer, mean over non-pad tokens)"
    teacher.model = None  # free the LLM before loading the encoder
    flat = [x for s in texts for x in texts[s]]
    vectors = _sharded_embeddings(procs, tcfg.embedder, flat)
    emb = dict(zip(texts, np.split(vectors, np.cumsum([len(texts[s]) for s in texts])[:-1])))
    if tcfg.embedder.endswith("-static"):
        return emb, f"{tcfg.embedder} (model2vec static token vectors, mean over tokens)"
    return emb, f"{tcfg.embedder} (last hidden state, mean-pooled over tokens, max {embed.ENCODER_MAX_LENGTH} tokens)"


def _splits(rows: Rows, export: Export, emb: dict[str, np.ndarray]) -> dict[str, TeacherSplit]:
    """The cache's rows: text, label, teacher logits and probabilities, embedding."""
    out = {}
    for s in SPLITS:
        sub = rows.frames[s][rows.export_idx[s].tolist()]
        out[s] = TeacherSplit(ids=sub["id"].to_list(), texts=sub["text"].to_list(),
                              labels=rows.labels[s][rows.export_idx[s]], logits=export.logits[s].astype(np.float32),
                              probs=softmax(export.logits[s]).astype(np.float32), embeddings=emb[s].astype(np.float32),
                              layers=export.layers.get(s))
    if export.transfer_texts:
        texts = export.transfer_texts
        out[TRANSFER] = TeacherSplit(ids=[text_id(t) for t in texts], texts=texts,
                                     labels=np.full(len(texts), UNLABELED, dtype=np.int64),
                                     logits=export.logits[TRANSFER].astype(np.float32),
                                     probs=softmax(export.logits[TRANSFER]).astype(np.float32),
                                     embeddings=emb[TRANSFER].astype(np.float32), layers=export.layers.get(TRANSFER))
    return out


def _manifest_extra(plan: Plan, rows: Rows, teacher: Teacher, result, export: Export, precision: dict,
                    metrics: dict, probe: dict, procs: Processes, gradient_checkpointing: bool) -> dict[str, Any]:
    """Everything the cache's manifest records beyond its rows: metrics, probe, budget, fine-tune, export, device."""
    tcfg = plan.teacher.config
    return {
        "teacher_metrics": metrics,
        # a logistic regression on the cached embeddings alone: the teacher must beat it for distillation to help
        "probe_ceiling": probe,
        "lora_trainable_params": int(teacher.trainable),
        "model": tcfg.model,
        "embedder": tcfg.embedder,
        "profile": tcfg.profile,
        "precision": tcfg.precision,
        "export_precision": precision,  # what reproduces the logits from the adapter (its README shows how)
        "caps": {
            "epochs": tcfg.epochs, "max_length": tcfg.max_length, "max_train_examples": tcfg.max_train_examples,
            "max_export_examples": tcfg.max_export_examples, "fine_tune_examples": int(len(rows.tune_idx)),
            "dataset_rows": {s: rows.frames[s].height for s in SPLITS},
            "exported_rows": {s: int(len(rows.export_idx[s])) for s in SPLITS},
            "truncated_fraction": round(float(np.mean(np.array(teacher.tune_lengths) > tcfg.max_length)), 4)
            if teacher.tune_lengths else 0.0,
        },
        "fine_tune": {"best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
                      "history": result.history, "optimizer_steps": result.steps,
                      "resumed_at_step": result.resumed_at_step, "tokens": result.tokens,
                      "train_seconds": result.train_seconds,
                      "tokens_per_second": round(result.tokens / max(result.train_seconds, 1e-9), 1),
                      "gradient_checkpointing": bool(gradient_checkpointing or tcfg.quantize != "none")},
        "export": {"tokens": int(export.tokens), "seconds": round(export.seconds, 3),
                   "tokens_per_second": round(export.tokens / max(export.seconds, 1e-9), 1),
                   "what": "teacher logits of the exported train and test rows (val's come from the fine-tune)"
                   + (", and the pooled hidden states of every exported row (val's in one more pass)"
                      if teacher.layers else "")},
        "processes": {"count": procs.world, "device": procs.device.type,
                      "backend": procs.accelerator.state.backend if procs.world > 1 else None},
        "adapter": "adapter",  # peft format with tokenizer and labels.json: see its README.md
        "device": _device_name(procs),
        "peak_gpu_memory": _peak_gpu_memory(procs),
        "data_key": plan.data.key.short,
    }


def _layers_info(plan: Plan, teacher: Teacher) -> dict[str, Any] | None:
    """What the manifest says of the ``teacher_layers`` column (besides K and H): which hidden states, how pooled."""
    if not teacher.layers:
        return None
    return {"layers": list(teacher.layers), "num_layers": teacher.num_layers,
            "source": f"{plan.teacher.config.model} with its LoRA adapter: hidden_states[l], the output of decoder "
                      f"layer l of {teacher.num_layers} (before the final norm)",
            "pooling": "mean over the non-padding tokens (at most max_length tokens)",
            "selection": "round(j*L/(K+1)) for j = 1..K: evenly spaced inside the model (PKD-Skip)"}


def _build(plan: Plan, procs: Processes, gradient_checkpointing: bool, train_kwargs: dict) -> None:
    """The teacher recipe: data → model → fine-tune → adapter → logits → embeddings → probe → publish."""
    _require_data(plan)  # (checked before any process starts when there is one)
    final = plan.teacher.dir
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 2)
        t = now

    rows = _setup_data(plan)
    lap("load_data")
    teacher = _setup_model(plan, rows, procs, gradient_checkpointing)
    lap("load_model")
    result = _fine_tune(plan, rows, teacher, procs, train_kwargs)
    lap("fine_tune")
    adapter, precision = _save_adapter(plan, rows, teacher, procs)
    export = _export_logits(plan, rows, teacher, result.val_logits, procs)
    lap("export_logits")
    emb, source = _embeddings(plan, rows, teacher, export, procs)
    lap("embeddings")
    if not procs.is_main:
        return  # the main process writes and publishes the cache

    splits = _splits(rows, export, emb)
    n = len(rows.class_names)
    probe = probe_ceiling(splits["train"].embeddings, splits["train"].labels, splits["val"].embeddings,
                          splits["val"].labels, splits["test"].embeddings, splits["test"].labels, n)
    lap("probe")
    metrics = {s: classification_metrics(splits[s].labels, export.logits[s].argmax(1), n) for s in ("val", "test")}
    procs.log({f"{s}/teacher_{k}": v for s in metrics for k, v in metrics[s].items() if isinstance(v, (int, float))},
              step=result.steps)
    extra = _manifest_extra(plan, rows, teacher, result, export, precision, metrics, probe, procs,
                            gradient_checkpointing)
    timings["total_before_write"] = round(time.perf_counter() - t0, 2)
    extra["timings"] = timings
    write_teacher_cache(final, splits, key=plan.teacher.key.full, inputs=plan.teacher.key.inputs,
                        task=plan.data.config.task, class_names=rows.class_names, embedding_source=source, extra=extra,
                        directories={"adapter": adapter}, layers_info=_layers_info(plan, teacher))
    shutil.rmtree(work_dir(plan.teacher.key.short), ignore_errors=True)
    log.info("teacher cache %s: val accuracy %.4f, test accuracy %.4f (probe ceiling on its embeddings: test %.4f), "
             "%.0f s", final, metrics["val"]["accuracy"], metrics["test"]["accuracy"], probe["test"]["accuracy"],
             time.perf_counter() - t0)

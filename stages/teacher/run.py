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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import paths
from pipeline.cache import SPLITS, TRANSFER, UNLABELED, TeacherSplit, text_id, write_teacher_cache
from pipeline.errors import QdllmError
from pipeline.metrics import classification_metrics, softmax
from pipeline.plan import Plan
from pipeline.probe import probe_ceiling
from pipeline.publish import MANIFEST, _fsync_tree, is_complete, key_lock
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


def _build(plan: Plan, procs: Processes, gradient_checkpointing: bool, train_kwargs: dict) -> None:
    import torch

    from stages.data.dataset import load_dataset
    from stages.lm import embed, models
    from stages.teacher import model as classifier
    from stages.teacher import train

    _require_data(plan)  # (checked before any process starts when there is one)
    dcfg, tcfg, tkey, final = plan.data.config, plan.teacher.config, plan.teacher.key, plan.teacher.dir
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 2)
        t = now

    ds = load_dataset(plan.data.dir)
    class_names = ds.class_names
    rng = np.random.default_rng(tcfg.seed)
    rows = {s: ds.splits[s] for s in SPLITS}
    perms = {s: rng.permutation(rows[s].height) for s in SPLITS}
    cap = tcfg.max_export_examples or None
    export_idx = {s: np.sort(perms[s][:cap]) for s in SPLITS}
    # fine-tune on the first examples of the same permutation: they are exported too when the caps allow it
    tune_idx = perms["train"][:tcfg.max_train_examples or None]
    texts = {s: rows[s]["text"].to_list() for s in SPLITS}
    labels = {s: rows[s]["label"].to_numpy().astype(np.int64) for s in SPLITS}
    lap("load_data")

    with procs.main_first():  # downloads and the packaged model's conversion happen once
        model_dir = models.resolve_model_dir(tcfg.model, tcfg.revision)
        if tcfg.embedder != "teacher-input":
            models.resolve_embedder_dir(tcfg.embedder)
    models.set_offline(True)  # everything needed is local now
    torch.manual_seed(tcfg.seed)
    tok = models.load_tokenizer(model_dir)
    model = classifier.load_classifier(model_dir, len(class_names), tok, quantize=tcfg.quantize, seed=tcfg.seed,
                                       precision=tcfg.precision, device=procs.device)
    _cpu_threads(procs)
    model = classifier.add_lora(model, r=tcfg.lora_r, alpha=tcfg.lora_alpha, dropout=tcfg.lora_dropout,
                                quantize=tcfg.quantize, seed=tcfg.seed, gradient_checkpointing=gradient_checkpointing)
    n_trainable = classifier.trainable_params(model)
    log.info("%s: %s LoRA trainable parameters (r=%d) on %s", tcfg.model, f"{n_trainable:,}", tcfg.lora_r,
             ", ".join(classifier.lora_targets(model.config.model_type)))
    if procs.world > 1:
        log.info("%d processes (%s, %s): each runs 1/%d of every global batch of %d and exports 1/%d of the rows",
                 procs.world, procs.device.type, procs.accelerator.distributed_type.value, procs.world,
                 tcfg.batch_size, procs.world)
    ids = {s: train.tokenize(tok, [texts[s][i] for i in export_idx[s]], tcfg.max_length) for s in SPLITS}
    full_lengths = [len(x) for x in tok([texts["train"][i] for i in tune_idx])["input_ids"]]
    tune_ids = train.tokenize(tok, [texts["train"][i] for i in tune_idx], tcfg.max_length)
    lap("load_model")

    wdir = work_dir(tkey.short)
    procs.init_tracking("qdllm-teacher", {"teacher_key": tkey.short, "data_key": plan.data.key.short,
                                          "processes": procs.world, **asdict(tcfg)}, run_name=tkey.short)
    result = train.train(model, tune_ids, labels["train"][tune_idx], ids["val"], labels["val"][export_idx["val"]],
                         pad_id=tok.pad_token_id, lr=tcfg.lr, weight_decay=tcfg.weight_decay, epochs=tcfg.epochs,
                         batch_size=tcfg.batch_size, grad_accum=tcfg.grad_accum, seed=tcfg.seed, work_dir=wdir,
                         bf16=tcfg.precision == "bf16", procs=procs, **train_kwargs)
    lap("fine_tune")

    train.load_trainable_state(model, result.best_state)
    adapter_tmp = wdir / "adapter"
    export_precision = _export_precision(model, ids["test"], tok.pad_token_id, tcfg.precision, procs)
    if procs.is_main:
        shutil.rmtree(adapter_tmp, ignore_errors=True)
        classifier.save_adapter(model, adapter_tmp, tok, class_names,
                                classifier.base_model_record(tcfg.model, tcfg.revision, model_dir),
                                {"task": dcfg.task, "max_length": tcfg.max_length, "teacher_key": tkey.full,
                                 "export_precision": export_precision})
    if tcfg.quantize == "none":
        model = model.merge_and_unload()  # same outputs, no LoRA detour: faster export
    logits = {"val": result.val_logits}
    t_export = time.perf_counter()
    for s in ("train", "test"):
        logits[s] = train.predict_logits(model, ids[s], tok.pad_token_id, label=f"teacher logits {s}",
                                         bf16=tcfg.precision == "bf16", procs=procs)
    transfer_texts = load_transfer_texts(tcfg.transfer, exclude=[t for s in SPLITS for t in texts[s]])
    if transfer_texts:
        ids[TRANSFER] = train.tokenize(tok, transfer_texts, tcfg.max_length)
        logits[TRANSFER] = train.predict_logits(model, ids[TRANSFER], tok.pad_token_id, label="teacher logits transfer",
                                                bf16=tcfg.precision == "bf16", procs=procs)
    export_seconds = time.perf_counter() - t_export
    export_tokens = sum(len(x) for s in ("train", "test", TRANSFER) for x in ids.get(s, ()))
    lap("export_logits")

    all_texts = {s: [texts[s][i] for i in export_idx[s]] for s in SPLITS}
    if transfer_texts:
        all_texts[TRANSFER] = transfer_texts
    parts = list(all_texts)
    if tcfg.embedder == "teacher-input":  # a lookup in the input-embedding layer: the main process alone
        emb = {s: embed.teacher_input_embeddings(model, tok, all_texts[s], max_length=tcfg.max_length)
               for s in parts} if procs.is_main else None
        source = f"teacher-input ({tcfg.model}, input-embedding layer, mean over non-pad tokens)"
    else:
        del model
        flat = [x for s in parts for x in all_texts[s]]
        vectors = _sharded_embeddings(procs, tcfg.embedder, flat)
        cuts = np.cumsum([len(all_texts[s]) for s in parts])[:-1]
        emb = dict(zip(parts, np.split(vectors, cuts)))
        source = (f"{tcfg.embedder} (model2vec static token vectors, mean over tokens)" if tcfg.embedder.endswith("-static")
                  else f"{tcfg.embedder} (last hidden state, mean-pooled over tokens, max {embed.ENCODER_MAX_LENGTH} tokens)")
    lap("embeddings")
    if not procs.is_main:
        return  # the main process writes and publishes the cache

    splits = {}
    for s in SPLITS:
        sub = rows[s][export_idx[s].tolist()]
        splits[s] = TeacherSplit(ids=sub["id"].to_list(), texts=sub["text"].to_list(), labels=labels[s][export_idx[s]],
                                 logits=logits[s].astype(np.float32), probs=softmax(logits[s]).astype(np.float32),
                                 embeddings=emb[s].astype(np.float32))
    if transfer_texts:
        splits[TRANSFER] = TeacherSplit(ids=[text_id(t) for t in transfer_texts], texts=transfer_texts,
                                        labels=np.full(len(transfer_texts), UNLABELED, dtype=np.int64),
                                        logits=logits[TRANSFER].astype(np.float32),
                                        probs=softmax(logits[TRANSFER]).astype(np.float32),
                                        embeddings=emb[TRANSFER].astype(np.float32))
    n_classes = len(class_names)
    probe = probe_ceiling(splits["train"].embeddings, splits["train"].labels, splits["val"].embeddings,
                          splits["val"].labels, splits["test"].embeddings, splits["test"].labels, n_classes)
    lap("probe")
    metrics = {s: classification_metrics(labels[s][export_idx[s]], logits[s].argmax(1), n_classes)
               for s in ("val", "test")}
    extra = {
        "teacher_metrics": metrics,
        # a logistic regression on the cached embeddings alone: the teacher must beat it for distillation to help
        "probe_ceiling": probe,
        "lora_trainable_params": int(n_trainable),
        "model": tcfg.model,
        "embedder": tcfg.embedder,
        "profile": tcfg.profile,
        "precision": tcfg.precision,
        "export_precision": export_precision,  # what reproduces the logits from the adapter (its README shows how)
        "caps": {
            "epochs": tcfg.epochs, "max_length": tcfg.max_length, "max_train_examples": tcfg.max_train_examples,
            "max_export_examples": tcfg.max_export_examples, "fine_tune_examples": int(len(tune_idx)),
            "dataset_rows": {s: rows[s].height for s in SPLITS},
            "exported_rows": {s: int(len(export_idx[s])) for s in SPLITS},
            "truncated_fraction": round(float(np.mean(np.array(full_lengths) > tcfg.max_length)), 4)
            if full_lengths else 0.0,
        },
        "fine_tune": {"best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
                      "history": result.history, "optimizer_steps": result.steps,
                      "resumed_at_step": result.resumed_at_step, "tokens": result.tokens,
                      "train_seconds": result.train_seconds,
                      "tokens_per_second": round(result.tokens / max(result.train_seconds, 1e-9), 1),
                      "gradient_checkpointing": bool(gradient_checkpointing or tcfg.quantize != "none")},
        "export": {"tokens": int(export_tokens), "seconds": round(export_seconds, 3),
                   "tokens_per_second": round(export_tokens / max(export_seconds, 1e-9), 1),
                   "what": "teacher logits of the exported train and test rows (val's come from the fine-tune)"},
        "processes": {"count": procs.world, "device": procs.device.type,
                      "backend": procs.accelerator.state.backend if procs.world > 1 else None},
        "adapter": "adapter",  # peft format with tokenizer and labels.json: see its README.md
        "device": _device_name(procs),
        "data_key": plan.data.key.short,
    }
    procs.log({f"{s}/teacher_{k}": v for s in metrics for k, v in metrics[s].items() if isinstance(v, (int, float))},
              step=result.steps)
    staged = wdir / "publish"
    shutil.rmtree(staged, ignore_errors=True)
    timings["total_before_write"] = round(time.perf_counter() - t0, 2)
    extra["timings"] = timings
    write_teacher_cache(staged, splits, key=tkey.full, inputs=tkey.inputs, task=dcfg.task, class_names=class_names,
                        embedding_source=source, extra=extra)
    shutil.copytree(adapter_tmp, staged / "adapter")
    _fsync_tree(staged)
    if final.exists():  # an incomplete leftover without a manifest
        shutil.rmtree(final)
    os.rename(staged, final)
    shutil.rmtree(wdir, ignore_errors=True)
    log.info("teacher cache %s: val accuracy %.4f, test accuracy %.4f (probe ceiling on its embeddings: test %.4f), "
             "%.0f s", final, metrics["val"]["accuracy"], metrics["test"]["accuracy"], probe["test"]["accuracy"],
             time.perf_counter() - t0)

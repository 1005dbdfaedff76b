"""Stage one end to end: dataset → LoRA fine-tune → teacher logits + frozen embeddings → cache.

The cache directory appears only when complete (written by ``write_teacher_cache``,
the adapter added, then renamed into place); checkpoints live in
``cache/teacher/.work/<key>/`` so an interrupted run resumes.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import paths
from pipeline.cache import SPLITS, TeacherSplit, write_teacher_cache
from pipeline.errors import QdllmError
from pipeline.metrics import classification_metrics, softmax
from pipeline.probe import probe_ceiling
from pipeline.plan import Plan
from pipeline.publish import MANIFEST, _fsync_tree, is_complete, key_lock

log = logging.getLogger(__name__)


def work_dir(key: str) -> Path:
    return paths.cache_dir() / "teacher" / ".work" / key


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


def run_teacher(plan: Plan, **train_kwargs: Any) -> Path:
    """Build (or reuse) the teacher cache ``plan.teacher`` names from the dataset ``plan.data``; returns its directory."""
    dcfg, dkey, dpath = plan.data.config, plan.data.key, plan.data.dir
    tcfg, tkey, final = plan.teacher.config, plan.teacher.key, plan.teacher.dir
    if is_complete(final):
        log.info("teacher cache %s is already complete: nothing to do", final)
        return final
    if not (dpath / MANIFEST).is_file():
        raise QdllmError(f"The {dcfg.task} dataset ({dpath}) has not been built; run `qdllm data` with the same data "
                         f"options first (e.g. `make data TASK={dcfg.task}`).")
    from stages.lm.models import quiet_libraries
    from stages.teacher.model import check_quantize

    quiet_libraries()
    check_quantize(tcfg.quantize)
    with key_lock(final):
        if is_complete(final):
            log.info("teacher cache %s was finished by another run: nothing to do", final)
            return final
        _build(dcfg, tcfg, dkey.short, tkey, dpath, final, train_kwargs)
    return final


def _build(dcfg, tcfg, dkey: str, tkey, dpath: Path, final: Path, train_kwargs: dict) -> None:
    import torch

    from stages.data.dataset import load_dataset
    from stages.lm import embed, models
    from stages.teacher import model as classifier
    from stages.teacher import train

    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 2)
        t = now

    ds = load_dataset(dpath)
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

    model_dir = models.resolve_model_dir(tcfg.model, tcfg.revision)
    models.set_offline(True)  # everything needed is local now
    torch.manual_seed(tcfg.seed)
    tok = models.load_tokenizer(model_dir)
    model = classifier.load_classifier(model_dir, len(class_names), tok, quantize=tcfg.quantize, seed=tcfg.seed,
                                       precision=tcfg.precision)
    model = classifier.add_lora(model, r=tcfg.lora_r, alpha=tcfg.lora_alpha, dropout=tcfg.lora_dropout,
                            quantize=tcfg.quantize, seed=tcfg.seed)
    n_trainable = classifier.trainable_params(model)
    log.info("%s: %s LoRA trainable parameters (r=%d) on %s", tcfg.model, f"{n_trainable:,}", tcfg.lora_r,
             ", ".join(classifier.lora_targets(model.config.model_type)))
    ids = {s: train.tokenize(tok, [texts[s][i] for i in export_idx[s]], tcfg.max_length) for s in SPLITS}
    full_lengths = [len(x) for x in tok([texts["train"][i] for i in tune_idx])["input_ids"]]
    tune_ids = train.tokenize(tok, [texts["train"][i] for i in tune_idx], tcfg.max_length)
    lap("load_model")

    wdir = work_dir(tkey.short)
    result = train.train(model, tune_ids, labels["train"][tune_idx], ids["val"], labels["val"][export_idx["val"]],
                         pad_id=tok.pad_token_id, lr=tcfg.lr, weight_decay=tcfg.weight_decay, epochs=tcfg.epochs,
                         batch_size=tcfg.batch_size, grad_accum=tcfg.grad_accum, seed=tcfg.seed, work_dir=wdir,
                         bf16=tcfg.precision == "bf16",
                         **train_kwargs)
    lap("fine_tune")

    train.load_trainable_state(model, result.best_state)
    adapter_tmp = wdir / "adapter"
    shutil.rmtree(adapter_tmp, ignore_errors=True)
    classifier.save_adapter(model, adapter_tmp, tok, class_names,
                            classifier.base_model_record(tcfg.model, tcfg.revision, model_dir),
                            {"task": dcfg.task, "max_length": tcfg.max_length, "teacher_key": tkey.full})
    if tcfg.quantize == "none":
        model = model.merge_and_unload()  # same outputs, no LoRA detour: faster export
    logits = {"val": result.val_logits}
    for s in ("train", "test"):
        logits[s] = train.predict_logits(model, ids[s], tok.pad_token_id, label=f"teacher logits {s}",
                                         bf16=tcfg.precision == "bf16")
    lap("export_logits")

    all_texts = {s: [texts[s][i] for i in export_idx[s]] for s in SPLITS}
    if tcfg.embedder == "teacher-input":
        emb = {s: embed.teacher_input_embeddings(model, tok, all_texts[s], max_length=tcfg.max_length) for s in SPLITS}
        source = f"teacher-input ({tcfg.model}, input-embedding layer, mean over non-pad tokens)"
    else:
        del model
        flat = [x for s in SPLITS for x in all_texts[s]]
        vectors = embed.embed_texts(tcfg.embedder, flat, label=f"embeddings ({tcfg.embedder})")
        cuts = np.cumsum([len(all_texts[s]) for s in SPLITS])[:-1]
        emb = dict(zip(SPLITS, np.split(vectors, cuts)))
        source = (f"{tcfg.embedder} (model2vec static token vectors, mean over tokens)" if tcfg.embedder.endswith("-static")
                  else f"{tcfg.embedder} (last hidden state, mean-pooled over tokens, max {embed.ENCODER_MAX_LENGTH} tokens)")
    lap("embeddings")

    splits = {}
    for s in SPLITS:
        sub = rows[s][export_idx[s].tolist()]
        splits[s] = TeacherSplit(ids=sub["id"].to_list(), texts=sub["text"].to_list(), labels=labels[s][export_idx[s]],
                                 logits=logits[s].astype(np.float32), probs=softmax(logits[s]).astype(np.float32),
                                 embeddings=emb[s].astype(np.float32))
    n_classes = len(class_names)
    probe = probe_ceiling(splits["train"].embeddings, splits["train"].labels, splits["val"].embeddings,
                          splits["val"].labels, splits["test"].embeddings, splits["test"].labels, n_classes)
    lap("probe")
    extra = {
        "teacher_metrics": {s: classification_metrics(labels[s][export_idx[s]], logits[s].argmax(1), n_classes)
                            for s in ("val", "test")},
        # a logistic regression on the cached embeddings alone: the teacher must beat it for distillation to help
        "probe_ceiling": probe,
        "lora_trainable_params": int(n_trainable),
        "model": tcfg.model,
        "embedder": tcfg.embedder,
        "profile": tcfg.profile,
        "precision": tcfg.precision,
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
                      "resumed_at_step": result.resumed_at_step},
        "adapter": "adapter",  # peft format with tokenizer and labels.json: see its README.md
        "device": _device_name(),
        "data_key": dkey,
    }
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
    m = extra["teacher_metrics"]
    log.info("teacher cache %s: val accuracy %.4f, test accuracy %.4f (probe ceiling on its embeddings: test %.4f), "
             "%.0f s", final, m["val"]["accuracy"], m["test"]["accuracy"], probe["test"]["accuracy"],
             time.perf_counter() - t0)


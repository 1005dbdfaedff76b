"""One seed of a baseline: fine-tune a ``Classifier`` end to end with the Hugging Face ``Trainer``.

The ``Trainer`` runs the loop (AdamW, linear warm-up and decay, evaluation on the validation split after every epoch,
CUDA with bf16 autocast when present, else the CPU in fp32); ``DistillTrainer.compute_loss`` is the quantum student's
loss on the cached teacher logits (``losses.distill_loss``), plus for PKD beta times the patient term on the cached
teacher layers (``losses.patience_loss``); ``BestOnValidation`` keeps the weights of the epoch with
the best validation accuracy (ties: the lower validation loss, as the quantum student's trainer does), which is the
only checkpoint evaluated on test.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainingArguments

from pipeline.cache import TeacherSplit
from pipeline.errors import QdllmError
from pipeline.metrics import agreement, classification_metrics, expected_calibration_error, softmax
from stages.baselines.config import BaselineConfig
from stages.baselines.losses import distill_loss, patience_loss

log = logging.getLogger(__name__)


@dataclass
class SeedResult:
    seed: int
    best_epoch: int
    state: dict[str, torch.Tensor]  # the chosen epoch's weights (CPU)
    val: dict
    test: dict
    train_seconds_per_epoch: float
    train_seconds_total: float
    inference_us_per_example: float
    curves: dict = field(default_factory=dict)


class Examples(torch.utils.data.Dataset):
    """Tokenized texts with their labels (-1: unlabeled), raw teacher logits and (PKD) pooled teacher layers."""

    def __init__(self, tokenizer, texts: list[str], labels: np.ndarray, logits: np.ndarray, layers: np.ndarray | None,
                 max_length: int):
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.rows = [{"input_ids": ids, "attention_mask": mask, "labels": int(y), "teacher_logits": t.tolist()}
                     for ids, mask, y, t in zip(enc["input_ids"], enc["attention_mask"], labels, logits)]
        if layers is not None:
            for row, states in zip(self.rows, layers):
                row["teacher_layers"] = states  # (K, H) float32

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


class Collator:
    """Pads a batch to its longest text; labels and teacher logits become tensors."""

    def __init__(self, tokenizer):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, :len(r["attention_mask"])] = torch.tensor(r["attention_mask"])
        batch = {"input_ids": ids, "attention_mask": mask,
                 "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long),
                 "teacher_logits": torch.tensor([r["teacher_logits"] for r in rows], dtype=torch.float32)}
        if "teacher_layers" in rows[0]:
            batch["teacher_layers"] = torch.from_numpy(np.stack([r["teacher_layers"] for r in rows]).astype(np.float32))
        return batch


class DistillTrainer(Trainer):
    """The ``Trainer`` with the distillation loss: (1−α)·CE + α·(T²·KL + JS), the KL reversed for MiniLLM; for
    PKD plus β·(patient term) between the student's projected layer states and the cached teacher layers."""

    def __init__(self, *args, cfg: BaselineConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = cfg

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        patient = self.cfg.spec.layers
        if patient:
            logits, states = model.forward_with_states(input_ids=inputs["input_ids"],
                                                       attention_mask=inputs["attention_mask"])
        else:
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        loss = distill_loss(logits, inputs["labels"], inputs["teacher_logits"], alpha=self.cfg.alpha,
                            temperature=self.cfg.temperature, reverse=self.cfg.spec.kl == "reverse")
        if patient and self.cfg.beta > 0:
            loss = loss + self.cfg.beta * patience_loss(states, inputs["teacher_layers"])
        return (loss, {"logits": logits}) if return_outputs else loss


class BestOnValidation(TrainerCallback):
    """Times each epoch's training, records the curves, keeps a CPU copy of the best-validation weights, and moves
    the seed's progress bar (``bar``, a ``pipeline.console.progress``; None: no bar)."""

    def __init__(self, bar=None, label: str = ""):
        self.bar, self.label = bar, label
        self.task = None
        self.best: tuple[float, float] = (-1.0, math.inf)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0
        self.seconds: list[float] = []
        self.curves: dict[str, list] = {"epoch": [], "train_loss": [], "val_loss": [], "val_accuracy": []}
        self._t0 = 0.0

    def on_train_begin(self, args, state, control, **kw):
        if self.bar is not None:
            self.task = self.bar.add_task(self.label, total=state.max_steps)

    def on_step_end(self, args, state, control, **kw):
        if self.task is not None:
            self.bar.update(self.task, completed=state.global_step)

    def on_epoch_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kw):  # before the epoch's evaluation
        self.seconds.append(time.perf_counter() - self._t0)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
        epoch = len(self.seconds)
        acc, loss = float(metrics["eval_accuracy"]), float(metrics["eval_loss"])
        if not math.isfinite(loss):
            raise QdllmError(f"Training diverged: the validation loss became NaN or infinite in epoch {epoch}; this "
                             "run was not published; lower --lr.")
        losses = [h["loss"] for h in state.log_history if "loss" in h and "eval_loss" not in h]
        self.curves["epoch"].append(epoch)
        self.curves["train_loss"].append(float(losses[-1]) if losses else float("nan"))
        self.curves["val_loss"].append(loss)
        self.curves["val_accuracy"].append(acc)
        if (acc, -loss) > (self.best[0], -self.best[1]):
            self.best, self.best_epoch = (acc, loss), epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if self.task is not None:
            train_loss = self.curves["train_loss"][-1]
            self.bar.update(self.task, description=f"{self.label} epoch {epoch} loss {train_loss:.3f} val {acc:.3f}")
        log.debug("%s epoch %d: train loss %.4f, val loss %.4f, val accuracy %.4f", self.label, epoch,
                  self.curves["train_loss"][-1], loss, acc)


def _accuracy(pred) -> dict[str, float]:
    logits, labels = pred.predictions, pred.label_ids
    return {"accuracy": float((np.asarray(logits).argmax(-1) == labels).mean()) if len(labels) else 0.0}


def split_metrics(logits: np.ndarray, split: TeacherSplit, num_classes: int) -> dict:
    """Accuracy, precision, recall, F1, confusion, agreement with the teacher and ECE (the students' set)."""
    out = classification_metrics(split.labels, logits.argmax(1), num_classes)
    out["agreement"] = agreement(logits, split.logits)
    out["ece"] = expected_calibration_error(softmax(logits.astype(np.float64)), split.labels)
    return out


def training_rows(splits: dict[str, TeacherSplit], cfg: BaselineConfig) -> TeacherSplit:
    """The train split, plus the cache's unlabeled transfer rows (label -1) when asked."""
    train, extra = splits["train"], splits.get("transfer")
    if extra is None or not len(extra) or not cfg.transfer:
        return train
    layers = None if train.layers is None or extra.layers is None else np.concatenate([train.layers, extra.layers])
    return TeacherSplit(train.ids + extra.ids, train.texts + extra.texts, np.concatenate([train.labels, extra.labels]),
                        np.concatenate([train.logits, extra.logits]), np.concatenate([train.probs, extra.probs]),
                        np.concatenate([train.embeddings, extra.embeddings]), layers)


def train_seed(model, tokenizer, splits: dict[str, TeacherSplit], cfg: BaselineConfig, seed: int,
               num_classes: int, bar=None) -> SeedResult:
    """``cfg.epochs`` epochs of ``Trainer`` from ``model`` (whose head the caller initialised from ``seed``); the
    best-validation epoch is evaluated on test. ``bar``: a progress display to show the seed on."""
    from stages.lm.models import device_and_dtype

    device_and_dtype()  # on a CPU: torch's threads = the cores other processes leave idle (QDLLM_THREADS overrides)
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    train = Examples(tokenizer, *_columns(training_rows(splits, cfg)), cfg.max_length)
    val = Examples(tokenizer, *_columns(splits["val"]), cfg.max_length)
    test = Examples(tokenizer, *_columns(splits["test"]), cfg.max_length)
    best = BestOnValidation(bar, f"{cfg.method} seed {seed}")
    with tempfile.TemporaryDirectory(prefix="qdllm-baseline-") as scratch:  # the Trainer writes nothing we keep
        args = TrainingArguments(
            output_dir=scratch, learning_rate=cfg.lr, num_train_epochs=cfg.epochs, weight_decay=cfg.weight_decay,
            per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=max(cfg.batch_size, 64),
            warmup_steps=cfg.warmup, lr_scheduler_type="linear", optim="adamw_torch", seed=seed, data_seed=seed,
            eval_strategy="epoch", save_strategy="no", logging_strategy="epoch", report_to="none",
            disable_tqdm=True, remove_unused_columns=False, label_names=["labels"], use_cpu=not cuda, bf16=bf16,
            dataloader_num_workers=0)
        trainer = DistillTrainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                                 data_collator=Collator(tokenizer), compute_metrics=_accuracy, callbacks=[best],
                                 cfg=cfg)
        for quiet in (PrinterCallback, ProgressCallback):  # our own progress bar and log lines instead
            trainer.remove_callback(quiet)
        trainer.train()
        if best.best_state is None:
            raise QdllmError("The validation split gave no accuracy, so no checkpoint could be chosen; rebuild the "
                             "teacher cache with a validation split.")
        model.load_state_dict(best.best_state)
        val_logits = _predict(trainer, val)
        t0 = time.perf_counter()
        test_logits = _predict(trainer, test)
        seconds = time.perf_counter() - t0
    val_metrics = {k: v for k, v in split_metrics(val_logits, splits["val"], num_classes).items() if k != "confusion"}
    return SeedResult(seed, best.best_epoch, best.best_state, val_metrics,
                      split_metrics(test_logits, splits["test"], num_classes), float(np.mean(best.seconds)),
                      float(np.sum(best.seconds)), seconds / max(len(test), 1) * 1e6, best.curves)


def _columns(split: TeacherSplit):
    return split.texts, split.labels, split.logits, split.layers


def _predict(trainer: Trainer, data: Examples) -> np.ndarray:
    logits = trainer.predict(data).predictions
    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits, dtype=np.float32)
    if not np.isfinite(logits).all():
        raise QdllmError("Training diverged: the model's logits are NaN or infinite; this run was not published; "
                         "lower --lr.")
    return logits

"""The one training loop (quantum and classical students alike): Adam on mini-batches, the epoch
with the best validation accuracy (ties: lower validation loss) is kept; test is only evaluated
for that checkpoint."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from pipeline.config import StudentConfig
from pipeline.errors import QdllmError
from pipeline.metrics import agreement, classification_metrics, expected_calibration_error, softmax
from stages.student.device import device_training
from stages.student.losses import distill_loss
from stages.student.model import AdamParameters, FlatModel

INFERENCE_CHUNK = 256


@cache
def one_blas_thread() -> None:
    """Limit BLAS to one thread, once per process: the student's matrices are small, so BLAS
    threads cost more to wake than they save (about 1.5x slower on 2 cores); inference gets
    its parallelism from ``_inference_pool`` instead."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


@cache
def _inference_pool() -> ThreadPoolExecutor:
    """One long-lived pool, so each thread keeps its simulator workspace between calls."""
    threads = int(os.environ.get("QDLLM_INFER_THREADS", 0)) or len(os.sched_getaffinity(0))  # 1 in pool workers
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="qdllm-infer")


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray
    teacher_logits: np.ndarray


@dataclass
class SeedResult:
    seed: int
    best_epoch: int
    weights: np.ndarray
    val: dict
    test: dict
    train_seconds_per_epoch: float
    train_seconds_total: float
    inference_us_per_example: float
    curves: dict = field(default_factory=dict)


def predict_logits(model: FlatModel, flat: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Inference in chunks (no gradients, workspaces stay cache-sized), spread over every core:
    NumPy releases the GIL inside the large array operations."""
    one_blas_thread()
    starts = range(0, len(x), INFERENCE_CHUNK)
    chunk = lambda i: model.forward(flat, x[i:i + INFERENCE_CHUNK], grad=False)  # noqa: E731
    out = list(_inference_pool().map(chunk, starts)) if len(starts) > 1 else [chunk(i) for i in starts]
    return np.concatenate(out) if out else np.zeros((0, model.num_classes))


def evaluate(model, flat, split: Split, cfg, where: str = "in evaluation") -> tuple[float, dict]:
    """Loss and metrics on a split, with the agreement with the teacher and the expected calibration error;
    ``diverged`` when the logits or the loss are not finite."""
    with np.errstate(all="ignore"):
        logits = predict_logits(model, flat, split.x)
        loss, _ = distill_loss(logits, split.y, split.teacher_logits, cfg.loss, cfg.alpha, cfg.temperature)
    if len(logits) and not (np.isfinite(loss) and np.isfinite(logits).all()):  # an empty split has loss NaN
        raise diverged(cfg, where)
    metrics = classification_metrics(split.y, logits.argmax(1), model.num_classes)
    metrics["agreement"] = agreement(logits, split.teacher_logits)
    metrics["ece"] = expected_calibration_error(softmax(logits), split.y)
    return loss, metrics


def diverged(cfg, where: str) -> QdllmError:
    """The one sentence for a training whose loss or weights stopped being finite numbers."""
    return QdllmError(f"Training diverged: the {cfg.model} student's loss became NaN or infinite {where} "
                      f"(--lr {cfg.lr!r}, --temperature {cfg.temperature!r}) and this run was not published; lower "
                      f"--lr or raise --temperature (the defaults are {StudentConfig.lr!r} and "
                      f"{StudentConfig.temperature!r}).")


def learning_rates(cfg, steps: int) -> float | list[float]:
    """The learning rate of each of ``steps`` optimizer steps: ``cfg.lr`` throughout (``constant``), or a linear
    warm-up from 0 over the first ``cfg.warmup`` of the steps, then a cosine or linear decay to 0."""
    schedule = getattr(cfg, "schedule", "constant")
    if schedule == "constant":
        return float(cfg.lr)
    warm = int(round(getattr(cfg, "warmup", 0.0) * steps))
    out = []
    for i in range(steps):
        if i < warm:
            out.append(cfg.lr * (i + 1) / warm)
            continue
        frac = (i - warm) / max(steps - warm, 1)  # 0 at the first decay step, → 1 at the end
        out.append(cfg.lr * (0.5 * (1 + np.cos(np.pi * frac)) if schedule == "cosine" else 1 - frac))
    return out


def train_epoch(model, opt: AdamParameters, flat, data: Split, cfg, rng, on_batch=None, where: str = "in training",
                device=None):
    """One pass over shuffled mini-batches; returns new weights, mean loss, accuracy. Stops at the first batch
    whose loss, gradient or new weights are not finite (``diverged``; ``where`` says which epoch and seed).
    ``device``: a ``device.DeviceTraining`` that estimates the forward pass and gradients as a device would (shots,
    parameter-shift or SPSA, noise) in place of the model's exact ones."""
    one_blas_thread()
    net = device or model
    order = rng.permutation(len(data.y))
    losses, correct = [], 0
    decay = getattr(cfg, "weight_decay", 0.0) * model.decay_mask() if getattr(cfg, "weight_decay", 0.0) else None
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        with np.errstate(all="ignore"):  # overflow is reported below, in one sentence, not as NumPy warnings
            logits, cache = net.forward(flat, data.x[idx])
            loss, g = distill_loss(logits, data.y[idx], data.teacher_logits[idx], cfg.loss, cfg.alpha,
                                   cfg.temperature)
            if not (np.isfinite(loss) and np.isfinite(g).all()):
                raise diverged(cfg, where)
            grad = net.backward(cache, g)
            flat = opt.step(grad if decay is None else grad + decay * flat)  # L2 on the weight matrices
            if device is not None:
                flat = device.after_step(flat)  # plain SPSA steps of the circuit angles, when asked
        if not np.isfinite(flat).all():
            raise diverged(cfg, where)
        losses.append(loss * len(idx))
        correct += int((logits.argmax(1) == data.y[idx]).sum())  # unlabeled rows (-1) never count as correct
        if on_batch:
            on_batch(len(idx))
    return flat, float(np.sum(losses) / len(order)), correct / max(int((data.y >= 0).sum()), 1)


def training_rows(splits: dict[str, Split], cfg) -> Split:
    """The train split, plus the cache's unlabeled transfer rows (label -1) when the loss has distillation terms."""
    train, extra = splits["train"], splits.get("transfer")
    if extra is None or not len(extra.y) or not getattr(cfg, "transfer", True) or cfg.loss == "ce":
        return train
    return Split(np.concatenate([train.x, extra.x]), np.concatenate([train.y, extra.y]),
                 np.concatenate([train.teacher_logits, extra.teacher_logits]))


def train_seed(model: FlatModel, splits: dict[str, Split], cfg, seed: int, progress=None) -> SeedResult:
    """Fresh initialisation from ``seed``, ``cfg.epochs`` epochs, checkpoint chosen on validation."""
    rng = np.random.default_rng(seed)
    train_rows = training_rows(splits, cfg)
    flat = model.init(rng)
    steps = cfg.epochs * -(-len(train_rows.y) // cfg.batch_size)
    opt = AdamParameters(flat, learning_rates(cfg, steps))
    flat = opt.value()
    device = device_training(model, cfg, seed, steps)  # None: exact expectations, adjoint gradients
    curves = {"epoch": [], "train_loss": [], "val_loss": [], "train_accuracy": [], "val_accuracy": []}
    best = (-1.0, np.inf)
    best_flat, best_epoch, best_val = flat, 0, None
    seconds = []
    task = progress.add_task(f"seed {seed}", total=cfg.epochs) if progress else None
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        where = f"in epoch {epoch} of seed {seed}"
        flat, train_loss, train_acc = train_epoch(model, opt, flat, train_rows, cfg, rng, where=where, device=device)
        seconds.append(time.perf_counter() - t0)
        val_loss, val = evaluate(model, flat, splits["val"], cfg, where=f"on the validation split {where}")
        for k, v in (("epoch", epoch), ("train_loss", train_loss), ("val_loss", val_loss),
                     ("train_accuracy", train_acc), ("val_accuracy", val["accuracy"])):
            curves[k].append(v)
        if (val["accuracy"], -val_loss) > (best[0], -best[1]):
            best, best_flat, best_epoch, best_val = (val["accuracy"], val_loss), flat.copy(), epoch, val
        if progress:
            progress.update(task, advance=1, description=f"seed {seed} loss {train_loss:.3f} acc {train_acc:.3f} "
                                                          f"val {val['accuracy']:.3f}")
    _, test = evaluate(model, best_flat, splits["test"], cfg)
    val_metrics = {k: v for k, v in best_val.items() if k != "confusion"} if best_val else {}
    return SeedResult(seed, best_epoch, best_flat, val_metrics, test, float(np.mean(seconds)), float(np.sum(seconds)),
                      inference_us(model, best_flat, splits["test"].x), curves)


def inference_us(model, flat, x: np.ndarray, min_examples: int = 2048) -> float:
    """Microseconds per example of chunked inference (repeats the data up to ``min_examples``)."""
    if len(x) == 0:
        return 0.0
    reps = max(1, -(-min_examples // len(x)))
    xx = np.concatenate([x] * reps)
    predict_logits(model, flat, xx[:INFERENCE_CHUNK])  # warm the workspace
    t0 = time.perf_counter()
    predict_logits(model, flat, xx)
    return (time.perf_counter() - t0) / len(xx) * 1e6

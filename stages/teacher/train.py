"""Fine-tune the LoRA classifier: AdamW, length-bucketed batches, gradient accumulation, bf16 autocast where the
hardware computes it natively, resumable.

A checkpoint (trainable weights, optimizer, scheduler, RNG, best-so-far adapter) is
written at optimizer-step boundaries every few minutes and at each epoch's end, so an
interrupted run continues where it stopped. The adapter is chosen on validation accuracy.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import TextColumn

from pipeline.console import progress
from stages.lm.models import autocast

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def bucket_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, pool: int = 32) -> list[np.ndarray]:
    """Shuffle, sort by length within pools of ``pool`` batches, shuffle the batches: little padding, still random."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    for s in range(0, len(order), batch_size * pool):
        chunk = order[s:s + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(ids: list[list[int]], idx, pad_id: int, device):
    """Right-padded input ids and attention mask for the examples ``idx``."""
    import torch

    width = max(len(ids[i]) for i in idx)
    x = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        x[row, :len(ids[i])] = torch.tensor(ids[i])
        mask[row, :len(ids[i])] = 1
    return x.to(device), mask.to(device)


def predict_logits(model, ids: list[list[int]], pad_id: int, *, batch_size: int = 64, label: str = "predict",
                   bf16: bool = False) -> np.ndarray:
    """Raw class logits (N, C) float32 for tokenized texts, in input order."""
    import torch

    device = next(p for p in model.parameters()).device
    model.eval()
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(lengths, kind="stable")
    out = None
    start, tokens = time.perf_counter(), 0
    with progress(TextColumn("{task.fields[tps]:>6.0f} tok/s")) as bar, torch.inference_mode():
        task = bar.add_task(label, total=len(ids), tps=0.0)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            x, mask = collate(ids, idx, pad_id, device)
            with autocast(device, bf16):
                logits = model(input_ids=x, attention_mask=mask).logits.float().cpu().numpy()
            if out is None:
                out = np.zeros((len(ids), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
            tokens += int(mask.sum())
            bar.update(task, advance=len(idx), tps=tokens / max(time.perf_counter() - start, 1e-9))
    return out if out is not None else np.zeros((0, model.config.num_labels), dtype=np.float32)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean()) if len(labels) else 0.0


@dataclass
class TrainResult:
    best_state: dict
    best_epoch: int
    best_val_accuracy: float
    val_logits: np.ndarray
    history: list[dict] = field(default_factory=list)
    resumed_at_step: int = 0
    steps: int = 0


def _trainable_state(model) -> dict:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict) -> None:
    import torch

    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in state:
                p.copy_(state[n].to(p.device, p.dtype))


def _save(path: Path, obj: dict) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(model, train_ids: list[list[int]], train_labels: np.ndarray, val_ids: list[list[int]],
          val_labels: np.ndarray, *, pad_id: int, lr: float, weight_decay: float, epochs: int, batch_size: int,
          grad_accum: int, seed: int, work_dir: Path, bf16: bool = False, checkpoint_every_s: float = 120.0,
          checkpoint_every_steps: int | None = None, on_step=None) -> TrainResult:
    """Fine-tune the trainable (LoRA + head) parameters; returns the best-on-validation state."""
    import torch

    device = next(p for p in model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    n_batches = math.ceil(len(train_ids) / batch_size)
    steps_per_epoch = math.ceil(n_batches / grad_accum)
    total = max(1, steps_per_epoch * epochs)
    warmup = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    lengths = np.array([len(x) for x in train_ids])
    labels_t = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = work_dir / CHECKPOINT
    state = {"step": 0, "epoch": 0, "micro": 0, "history": [], "best": None}
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        load_trainable_state(model, ck["trainable"])
        opt.load_state_dict(ck["optim"])
        sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["rng"])
        state = {k: ck[k] for k in ("step", "epoch", "micro", "history", "best")}
        log.info("resuming the fine-tune at step %d of %d (epoch %d)", state["step"], total, state["epoch"] + 1)
    resumed_at = state["step"]

    def save(epoch: int, micro: int) -> None:
        _save(ckpt_path, {"trainable": _trainable_state(model), "optim": opt.state_dict(),
                          "sched": sched.state_dict(), "rng": torch.get_rng_state(), "step": state["step"],
                          "epoch": epoch, "micro": micro, "history": state["history"], "best": state["best"]})

    last_save = time.monotonic()
    start, tokens, ema = time.perf_counter(), 0, None
    columns = (TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:>5.0f} tok/s"))
    with progress(*columns) as bar:
        task = bar.add_task("fine-tune", total=total, completed=state["step"], loss=float("nan"), tps=0.0)
        for epoch in range(state["epoch"], epochs):
            model.train()
            batches = bucket_batches(lengths, batch_size, seed, epoch)
            first = state["micro"] if epoch == state["epoch"] else 0
            opt.zero_grad(set_to_none=True)
            for bi in range(first, len(batches)):
                idx = batches[bi]
                x, mask = collate(train_ids, idx, pad_id, device)
                with autocast(device, bf16):
                    out = model(input_ids=x, attention_mask=mask, labels=labels_t[idx].to(device))
                (out.loss / grad_accum).backward()
                tokens += int(mask.sum())
                loss = float(out.loss.detach())
                ema = loss if ema is None else 0.9 * ema + 0.1 * loss
                if (bi + 1) % grad_accum and bi + 1 < len(batches):
                    continue
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                state["step"] += 1
                bar.update(task, completed=state["step"], loss=ema,
                           tps=tokens / max(time.perf_counter() - start, 1e-9))
                due = (checkpoint_every_steps and state["step"] % checkpoint_every_steps == 0) or \
                    (not checkpoint_every_steps and time.monotonic() - last_save > checkpoint_every_s)
                if due and bi + 1 < len(batches):
                    save(epoch, bi + 1)
                    last_save = time.monotonic()
                if on_step is not None:
                    on_step(state["step"])
            val_logits = predict_logits(model, val_ids, pad_id, label=f"validate epoch {epoch + 1}", bf16=bf16)
            acc = accuracy(val_logits, val_labels)
            state["history"].append({"epoch": epoch + 1, "step": state["step"], "train_loss_ema": ema,
                                     "val_accuracy": acc})
            log.info("epoch %d: validation accuracy %.4f", epoch + 1, acc)
            if state["best"] is None or acc > state["best"]["val_accuracy"]:
                state["best"] = {"epoch": epoch + 1, "val_accuracy": acc, "state": _trainable_state(model),
                                 "val_logits": val_logits}
            save(epoch + 1, 0)
            last_save = time.monotonic()
    best = state["best"]
    return TrainResult(best_state=best["state"], best_epoch=best["epoch"], best_val_accuracy=best["val_accuracy"],
                       val_logits=best["val_logits"], history=state["history"], resumed_at_step=resumed_at,
                       steps=state["step"])

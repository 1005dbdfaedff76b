"""Fine-tune the LoRA classifier on Accelerate: AdamW, length-bucketed batches, gradient accumulation, bf16
autocast where the hardware computes it natively, resumable, data-parallel over the processes of
``accelerate launch`` / ``torchrun`` (DDP: NCCL on GPUs, gloo on CPUs).

Every process walks the same sequence of global batches (``bucket_batches``: a function of the seed and the epoch
only) and takes its strided share of each; the loss is the sum of the per-example cross-entropies scaled by
``processes / (global batch size × grad_accum)``, so after DDP averages the gradients every optimizer step sees the
mean over exactly the examples of that global batch, whatever the number of processes. A process whose share is
empty (a last batch smaller than the number of processes) runs one example with weight 0 to join the gradient
exchange. The dropout generator is reseeded from (seed, process, epoch, micro-batch) before every micro-batch, so
a resumed run draws the same masks as an uninterrupted one without saving generator states.

A checkpoint (trainable weights, optimizer, scheduler, best-so-far adapter; written by the main process only) is
written at optimizer-step boundaries every few minutes and at each epoch's end, so an interrupted run continues
where it stopped, with any number of processes. The adapter is chosen on validation accuracy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import TextColumn

from pipeline.console import progress
from pipeline.errors import QdllmError
from stages.lm.models import autocast

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
TRACKERS = ("tensorboard", "mlflow")
# How long a process waits in a collective: the other processes wait while the main one takes the key lock (another
# run of the same key may hold it) and writes the cache, which can take long for large datasets.
COLLECTIVE_TIMEOUT = timedelta(hours=12)
_DISTRIBUTED_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_processes() -> int:
    """How many processes the launcher started (``torchrun``, ``accelerate launch``, mpirun), from the environment.

    A process count with no rendezvous address is a stray variable, not a launch (the process would wait for peers
    that never come): refused in one sentence."""
    for name in _DISTRIBUTED_ENV:
        try:
            n = int(os.environ.get(name, "1"))
        except ValueError:
            continue
        if n > 1:
            if "MASTER_ADDR" not in os.environ:
                from pipeline.errors import QdllmError

                raise QdllmError(f"{name}={n} is set, but no launcher started this process (MASTER_ADDR is unset); "
                                 f"unset {name}, or start the teacher with `accelerate launch` or `torchrun`.")
            return n
    return 1


class Processes:
    """This process's place in the run, on Accelerate: one process, or one of N started by ``accelerate launch``
    or ``torchrun`` (then ``torch.distributed`` is initialised: NCCL between GPUs, gloo between CPU processes)."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes
        self.local_rank = accelerator.local_process_index
        self.device = accelerator.device
        self.is_main = accelerator.is_main_process
        self.tracking = bool(accelerator.log_with)

    @classmethod
    def start(cls, *, report_to: tuple[str, ...] = (), logging_dir: str | Path | None = None) -> "Processes":
        """The Accelerator of this run. Its mixed precision stays off: the teacher's ``precision`` setting (part of
        the key) decides the autocast, not ``accelerate launch --mixed_precision``. Without CUDA (or with
        ``accelerate launch --cpu``) the processes run on the CPU and talk through gloo."""
        import torch
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs, parse_flag_from_env

        trackers = [t for t in report_to if t != "none"]
        for t in trackers:
            if isinstance(t, str):
                check_tracker(t)
        mp = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
        if mp not in ("no", ""):
            log.warning("accelerate's mixed precision %r is not used: the teacher's --precision setting (part of the "
                        "cache key) decides the autocast", mp)
        cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
        acc = Accelerator(cpu=cpu, mixed_precision="no", log_with=trackers or None,
                          project_dir=str(logging_dir) if logging_dir else None,
                          kwargs_handlers=[InitProcessGroupKwargs(timeout=COLLECTIVE_TIMEOUT)])
        return cls(acc)

    # -- collectives (no-ops in one process)

    def gather(self, obj: Any) -> list:
        """``obj`` of every process, in process order (picklable objects)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any = None) -> Any:
        """The main process's ``obj``, on every process."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    def main_first(self):
        """Main process first, then the others (downloads and conversions happen once)."""
        return self.accelerator.main_process_first()

    # -- the model

    def wrap(self, model):
        """DDP around ``model`` when there are several processes (gradients averaged in the backward pass)."""
        return self.accelerator.prepare_model(model) if self.world > 1 else model

    def no_sync(self, model, skip: bool):
        """Accumulate gradients locally (no exchange) for micro-batches that do not end an optimizer step."""
        return self.accelerator.no_sync(model) if skip and self.world > 1 else contextlib.nullcontext()

    # -- tracking (main process only; nothing when report_to is none)

    def init_tracking(self, project: str, config: dict, run_name: str) -> None:
        if not self.tracking:
            return
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
        self.accelerator.init_trackers(project, config=hparams,
                                       init_kwargs={"mlflow": {"run_name": run_name}})

    def log(self, values: dict, step: int) -> None:
        if self.tracking:
            self.accelerator.log(values, step=step)

    def end(self) -> None:
        if self.tracking:
            self.accelerator.end_training()


def check_tracker(name: str) -> None:
    """One sentence when a tracker is unknown or its package is missing (accelerate would silently skip it)."""
    from accelerate.utils import is_mlflow_available, is_tensorboard_available

    if name not in TRACKERS:
        raise QdllmError(f"Unknown --report-to {name!r}: use none, tensorboard, mlflow or tensorboard,mlflow.")
    available = {"tensorboard": is_tensorboard_available, "mlflow": is_mlflow_available}[name]()
    if not available:
        raise QdllmError(f"--report-to {name} needs the {name} package, which is not installed; "
                         f"install it (pip install {name}) or use --report-to none.")


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


def shard(order: np.ndarray, procs: Processes | None) -> np.ndarray:
    """This process's strided share of ``order``: neighbours in a length-sorted order go to different processes, so
    every process gets about the same number of tokens."""
    return order if procs is None or procs.world == 1 else order[procs.rank::procs.world]


def predict_logits(model, ids: list[list[int]], pad_id: int, *, batch_size: int = 64, label: str = "predict",
                   bf16: bool = False, procs: Processes | None = None) -> np.ndarray:
    """Raw class logits (N, C) float32 for tokenized texts, in input order, on every process (``predict``)."""
    return predict(model, ids, pad_id, batch_size=batch_size, label=label, bf16=bf16, procs=procs)[0]


def export_layer_indices(num_layers: int, count: int) -> tuple[int, ...]:
    """Which hidden states ``--export-layers`` exports: ``count`` layers evenly spaced strictly inside a model of
    ``num_layers`` layers, round(j·L/(K+1)) for j = 1..K (PKD-Skip's choice: with L = 12 and K = 5 the outputs of
    layers 2, 4, 6, 8, 10; the last layer is left to the logits). Index l is ``hidden_states[l]``, the output of
    decoder layer l (0 would be the input embeddings). Distinct for K <= L - 1; one sentence otherwise."""
    if count >= num_layers:
        raise QdllmError(f"--export-layers {count} asks for more layers than this teacher has inside it: it has "
                         f"{num_layers} layers, so give --export-layers {max(num_layers - 1, 0)} or fewer.")
    return tuple(int(math.floor(j * num_layers / (count + 1) + 0.5)) for j in range(1, count + 1))


def predict(model, ids: list[list[int]], pad_id: int, *, layers: tuple[int, ...] = (), batch_size: int = 64,
            label: str = "predict", bf16: bool = False, procs: Processes | None = None
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw class logits (N, C) float32 for tokenized texts, in input order, on every process; with ``layers``
    (indices into the model's ``hidden_states``, ``export_layer_indices``) also those hidden states, each the mean
    over the text's non-padding tokens, (N, K, H) float32 — from the same forward pass (else None).

    The rows are sorted by length; with several processes each computes its strided share and the shares are
    gathered. ``model`` is the plain (unwrapped) model."""
    import torch

    device = next(p for p in model.parameters()).device
    model.eval()
    lengths = np.array([len(x) for x in ids])
    mine = shard(np.argsort(lengths, kind="stable"), procs)
    num_labels = model.config.num_labels
    local = np.zeros((len(mine), num_labels), dtype=np.float32)
    pooled: np.ndarray | None = None
    start, tokens = time.perf_counter(), 0
    where = f" (process {procs.rank + 1}/{procs.world})" if procs is not None and procs.world > 1 else ""
    with progress(TextColumn("{task.fields[tps]:>6.0f} tok/s")) as bar, torch.inference_mode():
        task = bar.add_task(label + where, total=len(mine), tps=0.0)
        for s in range(0, len(mine), batch_size):
            idx = mine[s:s + batch_size]
            x, mask = collate(ids, idx, pad_id, device)
            with autocast(device, bf16):
                out = model(input_ids=x, attention_mask=mask, **({"output_hidden_states": True} if layers else {}))
            local[s:s + len(idx)] = out.logits.float().cpu().numpy()
            if layers:
                m = mask.unsqueeze(-1).float()
                mean = torch.stack([(out.hidden_states[i].float() * m).sum(1) / m.sum(1).clamp(min=1.0)
                                    for i in layers], 1)
                if pooled is None:
                    pooled = np.zeros((len(mine), len(layers), mean.shape[-1]), dtype=np.float32)
                pooled[s:s + len(idx)] = mean.cpu().numpy()
            del out
            tokens += int(mask.sum())
            bar.update(task, advance=len(idx), tps=tokens / max(time.perf_counter() - start, 1e-9))
    parts = procs.gather((mine, local, pooled)) if procs is not None else [(mine, local, pooled)]
    out_logits = np.zeros((len(ids), num_labels), dtype=np.float32)
    out_layers = None
    for rows, logits, states in parts:
        out_logits[rows] = logits
        if states is not None:
            if out_layers is None:
                out_layers = np.zeros((len(ids), *states.shape[1:]), dtype=np.float32)
            out_layers[rows] = states
    if layers and out_layers is None:  # no rows at all
        out_layers = np.zeros((len(ids), len(layers), int(model.config.get_text_config().hidden_size)), np.float32)
    return out_logits, out_layers


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
    tokens: int = 0  # non-pad tokens of the fine-tune batches run by this invocation (all processes)
    train_seconds: float = 0.0  # wall time of those batches (validation passes excluded)


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

    from pipeline.publish import atomic_file

    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def _dropout_seed(seed: int, rank: int, epoch: int, micro: int) -> int:
    return int(np.random.SeedSequence([seed, rank, epoch, micro]).generate_state(1)[0])


def train(model, train_ids: list[list[int]], train_labels: np.ndarray, val_ids: list[list[int]],
          val_labels: np.ndarray, *, pad_id: int, lr: float, weight_decay: float, epochs: int, batch_size: int,
          grad_accum: int, seed: int, work_dir: Path, bf16: bool = False, checkpoint_every_s: float = 120.0,
          checkpoint_every_steps: int | None = None, on_step=None, procs: Processes | None = None) -> TrainResult:
    """Fine-tune the trainable (LoRA + head) parameters; returns the best-on-validation state (on every process).

    ``batch_size`` is the global batch: with N processes each runs about batch_size / N examples of it."""
    ft = _FineTune(model, train_ids, train_labels, procs or Processes.start(), lr=lr, weight_decay=weight_decay,
                   epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, seed=seed, pad_id=pad_id, bf16=bf16,
                   checkpoint_every_s=checkpoint_every_s, checkpoint_every_steps=checkpoint_every_steps,
                   on_step=on_step)
    resumed_at = ft.resume(Path(work_dir) / CHECKPOINT)
    columns = (TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:>5.0f} tok/s"))
    with progress(*columns) as bar:
        world = ft.procs.world
        task = bar.add_task("fine-tune" + (f" ({world} processes)" if world > 1 else ""), total=ft.total,
                            completed=ft.state["step"], loss=float("nan"), tps=0.0)
        for epoch in range(ft.state["epoch"], epochs):
            ft.run_epoch(epoch, lambda: bar.update(task, completed=ft.state["step"], loss=ft.state["ema"],
                                                   tps=ft.tokens / max(ft.elapsed(), 1e-9)))
            ft.validate(epoch, val_ids, val_labels)
    best = ft.state["best"]
    return TrainResult(best_state=best["state"], best_epoch=best["epoch"], best_val_accuracy=best["val_accuracy"],
                       val_logits=best["val_logits"], history=ft.state["history"], resumed_at_step=resumed_at,
                       steps=ft.state["step"], tokens=ft.tokens, train_seconds=round(ft.train_seconds, 3))


def _load_checkpoint(path: Path) -> dict | None:
    """A resumable checkpoint, read with ``weights_only=True``: tensors, numbers, strings and containers only, so a
    planted file runs no code. One that does not load (corrupt, truncated, or holding other objects) is set aside
    beside itself with a warning, and the fine-tune starts again from its first step."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ck, dict) or not {"trainable", "optim", "sched"} <= set(ck):
            raise ValueError("not a fine-tune checkpoint")
        return ck
    except Exception as e:  # noqa: BLE001 - any failure to load means: do not trust it, start over
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        os.replace(path, aside)
        log.warning("the checkpoint %s could not be loaded safely (%s); it was set aside as %s and the fine-tune "
                    "starts from the beginning", path, str(e).splitlines()[0][:200] if str(e) else type(e).__name__,
                    aside.name)
        return None


class _FineTune:
    """The fine-tune's state and its steps: resume from a checkpoint, one epoch of optimizer steps, validation."""

    def __init__(self, model, train_ids, train_labels, procs: Processes, *, lr, weight_decay, epochs, batch_size,
                 grad_accum, seed, pad_id, bf16, checkpoint_every_s, checkpoint_every_steps, on_step):
        import torch

        self.model, self.train_ids, self.procs = model, train_ids, procs
        self.batch_size, self.grad_accum, self.seed, self.pad_id, self.bf16 = batch_size, grad_accum, seed, pad_id, bf16
        self.checkpoint_every_s, self.checkpoint_every_steps, self.on_step = (checkpoint_every_s,
                                                                              checkpoint_every_steps, on_step)
        self.device = next(p for p in model.parameters()).device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(math.ceil(len(train_ids) / batch_size) / grad_accum)
        self.total = total = max(1, steps_per_epoch * epochs)
        warmup = max(1, int(0.06 * total))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
        self.lengths = np.array([len(x) for x in train_ids])
        self.labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
        self.state = {"step": 0, "epoch": 0, "micro": 0, "history": [], "best": None, "ema": None}
        self.tokens, self.train_seconds, self.epoch_start = 0, 0.0, time.perf_counter()
        self.ckpt_path: Path | None = None
        self.ddp = None

    def elapsed(self) -> float:
        """Seconds spent in fine-tune batches so far (validation passes excluded)."""
        return self.train_seconds + time.perf_counter() - self.epoch_start

    def resume(self, ckpt_path: Path) -> int:
        """Load the checkpoint of an interrupted run (read by the main process, sent to the others); the step it
        resumes at."""
        import torch

        self.ckpt_path, procs = ckpt_path, self.procs
        ck = None
        if procs.is_main:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            if ckpt_path.is_file():
                ck = _load_checkpoint(ckpt_path)
        ck = procs.broadcast(ck)  # the other processes never read the cache directory
        if ck is not None:
            load_trainable_state(self.model, ck["trainable"])
            self.opt.load_state_dict(ck["optim"])
            self.sched.load_state_dict(ck["sched"])
            self.state = {k: ck.get(k) for k in self.state}
            if self.state["best"] is not None:  # saved as a tensor (weights_only loads no NumPy arrays)
                self.state["best"]["val_logits"] = self.state["best"]["val_logits"].numpy()
            log.info("resuming the fine-tune at step %d of %d (epoch %d)", self.state["step"], self.total,
                     self.state["epoch"] + 1)
            del ck
        self.ddp = procs.wrap(self.model)
        self.last_save = time.monotonic()
        return self.state["step"]

    def save(self, epoch: int, micro: int) -> None:
        if self.procs.is_main:  # the weights, optimizer and scheduler are the same in every process
            import torch

            st = self.state
            best = st["best"] and {**st["best"], "val_logits": torch.from_numpy(np.asarray(st["best"]["val_logits"]))}
            _save(self.ckpt_path, {"trainable": _trainable_state(self.model), "optim": self.opt.state_dict(),
                                   "sched": self.sched.state_dict(), "step": st["step"], "epoch": epoch,
                                   "micro": micro, "history": st["history"], "best": best, "ema": st["ema"]})
        self.last_save = time.monotonic()

    def run_epoch(self, epoch: int, on_progress) -> None:
        """The epoch's global batches from where it stopped: micro-batches accumulated into optimizer steps."""
        import torch

        self.model.train()
        batches = bucket_batches(self.lengths, self.batch_size, self.seed, epoch)
        first = self.state["micro"] if epoch == self.state["epoch"] else 0
        self.opt.zero_grad(set_to_none=True)
        loss_sum, loss_n = 0.0, 0
        self.epoch_start = time.perf_counter()
        for bi in range(first, len(batches)):
            ce, n = self._micro_batch(epoch, bi, batches)
            loss_sum, loss_n = loss_sum + ce, loss_n + n
            self.tokens += int(self.lengths[batches[bi]].sum())
            if (bi + 1) % self.grad_accum and bi + 1 < len(batches):
                continue
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            self._after_step(epoch, (bi + 1) / len(batches), *self.procs.sum([loss_sum, loss_n]))
            loss_sum, loss_n = 0.0, 0
            on_progress()
            due = (self.checkpoint_every_steps and self.state["step"] % self.checkpoint_every_steps == 0) or \
                (not self.checkpoint_every_steps and time.monotonic() - self.last_save > self.checkpoint_every_s)
            if due and bi + 1 < len(batches):
                self.save(epoch, bi + 1)
            if self.on_step is not None:
                self.on_step(self.state["step"])
        self.train_seconds += time.perf_counter() - self.epoch_start
        self.epoch_start = time.perf_counter()

    def _micro_batch(self, epoch: int, bi: int, batches: list[np.ndarray]) -> tuple[float, int]:
        """Forward and backward of this process's share of one global batch; its summed CE and example count."""
        import torch
        import torch.nn.functional as F

        idx, procs = batches[bi], self.procs
        mine = shard(idx, procs)
        weight = procs.world / (len(idx) * self.grad_accum)
        if len(mine) == 0:  # fewer examples than processes: join the gradient exchange with nothing
            mine, weight = idx[:1], 0.0
        ends_step = not ((bi + 1) % self.grad_accum and bi + 1 < len(batches))
        torch.manual_seed(_dropout_seed(self.seed, procs.rank, epoch, bi))
        x, mask = collate(self.train_ids, mine, self.pad_id, self.device)
        with procs.no_sync(self.ddp, skip=not ends_step):
            with autocast(self.device, self.bf16):
                logits = self.ddp(input_ids=x, attention_mask=mask).logits
            ce = F.cross_entropy(logits.float(), self.labels[mine].to(self.device), reduction="sum")
            (ce * weight).backward()
        return (float(ce.detach()), len(mine)) if weight else (0.0, 0)

    def _after_step(self, epoch: int, fraction: float, total_loss: float, total_n: float) -> None:
        """Count the optimizer step, smooth the loss over processes and log it."""
        st = self.state
        st["step"] += 1
        loss = total_loss / max(total_n, 1)
        st["ema"] = loss if st["ema"] is None else 0.9 * st["ema"] + 0.1 * loss
        tps = self.tokens / max(self.elapsed(), 1e-9)
        self.procs.log({"train/loss": loss, "train/loss_ema": st["ema"],
                        "train/learning_rate": self.sched.get_last_lr()[0], "train/epoch": epoch + fraction,
                        "train/tokens_per_second": tps}, step=st["step"])

    def validate(self, epoch: int, val_ids: list[list[int]], val_labels: np.ndarray) -> None:
        """Validation accuracy after the epoch; keep the best state; checkpoint the finished epoch."""
        st = self.state
        val_logits = predict_logits(self.model, val_ids, self.pad_id, label=f"validate epoch {epoch + 1}",
                                    bf16=self.bf16, procs=self.procs)
        acc = float(accuracy(val_logits, val_labels))
        st["history"].append({"epoch": epoch + 1, "step": st["step"], "train_loss_ema": st["ema"],
                              "val_accuracy": acc})
        self.procs.log({"val/accuracy": acc}, step=st["step"])
        log.info("epoch %d: validation accuracy %.4f", epoch + 1, acc)
        if st["best"] is None or acc > st["best"]["val_accuracy"]:
            st["best"] = {"epoch": epoch + 1, "val_accuracy": acc, "state": _trainable_state(self.model),
                          "val_logits": val_logits}
        self.save(epoch + 1, 0)

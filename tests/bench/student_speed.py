"""One training epoch of the quantum student on 6,000 cached examples (D=384, n=11, L=2, C=2).

(a) the MindQuantum tutorial way: ``MQLayer`` over ``Simulator('mqvector').get_expectation_with_grad``
    inside a MindSpore Cell (Dense → MQLayer → Dense), same loss, MindSpore's Adam, one
    ``value_and_grad`` step per batch (MindSpore 2.10 under NumPy 2 fails the first op that checks for a NumPy
    scalar: (a) meets that failure on a throwaway op first, ``take_mindspore_numpy_failure``);
(b) the project's trainer: ``stages.student.train.train_epoch`` (fused simulator + MindSpore Adam).

Batch 8 and 64, 3 repeats, medians; (a) is timed on its first ``--a-batches`` batches and
scaled to the epoch (it takes about a minute per epoch). Prints the speed-ups and inference
examples/s of the trainer's no-gradient path. Run: ``.venv/bin/python tests/bench/student_speed.py``.
To compare NumPy builds side by side, run it under each interpreter (``--trainer-only`` skips (a)); the first
line names NumPy, the BLAS and the kernel it runs.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import write_synthetic_cache

from pipeline.cache import read_teacher_cache
from pipeline.config import StudentConfig
from stages.student.model import MINDSPORE_ENV, AdamParameters, QuantumStudent
from stages.student.run import load_splits
from stages.student.train import INFERENCE_CHUNK, predict_logits, train_epoch

D, N_QUBITS, LAYERS, C, N_TRAIN = 384, 11, 2, 2, 6000


@functools.cache
def take_mindspore_numpy_failure() -> bool:
    """Meet MindSpore 2.10's one NumPy failure on a throwaway op, so that the tutorial loop never does.

    MindSpore 2.10's extension imports NumPy's 1.x C API the first time an op's argument parser asks "is this a
    NumPy scalar?". Under NumPy 2 that import fails, MindSpore logs "Numpy init failed" and leaves the ImportError
    set, so that op raises ``SystemError: ... returned a result with an exception set`` (in the tutorial loss it
    was ``y.view(-1, 1)``; ``reshape``, ``tensor - 1.0`` or ``ops.mul(tensor, 2.0)`` fail the same way when they
    come first; a few, like ``tensor + tensor``, clear the error and go on). The outcome is remembered: every
    later op works, but NumPy scalars (``np.float32``, ``np.int64``) are refused as op arguments for the rest of
    the process (TypeError): pass Python numbers. True when the failure happened here (False once MindSpore or
    NumPy no longer fail, or when it already happened in this process)."""
    for k, v in MINDSPORE_ENV.items():  # as AdamParameters does, before MindSpore's runtime starts
        os.environ.setdefault(k, v)
    import mindspore as ms

    sys.stderr.flush()
    saved = os.dup(2)  # NumPy prints its "compiled using NumPy 1.x" traceback on the way: keep it out of the output
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                ms.Tensor(np.zeros(1, dtype=np.float32)) - 1.0
            except SystemError:
                return True
            finally:
                sys.stderr.flush()
        return False
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tutorial_training(n_qubits: int = N_QUBITS, layers: int = LAYERS, dim: int = D, classes: int = C,
                      lr: float = 0.06, alpha: float = 0.9):
    """(a)'s model and step: Dense → MQLayer → Dense in a MindSpore Cell, the kl+js+ce loss (T = 1) in MindSpore
    ops, ``value_and_grad`` over the optimizer's parameters, MindSpore's Adam. Returns ``(net, opt, step)``;
    ``step(x, y, t)`` takes float32 features, int32 labels of shape (B, 1) and float32 teacher logits as Tensors
    and returns ``(loss, grads)``."""
    import mindspore as ms
    from mindquantum.framework import MQLayer
    from mindquantum.simulator import Simulator
    from mindspore import nn, ops

    from stages.student.circuit import build_circuit, observables, to_mindquantum

    take_mindspore_numpy_failure()
    spec = build_circuit("paper", n_qubits, layers)
    circ = to_mindquantum(spec)
    grad_ops = Simulator("mqvector", n_qubits).get_expectation_with_grad(observables(n_qubits), circ)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.enc = nn.Dense(dim, n_qubits)
            self.q = MQLayer(grad_ops)
            self.head = nn.Dense(n_qubits, classes)

        def construct(self, x):
            return self.head(self.q(self.enc(x)))

    net = Net()
    opt = nn.Adam(net.trainable_params(), learning_rate=lr)

    def loss_fn(x, y, t):
        logits = net(x)
        logp = ops.log_softmax(logits, -1)
        p = ops.exp(logp)
        ce = -ops.gather_elements(logp, 1, y).mean()  # y is (B, 1) already: no Tensor.view / reshape here
        logq = ops.log_softmax(t, -1)
        q = ops.exp(logq)
        kl = (q * (logq - logp)).sum(-1).mean()
        m = 0.5 * (p + q)
        js = 0.5 * ((q * (logq - ops.log(m))).sum(-1) + (p * (logp - ops.log(m))).sum(-1)).mean()
        return (1 - alpha) * ce + alpha * (kl + js)

    return net, opt, ms.value_and_grad(loss_fn, None, opt.parameters)


def tutorial_batch(x: np.ndarray, y: np.ndarray, t: np.ndarray):
    """One batch as (a)'s step takes it; labels become a (B, 1) column in NumPy, not with ``Tensor.view``."""
    import mindspore as ms

    return (ms.Tensor(np.asarray(x, dtype=np.float32)), ms.Tensor(np.asarray(y, dtype=np.int32).reshape(-1, 1)),
            ms.Tensor(np.asarray(t, dtype=np.float32)))


def tutorial_epoch_seconds(data, batch: int, max_batches: int) -> float:
    """(a): seconds for one epoch, measured on ``max_batches`` batches and scaled."""
    _, opt, step = tutorial_training()
    x, y, t = data.x.astype(np.float32), data.y.astype(np.int32)[:, None], data.teacher_logits.astype(np.float32)
    n = len(x)
    n_batches = min(max_batches, -(-n // batch))

    def run(i):
        sl = slice(i * batch, (i + 1) * batch)
        _, grads = step(*tutorial_batch(x[sl], y[sl], t[sl]))  # converted above: only the Tensors are made here
        opt(grads)

    for i in range(n_batches, n_batches + 2):  # warm-up (first-call compilation) is not timed
        run(i)
    t0 = time.perf_counter()
    for i in range(n_batches):
        run(i)
    return (time.perf_counter() - t0) / n_batches * (-(-n // batch))


def trainer_epoch_seconds(data, batch: int) -> float:
    """(b): the real training loop for one epoch."""
    cfg = StudentConfig(batch_size=batch)
    model = QuantumStudent(D, C, "paper", N_QUBITS, LAYERS)
    rng = np.random.default_rng(0)
    opt = AdamParameters(model.init(rng), cfg.lr)
    flat = opt.value()
    t0 = time.perf_counter()
    train_epoch(model, opt, flat, data, cfg, rng)
    return time.perf_counter() - t0


def inference_per_second(data, repeats: int) -> float:
    model = QuantumStudent(D, C, "paper", N_QUBITS, LAYERS)
    flat = model.init(np.random.default_rng(0))
    predict_logits(model, flat, data.x[:INFERENCE_CHUNK])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_logits(model, flat, data.x)
        times.append(time.perf_counter() - t0)
    return len(data.x) / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trainer-only", action="store_true", help="skip (a), the MindQuantum tutorial way")
    ap.add_argument("--a-batches", type=int, default=60, help="batches of (a) to time (then scaled to the epoch)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["QDLLM_HASH_MEMO"] = str(Path(tmp) / "memo.json")
        path = write_synthetic_cache(Path(tmp) / "teacher" / "bench", n=N_TRAIN * 5 // 3, num_classes=C, dim=D)
        data = load_splits(read_teacher_cache(path))["train"]
    assert len(data.y) == N_TRAIN, len(data.y)
    from pipeline.blas import describe, warn_if_generic

    print(describe())
    warn_if_generic()
    print(f"one epoch, {N_TRAIN} examples, D={D} n={N_QUBITS} L={LAYERS} C={C}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    if not args.trainer_only:
        failed = take_mindspore_numpy_failure()  # first: it sets MindSpore's environment before importing it
        import mindspore as ms

        print(f"(a) on mindspore {ms.__version__} + numpy {np.__version__}: "
              + ("its NumPy-scalar check failed once (SystemError, NumPy 1.x C API under NumPy 2), taken on a "
                 "throwaway op before timing" if failed else "its NumPy-scalar check did not fail"))
    for batch in (8, 64):
        b = [trainer_epoch_seconds(data, batch) for _ in range(args.repeats)]
        mb = statistics.median(b)
        runs = f"[(b) runs: {', '.join(f'{x:.2f}' for x in b)}]"
        if args.trainer_only:
            print(f"batch {batch:>2}: (b) trainer {mb:6.2f} s/epoch   {runs}")
            continue
        ma = statistics.median([tutorial_epoch_seconds(data, batch, args.a_batches) for _ in range(args.repeats)])
        print(f"batch {batch:>2}: (a) MindQuantum tutorial {ma:7.2f} s/epoch (from {args.a_batches} batches)   "
              f"(b) trainer {mb:6.2f} s/epoch   speed-up {ma / mb:5.1f}x   {runs}")
    print(f"inference (no gradients, chunks of {INFERENCE_CHUNK}): {inference_per_second(data, args.repeats):,.0f} examples/s")


if __name__ == "__main__":
    main()

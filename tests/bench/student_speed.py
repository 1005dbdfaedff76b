"""One training epoch of the quantum student on 6,000 cached examples (D=384, n=11, L=2, C=2).

(a) the MindQuantum tutorial way: ``MQLayer`` over ``Simulator('mqvector').get_expectation_with_grad``
    inside a MindSpore Cell (Dense → MQLayer → Dense), same loss, MindSpore's Adam, one
    ``value_and_grad`` step per batch;
(b) the project's trainer: ``stages.student.train.train_epoch`` (fused simulator + MindSpore Adam).

Batch 8 and 64, 3 repeats, medians; (a) is timed on its first ``--a-batches`` batches and
scaled to the epoch (it takes about a minute per epoch). Prints the speed-ups and inference
examples/s of the trainer's no-gradient path. Run: ``.venv/bin/python tests/bench/student_speed.py``.
To compare NumPy builds side by side, run it under each interpreter (``--trainer-only`` skips (a)); the first
line names NumPy, the BLAS and the kernel it runs.
"""

from __future__ import annotations

import argparse
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
from stages.student.model import AdamParameters, QuantumStudent
from stages.student.run import load_splits
from stages.student.train import INFERENCE_CHUNK, predict_logits, train_epoch

D, N_QUBITS, LAYERS, C, N_TRAIN = 384, 11, 2, 2, 6000


def tutorial_epoch_seconds(data, batch: int, max_batches: int) -> float:
    """(a): seconds for one epoch, measured on ``max_batches`` batches and scaled."""
    import mindspore as ms
    from mindquantum.framework import MQLayer
    from mindquantum.simulator import Simulator
    from mindspore import nn, ops

    from stages.student.circuit import build_circuit, observables, to_mindquantum

    spec = build_circuit("paper", N_QUBITS, LAYERS)
    circ = to_mindquantum(spec)
    grad_ops = Simulator("mqvector", N_QUBITS).get_expectation_with_grad(observables(N_QUBITS), circ)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.enc = nn.Dense(D, N_QUBITS)
            self.q = MQLayer(grad_ops)
            self.head = nn.Dense(N_QUBITS, C)

        def construct(self, x):
            return self.head(self.q(self.enc(x)))

    net = Net()
    opt = nn.Adam(net.trainable_params(), learning_rate=0.06)
    alpha = 0.9

    def loss_fn(x, y, t):
        logits = net(x)
        logp = ops.log_softmax(logits, -1)
        p = ops.exp(logp)
        ce = -ops.gather_elements(logp, 1, y.view(-1, 1)).mean()
        logq = ops.log_softmax(t, -1)
        q = ops.exp(logq)
        kl = (q * (logq - logp)).sum(-1).mean()
        m = 0.5 * (p + q)
        js = 0.5 * ((q * (logq - ops.log(m))).sum(-1) + (p * (logp - ops.log(m))).sum(-1)).mean()
        return (1 - alpha) * ce + alpha * (kl + js)

    step = ms.value_and_grad(loss_fn, None, opt.parameters)
    x = data.x.astype(np.float32)
    t = data.teacher_logits.astype(np.float32)
    n_batches = min(max_batches, -(-len(x) // batch))
    for i in range(n_batches, n_batches + 2):  # warm-up (first-call compilation) is not timed
        sl = slice(i * batch, (i + 1) * batch)
        opt(step(ms.Tensor(x[sl]), ms.Tensor(data.y[sl].astype(np.int32)), ms.Tensor(t[sl]))[1])
    t0 = time.perf_counter()
    for i in range(n_batches):
        sl = slice(i * batch, (i + 1) * batch)
        _, grads = step(ms.Tensor(x[sl]), ms.Tensor(data.y[sl].astype(np.int32)), ms.Tensor(t[sl]))
        opt(grads)
    return (time.perf_counter() - t0) / n_batches * (-(-len(x) // batch))


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

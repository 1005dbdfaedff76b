"""Teacher arithmetic on this CPU: fp32 against bf16 autocast, side by side in one run.

What ``--precision`` changes, measured on the stage's own code: the packaged SmolLM2-135M classifier with
LoRA r=200 (``load_classifier`` + ``add_lora``), real emotion texts (generated ones when no dataset is built),
48 tokens. For each precision: fine-tune steps (forward, backward, AdamW) on batches of ``--batch`` texts and
export forward passes on batches of ``--export-batch`` texts, under the stage's ``autocast``; medians of
``--repeats``, non-pad tokens/s, plus a fp32/bf16 matmul at the model's width. Prints whether this CPU computes bf16 natively
(AMX / AVX512-BF16: what ``--precision auto`` checks) and the ratio bf16/fp32. Where bf16 is emulated (an
AVX2-only CPU) one step takes minutes, so the defaults are small.

Run: ``.venv/bin/python tests/bench/precision_speed.py [--steps 1] [--repeats 2] [--batch 4] [--export-batch 16]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import bench_texts

from pipeline.blas import describe


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=1, help="fine-tune steps per repeat")
    ap.add_argument("--batch", type=int, default=4, help="fine-tune batch")
    ap.add_argument("--export-batch", type=int, default=16, help="texts per export forward pass (one per repeat)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=48)
    args = ap.parse_args()

    import torch

    from pipeline.config import native_bf16
    from stages.lm import models
    from stages.teacher import model as classifier
    from stages.teacher import train

    print(describe())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; native bf16: {native_bf16()}; "
          f"load average {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} usable CPUs")
    model_dir = models.resolve_model_dir(args.model)
    models.set_offline(True)
    tok = models.load_tokenizer(model_dir)
    model = classifier.load_classifier(model_dir, 2, tok, precision="fp32")
    model = classifier.add_lora(model, r=200, alpha=400, dropout=0.0)
    device = next(model.parameters()).device
    width = model.config.hidden_size
    pool = bench_texts(max(args.batch * args.steps, args.export_batch))
    ids = train.tokenize(tok, pool, args.max_length)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    labels = torch.zeros(args.batch, dtype=torch.long)

    def steps(bf16: bool):
        def run():
            model.train()
            for s in range(args.steps):
                idx = range(s * args.batch, (s + 1) * args.batch)
                x, mask = train.collate(ids, idx, tok.pad_token_id, device)
                with models.autocast(device, bf16):
                    loss = torch.nn.functional.cross_entropy(model(input_ids=x, attention_mask=mask).logits.float(),
                                                             labels)
                loss.backward()
                opt.step()
                opt.zero_grad()
        return run

    def export(bf16: bool):
        def run():
            model.eval()
            with torch.inference_mode(), models.autocast(device, bf16):
                x, mask = train.collate(ids, range(args.export_batch), tok.pad_token_id, device)
                model(input_ids=x, attention_mask=mask)
        return run

    tune_tokens = sum(len(ids[i]) for i in range(args.batch * args.steps))
    export_tokens = sum(len(ids[i]) for i in range(args.export_batch))
    a = torch.randn(width * 2, width)
    b = torch.randn(width, width * 4)
    flop = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    rows = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        ma, mb = (a, b) if not bf16 else (a.bfloat16(), b.bfloat16())
        mm = timed(lambda ma=ma, mb=mb: [ma @ mb for _ in range(5)], args.repeats) / 5
        x, mask = train.collate(ids, range(1), tok.pad_token_id, device)
        with torch.inference_mode(), models.autocast(device, bf16):  # warm up: allocations, autocast caches
            model(input_ids=x, attention_mask=mask)
        t = timed(steps(bf16), args.repeats)
        e = timed(export(bf16), args.repeats)
        rows[name] = (flop / mm / 1e9, tune_tokens / t, export_tokens / e)
        print(f"{name}: matmul {rows[name][0]:8.1f} GFLOP/s   fine-tune {rows[name][1]:8.1f} tokens/s   "
              f"export {rows[name][2]:8.1f} tokens/s", flush=True)
    ratio = [rows["bf16"][i] / rows["fp32"][i] for i in range(3)]
    print(f"bf16 / fp32: matmul {ratio[0]:.3f}x   fine-tune {ratio[1]:.3f}x   export {ratio[2]:.3f}x   "
          f"(--precision auto picks {'bf16' if native_bf16() else 'fp32'} here)")


if __name__ == "__main__":
    main()

"""The emotion teacher's val/test accuracy in fp32 and with bf16 arithmetic, side by side in one run, on a CPU
without bf16 units.

``--precision bf16`` is a bf16 autocast around the teacher's matmuls. A CPU with AMX / AVX512-BF16 (or a GPU)
computes those matmuls natively: bf16 operands, products accumulated in fp32, a bf16 result. An AVX2-only CPU has
no such units and torch falls back to scalar code 25-60x slower than fp32 (``precision_speed.py``), so a real bf16
fine-tune of the emotion default would take hours there. This benchmark measures what bf16 does to accuracy
anyway, by computing the same numbers at fp32 speed: inside the stage's real bf16 autocast, every call autocast
runs in bf16 (``linear``, ``matmul``, ``mm``, ``bmm``, ``addmm``, ``baddbmm``, ``scaled_dot_product_attention``)
gets its floating operands rounded to bf16, runs in fp32 and returns its result rounded to bf16 (``Bf16Matmuls``).
Everything else, including the regions the model itself runs with autocast off (rotary angles), is untouched
autocast. Gradients are rounded to bf16 at the same casts, as in a real bf16 backward pass. What differs from
bf16 hardware is only the order of the fp32 sums.

1. ``check``: on ``--check-texts`` validation texts and the stage's model (packaged SmolLM2-135M, LoRA r=200, one
   AdamW step first so the adapter is not zero), one forward and backward pass under torch's real (slow) bf16
   autocast, the emulation and fp32. Every linear layer of the real pass is recomputed by the emulation from the
   real pass's own inputs: at least 99 % of the outputs must be bit-identical and none more than one bf16 ulp
   apart (a different fp32 summation order flips a rounding now and then; outputs under 2^-10 of their call's
   largest, sums that cancelled, are left out of the ulp count). End to end those flips spread like
   any rounding noise, so there the test is statistical: the emulation must lie as far from fp32 as real bf16
   does (a ratio between 0.5 and 2 for the logits and the gradients). The run stops otherwise.
2. ``fp32`` and ``bf16``: the emotion default's fine-tune (the ``cpu`` profile: 2,400 texts, one epoch, 48 tokens,
   batch 16, validation-chosen adapter) and the test split's logits, with the stage's own ``train.train`` and
   ``train.predict_logits`` on the built dataset (``make data`` first), in this process, same seed and threads.
   The train split's export and the embeddings are skipped: they do not enter the teacher's accuracy.

Prints val/test accuracy and tokens/s of each, the difference bf16 - fp32, and the agreement of their test
predictions. Takes about 25 minutes on 2 cores. Run: ``.venv/bin/python tests/bench/bf16_accuracy.py
[--check-texts 16] [--only check,fp32,bf16]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pipeline.blas import describe

BF16_CALLS = {"linear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "baddbmm",
              "scaled_dot_product_attention"}


def bf16_matmuls():
    """A torch function mode: under an enabled CPU autocast, the calls autocast would run in bf16 are computed
    in fp32 on bf16-rounded operands and return a bf16-rounded result."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_map

    def rounded(t):
        return t.to(torch.bfloat16).float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    class Bf16Matmuls(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if getattr(func, "__name__", "") not in BF16_CALLS or not torch.is_autocast_enabled("cpu"):
                return func(*args, **kwargs)
            with torch.autocast("cpu", enabled=False):
                out = func(*tree_map(rounded, args), **tree_map(rounded, kwargs))
            return out.to(torch.bfloat16)

    return Bf16Matmuls()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="check,fp32,bf16")
    ap.add_argument("--check-texts", type=int, default=16)
    args = ap.parse_args()
    parts = set(args.only.split(","))

    import torch

    from pipeline.config import DataConfig, TeacherConfig, native_bf16
    from pipeline.plan import resolve
    from stages.data.dataset import load_dataset
    from stages.lm import models
    from stages.teacher import model as classifier
    from stages.teacher import train

    tcfg = TeacherConfig(profile="cpu", precision="fp32")
    plan = resolve(data=DataConfig(), teacher=tcfg)
    if not (plan.data.dir / "train.parquet").exists():
        sys.exit(f"The emotion dataset is not built at {plan.data.dir}; run `make data` first.")
    models.device_and_dtype("fp32")  # the stage's thread choice
    print(describe())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; native bf16: {native_bf16()}; "
          f"load average {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} usable CPUs", flush=True)

    ds = load_dataset(plan.data.dir)
    rng = np.random.default_rng(tcfg.seed)  # the stage's own row choice (run.py): one permutation per split
    perms = {s: rng.permutation(ds.splits[s].height) for s in ("train", "val", "test")}
    texts = {s: ds.splits[s]["text"].to_list() for s in perms}
    labels = {s: ds.splits[s]["label"].to_numpy().astype(np.int64) for s in perms}
    val_idx, test_idx = np.sort(perms["val"]), np.sort(perms["test"])
    tune_idx = perms["train"][:tcfg.max_train_examples or None]
    model_dir = models.resolve_model_dir(tcfg.model, tcfg.revision)
    tok = models.load_tokenizer(model_dir)
    ids = {"val": train.tokenize(tok, [texts["val"][i] for i in val_idx], tcfg.max_length),
           "test": train.tokenize(tok, [texts["test"][i] for i in test_idx], tcfg.max_length),
           "tune": train.tokenize(tok, [texts["train"][i] for i in tune_idx], tcfg.max_length)}

    def fresh_model():
        torch.manual_seed(tcfg.seed)
        m = classifier.load_classifier(model_dir, len(ds.class_names), tok, seed=tcfg.seed, precision="fp32")
        return classifier.add_lora(m, r=tcfg.lora_r, alpha=tcfg.lora_alpha, dropout=tcfg.lora_dropout,
                                   seed=tcfg.seed)

    if "check" in parts:
        check(fresh_model(), ids["val"][:args.check_texts], labels["val"][val_idx][:args.check_texts],
              tok.pad_token_id)

    results = {}
    for name in ("fp32", "bf16"):
        if name not in parts:
            continue
        model = fresh_model()
        mode = bf16_matmuls() if name == "bf16" else None
        with tempfile.TemporaryDirectory() as work, (mode or nullcontext()):
            t0 = time.perf_counter()
            res = train.train(model, ids["tune"], labels["train"][tune_idx], ids["val"], labels["val"][val_idx],
                              pad_id=tok.pad_token_id, lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                              epochs=tcfg.epochs, batch_size=tcfg.batch_size, grad_accum=tcfg.grad_accum,
                              seed=tcfg.seed, work_dir=Path(work), bf16=name == "bf16")
            tune_s = time.perf_counter() - t0
            train.load_trainable_state(model, res.best_state)
            model = model.merge_and_unload()
            t0 = time.perf_counter()
            test_logits = train.predict_logits(model, ids["test"], tok.pad_token_id, label=f"{name} test logits",
                                               bf16=name == "bf16")
            test_s = time.perf_counter() - t0
        test_tokens = sum(len(x) for x in ids["test"])
        results[name] = {"val": res.best_val_accuracy, "pred": test_logits.argmax(1),
                         "test": train.accuracy(test_logits, labels["test"][test_idx])}
        print(f"{name}: val {100 * results[name]['val']:.2f} %, test {100 * results[name]['test']:.2f} %; "
              f"fine-tune + validation {tune_s:.0f} s, test logits {test_tokens / test_s:.0f} tok/s", flush=True)
    if len(results) == 2:
        a, b = results["fp32"], results["bf16"]
        print(f"bf16 - fp32: val {100 * (b['val'] - a['val']):+.2f} points, test {100 * (b['test'] - a['test']):+.2f}"
              f" points; same test prediction on {100 * float((a['pred'] == b['pred']).mean()):.1f} % of rows")


def check(model, val_ids, val_labels, pad_id) -> None:
    """The emulation against torch's real bf16 autocast on one batch: every linear layer on the real run's own
    inputs (rounding of single ops), then logits and gradients end to end (rounding noise through 30 layers)."""
    import torch
    import torch.nn.functional as F

    from stages.teacher import train

    params = [p for p in model.parameters() if p.requires_grad]
    x, mask = train.collate(val_ids, np.arange(len(val_ids)), pad_id, torch.device("cpu"))
    y = torch.as_tensor(val_labels)
    opt = torch.optim.AdamW(params, lr=2e-4)  # one fp32 step so the LoRA B matrices are not zero
    F.cross_entropy(model(input_ids=x, attention_mask=mask).logits, y).backward()
    opt.step()
    model.eval()  # no dropout: every run sees the same network
    captured = []

    def run(name: str):
        for p in params:
            p.grad = None
        hooks = [m.register_forward_hook(lambda mod, inp, out: captured.append((mod, inp[0].detach(), out.detach())))
                 for m in model.modules() if isinstance(m, torch.nn.Linear)] if name == "real bf16" else []
        t0 = time.perf_counter()
        with (bf16_matmuls() if name == "emulated" else nullcontext()), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=name != "fp32"):
            logits = model(input_ids=x, attention_mask=mask).logits
        F.cross_entropy(logits.float(), y).backward()
        for h in hooks:
            h.remove()
        print(f"  {name:<9} forward + backward {time.perf_counter() - t0:6.1f} s", flush=True)
        return logits.detach().double(), torch.cat([p.grad.flatten() for p in params]).double()

    print(f"check on {len(val_ids)} validation texts (logits, and gradients of "
          f"{sum(p.numel() for p in params):,} trainable parameters):", flush=True)
    out = {name: run(name) for name in ("real bf16", "emulated", "fp32")}

    same = total = 0
    worst = 0.0
    with torch.no_grad(), bf16_matmuls(), torch.autocast("cpu", dtype=torch.bfloat16):
        for mod, inp, real in captured:
            emu = mod(inp).float()
            real = real.float()
            size = torch.maximum(emu.abs(), real.abs())
            ulp = torch.exp2(torch.floor(torch.log2(size.clamp_min(1e-30))) - 7)  # bf16 spacing at that size
            kept = size >= size.max() * 2 ** -10  # not a sum that cancelled to almost nothing
            same += int((emu == real).sum())
            total += real.numel()
            worst = max(worst, float(((emu - real).abs() / ulp)[kept].max()))
    print(f"  every linear layer ({len(captured)} calls, {total:,} outputs) on the real run's inputs: "
          f"{100 * same / total:.3f} % bit-identical, largest difference {worst:.0f} bf16 ulp (outputs above 2^-10 of "
          "their call's largest)")

    rel = lambda a, b: float((a - b).norm() / b.norm())
    pairs = [("real bf16", "fp32"), ("emulated", "fp32"), ("emulated", "real bf16")]
    for a, b in pairs:
        (la, ga), (lb, gb) = out[a], out[b]
        print(f"  {a:<9} vs {b:<9}: largest logit difference {float((la - lb).abs().max()):.2e}, gradient "
              f"relative difference {rel(ga, gb):.2e}, same class {100 * float((la.argmax(1) == lb.argmax(1)).double().mean()):.0f} %")
    noise = [rel(out["emulated"][i], out["fp32"][i]) / rel(out["real bf16"][i], out["fp32"][i]) for i in (0, 1)]
    print(f"  distance from fp32, emulated / real bf16: logits {noise[0]:.2f}, gradients {noise[1]:.2f}", flush=True)
    if same / total < 0.99 or worst > 1 or not all(0.5 <= r <= 2 for r in noise):
        sys.exit("The emulation does not reproduce this CPU's bf16 autocast; its accuracy would mean nothing.")


if __name__ == "__main__":
    main()

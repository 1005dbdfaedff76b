"""What a transfer set adds to the quantum student: the same teacher cache with and without unlabeled rows.

Takes one complete teacher cache and a set of unlabeled texts (``--transfer FILE``; default: the data stage's
surplus for the cache's task, i.e. the source's reviews that balancing left out of every split), has the cache's
own teacher (its base model plus the saved adapter, merged, as the stage exports) label them and the cache's own
embedder embed them, and writes the cache plus a ``transfer`` split into a scratch directory. The teacher's logits
of the cached test rows are recomputed first and compared with the cache (the largest difference is printed),
so the transfer logits are the ones ``qdllm teacher --transfer`` would write.

Then trains the default quantum student (n=11, L=2, every seed) from that cache three ways: KL+JS+CE with the
transfer rows in the distillation terms, KL+JS+CE without them (``--no-transfer-rows``: the cache as it was),
and plain CE (which never uses them); prints test accuracy mean ± std, the agreement with the teacher and the
gains paired over seeds.

Run: ``.venv/bin/python tests/bench/transfer_gain.py --teacher-key KEY [--transfer FILE] [--seeds 0,1,2,3,4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import train_student

from pipeline.blas import describe


def surplus_texts(task: str, exclude: list[str]) -> list[str]:
    """Texts of the task's packaged source that no split holds (what balancing removed), cleaned as the data stage does."""
    from pipeline.config import DataConfig
    from stages.data.build import clean
    from stages.data.sources import load_source

    rows, _ = clean(load_source(DataConfig(task=task)))
    held = set(exclude)
    return [t for t, _, _ in rows if t not in held]


def teacher_logits(src: Path, manifest: dict, texts: list[str]) -> np.ndarray:
    from peft import PeftModel

    from stages.lm import models
    from stages.teacher import model as classifier
    from stages.teacher import train

    cfg = manifest["inputs"]["config"]
    model_dir = models.resolve_model_dir(cfg["model"], cfg.get("revision", "main"))
    models.set_offline(True)
    tok = models.load_tokenizer(model_dir)
    base = classifier.load_classifier(model_dir, len(manifest["class_names"]), tok, precision=cfg["precision"])
    model = PeftModel.from_pretrained(base, str(src / "adapter")).merge_and_unload().eval()
    return train.predict_logits(model, train.tokenize(tok, texts, cfg["max_length"]), tok.pad_token_id,
                                label="teacher logits", bf16=cfg["precision"] == "bf16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher-key", required=True)
    ap.add_argument("--transfer", help="unlabeled texts (.txt, CSV/TSV/JSONL/Parquet with a text column)")
    ap.add_argument("--seeds", default=None, help="student seeds (default: the student's own)")
    args = ap.parse_args()

    from pipeline.cache import (
        TRANSFER,
        UNLABELED,
        TeacherSplit,
        read_teacher_cache,
        text_id,
        write_teacher_cache,
    )
    from pipeline.manifests import teacher_manifest
    from pipeline.metrics import softmax
    from pipeline.paths import cache_dir
    from stages.lm.embed import load_encoder
    from stages.teacher.run import load_transfer_texts

    print(describe())
    print(f"load average {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} usable CPUs")
    src = cache_dir() / "teacher" / args.teacher_key
    manifest = json.loads((src / "manifest.json").read_text())
    cache = read_teacher_cache(src)
    held = [t for s in cache.splits.values() for t in s.texts]
    texts = load_transfer_texts(args.transfer, held) if args.transfer else surplus_texts(manifest["task"], held)
    print(f"{len(texts)} transfer texts ({args.transfer or 'the data stage surplus of ' + manifest['task']}); cache "
          f"{args.teacher_key}: {', '.join(f'{s} {len(v)}' for s, v in cache.splits.items())}", flush=True)

    test = cache.splits["test"]
    check = teacher_logits(src, manifest, test.texts[:256])
    print(f"teacher logits recomputed on 256 cached test rows: largest difference {np.abs(check - test.logits[:256]).max():.2e}")
    t0 = time.perf_counter()
    logits = teacher_logits(src, manifest, texts)
    emb = load_encoder(teacher_manifest(src).embedder_name)(texts)
    print(f"labelled and embedded in {time.perf_counter() - t0:.0f} s; teacher's classes on them: "
          f"{np.bincount(logits.argmax(1), minlength=len(manifest['class_names'])).tolist()}", flush=True)

    splits = dict(cache.splits)
    splits[TRANSFER] = TeacherSplit(ids=[text_id(t) for t in texts], texts=texts,
                                    labels=np.full(len(texts), UNLABELED, dtype=np.int64),
                                    logits=logits.astype(np.float32), probs=softmax(logits).astype(np.float32),
                                    embeddings=emb.astype(np.float32))
    extra = {k: v for k, v in manifest.items() if k in ("teacher_metrics", "probe_ceiling", "model", "embedder")}
    seeds = ["--seeds", args.seeds] if args.seeds else []
    with tempfile.TemporaryDirectory() as tmp:
        write_teacher_cache(Path(tmp) / "teacher" / "with-transfer", splits, key="with-transfer",
                            inputs={"from": args.teacher_key, "transfer": len(texts)}, task=manifest["task"],
                            class_names=manifest["class_names"], embedding_source=manifest["embedding_source"],
                            extra=extra)
        results = {}
        for name, flags in (("KL+JS+CE with transfer rows", ()), ("KL+JS+CE without", ("--no-transfer-rows",)),
                            ("CE", ("--loss", "ce"))):
            t0 = time.perf_counter()
            m = train_student(Path(tmp), "with-transfer", *flags, *seeds)
            results[name] = np.array([s["test"]["accuracy"] for s in m["seeds"]])
            t = m["summary"]["test"]
            print(f"{name:<28} test {100 * t['accuracy']['mean']:.2f} ± {100 * t['accuracy']['std']:.2f} %   "
                  f"agreement {100 * t['agreement']['mean']:.1f} %   ({time.perf_counter() - t0:.0f} s)", flush=True)
    with_t, without, ce = results.values()
    for label, a, b in (("transfer rows (with − without)", with_t, without), ("distillation, no transfer", without, ce),
                        ("distillation with transfer", with_t, ce)):
        d = 100 * (a - b)
        print(f"gain {label:<32} {d.mean():+.2f} ± {d.std(ddof=1) if len(d) > 1 else 0:.2f} points (paired over seeds)")


if __name__ == "__main__":
    main()

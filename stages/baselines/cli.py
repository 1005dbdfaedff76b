"""``qdllm baselines``: the transformer compression baselines, trained from teacher caches only.

Only light modules at top level: torch and transformers load when a run trains, after every setting, method name and
teacher key has been checked.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated, Optional

import typer

from pipeline.errors import QdllmError
from pipeline.settings import with_settings
from stages.baselines.config import METHOD_NAMES, METHODS, BaselineConfig

log = logging.getLogger(__name__)

app = typer.Typer(help="Transformer compression baselines (TinyBERT-, DistilBERT-, MiniLLM-, PKD-style) distilled from "
                       "a teacher cache.", invoke_without_command=True)

Methods = Annotated[Optional[list[str]], typer.Option(
    "--method", "-m", help="Baselines to train, repeatable or comma-separated: " + ", ".join(
        f"{m.name} ({m.summary.format(k='K').split(':', 1)[1].strip()})" for m in METHODS.values())
    + ". Default: all of them (pkd only on the caches that have teacher layers, qdllm teacher --export-layers).")]


def parse_methods(values: list[str] | None) -> tuple[str, ...]:
    """The methods named by ``--method`` (repeated or comma-separated), each once, in the order given; () when none
    is named (then every method each cache supports)."""
    names = [n.strip() for v in (values or []) for n in v.split(",") if n.strip()]
    if values and not names:
        raise QdllmError(f"--method is empty; give one or more of {', '.join(METHOD_NAMES)}.")
    return tuple(dict.fromkeys(names))


@app.callback()
@with_settings(baseline=BaselineConfig, exclude=("--method",))
def baselines(
    baseline,
    method: Methods = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Only teacher caches of this task.")] = None,
    teacher_key: Annotated[Optional[str], typer.Option("--teacher-key", help="Only this teacher cache.")] = None,
) -> None:
    """Fine-tune each baseline end to end on every teacher cache present (or one task / key): a transformer encoder
    and a linear head, the quantum student's loss on the cached teacher logits, the checkpoint chosen on validation,
    one run per seed; complete runs are skipped."""
    named = parse_methods(method)
    configs = [dataclasses.replace(baseline, method=m) for m in named or METHOD_NAMES]  # unknown names stop here
    from stages.baselines.run import has_layers, require_layers, run_baseline, teacher_dirs

    caches = teacher_dirs(task, teacher_key)
    plan = []
    for cache in caches:
        for cfg in configs:
            if cfg.spec.layers and not named and not has_layers(cache):
                log.info("teacher cache %s has no teacher layers (`qdllm teacher --export-layers K` builds a cache "
                         "with them): no %s run on it", cache.name, cfg.method)
                continue
            if cfg.spec.layers:
                require_layers(cache, cfg.method)  # a method asked for by name: refused before any run trains
            plan.append((cache, cfg))
    trained = 0
    for cache, cfg in plan:
        path, new = run_baseline(cache, cfg)
        trained += new
        print(path)
    log.info("%d baseline run(s) trained, %d already complete", trained, len(plan) - trained)

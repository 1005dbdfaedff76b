"""``qdllm teacher``: fine-tune the LoRA teacher and write its cache; ``qdllm teacher params`` counts LoRA parameters.

Only light imports at the top: torch and transformers load inside the commands.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from pipeline import options as o

app = typer.Typer(help="Stage one: LoRA fine-tune an LLM teacher and write the teacher-logit cache.",
                  invoke_without_command=True)


@app.callback()
def teacher(
    ctx: typer.Context,
    task: o.Task = "emotion",
    source: o.Source = "",
    seed: o.Seed = 0,
    max_per_class: o.MaxPerClass = 0,
    model: o.Model = "smollm2-135m",
    revision: o.Revision = "main",
    quantize: o.Quantize = "none",
    embedder: o.Embedder = "minilm",
    profile: o.Profile = "auto",
    lora_r: o.LoraR = None,
    teacher_epochs: o.TeacherEpochs = None,
    max_train_examples: o.MaxTrain = None,
    max_length: o.MaxLength = None,
    remote: Optional[str] = typer.Option(None, "--remote", help="Pull this teacher cache from a remote that holds it instead of computing it."),
) -> None:
    """Fine-tune the teacher (LoRA r=200 classifier) and write cache/teacher/<key>/; does nothing when it exists."""
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.plan import teacher_path

    dcfg = o.data_config(task, source, seed, max_per_class)
    tcfg = o.teacher_config(model, revision, quantize, embedder, profile, seed, lora_r, teacher_epochs,
                            max_train_examples, max_length)
    if remote and (pulled := _pull_if_remote_has(dcfg, tcfg, remote)) is not None:
        print(pulled)
        return
    from stages.teacher.run import run_teacher

    path = run_teacher(dcfg, tcfg)
    print(teacher_path(path.name))


def _pull_if_remote_has(dcfg, tcfg, remote: str):
    """The local cache directory after pulling this key from ``remote``, or None when the remote lacks it."""
    from pipeline import remote as remote_mod
    from pipeline.plan import data_key, teacher_key, teacher_path
    from pipeline.publish import is_complete

    key = teacher_key(data_key(dcfg), tcfg).short
    if is_complete(teacher_path(key)):
        return teacher_path(key)
    r = remote_mod.open_remote(remote)
    if remote_mod.remote_manifest("teacher", key, r) is None:
        return None
    return remote_mod.pull("teacher", key, r)


@app.command("params")
def params(
    model: o.Model = "smollm2-135m",
    lora_r: int = typer.Option(200, "--lora-r", help="LoRA rank (paper: 200)."),
    num_labels: int = typer.Option(2, "--num-labels", help="Classes of the head (counted as trainable)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Count LoRA trainable parameters from the architecture config alone (no weights; paper Table 3)."""
    from stages.teacher.params import count_lora_params

    info = count_lora_params(model, r=lora_r, num_labels=num_labels)
    if as_json:
        print(json.dumps(info))
        return
    line = (f"{info['model']}: {info['lora_trainable_params'] / 1e6:.2f}M trainable "
            f"(LoRA r={lora_r} on {', '.join(info['target_modules'])}: {info['lora_params']:,}; "
            f"head: {info['head_params']:,})")
    if "paper_table3" in info:
        line += f"; paper Table 3: {info['paper_table3'] / 1e6:.2f}M"
    print(line)

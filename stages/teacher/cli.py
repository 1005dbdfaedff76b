"""``qdllm teacher``: fine-tune the LoRA teacher and write its cache; ``qdllm teacher params`` counts LoRA parameters.

Only light imports at the top: torch and transformers load inside the commands.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from pipeline.config import DataConfig, TeacherConfig
from pipeline.settings import reject_options_before_subcommand, with_settings

app = typer.Typer(help="Stage one: LoRA fine-tune an LLM teacher and write the teacher-logit cache.",
                  invoke_without_command=True)


@app.callback()
@with_settings(data=DataConfig, teacher=TeacherConfig)
def teacher(
    ctx: typer.Context,
    data,
    teacher,
    remote: Optional[str] = typer.Option(None, "--remote", help="Pull this teacher cache from a remote that holds it instead of computing it."),
) -> None:
    """Fine-tune the teacher (LoRA r=200 classifier) and write cache/teacher/<key>/; does nothing when it exists."""
    if ctx.invoked_subcommand is not None:
        reject_options_before_subcommand(ctx)
        return
    from pipeline.plan import resolve

    plan = resolve(data=data, teacher=teacher)
    if remote and (pulled := _pull_if_remote_has(plan, remote)) is not None:
        print(pulled)
        return
    from stages.teacher.run import run_teacher

    print(run_teacher(plan))


def _pull_if_remote_has(plan, remote: str):
    """The local cache directory after pulling this key from ``remote``, or None when the remote lacks it."""
    from pipeline import remote as remote_mod
    from pipeline.publish import is_complete

    key = plan.teacher.key.short
    if is_complete(plan.teacher.dir):
        return plan.teacher.dir
    r = remote_mod.open_remote(remote)
    if remote_mod.remote_manifest("teacher", key, r) is None:
        return None
    return remote_mod.pull("teacher", key, r)


@app.command("params")
def params(
    model: str = typer.Option(TeacherConfig.model, "--model", "-m", help="A short name, hub id or local directory."),
    lora_r: int = typer.Option(TeacherConfig.lora_r, "--lora-r", help="LoRA rank (paper: 200)."),
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

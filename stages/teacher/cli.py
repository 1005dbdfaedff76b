"""``qdllm teacher``: fine-tune the LoRA teacher and write its cache; ``qdllm teacher params`` counts LoRA parameters.

Only light imports at the top: torch and transformers load inside the commands.

Several processes: ``accelerate launch --num_processes N -m stages.cli teacher ...`` or
``torchrun --nproc_per_node N -m stages.cli teacher ...`` (DDP; see docs/teacher.md). On the CPU, ``accelerate
launch --cpu --num_processes N`` starts only one process unless MPI is set up (accelerate leaves multi-CPU runs to
``mpirun``); this command notices that case and starts the N processes itself through ``torch.distributed.run``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from pipeline.config import DataConfig, TeacherConfig
from pipeline.errors import QdllmError
from pipeline.settings import reject_options_before_subcommand, with_settings

log = logging.getLogger(__name__)
app = typer.Typer(help="Stage one: LoRA fine-tune an LLM teacher and write the teacher-logit cache.",
                  invoke_without_command=True)


@app.callback()
@with_settings(data=DataConfig, teacher=TeacherConfig)
def teacher(
    ctx: typer.Context,
    data,
    teacher,
    remote: Optional[str] = typer.Option(None, "--remote", help="Pull this teacher cache from a remote that holds it instead of computing it."),
    report_to: str = typer.Option("none", "--report-to", help="Track the fine-tune (loss, learning rate, tokens/s, "
                                  "validation accuracy) in none | tensorboard | mlflow | tensorboard,mlflow. Does not "
                                  "change the cache."),
    logging_dir: Optional[Path] = typer.Option(None, "--logging-dir", help="TensorBoard's directory (default: "
                                               "cache/teacher/.runs/<key>); MLflow follows MLFLOW_TRACKING_URI."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                help="Recompute activations in the backward pass: far less memory "
                                                "for large models, one more forward pass of each layer. Does not "
                                                "change the cache (QLoRA always uses it)."),
) -> None:
    """Fine-tune the teacher (LoRA r=200 classifier) and write cache/teacher/<key>/; does nothing when it exists.

    Runs data-parallel under `accelerate launch --num_processes N -m stages.cli teacher ...` or `torchrun`."""
    if ctx.invoked_subcommand is not None:
        reject_options_before_subcommand(ctx)
        return
    from pipeline.plan import resolve
    from pipeline.publish import is_complete

    trackers = tuple(t.strip() for t in report_to.split(",") if t.strip() and t.strip() != "none")
    if trackers:
        from stages.teacher.train import check_tracker

        for t in trackers:
            check_tracker(t)
    plan = resolve(data=data, teacher=teacher)
    workers = _processes_accelerate_did_not_start()
    if workers > 1:
        if is_complete(plan.teacher.dir):
            print(plan.teacher.dir)
            return
        log.info("accelerate launch --cpu started one process for --num_processes %d (it leaves multi-CPU runs to "
                 "mpirun): starting the %d processes through torch.distributed.run", workers, workers)
        raise typer.Exit(_start_processes(workers))
    from stages.teacher.run import run_teacher
    from stages.teacher.train import launched_processes

    pull = (lambda: _pull_if_remote_has(plan, remote)) if remote else None
    final = run_teacher(plan, report_to=trackers, logging_dir=logging_dir,
                        gradient_checkpointing=gradient_checkpointing, pull=pull)
    if launched_processes() == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(final)


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


# ---------------------------------------------------------------- accelerate launch --cpu --num_processes N

_RANK_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _processes_accelerate_did_not_start() -> int:
    """N when this process was started by ``accelerate launch --cpu --num_processes N`` (N > 1, one machine, no
    MPI), which runs the script once with MASTER_ADDR set and no rank; else 0.

    Accelerate's CPU launcher hands multi-process runs to ``mpirun`` (``--mpirun_hostfile``) and otherwise starts a
    single process (huggingface/accelerate#2741). N is read from the launch command line (the parent process),
    or from accelerate's config file when the command line does not give it."""
    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes") or "MASTER_ADDR" not in env:
        return 0
    if any(name in env for name in _RANK_ENV):
        return 0
    try:
        import psutil
    except ImportError:
        return 0
    try:
        argv = psutil.Process(os.getppid()).cmdline()
        at = next(i for i, a in enumerate(argv) if a == "launch" or a.endswith("accelerate.commands.launch"))
    except (StopIteration, OSError, psutil.Error):  # not under accelerate's launcher after all
        return 0
    launch = argv[at + 1:]
    script = next((i for i, a in enumerate(launch) if a in ("stages.cli", "qdllm")
                   or a.endswith(("stages/cli.py", "/qdllm"))), len(launch))
    processes, machines = _option(launch[:script], "num_processes"), _option(launch[:script], "num_machines")
    if processes is None:  # from accelerate's config file
        try:
            from accelerate.commands.config import default_config_file, load_config_from_file
            from accelerate.commands.launch import launch_command_parser

            args = launch_command_parser().parse_args(launch)
            if args.config_file or os.path.isfile(default_config_file):
                cfg = load_config_from_file(args.config_file)
                processes = processes if processes is not None else cfg.num_processes
                machines = machines if machines is not None else cfg.num_machines
        except (SystemExit, ImportError, OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no readable config: one process, as accelerate itself assumes
    if (machines or 1) > 1:
        raise QdllmError("accelerate launch --cpu over several machines needs MPI (--mpirun_hostfile); or start "
                         "torchrun on each machine with --nnodes and --node_rank.")
    return int(processes or 1) if int(processes or 1) > 1 else 0


def _option(args: list[str], name: str) -> int | None:
    """The integer value of ``--name N`` / ``--name=N`` (either spelling) in a command line, or None."""
    flags = {"--" + name, "--" + name.replace("_", "-")}
    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if flag in flags:
            try:
                return int(value if eq else args[i + 1])
            except (ValueError, IndexError):
                return None
    return None


def _start_processes(n: int) -> int:
    """Run this same command in ``n`` processes on this machine through ``torch.distributed.run`` (gloo); their
    exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", str(n),
           "-m", "stages.cli", *sys.argv[1:]]
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                      env.get("PYTHONPATH")]))
    return subprocess.run(cmd, env=env, check=False).returncode


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

"""``qdllm student``: train students from teacher caches, ablations, and predictions on new texts.

Only light modules at top level; MindSpore/MindQuantum load inside the commands.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import StudentConfig
from pipeline.errors import QdllmError
from pipeline.settings import reject_options_before_subcommand, with_settings
from stages.student.noise_config import NoiseConfig

log = logging.getLogger(__name__)

app = typer.Typer(help="Stage two: train the quantum student from a teacher cache only.", invoke_without_command=True)

TaskSel = Annotated[Optional[str], typer.Option("--task", "-t", help="Only teacher caches of this task.")]
KeySel = Annotated[Optional[str], typer.Option("--teacher-key", help="Only this teacher cache.")]
Remote = Annotated[Optional[str], typer.Option("--remote", help="Pull a missing teacher cache from this remote.")]
Jobs = Annotated[Optional[int], typer.Option(
    "--jobs", "-j", min=1,
    help="Worker processes for the (config, seed) units (default and maximum: the cores this process may use).")]
Cluster = Annotated[Optional[str], typer.Option(
    "--cluster", envvar="QDLLM_CLUSTER",
    help="Run the units on a Dask cluster: a scheduler address (tcp://HOST:8786), a scheduler file, or `local` "
         "(a LocalCluster of --jobs workers here). Workers that do not share this filesystem pull the teacher "
         "cache from --remote. Default: this machine's process pool (docs/scaling.md).")]

ABLATION_LOSSES = ("ce", "kl", "js", "kl+js+ce")
ABLATION_TEMPERATURES = (1.0, 2.0, 4.0)  # the authors' code used T = 2
# circuits: variant × layers × schedule (the circuit's contribution and the trainer's, from one cache)
ABLATION_VARIANTS = ("paper", "noent", "reupload", "u3", "reference")
ABLATION_LAYERS = (1, 2, 4)
ABLATION_SCHEDULES = ("constant", "cosine")
# the trainer's budget, chosen on validation: initial learning rate × epochs
ABLATION_LRS = (0.02, 0.06, 0.2)
ABLATION_EPOCHS = (10, 20)
# --full-grid adds wider readouts and the paper's qubits/loss/temperature grid
FULL_GRID_QUBITS = (4, 8, 11, 14)
FULL_GRID_VARIANTS = ("parallel:2", "parallel:3")


def _train_all(configs, task, teacher_key, remote, jobs: int | None = None, cluster: str | None = None) -> None:
    from stages.student.cluster import check_cluster
    from stages.student.jobs import check_jobs, train_runs
    from stages.student.run import StudentRun, teacher_caches

    check_cluster(cluster, jobs)
    jobs = check_jobs(jobs)
    runs = [StudentRun.plan(cache, cfg) for cache in teacher_caches(task, teacher_key, remote) for cfg in configs]
    trained, skipped = train_runs(runs, jobs, cluster=cluster, remote=remote)
    log.info("%d student run(s) trained, %d already complete", trained, skipped)


def _baselines(cfg):
    """The baselines trained like ``cfg`` (same loss, schedule, seeds, selection) from the same cache: the
    dequantised twin (the quantum student's encoder and head around cos(z)), logreg, and the MLP of its size.
    They have no circuit, so they train exactly whatever device-style training ``cfg`` asks of the quantum student."""
    from pipeline.config import DEVICE_SETTINGS

    exact = {f: StudentConfig.__dataclass_fields__[f].default for f in DEVICE_SETTINGS}
    return [cfg.replace(model=m, **exact) for m in ("twin", "logreg", "mlp") if m != cfg.model]


@app.callback()
@with_settings(student=StudentConfig)
def student(
    ctx: typer.Context,
    student,
    task: TaskSel = None,
    teacher_key: KeySel = None,
    remote: Remote = None,
    classical: bool = typer.Option(True, "--classical/--no-classical",
                                   help="Also train the twin, logreg and mlp baselines (seconds; same loss and selection)."),
    ce_baseline: bool = typer.Option(True, "--ce-baseline/--no-ce-baseline",
                                     help="Also train every student with plain CE at the same settings: the report's "
                                          "distillation gain (skipped when --loss is ce)."),
    jobs: Jobs = None,
    cluster: Cluster = None,
) -> None:
    """Train the student for every teacher cache present (or one task / key); complete runs are skipped."""
    if ctx.invoked_subcommand is not None:
        reject_options_before_subcommand(ctx, honoured=("task", "teacher_key", "remote", "jobs", "cluster"))
        return
    bases = [student] + ([student.replace(loss="ce")] if ce_baseline and student.loss != "ce" else [])
    configs = [c for b in bases for c in [b] + (_baselines(b) if classical else [])]
    _train_all(configs, task, teacher_key, remote, jobs, cluster)


def ablation_configs(base: StudentConfig, full_grid: bool = False) -> list[StudentConfig]:
    """The runs ``qdllm student ablations`` trains around ``base``, each once."""
    import itertools

    quantum = [base.replace(loss=ls) for ls in ABLATION_LOSSES]
    quantum += [base.replace(temperature=T) for T in ABLATION_TEMPERATURES]
    quantum += [base.replace(variant=v, n_layers=L, schedule=sc)
                for v, L, sc in itertools.product(ABLATION_VARIANTS, ABLATION_LAYERS, ABLATION_SCHEDULES)]
    trainer = [base.replace(lr=lr, epochs=ep) for lr, ep in itertools.product(ABLATION_LRS, ABLATION_EPOCHS)]
    trainer += [base.replace(schedule=sc) for sc in ABLATION_SCHEDULES]
    if full_grid:
        quantum += [base.replace(n_qubits=n) for n in FULL_GRID_QUBITS]
        quantum += [base.replace(variant=v) for v in FULL_GRID_VARIANTS]
        quantum += [base.replace(loss=ls, n_layers=L, n_qubits=n, temperature=T) for ls, L, n, T in itertools.product(
            ABLATION_LOSSES, ABLATION_LAYERS, FULL_GRID_QUBITS[:3], ABLATION_TEMPERATURES)]
    # the baselines beside every loss, temperature, schedule and rate: like compared with like
    baselines = [b for cfg in quantum[:len(ABLATION_LOSSES) + len(ABLATION_TEMPERATURES)] + trainer
                 for b in _baselines(cfg)]
    return list(dict.fromkeys(quantum + trainer + baselines))


@app.command("ablations")
@with_settings(student=StudentConfig)
def ablations(student, ctx: typer.Context = None, task: TaskSel = None, teacher_key: KeySel = None, remote: Remote = None,
              jobs: Jobs = None, cluster: Cluster = None, full_grid: bool = typer.Option(
                  False, "--full-grid", help="Also qubits {4, 8, 11, 14}, parallel:2/3 and the paper's loss × layers × "
                                             "qubits × temperature grid.")) -> None:
    """Around the given settings (by default the declared ones), from each cache: loss {ce, kl, js, kl+js+ce} and
    temperature {1, 2, 4} one at a time; circuit variant {paper, noent, reupload, u3, reference} × layers {1, 2, 4}
    × schedule {constant, cosine}; learning rate {0.02, 0.06, 0.2} × epochs {10, 20}. The twin, logreg and MLP
    baselines are trained beside every loss, temperature, schedule and rate, so the tables compare like with like,
    and the report picks rates and epochs on validation."""
    given = (ctx.obj if ctx is not None else None) or {}  # --task/--teacher-key/--remote/--jobs/--cluster before it
    task, teacher_key, remote, jobs = (given.get("task") if task is None else task,
                                       given.get("teacher_key") if teacher_key is None else teacher_key,
                                       remote or given.get("remote"), jobs or given.get("jobs"))
    cluster = cluster or given.get("cluster")
    _train_all(ablation_configs(student, full_grid), task, teacher_key, remote, jobs, cluster)


@app.command("predict")
def predict(
    run: str = typer.Option(..., "--run", help="Student run key (or directory)."),
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="One text per line.")] = None,
) -> None:
    """Classify new texts with a trained student: loads the frozen embedder and the student, never the LLM."""
    import json

    from pipeline.metrics import softmax
    from stages.student.export import read_lines
    from stages.student.run import StudentRun
    from stages.student.train import predict_logits

    items = list(texts or [])
    if file:
        if not file.is_file():
            raise QdllmError(f"--file {file} does not exist or is not a regular file; give a text file with one "
                             "example per line.")
        items += read_lines(file, "--file")
    if not items:
        raise QdllmError("Give texts to classify as arguments or with --file FILE (one per line).")
    blank = next((i for i, t in enumerate(items) if not t.strip()), None)
    if blank is not None:
        raise QdllmError(f"Text {blank + 1} to classify is empty; give each text some words (an empty text has no "
                         "embedding to classify).")
    student = StudentRun.open(run)
    best = student.best()
    probs = softmax(predict_logits(best.model, best.weights, student.embed(items)))
    names = student.manifest.class_names
    for text, p in zip(items, probs):
        print(json.dumps({"text": text, "label": names[int(p.argmax())],
                          "probs": {n: round(float(v), 4) for n, v in zip(names, p)}}, ensure_ascii=False))


@app.command("export")
def export(
    run: str = typer.Option(..., "--run", help="Student run key (or directory) of a quantum student."),
    fmt: str = typer.Option(..., "--format", help="qasm2 (every angle bound per example) | qasm3 (encoding angles "
                                                  "as inputs, one file for every example)."),
    out: Path = typer.Option(..., "--out", help="New directory to write (must not exist, or be empty)."),
    texts: Annotated[Optional[Path], typer.Option(
        "--texts", help="Also one bound circuit per line of this file.")] = None,
    split: Annotated[Optional[str], typer.Option(
        "--split", help="Also one bound circuit per example of this split of the run's teacher cache.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N examples.")] = None,
) -> None:
    """Export the best-validation seed as OpenQASM with its encoder and head, to run on hardware or elsewhere."""
    from stages.student.export import export_run

    path = export_run(run, fmt, out, texts=texts, split=split, limit=limit)
    log.info("exported %s to %s", run, path)
    print(path)


@app.command("noise")
@with_settings(evaluation=NoiseConfig)
def noise(evaluation, run: str = typer.Option(..., "--run", help="Student run key (or directory) of a quantum student.")
          ) -> None:
    """Accuracy of a trained quantum student under finite shots and gate/readout noise, without retraining;
    writes cache/noise/<key>/noise.json and prints its path."""
    from stages.student.noise import evaluate_noise

    print(evaluate_noise(run, evaluation))

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

ABLATION_LOSSES = ("ce", "kl", "js", "kl+js+ce")
ABLATION_LAYERS = (1, 2, 4)
ABLATION_QUBITS = (4, 8, 11)
ABLATION_TEMPERATURES = (1.0, 2.0, 4.0)  # the authors' code used T = 2


def _train_all(configs, task, teacher_key, remote, jobs: int | None = None) -> None:
    from stages.student.jobs import check_jobs, train_runs
    from stages.student.run import StudentRun, teacher_caches

    jobs = check_jobs(jobs)
    runs = [StudentRun.plan(cache, cfg) for cache in teacher_caches(task, teacher_key, remote) for cfg in configs]
    trained, skipped = train_runs(runs, jobs)
    log.info("%d student run(s) trained, %d already complete", trained, skipped)


def _classical_twins(cfg):
    """The logreg and MLP baselines trained like ``cfg`` (same loss, seeds, selection) from the same cache."""
    from dataclasses import replace

    return [replace(cfg, model=m) for m in ("logreg", "mlp") if m != cfg.model]


@app.callback()
@with_settings(student=StudentConfig)
def student(
    ctx: typer.Context,
    student,
    task: TaskSel = None,
    teacher_key: KeySel = None,
    remote: Remote = None,
    classical: bool = typer.Option(True, "--classical/--no-classical",
                                   help="Also train the logreg and mlp baselines (seconds; same loss and selection)."),
    ce_baseline: bool = typer.Option(True, "--ce-baseline/--no-ce-baseline",
                                     help="Also train every student with plain CE at the same settings: the report's "
                                          "distillation gain (skipped when --loss is ce)."),
    jobs: Jobs = None,
) -> None:
    """Train the student for every teacher cache present (or one task / key); complete runs are skipped."""
    if ctx.invoked_subcommand is not None:
        reject_options_before_subcommand(ctx, honoured=("task", "teacher_key", "remote", "jobs"))
        return
    from dataclasses import replace

    bases = [student] + ([replace(student, loss="ce")] if ce_baseline and student.loss != "ce" else [])
    configs = [c for b in bases for c in [b] + (_classical_twins(b) if classical else [])]
    _train_all(configs, task, teacher_key, remote, jobs)


@app.command("ablations")
@with_settings(student=StudentConfig)
def ablations(student, ctx: typer.Context = None, task: TaskSel = None, teacher_key: KeySel = None, remote: Remote = None,
              jobs: Jobs = None, full_grid: bool = typer.Option(
                  False, "--full-grid", help="All 4×3×3×3 combinations instead of one factor at a time.")) -> None:
    """Loss {ce, kl, js, kl+js+ce} × layers {1, 2, 4} × qubits {4, 8, 11} × temperature {1, 2, 4}, one factor
    varied at a time around the given settings (by default the declared ones): 4 + 2 + 2 + 2 = 10 quantum runs
    per cache; ``--full-grid`` trains all 108. Each loss and temperature is also trained with the logreg and MLP
    baselines, so the tables compare like with like."""
    import itertools
    from dataclasses import replace

    given = (ctx.obj if ctx is not None else None) or {}  # --task/--teacher-key/--remote/--jobs before `ablations`
    task, teacher_key, remote, jobs = (task or given.get("task"), teacher_key or given.get("teacher_key"),
                                       remote or given.get("remote"), jobs or given.get("jobs"))
    base = student
    if full_grid:
        grid = itertools.product(ABLATION_LOSSES, ABLATION_LAYERS, ABLATION_QUBITS, ABLATION_TEMPERATURES)
    else:
        b = (base.loss, base.n_layers, base.n_qubits, base.temperature)
        grid = ([(ls, *b[1:]) for ls in ABLATION_LOSSES]
                + [(b[0], L, *b[2:]) for L in ABLATION_LAYERS if L != base.n_layers]
                + [(*b[:2], n, b[3]) for n in ABLATION_QUBITS if n != base.n_qubits]
                + [(*b[:3], T) for T in ABLATION_TEMPERATURES if T != base.temperature])
    configs = list(dict.fromkeys(replace(base, loss=ls, n_layers=L, n_qubits=n, temperature=T)
                                 for ls, L, n, T in grid))
    # the classical baselines with every loss (and every temperature of the default loss): like compared with like
    configs += [twin for ls in ABLATION_LOSSES for twin in _classical_twins(replace(base, loss=ls))]
    configs += [twin for T in ABLATION_TEMPERATURES if T != base.temperature
                for twin in _classical_twins(replace(base, temperature=T))]
    _train_all(configs, task, teacher_key, remote, jobs)


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

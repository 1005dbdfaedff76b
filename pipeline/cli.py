"""``qdllm``: one command per stage, plus ``key`` (what Make uses) and ``cache`` (sharing).

Only light modules are imported here; each command imports its stage's heavy code
when it runs, so ``qdllm --help`` and ``qdllm key`` stay fast.
"""

from __future__ import annotations

import sys

import click
import typer

from pipeline import options as o
from pipeline.console import console, setup_logging
from pipeline.errors import QdllmError

app = typer.Typer(
    name="qdllm",
    help="QD-LLM: distill a LoRA-tuned LLM classifier into a small quantum circuit, via a teacher-logit cache.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _main(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for tracebacks)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress bars."),
) -> None:
    setup_logging(verbose, quiet)
    _state["verbose"] = verbose


_state = {"verbose": 0}

key_app = typer.Typer(help="Print stage keys (content hashes of every input); fast, used by the Makefile.",
                      no_args_is_help=True)
app.add_typer(key_app, name="key")


@key_app.command("data")
def key_data(task: o.Task = "emotion", source: o.Source = "", seed: o.Seed = 0, max_per_class: o.MaxPerClass = 0,
             text_column: o.TextColumn = "text", label_column: o.LabelColumn = "label") -> None:
    """Key of the dataset directory data/<task>/<key>/."""
    from pipeline.plan import data_key

    print(data_key(o.data_config(task, source, seed, max_per_class, text_column, label_column)))


@key_app.command("teacher")
def key_teacher(task: o.Task = "emotion", source: o.Source = "", seed: o.Seed = 0,
                max_per_class: o.MaxPerClass = 0, model: o.Model = "smollm2-135m", revision: o.Revision = "main",
                quantize: o.Quantize = "none", embedder: o.Embedder = "minilm", profile: o.Profile = "auto",
                lora_r: o.LoraR = None, teacher_epochs: o.TeacherEpochs = None,
                max_train_examples: o.MaxTrain = None, max_length: o.MaxLength = None) -> None:
    """Key of the teacher cache cache/teacher/<key>/."""
    from pipeline.plan import data_key, teacher_key

    d = data_key(o.data_config(task, source, seed, max_per_class))
    print(teacher_key(d, o.teacher_config(model, revision, quantize, embedder, profile, seed, lora_r,
                                          teacher_epochs, max_train_examples, max_length)))


@key_app.command("student")
def key_student(teacher_key: str = typer.Option(..., "--teacher-key", help="Key of the teacher cache."),
                student_model: o.StudentModel = "quantum", variant: o.Variant = "paper", qubits: o.Qubits = 11,
                layers: o.Layers = 2, loss: o.Loss = "kl+js+ce", alpha: o.Alpha = 0.9,
                temperature: o.Temperature = 1.0, lr: o.StudentLr = 0.06, epochs: o.StudentEpochs = 10,
                batch_size: o.BatchSize = 8, seeds: o.Seeds = "0,1,2,3,4",
                input_scaling: o.InputScaling = "l2") -> None:
    """Key of a student run cache/student/<key>/."""
    from pipeline.plan import student_key

    cfg = o.student_config(student_model, variant, qubits, layers, loss, alpha, temperature, lr, epochs,
                           batch_size, seeds, input_scaling)
    print(student_key(teacher_key, cfg))


@key_app.command("all")
def key_all(task: o.Task = "emotion", source: o.Source = "", seed: o.Seed = 0, max_per_class: o.MaxPerClass = 0,
            model: o.Model = "smollm2-135m", revision: o.Revision = "main", quantize: o.Quantize = "none",
            embedder: o.Embedder = "minilm", profile: o.Profile = "auto",
            make: bool = typer.Option(False, "--make", help="Also print DATA_DIR and TEACHER_DIR.")) -> None:
    """DATA_KEY=… TEACHER_KEY=… STUDENT_KEY=… (default student) on one line, for Make."""
    from pipeline.plan import data_key, data_path, student_key, teacher_key, teacher_path

    dcfg = o.data_config(task, source, seed, max_per_class)
    d = data_key(dcfg)
    t = teacher_key(d, o.teacher_config(model, revision, quantize, embedder, profile, seed))
    s = student_key(t.short, o.student_config())
    line = f"DATA_KEY={d} TEACHER_KEY={t} STUDENT_KEY={s}"
    if make:
        line += f" DATA_DIR={data_path(dcfg, d)} TEACHER_DIR={teacher_path(t)}"
    print(line)


def _add_stage_apps() -> None:
    from stages.data.cli import app as data_app
    from stages.report.cli import app as report_app
    from stages.student.cli import app as student_app
    from stages.teacher.cli import app as teacher_app
    from pipeline.cache_cli import app as cache_app

    app.add_typer(data_app, name="data")
    app.add_typer(teacher_app, name="teacher")
    app.add_typer(student_app, name="student")
    app.add_typer(report_app, name="report")
    app.add_typer(cache_app, name="cache")


_add_stage_apps()


def main() -> None:
    """Console entry point: user errors become one red sentence and exit code 2, never a traceback."""
    try:
        app()
    except QdllmError as e:
        if _state["verbose"] > 1:
            console.print_exception()
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; finished outputs are kept, partial ones were discarded.")
        sys.exit(130)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()

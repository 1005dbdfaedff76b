"""``qdllm``, the application: one command per stage, plus ``key`` (what Make uses) and ``cache`` (sharing).

Only light modules are imported here; each command imports its stage's heavy code
when it runs, so ``qdllm --help`` and ``qdllm key`` stay fast.
"""

from __future__ import annotations

import errno
import sys
from typing import Annotated, Optional

import click
import typer

from pipeline import interrupt
from pipeline.config import DataConfig, StudentConfig, TeacherConfig
from pipeline.console import console, setup_logging
from pipeline.errors import QdllmError
from pipeline.settings import with_settings

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

Explain = Annotated[bool, typer.Option("--explain", help="List the inputs that make up the key.")]
Against = Annotated[Optional[str], typer.Option(
    "--against", help="Only the inputs that differ from this other key's (a directory present here): why Make reruns.")]


def _print_key(key, explain: bool, against: str | None) -> None:
    from pipeline.plan import explain as explain_key
    from pipeline.plan import recorded_inputs

    print(key.short)
    if against:
        path, inputs = recorded_inputs(against)
        lines = explain_key(key, inputs)
        console.print(f"{key.short} against {against} ({path}): " +
                      (f"{len(lines)} input(s) differ" if lines else "same inputs"), highlight=False)
    elif explain:
        lines = explain_key(key)
    else:
        return
    for line in lines:
        console.print("  " + line, highlight=False, soft_wrap=True)


@key_app.command("data")
@with_settings(data=DataConfig)
def key_data(data, explain: Explain = False, against: Against = None) -> None:
    """Key of the dataset directory data/<task>/<key>/."""
    from pipeline.plan import resolve

    _print_key(resolve(data=data).data.key, explain, against)


@key_app.command("teacher")
@with_settings(data=DataConfig, teacher=TeacherConfig)
def key_teacher(data, teacher, explain: Explain = False, against: Against = None) -> None:
    """Key of the teacher cache cache/teacher/<key>/."""
    from pipeline.plan import resolve

    _print_key(resolve(data=data, teacher=teacher).teacher.key, explain, against)


@key_app.command("student")
@with_settings(student=StudentConfig)
def key_student(student, teacher_key: str = typer.Option(..., "--teacher-key", help="Key of the teacher cache."),
                explain: Explain = False, against: Against = None) -> None:
    """Key of a student run cache/student/<key>/."""
    from pipeline.plan import resolve

    _print_key(resolve(student=student, teacher_key_short=teacher_key).student.key, explain, against)


@key_app.command("all")
@with_settings(data=DataConfig, teacher=TeacherConfig, student=StudentConfig)
def key_all(data, teacher, student,
            make: bool = typer.Option(False, "--make", help="NAME=value pairs for Make, directories included.")) -> None:
    """DATA_KEY=… TEACHER_KEY=… STUDENT_KEY=… on one line (with --make also DATA_DIR, TEACHER_DIR, STUDENT_DIR)."""
    from pipeline.plan import resolve

    plan = resolve(data=data, teacher=teacher, student=student)
    if make:
        print(plan.make_vars())
    else:
        print(" ".join(f"{n.upper()}_KEY={getattr(plan, n).key.short}" for n in ("data", "teacher", "student")))


@app.command("status")
@with_settings(data=DataConfig, teacher=TeacherConfig, student=StudentConfig, exclude=("--task",))
def status_cmd(data, teacher, student, task: Optional[str] = typer.Option(
        None, "--task", "-t", help="Only this task (default: every task with a dataset or teacher cache here).")
               ) -> None:
    """Whether each stage's output is current under these settings and, if not, what changed since its last build."""
    from pipeline.status import status, tasks_present

    tasks = [task] if task else (tasks_present() or [data.task])
    marks = {"current": "[green]current[/]", "changed": "[yellow]changed[/]", "new": "[yellow]not built[/]"}
    for t in tasks:
        for st in status(t, data, teacher, student):
            where = st.dir if st.state != "changed" else f"{st.last} → {st.key}"
            console.print(f"{t} {st.stage}: {marks[st.state]} ({where})", highlight=False, soft_wrap=True)
            for line in st.changes:
                console.print(f"  {line}", highlight=False, soft_wrap=True)


def _add_stage_apps() -> None:
    from stages.baselines.cli import app as baselines_app
    from stages.cache_cli import app as cache_app
    from stages.data.cli import app as data_app
    from stages.report.cli import app as report_app
    from stages.student.cli import app as student_app
    from stages.teacher.cli import app as teacher_app

    app.add_typer(data_app, name="data")
    app.add_typer(teacher_app, name="teacher")
    app.add_typer(student_app, name="student")
    app.add_typer(baselines_app, name="baselines")
    app.add_typer(report_app, name="report")
    app.add_typer(cache_app, name="cache")


_add_stage_apps()


def main() -> None:
    """Console entry point: user errors become one red sentence and exit code 2, never a traceback."""
    interrupt.install()
    try:
        try:
            app()  # SIGINT raises interrupt.Interrupted, which typer passes on (a KeyboardInterrupt it would not)
        finally:
            interrupt.check()  # a Ctrl-C that some library swallowed still ends the command as interrupted
    except (interrupt.Interrupted, KeyboardInterrupt):
        console.print(f"[yellow]{interrupt.MESSAGE}[/]", highlight=False)
        sys.exit(interrupt.EXIT_CODE)
    except QdllmError as e:
        if _state["verbose"] > 1:
            console.print_exception()
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except OSError as e:
        sentence = environment_error(e)
        if sentence is None:  # not the user's environment: a bug, shown with its traceback
            raise
        if _state["verbose"] > 1:
            console.print_exception()
        console.print(f"[bold red]error:[/] {sentence}", highlight=False, soft_wrap=True)
        sys.exit(1)


# Errors of the machine a user runs on (permissions, read-only mounts, a full disk), not of the program.
_ENVIRONMENT_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
}


def environment_error(e: OSError) -> str | None:
    """One sentence for an OSError caused by the user's environment, or None for any other OSError."""
    why = _ENVIRONMENT_ERRNOS.get(e.errno)
    if why is None:
        return None
    where = f" {e.filename}" if e.filename else ""
    return (f"cannot use{where}: {why}; point the output elsewhere (QDLLM_DATA_DIR, QDLLM_CACHE_DIR or the "
            "command's output option) or fix the permissions or space (nothing partial was kept).")


if __name__ == "__main__":
    main()

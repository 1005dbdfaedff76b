"""Terminal output: rich logging on stderr, progress bars that hide themselves when quiet."""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
_state = {"quiet": False}


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """``-v`` shows debug messages, ``-q`` only warnings and errors (and hides progress bars)."""
    _state["quiet"] = quiet
    if quiet:  # the Hugging Face libraries' own loading bars (checkpoint shards, GGUF conversion) too
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=verbose > 0, rich_tracebacks=verbose > 0)],
        force=True,
    )
    for noisy in ("urllib3", "filelock", "httpx", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def progress(*extra_columns) -> Progress:
    """A progress bar for long work; pass ``TextColumn`` s for live numbers (loss, tokens/s)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *extra_columns,
        console=console,
        disable=_state["quiet"],
        transient=False,
    )

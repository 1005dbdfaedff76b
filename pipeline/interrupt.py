"""Ctrl-C: the work stops, finished outputs stay, nothing half-written is published.

``install`` (called once by the ``qdllm`` entry point) makes SIGINT (and SIGTERM) raise ``Interrupted``, a ``BaseException`` that
no library turns into something else (typer turns ``KeyboardInterrupt`` into a silent exit code, and a
``KeyboardInterrupt`` raised inside a ``__del__`` is swallowed). The request is also remembered: ``check`` raises it
again, and ``pipeline.publish`` calls it before every rename into place, so an interrupt that some code swallowed
still publishes nothing. ``deferred`` holds an interrupt back over a block that must not be cut in the middle (an
extension module's import) and raises it when the block ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

MESSAGE = "interrupted; finished outputs are kept, nothing half-written"
EXIT_CODE = 130


class Interrupted(BaseException):
    """The user pressed Ctrl-C (SIGINT)."""


_state: dict = {"requested": False, "deferring": 0}


def _handler(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    _state["requested"] = True
    if not _state["deferring"]:
        raise Interrupted()


def install() -> None:
    """Make SIGINT and SIGTERM raise ``Interrupted`` in this process (main thread only; a no-op elsewhere).

    SIGTERM too: MindSpore's runtime puts its own SIGINT handler in below Python on every step, and it answers
    Ctrl-C by sending this process SIGTERM; ``kill PID`` is also a request to stop cleanly."""
    _set(_handler)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handler)


def _set(disposition) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, disposition)
        _state["disposition"] = disposition


def reclaim() -> None:
    """Put our SIGINT disposition back after a library replaced it below Python (MindSpore's runtime installs a
    handler that sends SIGTERM to the whole process group, while ``signal.getsignal`` still names ours); only where
    ``install`` or ``ignore_in_worker`` set one."""
    if "disposition" in _state:
        _set(_state["disposition"])


def requested() -> bool:
    return _state["requested"]


def check() -> None:
    """Raise ``Interrupted`` if Ctrl-C was pressed, even if the exception it raised was swallowed somewhere."""
    if _state["requested"]:
        raise Interrupted()


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a Ctrl-C pressed inside the block until it ends (an import of MindSpore's extension aborts the
    interpreter when interrupted half-way); then raise it."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
    if not _state["deferring"]:
        check()


def ignore_in_worker() -> None:
    """In a worker process: leave Ctrl-C to the parent, which stops the pool (no traceback from every worker)."""
    _set(signal.SIG_IGN)

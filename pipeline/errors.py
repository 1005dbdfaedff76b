"""The one exception type users see: a sentence saying what is wrong and how to fix it."""


class QdllmError(Exception):
    """A user-facing error. The CLI prints its message (no traceback) and exits non-zero."""

    exit_code = 2

"""The task registry: what each task classifies and where its default data comes from."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import QdllmError


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    class_names: tuple[str, ...]
    default_source: str  # name of a source in stages/data; "" for user data

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("emotion", "binary sentiment (negative vs positive)", ("negative", "positive"), "rotten-tomatoes"),
        Task("hiding", "steganalysis (cover text vs stego text)", ("cover", "stego"), "stego-default"),
        Task("thematic", "news topic, 4 classes", ("business", "politics", "sport", "tech"), "bbc-news"),
    )
}


def get_task(name: str) -> Task:
    """Look up a registered task; a user dataset (``--source PATH``) may use any other name."""
    try:
        return TASKS[name]
    except KeyError:
        raise QdllmError(
            f"Unknown task {name!r}: use one of {', '.join(TASKS)}, or give your own data with --source PATH."
        ) from None

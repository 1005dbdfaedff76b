"""From settings to keys and directories, resolved once and handed to the stages.

``resolve()`` turns stage configs into a ``Plan``: for each stage its config, its key and
the directory it writes. The CLI, ``qdllm key`` and the Makefile (through ``qdllm key all
--make``) all call it, so the key a user is shown is the directory a stage writes.
``explain()`` says which inputs make up a key and which differ from another key's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import keys, paths
from pipeline.config import DataConfig, StudentConfig, TeacherConfig
from pipeline.errors import QdllmError
from pipeline.models import embedder_identity, model_identity


@dataclass(frozen=True)
class Key:
    """A stage key: ``short`` names the directory, ``full`` and ``inputs`` go into the manifest."""

    short: str
    full: str
    inputs: dict[str, Any]

    def __str__(self) -> str:
        return self.short


def _key(inputs: dict[str, Any]) -> Key:
    full = keys.digest(inputs)
    return Key(keys.short(full), full, inputs)


def data_key(cfg: DataConfig) -> Key:
    return _key(cfg.key_inputs())


def teacher_key(data: Key, cfg: TeacherConfig) -> Key:
    return _key(cfg.key_inputs(data.short, model_identity(cfg.model, cfg.revision), embedder_identity(cfg.embedder)))


def student_key(teacher: str, cfg: StudentConfig) -> Key:
    return _key(cfg.key_inputs(str(teacher)))


def data_path(cfg: DataConfig, key: Key) -> Path:
    return paths.dataset_dir(cfg.task, key.short)


def teacher_path(key: Key | str) -> Path:
    return paths.teacher_dir(str(key))


def student_path(key: Key | str) -> Path:
    return paths.student_dir(str(key))


@dataclass(frozen=True)
class Step:
    """One stage of a plan: what it is configured with, its key, the directory it writes."""

    config: Any
    key: Key
    dir: Path


@dataclass(frozen=True)
class Plan:
    data: Step | None = None
    teacher: Step | None = None
    student: Step | None = None

    def make_vars(self) -> str:
        """``NAME=value`` pairs for the Makefile: a directory Make cannot name as a target is refused in a sentence."""
        out = []
        for name in ("data", "teacher", "student"):
            step = getattr(self, name)
            if step is not None:
                bad = sorted(set(str(step.dir)) & MAKE_SPECIAL)
                if bad or not str(step.dir).isprintable():
                    shown = "".join(bad) or "a control character"
                    raise QdllmError(f"Make cannot name targets under {str(step.dir)!r} (it holds {shown!r}); "
                                     "move QDLLM_DATA_DIR / QDLLM_CACHE_DIR to a path of plain characters, or run the "
                                     "stages with `qdllm` directly.")
                out += [f"{name.upper()}_KEY={step.key.short}", f"{name.upper()}_DIR={step.dir}"]
        return " ".join(out)


# characters that end or split a Make target name
MAKE_SPECIAL = set(" \t:#$%;=*?[]\\'\"|&<>(){}`")


def resolve(*, data: DataConfig | None = None, teacher: TeacherConfig | None = None,
            student: StudentConfig | None = None, teacher_key_short: str | None = None) -> Plan:
    """Keys and directories of the given stages; the teacher needs the data config, the student a teacher."""
    d = t = s = None
    if data is not None:
        k = data_key(data)
        d = Step(data, k, data_path(data, k))
    if teacher is not None:
        if d is None:
            raise ValueError("a teacher plan needs the data config")
        k = teacher_key(d.key, teacher)
        t = Step(teacher, k, teacher_path(k))
    if student is not None:
        tk = t.key.short if t is not None else teacher_key_short
        if t is None and tk is not None:
            paths.check_name(tk, "--teacher-key", "give a key as `qdllm cache ls` prints it")
        if tk is None:
            raise ValueError("a student plan needs a teacher key")
        k = student_key(tk, student)
        s = Step(student, k, student_path(k))
    return Plan(d, t, s)


# ------------------------------------------------------------------ why a key is what it is


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested key inputs as ``a.b.c -> value`` (lists of scalars stay whole)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k in sorted(obj):
            out.update(flatten(obj[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def recorded_inputs(key: str) -> tuple[Path, dict[str, Any]]:
    """The inputs recorded in the manifest of the dataset, teacher cache or student run named ``key``."""
    candidates = [paths.teacher_dir(key), paths.student_dir(key), *sorted(paths.data_dir().glob(f"*/{key}"))]
    for path in candidates:
        manifest = path / "manifest.json"
        if manifest.is_file():
            try:
                return path, json.loads(manifest.read_text(encoding="utf-8"))["inputs"]
            except (ValueError, KeyError):
                raise QdllmError(f"{manifest} records no key inputs; it was not written by this qdllm.") from None
    raise QdllmError(f"No dataset, teacher cache or student run named {key} is here to compare with; "
                     "give the key of a directory under data/ or cache/ (see `qdllm cache ls`).")


def explain(key: Key, against: dict[str, Any] | None = None) -> list[str]:
    """Lines naming every input of ``key``; with ``against``, only the inputs that differ (``changes``)."""
    if against is None:
        return [f"{name} = {json.dumps(value, ensure_ascii=False)}" for name, value in flatten(key.inputs).items()]
    return list(changes(key, against))


def _short(value: Any) -> str:
    return str(value)[:16]


def describe(name: str, old: Any, new: Any) -> str:
    """One line for one changed key input."""
    absent = "<absent>"
    at = ("." + name).find(".code.")  # the code of this stage, or of a generator behind its source
    if at >= 0:
        file = name[at + len("code."):]
        return f"code {file} " + ("added" if old == absent else "removed" if new == absent else "changed")
    if name == "code":
        return "code changed (the last build recorded one digest for all its files, so which one is not known)"
    if name.startswith("source.files."):  # a file of a source directory
        file = name[len("source.files."):]
        return f"source file {file} " + ("added" if old == absent else "removed" if new == absent else "changed")
    if name == "data_key":
        return f"data changed (data key {_short(old)} → {_short(new)})"
    if name == "teacher_key":
        return f"teacher changed (teacher key {_short(old)} → {_short(new)})"
    return f"{name}: {json.dumps(old, ensure_ascii=False)} → {json.dumps(new, ensure_ascii=False)}"


def changes(key: Key, recorded: dict[str, Any]) -> tuple[str, ...]:
    """What differs between the inputs of ``key`` and those a build recorded, one line each."""
    mine, theirs = flatten(json.loads(json.dumps(key.inputs))), flatten(recorded)  # tuples as JSON lists
    lines: list[str] = []
    for name in sorted(set(mine) | set(theirs)):
        old, new = theirs.get(name, "<absent>"), mine.get(name, "<absent>")
        if old != new:
            section, _, field = name.partition(".")
            if field == "sha256" and section in ("source", "transfer"):  # one file: name it
                line = f"{section} file {mine.get(section + '.file', theirs.get(section + '.file'))} changed"
            else:
                line = describe(name, old, new)
            if line not in lines:
                lines.append(line)
    return tuple(lines)

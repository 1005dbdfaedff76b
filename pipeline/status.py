"""``qdllm status``: for each stage of a task, whether its output is current and, if not, what changed.

Like ``dvc status``: the settings given (the same flags as ``qdllm key all``, so the same as Make's variables)
name each stage's output directory by its key. When that directory exists the stage is current; otherwise the
stage's last build (the newest manifest of that stage and task) is compared input by input with what a run would
use now, and every difference becomes one line: ``config.epochs: 1 → 3``, ``code stages/student/losses.py
changed``, ``source file mine.csv changed``, ``teacher changed (teacher key 1a2b… → 3c4d…)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline import paths
from pipeline.config import DataConfig, StudentConfig, TeacherConfig
from pipeline.errors import QdllmError
from pipeline.plan import Key, changes, resolve
from pipeline.publish import MANIFEST
from pipeline.tasks import TASKS


@dataclass(frozen=True)
class StageStatus:
    stage: str
    task: str
    key: str
    dir: Path
    state: str  # "current", "changed" (a different build exists) or "new" (nothing of this stage and task yet)
    last: Path | None = None
    changes: tuple[str, ...] = ()


def _manifest(path: Path) -> dict | None:
    try:
        m = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or not isinstance(m.get("inputs"), dict):
        return None
    # the fields status reads, by type: a damaged manifest is no build (it is reported by `qdllm cache verify`)
    kinds = {"task": str, "source_path": str, "config": dict}
    if any(m.get(f) is not None and not isinstance(m[f], t) for f, t in kinds.items()):
        return None
    return m


def _builds(root: Path, pattern: str, keep) -> list[tuple[Path, dict]]:
    """Complete outputs under ``root`` whose manifest satisfies ``keep``, newest first."""
    found = []
    for p in root.glob(pattern):
        if p.is_dir() and not p.name.startswith(".") and (m := _manifest(p)) is not None and keep(m):
            found.append((p, m))
    return sorted(found, key=lambda pm: (pm[0] / MANIFEST).stat().st_mtime_ns, reverse=True)


def last_data(task: str) -> tuple[Path, dict] | None:
    found = _builds(paths.data_dir() / task, "*", lambda m: True)
    return found[0] if found else None


def last_teacher(task: str) -> tuple[Path, dict] | None:
    found = _builds(paths.cache_dir() / "teacher", "*", lambda m: m.get("task") == task)
    return found[0] if found else None


def last_student(task: str, model: str) -> tuple[Path, dict] | None:
    """The newest run of this task, of the same student model when there is one."""
    found = _builds(paths.cache_dir() / "student", "*", lambda m: m.get("task") == task)
    same = [pm for pm in found if (pm[1].get("config") or {}).get("model") == model]
    return (same or found or [None])[0]


def _state(stage: str, task: str, key: Key, final: Path, last: tuple[Path, dict] | None) -> StageStatus:
    if (final / MANIFEST).is_file():
        return StageStatus(stage, task, key.short, final, "current", final)
    if last is None:
        return StageStatus(stage, task, key.short, final, "new")
    path, manifest = last
    return StageStatus(stage, task, key.short, final, "changed", path, changes(key, manifest["inputs"]))


def data_config_for(task: str, data: DataConfig) -> DataConfig:
    """``data`` for ``task``; a task with no default corpus and no --source takes its last build's source."""
    cfg = replace(data, task=task)
    if cfg.source or task in TASKS:
        return cfg
    last = last_data(task)
    source = (last[1].get("source_path") if last else None) or ""
    if not source:
        raise QdllmError(f"Task {task!r} has no default corpus and no build that records its source; give it with "
                         "--source PATH.")
    return replace(cfg, source=source)


def tasks_present() -> list[str]:
    """Tasks with a dataset or a teacher cache here."""
    found = {p.parent.parent.name for p in paths.data_dir().glob(f"*/*/{MANIFEST}") if not p.parent.name.startswith(".")}
    found |= {m["task"] for _, m in _builds(paths.cache_dir() / "teacher", "*", lambda m: bool(m.get("task")))}
    return sorted(found)


def status(task: str, data: DataConfig, teacher: TeacherConfig, student: StudentConfig) -> list[StageStatus]:
    """Data, teacher and student status of one task under the given settings."""
    plan = resolve(data=data_config_for(task, data), teacher=teacher, student=student)
    return [
        _state("data", task, plan.data.key, plan.data.dir, last_data(task)),
        _state("teacher", task, plan.teacher.key, plan.teacher.dir, last_teacher(task)),
        _state("student", task, plan.student.key, plan.student.dir, last_student(task, student.model)),
    ]

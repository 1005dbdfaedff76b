"""The manifests as the stages read them: a teacher cache's (``TeacherManifest``) and a student run's
(``RunManifest``), typed, by name instead of by guessed keys.

They live apart from ``pipeline.cache`` (which writes and checks teacher caches, and so is part of the teacher's
key) so that a change to how a run's manifest is read never invalidates a teacher cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cache import read_manifest


@dataclass(frozen=True)
class TeacherManifest:
    """What a student and the report read from a teacher cache's manifest.json (written by ``write_teacher_cache``
    and ``stages.teacher.run``), by name instead of by guessed keys."""

    key: str
    inputs: dict[str, Any]
    task: str
    class_names: list[str]
    embedding_dim: int
    teacher_metrics: dict[str, Any]
    probe_ceiling: dict[str, Any] | None
    lora_trainable_params: int | None
    data_key: str | None

    @classmethod
    def from_dict(cls, m: dict[str, Any]) -> "TeacherManifest":
        return cls(key=str(m["key"]), inputs=dict(m.get("inputs") or {}), task=str(m.get("task", "")),
                   class_names=list(m["class_names"]), embedding_dim=int(m["embedding_dim"]),
                   teacher_metrics=dict(m.get("teacher_metrics") or {}), probe_ceiling=m.get("probe_ceiling"),
                   lora_trainable_params=m.get("lora_trainable_params"),
                   data_key=m.get("data_key") or (m.get("inputs") or {}).get("data_key"))

    @property
    def model_identity(self) -> dict[str, Any] | None:
        return self.inputs.get("model")

    @property
    def embedder_identity(self) -> dict[str, Any] | None:
        return self.inputs.get("embedder")

    @property
    def embedder_name(self) -> str | None:
        """The ``--embedder`` the cache was made with (what ``student predict`` loads for new texts)."""
        return (self.inputs.get("config") or {}).get("embedder")


def teacher_manifest(path: Path) -> TeacherManifest:
    """The manifest of a complete teacher cache, checked (``read_manifest``) and typed."""
    return TeacherManifest.from_dict(read_manifest(path))


@dataclass(frozen=True, kw_only=True)
class RunManifest:
    """manifest.json of a student run (``cache/student/<key>/``): written last by the student stage, read back by
    ``student predict``, ``export``, ``noise`` and the report (``stages.student.run.StudentRun.open``)."""

    key: str
    inputs: dict[str, Any]
    teacher_key: str
    task: str
    class_names: list[str]
    config: dict[str, Any]  # the StudentConfig (seeds as a list), plus circuit_params (quantum) or hidden (mlp)
    created: str
    embedding_dim: int | None = None
    embedder: dict[str, Any] | None = None  # the teacher cache's embedder identity
    embedder_name: str | None = None  # its --embedder: what `predict` and `export --texts` load for new texts
    kind: str = "student-run"

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, m: Any) -> "RunManifest":
        """The manifest of a student run; ``ValueError`` when ``m`` is not one (unknown keys are ignored)."""
        if not isinstance(m, dict):
            raise ValueError("a student run's manifest is a JSON object")
        try:
            manifest = cls(**{k: v for k, v in m.items() if k in cls.__dataclass_fields__})
        except TypeError as e:  # a required field is missing
            raise ValueError(str(e)) from None
        if not (isinstance(manifest.key, str) and isinstance(manifest.teacher_key, str)
                and isinstance(manifest.config, dict) and isinstance(manifest.class_names, list)):
            raise ValueError("key, teacher_key, config or class_names has the wrong type")
        return manifest

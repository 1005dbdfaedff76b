"""From user settings to stage configs, keys and directories, computed the same way by the CLI and Make."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import keys, paths
from pipeline.config import DataConfig, StudentConfig, TeacherConfig
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

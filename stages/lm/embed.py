"""Frozen embeddings of every text: the quantum student's input.

A sentence encoder (``minilm``: all-MiniLM-L6-v2, D=384, or ``mpnet``: all-mpnet-base-v2, D=768, both
packaged; which one is the default follows the teacher profile in ``pipeline/config.py``) gives its token
states mean-pooled over the attention mask; any hub/local encoder the same way (e.g.
``bert-base-uncased`` as in the paper); ``<name>-static``: that encoder distilled into static
token vectors (model2vec), a lookup and a mean per text, no torch; or ``teacher-input``: the
teacher LLM's own input-embedding layer, mean-pooled over non-pad tokens. Nothing here is trained.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.console import progress

ENCODER_MAX_LENGTH = 128


def _mean_pool(states, mask):
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


def _batches(texts: list[str], batch_size: int):
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: little padding
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


def embed_texts(name: str, texts: list[str], *, label: str = "embedding") -> np.ndarray:
    """(N, D) float32 embeddings of ``texts`` by the named frozen embedder (not ``teacher-input``)."""
    return load_encoder(name, label=label)(texts)


def load_encoder(name: str, *, label: str = "embedding") -> Callable[[list[str]], np.ndarray]:
    """The named frozen embedder loaded once: a function from texts to (N, D) float32 embeddings."""
    from pipeline.models import STATIC_SUFFIX
    from stages.lm.models import resolve_embedder_dir

    if name.endswith(STATIC_SUFFIX):
        return static_encoder(resolve_embedder_dir(name))
    return transformer_encoder(resolve_embedder_dir(name), label=label)


def static_encoder(model_dir: str, batch_size: int = 4096) -> Callable[[list[str]], np.ndarray]:
    """Static embeddings: token-vector lookup and mean (model2vec), NumPy only."""
    from model2vec import StaticModel

    model = StaticModel.from_pretrained(model_dir)
    return lambda texts: np.asarray(model.encode(list(texts), batch_size=batch_size, show_progress_bar=False),
                                    dtype=np.float32)


def usable_positions(config) -> int | None:
    """How many tokens the encoder's position table holds: ``max_position_embeddings``, less the offset of the
    RoBERTa family (MPNet, XLM-R), whose positions start after the padding index."""
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or n < 2:
        return None
    if getattr(config, "model_type", "") in ("roberta", "mpnet", "xlm-roberta", "camembert"):
        n -= (getattr(config, "pad_token_id", None) or 0) + 1
    return max(2, n)


def transformer_encoder(model_dir: str, *, batch_size: int = 64, max_length: int = ENCODER_MAX_LENGTH,
                        label: str = "embedding") -> Callable[[list[str]], np.ndarray]:
    """Mean-pooled last hidden states of a frozen encoder, (N, D) float32."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from stages.lm.models import device_and_dtype

    device, _ = device_and_dtype()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    max_length = min(max_length, usable_positions(model.config) or max_length)  # a long text is cut, not a crash

    def encode(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        with progress() as bar, torch.inference_mode():
            task = bar.add_task(label, total=len(texts))
            for idx in _batches(texts, batch_size):
                enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt").to(device)
                states = model(**enc).last_hidden_state
                out[idx] = _mean_pool(states.float(), enc["attention_mask"]).cpu().numpy()
                bar.advance(task, len(idx))
        return out

    return encode


def teacher_input_embeddings(model, tokenizer, texts: list[str], *, max_length: int, batch_size: int = 128) -> np.ndarray:
    """Mean of the LLM's input-embedding vectors over each text's non-pad tokens, (N, hidden) float32."""
    import torch

    emb = model.get_input_embeddings()
    device = emb.weight.device
    out = np.zeros((len(texts), emb.weight.shape[1]), dtype=np.float32)
    with torch.inference_mode():
        for idx in _batches(texts, batch_size):
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)
            out[idx] = _mean_pool(emb(enc["input_ids"]).float(), enc["attention_mask"]).cpu().numpy()
    return out

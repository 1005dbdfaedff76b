"""Tiny language models built from configs (no hub, no downloads) and data for them, shared by the tests."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.config import DataConfig, TeacherConfig
from pipeline.plan import data_key, data_path

# ---------------------------------------------------------------- classifiers (teacher stage)

POS = "good great fine lovely superb happy nice".split()
NEG = "bad awful poor boring sad ugly dull".split()
FILL = "the a movie film story plot was is and very".split()
WORDS = POS + NEG + FILL


def tiny_tokenizer():
    """Word-level tokenizer without a pad token (the stage must set one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def tiny_config(family: str, layers: int = 2):
    import transformers

    v = len(WORDS) + 3
    if family == "llama":
        return transformers.LlamaConfig(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if family == "bloom":
        return transformers.BloomConfig(vocab_size=v, hidden_size=32, n_layer=layers, n_head=4)
    return transformers.OPTConfig(vocab_size=v, hidden_size=32, ffn_dim=64, num_hidden_layers=layers,
                                  num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32)


def tiny_model_dir(root: Path, family: str = "llama", layers: int = 2) -> Path:
    import torch
    import transformers

    out = root / (f"tiny-{family}" if layers == 2 else f"tiny-{family}-{layers}l")
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        transformers.AutoModelForCausalLM.from_config(tiny_config(family, layers)).save_pretrained(out)
        tiny_tokenizer().save_pretrained(out)
    return out


def tiny_encoder_dir(root: Path) -> Path:
    import torch
    import transformers

    out = root / "tiny-bert"
    cfg = transformers.BertConfig(vocab_size=len(WORDS) + 3, hidden_size=24, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(out)
    tok = tiny_tokenizer()
    tok.pad_token = "<unk>"
    tok.save_pretrained(out)
    return out


def text(rng, label: int) -> str:
    words = list(rng.choice(POS if label else NEG, 2)) + list(rng.choice(FILL, int(rng.integers(1, 6))))
    rng.shuffle(words)
    return " ".join(words)


def write_tiny_dataset(n=(48, 16, 16), task: str = "emotion") -> DataConfig:
    from stages.data.dataset import frame, write_dataset

    dcfg = DataConfig(task=task)
    key = data_key(dcfg)
    rng = np.random.default_rng(1)
    splits = {}
    for name, m in zip(("train", "val", "test"), n):
        labels = [i % 2 for i in range(m)]
        splits[name] = frame([f"{text(rng, y)} {name} {i}" for i, y in enumerate(labels)], labels)
    write_dataset(data_path(dcfg, key), splits, task=task, class_names=["negative", "positive"], key=key.full,
                  inputs=key.inputs)
    return dcfg


def tiny_teacher(model_dir: Path, **kw) -> TeacherConfig:
    base = TeacherConfig(model=str(model_dir), lora_r=4, lora_alpha=8, lora_dropout=0.1, lr=5e-3, epochs=2,
                         batch_size=8, max_length=16, max_train_examples=0, max_export_examples=0,
                         embedder="teacher-input", profile="cpu")
    return replace(base, **kw)



# ---------------------------------------------------------------- a causal LM with a byte-level BPE (stego generator)

STEGO_WORDS = ("the cat sat on a mat and the dog ran to the park while birds sang in trees today news city "
         "council votes new budget team wins final game rain again my plans are ruined so happy tired "
         "beach back home love this weather coffee morning week end good night friends").split()
STEGO_PROMPT = "the cat sat on a mat\ncity council votes new budget\n"


@functools.lru_cache(maxsize=None)
def tiny_lm(seed: int = 0):
    """A 2-layer Llama over a 400-token byte-level BPE trained here: offline, fast, and BPE-ambiguous like real ones."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from stages.data.stego import LanguageModel

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(STEGO_WORDS[(i * 7 + j * 3) % len(STEGO_WORDS)] for j in range(12)) for i in range(200)]
    tok.train_from_iterator(corpus + [w.capitalize() + "!" for w in STEGO_WORDS] + ["\n".join(STEGO_WORDS[:5])], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      initializer_range=0.5, eos_token_id=0, bos_token_id=0, pad_token_id=0)
    return LanguageModel(LlamaForCausalLM(cfg).float().eval(), fast)



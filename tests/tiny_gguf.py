"""Tiny GGUF files written the way llama.cpp's converter writes them (no hub, no downloads): a small Gemma-3 or
Qwen2 model from a config, its tensors in fp32 under GGUF's names, its tokenizer in GGUF's metadata. What the
packaged teacher ladder ships, in miniature, so the reassembly and conversion run for real in the default suite."""

from __future__ import annotations

from pathlib import Path

from tiny_models import WORDS

ARCH = {"gemma3": "gemma3", "qwen2": "qwen2"}  # family -> general.architecture


def tiny_family_config(family: str, vocab_size: int):
    """A 2-layer config of the architecture each GGUF rung converts to (Gemma3ForCausalLM, Qwen2ForCausalLM)."""
    import transformers

    if family == "gemma3":
        return transformers.Gemma3TextConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=1, head_dim=8, max_position_embeddings=64, sliding_window=16,
            layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=8, pad_token_id=0,
            eos_token_id=1, bos_token_id=2, tie_word_embeddings=True)
    if family == "qwen2":
        return transformers.Qwen2Config(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, bos_token_id=0,
            eos_token_id=0, pad_token_id=0)
    raise ValueError(family)


def _gemma_vocab() -> tuple[list[str], list[float], list[int]]:
    """A sentencepiece-style vocabulary: specials, "▁", the letters, then whole "▁word" pieces with every prefix."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    pieces: list[str] = ["\u2581", *"abcdefghijklmnopqrstuvwxyz0123456789"]
    for w in WORDS:
        for k in range(2, len(w) + 2):
            p = "\u2581" + w[: k - 1]
            if p not in pieces and len(p) > 1:
                pieces.append(p)
    tokens = specials + pieces
    scores = [0.0] * len(specials) + [-float(i) for i in range(len(pieces))]
    types = [3, 3, 3, 2] + [1] * len(pieces)  # CONTROL, UNKNOWN, NORMAL
    return tokens, scores, types


def _qwen_vocab() -> tuple[list[str], list[str], list[int]]:
    """A byte-level BPE trained here over the tiny words, plus one control token (GGUF's gpt2 tokenizer model)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 4 + [f"{a} {b}" for a in WORDS for b in WORDS[:5]], trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t == "<|endoftext|>" else 1 for t in tokens]
    return tokens, merges, types


def write_tiny_gguf(path: Path, family: str, *, seed: int = 0):
    """Write a tiny ``family`` model as an fp32 GGUF at ``path``; returns the model written (its weights are what a
    correct conversion gives back)."""
    import gguf
    import torch
    import transformers

    if family == "gemma3":
        tokens, scores, types = _gemma_vocab()
    else:
        tokens, merges, types = _qwen_vocab()
    cfg = tiny_family_config(family, len(tokens))
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).float().eval()
    if family == "gemma3":  # non-zero norms, so the converter's "stored as w + 1" is checked
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.normal_(0, 0.1)

    arch = ARCH[family]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny {family}")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    if family == "gemma3":
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_sliding_window(cfg.sliding_window)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_pad_token_id(0)
        w.add_eos_token_id(1)
        w.add_bos_token_id(2)
        w.add_unk_token_id(3)
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2")
        w.add_token_list(tokens)
        w.add_token_merges(merges)
        w.add_token_types(types)
        eot = tokens.index("<|endoftext|>")
        w.add_bos_token_id(eot)
        w.add_eos_token_id(eot)
        w.add_pad_token_id(eot)

    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_enum, cfg.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        base, suffix = hf_name.rsplit(".", 1)
        name = names.get_name(base)
        assert name is not None, hf_name
        data = tensor.detach().float().numpy().copy()
        if family == "gemma3" and "norm" in hf_name:
            data = data + 1.0  # llama.cpp stores Gemma's zero-centred norms as w + 1
        w.add_tensor(f"{name}.{suffix}", data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model

"""Frozen embedders: the packaged mpnet from its split archive, static distillations that need no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT
from pipeline.models import embedder_identity

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("model2vec")

WORDS = "good great fine bad awful poor the a movie film story was is very".split()


def tiny_encoder(root):
    """A two-layer BERT with a word-piece vocabulary of a few words, built from a config."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = root / "tiny-bert"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_static_embedder_identity_is_keyed_apart_from_its_base(tmp_path):
    base = tiny_encoder(tmp_path)
    ident = embedder_identity(f"{base}-static")
    assert ident["static"] == embedder_identity(str(base)) and ident["tool"] == "model2vec"
    assert embedder_identity("minilm-static")["static"] == embedder_identity("minilm")
    with pytest.raises(Exception, match="no static form"):
        embedder_identity("teacher-input-static")


def test_static_encoding_is_a_lookup_and_a_mean_without_torch(tmp_path):
    """A static model saved by model2vec encodes in a process that never imports torch or transformers."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    vectors = np.random.default_rng(0).normal(size=(len(vocab), 8)).astype(np.float32)
    StaticModel(vectors, tok, normalize=False).save_pretrained(str(tmp_path / "static"))
    code = ("import sys; from stages.lm.embed import static_encoder; "
            f"v = static_encoder({str(tmp_path / 'static')!r})(['good movie', 'bad film', 'good']); "
            "import numpy as np; print(np.round(v[2], 4).tolist()); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[-1] == "False False", out
    assert np.allclose(eval(lines[-2]), np.round(vectors[vocab["good"]], 4), atol=1e-4)


@pytest.mark.slow
def test_minilm_static_is_distilled_once(tmp_path):
    from stages.lm.embed import embed_texts
    from stages.lm.models import static_embedder_dir

    texts = ["A wonderful film.", "A dreadful film.", "A wonderful film."]
    v = embed_texts("minilm-static", texts)
    assert v.shape == (3, 256) and np.allclose(v[0], v[2]) and not np.allclose(v[0], v[1])
    out = static_embedder_dir("minilm")
    stamp = (out / "manifest.json").stat().st_mtime_ns
    embed_texts("minilm-static", texts[:1])
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # made once


@pytest.mark.slow
def test_packaged_mpnet_joins_its_pieces_and_embeds_in_768_dims():
    from stages.lm.embed import embed_texts

    v = embed_texts("mpnet", ["A wonderful film.", "A dreadful film.", "What a wonderful movie."])
    assert v.shape == (3, 768)
    cos = (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T
    assert cos[0, 2] > cos[0, 1]


def test_a_text_longer_than_the_encoders_positions_is_cut_not_a_crash(tmp_path):
    from tiny_models import tiny_encoder_dir

    from stages.lm.embed import transformer_encoder, usable_positions

    path = tiny_encoder_dir(tmp_path)  # 64 positions
    assert usable_positions(transformers.AutoConfig.from_pretrained(path)) == 64
    long = " ".join(["good movie"] * 2500)  # 5,000 words
    out = transformer_encoder(str(path))(["good", long])
    assert out.shape == (2, 24) and np.isfinite(out).all()
    mpnet = transformers.MPNetConfig(max_position_embeddings=514, pad_token_id=1)
    assert usable_positions(mpnet) == 512

"""Steganography: exact round trips, clear failures on foreign text, resumable corpus generation, length matching."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from pipeline.errors import QdllmError
from stages.data import stego_coder as C
from tiny_models import STEGO_PROMPT as PROMPT  # noqa: F401
from tiny_models import STEGO_WORDS as WORDS
from tiny_models import tiny_lm  # noqa: F401

def settings(**kw):
    from stages.data.stego import StegoSettings

    return StegoSettings(**{"prompt": PROMPT, "top_k": 16, **kw})


# ---------------------------------------------------------------- the coder alone


def test_coder_emits_exactly_the_hidden_bits():
    """Choosing symbols from a bit stream and re-encoding them gives the stream back, for random distributions."""
    rng = np.random.default_rng(1)
    for trial in range(30):
        stream = [int(b) for b in rng.integers(0, 2, int(rng.integers(1, 300)))]
        hide, seek = C.ArithmeticCoder(stream=stream), C.ArithmeticCoder()
        while len(hide.emitted) < len(stream):
            probs = np.sort(rng.dirichlet(np.full(int(rng.integers(2, 50)), 0.3)))[::-1]
            cum = C.quantise(probs, 16)
            assert cum[-1] == 1 << 16 and np.all(np.diff(cum) >= 1)
            i = hide.choose(cum)
            hide.update(cum, i)
            seek.update(cum, i)
        assert hide.emitted[: len(stream)] == stream
        assert seek.emitted == hide.emitted


def test_frame_checks_length_and_crc():
    rng = random.Random(0)
    for n in (0, 1, 7, 64, 300):
        bits = [rng.randint(0, 1) for _ in range(n)]
        framed = C.frame(bits)
        assert len(framed) == n + 32
        assert C.unframe(framed + [1, 0, 1]) == bits  # trailing bits are ignored
        flipped = list(framed)
        flipped[rng.randrange(len(flipped))] ^= 1
        assert C.unframe(flipped) != bits
    assert C.unframe([0, 1] * 10) is None
    with pytest.raises(QdllmError):
        C.frame([0, 2])


# ---------------------------------------------------------------- hide and recover with a tiny model


def test_round_trip_many_random_bit_strings():
    from stages.data.stego import decode_text, encode_bits

    lm = tiny_lm()
    rng = random.Random(7)
    for n in [0, 0, 1, 2, 3, 8, 13, 31, 64, 100, 160]:
        bits = [rng.randint(0, 1) for _ in range(n)]
        hidden = encode_bits(bits, settings(), lm=lm)
        assert hidden.message_bits == n and hidden.payload_bits == n + 32
        assert "\n" not in hidden.text and hidden.text == hidden.text.strip()
        assert decode_text(hidden.text, settings(), lm=lm) == bits


def test_round_trip_with_nucleus_and_other_precision():
    from stages.data.stego import decode_text, encode_bits

    lm = tiny_lm()
    for s in (settings(top_k=None, top_p=0.8), settings(top_k=8, top_p=0.95, precision=24, freq_bits=12)):
        bits = [int(b) for b in np.random.default_rng(3).integers(0, 2, 48)]
        assert decode_text(encode_bits(bits, s, lm=lm).text, s, lm=lm) == bits


def test_foreign_or_changed_text_fails_clearly():
    from stages.data.stego import decode_text, encode_bits

    lm = tiny_lm()
    with pytest.raises(QdllmError, match="outside the truncated|no valid payload"):
        decode_text("the dog ran to the park while birds sang", settings(), lm=lm)
    text = encode_bits([1, 0, 1, 1, 0, 0, 1, 0] * 3, settings(), lm=lm).text
    with pytest.raises(QdllmError, match="outside the truncated|no valid payload"):
        decode_text(text, settings(top_k=8, prompt="another prompt\n"), lm=lm)
    with pytest.raises(QdllmError, match="outside the truncated|no valid payload"):
        decode_text(text[: len(text) // 3], settings(), lm=lm)  # cut short: the CRC cannot check out
    with pytest.raises(QdllmError, match="empty"):
        decode_text("", settings(), lm=lm)


def test_bad_settings_are_user_errors():
    from stages.data.stego import encode_bits

    for bad in (settings(top_k=None), settings(top_k=1), settings(top_p=1.5), settings(precision=12),
                settings(dtype="int8"), settings(threads=0)):
        with pytest.raises(QdllmError):
            encode_bits([1], bad, lm=tiny_lm())
    with pytest.raises(QdllmError, match="max-tokens"):
        encode_bits([1] * 400, settings(max_tokens=10), lm=tiny_lm())


# ---------------------------------------------------------------- the corpus


COVERS = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(3 + i % 9)) for i in range(40)]


def corpus_settings(batch_size=4):
    from stages.data.stego import CorpusSettings

    return CorpusSettings(stego=settings(canonical=False, top_k=32), shots=3, batch_size=batch_size)


def test_generation_resumes_where_it_stopped(tmp_path, monkeypatch):
    from stages.data import stego as S

    lm = tiny_lm()
    fresh = S.generate_stego_texts(COVERS, 10, seed=3, work_dir=tmp_path / "a", settings=corpus_settings(), lm=lm)
    assert len(fresh) == 10 and all(fresh)

    real, calls = S._generate_batch, []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(S, "_generate_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        S.generate_stego_texts(COVERS, 10, seed=3, work_dir=tmp_path / "b", settings=corpus_settings(), lm=lm)
    saved = (tmp_path / "b" / "stegos.jsonl").read_text().splitlines()
    assert len(saved) == 8  # two batches of four were finished before the interruption
    calls.clear()
    monkeypatch.setattr(S, "_generate_batch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = S.generate_stego_texts(COVERS, 10, seed=3, work_dir=tmp_path / "b", settings=corpus_settings(), lm=lm)
    assert len(calls) == 1 and resumed == fresh  # only the last batch was made, and the texts are the same
    calls.clear()
    assert S.generate_stego_texts(COVERS, 10, seed=3, work_dir=tmp_path / "b", settings=corpus_settings(),
                                  lm=lm) == fresh and not calls
    other = S.generate_stego_texts(COVERS, 10, seed=4, work_dir=tmp_path / "b", settings=corpus_settings(), lm=lm)
    assert len(calls) == 3 and other != fresh  # another seed starts over instead of mixing corpora
    assert S.corpus_stats(tmp_path / "b")["texts"] == 10


def test_lengths_follow_the_covers(tmp_path):
    from stages.data import stego as S

    stegos = S.generate_stego_texts(COVERS, 40, seed=0, work_dir=tmp_path, settings=corpus_settings(20), lm=tiny_lm())
    rows = [json.loads(line) for line in (tmp_path / "stegos.jsonl").read_text().splitlines()]
    assert all(r["words"] <= r["target"] for r in rows)
    assert all(r["words"] == r["target"] for r in rows if not r["capped"])  # a random tiny LM hits the cap often
    assert sum(not r["capped"] for r in rows) >= 5
    assert all(r["bits"] > 0 for r in rows)
    hist = S.length_histograms(COVERS, stegos)
    assert sum(hist["cover"].values()) == len(COVERS) and sum(hist["stego"].values()) == 40
    assert set(hist["stego"]) <= set(range(1, max(hist["cover"]) + 1))
    assert sorted(r["target"] for r in rows) != sorted([rows[0]["target"]] * 40)  # targets vary like the covers


def test_length_histograms_counts_words():
    from stages.data.stego import length_histograms

    assert length_histograms(["a b", "c d", "e"], ["x y z"]) == {"cover": {1: 1, 2: 2}, "stego": {3: 1}}


@pytest.mark.slow
def test_round_trip_with_packaged_smollm2():
    """The real offline default model: hide a message, read it back; a cover line is rejected."""
    from stages.data.stego import StegoSettings, decode_text, encode_bits

    bits = C.bytes_to_bits("meet at noon".encode())
    for s in (StegoSettings(), StegoSettings(top_k=None, top_p=0.9)):
        hidden = encode_bits(bits, s)
        assert hidden.bits_per_word > 1
        assert decode_text(hidden.text, s) == bits
    with pytest.raises(QdllmError):
        decode_text("City council approves new budget for road repairs", StegoSettings())

"""Hostile input, round three: data that is not what its key says, one key per setting, one sentence per error."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import polars as pl
import pytest

from helpers import run_cli


def fails(proc, *words: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    err = " ".join(proc.stderr.split())
    assert err.count("error:") == 1, out
    message = err[err.index("error:"):]
    for w in words:
        assert w in message, (w, message)
    return message


def key(*args: str) -> str:
    proc = run_cli("key", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# ---------------------------------------------------------------- 9: equal settings, one key

@pytest.mark.parametrize("a,b", [
    (["--alpha", "-0"], ["--alpha", "0"]),
    (["--variant", "parallel:02"], ["--variant", "parallel:2"]),
    (["--gradient", "spsa", "--train-noise", "readout:0.02+depolarizing:0.001,0.01"],
     ["--gradient", "spsa", "--train-noise", "depolarizing:0.001,0.010+readout:0.020"]),
    (["--gradient", "spsa", "--train-noise", "none"], ["--gradient", "spsa"]),
])
def test_two_spellings_of_one_student_setting_give_one_key(a, b):
    assert key("student", "--teacher-key", "K", *a) == key("student", "--teacher-key", "K", *b)


def test_two_spellings_of_one_teacher_setting_give_one_key():
    assert key("teacher", "--weight-decay", "-0") == key("teacher", "--weight-decay", "0.0")


@pytest.mark.parametrize("args,words", [
    (["key", "student", "--teacher-key", "K", "--variant", "parallel:\u00b2"], ["parallel:\u00b2", "K from 2 to"]),
    (["key", "student", "--teacher-key", "K", "--variant", "parallel:\u0663"], ["K from 2 to"]),
    (["key", "teacher", "--lora-r", "1000000000000"], ["--lora-r", "<= 65536"]),
])
def test_values_that_used_to_crash_are_one_sentence(args, words):
    fails(run_cli(*args), *words)


def test_a_bad_thread_count_is_one_sentence(monkeypatch):
    from pipeline.errors import QdllmError
    from stages.lm.models import cpu_threads

    for bad in ("abc", "0", "-2", "1e3", "\u0663"):
        monkeypatch.setenv("QDLLM_THREADS", bad)
        with pytest.raises(QdllmError, match="QDLLM_THREADS"):
            cpu_threads()
    monkeypatch.setenv("QDLLM_THREADS", "3")
    assert cpu_threads() == 3


# ---------------------------------------------------------------- 7, 8: labels as text, texts as one form

def _built(root: Path) -> tuple[dict, pl.DataFrame]:
    (manifest,) = (root / "data").rglob("manifest.json")
    frames = [pl.read_parquet(p) for p in manifest.parent.glob("*.parquet")]
    return json.loads(manifest.read_text()), pl.concat(frames, how="diagonal_relaxed")


def test_integer_labels_beyond_float_precision_stay_apart(isolated_dirs, tmp_path):
    big = ["12345678901234567891", "12345678901234567892", "9" * 400]
    rows = [{"text": f"an example text number {i} for class {i % 3}", "label": big[i % 3]} for i in range(45)]
    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli("data", "--task", "bigl", "--source", str(src))
    assert proc.returncode == 0, proc.stderr
    manifest, df = _built(isolated_dirs)
    assert sorted(manifest["class_names"]) == sorted(big)
    assert df["label"].n_unique() == 3


def test_nfc_and_nfd_copies_of_a_text_are_one_text(isolated_dirs, tmp_path):
    words = ["café", "naïve", "crème brûlée", "résumé", "über", "jalapeño", "façade", "piñata", "smörgåsbord",
             "déjà vu", "Ångström", "Zoë"]
    rows = []
    for i in range(40):
        text = f"{words[i % len(words)]} sentence {i // len(words)} with label {i % 2}"
        rows.append({"text": unicodedata.normalize("NFC", text), "label": i % 2})
        rows.append({"text": unicodedata.normalize("NFD", text), "label": i % 2})
    src = tmp_path / "forms.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    proc = run_cli("data", "--task", "forms", "--source", str(src))
    assert proc.returncode == 0, proc.stderr
    _, df = _built(isolated_dirs)
    assert df.height == 40 and df["text"].n_unique() == 40
    assert all(unicodedata.is_normalized("NFC", t) for t in df["text"])

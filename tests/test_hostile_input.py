"""Hostile input to the settings and the data stage: one sentence, a non-zero exit, no traceback, nothing written.

Each case is run as a user would, through ``qdllm`` in a subprocess, against this test's own empty roots.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli


def assert_clean_refusal(result, *words: str) -> str:
    """Exit code 2, one ``error:`` sentence naming ``words``, no traceback."""
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out, out
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    message = " ".join(result.stderr.split())  # rich wraps long lines
    for w in words:
        assert w in message, (w, out)
    return message


def written(root: Path) -> list[Path]:
    return sorted(p for sub in ("data", "cache") if (root / sub).exists() for p in (root / sub).rglob("*")
                  if p.is_file() and p.name != ".file-hashes.json" and not p.name.endswith(".lock"))  # locks stay, empty


# ---------------------------------------------------------------- 1, 2, 17: numbers the settings must refuse

@pytest.mark.parametrize("args,words", [
    (["key", "student", "--teacher-key", "K", "--temperature", "inf"], ["--temperature", "finite"]),
    (["key", "student", "--teacher-key", "K", "--temperature", "nan"], ["--temperature", "finite"]),
    (["key", "student", "--teacher-key", "K", "--lr", "inf"], ["--lr", "finite"]),
    (["key", "student", "--teacher-key", "K", "--lr", "-inf"], ["--lr", "finite"]),
    (["key", "student", "--teacher-key", "K", "--alpha", "nan"], ["--alpha", "finite"]),
    (["key", "teacher", "--teacher-lr", "inf"], ["--teacher-lr", "finite"]),
    (["key", "teacher", "--weight-decay", "inf"], ["--weight-decay", "finite"]),
    (["key", "teacher", "--lora-dropout", "nan"], ["--lora-dropout", "finite"]),
    (["key", "data", "--split", "nan,0.5,0.5"], ["--split", "finite"]),
    (["key", "data", "--split", "inf,0.5,0.5"], ["--split", "finite"]),
    (["data", "--split", "nan,0.5,0.5"], ["--split", "finite"]),
    (["key", "data", "--seed", "-1"], ["--seed", ">= 0"]),
    (["data", "--seed", "-1"], ["--seed", ">= 0"]),
    (["key", "teacher", "--seed", "4294967296"], ["--seed", "4294967295"]),
    (["key", "student", "--teacher-key", "K", "--seeds", "0,-2"], ["--seeds", "-2", "from 0"]),
    (["student", "--teacher-key", "K", "--seeds", "0,-2"], ["--seeds", "-2", "from 0"]),
    (["key", "data", "--split", "1,0,0"], ["--split", "positive"]),
    (["data", "--split", "0.5,0.5,0"], ["--split", "positive"]),
    (["key", "student", "--teacher-key", "K", "--batch-size", "1000000"], ["--batch-size 1000000", "smaller --batch-size"]),
    (["key", "student", "--teacher-key", "K", "--gradient", "spsa", "--train-noise", "bogus"],
     ["Unknown noise model 'bogus' in --train-noise"]),
    (["key", "student", "--teacher-key", "K", "--gradient", "spsa", "--train-noise", "depolarizing:0.1"],
     ["--train-noise", "two probabilities P1,P2"]),
])
def test_bad_numbers_are_refused_in_one_sentence_before_any_work(isolated_dirs, args, words):
    message = assert_clean_refusal(run_cli(*args), *words)
    assert "--qubits" not in message or "--batch-size" in message
    assert written(isolated_dirs) == []


def test_too_many_qubits_still_names_the_qubits():
    assert_clean_refusal(run_cli("key", "student", "--teacher-key", "K", "--qubits", "60"), "--qubits 60", "fit")


# ---------------------------------------------------------------- 4, 15: data files that hold the wrong things

def _jsonl(rows: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD = [f"text number {i} about things" for i in range(20)]

BAD_FILES = {
    "text is a list": ("x.jsonl", _jsonl([{"text": [t], "label": i % 2} for i, t in enumerate(GOOD)]),
                       ["row 1", "'text'", "a list"]),
    "one text is a list": ("x.jsonl", _jsonl([{"text": t if i else [t], "label": i % 2} for i, t in enumerate(GOOD)]),
                           ["row 1", "'text'", "a list"]),
    "label is an object": ("x.jsonl", _jsonl([{"text": t, "label": {"v": i % 2}} for i, t in enumerate(GOOD)]),
                           ["row 1", "'label'", "an object"]),
    "label is a list": ("x.jsonl", _jsonl([{"text": t, "label": [i % 2]} for i, t in enumerate(GOOD)]),
                        ["'label'", "a list"]),
    "a line is a list": ("x.jsonl", _jsonl([[t, i % 2] for i, t in enumerate(GOOD)]), ["line 1", "not an object"]),
    "a line is not JSON": ("x.jsonl", "{\"text\": \"a\", \"label\": 0}\n{oops\n", ["line 2", "not valid JSON"]),
    "a fractional label": ("x.jsonl", _jsonl([{"text": t, "label": 0.5 * (i % 3)} for i, t in enumerate(GOOD)]),
                           ["label 0.5", "class names or integers"]),
    "an infinite label": ("x.jsonl", "".join(f'{{"text": "{t}", "label": Infinity}}\n' for t in GOOD),
                          ["label inf"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_tables_with_lists_objects_or_fractions_are_refused(isolated_dirs, case):
    name, body, words = BAD_FILES[case]
    src = isolated_dirs / name
    src.write_text(body)
    assert_clean_refusal(run_cli("data", "--task", "mine", "--source", str(src)), *words)
    assert written(isolated_dirs) == []


def _class_names(root: Path, task: str) -> list[str]:
    (manifest,) = (root / "data" / task).glob("*/manifest.json")
    return json.loads(manifest.read_text())["class_names"]


@pytest.mark.parametrize("labels,task,names", [
    ([0.0, 1.0], "emotion", ["negative", "positive"]),  # float labels of a registered task: its class names
    (["0.0", "1.0"], "emotion", ["negative", "positive"]),
    ([0.0, 1.0, float("nan")], "mine", ["0", "1"]),  # NaN is a missing label, not a class
    ([True, False], "mine", ["0", "1"]),
])
def test_numeric_labels_are_integers_and_nan_is_unlabelled(isolated_dirs, labels, task, names):
    import polars as pl

    rows = [(t, labels[i % len(labels)]) for i, t in enumerate(GOOD * 2)]
    src = isolated_dirs / "labels.parquet"
    pl.DataFrame({"text": [t for t, _ in rows], "label": [y for _, y in rows]}, strict=False).write_parquet(src)
    r = run_cli("data", "--task", task, "--source", str(src))
    assert r.returncode == 0, r.stderr
    assert _class_names(isolated_dirs, task) == names


def test_nan_in_a_csv_of_integer_labels_is_unlabelled(isolated_dirs):
    src = isolated_dirs / "labels.csv"
    src.write_text("text,label\n" + "".join(f"{t},{i % 2}.0\n" for i, t in enumerate(GOOD)) + "what,NaN\n")
    r = run_cli("data", "--task", "mine", "--source", str(src))
    assert r.returncode == 0, r.stderr
    assert _class_names(isolated_dirs, "mine") == ["0", "1"]


@pytest.mark.parametrize("args,words", [
    (["--max-per-class", "1"], ["--max-per-class 1", "val split empty", "at least 4"]),
    (["--max-per-class", "3", "--split", "0.8,0.1,0.1"], ["--max-per-class 3", "empty", "at least"]),
])
def test_a_cap_that_empties_a_split_is_refused(isolated_dirs, args, words):
    src = isolated_dirs / "small.csv"
    src.write_text("text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(GOOD)))
    assert_clean_refusal(run_cli("data", "--task", "mine", "--source", str(src), *args), *words)
    assert written(isolated_dirs) == []


def test_a_source_replaced_by_one_of_the_same_size_and_mtime_is_rebuilt(isolated_dirs, monkeypatch):
    """The file-hash memo must never serve the old content: flipped labels give a new data key and dataset."""
    import os
    import time

    src = isolated_dirs / "mine.csv"
    body = "text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(GOOD))
    src.write_text(body)
    st = src.stat()
    time.sleep(2.1)  # older than the memo's racy window, so the first digest is remembered
    first = run_cli("key", "data", "--task", "mine", "--source", str(src)).stdout.strip()
    assert run_cli("key", "data", "--task", "mine", "--source", str(src)).stdout.strip() == first
    src.write_text(body.replace(",0\n", ",x\n").replace(",1\n", ",0\n").replace(",x\n", ",1\n"))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert src.stat().st_size == st.st_size and src.stat().st_mtime_ns == st.st_mtime_ns
    assert run_cli("key", "data", "--task", "mine", "--source", str(src)).stdout.strip() != first


def test_a_read_only_data_root_is_one_sentence_and_leaves_nothing(isolated_dirs, read_only_dir):
    src = isolated_dirs / "mine.csv"
    src.write_text("text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(GOOD)))
    r = run_cli("data", "--task", "mine", "--source", str(src), env={"QDLLM_DATA_DIR": str(read_only_dir / "data")})
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out, out
    assert out.count("error:") == 1 and "read-only" in out and str(read_only_dir) in " ".join(out.split())
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize("command", ["pull", "import"])
def test_a_read_only_cache_root_is_one_sentence_for_pull_and_import(isolated_dirs, read_only_dir, command):
    """`cache pull` and `cache import` into a cache root nobody may write: one sentence, exit 1, nothing left."""
    from helpers import write_synthetic_cache

    source = isolated_dirs / "source"
    write_synthetic_cache(source / "teacher" / "k1", key="k1")
    if command == "pull":
        args = ["cache", "pull", "--remote", str(source)]
    else:
        tar = isolated_dirs / "c.tar"
        assert run_cli("cache", "export", "--to", str(tar), "--key", "k1",
                       env={"QDLLM_CACHE_DIR": str(source)}).returncode == 0
        args = ["cache", "import", str(tar)]
    r = run_cli(*args, env={"QDLLM_CACHE_DIR": str(read_only_dir / "cache")})
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out, out
    assert out.count("error:") == 1 and "read-only" in out
    assert list(read_only_dir.iterdir()) == []

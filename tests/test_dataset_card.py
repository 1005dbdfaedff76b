"""A teacher cache is a Hugging Face dataset: its card (README.md) makes `load_dataset(<cache dir>)` work with no
arguments, is written deterministically from the manifest, and travels with the cache, verified."""

import json

import pytest

from helpers import write_synthetic_cache
from pipeline import remote as R
from pipeline.cache import read_teacher_cache
from pipeline.card import CARD, card_text
from pipeline.errors import QdllmError


@pytest.fixture
def cache(isolated_dirs):
    return write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=90, num_classes=3, dim=12, transfer=6)


def test_load_dataset_of_a_cache_dir_gives_its_splits_rows_and_class_names(cache, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manifest = json.loads((cache / "manifest.json").read_text())
    ds = datasets.load_dataset(str(cache))
    assert list(ds) == ["train", "val", "test", "transfer"]
    assert {name: ds[name].num_rows for name in ds} == {name: f["rows"] for name, f in manifest["files"].items()}
    features = ds["train"].features
    assert isinstance(features["label"], datasets.ClassLabel)
    assert features["label"].names == manifest["class_names"] == ["class0", "class1", "class2"]
    for column, width in (("teacher_logits", 3), ("teacher_probs", 3), ("embedding", 12)):
        assert features[column].feature == datasets.Value("float32") and features[column].length == width, column
    assert features["id"] == features["text"] == datasets.Value("string")
    row = ds["train"][0]
    split = read_teacher_cache(cache).splits["train"]
    assert row["label"] == split.labels[0] and row["embedding"] == pytest.approx(split.embeddings[0].tolist())
    assert ds["transfer"]["label"] == [None] * 6  # unlabeled texts


def test_the_card_names_the_splits_features_and_key_and_is_written_deterministically(cache):
    text = (cache / CARD).read_text(encoding="utf-8")
    manifest = json.loads((cache / "manifest.json").read_text())
    front = text.split("---\n")[1]
    for line in ('config_name: "default"', '- split: "val"', 'path: "transfer.parquet"', "class_label:",
                 '"2": "class2"', 'sequence: "float32"', "length: 12"):
        assert line in front, line
    assert manifest["key"] in text and "synthetic" in text
    # a function of the manifest only: no creation time, no library versions
    assert card_text({**manifest, "created": "2000-01-01T00:00:00Z", "versions": {"numpy": "0"}}) == text
    # not a file of the manifest: the content hashes it records are those of the data
    assert CARD not in {f["file"] for f in manifest["files"].values()}
    read_teacher_cache(cache)  # the cache still verifies


def test_push_pull_and_export_carry_the_card_verified(cache, tmp_path):
    remote = f"file://{tmp_path / 'remote'}"
    assert R.push("teacher", "t1", remote) == "pushed"
    index = (tmp_path / "remote" / "teacher" / "t1" / R.INDEX).read_text()
    assert f"  {CARD}\n" in index  # hashed like every other file
    pulled = R.pull("teacher", "t1", remote, cache_root=tmp_path / "other")
    assert (pulled / CARD).read_bytes() == (cache / CARD).read_bytes()
    read_teacher_cache(pulled)
    tar = R.export_tar(tmp_path / "caches.tar", [("teacher", "t1")])
    assert R.import_tar(tar, cache_root=tmp_path / "third") == [("teacher", "t1", "imported")]
    assert (tmp_path / "third" / "teacher" / "t1" / CARD).read_bytes() == (cache / CARD).read_bytes()
    # a card changed on the remote does not match its hash: nothing is pulled
    (tmp_path / "remote" / "teacher" / "t1" / CARD).write_text("---\n---\nedited\n")
    with pytest.raises(QdllmError, match="README.md does not match its sha256"):
        R.pull("teacher", "t1", remote, cache_root=tmp_path / "fourth")
    assert not (tmp_path / "fourth" / "teacher" / "t1").exists()


def test_a_worker_gets_a_verified_copy_by_key(cache, tmp_path):
    """What a cluster worker does before training: pull the cache by key into its own root, or check the one it has."""
    remote = f"file://{tmp_path / 'remote'}"
    R.push("teacher", "t1", remote)
    worker = tmp_path / "worker"
    got = R.ensure_teacher_cache("t1", remote, cache_root=worker)
    assert got == worker / "teacher" / "t1" and (got / CARD).is_file()
    assert R.ensure_teacher_cache("t1", remote, cache_root=worker) == got  # kept: no second pull
    R._VERIFIED.clear()  # a new worker process meets a damaged local copy: refused, not trained on
    data = (got / "val.parquet").read_bytes()
    (got / "val.parquet").write_bytes(data[:-9] + bytes(9))
    with pytest.raises(QdllmError, match="does not match the sha256"):
        R.ensure_teacher_cache("t1", remote, cache_root=worker)
    with pytest.raises(QdllmError, match="no remote to pull it from"):
        R.ensure_teacher_cache("t1", None, cache_root=tmp_path / "empty")

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import run_cli, synthetic_splits, write_synthetic_cache
from pipeline.cache import read_teacher_cache, write_teacher_cache
from pipeline.errors import QdllmError
from pipeline.keys import sha256_file


@pytest.fixture
def cache(tmp_path):
    return write_synthetic_cache(tmp_path / "cache" / "teacher" / "k1", n=50, num_classes=3, dim=8)


def test_round_trip(cache):
    c = read_teacher_cache(cache)
    assert c.num_classes == 3 and c.embedding_dim == 8
    assert {k: len(v) for k, v in c.splits.items()} == {"train": 30, "val": 10, "test": 10}
    ref = synthetic_splits(n=50, num_classes=3, dim=8)
    np.testing.assert_array_equal(c.splits["val"].embeddings, ref["val"].embeddings)
    np.testing.assert_array_equal(c.splits["train"].labels, ref["train"].labels)
    assert c.splits["test"].embeddings.dtype == np.float32


def test_parquet_is_readable_by_polars(cache):
    import polars as pl

    df = pl.read_parquet(cache / "train.parquet")
    assert df.columns == ["id", "text", "label", "teacher_logits", "teacher_probs", "embedding"]
    assert df["embedding"].dtype == pl.Array(pl.Float32, 8)


def _rewrite(path, table):
    """Replace a split file and re-pin its hash so only the defect under test remains."""
    pq.write_table(table, path)
    man = json.loads((path.parent / "manifest.json").read_text())
    man["files"][path.stem]["sha256"] = sha256_file(path)
    man["files"][path.stem]["rows"] = table.num_rows
    (path.parent / "manifest.json").write_text(json.dumps(man))


def _set_column(path, name, values, width):
    table = pq.read_table(path)
    arr = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(values, np.float32).reshape(-1)), width)
    _rewrite(path, table.set_column(table.column_names.index(name), name, arr))


def _defect(kind, cache):
    train = cache / "train.parquet"
    if kind == "missing file":
        train.unlink()
    elif kind == "truncated parquet":
        data = train.read_bytes()
        train.write_bytes(data[: len(data) // 2])
        man = json.loads((cache / "manifest.json").read_text())
        man["files"]["train"]["sha256"] = sha256_file(train)
        (cache / "manifest.json").write_text(json.dumps(man))
    elif kind == "sha256 mismatch":
        table = pq.read_table(train)
        pq.write_table(table.slice(0, table.num_rows), train, compression="gzip")  # same rows, other bytes
    elif kind == "wrong embedding dim":
        _set_column(train, "embedding", np.zeros((30, 5)), 5)
    elif kind == "label out of range":
        table = pq.read_table(train)
        labels = np.array(table.column("label").to_pylist())
        labels[3] = 7
        _rewrite(train, table.set_column(2, "label", pa.array(labels, pa.int64())))
    elif kind == "nan values":
        logits = np.ones((30, 3))
        logits[2, 1] = np.nan
        _set_column(train, "teacher_logits", logits, 3)
    elif kind == "inf values":
        emb = np.ones((30, 8))
        emb[0, 0] = np.inf
        _set_column(train, "embedding", emb, 8)
    elif kind == "unknown schema version":
        man = json.loads((cache / "manifest.json").read_text())
        man["schema_version"] = 99
        (cache / "manifest.json").write_text(json.dumps(man))
    elif kind == "no manifest":
        (cache / "manifest.json").unlink()


DEFECTS = {
    "missing file": "is missing",
    "truncated parquet": "not a readable Parquet file",
    "sha256 mismatch": "does not match the sha256",
    "wrong embedding dim": "fixed_size_list<float>[8]",
    "label out of range": "label 7 outside 0..2",
    "nan values": "NaN or infinite",
    "inf values": "NaN or infinite",
    "unknown schema version": "schema version 99",
    "no manifest": "no manifest.json",
}


@pytest.mark.parametrize("kind", DEFECTS)
def test_reader_rejects_defect_with_one_sentence(kind, cache):
    _defect(kind, cache)
    with pytest.raises(QdllmError, match=DEFECTS[kind].replace("[", r"\[").replace("(", r"\(")):
        read_teacher_cache(cache)


@pytest.mark.parametrize("kind", ["missing file", "truncated parquet", "sha256 mismatch", "label out of range",
                                  "unknown schema version"])
def test_cli_verify_exits_nonzero_without_traceback(kind, cache):
    assert run_cli("cache", "verify", str(cache)).returncode == 0
    _defect(kind, cache)
    proc = run_cli("cache", "verify", str(cache))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert err.startswith("error:") and DEFECTS[kind] in err


def test_writer_refuses_bad_arrays(tmp_path):
    splits = synthetic_splits(n=20, num_classes=2, dim=4)
    splits["val"].probs[0, 0] = np.nan
    with pytest.raises(QdllmError, match="NaN"):
        write_teacher_cache(tmp_path / "t", splits, key="k", inputs={}, task="x", class_names=["a", "b"],
                            embedding_source="s")
    assert not (tmp_path / "t").exists()

"""The dataset format every later stage reads: ``data/<task>/<key>/{train,val,test}.parquet`` + manifest.

Columns: ``id`` (sha256 prefix of the text, see ``pipeline.cache.text_id``), ``text``,
``label`` (int64 index into the manifest's ``class_names``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.cache import SPLITS, text_id
from pipeline.config import SCHEMA_VERSION
from pipeline.errors import QdllmError
from pipeline.keys import sha256_file
from pipeline.publish import MANIFEST, publish_dir


@dataclass
class Dataset:
    path: Path
    manifest: dict[str, Any]
    splits: dict[str, pl.DataFrame]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def task(self) -> str:
        return str(self.manifest["task"])


def frame(texts: list[str], labels: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": [text_id(t) for t in texts], "text": texts, "label": labels},
        schema={"id": pl.String, "text": pl.String, "label": pl.Int64},
    )


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    """``df.write_parquet``, with a full disk or a quota raised as the OSError it is (polars reports it as its own
    error type, which would bypass the command line's one-sentence answer to a full disk)."""
    import errno

    try:
        df.write_parquet(path)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - polars' ComputeError / PolarsError wrapping an I/O failure
        text = str(e)
        for code, words in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded")):
            if words in text:
                raise OSError(code, words, str(path)) from None
        raise


def write_dataset(final: Path, splits: dict[str, pl.DataFrame], *, task: str, class_names: list[str],
                  key: str, inputs: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write the three splits and the manifest (last) atomically into ``final``."""
    with publish_dir(final) as pub:
        files = {}
        for name in SPLITS:
            df = splits[name].select("id", "text", pl.col("label").cast(pl.Int64))
            path = pub.path / f"{name}.parquet"
            _write_parquet(df, path)
            files[name] = {"file": path.name, "rows": df.height, "sha256": sha256_file(path),
                           "class_counts": [int((df["label"] == i).sum()) for i in range(len(class_names))]}
        pub.manifest = {"schema_version": SCHEMA_VERSION, "kind": "dataset", "key": key, "inputs": inputs,
                        "task": task, "class_names": list(class_names), "files": files, **(extra or {})}
    return Path(final)


def load_dataset(path: Path) -> Dataset:
    """Read and check a built dataset; one clear sentence when it is missing or damaged."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise QdllmError(f"No dataset at {path}; build it first with `make data` (or `qdllm data`).")
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    splits = {}
    for name in SPLITS:
        info = manifest["files"][name]
        fpath = path / info["file"]
        if not fpath.is_file() or sha256_file(fpath) != info["sha256"]:
            raise QdllmError(f"{fpath} is missing or does not match its manifest; rebuild the dataset with `make data`.")
        splits[name] = pl.read_parquet(fpath)
    return Dataset(path=path, manifest=manifest, splits=splits)

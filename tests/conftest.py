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



@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may write to: chmod 0o555 for a normal user; for root (whom modes do not stop) a read-only
    tmpfs mounted there. Skipped only where neither is possible (root without the right to mount)."""
    import subprocess

    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("running as root without the right to mount a read-only file system")
    yield path
    subprocess.run(["umount", str(path)], check=True)

"""Make chains the stages by content-hash keys: unchanged inputs make nothing, changed ones remake."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "qdllm").exists(), reason="needs `make setup`")


def make(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith("."))


def test_data_target_runs_once_and_reruns_when_input_changes(tmp_path):
    src = tmp_path / "authors"
    shutil.copytree(ROOT / "data" / "fixtures" / "authors", src)
    env = {"QDLLM_DATA_DIR": str(tmp_path / "data"), "QDLLM_CACHE_DIR": str(tmp_path / "cache")}
    args = ("data", "TASK=mine", f"DATA={src}")

    first = make(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "qdllm data" in first.stdout
    built = visible(tmp_path / "data" / "mine")
    assert len(built) == 1 and (built[0] / "manifest.json").is_file()

    again = make(*args, env=env)
    assert again.returncode == 0 and "qdllm data" not in again.stdout  # nothing to do

    # the teacher target depends on exactly this dataset: a dry run plans only the teacher
    plan = make("-n", "_teacher", "TASK=mine", f"DATA={src}", env=env)
    assert plan.returncode == 0, plan.stderr
    assert "qdllm teacher" in plan.stdout and "qdllm data" not in plan.stdout

    with open(src / "train_pos.txt", "a") as f:
        f.write("A brand new sentence that changes the input.\n")
    changed = make(*args, env=env)
    assert changed.returncode == 0 and "qdllm data" in changed.stdout
    assert len(visible(tmp_path / "data" / "mine")) == 2


def test_stage_key_failure_stops_make_with_a_message(tmp_path):
    env = {"QDLLM_DATA_DIR": str(tmp_path / "data")}
    proc = make("data", "TASK=mine", f"DATA={tmp_path / 'missing.csv'}", env=env)
    assert proc.returncode != 0
    assert "is not a file, a directory" in proc.stderr

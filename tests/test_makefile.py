"""Make chains the stages by content-hash keys: unchanged inputs make nothing, changed ones remake."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make(*args: str, env: dict) -> subprocess.CompletedProcess:
    """Make with this Python's qdllm, whatever environment runs the tests (.venv or one set up another way): the
    set-up stamp is a fresh file, so Make installs nothing."""
    stamp = Path(env.get("QDLLM_DATA_DIR", ROOT / "data")).parent / "setup-done"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()  # newer than pyproject.toml
    tools = [f"QDLLM={sys.executable} -m stages.cli", f"PY={sys.executable}", f"SETUP={stamp}"]
    return subprocess.run(["make", "--no-print-directory", *tools, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def ran(stage: str, proc: subprocess.CompletedProcess) -> bool:
    """Whether Make ran ``qdllm <stage>`` (by its echoed command line)."""
    return f"stages.cli {stage} " in proc.stdout


def visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith("."))


def test_data_target_runs_once_and_reruns_when_input_changes(tmp_path):
    src = tmp_path / "authors"
    shutil.copytree(ROOT / "data" / "fixtures" / "authors", src)
    env = {"QDLLM_DATA_DIR": str(tmp_path / "data"), "QDLLM_CACHE_DIR": str(tmp_path / "cache")}
    args = ("data", "TASK=mine", f"DATA={src}")

    first = make(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert ran("data", first)
    built = visible(tmp_path / "data" / "mine")
    assert len(built) == 1 and (built[0] / "manifest.json").is_file()

    again = make(*args, env=env)
    assert again.returncode == 0 and not ran("data", again)  # nothing to do

    # the teacher target depends on exactly this dataset: a dry run plans only the teacher
    plan = make("-n", "_teacher", "TASK=mine", f"DATA={src}", env=env)
    assert plan.returncode == 0, plan.stderr
    assert ran("teacher", plan) and not ran("data", plan)

    with open(src / "train_pos.txt", "a") as f:
        f.write("A brand new sentence that changes the input.\n")
    changed = make(*args, env=env)
    assert changed.returncode == 0 and ran("data", changed)
    assert len(visible(tmp_path / "data" / "mine")) == 2


def test_stage_key_failure_stops_make_with_a_message(tmp_path):
    env = {"QDLLM_DATA_DIR": str(tmp_path / "data")}
    proc = make("data", "TASK=mine", f"DATA={tmp_path / 'missing.csv'}", env=env)
    assert proc.returncode != 0
    assert "is not a file, a directory" in proc.stderr

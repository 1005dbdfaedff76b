"""Hostile values in Make variables: each reaches ``qdllm`` as one argument, or is refused; nothing else runs.

A recorder stands in for ``qdllm`` (it writes the argument vector it was given), so these tests prove what the
Makefile hands to the command line with real ``make`` and a real shell, whatever the value holds: quotes, ``;``,
``$(…)``, backticks, spaces, newlines, given on the command line or in the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RECORDER = r'''
import json, os, sys
with open(os.environ["REC"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
if sys.argv[1:3] == ["-q", "key"]:
    root = os.environ["SCRATCH"]
    print(f"DATA_KEY=d DATA_DIR={root}/d TEACHER_KEY=t TEACHER_DIR={root}/t")
'''


def _payloads(marker: Path) -> list[str]:
    m = str(marker)
    return [
        f"0';touch {m};'",
        f'0";touch {m};"',
        f"0; touch {m}",
        f"$(touch {m})",
        f"`touch {m}`",
        f"$(shell touch {m})",
        f"0\ntouch {m}",
        f"a b' '$(touch {m})",
        f"x'\\''; touch {m}; '",
    ]


@pytest.fixture
def recorder(tmp_path):
    script = tmp_path / "rec.py"
    script.write_text(RECORDER)
    stamp = tmp_path / "setup-done"
    stamp.touch()  # newer than pyproject.toml: make installs nothing
    rec = tmp_path / "argv.jsonl"

    def run(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        tools = [f"QDLLM={sys.executable} {script}", f"PY={sys.executable}", f"SETUP={stamp}"]
        full_env = {**os.environ, "REC": str(rec), "SCRATCH": str(tmp_path / "scratch"), **(env or {})}
        proc = subprocess.run(["make", "--no-print-directory", *tools, *args], cwd=ROOT, capture_output=True,
                              text=True, env=full_env, timeout=120)
        calls = [json.loads(line) for line in rec.read_text().splitlines()] if rec.exists() else []
        rec.unlink(missing_ok=True)
        return proc, calls

    return run


@pytest.mark.parametrize("target,var,flag", [
    ("student", "SEEDS", "--seeds"),
    ("student", "LR", "--lr"),
    ("student", "VARIANT", "--variant"),
    ("student", "TEACHER_KEY", "--teacher-key"),
    ("ablations", "TASK", "--task"),
    ("push", "REMOTE", "--remote"),
    ("pull", "REMOTE", "--remote"),
    ("data", "DATA", "--source"),
    ("teacher", "MODEL", "--model"),
])
@pytest.mark.parametrize("where", ["argument", "environment"])
def test_a_hostile_value_reaches_qdllm_as_one_argument(recorder, tmp_path, target, var, flag, where):
    marker = tmp_path / "pwned"
    for value in _payloads(marker):
        if where == "argument":
            proc, calls = recorder(target, f"{var}={value}")
        else:
            proc, calls = recorder(target, env={var: value})
        assert not marker.exists(), (value, proc.stdout, proc.stderr)
        if "\n" in value:  # make cannot keep a line break inside one recipe line: refused in one sentence
            assert proc.returncode != 0 and f"{var} holds a line break" in proc.stderr and not calls, proc.stderr
            continue
        assert calls, (value, proc.stderr)
        for argv in calls:  # every qdllm call that passes the flag passes the value whole
            if flag in argv:
                assert argv[argv.index(flag) + 1] == value, (value, argv)
        assert any(flag in argv for argv in calls), (value, calls)


def test_reproduce_quotes_its_data_root_and_models(recorder, tmp_path):
    marker = tmp_path / "pwned"
    for value in _payloads(marker):
        proc, calls = recorder("reproduce", f"DATA_ROOT={value}")
        assert not marker.exists(), (value, proc.stderr)
        assert proc.returncode != 0 and ("DATA_ROOT must hold" in proc.stderr or "line break" in proc.stderr), proc.stderr
        assert calls == []
    root = tmp_path / "authors"
    for sub in ("senti", "stega", "topic"):
        (root / sub).mkdir(parents=True)
    proc, calls = recorder("-n", "reproduce", f"DATA_ROOT={root}", f"MODELS=m1 $(touch {marker})")
    assert not marker.exists(), proc.stderr


def test_a_task_with_a_space_gets_a_sentence_not_a_make_error(tmp_path):
    stamp = tmp_path / "setup-done"
    stamp.touch()
    env = {**os.environ, "QDLLM_DATA_DIR": str(tmp_path / "data"), "QDLLM_CACHE_DIR": str(tmp_path / "cache")}
    tools = [f"QDLLM={sys.executable} -m stages.cli", f"PY={sys.executable}", f"SETUP={stamp}"]
    proc = subprocess.run(["make", "--no-print-directory", *tools, "data", "TASK=my task"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "missing separator" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "--task 'my task' is not a plain name" in " ".join(proc.stderr.split()), proc.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("manifest.json"))

    spaced = tmp_path / "my data"
    env["QDLLM_DATA_DIR"] = str(spaced)
    proc = subprocess.run(["make", "--no-print-directory", *tools, "data"], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode != 0
    message = " ".join(proc.stderr.split())
    assert "missing separator" not in message and "Make cannot name targets" in message, proc.stderr

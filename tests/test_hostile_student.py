"""Hostile input to the student commands fails cleanly: one sentence naming the problem and the setting to
change, a non-zero exit, no traceback, and nothing published. Every command runs as a user runs it, in a
subprocess; one tiny quantum run (3 qubits, 1 epoch, seed 0) is trained once for the commands that read a run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, run_cli, write_synthetic_cache
from pipeline.config import StudentConfig

FAST = ["--qubits", "3", "--epochs", "1", "--seeds", "0", "--no-classical", "--no-ce-baseline"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A teacher cache ``t1`` and one quantum run on it; tests copy it (``cache``) before changing anything."""
    from stages.student.run import StudentRun

    root = tmp_path_factory.mktemp("hostile") / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QDLLM_CACHE_DIR", str(root))
        tdir = write_synthetic_cache(root / "teacher" / "t1", n=40, dim=8, key="t1")
        run = StudentRun.plan(tdir, StudentConfig(n_qubits=3, epochs=1, seeds=(0,)))
        run.train()
    return root, run.path.name


@pytest.fixture
def cache(trained, isolated_dirs):
    """This test's own copy of the trained cache, at its QDLLM_CACHE_DIR: (cache root, run key)."""
    root = isolated_dirs / "cache"
    shutil.copytree(trained[0], root, ignore=shutil.ignore_patterns(".*.lock"))
    return root, trained[1]


def published(root: Path) -> list[str]:
    """What a user sees under an output root: every entry but lock files (temporaries count as left behind)."""
    return sorted(p.name for p in Path(root).iterdir() if not p.name.endswith(".lock")) if Path(root).is_dir() else []


def assert_clean_failure(r, *says: str, exit_code: int = 2) -> str:
    """Exit code, no traceback, exactly one line of error that says every part of ``says``."""
    out = r.stdout + r.stderr
    assert r.returncode == exit_code, out
    assert "Traceback" not in out and "RuntimeWarning" not in out, out
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    message = " ".join(r.stderr[r.stderr.index("error:"):].split())  # rich wraps long lines
    for s in says:
        assert s in message, message
    return message


# ---------------------------------------------------------------- 3: a diverging student


@pytest.mark.parametrize("flags", [["--lr", "1e20"], ["--temperature", "1e-320"],
                                   ["--lr", "1e20", "--seeds", "0,1", "--jobs", "2"]],
                         ids=["lr", "temperature", "lr-jobs-2"])
def test_diverging_training_stops_and_publishes_nothing(isolated_dirs, flags):
    if "--jobs" in flags and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable cores")
    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=40, dim=8, key="t1")
    r = run_cli("student", "--teacher-key", "t1", *FAST, *flags)
    assert_clean_failure(r, "Training diverged", "NaN or infinite", "lower --lr", "raise --temperature",
                         "not published")
    assert published(isolated_dirs / "cache" / "student") == []


# ---------------------------------------------------------------- 6: an output root that cannot be written


def _commands(run: str, tmp: Path) -> dict[str, tuple[list[str], Path]]:
    """Each command that writes, and the output root it writes under."""
    cache = tmp / "cache"
    return {"student": (["student", "--teacher-key", "t1", *FAST, "--lr", "0.1"], cache / "student"),
            "export": (["student", "export", "--run", run, "--format", "qasm2", "--out", str(tmp / "out" / "e")],
                       tmp / "out"),
            "noise": (["student", "noise", "--run", run, "--shots", "16", "--seeds", "0", "--limit", "3"],
                      cache / "noise")}


@pytest.mark.parametrize("command", ["student", "export", "noise"])
def test_a_file_where_the_output_directory_goes_is_one_sentence(cache, isolated_dirs, command):
    """Honest for every user, root included: a regular file stands where the output directory must be."""
    args, out_root = _commands(cache[1], isolated_dirs)[command]
    if out_root.exists():
        shutil.rmtree(out_root)
    out_root.write_text("not a directory\n")
    r = run_cli(*args)
    setting = "--out" if command == "export" else "QDLLM_CACHE_DIR"
    assert_clean_failure(r, f"{out_root} is a file, not a directory", setting)
    assert out_root.read_text() == "not a directory\n"  # left as it was, nothing written beside it
    assert not list(isolated_dirs.rglob("*.tmp-*"))


def _unprivileged(args: list[str]):
    """``qdllm ARGS`` without the power to write into a directory of mode 0o555: as is for a normal user; for
    root (whom chmod does not stop) inside a new user namespace, where root's files are still its own but no
    capability overrides their mode bits."""
    if os.geteuid() != 0:
        return run_cli(*args)
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--user", "true"]).returncode != 0:
        pytest.skip("running as root, and no user namespace to drop the right to ignore a directory's mode")
    return subprocess.run(["unshare", "--user", sys.executable, "-m", "stages.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("command", ["student", "export", "noise"])
def test_read_only_output_root_is_one_sentence_and_leaves_nothing(cache, isolated_dirs, command):
    args, out_root = _commands(cache[1], isolated_dirs)[command]
    out_root.mkdir(exist_ok=True)
    before = published(out_root)
    out_root.chmod(0o555)
    try:
        r = _unprivileged(args)
    finally:
        out_root.chmod(0o755)
    assert_clean_failure(r, "permission denied", str(out_root), exit_code=1)
    assert published(out_root) == before  # nothing new, no temporary directory
    assert not list(isolated_dirs.rglob("*.tmp-*"))


# ---------------------------------------------------------------- 8: files that are not text


@pytest.mark.parametrize("content,says", [(bytes(range(256)) * 4, "is not UTF-8 text"),
                                          (b"a\x00b\n", "is a binary file")], ids=["undecodable", "nul"])
@pytest.mark.parametrize("command", ["predict", "export"])
def test_binary_text_files_are_refused(cache, isolated_dirs, content, says, command):
    path = isolated_dirs / "texts.bin"
    path.write_bytes(content)
    out = isolated_dirs / "out"
    args = (["student", "predict", "--run", cache[1], "--file", str(path)] if command == "predict" else
            ["student", "export", "--run", cache[1], "--format", "qasm2", "--out", str(out), "--texts", str(path)])
    flag = "--file" if command == "predict" else "--texts"
    assert_clean_failure(run_cli(*args), f"{flag} {path} {says}", "plain text file")
    assert not out.exists() and not list(isolated_dirs.glob(".out*"))


# ---------------------------------------------------------------- 10: bounds of the noise evaluation


@pytest.mark.parametrize("flags,says", [(["--shots", "16,10000000000000000000"], "maximum of 1000000000 shots"),
                                        (["--trajectories", "10000000000000000000", "--noise", "readout:0.1"],
                                         "maximum of 1000000")], ids=["shots", "trajectories"])
def test_noise_counts_beyond_the_maximum_are_refused(cache, flags, says):
    r = run_cli("student", "noise", "--run", cache[1], "--limit", "3", *flags)
    assert_clean_failure(r, says, flags[0])
    assert published(cache[0] / "noise") == []


# ---------------------------------------------------------------- 11: a run's metrics.json that lies


EMPTY = ([], "lists no trained seed")


@pytest.mark.parametrize("command,seeds,says", [
    ("predict", *EMPTY), ("export", *EMPTY), ("noise", *EMPTY), ("predict", None, "lists no trained seed"),
    ("export", [{"seed": "0", "val": {}}], "malformed seed record"),
    ("predict", [{"seed": 0, "val": {"accuracy": "high"}}], "malformed seed record"),
], ids=["predict-empty", "export-empty", "noise-empty", "predict-missing", "export-string-seed",
        "predict-string-accuracy"])
def test_a_run_without_valid_seeds_is_reported_as_corrupt(cache, isolated_dirs, command, seeds, says):
    root, run = cache
    path = root / "student" / run / "metrics.json"
    metrics = json.loads(path.read_text())
    if seeds is None:
        metrics.pop("seeds")
    else:
        metrics["seeds"] = seeds
    path.write_text(json.dumps(metrics))
    args = {"predict": ["student", "predict", "--run", run, "some text"],
            "export": ["student", "export", "--run", run, "--format", "qasm2", "--out", str(isolated_dirs / "e")],
            "noise": ["student", "noise", "--run", run, "--shots", "16", "--limit", "3"]}[command]
    assert_clean_failure(run_cli(*args), says, "corrupt", f"delete {root / 'student' / run}", "make student")
    assert not (isolated_dirs / "e").exists() and published(root / "noise") == []


# ---------------------------------------------------------------- 16: workers die with their parent; --jobs


def test_jobs_above_the_usable_cores_is_refused(isolated_dirs):
    from stages.student.jobs import default_jobs

    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=40, dim=8, key="t1")
    cores = default_jobs()
    r = run_cli("student", "--teacher-key", "t1", *FAST, "--jobs", str(cores + 28))
    assert_clean_failure(r, f"--jobs {cores + 28} is more than the {cores} core(s)", f"--jobs {cores} or fewer")
    assert published(isolated_dirs / "cache" / "student") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_when_the_parent_is_killed(isolated_dirs):
    psutil = pytest.importorskip("psutil")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable cores")
    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=40, dim=8, key="t1")
    parent = subprocess.Popen([sys.executable, "-m", "stages.cli", "-q", "student", "--teacher-key", "t1", *FAST,
                               "--epochs", "100000", "--seeds", "0,1", "--jobs", "2"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = psutil.Process(parent.pid)
    family: list = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until both workers have loaded MindSpore and are training
            family = proc.children(recursive=True)
            workers = [p for p in family if _rss(p) > 200 * 2**20]
            if len(workers) >= 2:
                break
            assert parent.poll() is None, "qdllm student exited before its workers started"
            time.sleep(0.2)
        else:
            pytest.fail("the two workers did not start within 90 s")
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(family, timeout=10)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
    finally:
        for p in [proc, *family]:
            try:
                p.kill()
            except psutil.Error:
                pass


def _rss(p) -> int:
    try:
        return p.memory_info().rss
    except Exception:  # gone meanwhile
        return 0

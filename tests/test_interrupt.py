"""Ctrl-C: one line, exit code 130, the work really stops, nothing half-written is published."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, write_synthetic_cache


def _interrupt_after(args: list[str], started, env: dict, timeout: float = 120) -> tuple[int, str]:
    """Run ``qdllm args`` in its own process group, press Ctrl-C (SIGINT to the group, as a terminal does) once
    ``started()`` is true, and return (exit code, output)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stages.cli", *args], cwd=ROOT, env={**os.environ, **env},
                                stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        t0 = time.monotonic()
        while proc.poll() is None and not started() and time.monotonic() - t0 < timeout:
            time.sleep(0.1)
        assert proc.poll() is None, "the command ended before it was interrupted"
        time.sleep(1.5)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)  # the units stop now, not after their 400 epochs
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the command did not stop within 20 s of Ctrl-C")
        log.seek(0)
        return proc.returncode, log.read()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_during_student_training_stops_with_one_line(isolated_dirs, jobs):
    cache = write_synthetic_cache(isolated_dirs / "cache" / "teacher" / ("a" * 16), n=300, dim=16, key="a" * 32,
                                  task="t")
    student = isolated_dirs / "cache" / "student"
    code, out = _interrupt_after(["student", "--teacher-key", cache.name, "--epochs", "400", "--seeds", "0,1",
                                  "--no-classical", "--no-ce-baseline", "--jobs", jobs],
                                 lambda: student.exists() and any(student.iterdir()), {"COLUMNS": "200"})
    assert code == 130, out
    assert "interrupted; finished outputs are kept, nothing half-written" in out
    assert "Traceback" not in out and "Fatal Python error" not in out, out
    assert not student.exists() or not list(student.glob("*/manifest.json"))


def test_an_interrupt_swallowed_on_the_way_publishes_nothing(tmp_path, monkeypatch):
    from pipeline import interrupt
    from pipeline.publish import publish_dir

    monkeypatch.setitem(interrupt._state, "requested", True)
    with pytest.raises(interrupt.Interrupted):
        with publish_dir(tmp_path / "out") as pub:
            (pub.path / "data.txt").write_text("half")
            pub.manifest = {"ok": True}
    assert list(tmp_path.iterdir()) == []


def test_deferred_holds_ctrl_c_until_the_block_ends(monkeypatch):
    from pipeline import interrupt

    monkeypatch.setitem(interrupt._state, "requested", False)
    old = signal.getsignal(signal.SIGINT)
    interrupt.install()
    try:
        done = []
        with pytest.raises(interrupt.Interrupted):
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                done.append(True)  # reached: the signal did not cut the block
        assert done == [True]
    finally:
        signal.signal(signal.SIGINT, old)
        interrupt._state["requested"] = False

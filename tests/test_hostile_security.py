"""Security under hostile input: names never leave their root, links and devices are never followed or replaced,
and no file is unpickled. Each case runs ``qdllm`` as a user would and checks nothing was written where it must not.
"""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import fails, run_cli, write_synthetic_cache

KEY = "aaaa000011112222"



def files_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*")) if path.exists() else []


@pytest.fixture
def cache(tmp_path) -> Path:
    write_synthetic_cache(tmp_path / "cache" / "teacher" / KEY, n=30, dim=4, key=KEY * 2, task="good")
    return tmp_path / "cache"


# ---------------------------------------------------------------- 1: every name that becomes a path is one component

HOSTILE_NAMES = ["../../escape", "..", ".", "", "/abs/olute", "a/b", "a\\b", ".hidden", "-flag", "x" * 129,
                 "tab\there", "new\nline", "k.tmp-1-00000000", "caf\u00e9"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("cmd", [
    ["data", "--task"],
    ["key", "data", "--task"],
    ["key", "all", "--task"],
    ["status", "--task"],
    ["student", "--teacher-key"],
    ["key", "student", "--teacher-key"],
])
def test_a_name_that_would_leave_its_root_is_refused(tmp_path, cache, name, cmd):
    outside = tmp_path.parent / "escape"
    before = files_under(tmp_path)
    message = fails(run_cli(*cmd, name))
    assert repr(name) in message or name.strip() == "" or "--task" in message, message
    assert files_under(tmp_path) == before
    assert not outside.exists()


def test_a_plain_task_name_still_works(tmp_path):
    proc = run_cli("key", "data", "--task", "my_reviews-2.0", "--source", str(Path(__file__).parent.parent / "data"
                                                                              / "fixtures" / "authors"))
    assert proc.returncode == 0, proc.stderr


def test_an_empty_root_variable_is_a_sentence_not_the_working_directory(tmp_path):
    for var in ("QDLLM_DATA_DIR", "QDLLM_CACHE_DIR"):
        fails(run_cli("key", "data", env={var: ""}), var, "empty")


# ---------------------------------------------------------------- 3: devices and non-regular targets of --to

def test_export_streams_into_a_pipe_and_never_renames_over_a_device(cache, tmp_path):
    # /dev/stdout down a pipe: the tar arrives whole on the reader's side
    proc = subprocess.run([sys.executable, "-m", "stages.cli", "-q", "cache", "export", "--to", "/dev/stdout"],
                          capture_output=True, cwd=Path(__file__).parent.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r|") as tar:
        names = [m.name for m in tar]
    assert f"teacher/{KEY}/manifest.json" in names
    # /dev/null stays a character device, and no temporary is left beside it
    assert run_cli("cache", "export", "--to", "/dev/null").returncode == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not [p for p in Path("/dev").iterdir() if p.name.startswith(".null")]


def test_export_into_a_fifo_streams(cache, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    proc = run_cli("cache", "export", "--to", str(fifo))
    data = reader.communicate(timeout=120)[0]
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and len(data) > 1024


def test_export_refuses_a_link_and_a_socket_as_target(cache, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me")
    link = tmp_path / "out.tar"
    link.symlink_to(secret)
    fails(run_cli("cache", "export", "--to", str(link)), "not a regular file")
    assert secret.read_text() == "keep me" and link.is_symlink()


# ---------------------------------------------------------------- 5: links inside a cache are never shared

@pytest.mark.parametrize("cmd", ["push", "export"])
def test_push_and_export_refuse_a_symlinked_file(cache, tmp_path, cmd):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    readme = cache / "teacher" / KEY / "README.md"
    readme.unlink(missing_ok=True)
    readme.symlink_to(secret)
    remote = tmp_path / "shared"
    remote.mkdir()
    target = ["--to", str(tmp_path / "x.tar")] if cmd == "export" else ["--remote", str(remote)]
    fails(run_cli("cache", cmd, *target), "symbolic link", "README.md")
    assert not (tmp_path / "x.tar").exists()
    assert not any(b"TOP SECRET" in p.read_bytes() for p in remote.rglob("*") if p.is_file())


# ---------------------------------------------------------------- 4: a planted checkpoint runs no code

class _Boom:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_checkpoint_is_never_run_and_is_set_aside(tmp_path, caplog):
    torch = pytest.importorskip("torch")
    from stages.teacher.train import _load_checkpoint

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "work" / "checkpoint.pt"
    ckpt.parent.mkdir()
    torch.save({"trainable": {}, "optim": {}, "sched": {}, "evil": _Boom(str(marker))}, ckpt, pickle_protocol=2)
    assert _load_checkpoint(ckpt) is None
    assert not marker.exists()
    assert not ckpt.exists() and [p.name for p in ckpt.parent.iterdir()][0].startswith("checkpoint.pt.unreadable-")
    assert "set aside" in caplog.text

    ckpt.write_bytes(b"\x80\x04garbage")  # corrupt: the same, a warning and a fresh start
    assert _load_checkpoint(ckpt) is None and not ckpt.exists()

    good = {"trainable": {"w": torch.ones(2)}, "optim": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
            "sched": {"last_epoch": 3}, "step": 3, "epoch": 0, "micro": 2, "history": [{"val": 0.5}], "best": None,
            "ema": 0.1}
    torch.save(good, ckpt)
    loaded = _load_checkpoint(ckpt)
    assert loaded is not None and loaded["step"] == 3 and torch.equal(loaded["trainable"]["w"], torch.ones(2))


def test_pickle_is_not_imported_for_loading_anywhere_in_the_product():
    root = Path(__file__).resolve().parent.parent
    offenders = [p for d in ("pipeline", "stages") for p in (root / d).rglob("*.py")
                 if any(s in p.read_text() for s in ("pickle.load", "weights_only=False", "allow_pickle=True"))]
    assert offenders == []
    assert pickle  # the test module itself builds the planted file

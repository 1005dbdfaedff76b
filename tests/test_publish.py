import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.publish import is_complete, key_lock, publish_dir, stale_temporaries


def test_publish_appears_whole_with_manifest_last(tmp_path):
    final = tmp_path / "out" / "abc"
    with publish_dir(final) as pub:
        (pub.path / "data.txt").write_text("hello")
        assert not final.exists()
        pub.manifest = {"ok": True}
    assert is_complete(final) and (final / "data.txt").read_text() == "hello"
    assert stale_temporaries(tmp_path) == []


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "abc"
    with pytest.raises(RuntimeError):
        with publish_dir(final) as pub:
            (pub.path / "data.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_sigkill_while_publishing_leaves_no_visible_directory(tmp_path):
    final = tmp_path / "cache" / "abc"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from pipeline.publish import publish_dir
        with publish_dir(Path({str(final)!r})) as pub:
            (pub.path / "train.parquet").write_bytes(b"x" * 1000)
            print("writing", flush=True)
            time.sleep(60)
            pub.manifest = {{"done": True}}
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    visible = [p.name for p in final.parent.iterdir() if not p.name.startswith(".")]
    assert visible == []
    assert len(stale_temporaries(final.parent)) == 1  # hidden leftover, for `qdllm cache gc`


def test_lock_serialises_concurrent_writers(tmp_path):
    final = tmp_path / "abc"
    log = tmp_path / "log.txt"
    script = textwrap.dedent(f"""
        import time, sys
        from pathlib import Path
        from pipeline.publish import key_lock, publish_dir, is_complete
        final = Path({str(final)!r})
        with key_lock(final):
            if is_complete(final):
                open({str(log)!r}, "a").write("reused\\n")
                sys.exit(0)
            open({str(log)!r}, "a").write("built\\n")
            with publish_dir(final) as pub:
                time.sleep(0.5)
                pub.manifest = {{"ok": True}}
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert [p.wait() for p in procs] == [0, 0, 0]
    assert sorted(log.read_text().split()) == ["built", "reused", "reused"]
    assert is_complete(final)


def test_lock_is_exclusive(tmp_path):
    final = tmp_path / "k"
    with key_lock(final):
        start = time.time()
        code = f"from pathlib import Path; from pipeline.publish import key_lock\nwith key_lock(Path({str(final)!r})): pass"
        p = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(0.7)
        assert p.poll() is None  # still waiting for us
    assert p.wait(timeout=30) == 0 and time.time() - start >= 0.7

import re

from helpers import run_cli


def test_help_lists_every_stage():
    import typer.main

    from stages.cli import app

    commands = typer.main.get_command(app).commands  # what --help lists, without reading its drawing
    assert {"data", "teacher", "student", "report", "cache", "key", "status"} <= set(commands)
    assert all(c.help for c in commands.values())
    proc = run_cli("--help")
    assert proc.returncode == 0 and all(re.search(rf"\b{name}\b", proc.stdout) for name in commands)


def test_key_prints_a_short_hex_key():
    proc = run_cli("key", "data", "--task", "thematic")
    assert proc.returncode == 0
    assert re.fullmatch(r"[0-9a-f]{16}\n", proc.stdout)


def test_key_all_for_make():
    proc = run_cli("key", "all", "--task", "emotion", "--make", "--profile", "cpu")
    pairs = dict(kv.split("=", 1) for kv in proc.stdout.split())
    assert set(pairs) == {"DATA_KEY", "TEACHER_KEY", "STUDENT_KEY", "DATA_DIR", "TEACHER_DIR", "STUDENT_DIR"}
    assert pairs["STUDENT_DIR"].endswith("student/" + pairs["STUDENT_KEY"])
    assert pairs["TEACHER_DIR"].endswith("teacher/" + pairs["TEACHER_KEY"])


def test_user_error_is_one_sentence_without_traceback(tmp_path):
    proc = run_cli("key", "data", "--task", "mine", "--source", str(tmp_path / "missing.csv"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1
    proc = run_cli("key", "data", "--task", "nosuchtask")
    assert proc.returncode == 2 and "Unknown task 'nosuchtask'" in proc.stderr


def test_bad_option_value_is_reported():
    proc = run_cli("key", "student", "--teacher-key", "abc", "--loss", "mse")
    assert proc.returncode == 2 and "Unknown loss 'mse'" in proc.stderr

"""``qdllm data stego encode|decode`` round trip through the CLI, with a tiny model saved to a directory."""

from __future__ import annotations

from helpers import run_cli
from tiny_models import STEGO_PROMPT as PROMPT
from tiny_models import tiny_lm


def test_cli_encode_decode_message(tmp_path):
    lm = tiny_lm()
    lm.model.save_pretrained(tmp_path / "tiny")
    lm.tokenizer.save_pretrained(tmp_path / "tiny")
    common = ["--model", str(tmp_path / "tiny"), "--top-k", "16", "--prompt", PROMPT.replace("\n", "\\n")]
    enc = run_cli("data", "stego", "encode", "--message", "hi!", *common)
    assert enc.returncode == 0, enc.stderr
    text = enc.stdout.strip()
    assert text and "bits/word" in enc.stderr
    dec = run_cli("data", "stego", "decode", text, *common)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout.strip() == "".join(format(b, "08b") for b in b"hi!") and "message: hi!" in dec.stderr
    bad = run_cli("data", "stego", "decode", text, *common[:-2], "--prompt", "other words")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "settings" in bad.stderr
    both = run_cli("data", "stego", "encode", "--bits", "0101", "--message", "x", *common)
    assert both.returncode == 2 and "exactly one" in both.stderr

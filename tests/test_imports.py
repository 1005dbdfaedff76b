"""The import rule: the spine never loads deep-learning or quantum libraries."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "mindspore", "mindquantum")


def _loaded_after(modules: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return {m.split(".")[0] for m in out.split()}


def test_pipeline_imports_no_heavy_library():
    modules = sorted(f"pipeline.{p.stem}" for p in (ROOT / "pipeline").glob("*.py") if p.stem != "__init__")
    loaded = _loaded_after(modules)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)

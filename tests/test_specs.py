"""Each kind of name (embedder, data source) is parsed once, into a spec that every stage reads."""

from __future__ import annotations

import pytest
from helpers import run_cli

from pipeline.config import SourceSpec, parse_source
from pipeline.errors import QdllmError
from pipeline.models import TEACHER_INPUT, display_name, parse_embedder


@pytest.mark.parametrize("name,kind,display", [
    ("minilm", "packaged", "minilm"),
    ("mpnet", "packaged", "mpnet"),
    ("minilm-static", "static", "minilm (static)"),
    (TEACHER_INPUT, TEACHER_INPUT, TEACHER_INPUT),
    ("bert-base-uncased", "hub", "google-bert/bert-base-uncased"),
    ("org/encoder", "hub", "org/encoder"),
])
def test_embedder_names_parse_into_one_spec(name, kind, display):
    spec = parse_embedder(name)
    assert (spec.kind, spec.display) == (kind, display)
    assert display_name(spec.identity) == display  # what a manifest records names it the same way
    assert spec.needs_llm == (kind == TEACHER_INPUT)


def test_a_local_embedder_directory_is_identified_by_its_weights(tmp_path):
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "model.safetensors").write_bytes(b"w")
    spec = parse_embedder(str(tmp_path / "enc"))
    assert spec.kind == "local" and spec.location == str(tmp_path / "enc") and spec.display == "enc"
    assert set(spec.identity["weights"]) == {"model.safetensors"}


@pytest.mark.parametrize("name,words", [("foo", "Unknown embedder 'foo'"), ("teacher-input-static", "no static form")])
def test_a_bad_embedder_fails_when_keys_are_computed(name, words):
    with pytest.raises(QdllmError, match=words):
        parse_embedder(name)
    r = run_cli("key", "teacher", "--embedder", name)  # what `make` runs first: it stops before any work
    assert r.returncode == 2 and words in " ".join(r.stderr.split()) and "Traceback" not in r.stderr


def test_sources_parse_into_one_spec(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("text,label\na,0\n")
    assert parse_source("emotion", "") == SourceSpec("default", "rotten-tomatoes")
    assert parse_source("hiding", "").needs_llm and not parse_source("thematic", "").needs_llm
    assert parse_source("mine", "hf:imdb@v1") == SourceSpec("hub", "imdb", "v1")
    assert parse_source("mine", str(f)).kind == "file" and parse_source("mine", str(tmp_path)).kind == "dir"
    spec = parse_source("mine", str(f))
    assert SourceSpec.from_identity(spec.identity()).display == spec.display == "own data `mine.csv`"
    with pytest.raises(QdllmError, match="is not a file, a directory"):
        parse_source("mine", str(tmp_path / "missing.csv"))

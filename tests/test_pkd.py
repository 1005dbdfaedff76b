"""PKD (Patient Knowledge Distillation, Sun et al. 2019): the teacher's pooled hidden states at K layers as an optional
cache column (``qdllm teacher --export-layers K``), its reader checks, and the ``pkd`` baseline that distils them.

Tiny models built from configs stand in for the LLM and for all-mpnet-base-v2, so nothing downloads."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import run_cli, write_synthetic_cache
from pipeline.cache import LAYERS, read_teacher_cache
from pipeline.config import TeacherConfig
from pipeline.errors import QdllmError
from pipeline.keys import sha256_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def cpu_fp32(monkeypatch):
    """A CPU without a GPU and without native bf16 (``--precision auto`` resolves to fp32), whatever runs the test."""
    from pipeline import blas, config

    monkeypatch.setattr(config, "has_gpu", lambda: False)
    monkeypatch.setattr(blas, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setenv("QDLLM_THREADS", "1")


# ---------------------------------------------------------------- the setting and the key


def test_export_layers_off_leaves_the_teacher_key_as_before_and_on_changes_it():
    from pipeline.plan import Key, teacher_key

    data = Key("d" * 16, "d" * 64, {})
    off = TeacherConfig(profile="cpu")
    inputs = off.key_inputs("d" * 16, {"hf": "m"}, {"name": "e"})
    # the key inputs as they were computed before the setting existed: every other field, transfer by content
    before = {f: v for f, v in {**asdict(off), "transfer": None}.items() if f != "export_layers"}
    assert inputs["config"] == before
    on = TeacherConfig(profile="cpu", export_layers=5)
    assert on.key_inputs("d" * 16, {"hf": "m"}, {"name": "e"})["config"] == {**before, "export_layers": 5}
    assert teacher_key(data, off) != teacher_key(data, on) != teacher_key(data, TeacherConfig(profile="cpu",
                                                                                               export_layers=4))
    for bad in (-1, 65):
        with pytest.raises(QdllmError, match="--export-layers"):
            TeacherConfig(profile="cpu", export_layers=bad)


def test_layer_indices_are_pkd_skip_and_a_shallow_teacher_is_refused():
    from stages.teacher.train import export_layer_indices

    assert export_layer_indices(12, 5) == (2, 4, 6, 8, 10)  # PKD-Skip, 6-layer student of a 12-layer BERT
    assert export_layer_indices(30, 5) == (5, 10, 15, 20, 25)  # SmolLM2-135M
    assert export_layer_indices(4, 2) == (1, 3)
    assert export_layer_indices(2, 1) == (1,)
    with pytest.raises(QdllmError, match=r"it has 2 layers, so give --export-layers 1 or fewer"):
        export_layer_indices(2, 2)


# ---------------------------------------------------------------- the teacher writes the column


def test_teacher_exports_pooled_layers_from_its_forward_pass(tmp_path):
    from tiny_models import tiny_model_dir, tiny_teacher, write_tiny_dataset

    from pipeline.plan import resolve
    from stages.teacher.run import run_teacher

    dcfg = write_tiny_dataset(n=(24, 8, 8))
    model_dir = tiny_model_dir(tmp_path / "models", "llama", layers=4)
    tcfg = tiny_teacher(model_dir, epochs=1, export_layers=2, precision="fp32")
    path = run_teacher(resolve(data=dcfg, teacher=tcfg))
    cache = read_teacher_cache(path)
    info = cache.manifest[LAYERS]
    assert (info["count"], info["dim"], info["layers"], info["num_layers"]) == (2, 32, [1, 3], 4)
    assert cache.layers_shape == (2, 32) and cache.manifest["inputs"]["config"]["export_layers"] == 2
    for name, split in cache.splits.items():
        assert split.layers.shape == (len(split), 2, 32) and split.layers.dtype == np.float32, name
        assert np.isfinite(split.layers).all()
    # one fixed-size list<float32>[K*H] per row, layer-major; polars and pandas read it as they read the others
    assert pq.read_schema(path / "train.parquet").field(LAYERS).type == pa.list_(pa.float32(), 64)
    import polars as pl

    df = pl.read_parquet(path / "test.parquet")
    assert df[LAYERS].dtype == pl.Array(pl.Float32, 64)
    np.testing.assert_array_equal(df[LAYERS].to_numpy().reshape(-1, 2, 32), cache.splits["test"].layers)
    hf = json.loads(pq.read_schema(path / "val.parquet").metadata[b"huggingface"])["info"]["features"]
    assert hf[LAYERS]["length"] == 64
    assert "`teacher_layers` | float32 × 64" in (path / "README.md").read_text()
    # the states are the adapter's hidden_states[1] and [3], mean-pooled over the text's tokens
    from peft import PeftModel

    from stages.lm import models
    from stages.teacher import model as classifier

    tok = models.load_tokenizer(str(model_dir))
    model = PeftModel.from_pretrained(classifier.load_classifier(str(model_dir), 2, tok), path / "adapter").eval()
    for split, i in (("test", 0), ("val", 3)):  # val's come from their own pass, test's with the exported logits
        x = tok(cache.splits[split].texts[i:i + 1], return_tensors="pt", truncation=True, max_length=tcfg.max_length)
        with torch.no_grad():
            out = model(**x, output_hidden_states=True)
        expected = np.stack([out.hidden_states[j][0].mean(0).numpy() for j in (1, 3)])
        np.testing.assert_allclose(cache.splits[split].layers[i], expected, atol=1e-4, rtol=1e-4)
        if split == "test":
            np.testing.assert_allclose(cache.splits[split].logits[i], out.logits[0].numpy(), atol=1e-4)
    # students read no layers (nor pay for them)
    assert read_teacher_cache(path, columns=("label", "teacher_logits", "embedding")).splits["train"].layers is None


# ---------------------------------------------------------------- the reader checks it


@pytest.fixture
def layered(isolated_dirs):
    return write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=40, dim=4, layers=(2, 8))


def _rewrite(path, table):
    """Replace a split file and re-pin its hash, so only the defect under test remains."""
    pq.write_table(table, path)
    man = json.loads((path.parent / "manifest.json").read_text())
    man["files"][path.stem]["sha256"] = sha256_file(path)
    (path.parent / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("defect,message", [
    ("nan", "column teacher_layers holds NaN or infinite values"),
    ("width", "expected fixed_size_list<float>[16]"),
    ("missing", "lacks column(s) teacher_layers"),
    ("manifest", "teacher_layers.dim is 0, not a positive integer"),
])
def test_reader_refuses_bad_layers_in_one_sentence(layered, defect, message):
    train = layered / "train.parquet"
    assert read_teacher_cache(layered).splits["train"].layers.shape == (24, 2, 8)
    table = pq.read_table(train)
    i = table.column_names.index(LAYERS)
    values = np.array(table.column(LAYERS).combine_chunks().flatten(), np.float32).reshape(-1, 16)
    if defect == "nan":
        values[3, 5] = np.nan
        _rewrite(train, table.set_column(i, LAYERS, pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 16)))
    elif defect == "width":
        cut = values[:, :12].ravel()
        _rewrite(train, table.set_column(i, LAYERS, pa.FixedSizeListArray.from_arrays(pa.array(cut), 12)))
    elif defect == "missing":
        _rewrite(train, table.remove_column(i))
    else:
        man = json.loads((layered / "manifest.json").read_text())
        man[LAYERS]["dim"] = 0
        (layered / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(QdllmError) as err:
        read_teacher_cache(layered)
    text = str(err.value)
    assert message in text and "\n" not in text
    if defect != "manifest":
        proc = run_cli("cache", "verify", str(layered))
        assert proc.returncode == 2 and message in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- the pkd baseline


@pytest.fixture
def tiny_mpnet_source(monkeypatch):
    """``pretrained("mpnet")`` gives a tiny 12-layer MPNet (DistilBERT's cut leaves 6) with a word tokenizer."""
    import stages.baselines.models as M
    from test_baselines import tiny_mpnet, tiny_tokenizer

    asked = []

    def pretrained(source):
        asked.append(source)
        torch.manual_seed(123)
        return tiny_mpnet(12), tiny_tokenizer()

    monkeypatch.setattr(M, "pretrained", pretrained)
    return asked


def test_pkd_trains_from_the_teacher_layers_and_publishes_a_run(tiny_mpnet_source, isolated_dirs):
    from safetensors import safe_open

    from stages.baselines.config import BaselineConfig
    from stages.baselines.run import run_baseline
    from stages.report.runs import load_runs

    cache = write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=40, dim=4, transfer=4,
                                  layers=(2, 8))
    cfg = BaselineConfig(method="pkd", epochs=2, seeds=(0,), batch_size=8, lr=5e-3, max_length=16)
    path, trained = run_baseline(cache, cfg)
    assert trained and tiny_mpnet_source == ["mpnet"]
    (run,), _ = load_runs(isolated_dirs / "cache" / "student")
    m = run.metrics
    assert run.model == "pkd" and m["description"].startswith(
        "PKD-style: mpnet 6/12 layers, patient distillation from 2 teacher layers, ")
    c = m["config"]
    assert c["loss"] == "kl+js+ce+pt" and c["beta"] == 100.0 and c["keep_layers"] == [0, 2, 4, 6, 8, 10]
    # teacher layers 2 and 4 of 6 (write_synthetic_cache) sit at a third and two thirds: student layers 2 and 4 of 6
    assert c["patient"]["teacher_layers"] == [2, 4] and c["patient"]["student_layers"] == [2, 4]
    assert c["patient"]["projection_parameters"] == 2 * (16 * 8 + 8)
    assert 0.0 <= run.stat("test", "accuracy")[0] <= 1.0 and len(m["seeds"][0]["curves"]["val_loss"]) == 2
    (weights,) = path.glob("weights-seed*.safetensors")
    with safe_open(str(weights), "pt") as f:
        names = set(f.keys())
        saved = sum(f.get_tensor(n).numel() for n in names)
    assert not any(n.startswith("projections.") for n in names) and "head.weight" in names
    assert saved == m["trainable_params"]  # the classifier alone: encoder and head
    # beta is part of a pkd run's key, not of the other methods'
    from stages.baselines.run import baseline_key

    assert baseline_key("t1", cfg) != baseline_key("t1", BaselineConfig(method="pkd", beta=10.0))
    assert "beta" not in BaselineConfig(method="distilbert").settings()
    assert baseline_key("t1", BaselineConfig(method="minillm")) == baseline_key(
        "t1", BaselineConfig(method="minillm", beta=10.0))


def test_the_patient_term_is_pkds_and_reaches_the_projections():
    from stages.baselines.losses import patience_loss
    from stages.baselines.models import PatientClassifier, student_layers
    from test_baselines import tiny_mpnet

    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(3, 2, 5)), rng.normal(size=(3, 2, 5))
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    expected = sum(((unit(s[:, k]) - unit(t[:, k])) ** 2).mean() for k in range(2))
    assert patience_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(expected, rel=1e-5)
    assert patience_loss(torch.tensor(2.0 * t), torch.tensor(t)).item() == pytest.approx(0.0, abs=1e-7)
    assert student_layers([2, 4, 6, 8, 10], 12, 6) == (1, 2, 3, 4, 5)  # PKD-Skip
    assert student_layers([5, 10, 15, 20, 25], 30, 6) == (1, 2, 3, 4, 5)
    torch.manual_seed(0)
    model = PatientClassifier(tiny_mpnet(6), 2, 0.0, (2, 5), teacher_dim=7).eval()  # no dropout: comparable
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    logits, states = model.forward_with_states(ids, (ids > 0).long())
    assert logits.shape == (2, 2) and states.shape == (2, 2, 7)
    torch.testing.assert_close(logits, model(ids, (ids > 0).long()))
    patience_loss(states, torch.randn(2, 2, 7)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projections.parameters())
    assert model.encoder.encoder.layer[0].attention.attn.q.weight.grad is not None


def test_pkd_on_a_cache_without_layers_is_one_sentence_and_writes_nothing(isolated_dirs):
    write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=40, dim=4, task="emotion")
    proc = run_cli("baselines", "--teacher-key", "t1", "--method", "minillm,pkd")
    assert proc.returncode == 2, proc.stderr
    err = " ".join(proc.stderr.split())
    assert err.startswith("error: The teacher cache t1 has no teacher_layers column, which pkd distils from")
    assert "`make teacher TASK=emotion EXPORT_LAYERS=5`" in err
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (isolated_dirs / "cache" / "student").exists()  # not even the minillm run named before it


def test_without_method_pkd_runs_only_where_the_cache_has_layers(isolated_dirs, monkeypatch):
    from typer.testing import CliRunner

    import stages.baselines.run as R
    from stages.cli import app

    root = isolated_dirs / "cache" / "teacher"
    write_synthetic_cache(root / "plain", n=20, dim=4)
    write_synthetic_cache(root / "layered", n=20, dim=4, layers=(2, 4))
    calls = []
    monkeypatch.setattr(R, "run_baseline", lambda cache, cfg: calls.append((cache.name, cfg.method)) or (cache, False))
    result = CliRunner().invoke(app, ["-q", "baselines"])
    assert result.exit_code == 0, result.output
    assert sorted(calls) == sorted([(c, m) for c in ("plain", "layered") for m in ("tinybert", "distilbert",
                                                                                   "minillm")] + [("layered", "pkd")])


def test_a_teacher_too_shallow_for_its_layers_stops_before_fine_tuning(tmp_path):
    from tiny_models import tiny_model_dir, tiny_teacher, write_tiny_dataset

    from pipeline.plan import resolve
    from stages.teacher.run import run_teacher

    dcfg = write_tiny_dataset(n=(8, 4, 4))
    plan = resolve(data=dcfg, teacher=tiny_teacher(tiny_model_dir(tmp_path / "models", "llama"), export_layers=2))
    with pytest.raises(QdllmError, match="it has 2 layers, so give --export-layers 1 or fewer"):
        run_teacher(plan)
    assert not plan.teacher.dir.exists()
    assert not list((plan.teacher.dir.parent / ".work").glob("*/checkpoint.pt"))

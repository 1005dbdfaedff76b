"""Stage one with tiny LLaMA-, BLOOM- and OPT-family models built from configs (no hub, no downloads)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpers import run_cli  # noqa: E402
from tiny_models import (  # noqa: E402
    text,
    tiny_encoder_dir,
    tiny_model_dir,
    tiny_teacher,
    write_tiny_dataset,
)

from pipeline.cache import read_teacher_cache  # noqa: E402
from pipeline.config import DataConfig, TeacherConfig  # noqa: E402
from pipeline.errors import QdllmError  # noqa: E402
from pipeline.plan import data_key, data_path, resolve, teacher_key, teacher_path  # noqa: E402

@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(autouse=True)
def cpu_bf16(request, monkeypatch):
    """The machine these tests describe, whatever machine runs them: a CPU without a GPU, with native bf16 (AMX,
    AVX512-BF16: ``--precision auto`` picks bf16) when the test is parametrised so, else without (auto picks fp32)."""
    from pipeline import blas, config

    native = getattr(request, "param", False)
    monkeypatch.setattr(config, "has_gpu", lambda: False)
    monkeypatch.setattr(blas, "cpu_flags", lambda: {"avx2", "fma"} | ({"amx_bf16", "avx512_bf16"} if native else set()))
    return native


@pytest.fixture
def fine_tune(models_root):
    """LoRA fine-tune of the tiny Llama on ``n`` generated texts, from a fresh model each call (same seeds)."""
    from stages.lm import models
    from stages.teacher import model as classifier
    from stages.teacher.train import tokenize, train

    d = str(tiny_model_dir(models_root, "llama"))

    def run(work, *, n: int, epochs: int, grad_accum: int, checkpointing: bool = False, **kw):
        rng = np.random.default_rng(0)
        labels = np.arange(n) % 2
        texts = [text(rng, y) for y in labels]
        torch.manual_seed(7)
        tok = models.load_tokenizer(d)
        model = classifier.add_lora(classifier.load_classifier(d, 2, tok, seed=3, precision="fp32"), r=4, alpha=8,
                                    dropout=0.1, seed=3, gradient_checkpointing=checkpointing)
        assert model.base_model.model.is_gradient_checkpointing == checkpointing
        ids = tokenize(tok, texts, 16)
        return train(model, ids, labels, ids[:8], labels[:8], pad_id=tok.pad_token_id, lr=5e-3, weight_decay=0.0,
                     epochs=epochs, batch_size=8, grad_accum=grad_accum, seed=0, work_dir=work, **kw)

    return run


# Tests whose --precision is left to `auto` run as on both kinds of CPU.
BOTH_CPUS = pytest.mark.parametrize("cpu_bf16", [False, True], indirect=True, ids=["avx2-cpu", "amx-cpu"])

# Tolerances (atol, rtol) for reproducing cached logits from the saved adapter, per the precision the cache records:
# fp32 runs agree to float32 rounding across batch shapes (seen: 5e-8); bf16 autocast keeps 8 mantissa bits, and a
# different batch (padding, accumulation order) moves logits of order 0.1 by a few bf16 ulps (ulp 2^-11 there; seen:
# 9.8e-4 = 2 ulps), so 4 ulps absolute and 2^-6 relative.
REPRODUCE_TOL = {"fp32": (1e-4, 0.0), "bf16": (2e-3, 2**-6)}


def reproduce_logits(model, x: dict, manifest: dict):
    """Logits of a reloaded adapter computed as the adapter's README says reproduces the cache."""
    record = manifest["export_precision"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=record["autocast"] == "bfloat16"):
        return model(**x).logits.float().numpy()


# ---------------------------------------------------------------- model, LoRA, head


@pytest.mark.parametrize("family,targets", [("llama", {"q_proj", "k_proj", "v_proj"}),
                                            ("bloom", {"query_key_value"}), ("opt", {"q_proj", "v_proj"})])
def test_lora_targets_and_head_per_family(models_root, family, targets):
    from stages.lm import models
    from stages.teacher import model as classifier

    d = str(tiny_model_dir(models_root, family))
    tok = models.load_tokenizer(d)
    model = classifier.add_lora(classifier.load_classifier(d, 3, tok), r=4, alpha=8, dropout=0.0)
    lora = {n for n, _ in model.named_parameters() if "lora_A" in n}
    wrapped = {re.search(r"\.(\w+)\.lora_A", n).group(1) for n in lora}
    assert wrapped == targets
    assert len(lora) == 2 * len(targets)  # every target in both layers
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = trainable - {n for n in trainable if "lora_" in n}
    assert head and all(("score" in n) for n in head)
    x = tok(["good movie", "bad"], return_tensors="pt", padding=True)
    assert model(**x).logits.shape == (2, 3)


def test_head_reads_last_non_pad_token_and_pad_is_set(models_root):
    from stages.lm import models
    from stages.teacher import model as classifier
    from stages.teacher.train import collate

    d = str(tiny_model_dir(models_root, "llama"))
    assert transformers.AutoTokenizer.from_pretrained(d).pad_token is None
    tok = models.load_tokenizer(d)
    assert tok.pad_token is not None
    model = classifier.load_classifier(d, 2, tok).eval()
    assert model.config.pad_token_id == tok.pad_token_id
    ids = [tok("good movie")["input_ids"], tok("the film was very very dull and the story was boring")["input_ids"]]
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([ids[0]])).logits
        x, mask = collate(ids, [0, 1], tok.pad_token_id, "cpu")
        batched = model(input_ids=x, attention_mask=mask).logits
    assert x[0, -1] == tok.pad_token_id  # the short text really is padded
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)


def test_bucketed_batches_cover_every_example_once_with_little_padding():
    from stages.teacher.train import bucket_batches

    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    batches = bucket_batches(lengths, 16, seed=0, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    pad = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches)
    assert pad < 0.1 * lengths.sum()
    assert [b.tolist() for b in batches] == [b.tolist() for b in bucket_batches(lengths, 16, seed=0, epoch=0)]
    assert batches[0].tolist() != bucket_batches(lengths, 16, seed=0, epoch=1)[0].tolist()


def test_cpu_threads_leave_cores_that_other_processes_keep_busy(monkeypatch):
    from stages.lm import models

    cores = len(os.sched_getaffinity(0))
    assert 0.0 <= models._busy_cores(cores, window=0.05) <= (os.cpu_count() or cores) + 1e-6
    monkeypatch.delenv("QDLLM_THREADS", raising=False)
    monkeypatch.setattr(models, "_busy_cores", lambda n: 0.1)
    assert models.cpu_threads() == cores
    monkeypatch.setattr(models, "_busy_cores", lambda n: cores + 3.0)  # overloaded: still one thread
    assert models.cpu_threads() == 1
    monkeypatch.setenv("QDLLM_THREADS", "3")
    assert models.cpu_threads() == 3


# ---------------------------------------------------------------- the whole stage


@BOTH_CPUS
def test_stage_writes_a_valid_cache_with_adapter_and_then_does_nothing(models_root, cpu_bf16):
    from stages.teacher.run import run_teacher

    dcfg = write_tiny_dataset()
    tcfg = tiny_teacher(tiny_model_dir(models_root, "bloom"))
    path = run_teacher(resolve(data=dcfg, teacher=tcfg))
    assert path == teacher_path(teacher_key(data_key(dcfg), tcfg))
    cache = read_teacher_cache(path)
    assert {s: len(cache.splits[s]) for s in cache.splits} == {"train": 48, "val": 16, "test": 16}
    assert cache.num_classes == 2 and cache.embedding_dim == 32  # teacher-input: the LLM's hidden size
    m = cache.manifest
    assert set(m["teacher_metrics"]) == {"val", "test"}
    assert set(m["teacher_metrics"]["test"]) >= {"accuracy", "precision", "recall", "f1"}
    assert m["lora_trainable_params"] == 2 * 4 * (32 + 96) + 32 * 2
    assert m["caps"]["fine_tune_examples"] == 48 and m["data_key"] == data_key(dcfg).short
    assert set(m["timings"]) >= {"load_model", "fine_tune", "export_logits", "embeddings"}
    np.testing.assert_allclose(cache.splits["val"].probs.sum(1), 1.0, atol=1e-5)
    assert (path / "adapter" / "adapter_config.json").is_file()
    assert (path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (path.parent / ".work" / path.name).exists()
    # the adapter is peft's standard format and reproduces the cached logits
    from peft import PeftModel

    from stages.lm import models
    from stages.teacher import model as classifier

    tok = models.load_tokenizer(tcfg.model)
    base = classifier.load_classifier(tcfg.model, 2, tok)
    model = PeftModel.from_pretrained(base, path / "adapter").eval()
    x = tok(cache.splits["test"].texts[:1], return_tensors="pt", truncation=True, max_length=tcfg.max_length)
    precision = m["precision"]
    assert precision == ("bf16" if cpu_bf16 else "fp32")  # what `auto` resolves to on this kind of CPU
    record = m["export_precision"]
    assert record == json.loads((path / "adapter" / "qdllm_adapter.json").read_text())["export_precision"]
    atol, rtol = REPRODUCE_TOL[precision]
    np.testing.assert_allclose(reproduce_logits(model, x, m)[0], cache.splits["test"].logits[0], atol=atol, rtol=rtol)
    card = (path / "adapter" / "README.md").read_text()
    if precision == "bf16":
        assert "torch.autocast" in card and f"{record['fp32_max_abs_difference']:.2g}" in card
        with torch.no_grad():  # plain fp32 lands within the difference the card states
            fp32 = model(**x).logits[0].numpy()
        assert np.abs(fp32 - cache.splits["test"].logits[0]).max() <= record["fp32_max_abs_difference"] + 1e-5
    else:
        assert "fp32" in card and record["autocast"] is None
    stamp = (path / "manifest.json").stat().st_mtime_ns
    assert run_teacher(resolve(data=dcfg, teacher=tcfg)) == path and (path / "manifest.json").stat().st_mtime_ns == stamp


@BOTH_CPUS
def test_caps_and_a_local_encoder(models_root):
    from stages.teacher.run import run_teacher

    dcfg = write_tiny_dataset()
    enc = tiny_encoder_dir(models_root)
    tcfg = tiny_teacher(tiny_model_dir(models_root, "opt"), epochs=1, max_export_examples=10, max_train_examples=6,
                        embedder=str(enc))
    cache = read_teacher_cache(run_teacher(resolve(data=dcfg, teacher=tcfg)))
    assert {s: len(cache.splits[s]) for s in cache.splits} == {"train": 10, "val": 10, "test": 10}
    assert cache.embedding_dim == 24
    assert cache.manifest["caps"]["fine_tune_examples"] == 6
    assert cache.manifest["caps"]["exported_rows"] == {"train": 10, "val": 10, "test": 10}
    assert cache.manifest["caps"]["dataset_rows"] == {"train": 48, "val": 16, "test": 16}


@BOTH_CPUS
def test_auto_precision_follows_the_cpu_and_explicit_precision_wins(cpu_bf16):
    assert TeacherConfig(profile="cpu").precision == ("bf16" if cpu_bf16 else "fp32")
    assert TeacherConfig(profile="cpu", precision="fp32").precision == "fp32"
    assert TeacherConfig(profile="cpu", precision="bf16").precision == "bf16"


def test_bf16_on_the_cpu_is_an_autocast_recorded_in_the_key_and_close_to_fp32(models_root):
    """--precision bf16 runs on any CPU (emulated where not native): same rows, its own key and manifest entry,
    logits within bf16 rounding of the fp32 run's."""
    from stages.teacher.run import run_teacher

    dcfg = write_tiny_dataset()
    model = tiny_model_dir(models_root, "llama")
    caches = {}
    for precision in ("fp32", "bf16"):
        tcfg = tiny_teacher(model, epochs=1, lora_dropout=0.0, max_export_examples=10, precision=precision)
        path = run_teacher(resolve(data=dcfg, teacher=tcfg))
        caches[precision] = read_teacher_cache(path)
        assert caches[precision].manifest["precision"] == precision
    assert caches["fp32"].key != caches["bf16"].key
    for s in ("train", "val", "test"):
        a, b = caches["fp32"].splits[s], caches["bf16"].splits[s]
        assert a.ids == b.ids
        assert not np.array_equal(a.logits, b.logits)  # the autocast did change the arithmetic
        np.testing.assert_allclose(a.logits, b.logits, atol=0.1)


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(fine_tune, tmp_path):
    from stages.teacher.train import CHECKPOINT

    def run(work, **kw):
        return fine_tune(work, n=40, epochs=2, grad_accum=2, checkpoint_every_steps=1, **kw)

    def stop_at_4(step):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "a", on_step=stop_at_4)
    assert (tmp_path / "a" / CHECKPOINT).is_file()
    resumed = run(tmp_path / "a")
    straight = run(tmp_path / "b")
    assert resumed.resumed_at_step == 4 and straight.resumed_at_step == 0
    assert resumed.steps == straight.steps == 6  # 5 batches, accumulate 2 → 3 steps per epoch
    assert [h["val_accuracy"] for h in resumed.history] == [h["val_accuracy"] for h in straight.history]
    for name, value in straight.best_state.items():
        torch.testing.assert_close(resumed.best_state[name], value)


@BOTH_CPUS
def test_interrupted_stage_leaves_no_cache_and_the_next_run_continues(models_root):
    from stages.teacher.run import run_teacher, work_dir

    dcfg = write_tiny_dataset()
    tcfg = tiny_teacher(tiny_model_dir(models_root, "llama"))
    final = teacher_path(teacher_key(data_key(dcfg), tcfg))

    def stop(step):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_teacher(resolve(data=dcfg, teacher=tcfg), checkpoint_every_steps=1, on_step=stop)
    assert not final.exists() and (work_dir(final.name) / "checkpoint.pt").is_file()
    cache = read_teacher_cache(run_teacher(resolve(data=dcfg, teacher=tcfg)))
    assert cache.manifest["fine_tune"]["resumed_at_step"] == 7
    assert cache.manifest["fine_tune"]["optimizer_steps"] == 12


# ---------------------------------------------------------------- several processes (DDP on Accelerate)

DDP_FLAGS = ["--embedder", "teacher-input", "--profile", "cpu", "--lora-r", "4", "--lora-alpha", "8",
             "--lora-dropout", "0", "--teacher-lr", "3e-2", "--teacher-epochs", "3", "--teacher-batch-size", "8",
             "--grad-accum", "2", "--max-length", "16", "--max-train-examples", "41", "--max-export-examples", "0",
             "--precision", "fp32"]


def test_two_cpu_processes_under_accelerate_launch_write_the_single_process_cache(models_root, isolated_dirs,
                                                                                  monkeypatch):
    """`accelerate launch --num_processes 2 --cpu` (gloo): same key, rows, order and format as one process, values
    to float tolerance. 41 fine-tune examples in global batches of 8 end with a batch of 1 (one process has no
    example of it), and 2 accumulated micro-batches make each step; dropout is 0 (see docs/teacher.md). The
    two processes take over from a single-process run interrupted at step 4 of 9: a checkpoint does not depend
    on the number of processes."""
    import shutil
    import subprocess
    import sys

    launcher = Path(sys.executable).parent / "accelerate"
    if not launcher.is_file():
        pytest.skip("accelerate's launcher is not installed")
    from helpers import ROOT

    from stages.teacher.run import run_teacher

    dcfg = write_tiny_dataset()
    model = tiny_model_dir(models_root, "llama")
    flags = ["--model", str(model), *DDP_FLAGS]
    tcfg = tiny_teacher(model, lora_dropout=0.0, lr=3e-2, epochs=3, grad_accum=2, max_train_examples=41,
                        precision="fp32")
    one = read_teacher_cache(run_teacher(resolve(data=dcfg, teacher=tcfg)))

    monkeypatch.setenv("QDLLM_CACHE_DIR", str(isolated_dirs / "cache-2"))

    def stop(step):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_teacher(resolve(data=dcfg, teacher=tcfg), checkpoint_every_steps=1, on_step=stop)
    proc = subprocess.run([str(launcher), "launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "stages.cli", "teacher",
                           "--task", "emotion", *flags], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          check=False, env={**os.environ, "QDLLM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    teacher_root = isolated_dirs / "cache-2" / "teacher"
    assert proc.stdout.split() == [str(teacher_root / one.path.name)]  # the main process prints it, once
    assert sorted(p.name for p in teacher_root.iterdir() if not p.name.startswith(".")) == [one.path.name]
    assert not (teacher_root / ".work" / one.path.name).exists()
    two = read_teacher_cache(teacher_root / one.path.name)  # the reader's validation: schema, dims, hashes

    assert two.manifest["processes"] == {"count": 2, "device": "cpu", "backend": "gloo"}
    assert one.manifest["processes"]["count"] == 1 and two.manifest["fine_tune"]["resumed_at_step"] == 4
    assert two.manifest["inputs"] == one.manifest["inputs"] and two.key == one.key
    for s in ("train", "val", "test"):
        a, b = one.splits[s], two.splits[s]
        assert a.ids == b.ids and a.texts == b.texts and (a.labels == b.labels).all()
        np.testing.assert_allclose(b.logits, a.logits, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(b.probs, a.probs, atol=1e-4)
        np.testing.assert_allclose(b.embeddings, a.embeddings, atol=1e-6)
    ft1, ft2 = one.manifest["fine_tune"], two.manifest["fine_tune"]
    assert (ft1["best_epoch"], ft1["optimizer_steps"]) == (ft2["best_epoch"], ft2["optimizer_steps"]) == (3, 9)
    assert 0 < ft2["tokens"] < ft1["tokens"]  # the tokens this invocation ran: steps 5 to 9
    assert [h["val_accuracy"] for h in ft1["history"]] == [h["val_accuracy"] for h in ft2["history"]]
    np.testing.assert_allclose([h["train_loss_ema"] for h in ft2["history"]],
                               [h["train_loss_ema"] for h in ft1["history"]], rtol=1e-4)
    assert one.manifest["teacher_metrics"]["val"]["accuracy"] > 0.75  # it learned: the weights really moved
    shutil.rmtree(isolated_dirs / "cache-2")


def test_accelerate_cpu_launch_without_mpi_is_recognised(monkeypatch):
    """`accelerate launch --cpu --num_processes N` runs the script once (MASTER_ADDR set, no rank): the teacher
    command reads N from the launch command line and starts the N processes itself."""
    import psutil

    from stages.teacher import cli

    class Parent:
        def __init__(self, argv):
            self.argv = argv

        def cmdline(self):
            return self.argv

    def launched(*launch, **env):
        argv = ["/venv/bin/python", "/venv/bin/accelerate", "launch", *launch, "-m", "stages.cli", "teacher",
                "--teacher-epochs", "2"]
        monkeypatch.setattr(psutil, "Process", lambda pid: Parent(argv))
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "PMI_SIZE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return cli._processes_accelerate_did_not_start()

    assert launched("--num_processes", "2", "--cpu") == 2
    assert launched("--num-processes=3", "--cpu") == 3
    assert launched("--num_processes", "1", "--cpu") == 0
    assert launched("--num_processes", "2", "--cpu", RANK="0", WORLD_SIZE="2") == 0  # the processes exist already
    with pytest.raises(QdllmError, match="MPI"):
        launched("--num_processes", "4", "--num_machines", "2", "--cpu")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    assert cli._processes_accelerate_did_not_start() == 0


def test_gradient_checkpointing_gives_the_same_fine_tune(fine_tune, tmp_path):
    def run(work, checkpointing):
        return fine_tune(work, n=24, epochs=1, grad_accum=1, checkpointing=checkpointing)

    plain, checkpointed = run(tmp_path / "a", False), run(tmp_path / "b", True)
    for name, value in plain.best_state.items():  # dropout 0.1: the recomputation replays the same masks
        torch.testing.assert_close(checkpointed.best_state[name], value, atol=1e-6, rtol=1e-5)


def test_tracking_reports_the_fine_tune_and_is_off_by_default(models_root):
    from accelerate.tracking import GeneralTracker

    from stages.teacher.run import run_teacher

    class Recorder(GeneralTracker):
        name, requires_logging_directory, main_process_only = "recorder", False, True

        def __init__(self):
            super().__init__()
            self.config, self.logged, self.finished = None, [], False

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.config = values

        def log(self, values, step=None, **kwargs):
            self.logged.append((step, dict(values)))

        def finish(self):
            self.finished = True

    dcfg = write_tiny_dataset()
    tcfg = tiny_teacher(tiny_model_dir(models_root, "opt"), epochs=2)
    rec = Recorder()
    path = run_teacher(resolve(data=dcfg, teacher=tcfg), report_to=(rec,))
    assert rec.config["teacher_key"] == path.name and rec.config["lora_r"] == 4 and rec.finished
    steps = [step for step, values in rec.logged if "train/loss" in values]
    assert steps == list(range(1, 13))  # 48 examples, batch 8, 2 epochs
    assert [step for step, values in rec.logged if "val/accuracy" in values] == [6, 12]
    assert any("test/teacher_accuracy" in values for _, values in rec.logged)
    assert not (path.parent / ".runs").exists()  # nothing is tracked unless asked

    from accelerate.utils import is_tensorboard_available

    if not is_tensorboard_available():
        proc = run_cli("teacher", "--report-to", "tensorboard", "--task", "emotion", "--profile", "cpu")
        assert proc.returncode == 2 and "needs the tensorboard package" in proc.stderr, proc.stderr
    proc = run_cli("teacher", "--report-to", "wandb", "--task", "emotion", "--profile", "cpu")
    assert proc.returncode == 2 and "Unknown --report-to 'wandb'" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- Table 3


def test_table3_lora_counts_from_configs_alone():
    from stages.teacher.params import PAPER_TABLE3, count_lora_params

    for name, paper in PAPER_TABLE3.items():
        info = count_lora_params(name, r=200)
        assert abs(info["lora_trainable_params"] - paper) <= 0.05e6, (name, info["lora_trainable_params"])
        hidden = {"bloomz-1b1": 1536, "bloomz-3b": 2560}.get(name, 4096)
        assert info["head_params"] == 2 * hidden  # the binary score head (no bias) is counted as trainable
    assert count_lora_params("llama2-7b", r=8)["lora_params"] == 8 * (4096 + 4096) * 3 * 32


def test_params_command_prints_json():
    proc = run_cli("teacher", "params", "--model", "opt-6.7b", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["model"] == "opt-6.7b" and info["target_modules"] == ["q_proj", "v_proj"]
    assert info["lora_params"] == 200 * (4096 + 4096) * 2 * 32 and info["head_params"] == 4096 * 2


# ---------------------------------------------------------------- bad input: one sentence, exit 2, no cache


def _one_sentence(msg: str) -> None:
    assert msg.count(". ") == 0 and msg.endswith(".") and "\n" not in msg, msg


def test_missing_data_and_unknown_model_fail_in_one_line():
    proc = run_cli("teacher", "--task", "thematic", "--profile", "cpu")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "make data TASK=thematic" in proc.stderr and proc.stderr.count("\n") <= 2
    proc = run_cli("teacher", "--task", "emotion", "--model", "nosuchmodel")
    assert proc.returncode == 2 and "smollm2-135m" in proc.stderr and "local directory" in proc.stderr


def test_bad_models_and_quantize_raise_one_sentence_without_a_cache(models_root, tmp_path, monkeypatch):
    from stages.teacher.run import run_teacher

    dcfg = write_tiny_dataset()
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = [
        (tiny_teacher(empty), "holds no weight files"),
        (tiny_teacher("someorg/not-downloaded"), "offline default 'smollm2-135m'"),
        (tiny_teacher(tiny_model_dir(models_root, "llama"), quantize="4bit"), "needs a CUDA GPU"),
    ]
    for tcfg, expected in cases:
        with pytest.raises(QdllmError) as err:
            run_teacher(resolve(data=dcfg, teacher=tcfg))
        assert expected in str(err.value)
        _one_sentence(str(err.value))
    assert not any(p.name[0] != "." for p in (Path(tmp_path) / "cache" / "teacher").glob("*"))


# ---------------------------------------------------------------- the packaged default (slow)


@pytest.mark.slow
def test_packaged_smollm2_loads_offline_and_a_small_run_beats_chance(monkeypatch):
    from stages.lm.models import resolve_model_dir
    from stages.teacher.run import run_teacher

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = resolve_model_dir("smollm2-135m")
    assert resolve_model_dir("smollm2-135m") == d  # converted once
    lm = transformers.AutoModelForCausalLM.from_pretrained(d)
    tok = transformers.AutoTokenizer.from_pretrained(d)
    out = lm.generate(**tok("The capital of France is", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 5
    dcfg = write_tiny_dataset(n=(96, 40, 40))
    tcfg = TeacherConfig(profile="cpu", max_train_examples=96, lr=5e-4, epochs=3, embedder="minilm")
    cache = read_teacher_cache(run_teacher(resolve(data=dcfg, teacher=tcfg)))
    assert cache.embedding_dim == 384 and cache.manifest["lora_trainable_params"] == 16_129_152
    assert cache.manifest["teacher_metrics"]["test"]["accuracy"] >= 0.8, cache.manifest["teacher_metrics"]


# ---------------------------------------------------------------- the adapter outside this project


@BOTH_CPUS
def test_adapter_loads_with_auto_peft_its_tokenizer_and_labels_and_reproduces_the_cache(models_root, monkeypatch):
    """A 3-class adapter: AutoPeftModelForSequenceClassification finds the base by the recorded path, the
    tokenizer and labels.json come with it, and a padded batch gives the cached teacher logits."""
    from peft import AutoPeftModelForSequenceClassification

    from pipeline.models import model_identity
    from stages.data.dataset import frame, write_dataset
    from stages.teacher.run import run_teacher

    names = ["sports", "world", "science"]
    dcfg = DataConfig(task="thematic")
    key = data_key(dcfg)
    rng = np.random.default_rng(2)
    splits = {s: frame([f"{text(rng, i % 2)} {s} {i}" for i in range(m)], [i % 3 for i in range(m)])
              for s, m in (("train", 24), ("val", 9), ("test", 9))}
    write_dataset(data_path(dcfg, key), splits,
                  task="thematic", class_names=names, key=key.full, inputs=key.inputs)
    base = tiny_model_dir(models_root, "llama")
    tcfg = tiny_teacher(base, epochs=1)
    cache = read_teacher_cache(run_teacher(resolve(data=dcfg, teacher=tcfg)))
    adapter = cache.path / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base.resolve()) and config["task_type"] == "SEQ_CLS"
    info = json.loads((adapter / "qdllm_adapter.json").read_text())
    assert info["base_model"]["identity"] == model_identity(str(base)) and info["class_names"] == names
    kw = json.loads((adapter / "labels.json").read_text())
    assert kw["id2label"] == {"0": "sports", "1": "world", "2": "science"} and kw["label2id"]["science"] == 2
    assert (adapter / "README.md").read_text().count("AutoPeftModelForSequenceClassification") >= 1

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = transformers.AutoTokenizer.from_pretrained(adapter)
    assert tok.pad_token_id == kw["pad_token_id"] is not None  # the stage's pad token travels with the adapter
    kw["id2label"] = {int(i): n for i, n in kw["id2label"].items()}  # as the adapter's README says
    model = AutoPeftModelForSequenceClassification.from_pretrained(str(adapter), **kw).eval()
    assert model.config.id2label == {0: "sports", 1: "world", 2: "science"}
    test = cache.splits["test"]
    x = tok(test.texts[:6], return_tensors="pt", padding=True, truncation=True, max_length=tcfg.max_length)
    atol, rtol = REPRODUCE_TOL[cache.manifest["precision"]]
    np.testing.assert_allclose(reproduce_logits(model, x, cache.manifest), test.logits[:6], atol=atol, rtol=rtol)


def test_adapter_records_hub_commit_or_packaged_artifact(tmp_path):
    import hashlib

    from stages.teacher.model import base_model_record

    snapshot = tmp_path / "snapshots" / ("ab" * 20)
    rec = base_model_record("bloomz-1b1", "main", str(snapshot))
    assert rec["base_model_name_or_path"] == "bigscience/bloomz-1b1"
    assert (rec["revision"], rec["source"]) == ("ab" * 20, "hub")
    converted = tmp_path / "SmolLM2-135M-Instruct.Q4_1-0123456789abcdef"
    converted.mkdir()
    (converted / "model.safetensors").write_bytes(b"weights")
    rec = base_model_record("smollm2-135m", "main", str(converted))
    assert rec["base_model_name_or_path"] == converted.name and rec["source"] == "packaged"
    assert rec["identity"]["packaged"] == "smollm2-135m" and "sha256" in json.dumps(rec["identity"])
    assert rec["converted_weights_sha256"] == {"model.safetensors": hashlib.sha256(b"weights").hexdigest()}
    assert rec["converted_from"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


@BOTH_CPUS
def test_transfer_texts_are_labelled_by_the_teacher_into_an_unlabeled_split(models_root, tmp_path):
    from pipeline.cache import TRANSFER, UNLABELED
    from stages.teacher.run import run_teacher

    dcfg = write_tiny_dataset()
    dataset_text = read_texts_of(dcfg)[0]
    src = tmp_path / "unlabeled.txt"
    src.write_text("\n".join(["good movie very good", "awful dull film", "good movie very good", "",
                              dataset_text]) + "\n")
    tcfg = tiny_teacher(tiny_model_dir(models_root, "llama"), transfer=str(src), epochs=1)
    path = run_teacher(resolve(data=dcfg, teacher=tcfg))
    cache = read_teacher_cache(path, transfer=True)
    extra = cache.splits[TRANSFER]
    assert extra.texts == ["good movie very good", "awful dull film"]  # deduplicated, no dataset text
    assert (extra.labels == UNLABELED).all() and extra.logits.shape == (2, 2) and extra.embeddings.shape[1] == 32
    assert {s: len(cache.splits[s]) for s in ("train", "val", "test")} == {"train": 48, "val": 16, "test": 16}
    # the key follows the file's content, not its path
    moved = tmp_path / "elsewhere" / "unlabeled.txt"
    moved.parent.mkdir()
    moved.write_bytes(src.read_bytes())
    assert teacher_key(data_key(dcfg), replace(tcfg, transfer=str(moved))).short == path.name
    moved.write_text("another text\n")
    assert teacher_key(data_key(dcfg), replace(tcfg, transfer=str(moved))).short != path.name
    with pytest.raises(QdllmError, match="does not exist"):
        replace(tcfg, transfer=str(tmp_path / "missing.txt"))


def read_texts_of(dcfg) -> list[str]:
    from stages.data.dataset import load_dataset

    return load_dataset(data_path(dcfg, data_key(dcfg))).splits["test"]["text"].to_list()

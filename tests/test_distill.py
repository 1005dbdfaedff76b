"""What tells a user whether distillation can help: agreement, calibration, the probe ceiling."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import write_synthetic_cache
from pipeline.cache import read_teacher_cache
from pipeline.metrics import agreement, expected_calibration_error
from pipeline.probe import distillation_can_help, probe_of_cache


def test_agreement_counts_matching_classes():
    s = np.array([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0], [0.0, 5.0]])
    t = np.array([[1.0, 0.0], [1.0, 0.0], [9.0, 1.0], [0.0, 1.0]])
    assert agreement(s, t) == 0.75


def test_expected_calibration_error():
    labels = np.array([0, 0, 1, 1])
    perfect = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, labels) == pytest.approx(0.0)
    overconfident = np.array([[0.9, 0.1]] * 4)  # 90 % sure, right half the time
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.4)


def test_probe_ceiling_comes_from_the_cache_alone(tmp_path):
    cache = read_teacher_cache(write_synthetic_cache(tmp_path / "c", n=300, dim=16))
    probe = probe_of_cache(cache)
    assert probe["test"]["accuracy"] >= 0.9 and probe["val"]["accuracy"] >= 0.9
    rng = np.random.default_rng(0)
    for split in cache.splits.values():  # embeddings that carry no signal: the probe is at chance
        split.embeddings = rng.normal(size=split.embeddings.shape).astype(np.float32)
    assert probe_of_cache(cache)["test"]["accuracy"] < 0.7
    assert distillation_can_help(0.85, 0.80) and not distillation_can_help(0.80, 0.80)


# ---------------------------------------------------------------- the transfer set


def test_transfer_rows_are_stored_unlabeled_and_old_caches_still_read(tmp_path):
    import polars as pl

    from pipeline.cache import TRANSFER, UNLABELED

    path = write_synthetic_cache(tmp_path / "c", n=60, dim=8, transfer=20)
    assert pl.read_parquet(path / "transfer.parquet")["label"].null_count() == 20
    cache = read_teacher_cache(path, transfer=True)
    assert (cache.splits[TRANSFER].labels == UNLABELED).all() and len(cache.splits[TRANSFER]) == 20
    assert TRANSFER not in read_teacher_cache(path).splits  # only when asked for
    old = read_teacher_cache(write_synthetic_cache(tmp_path / "old", n=60, dim=8), transfer=True)
    assert set(old.splits) == {"train", "val", "test"}
    lean = read_teacher_cache(path, columns=("label", "teacher_logits", "embedding"))
    assert lean.splits["train"].texts == [] and lean.splits["train"].embeddings.shape[1] == 8


def test_ce_never_sees_unlabeled_rows():
    from stages.student.losses import distill_loss

    rng = np.random.default_rng(0)
    logits, teacher = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    labels = np.array([0, 2, 1, -1, -1, -1])
    ce_all, g_all = distill_loss(logits, labels, teacher, "ce")
    ce_lab, g_lab = distill_loss(logits[:3], labels[:3], teacher[:3], "ce")
    assert ce_all == pytest.approx(ce_lab) and np.allclose(g_all[:3], g_lab) and not g_all[3:].any()
    assert distill_loss(logits[3:], labels[3:], teacher[3:], "ce") == (0.0, pytest.approx(np.zeros((3, 3))))
    _, g = distill_loss(logits, labels, teacher, "kl+js+ce")
    assert np.abs(g[3:]).sum() > 0  # the distillation terms do use them


def test_transfer_rows_never_enter_validation_or_test_metrics(tmp_path, monkeypatch):
    from pipeline.config import StudentConfig
    from stages.student.run import run_student

    monkeypatch.setenv("QDLLM_CACHE_DIR", str(tmp_path / "cache"))
    path = write_synthetic_cache(tmp_path / "cache" / "teacher" / "t", n=90, dim=8, transfer=60)
    import json

    runs = {}
    for use in (True, False):
        run, _ = run_student(path, StudentConfig(model="logreg", epochs=2, seeds=(0,), transfer=use))
        runs[use] = json.loads((run / "metrics.json").read_text())
    for m in runs.values():
        seed = m["seeds"][0]
        assert sum(map(sum, seed["test"]["confusion"])) == 18  # the 18 labelled test rows, no transfer row
        assert (seed["val"]["accuracy"] * 18) == pytest.approx(round(seed["val"]["accuracy"] * 18))
    assert runs[True]["seeds"][0]["curves"] != runs[False]["seeds"][0]["curves"]  # the transfer rows were used


def test_report_opens_with_the_distillation_gain_and_the_probe_verdict(tmp_path, monkeypatch):
    import json

    from pipeline.config import StudentConfig
    from stages.report.build import build_report
    from stages.student.run import run_student

    monkeypatch.setenv("QDLLM_CACHE_DIR", str(tmp_path / "cache"))
    path = write_synthetic_cache(tmp_path / "cache" / "teacher" / "t", n=90, dim=8)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["probe_ceiling"] = {"test": {"accuracy": 0.99}}  # a teacher at 1.0 is not clearly above 0.99
    (path / "manifest.json").write_text(json.dumps(manifest))
    for loss in ("kl+js+ce", "ce"):
        for lr in (0.06, 0.02):  # two pairs of one label: the budget tells their rows apart
            run_student(path, StudentConfig(model="logreg", loss=loss, lr=lr, epochs=2, seeds=(0, 1)),
                        verify_hashes=False)
    text = build_report(paper_teachers=False).read_text()
    head = text[: text.index("## ", text.index("## Distillation gain") + 5)]
    assert "Distillation gain: synthetic" in head and "±" in head
    for lr in (0.06, 0.02):
        assert f"| logreg | lr {lr} cosine warm-up 0.1, 2 epochs (not the model's own) | 2 |" in head
    assert "distillation cannot help with this teacher and embedder" in head

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

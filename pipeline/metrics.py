"""The one place for metrics and softmax, shared by the teacher, the students and the report.

Classification metrics: accuracy, precision, recall, F1 (binary: class 1 positive; else macro).
"""

from __future__ import annotations

import numpy as np


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_metrics(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> dict:
    cm = confusion(np.asarray(labels), np.asarray(preds), num_classes)
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        rec = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    pick = [1] if num_classes == 2 else list(range(num_classes))
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "precision": float(prec[pick].mean()),
        "recall": float(rec[pick].mean()),
        "f1": float(f1[pick].mean()),
        "confusion": cm.tolist(),
    }


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax, in the input's float dtype."""
    z = np.exp(logits - logits.max(axis, keepdims=True))
    return z / z.sum(axis, keepdims=True)


def mean_std(values) -> dict:
    v = np.asarray(list(values), dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def run_summary(seeds: list[dict], trainable: int) -> dict:
    """A run's ``summary`` (student and baseline runs alike): mean ± std over seeds of every metric and timing,
    Acc/Param and Acc/T_kd (mean test accuracy over mean training seconds)."""
    out: dict = {split: {m: mean_std(s[split][m] for s in seeds if m in s[split])
                         for m in ("accuracy", "precision", "recall", "f1", "agreement", "ece")}
                 for split in ("test", "val")}
    out["train_seconds_per_epoch"] = mean_std(s["train_seconds_per_epoch"] for s in seeds)
    out["inference_us_per_example"] = mean_std(s["inference_us_per_example"] for s in seeds)
    acc = out["test"]["accuracy"]["mean"]
    out["acc_per_param"] = acc / trainable if trainable else 0.0
    t_kd = float(np.mean([s["train_seconds_total"] for s in seeds]))
    out["acc_per_tkd"] = acc / t_kd if t_kd > 0 else 0.0
    return out


def agreement(student_logits: np.ndarray, teacher_logits: np.ndarray) -> float:
    """Share of examples where the student's class equals the teacher's."""
    if len(student_logits) == 0:
        return 0.0
    return float((np.asarray(student_logits).argmax(1) == np.asarray(teacher_logits).argmax(1)).mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: confidence-vs-accuracy gap of the top class, averaged over equal-width confidence bins by their size."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) == 0:
        return 0.0
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == np.asarray(labels)).astype(np.float64)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, correct, bins) - np.bincount(which, conf, bins))
    return float(gap.sum() / len(probs)) if count.sum() else 0.0

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

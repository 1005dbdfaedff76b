"""Distillation losses on student logits, with their gradients (NumPy, batch mean).

``kl+js+ce`` (the paper): (1−α)·CE(y, p_s) + α·(T²·KL(p_t^T ‖ p_s^T) + JS(p_t, p_s)), where
p^T = softmax(logits / T) and the temperature is applied to the cached *raw* teacher logits.
The ablations use one term alone: ``ce``, ``kl`` (T²·KL) or ``js``. Rows labelled ``-1`` (the cache's
unlabeled transfer texts) enter only the distillation terms: CE is the mean over the labelled rows.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import StudentConfig


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _softmax_backward(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Gradient wrt logits given the gradient g wrt p = softmax(logits)."""
    return p * (g - (p * g).sum(axis=1, keepdims=True))


def distill_loss(logits: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray, loss: str = StudentConfig.loss,
                 alpha: float = StudentConfig.alpha,
                 temperature: float = StudentConfig.temperature) -> tuple[float, np.ndarray]:
    """Mean loss over the batch and its gradient wrt the student logits (unset terms: the declared defaults)."""
    B = len(logits)
    total, grad = 0.0, np.zeros_like(logits, dtype=np.float64)
    terms = {"ce": {"ce": 1.0}, "kl": {"kl": 1.0}, "js": {"js": 1.0},
             "kl+js+ce": {"ce": 1.0 - alpha, "kl": alpha, "js": alpha}}[loss]
    logp = log_softmax(logits)
    p = np.exp(logp)
    labelled = np.flatnonzero(labels >= 0)
    if terms.get("ce") and len(labelled):
        w, n = terms["ce"], len(labelled)
        total += w * -logp[labelled, labels[labelled]].mean()
        onehot = np.eye(logits.shape[1])[labels[labelled]]
        grad[labelled] += w * (p[labelled] - onehot) / n
    if terms.get("kl"):
        w, T = terms["kl"], temperature
        logq_t = log_softmax(teacher_logits / T)
        logq_s = log_softmax(logits / T)
        q_t = np.exp(logq_t)
        total += w * T * T * (q_t * (logq_t - logq_s)).sum(axis=1).mean()
        grad += w * T * (np.exp(logq_s) - q_t) / B
    if terms.get("js"):
        w = terms["js"]
        p_t = np.exp(log_softmax(teacher_logits))
        m = 0.5 * (p + p_t)
        logm = np.log(m)
        kl_t = np.where(p_t > 0, p_t * (np.log(np.where(p_t > 0, p_t, 1.0)) - logm), 0.0).sum(axis=1)
        kl_s = (p * (logp - logm)).sum(axis=1)
        total += w * 0.5 * (kl_t + kl_s).mean()
        grad += w * _softmax_backward(p, 0.5 * (logp - logm)) / B
    return float(total), grad

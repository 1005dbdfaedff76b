"""The quantum student's distillation loss in torch, for the transformer baselines.

``kl+js+ce`` (the quantum student's, ``stages/student/losses.py``): (1−α)·CE(y, p_s) + α·(T²·KL(p_t^T ‖ p_s^T) +
JS(p_t, p_s)), p^T = softmax(logits / T) on the cached *raw* teacher logits. ``rkl+js+ce`` (MiniLLM, Gu et al.
2024) puts the reverse KL(p_s^T ‖ p_t^T) in place of the forward one: mode-seeking, the student is not pushed to
cover classes the teacher gives little mass. Rows labelled ``-1`` (unlabeled transfer texts) enter the distillation
terms only; CE is the mean over the labelled rows.

``patience_loss`` is PKD's patient term (Sun et al. 2019, eq. 3; PKD-Skip): for each of the K teacher layers the
cache holds, the squared difference of the L2-normalised student state (projected to the teacher's width) and the
L2-normalised teacher state, averaged over the batch and the hidden units as the authors' code does
(``F.mse_loss`` in their ``KD_loss.patience_loss``), summed over the K layers. The pkd loss is
``distill_loss + beta * patience_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, *, alpha: float,
                 temperature: float, reverse: bool = False) -> torch.Tensor:
    """Mean loss over the batch (a scalar that autograd differentiates)."""
    logits, teacher_logits = logits.float(), teacher_logits.float()
    T = float(temperature)
    total = logits.new_zeros(())
    labelled = labels >= 0
    if alpha < 1.0 and bool(labelled.any()):
        total = total + (1.0 - alpha) * F.cross_entropy(logits[labelled], labels[labelled])
    if alpha > 0.0:
        logq_s = F.log_softmax(logits / T, dim=-1)
        logq_t = F.log_softmax(teacher_logits / T, dim=-1)
        if reverse:  # KL(p_s^T || p_t^T)
            kl = (logq_s.exp() * (logq_s - logq_t)).sum(-1).mean()
        else:  # KL(p_t^T || p_s^T)
            kl = (logq_t.exp() * (logq_t - logq_s)).sum(-1).mean()
        logp_s, logp_t = F.log_softmax(logits, dim=-1), F.log_softmax(teacher_logits, dim=-1)
        p_s, p_t = logp_s.exp(), logp_t.exp()
        logm = torch.log(0.5 * (p_s + p_t))
        js = 0.5 * ((p_t * (logp_t - logm)).sum(-1) + (p_s * (logp_s - logm)).sum(-1)).mean()
        total = total + alpha * (T * T * kl + js)
    return total


def patience_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Sum over the K layers of the MSE between L2-normalised states: ``student`` and ``teacher`` are (B, K, H)
    (the student's already projected to the teacher's width H); a scalar."""
    s = F.normalize(student.float(), p=2, dim=-1)
    t = F.normalize(teacher.float(), p=2, dim=-1)
    return (s - t).pow(2).mean(dim=(0, 2)).sum()

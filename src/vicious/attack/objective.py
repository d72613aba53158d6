"""The training objective of docs/method.md ("Objective"), as pure functions of tensors.

    L = beta_c * L_task(F(x), y)
      + beta_r * (alpha_huber * Huber_delta(G(F(x)), x) + alpha_ssim * (1 - SSIM(G(F(x)), x)))
      + beta_ent * mean entropy of the released probabilities

and, for a server evading the detectors, the penalties of ``vicious.attack.evasion``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from vicious.metrics.ssim import ssim_separable
from vicious.models import outputs_to_probabilities


def task_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy for int labels (N,); for float 0/1 labels (N, K), the mean over
    attributes of binary cross-entropy on logits with ``pos_weight`` (K,)."""
    if labels.dtype.is_floating_point:
        return nnf.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
    return nnf.cross_entropy(logits, labels)


def reconstruction_loss(
    x_rec: torch.Tensor, x: torch.Tensor, *, alpha_huber: float, alpha_ssim: float, huber_delta: float
) -> torch.Tensor:
    """alpha_huber * Huber + alpha_ssim * (1 - SSIM); images (N, C, H, W) in [0, 1]."""
    loss = alpha_huber * nnf.huber_loss(x_rec, x, delta=huber_delta)
    if alpha_ssim:
        # float32: SSIM's variance terms lose too much in bf16 under autocast.
        similarity = ssim_separable(x_rec.float(), x.float()).mean()
        loss = loss + alpha_ssim * (1 - similarity)
    return loss


def output_entropy(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Mean entropy (nats) of the probabilities a server would see; for multi-attribute
    outputs the mean over attributes of the Bernoulli entropy."""
    probabilities = outputs_to_probabilities(logits, "multilabel" if multilabel else "multiclass")
    if multilabel:
        p = probabilities.clamp(1e-7, 1 - 1e-7)
        return -(p * p.log() + (1 - p) * (1 - p).log()).mean()
    return -(probabilities * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()

"""Threshold-free separation of two score populations (higher = more suspicious)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def roc_auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """P(positive score > negative score) + P(equal) / 2: the area under the ROC curve."""
    neg, pos = _as_tensor(negatives, "negatives"), _as_tensor(positives, "positives")
    difference = pos[:, None] - neg[None, :]
    return float(((difference > 0).double() + 0.5 * (difference == 0).double()).mean())


def tpr_at_fpr(negatives: Sequence[float], positives: Sequence[float], fpr: float = 0.05) -> float:
    """The largest share of positives flagged (score >= t) by a threshold t that flags
    at most ``fpr`` of the negatives."""
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    neg, pos = _as_tensor(negatives, "negatives"), _as_tensor(positives, "positives")
    best = 0.0
    for t in torch.cat([pos, neg, pos.new_tensor([float("inf")])]).unique():
        if float((neg >= t).double().mean()) <= fpr:
            best = max(best, float((pos >= t).double().mean()))
    return best


def _as_tensor(values: Sequence[float], name: str) -> torch.Tensor:
    t = torch.as_tensor(list(values), dtype=torch.float64)
    if t.ndim != 1 or len(t) == 0:
        raise ValueError(f"{name} must be a non-empty list of scores")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contain NaN or Inf")
    return t

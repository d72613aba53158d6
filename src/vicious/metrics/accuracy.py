r"""Task accuracy of the classifier F.

* Single-label (multiclass) tasks: top-1 accuracy, ``argmax_k logits[i, k] == labels[i]``.
* Multi-attribute (multilabel) tasks, e.g. CelebA: each logit is thresholded
  at 0 (equivalently each sigmoid probability at 0.5), accuracy per attribute,
  and their mean.

Which form applies is read from the labels, so one call serves both:

* ``labels`` integer of shape ``(N,)`` -> multiclass;
* ``labels`` float (or bool) of shape ``(N, K)`` holding 0/1 -> multilabel.

Reference: docs/method.md, "Measures" (Malekzadeh & Gündüz, arXiv 2212.04223).
"""

from __future__ import annotations

import torch

from ._validate import check_finite, check_tensor

__all__ = ["accuracy", "correct_predictions", "mean_accuracy", "per_attribute_accuracy", "is_multilabel"]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _validate(logits: object, labels: object) -> bool:
    """Validate inputs; return True for multilabel, False for multiclass."""
    logits = check_tensor(logits, "logits")
    labels = check_tensor(labels, "labels")
    if logits.dim() != 2:
        raise ValueError(
            f"logits must have 2 dimensions (N, K), got {logits.dim()} with shape {tuple(logits.shape)}; "
            f"pass the classifier's raw output, one row per sample"
        )
    n, k = logits.shape
    if n == 0 or k == 0:
        raise ValueError(f"logits is empty (shape {tuple(logits.shape)}); need N >= 1 samples and K >= 1 outputs")
    if not logits.is_floating_point():
        raise ValueError(f"logits has dtype {logits.dtype}; expected floating point, convert with logits.float()")
    if labels.device != logits.device:
        raise ValueError(
            f"logits is on {logits.device} but labels is on {labels.device}; move both to one device with .to(device)"
        )
    check_finite(logits, "logits")

    if labels.dim() == 1:
        if labels.dtype not in _INT_DTYPES:
            raise ValueError(
                f"labels of shape (N,) must be integer class indices, got dtype {labels.dtype}; "
                f"use labels.long(), or pass float 0/1 labels of shape (N, K) for a multilabel task"
            )
        if labels.shape[0] != n:
            raise ValueError(f"labels has {labels.shape[0]} entries but logits has {n} rows; they must match")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= k:
            raise ValueError(
                f"labels hold class indices in [{lo}, {hi}] but logits has K={k} classes; indices must lie in [0, {k - 1}]"
            )
        return False

    if labels.dim() == 2:
        if labels.shape != logits.shape:
            raise ValueError(
                f"multilabel labels must have the shape of logits, got {tuple(labels.shape)} "
                f"and {tuple(logits.shape)}"
            )
        if labels.dtype == torch.bool:
            return True
        if not labels.is_floating_point():
            raise ValueError(
                f"multilabel labels of shape (N, K) must be float 0/1, got dtype {labels.dtype}; "
                f"use labels.float() (integer labels must be class indices of shape (N,))"
            )
        check_finite(labels, "labels")
        if not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError("multilabel labels must hold only 0 and 1; threshold soft targets first (labels > 0.5)")
        return True

    raise ValueError(
        f"labels must be (N,) integer class indices or (N, K) float 0/1 attributes, "
        f"got shape {tuple(labels.shape)}"
    )


def correct_predictions(logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""The kernel of :func:`accuracy`, unchecked: 0/1 per sample ``(N,)`` for class indices
    ``(N,)``, per attribute ``(N, K)`` for 0/1 attributes ``(N, K)``.

    For training loops and callers whose inputs are already checked: :func:`accuracy`'s
    validation reads values back to the host, which stalls an accelerator every batch.
    """
    if labels.dim() == 2:
        return ((logits > 0) == labels.bool()).to(dtype)
    return (logits.argmax(dim=1) == labels.long()).to(dtype)


def is_multilabel(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether ``(logits, labels)`` describe a multilabel task (after validation)."""
    return _validate(logits, labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Per-sample correctness of a classifier's outputs.

    Args:
        logits: Raw outputs of F, shape :math:`(N, K)`, floating point, finite.
        labels: Either integer class indices of shape :math:`(N,)` with values
            in ``[0, K)`` (multiclass), or float/bool 0/1 attributes of shape
            :math:`(N, K)` (multilabel).

    Returns:
        Multiclass: float tensor :math:`(N,)` of 0/1, top-1 correctness (ties in
        the argmax go to the lowest index). Multilabel: float tensor
        :math:`(N, K)` of 0/1, one per attribute, with attribute ``j`` predicted
        positive iff ``logits[:, j] > 0``. Float32 unless logits is float64; on
        the logits' device.

    Raises:
        ValueError: On a wrong shape, dtype, device, non-finite logits, or
            labels out of range.
    """
    _validate(logits, labels)
    return correct_predictions(logits, labels, torch.float64 if logits.dtype == torch.float64 else torch.float32)


def per_attribute_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Accuracy of each attribute over the samples, shape :math:`(K,)`.

    Multilabel only (labels float 0/1 of shape :math:`(N, K)`).

    Raises:
        ValueError: If the inputs are invalid or describe a multiclass task.
    """
    correct = accuracy(logits, labels)
    if correct.dim() != 2:
        raise ValueError(
            "per_attribute_accuracy needs multilabel labels of shape (N, K); "
            "for a multiclass task use mean_accuracy"
        )
    return correct.mean(dim=0)


def mean_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Scalar accuracy: top-1 mean (multiclass) or the mean over attributes of
    the per-attribute accuracies (multilabel), a 0-d tensor in ``[0, 1]``."""
    return accuracy(logits, labels).mean()

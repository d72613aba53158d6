"""What a user can read off a classifier's outputs: forms and representations.

A classifier's outputs are ``(N, K)`` floats in one of two forms:

* ``"logits"``: unnormalised scores (the project's ``raw`` output form);
* ``"probabilities"``: softmax over classes, or a sigmoid per attribute for
  multi-attribute (``multilabel``) tasks (the project's ``softmax`` form).

Detectors work in one representation for both forms, the *log-odds*: centred
logits for multiclass outputs (softmax is invariant to adding a constant to every
logit, so only centred logits are identifiable from probabilities) and per-attribute
logits for multilabel outputs.
"""

from __future__ import annotations

from typing import Literal

import torch

from vicious.data.types import Task

Form = Literal["logits", "probabilities"]
FORMS: tuple[str, ...] = ("logits", "probabilities")


def observed_form(output: str) -> Form:
    """The form a server observes for a run's ``output`` setting (``raw`` or ``softmax``)."""
    return "probabilities" if output == "softmax" else "logits"


def check_outputs(outputs: torch.Tensor, name: str = "outputs") -> torch.Tensor:
    """``outputs`` as float32 ``(N, K)``; raises ValueError naming the problem."""
    if not isinstance(outputs, torch.Tensor):
        raise ValueError(f"{name} must be a tensor (N, K), got {type(outputs).__name__}")
    if outputs.ndim != 2 or outputs.shape[0] == 0 or outputs.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, K) with N, K >= 1, got {tuple(outputs.shape)}")
    if not outputs.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {outputs.dtype}")
    if not torch.isfinite(outputs).all():
        raise ValueError(f"{name} contain NaN or Inf; the classifier is broken or overflowed")
    return outputs.float()


def detect_form(outputs: torch.Tensor, task: Task = "multiclass", atol: float = 1e-3) -> Form:
    """``"probabilities"`` when every row is a distribution (multiclass) or every value
    lies in [0, 1] (multilabel); else ``"logits"``."""
    outputs = check_outputs(outputs)
    in_unit = bool(((outputs >= 0) & (outputs <= 1)).all())
    if task == "multilabel":
        return "probabilities" if in_unit else "logits"
    sums_to_one = bool(torch.allclose(outputs.sum(dim=1), torch.ones(len(outputs)), atol=atol))
    return "probabilities" if in_unit and sums_to_one else "logits"


def log_odds(outputs: torch.Tensor, form: Form, task: Task = "multiclass") -> torch.Tensor:
    """``(N, K)`` centred logits (multiclass) or per-attribute logits (multilabel).

    Probabilities are clamped at float32's smallest normal number before the log,
    so a probability that underflowed to 0 maps to a large but finite value.
    """
    outputs = check_outputs(outputs)
    _check_form(form)
    return unchecked_log_odds(outputs, form, task)


def unchecked_log_odds(outputs: torch.Tensor, form: Form, task: Task = "multiclass") -> torch.Tensor:
    """:func:`log_odds` without its checks, which would wait for the device (for networks and
    training losses); differentiable."""
    if form == "probabilities":
        tiny = torch.finfo(torch.float32).tiny
        p = outputs.clamp(tiny, 1.0)
        outputs = p.log() - (1 - p).clamp_min(tiny).log() if task == "multilabel" else p.log()
    return logits_log_odds(outputs, task)


def logits_log_odds(logits: torch.Tensor, task: Task = "multiclass") -> torch.Tensor:
    """The log-odds ``(N, K)`` of logits, unchecked and differentiable (for training losses,
    where a check would wait for the device): centred (multiclass) or as they are (multilabel)."""
    return logits if task == "multilabel" else logits - logits.mean(dim=1, keepdim=True)


def probabilities(outputs: torch.Tensor, form: Form, task: Task = "multiclass") -> torch.Tensor:
    """``(N, K)`` probabilities: softmax over classes, or sigmoid per attribute."""
    outputs = check_outputs(outputs)
    _check_form(form)
    if form == "probabilities":
        return outputs
    return torch.sigmoid(outputs) if task == "multilabel" else torch.softmax(outputs, dim=1)


def predicted_labels(outputs: torch.Tensor, form: Form, task: Task = "multiclass") -> torch.Tensor:
    """Class indices ``(N,)`` int64, or binarised attributes ``(N, K)`` float 0/1."""
    if task == "multilabel":
        threshold = 0.5 if form == "probabilities" else 0.0
        return (check_outputs(outputs) > threshold).float()
    return check_outputs(outputs).argmax(dim=1)


def group_ids(labels: torch.Tensor) -> torch.Tensor:
    """(N,) int64 group of each row: the class, or the pattern of binarised attributes."""
    if labels.ndim == 1:
        return labels
    return torch.unique(labels, dim=0, return_inverse=True)[1]


def label_features(outputs: torch.Tensor, form: Form, task: Task = "multiclass") -> torch.Tensor:
    """What a label-only release carries, as ``(N, K)`` floats: the one-hot predicted
    class, or the binarised attributes."""
    labels = predicted_labels(outputs, form, task)
    if task == "multilabel":
        return labels
    return torch.nn.functional.one_hot(labels, outputs.shape[1]).float()


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")

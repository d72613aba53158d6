"""Evading the detectors (docs/method.md, "Evading the detectors"): penalties a vicious server
adds to its joint training, as pure functions of tensors.

Each penalty is a differentiable batch version of one detector's primary statistic
(``vicious.defences``), squared where it lies beyond the honest references' range:

    penalty = relu(statistic - target)^2   (relu(target - statistic)^2 for confidence)

The server measures the targets on honest models itself (``loss.evade_*_target``); a sweep
of the weights ``loss.evade_*`` traces an evasion frontier: how far each statistic can be
pulled in before the reconstruction suffers.

Shapes: logits (N, K) float, images (N, C, H, W) in [0, 1], groups (N,) int64 (the predicted
class of each image, :func:`predicted_groups`). Statistics and penalties are scalars. The
functions are unchecked and, but for the grouping of multilabel outputs, never wait for the
device: the callers are training steps.
"""

from __future__ import annotations

import math

import torch

from vicious.release.outputs import group_ids, logits_log_odds


def _task(multilabel: bool):
    return "multilabel" if multilabel else "multiclass"


def _root(squares: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite gradient: at 0 (the distance of an image to itself) the gradient is 0."""
    return squares.clamp_min(1e-12).sqrt()


def _above(statistic: torch.Tensor, target: float) -> torch.Tensor:
    return torch.relu(statistic - target).square()


def predicted_groups(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """(N,) int64: the predicted class, or the pattern of binarised attributes (as the detectors group)."""
    return group_ids((logits > 0).float() if multilabel else logits.argmax(dim=1))


def logit_norm(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Mean Euclidean norm of the log-odds over sqrt(K): the output-statistics detector's
    ``logit_norm`` on this batch (the same per-image mean, so no batch bias)."""
    z = logits_log_odds(logits, _task(multilabel))
    return _root(z.square().sum(dim=1)).mean() / math.sqrt(z.shape[1])


def logit_norm_penalty(logits: torch.Tensor, target: float, multilabel: bool = False) -> torch.Tensor:
    """relu(logit_norm - target)^2: pulls the log-odds norm down to the honest range."""
    return _above(logit_norm(logits, multilabel), target)


def mean_confidence(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Mean top-1 probability (multilabel: mean probability of each attribute's predicted
    value): 1 - the output-statistics detector's ``low_confidence``."""
    if multilabel:
        p = torch.sigmoid(logits)
        return torch.maximum(p, 1 - p).mean()
    return torch.softmax(logits, dim=1).amax(dim=1).mean()


def confidence_penalty(logits: torch.Tensor, target: float, multilabel: bool = False) -> torch.Tensor:
    """relu(target - mean_confidence)^2: pulls the confidence up to the honest range."""
    return torch.relu(target - mean_confidence(logits, multilabel)).square()


def within_class_contrast(
    logits: torch.Tensor, perturbed_logits: torch.Tensor, groups: torch.Tensor, multilabel: bool = False
) -> torch.Tensor:
    """The sensitivity detector's ``within_class_contrast`` on a batch: the mean log-odds
    distance between two different images of the same group (over all ordered pairs), over
    the mean log-odds movement from ``logits`` to ``perturbed_logits`` (N, K; F on a
    label-preserving change of each image, ``vicious.data.perturbations.perturbed_copies``)
    among the images whose predicted class stayed.

    One change per image, drawn uniformly, stands in for the detector's mean over all changes.
    0 when no group holds two images.
    """
    task = _task(multilabel)
    z, moved_to = logits_log_odds(logits, task), logits_log_odds(perturbed_logits, task)
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: (N, N) memory, not (N, N, K).
    squares = z.square().sum(dim=1)
    pair_squares = squares[:, None] + squares[None, :] - 2 * z @ z.T
    same = (groups[:, None] == groups[None, :]) & ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    within = (_root(pair_squares) * same).sum() / same.sum().clamp_min(1)
    if multilabel:
        stays = ((logits > 0) == (perturbed_logits > 0)).all(dim=1)
    else:
        stays = logits.argmax(dim=1) == perturbed_logits.argmax(dim=1)
    movement = (_root((moved_to - z).square().sum(dim=1)) * stays).sum() / stays.sum().clamp_min(1)
    # The floor keeps the ratio finite for a batch that did not move at all.
    return within / movement.clamp_min(1e-6)


def contrast_penalty(
    logits: torch.Tensor, perturbed_logits: torch.Tensor, groups: torch.Tensor, target: float, multilabel: bool = False
) -> torch.Tensor:
    """relu(within_class_contrast - target)^2: pulls the contrast down to the honest range."""
    return _above(within_class_contrast(logits, perturbed_logits, groups, multilabel), target)


def _minus_group_means(values: torch.Tensor, groups: torch.Tensor, num_classes: int) -> torch.Tensor:
    """values (N, D) minus the mean of their group on the batch."""
    # An upper bound on the group ids without host-device synchronisation: a class id is
    # below K, an attribute pattern's below N (a last batch may hold fewer images than classes).
    num_groups = len(groups) + num_classes
    sums = values.new_zeros(num_groups, values.shape[1]).index_add(0, groups, values)
    counts = torch.bincount(groups, minlength=num_groups).clamp_min(1).to(values.dtype)
    return values - (sums / counts[:, None])[groups]


def linear_leakage(
    logits: torch.Tensor, images: torch.Tensor, groups: torch.Tensor, ridge: float, multilabel: bool = False
) -> torch.Tensor:
    """A differentiable stand-in for the excess-leakage detector: the share of the within-class
    pixel variance that a linear shadow decoder explains from the outputs beyond the label.

    As the detector's outputs decoder, its inputs are the log-odds' residuals from their
    group's mean, standardised; its targets are the images' residuals from their group's mean
    (what a labels-only decoder leaves unexplained: it can do no better than the group mean).
    The decoder is ridge regression fitted in closed form on the batch, W = (R'R/N +
    ridge I)^-1 R'E/N, a K x K system; the result is 1 - |E - R W|^2 / |E|^2, in [0, 1].

    Fitted and scored on the same batch, it reads about K / N for outputs independent of the
    images; a server minimises it while its own, nonlinear G still reconstructs.
    """
    residuals = _minus_group_means(logits_log_odds(logits, _task(multilabel)), groups, logits.shape[1])
    std = residuals.std(dim=0)
    # The detector's standardisation, so a server cannot hide the residuals by shrinking them.
    residuals = residuals / torch.where(std > 1e-6, std, torch.ones_like(std))
    pixels = _minus_group_means(images.flatten(1).to(residuals.dtype), groups, logits.shape[1])
    n, k = residuals.shape
    gram = residuals.T @ residuals / n + ridge * torch.eye(k, dtype=residuals.dtype, device=residuals.device)
    # solve_ex without its check, which would wait for the device: gram is positive definite.
    decoder = torch.linalg.solve_ex(gram, residuals.T @ pixels / n, check_errors=False)[0]  # (K, C*H*W)
    unexplained = (pixels - residuals @ decoder).square().sum()
    return 1 - unexplained / pixels.square().sum().clamp_min(1e-12)


def leakage_penalty(
    logits: torch.Tensor, images: torch.Tensor, groups: torch.Tensor, ridge: float, target: float,
    multilabel: bool = False,
) -> torch.Tensor:
    """relu(linear_leakage - target)^2: pulls what a linear shadow decoder reads from the
    outputs beyond the label down to the honest range."""
    return _above(linear_leakage(logits, images, groups, ridge, multilabel), target)

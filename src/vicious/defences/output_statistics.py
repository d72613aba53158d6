"""Output statistics: what a user can compute from the outputs on a batch of inputs.

A vicious classifier must put information about the image into its K outputs
beyond the predicted class, so its outputs are less confident and vary more among
inputs of the same predicted class. Sub-scores (higher = more suspicious):

* ``entropy``: mean entropy of the probabilities over log K (multilabel: mean
  Bernoulli entropy over log 2), in [0, 1];
* ``low_confidence``: 1 - mean top-1 probability (multilabel: 1 - mean
  probability of the predicted value of each attribute);
* ``logit_norm`` (primary): mean Euclidean norm of the log-odds over sqrt(K). An
  attacker that hides behind confident, low-entropy outputs (the entropy penalty
  beta_ent) must make the logits large to keep the image in them; its scale also
  grows with how long a classifier was trained, so compare like with like;
* ``within_class_spread``: share of the log-odds variance left inside the
  predicted classes, sum_i |z_i - mu_c(i)|^2 / sum_i |z_i - mu|^2, in [0, 1];
* ``effective_rank``: effective rank (exp of the entropy of the normalised
  eigenvalues, Roy & Vetterli 2007) of the log-odds covariance, over K;
* ``within_class_rank``: the same for the pooled within-class covariance.
"""

from __future__ import annotations

import math

import torch

from vicious.data.types import Task
from vicious.defences.black_box import BlackBox
from vicious.defences.detector import Detector, check_images
from vicious.release.outputs import Form, check_outputs, group_ids, log_odds, predicted_labels, probabilities


def effective_rank(covariance: torch.Tensor) -> float:
    """exp(H(p)) with p the eigenvalues of a PSD matrix normalised to sum 1; 0 for a zero matrix."""
    eigenvalues = torch.linalg.eigvalsh(covariance.double()).clamp_min(0)
    total = eigenvalues.sum()
    if total <= 0:
        return 0.0
    p = eigenvalues[eigenvalues > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def describe_outputs(outputs: torch.Tensor, form: Form, task: Task = "multiclass") -> dict[str, float]:
    """The sub-scores of the module docstring for outputs ``(N, K)``, N >= 2."""
    outputs = check_outputs(outputs)
    if len(outputs) < 2:
        raise ValueError(f"output statistics need at least 2 outputs, got {len(outputs)}")
    n, k = outputs.shape
    p = probabilities(outputs, form, task).double()
    z = log_odds(outputs, form, task).double()
    if task == "multilabel":
        q = p.clamp(1e-12, 1 - 1e-12)
        entropy = -(q * q.log() + (1 - q) * (1 - q).log()).mean(dim=1) / math.log(2)
        confidence = torch.maximum(p, 1 - p).mean(dim=1)
    else:
        entropy = -(p * p.clamp_min(1e-300).log()).sum(dim=1) / math.log(k) if k > 1 else torch.zeros(n)
        confidence = p.max(dim=1).values
    groups = group_ids(predicted_labels(outputs, form, task))
    centred = z - z.mean(dim=0)
    num_groups = int(groups.max()) + 1
    sums = torch.zeros(num_groups, k, dtype=z.dtype).index_add_(0, groups, z)
    counts = torch.bincount(groups, minlength=num_groups).clamp_min(1).to(z.dtype)
    class_means = sums / counts[:, None]
    within = z - class_means[groups]
    total_ss = centred.pow(2).sum()
    return {
        "entropy": float(entropy.mean()),
        "low_confidence": float(1 - confidence.mean()),
        "logit_norm": float(z.norm(dim=1).mean() / math.sqrt(k)),
        "within_class_spread": float(within.pow(2).sum() / total_ss) if total_ss > 0 else 0.0,
        "effective_rank": effective_rank(centred.T @ centred / (n - 1)) / k,
        "within_class_rank": effective_rank(within.T @ within / (n - 1)) / k,
    }


class OutputStatistics(Detector):
    """Scores the outputs of the user's own images; needs no reference data."""

    name = "output_statistics"
    primary = "logit_norm"
    description = "entropy, confidence, logit norm, within-class spread and effective rank of the outputs"

    def scores(self, classifier: BlackBox, images: torch.Tensor, outputs: torch.Tensor | None = None) -> dict[str, float]:
        if outputs is None:
            outputs = classifier(check_images(images, classifier))
        return describe_outputs(outputs, classifier.form, classifier.task)

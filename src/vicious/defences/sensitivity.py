"""Sensitivity: how much the outputs move under small, label-preserving changes.

For each perturbation (Gaussian noise, a slight blur, one-pixel shifts in four
directions: ``vicious.data.perturbations``, which an evading server trains against too)
and image, three movements: the Euclidean distance between the log-odds before and
after, the total-variation distance between the probabilities, and whether the
predicted class changed.

The first hypothesis was that a vicious classifier, which must encode the image,
moves more. Measured on classifiers trained through vicious, the opposite holds: relative
to how different the outputs of two images of the same class are, a vicious
classifier moves *less*: its within-class variation is signal about the image,
stable under nuisances, where an honest classifier's is closer to noise. So the
primary sub-score is that ratio, a within-class signal-to-perturbation ratio.

Sub-scores (means over perturbations and over images whose predicted class stayed):

* ``within_class_contrast`` (primary): mean log-odds distance between two different
  images predicted as the same class, over the mean log-odds movement;
* ``output_movement``: log-odds movement over the mean distance between the outputs
  of two random images (measured lower for vicious classifiers);
* ``probability_movement``: total-variation movement of the probabilities;
* ``label_flip_rate``: share of perturbations that change the predicted class;
* ``movement_per_flip``: the output movement over all images divided by the flip
  rate plus 1/N (how much the outputs move relative to how much the class moves).
"""

from __future__ import annotations

import torch

from vicious.data.perturbations import perturbations
from vicious.defences.black_box import BlackBox
from vicious.defences.detector import Detector, check_images
from vicious.release.outputs import group_ids, log_odds, predicted_labels, probabilities


def movement(before: torch.Tensor, after: torch.Tensor, form, task) -> dict[str, torch.Tensor]:
    """Per-image movements between two output batches (N, K): ``output`` (log-odds
    distance), ``probability`` (total variation) and ``flipped`` (0/1)."""
    z0, z1 = log_odds(before, form, task).double(), log_odds(after, form, task).double()
    p0, p1 = probabilities(before, form, task).double(), probabilities(after, form, task).double()
    labels0, labels1 = predicted_labels(before, form, task), predicted_labels(after, form, task)
    flipped = labels0 != labels1 if labels0.ndim == 1 else (labels0 != labels1).any(dim=1)
    if task == "multilabel":
        variation = (p1 - p0).abs().mean(dim=1)
    else:
        variation = (p1 - p0).abs().sum(dim=1) / 2
    return {"output": (z1 - z0).norm(dim=1), "probability": variation, "flipped": flipped.double()}


def output_scales(outputs: torch.Tensor, form, task) -> tuple[float, float]:
    """(mean log-odds distance between two different images, the same for two different
    images with the same predicted class); the second is NaN if no class has two images."""
    z = log_odds(outputs, form, task).double()
    distances = torch.cdist(z, z)
    groups = group_ids(predicted_labels(outputs, form, task))
    different = ~torch.eye(len(z), dtype=torch.bool)
    same_class = different & (groups[:, None] == groups[None, :])
    within = distances[same_class].mean() if same_class.any() else torch.tensor(float("nan"))
    return float(distances[different].mean()), float(within)


class Sensitivity(Detector):
    """Scores how the outputs respond to perturbed copies of the user's images."""

    name = "sensitivity"
    primary = "within_class_contrast"
    description = ("within-class output spread over output movement under noise, slight blur and one-pixel shifts "
                   "(where the predicted class stays)")

    def __init__(self, *, num_images: int = 500, noise_sigma: float = 0.03, blur_sigma: float = 0.5, seed: int = 0) -> None:
        self.num_images, self.noise_sigma, self.blur_sigma, self.seed = num_images, noise_sigma, blur_sigma, seed

    def scores(self, classifier: BlackBox, images: torch.Tensor, outputs: torch.Tensor | None = None) -> dict[str, float]:
        images = check_images(images, classifier)[: self.num_images]
        before = classifier(images) if outputs is None else outputs[: self.num_images]
        form, task = classifier.form, classifier.task
        overall, within = output_scales(before, form, task)
        kept, variation, flips, moved = [], [], [], []
        for perturb in perturbations(self.noise_sigma, self.blur_sigma, self.seed).values():
            m = movement(before, classifier(perturb(images)), form, task)
            stays = m["flipped"] == 0
            kept.append(m["output"][stays])
            variation.append(m["probability"][stays])
            flips.append(m["flipped"].mean())
            moved.append(m["output"].mean())
        kept_movement = float(torch.cat(kept).mean()) if sum(len(k) for k in kept) else 0.0
        flip_rate = float(torch.stack(flips).mean())
        tiny = 1e-12
        return {
            "within_class_contrast": within / max(kept_movement, tiny) if within == within else 0.0,
            "output_movement": kept_movement / max(overall, tiny),
            "probability_movement": float(torch.cat(variation).mean()) if sum(len(v) for v in variation) else 0.0,
            "label_flip_rate": flip_rate,
            "movement_per_flip": float(torch.stack(moved).mean()) / max(overall, tiny) / (flip_rate + 1 / len(images)),
        }

"""Sensitivity: how much the outputs move under small, label-preserving changes.

An honest classifier is trained to be invariant to nuisances; a vicious one must
encode the image, so a one-pixel shift or a slight blur moves its outputs even
where the predicted class stays put. For each perturbation (Gaussian noise, a
slight blur, one-pixel shifts in four directions) and image:

* output movement: the Euclidean distance between the log-odds before and after,
  over the mean distance between the log-odds of two different images (so the
  score does not depend on the scale of the logits);
* probability movement: the total-variation distance between the probabilities;
* label movement: whether the predicted class changed.

Sub-scores (higher = more suspicious), means over perturbations and images:
``output_movement`` and ``probability_movement`` over images whose predicted
class did not change; ``label_flip_rate``; ``movement_per_flip``, the output
movement over all images divided by the label flip rate (plus 1/N, so that a
classifier whose labels never move scores its movement times N).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2.functional import gaussian_blur

from vicious.defences.black_box import BlackBox
from vicious.defences.detector import Detector, check_images
from vicious.defences.outputs import log_odds, predicted_labels, probabilities

Perturbation = Callable[[torch.Tensor], torch.Tensor]


def shift(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Images moved by (dx, dy) pixels, edges replicated; shape kept."""
    pad = max(abs(dx), abs(dy))
    padded = nnf.pad(images, (pad, pad, pad, pad), mode="replicate")
    h, w = images.shape[-2:]
    return padded[..., pad - dy : pad - dy + h, pad - dx : pad - dx + w]


def perturbations(noise_sigma: float = 0.03, blur_sigma: float = 0.5, seed: int = 0) -> dict[str, Perturbation]:
    """The label-preserving changes, each images (N, C, H, W) in [0, 1] -> same shape, in [0, 1]."""

    def noise(images: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return (images + noise_sigma * torch.randn(images.shape, generator=generator)).clamp(0, 1)

    return {
        "noise": noise,
        "blur": lambda images: gaussian_blur(images, kernel_size=[3, 3], sigma=[blur_sigma, blur_sigma]),
        "shift_right": lambda images: shift(images, 1, 0),
        "shift_left": lambda images: shift(images, -1, 0),
        "shift_down": lambda images: shift(images, 0, 1),
        "shift_up": lambda images: shift(images, 0, -1),
    }


def movement(before: torch.Tensor, after: torch.Tensor, form, task, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-image movements between two output batches (N, K): ``output`` (normalised
    log-odds distance), ``probability`` (total variation) and ``flipped`` (0/1)."""
    z0, z1 = log_odds(before, form, task).double(), log_odds(after, form, task).double()
    p0, p1 = probabilities(before, form, task).double(), probabilities(after, form, task).double()
    # Scale: the mean distance between the outputs of two different images.
    n = len(z0)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    others = torch.where(order == torch.arange(n), (order + 1) % n, order)
    scale = (z0 - z0[others]).norm(dim=1).mean().clamp_min(1e-12)
    labels0, labels1 = predicted_labels(before, form, task), predicted_labels(after, form, task)
    flipped = labels0 != labels1 if labels0.ndim == 1 else (labels0 != labels1).any(dim=1)
    if task == "multilabel":
        variation = (p1 - p0).abs().mean(dim=1)
    else:
        variation = (p1 - p0).abs().sum(dim=1) / 2
    return {"output": (z1 - z0).norm(dim=1) / scale, "probability": variation, "flipped": flipped.double()}


class Sensitivity(Detector):
    """Scores how the outputs respond to perturbed copies of the user's images."""

    name = "sensitivity"
    primary = "output_movement"
    description = "output movement under noise, slight blur and one-pixel shifts, where the predicted class stays"

    def __init__(self, *, num_images: int = 500, noise_sigma: float = 0.03, blur_sigma: float = 0.5, seed: int = 0) -> None:
        self.num_images, self.noise_sigma, self.blur_sigma, self.seed = num_images, noise_sigma, blur_sigma, seed

    def scores(self, classifier: BlackBox, images: torch.Tensor, outputs: torch.Tensor | None = None) -> dict[str, float]:
        images = check_images(images, classifier)[: self.num_images]
        before = classifier(images) if outputs is None else outputs[: self.num_images]
        kept, variation, flips, moved = [], [], [], []
        for perturb in perturbations(self.noise_sigma, self.blur_sigma, self.seed).values():
            m = movement(before, classifier(perturb(images)), classifier.form, classifier.task, self.seed)
            stays = m["flipped"] == 0
            kept.append(m["output"][stays])
            variation.append(m["probability"][stays])
            flips.append(m["flipped"].mean())
            moved.append(m["output"].mean())
        flip_rate = float(torch.stack(flips).mean())
        kept_all, variation_all = torch.cat(kept), torch.cat(variation)
        return {
            "output_movement": float(kept_all.mean()) if len(kept_all) else 0.0,
            "probability_movement": float(variation_all.mean()) if len(variation_all) else 0.0,
            "label_flip_rate": flip_rate,
            "movement_per_flip": float(torch.stack(moved).mean()) / (flip_rate + 1 / len(images)),
        }

"""The interface every detector shares (in the scikit-learn spirit).

    detector = ExcessLeakage().fit(public_images)    # optional: reference data
    detector.scores(classifier, images)              # {"r_gap": 0.31, "psnr_gap": 1.2, ...}
    detector.score(classifier, images)               # the primary sub-score, a float

``classifier`` is a :class:`~vicious.defences.black_box.BlackBox`; ``images`` are
the user's own ``(N, C, S, S)`` floats in [0, 1]. Every sub-score is oriented so
that higher is more suspicious. ``outputs``, when given, are
``classifier(images)`` already computed, so several detectors share one pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from vicious.defences.black_box import BlackBox


class Detector(ABC):
    name: ClassVar[str]
    primary: ClassVar[str]
    description: ClassVar[str]

    def fit(self, images: torch.Tensor) -> Detector:
        """Learn what the detector needs from reference images; default: nothing."""
        return self

    @abstractmethod
    def scores(self, classifier: BlackBox, images: torch.Tensor, outputs: torch.Tensor | None = None) -> dict[str, float]:
        """Named sub-scores, higher = more suspicious."""

    def score(self, classifier: BlackBox, images: torch.Tensor, outputs: torch.Tensor | None = None) -> float:
        return self.scores(classifier, images, outputs)[self.primary]


def check_images(images: torch.Tensor, classifier: BlackBox, minimum: int = 2) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != classifier.input_shape:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (N, {', '.join(map(str, classifier.input_shape))}), got {got}")
    if len(images) < minimum:
        raise ValueError(f"need at least {minimum} images, got {len(images)}")
    if not images.is_floating_point() or images.min() < 0 or images.max() > 1:
        raise ValueError("images must be floats in [0, 1]; divide uint8 images by 255")
    return images.float()

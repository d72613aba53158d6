"""The detector suite: one set of settings, every detector, one pass of scoring.

The audit, the calibration and the detector benchmark all score classifiers
through :func:`score_classifier`, so a calibration's thresholds apply to exactly
the scores an audit computes. The settings are saved with every calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vicious.config.schema import ConfigError, format_validation_error
from vicious.defences.black_box import BlackBox
from vicious.defences.detector import Detector, check_images
from vicious.defences.excess_leakage import ExcessLeakage, LeakageAssessment
from vicious.defences.output_statistics import OutputStatistics
from vicious.defences.sensitivity import Sensitivity
from vicious.release.outputs import predicted_labels


class SuiteSettings(BaseModel):
    """How the detectors look at a classifier (saved in every calibration)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    num_images: int = Field(2000, ge=16, description="user images scored (a seeded subset of the test split; 2000 = all of the embedded default's)")
    seed: int = Field(0, ge=0)
    sensitivity_images: int = Field(500, ge=2, description="images perturbed by the sensitivity detector")
    noise_sigma: float = Field(0.03, gt=0, le=0.5)
    blur_sigma: float = Field(0.5, gt=0, le=3)
    shadow_epochs: int = Field(30, ge=1, le=1000)
    shadow_hidden: int = Field(512, ge=8, le=8192, description="hidden units of the mlp shadow decoder")
    shadow_decoder: Literal["mlp", "conv"] = Field("mlp", description="architecture of both shadow decoders")
    shadow_patience: int = Field(0, ge=0, le=1000, description="early stopping: epochs without gain on held-out "
                                                              "images before a shadow decoder stops (0: never)")
    eval_fraction: float = Field(0.25, gt=0, lt=1, description="held-out share of the user images for the shadow decoders")
    variance_fraction: float = Field(0.9, gt=0, le=1, description="R principal: variance held by the subspace")


def build_detectors(settings: SuiteSettings) -> list[Detector]:
    return [
        OutputStatistics(),
        Sensitivity(num_images=settings.sensitivity_images, noise_sigma=settings.noise_sigma,
                    blur_sigma=settings.blur_sigma, seed=settings.seed),
        ExcessLeakage(eval_fraction=settings.eval_fraction, epochs=settings.shadow_epochs, hidden=settings.shadow_hidden,
                      variance_fraction=settings.variance_fraction, seed=settings.seed,
                      decoder=settings.shadow_decoder, patience=settings.shadow_patience),
    ]


DETECTORS: tuple[type[Detector], ...] = (OutputStatistics, Sensitivity, ExcessLeakage)
PRIMARY: dict[str, str] = {d.name: d.primary for d in DETECTORS}


def make_settings(**values) -> SuiteSettings:
    """SuiteSettings from plain values; a bad value raises ConfigError naming it, in one line."""
    try:
        return SuiteSettings(**values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


@dataclass
class SuiteResult:
    """scores[detector][sub-score]; leakage: the excess-leakage evidence; accuracy when labels were given."""

    scores: dict[str, dict[str, float]]
    leakage: LeakageAssessment
    outputs: torch.Tensor
    accuracy: float | None = None

    def primary(self) -> dict[str, float]:
        return {name: values[PRIMARY[name]] for name, values in self.scores.items()}


def score_classifier(
    classifier: BlackBox, images: torch.Tensor, settings: SuiteSettings, labels: torch.Tensor | None = None
) -> SuiteResult:
    """Every detector's sub-scores for ``classifier`` on the user's ``images`` (N, C, S, S) in [0, 1]."""
    images = check_images(images, classifier, minimum=16)
    outputs = classifier(images)
    scores: dict[str, dict[str, float]] = {}
    leakage = None
    for detector in build_detectors(settings):
        if isinstance(detector, ExcessLeakage):
            leakage = detector.assess(classifier, images, outputs)
            scores[detector.name] = leakage.scores
        else:
            scores[detector.name] = detector.scores(classifier, images, outputs)
    accuracy = None
    if labels is not None:
        predicted = predicted_labels(outputs, classifier.form, classifier.task)
        accuracy = float((predicted == labels).float().mean())
    return SuiteResult(scores, leakage, outputs, accuracy)

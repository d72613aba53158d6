"""Excess leakage: what the outputs give away beyond the predicted label.

The user splits their own images in two, and on the first part trains two shadow
decoders of the same size with the same budget:

* from *labels*: the one-hot predicted class (multilabel: the binarised attributes);
* from *outputs*: the same one-hot plus the log-odds and probabilities (and, for logits,
  their mean), as residuals from their predicted class's mean, standardised
  (:func:`within_class_residuals`).

Both are measured on the second part with the reconstruction risk R on the
principal subspace (the subspace holding 90% of pixel variance; pixel statistics of the user's first part, or of
the images given to :meth:`ExcessLeakage.fit`) and with PSNR. The outputs decoder
sees everything the labels decoder sees, so the gap is what the outputs carry
beyond the task. An honest classifier leaks little beyond its labels; a vicious
one, trained so that a decoder can invert it, leaks much more.

Sub-scores (higher = more suspicious): ``psnr_gap`` (primary) = PSNR(outputs) -
PSNR(labels) in dB (the paper's PSNR of the mean MSE), ``r_gap`` = R(outputs) -
R(labels), ``r_ratio`` = R(outputs) / R(labels) - 1 and ``r_outputs`` = R(outputs).
The PSNR gap is the primary score: in benchmarks/bench_audit.py it separates honest
classifiers of four architectures and eight recipes from vicious ones trained elsewhere,
where the R gap, a mean of heavy-tailed per-image ratios, separates less well.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vicious.defences.black_box import BlackBox
from vicious.defences.detector import Detector, check_images
from vicious.defences.shadow import SHADOW_DECODERS, decode, fit_decoder, reconstruction_measures, shadow_decoder
from vicious.metrics import ImageStatistics
from vicious.release.outputs import group_ids, label_features, log_odds, predicted_labels, probabilities
from vicious.seeding import generator, seeded_initialisation


@dataclass
class LeakageAssessment:
    """Scores, the raw measurements behind them, and example reconstructions.

    examples: ``"images"``, ``"from_labels"``, ``"from_outputs"``: the first images of
    the held-out part, (n, C, S, S) in [0, 1].
    """

    scores: dict[str, float]
    details: dict[str, float]
    examples: dict[str, torch.Tensor]


def output_features(outputs: torch.Tensor, form, task) -> torch.Tensor:
    """(N, 2K) log-odds and probabilities, not yet standardised; for logits of classes one more
    column, their mean: centring removes it from the log-odds, yet a server reading logits
    sees it, and a vicious F may hide part of the image in it."""
    features = [log_odds(outputs, form, task), probabilities(outputs, form, task)]
    if form == "logits" and task != "multilabel":
        features.append(outputs.float().mean(dim=1, keepdim=True))
    return torch.cat(features, dim=1)


def within_class_residuals(
    train: torch.Tensor, train_groups: torch.Tensor, other: torch.Tensor, other_groups: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features minus their predicted class's mean, over the pooled within-class std (both
    from the first set); a group the first set lacks uses the overall mean.

    What the outputs say beyond the label is their variation *within* a class; scaled
    by the spread across classes it would be too small for a short training to notice.
    """
    overall = train.mean(dim=0)
    num_groups = int(torch.cat([train_groups, other_groups]).max()) + 1
    sums = torch.zeros(num_groups, train.shape[1], dtype=train.dtype).index_add_(0, train_groups, train)
    counts = torch.bincount(train_groups, minlength=num_groups).to(train.dtype)[:, None]
    means = torch.where(counts > 0, sums / counts.clamp_min(1), overall)
    residual_train, residual_other = train - means[train_groups], other - means[other_groups]
    std = residual_train.std(dim=0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return residual_train / std, residual_other / std


class ExcessLeakage(Detector):
    name = "excess_leakage"
    primary = "psnr_gap"
    description = "shadow decoders on the outputs vs on the labels alone: the gap in R principal and PSNR"

    def __init__(
        self, *, eval_fraction: float = 0.25, epochs: int = 30, hidden: int = 512, batch_size: int = 128,
        lr: float = 1e-3, variance_fraction: float = 0.9, num_examples: int = 8, seed: int = 0,
        decoder: str = "mlp", patience: int = 0, validation_fraction: float = 0.15,
    ) -> None:
        if not 0 < eval_fraction < 1:
            raise ValueError(f"eval_fraction must lie in (0, 1), got {eval_fraction}")
        if decoder not in SHADOW_DECODERS:
            raise ValueError(f"decoder must be one of {SHADOW_DECODERS}, got {decoder!r}")
        self.decoder, self.patience, self.validation_fraction = decoder, patience, validation_fraction
        self.eval_fraction, self.epochs, self.hidden = eval_fraction, epochs, hidden
        self.batch_size, self.lr, self.variance_fraction = batch_size, lr, variance_fraction
        self.num_examples, self.seed = num_examples, seed
        self.statistics: ImageStatistics | None = None

    def fit(self, images: torch.Tensor) -> ExcessLeakage:
        """Pixel statistics for R from reference (e.g. public training) images (N, C, S, S)."""
        self.statistics = ImageStatistics.fit(images)
        return self

    def scores(self, classifier: BlackBox, images: torch.Tensor, outputs: torch.Tensor | None = None) -> dict[str, float]:
        return self.assess(classifier, images, outputs).scores

    def assess(self, classifier: BlackBox, images: torch.Tensor, outputs: torch.Tensor | None = None) -> LeakageAssessment:
        images = check_images(images, classifier, minimum=8)
        outputs = classifier(images) if outputs is None else outputs
        n_eval = max(2, round(len(images) * self.eval_fraction))
        order = torch.randperm(len(images), generator=generator(self.seed))
        train, held_out = order[n_eval:], order[:n_eval]
        train_images = images[train]
        statistics = self.statistics or ImageStatistics.fit(train_images)
        labels = label_features(outputs, classifier.form, classifier.task)
        groups = group_ids(predicted_labels(outputs, classifier.form, classifier.task))
        extra = output_features(outputs, classifier.form, classifier.task)
        extra_train, extra_eval = within_class_residuals(extra[train], groups[train], extra[held_out], groups[held_out])
        features = {
            "labels": (labels[train], labels[held_out]),
            "outputs": (torch.cat([labels[train], extra_train], 1), torch.cat([labels[held_out], extra_eval], 1)),
        }
        target, details, examples = images[held_out], {}, {"images": images[held_out][: self.num_examples]}
        # Early stopping watches the last part of the training images; both decoders share it.
        n_val = round(len(train) * self.validation_fraction) if self.patience else 0
        fit, val = slice(0, len(train) - n_val), slice(len(train) - n_val, len(train))
        for name, (fit_on, measure_on) in features.items():
            with seeded_initialisation(self.seed):  # same initialisation stream for both decoders
                decoder = shadow_decoder(self.decoder, fit_on.shape[1], classifier.input_shape, self.hidden)
            validation = (fit_on[val], train_images[val]) if n_val else None
            fit_decoder(decoder, fit_on[fit], train_images[fit], epochs=self.epochs, batch_size=self.batch_size,
                        lr=self.lr, seed=self.seed, validation=validation, patience=self.patience)
            reconstructions = decode(decoder, measure_on)
            measures = reconstruction_measures(target, reconstructions, statistics, self.variance_fraction)
            details[f"r_{name}"], details[f"psnr_{name}"] = measures["r_principal"], measures["psnr"]
            examples[f"from_{name}"] = reconstructions[: self.num_examples]
        details.update(num_train=len(train), num_eval=n_eval)
        scores = {
            "r_gap": details["r_outputs"] - details["r_labels"],
            "r_ratio": details["r_outputs"] / details["r_labels"] - 1,
            "psnr_gap": details["psnr_outputs"] - details["psnr_labels"],
            "r_outputs": details["r_outputs"],
        }
        return LeakageAssessment(scores, details, examples)

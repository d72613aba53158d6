"""Detectors on black boxes whose leakage is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vicious.defences import BlackBox, ExcessLeakage, Sensitivity, SuiteSettings, score_classifier
from vicious.defences.sensitivity import perturbations

SIDE = 16


def toy_images(n: int = 600, seed: int = 0):
    """Four class templates plus a 3-dimensional smooth variation:
    (images, labels, variation, templates, basis)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIDE), torch.linspace(0, 1, SIDE), indexing="ij")
    templates = torch.stack([(xx < 0.5).float(), (yy < 0.5).float(), ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1).float(),
                             ((xx + yy) < 1).float()])
    basis = torch.stack([torch.sin(3 * xx), torch.cos(4 * yy), torch.sin(5 * (xx + yy))])
    labels = torch.arange(n) % 4
    variation = torch.rand(n, 3, generator=g) * 2 - 1
    images = 0.5 * templates[labels] + 0.25 + 0.12 * torch.einsum("nk,khw->nhw", variation, basis)
    return images.clamp(0, 1).unsqueeze(1), labels, variation, templates, basis


def _boxes(templates: torch.Tensor, basis: torch.Tensor):
    flat_t = templates.flatten(1)
    flat_b = basis.flatten(1)

    def classify(images):
        # nearest template, after the same affine map as toy_images
        distances = torch.cdist(images.flatten(1), 0.5 * flat_t + 0.25)
        return 12.0 * torch.nn.functional.one_hot(distances.argmin(dim=1), 4).float()

    def leaky(images):
        # least-squares coefficients of the variation, appended to the class logits' first 3 entries
        labels = classify(images).argmax(dim=1)
        residual = images.flatten(1) - (0.5 * flat_t[labels] + 0.25)
        coefficients = torch.linalg.lstsq(flat_b.T, residual.T).solution.T
        logits = classify(images)
        logits[:, :3] += 2.0 * coefficients
        return logits

    honest = BlackBox(classify, (1, SIDE, SIDE), 4, "multiclass", "logits", "honest toy")
    vicious = BlackBox(leaky, (1, SIDE, SIDE), 4, "multiclass", "logits", "vicious toy")
    return honest, vicious


def test_excess_leakage_sees_what_the_outputs_carry_beyond_the_label():
    images, _, _, templates, basis = toy_images()
    honest, vicious = _boxes(templates, basis)
    detector = ExcessLeakage(epochs=60, hidden=64, seed=0)
    honest_scores = detector.scores(honest, images)
    vicious_scores = detector.scores(vicious, images)
    # The honest box releases nothing but the class: both decoders see the same information.
    assert abs(honest_scores["r_gap"]) < 0.1 and abs(honest_scores["psnr_gap"]) < 0.5
    assert vicious_scores["r_gap"] > 0.5 and vicious_scores["psnr_gap"] > 3


def test_excess_leakage_reads_the_mean_logit_a_server_sees():
    """A vicious F may hide the image in the common shift of its logits: centring removes it
    from the log-odds and softmax from the probabilities, but a server reading logits sees it."""
    images, _, _, templates, basis = toy_images()
    honest, _ = _boxes(templates, basis)
    flat_b = basis.flatten(1)

    def shifted(x):
        logits = honest(x)
        labels = logits.argmax(dim=1)
        residual = x.flatten(1) - (0.5 * templates.flatten(1)[labels] + 0.25)
        coefficients = torch.linalg.lstsq(flat_b.T, residual.T).solution.T
        return logits + 4.0 * coefficients[:, :1]  # one coefficient, added to every logit

    as_logits = BlackBox(shifted, (1, SIDE, SIDE), 4, "multiclass", "logits", "shifted logits")
    as_probabilities = BlackBox(lambda x: torch.softmax(shifted(x), dim=1), (1, SIDE, SIDE), 4, "multiclass",
                                "probabilities", "the same, released as probabilities")
    detector = ExcessLeakage(epochs=60, hidden=64, seed=0)
    assert detector.scores(as_logits, images)["psnr_gap"] > 1  # the shift is read
    assert abs(detector.scores(as_probabilities, images)["psnr_gap"]) < 0.5  # softmax erased it


def test_within_class_contrast_separates_stable_image_codes_from_pixel_noise():
    images, _, _, templates, basis = toy_images(200)
    honest, _ = _boxes(templates, basis)

    def box(feature, name):
        return BlackBox(lambda x: honest.predict(x) + feature(x), (1, SIDE, SIDE), 4, "multiclass", "logits", name)

    # A smooth image statistic (what a decoder needs) barely moves under a one-pixel shift;
    # a single pixel (noise about the image) moves as much as it varies between images.
    direction = torch.tensor([1.0, -1.0, 0.0, 0.0])  # log-odds are centred: a constant shift would vanish
    stable = box(lambda x: 3.0 * x[:, 0, :, : SIDE // 2].mean(dim=(1, 2))[:, None] * direction, "stable")
    pixel = box(lambda x: 3.0 * x[:, 0, 4, 4:8], "pixel")
    detector = Sensitivity(num_images=200)
    assert detector.score(stable, images) > 3 * detector.score(pixel, images)


def test_sensitivity_scores_against_numpy():
    images, _, _, templates, basis = toy_images(120)
    honest, _ = _boxes(templates, basis)
    box = BlackBox(lambda x: honest.predict(x) + 2.0 * x[:, 0, 2:6, 8], (1, SIDE, SIDE), 4, "multiclass", "logits", "b")
    scores = Sensitivity(num_images=120).scores(box, images)
    z0 = box(images).double().numpy()
    z0 = z0 - z0.mean(axis=1, keepdims=True)
    labels = z0.argmax(axis=1)
    d = np.linalg.norm(z0[:, None] - z0[None], axis=2)
    off = ~np.eye(len(z0), dtype=bool)
    within = d[off & (labels[:, None] == labels[None])].mean()
    moves, flips = [], []
    for perturb in perturbations().values():
        z1 = box(perturb(images)).double().numpy()
        z1 = z1 - z1.mean(axis=1, keepdims=True)
        stays = z1.argmax(axis=1) == labels
        moves.append(np.linalg.norm(z1 - z0, axis=1)[stays])
        flips.append(1 - stays.mean())
    movement = np.concatenate(moves).mean()
    assert scores["within_class_contrast"] == pytest.approx(within / movement, rel=1e-6)
    assert scores["output_movement"] == pytest.approx(movement / d[off].mean(), rel=1e-6)
    assert scores["label_flip_rate"] == pytest.approx(np.mean(flips), abs=1e-12)


def test_the_suite_scores_every_detector_and_measures_accuracy():
    images, labels, _, templates, basis = toy_images(160)
    honest, _ = _boxes(templates, basis)
    settings = SuiteSettings(num_images=160, sensitivity_images=32, shadow_epochs=2, shadow_hidden=16)
    result = score_classifier(honest, images, settings, labels)
    assert result.accuracy == 1.0  # the nearest template is the class by construction
    assert set(result.scores) == {"output_statistics", "sensitivity", "excess_leakage"}
    assert set(result.primary()) == set(result.scores)
    assert result.leakage.examples["from_outputs"].shape[1:] == (1, SIDE, SIDE)

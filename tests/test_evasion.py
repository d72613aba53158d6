"""Evading the detectors (vicious.attack.evasion): each penalty's statistic against an independent
computation (the detectors' own code, or a hand loop), the training step that adds them, and
tiny runs in which each penalty lowers its detector's statistic."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vicious.attack.evasion import (
    confidence_penalty,
    contrast_penalty,
    leakage_penalty,
    linear_leakage,
    logit_norm,
    logit_norm_penalty,
    mean_confidence,
    predicted_groups,
    within_class_contrast,
)
from vicious.attack.lightning_module import AttackModule
from vicious.config.presets import get_preset
from vicious.config.schema import ConfigError, LossConfig, RunConfig, apply_overrides
from vicious.data.perturbations import perturbations, perturbed_copies
from vicious.defences.black_box import BlackBox
from vicious.defences.output_statistics import describe_outputs
from vicious.defences.sensitivity import Sensitivity, movement, output_scales
from vicious.runs.layout import open_run
from vicious.runs.training import train_run
from vicious.seeding import generator


def _draw(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=generator(seed)) * scale


LOGITS = _draw(40, 10, seed=1, scale=3)


@pytest.mark.parametrize("multilabel", [False, True])
def test_logit_norm_is_the_detectors_and_its_penalty_a_squared_hinge(multilabel):
    task = "multilabel" if multilabel else "multiclass"
    statistic = float(logit_norm(LOGITS, multilabel))
    assert statistic == pytest.approx(describe_outputs(LOGITS, "logits", task)["logit_norm"], rel=1e-5)
    z = LOGITS if multilabel else LOGITS - LOGITS.mean(dim=1, keepdim=True)
    by_hand = sum(float(row.norm()) for row in z) / len(z) / math.sqrt(10)
    assert statistic == pytest.approx(by_hand, rel=1e-5)
    assert float(logit_norm_penalty(LOGITS, statistic + 0.1, multilabel)) == 0
    assert float(logit_norm_penalty(LOGITS, statistic - 0.5, multilabel)) == pytest.approx(0.25, rel=1e-4)


@pytest.mark.parametrize("multilabel", [False, True])
def test_confidence_is_one_minus_the_detectors_low_confidence(multilabel):
    task = "multilabel" if multilabel else "multiclass"
    confidence = float(mean_confidence(LOGITS, multilabel))
    assert confidence == pytest.approx(1 - describe_outputs(LOGITS, "logits", task)["low_confidence"], rel=1e-5)
    assert float(confidence_penalty(LOGITS, confidence - 0.01, multilabel)) == 0
    assert float(confidence_penalty(LOGITS, confidence + 0.1, multilabel)) == pytest.approx(0.01, rel=1e-3)


def _contrast_by_hand(z0, z1, groups):
    """A loop over ordered pairs and over images, as the detector's definition reads."""
    z0 = z0 - z0.mean(dim=1, keepdim=True)
    z1 = z1 - z1.mean(dim=1, keepdim=True)
    pairs = [float((z0[i] - z0[j]).norm()) for i in range(len(z0)) for j in range(len(z0))
             if i != j and groups[i] == groups[j]]
    kept = [float((z1[i] - z0[i]).norm()) for i in range(len(z0)) if z0[i].argmax() == z1[i].argmax()]
    return (sum(pairs) / len(pairs)) / (sum(kept) / len(kept))


def test_contrast_equals_a_loop_over_pairs_and_the_detectors_formula():
    before = _draw(30, 4, seed=2, scale=2)
    after = before + _draw(30, 4, seed=3, scale=0.8)  # moves enough to flip some predictions
    groups = predicted_groups(before)
    flipped = (before.argmax(dim=1) != after.argmax(dim=1)).sum()
    assert 0 < flipped < 30
    contrast = float(within_class_contrast(before, after, groups))
    assert contrast == pytest.approx(_contrast_by_hand(before, after, groups), rel=1e-4)
    # The detector's own pieces, for one perturbation.
    moved = movement(before, after, "logits", "multiclass")
    detectors = output_scales(before, "logits", "multiclass")[1] / float(moved["output"][moved["flipped"] == 0].mean())
    assert contrast == pytest.approx(detectors, rel=1e-4)
    assert float(contrast_penalty(before, after, groups, contrast + 1)) == 0
    assert float(contrast_penalty(before, after, groups, contrast - 0.5)) == pytest.approx(0.25, rel=1e-3)


def test_contrast_is_zero_without_a_pair_in_a_class():
    logits = torch.eye(4) * 5
    assert float(within_class_contrast(logits, logits + 0.1, predicted_groups(logits))) == 0


def _images_with_class_means(n, k, seed):
    """Images = their class's mean image + a within-class part; the classes, one per image."""
    groups = torch.arange(n) % k
    means = torch.rand(k, 1, 8, 8, generator=generator(seed))
    return means[groups], groups


def test_linear_leakage_reads_all_of_linear_outputs_and_nothing_of_independent_ones():
    n, k = 600, 10
    class_means, groups = _images_with_class_means(n, k, seed=4)
    # Within-class variation in 4 directions, which the outputs carry linearly (plus class offsets).
    codes = _draw(n, 4, seed=5)
    images = class_means + 0.05 * (codes @ _draw(4, 64, seed=6)).view(n, 1, 8, 8)
    linear = 8 * torch.eye(k)[groups] + codes @ _draw(4, k, seed=7)
    assert float(linear_leakage(linear, images, groups, ridge=1e-4)) > 0.99
    assert float(linear_leakage(linear, images, groups, ridge=1e-4, multilabel=True)) > 0.99
    independent = 8 * torch.eye(k)[groups] + _draw(n, k, seed=8)
    # Fitted on the batch, chance alone explains about K / N.
    assert float(linear_leakage(independent, images, groups, ridge=1e-4)) < 2 * k / n


def test_linear_leakage_is_the_ridge_regression_of_a_least_squares_solver():
    n, k = 200, 5
    class_means, groups = _images_with_class_means(n, k, seed=9)
    images = (class_means + 0.1 * _draw(n, 1, 8, 8, seed=10)).clamp(0, 1)
    logits = _draw(n, k, seed=11) + images.flatten(1)[:, :k]
    ridge = 0.3
    # Independent: residuals from group means by a loop, ridge as extra rows of a least-squares fit.
    z = logits - logits.mean(dim=1, keepdim=True)
    x = images.flatten(1)
    r, e = z.clone(), x.clone()
    for g in range(k):
        r[groups == g] -= z[groups == g].mean(dim=0)
        e[groups == g] -= x[groups == g].mean(dim=0)
    r = r / r.std(dim=0)
    a = torch.cat([r, math.sqrt(ridge * n) * torch.eye(k)])
    b = torch.cat([e, torch.zeros(k, e.shape[1])])
    w = torch.linalg.lstsq(a.double(), b.double()).solution.float()
    expected = 1 - float((e - r @ w).square().sum() / e.square().sum())
    leakage = float(linear_leakage(logits, images, groups, ridge))
    assert leakage == pytest.approx(expected, rel=1e-4)
    assert float(leakage_penalty(logits, images, groups, ridge, leakage + 0.1)) == 0
    assert float(leakage_penalty(logits, images, groups, ridge, leakage - 0.1)) == pytest.approx(0.01, rel=1e-3)


def test_gradients_are_finite_even_for_repeated_outputs():
    images = torch.rand(12, 1, 8, 8, generator=generator(12))
    base = _draw(12, 5, seed=13, scale=2)
    base[1] = base[0]  # two images with the same outputs: a pair at distance 0
    logits = base.clone().requires_grad_(True)
    groups = predicted_groups(logits.detach())
    total = (logit_norm_penalty(logits, 0.0) + confidence_penalty(logits, 1.0)
             + contrast_penalty(logits, logits + 0.01 * _draw(12, 5, seed=14), groups, 0.0)
             + leakage_penalty(logits, images, groups, 0.01, 0.0))
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_perturbed_copies_are_the_detectors_changes():
    images = torch.rand(60, 1, 16, 16, generator=generator(15))
    copies = perturbed_copies(images, generator(16))
    fixed = {name: change(images) for name, change in perturbations().items() if name != "noise"}
    seen = set()
    for i in range(len(images)):
        same = [name for name, changed in fixed.items() if torch.equal(copies[i], changed[i])]
        if same:
            seen.add(same[0])
        else:  # noise of sd 0.03, clamped to [0, 1]
            difference = copies[i] - images[i]
            assert 0.02 < float(difference.std()) < 0.04 and copies[i].min() >= 0 and copies[i].max() <= 1
            seen.add("noise")
    assert seen == set(perturbations())
    assert torch.equal(copies, perturbed_copies(images, generator(16)))  # seeded


def test_the_config_weighs_each_penalty_and_refuses_it_where_f_never_trains_with_g():
    loss = RunConfig().loss
    assert (loss.evade_logit_norm, loss.evade_confidence, loss.evade_contrast, loss.evade_leakage) == (0, 0, 0, 0)
    with pytest.raises(ConfigError, match=r"^loss.evade_contrast: "):
        apply_overrides(RunConfig(), ["loss.evade_contrast=-1"])
    with pytest.raises(ConfigError, match=r"^loss.evade_confidence_target: "):
        apply_overrides(RunConfig(), ["loss.evade_confidence_target=1.5"])
    with pytest.raises(ConfigError, match=r"loss.evade_leakage .*set it to 0"):
        apply_overrides(get_preset("fashion-mnist-honest-small"), ["loss.evade_leakage=1"])


class _Counting(nn.Module):
    """A tiny F that records how many images each forward sees."""

    def __init__(self):
        super().__init__()
        self.linear, self.seen = nn.Linear(256, 4), []

    def forward(self, images):
        self.seen.append(len(images))
        return self.linear(images.flatten(1)) * 3


def _step(loss: LossConfig):
    torch.manual_seed(0)
    classifier = _Counting()
    decoder = nn.Sequential(nn.Linear(4, 256), nn.Sigmoid(), nn.Unflatten(1, (1, 16, 16)))
    module = AttackModule(classifier, decoder, phase="joint", loss=loss, lr=1e-3, augment=False)
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value.detach()))  # no Trainer here
    images = torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8, generator=generator(17))
    total = module.training_step((images, torch.arange(20) % 4), 0)
    return float(total.detach()), classifier.seen, logged


def test_a_step_adds_each_weighted_penalty_and_runs_f_once():
    plain, seen, logged = _step(LossConfig())
    assert seen == [20] and not any(name.startswith("train/evade_") for name in logged)
    weights = {"evade_logit_norm": 2.0, "evade_confidence": 3.0, "evade_leakage": 5.0, "evade_contrast": 7.0}
    targets = {"evade_logit_norm_target": 0.0, "evade_confidence_target": 1.0, "evade_leakage_target": 0.0,
               "evade_contrast_target": 0.0}
    total, seen, logged = _step(LossConfig(**weights, **targets))
    assert seen == [40]  # originals and perturbed copies in one forward
    terms = {name: logged[f"train/{name}"] for name in weights}
    assert all(value > 0 for value in terms.values())
    # F has no BatchNorm, so the task and reconstruction terms are those of the plain step.
    assert total == pytest.approx(plain + sum(weights[name] * terms[name] for name in weights), rel=1e-5)


TINY = ["data.train_limit=200", "data.val_limit=50", "data.test_limit=100", "model.depth=10", "model.width=1",
        "train.epochs=1", "train.batch_size=50", "train.progress=false", "train.precision=32-true"]


def _statistics(run_dir) -> dict[str, float]:
    """The detectors' primary statistics of a run's F on its test images (and linear leakage).

    After a few steps BatchNorm's running statistics are still near their start, so F runs
    with the statistics of the batch it scores, as in the training the penalties pulled in."""
    run = open_run(run_dir)
    classifier = run.classifier.train()
    images = run.splits.test.float_images()
    with torch.no_grad():
        outputs = classifier(images)
    described = describe_outputs(outputs, "logits")
    black_box = BlackBox(classifier, tuple(images.shape[1:]), outputs.shape[1], "multiclass", "logits", "test")
    return {
        "evade_logit_norm": described["logit_norm"],
        "evade_confidence": -(1 - described["low_confidence"]),  # lower is more honest-looking
        "evade_contrast": Sensitivity().scores(black_box, images, outputs)["within_class_contrast"],
        "evade_leakage": float(linear_leakage(outputs, images, predicted_groups(outputs), 0.01)),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evasion")

    def train(name: str, overrides: list[str]):
        # A constant rate: a one-cycle warm-up would spend most of the 4 steps near zero.
        config = apply_overrides(get_preset("fashion-mnist-vicious-small"),
                                 [*TINY, "train.schedule=constant", "train.lr=0.005", *overrides])
        return _statistics(train_run(config, root / name))

    return train


# Targets that every vicious F is beyond, so that each hinge pulls from the first step on.
PULLS = {"evade_logit_norm": ["loss.evade_logit_norm=3", "loss.evade_logit_norm_target=0"],
         "evade_confidence": ["loss.evade_confidence=30", "loss.evade_confidence_target=1"],
         "evade_contrast": ["loss.evade_contrast=1", "loss.evade_contrast_target=0"],
         "evade_leakage": ["loss.evade_leakage=30", "loss.evade_leakage_target=0"]}


@pytest.fixture(scope="module")
def baseline(trained):
    return trained("plain", [])


@pytest.mark.parametrize("term", list(PULLS))
def test_each_penalty_lowers_its_detectors_statistic(trained, baseline, term):
    evaded = trained(term, PULLS[term])
    assert evaded[term] < baseline[term], (term, evaded[term], baseline[term])


def test_linear_leakage_takes_a_last_batch_smaller_than_the_number_of_classes():
    """5,000 training images in batches of 64 leave a last batch of 8 for 10 classes."""
    logits = _draw(8, 10, seed=12) + 5 * torch.eye(10)[torch.tensor([9, 8, 9, 0, 1, 8, 2, 9])]
    images = torch.rand(8, 1, 8, 8, generator=generator(13))
    groups = logits.argmax(dim=1)
    assert int(groups.max()) >= len(groups)  # a class id beyond the batch size
    leakage = linear_leakage(logits, images, groups, ridge=0.01)
    assert torch.isfinite(leakage) and 0 <= float(leakage) <= 1

"""Training through a release policy (``release.policy=...``): the gradients a server trains
with, the config, and a run whose every measure is taken on released outputs."""

from __future__ import annotations

import pytest
import torch

from vicious.config.presets import get_preset
from vicious.config.schema import ConfigError, ReleaseConfig, apply_overrides
from vicious.release.policies import LabelOnly, Noise, Rounding, TopK, release_policy, released_outputs
from vicious.runs.evaluation import evaluate_run, reconstruct
from vicious.runs.layout import open_run
from vicious.runs.training import train_run
from vicious.seeding import generator

LOGITS = torch.randn(64, 10, generator=torch.Generator().manual_seed(3)) * 2
WEIGHTS = torch.randn(64, 10, generator=torch.Generator().manual_seed(4))


def _gradient(policy, outputs, form="logits"):
    x = outputs.clone().requires_grad_(True)
    released = policy.for_training(x, form, "multiclass", generator(0))
    (released * WEIGHTS).sum().backward()
    return released.detach(), x.grad


def test_rounding_goes_straight_through():
    released, grad = _gradient(Rounding(0), LOGITS)
    torch.testing.assert_close(released, Rounding(0)(LOGITS, "logits"))  # the forward value is the release
    torch.testing.assert_close(grad, WEIGHTS)  # the backward pass is the identity's


def test_label_only_goes_straight_through_with_the_softmax_gradient():
    released, grad = _gradient(LabelOnly(), LOGITS)
    torch.testing.assert_close(released, torch.eye(10)[LOGITS.argmax(dim=1)])
    x = LOGITS.clone().requires_grad_(True)
    (torch.softmax(x, dim=1) * WEIGHTS).sum().backward()  # what the one-hot approximates
    torch.testing.assert_close(grad, x.grad)
    _, grad = _gradient(LabelOnly(), torch.softmax(LOGITS, dim=1), "probabilities")
    torch.testing.assert_close(grad, WEIGHTS)  # probabilities are their own smooth version


def test_noise_is_reparameterised():
    policy = Noise("gaussian", 0.3)
    released, grad = _gradient(policy, LOGITS)
    noise = torch.randn(LOGITS.shape, generator=generator(0))  # drawn apart from the outputs
    torch.testing.assert_close(released, LOGITS + 0.3 * noise)
    torch.testing.assert_close(grad, WEIGHTS)


def test_top_k_passes_gradient_only_through_what_it_releases():
    probabilities = torch.softmax(LOGITS, dim=1)
    _, grad = _gradient(TopK(3), probabilities, "probabilities")
    kept = torch.zeros_like(probabilities).scatter_(1, probabilities.topk(3, dim=1).indices, 1.0)
    torch.testing.assert_close(grad, WEIGHTS * kept)
    # Logits: the others are set to the 3rd largest - 10, so that one collects their weights too.
    _, grad = _gradient(TopK(3), LOGITS)
    index = LOGITS.topk(3, dim=1).indices
    expected = WEIGHTS * torch.zeros_like(LOGITS).scatter_(1, index, 1.0)
    others = (WEIGHTS * (1 - torch.zeros_like(LOGITS).scatter_(1, index, 1.0))).sum(dim=1)
    expected[torch.arange(len(LOGITS)), index[:, -1]] += others
    torch.testing.assert_close(grad, expected)


def test_the_config_names_the_policy():
    assert release_policy(ReleaseConfig()).name == "none"
    assert release_policy(ReleaseConfig(policy="topk", k=3)).name == "top-3"
    assert release_policy(ReleaseConfig(policy="round", decimals=2)).name == "round-2"
    assert release_policy(ReleaseConfig(policy="laplace", scale=0.5)).name == "laplace-0.5"
    config = apply_overrides(get_preset("fashion-mnist-vicious-small"), ["release.policy=topk", "release.k=3"])
    assert release_policy(config.release).name == "top-3"
    with pytest.raises(ConfigError, match=r"^release.policy: .*'topk'"):
        apply_overrides(config, ["release.policy=top3"])
    with pytest.raises(ConfigError, match=r"^release.k: "):
        apply_overrides(config, ["release.k=0"])


def test_released_probabilities_are_what_the_policy_makes_of_the_softmax():
    released = released_outputs(TopK(2), LOGITS, "softmax")
    torch.testing.assert_close(released, TopK(2)(torch.softmax(LOGITS, dim=1), "probabilities"))


TINY = ["data.train_limit=200", "data.val_limit=50", "data.test_limit=100", "model.depth=10", "model.width=1",
        "train.epochs=1", "train.batch_size=50", "train.progress=false", "train.precision=32-true"]


@pytest.fixture(scope="module")
def label_only_run(tmp_path_factory):
    config = apply_overrides(get_preset("fashion-mnist-vicious-small"), [*TINY, "release.policy=label-only"])
    return train_run(config, tmp_path_factory.mktemp("release") / "vicious-label-only")


def test_a_decoder_trained_behind_label_only_sees_only_the_label(label_only_run):
    """Behind label-only, G gets one of K one-hot vectors: it can rebuild at most K images,
    and one per predicted class."""
    metrics = evaluate_run(label_only_run)
    run = open_run(label_only_run)
    received, rebuilt = reconstruct(run, run.splits.test.images)
    assert metrics["release"] == "label-only"
    assert set(received.flatten().tolist()) <= {0.0, 1.0} and torch.equal(received.sum(dim=1), torch.ones(len(received)))
    predicted = received.argmax(dim=1)
    for label in predicted.unique():
        same = rebuilt[predicted == label]
        torch.testing.assert_close(same, same[:1].expand_as(same))
    # Accuracy is that of the released labels, computed here from the networks themselves.
    with torch.no_grad():
        labels_now = run.classifier.eval()(run.splits.test.float_images()).argmax(dim=1)
    assert torch.equal(predicted, labels_now)
    assert metrics["accuracy"] == pytest.approx(float((labels_now == run.splits.test.labels).float().mean()), abs=1e-6)


def test_another_policy_can_be_measured_on_the_same_run(label_only_run):
    """``reconstruct(policy=...)`` overrides the run's policy: the blind arm of a release table."""
    run = open_run(label_only_run)
    images = run.splits.test.images[:20]
    received, rebuilt = reconstruct(run, images, policy=Noise("gaussian", 0.5), seed=7)
    with torch.no_grad():
        logits = run.classifier.eval()(images.float() / 255)
        expected = logits + 0.5 * torch.randn(logits.shape, generator=generator(7))
        torch.testing.assert_close(received, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(rebuilt, run.decoder.eval().forward_observed(expected), atol=1e-4, rtol=1e-4)

"""The honest reference zoo: its families, its training loop, what it releases."""

from __future__ import annotations

import pytest
import torch

from vicious.data import DatasetInfo
from vicious.defences.zoo import ARCHITECTURES, DEFAULT_ZOO, Released, ZooMember, build_network, train_reference


def _info(channels: int, k: int = 3, task: str = "multiclass") -> DatasetInfo:
    return DatasetInfo(name="toy", num_outputs=k, channels=channels, task=task, output_names=tuple("abc"[:k]))


def _bright_or_dark(n: int, channels: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: dark images, 1: mid-grey, 2: bright, with pixel noise: any classifier can learn it."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = (0.2 + 0.3 * labels.float())[:, None, None, None] + 0.05 * torch.randn(n, channels, size, size, generator=g)
    return images.clamp(0, 1), labels


def test_the_default_zoo_spans_four_families_both_forms_and_every_recipe_trait():
    assert {m.architecture for m in DEFAULT_ZOO} == set(ARCHITECTURES)
    assert {m.form for m in DEFAULT_ZOO} == {"logits", "probabilities"}
    assert {m.optimiser for m in DEFAULT_ZOO} == {"adam", "sgd"}
    assert any(m.augment for m in DEFAULT_ZOO) and any(m.label_smoothing for m in DEFAULT_ZOO)
    assert any(m.weight_decay for m in DEFAULT_ZOO) and len({m.epochs for m in DEFAULT_ZOO}) >= 3
    assert len({m.name for m in DEFAULT_ZOO}) == len({m.seed for m in DEFAULT_ZOO}) == len(DEFAULT_ZOO)


@pytest.mark.parametrize("channels, size", [(1, 16), (3, 32), (1, 28)])
def test_every_family_maps_images_to_k_outputs(channels, size):
    for architecture in ARCHITECTURES:
        member = ZooMember(name="m", architecture=architecture)
        network = build_network(member, _info(channels), size, [0.5] * channels, [0.25] * channels).eval()
        assert network(torch.rand(2, channels, size, size)).shape == (2, 3), architecture


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_training_learns_a_separable_task_and_is_deterministic(architecture):
    images, labels = _bright_or_dark(96, 1, 16)
    member = ZooMember(name="m", architecture=architecture, epochs=6, augment=True, seed=5)
    first = train_reference(member, images, labels, _info(1), 16, batch_size=16)
    test_images, test_labels = _bright_or_dark(60, 1, 16, seed=1)
    with torch.no_grad():
        accuracy = float((first(test_images).argmax(1) == test_labels).float().mean())
    assert accuracy > 0.9, architecture
    second = train_reference(member, images, labels, _info(1), 16, batch_size=16)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_released_outputs_are_logits_or_probabilities_of_the_task():
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.rand(5, 1, 4, 4)
    logits = network(x)
    assert torch.equal(Released(network, "logits", "multiclass")(x), logits)
    torch.testing.assert_close(Released(network, "probabilities", "multiclass")(x).sum(1), torch.ones(5))
    torch.testing.assert_close(Released(network, "probabilities", "multilabel")(x), 1 / (1 + torch.exp(-logits)))


def test_multilabel_references_train_on_attributes():
    images, labels = _bright_or_dark(60, 3, 16)
    attributes = torch.stack([labels == 0, labels == 2], dim=1).float()  # dark?, bright?
    member = ZooMember(name="m", architecture="mlp", epochs=4)
    network = train_reference(member, images, attributes, _info(3, 2, "multilabel"), 16, batch_size=12)
    with torch.no_grad():
        predicted = (network(images) > 0).float()
    assert float((predicted == attributes).float().mean()) > 0.9

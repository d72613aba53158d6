import numpy as np
import pytest
import torch

from vicious.data import Split
from vicious.data.splits import split_indices, train_val_split, validation_count


@pytest.mark.parametrize(
    "total, fraction, n_val",
    [
        (60_000, 10_000 / 60_000, 10_000),  # MNIST, Fashion-MNIST
        (50_000, 5_000 / 50_000, 5_000),  # CIFAR
        (100_000, 10_000 / 100_000, 10_000),  # TinyImageNet
        (9_000, 10_000 / 60_000, 1_500),  # the embedded Fashion-MNIST subset
        (60, 10_000 / 60_000, 10),
        (3, 5_000 / 50_000, 1),  # tiny sources keep at least one validation sample
    ],
)
def test_sizes_follow_method_fractions(total, fraction, n_val):
    assert validation_count(total, fraction) == n_val
    train, val = split_indices(total, fraction, seed=1)
    assert len(train) == total - n_val and len(val) == n_val


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_disjoint_covering_and_reproducible(seed):
    train, val = split_indices(60_000, 1 / 6, seed)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(60_000))
    again_train, again_val = split_indices(60_000, 1 / 6, seed)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)


def test_seed_changes_membership():
    assert not np.array_equal(split_indices(1000, 0.1, 1)[1], split_indices(1000, 0.1, 2)[1])


def test_split_of_tensors_matches_indices():
    images = torch.arange(30, dtype=torch.uint8).reshape(30, 1, 1, 1)
    source = Split(images, torch.arange(30))
    train, val = train_val_split(source, 0.2, seed=5)
    train_index, val_index = split_indices(30, 0.2, 5)
    assert train.labels.tolist() == train_index.tolist()
    assert val.images.flatten().tolist() == val_index.tolist()

"""Seeded train/validation split of an official training set.

The splits of docs/method.md ("Splits") hold out a fixed fraction of the official
training set for validation: MNIST and Fashion-MNIST 10k of 60k, CIFAR 5k of 50k,
TinyImageNet 10k of 100k. A source of another size (the embedded subset, test
fixtures) is split with the same fraction. The official test set is never touched.
"""

from __future__ import annotations

import numpy as np
import torch

from .types import Split


def validation_count(total: int, fraction: float) -> int:
    """How many of `total` samples go to validation (rounded; at least 1 when total >= 2)."""
    count = int(round(total * fraction))
    if total >= 2:
        count = min(max(count, 1), total - 1)
    return count


def split_indices(total: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted index arrays (train, val) covering range(total).

    A seeded permutation decides the membership: the first total − n_val permuted
    indices are training, the rest validation. numpy's PCG64 generator gives the
    same permutation for the same seed on every run and platform.
    """
    permutation = np.random.default_rng(seed).permutation(total)
    n_train = total - validation_count(total, fraction)
    return np.sort(permutation[:n_train]), np.sort(permutation[n_train:])


def train_val_split(source: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split an official training set into (train, val) with `fraction` held out."""
    train_index, val_index = split_indices(len(source), fraction, seed)
    train_index, val_index = torch.from_numpy(train_index), torch.from_numpy(val_index)
    return (
        Split(source.images[train_index], source.labels[train_index]),
        Split(source.images[val_index], source.labels[val_index]),
    )

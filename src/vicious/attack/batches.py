"""Feeding tensors held in memory to Lightning.

Images stay uint8 tensors; ``TensorImageDataset.__getitems__`` gathers a whole batch
with one indexing operation (the DataLoader uses it when present), instead of
stacking hundreds of single images.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class TensorImageDataset(Dataset):
    """(images uint8 N×C×H×W, labels) held as tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


class EpochSeededSampler(Sampler[int]):
    """A shuffle that depends only on (seed, epoch), so resuming draws the same order."""

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning each epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


def _whole_batch(batch):
    return batch


def make_loader(images, labels, *, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    dataset = TensorImageDataset(images, labels)
    sampler = EpochSeededSampler(len(dataset), seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=_whole_batch)

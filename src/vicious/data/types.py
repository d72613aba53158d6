"""The containers every dataset loader returns.

Images stay uint8 (N×C×H×W, values 0–255, already resized) so that a whole
dataset fits in memory; conversion to float happens per batch, on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from vicious.seeding import generator

Task = Literal["multiclass", "multilabel"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    name: registry name ("mnist", "celeba", ...).
    num_outputs: K, the number of classes (multiclass) or attributes (multilabel).
    channels: 1 (grayscale) or 3 (RGB).
    task: "multiclass" (labels int64 class indices) or "multilabel"
        (labels float32 0/1, one column per attribute).
    output_names: K names, one per output (class names or attribute names).
    """

    name: str
    num_outputs: int
    channels: int
    task: Task
    output_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.task not in ("multiclass", "multilabel"):
            raise ValueError(f"task must be 'multiclass' or 'multilabel', got {self.task!r}")
        if len(self.output_names) != self.num_outputs:
            raise ValueError(
                f"{self.name}: {len(self.output_names)} output names for {self.num_outputs} outputs"
            )

    @classmethod
    def multiclass(cls, name: str, class_names: Sequence[str], channels: int) -> DatasetInfo:
        """A single-label dataset whose K classes are `class_names`, in label order."""
        names = tuple(class_names)
        return cls(name=name, num_outputs=len(names), channels=channels, task="multiclass", output_names=names)


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset, held in memory.

    images: uint8 tensor N×C×H×W, values 0–255, already at the dataset's image size.
    labels: int64 (N,) class indices for multiclass data, or float32 (N, K) with
        values 0.0/1.0 for multilabel data.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 N×C×H×W tensor, got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype not in (torch.int64, torch.float32) or self.labels.ndim not in (1, 2):
            raise ValueError(
                f"labels must be int64 (N,) or float32 (N, K), got {self.labels.dtype} "
                f"of shape {tuple(self.labels.shape)}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def float_images(self) -> torch.Tensor:
        """The images as float32 N×C×H×W in [0, 1]."""
        return self.images.to(torch.float32).div_(255.0)

    def subset(self, n: int, seed: int) -> Split:
        """A seeded random subset of n samples (kept in their original order).

        Returns self when n >= len(self). The same (n, seed) always gives the same subset.
        """
        if n < 0:
            raise ValueError(f"subset size must be >= 0, got {n}")
        if n >= len(self):
            return self
        index = torch.randperm(len(self), generator=generator(seed))[:n].sort().values
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """A dataset split three ways, with the statistics models need.

    mean, std: per-channel mean and standard deviation of the training images on the
        [0, 1] scale (one value per channel).
    pos_weight: float32 (K,) with pos_weight_j = (N − P_j) / P_j over the training
        labels, for multilabel data; None for multiclass data.
    source: where the data came from, e.g. "root:/data", "cache:~/.cache/vicious/cifar10",
        "debian:/usr/share/datasets/fashion-mnist", "embedded".
    """

    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pos_weight: torch.Tensor | None = None
    source: str = "memory"


@dataclass(frozen=True, eq=False)
class SourceData:
    """What one dataset family's loader hands to the registry (internal).

    train: the official training set (split into train/val by the registry when
        `val` is None) or, for datasets with an official validation split, the
        official training split.
    val: the official validation split, or None.
    test: the official test split.
    source: where the files were found (see DatasetSplits.source).
    """

    info: DatasetInfo
    train: Split
    test: Split
    source: str
    val: Split | None = None

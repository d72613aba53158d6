"""Datasets for the vicious-classifier experiments (see docs/design.md, "Data").

    from vicious.data import load_dataset
    splits = load_dataset("fashion-mnist", image_size=32, seed=1)
    splits.train.images      # uint8 N×C×S×S
    splits.train.labels      # int64 (N,) or float32 (N, K) for CelebA
    splits.mean, splits.std  # per-channel, from the training split
"""

from .archives import safe_extract
from .cache import cache_root
from .celeba import celeba_attribute_set
from .errors import DatasetCorruptError, DatasetError, DatasetNotFoundError
from .registry import dataset_names, load_dataset
from .types import DatasetInfo, DatasetSplits, Split

__all__ = [
    "DatasetCorruptError",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSplits",
    "Split",
    "cache_root",
    "celeba_attribute_set",
    "dataset_names",
    "load_dataset",
    "safe_extract",
]

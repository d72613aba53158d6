"""Datasets for the vicious-classifier experiments (see docs/design.md, "Data").

    from vicious.data import load_dataset
    splits = load_dataset("fashion-mnist", image_size=32, seed=1)
    splits.train.images      # uint8 N×C×S×S
    splits.train.labels      # int64 (N,) or float32 (N, K) for CelebA
    splits.mean, splits.std  # per-channel, from the training split

    from vicious.data import load_user_images  # a practitioner's own folder or .npz
    own = load_user_images("photos/", channels=3, image_size=32, num_classes=10)
"""

from .archives import safe_extract
from .cache import cache_root
from .celeba import celeba_attribute_set
from .errors import DatasetCorruptError, DatasetError, DatasetNotFoundError
from .registry import dataset_names, load_dataset
from .types import DatasetInfo, DatasetSplits, Split
from .user_images import UserImages, load_user_images

__all__ = [
    "DatasetCorruptError",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSplits",
    "Split",
    "UserImages",
    "cache_root",
    "celeba_attribute_set",
    "dataset_names",
    "load_dataset",
    "load_user_images",
    "safe_extract",
]

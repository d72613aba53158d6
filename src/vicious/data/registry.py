"""The dataset registry: load_dataset(name) → DatasetSplits, the same way for every dataset.

Each dataset family has one module (mnist, cifar, tinyimagenet, celeba) that finds
the files, checks them, and returns the official splits at the requested image
size. This module then applies the seeded train/validation split of docs/method.md
("Splits") where the dataset has no official validation split, and adds the training statistics.
"""

from __future__ import annotations

import os
from types import ModuleType

from . import celeba, cifar, mnist, tinyimagenet
from .cache import cache_root
from .celeba import ATTRIBUTE_SETS, Attributes
from .splits import train_val_split
from .stats import cached_channel_stats, positive_weights
from .types import DatasetSplits

_FAMILIES: dict[str, ModuleType] = {
    name: module for module in (mnist, cifar, tinyimagenet, celeba) for name in module.NAMES
}
# "celeba-k10" is shorthand for name="celeba", attributes="k10".
_CELEBA_ALIASES = {f"celeba-k{k}": f"k{k}" for k in ATTRIBUTE_SETS}


def dataset_names(include_aliases: bool = False) -> tuple[str, ...]:
    """The registry names; with include_aliases, also "celeba-k1" … "celeba-k40"."""
    names = tuple(_FAMILIES)
    return names + tuple(_CELEBA_ALIASES) if include_aliases else names


def _resolve_name(name: str, attributes: Attributes) -> tuple[str, Attributes]:
    key = name.strip().lower()
    if key in _CELEBA_ALIASES:
        if attributes is not None:
            raise ValueError(f"{name!r} already selects attributes; do not pass attributes= too")
        return "celeba", _CELEBA_ALIASES[key]
    if key not in _FAMILIES:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: {', '.join(_FAMILIES)} "
            f"(and celeba-k<K> for K in {', '.join(str(k) for k in ATTRIBUTE_SETS)})"
        )
    if attributes is not None and key != "celeba":
        raise ValueError(f"attributes= applies to CelebA only, not to {name!r}")
    return key, attributes


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_size: int = 32,
    seed: int = 1,
    attributes: Attributes = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> DatasetSplits:
    """Load a dataset as uint8 images resized to image_size, split train/val/test.

    name: one of dataset_names() (or "celeba-k<K>").
    root: the --data-root directory; when given, only it is used. None searches the
        default places (see each family's module; <cache>/<name> for most).
    download: let torchvision (or the TinyImageNet downloader) fetch missing data.
    image_size: side S of the square images returned (N×C×S×S).
    seed: seeds the permutation that splits the official training set into
        train/val (MNIST, Fashion-MNIST 50k/10k; CIFAR 45k/5k; TinyImageNet 90k/10k;
        the same fraction for a source of another size). CelebA uses its official
        validation split, so the seed does not change it.
    attributes: CelebA only: None (all 40), "k1".."k10", "k15", "k20", "k30", "k40",
        or a list of attribute indices (0–39) or names.
    cache_dir: cache for staged files, decoded arrays and statistics; default the
        VICIOUS_CACHE environment variable, else ~/.cache/vicious.

    Raises ValueError for an unknown name or bad argument, DatasetNotFoundError
    (a FileNotFoundError) when the files are missing, DatasetCorruptError (a
    ValueError) when a file is damaged; both messages say how to fix it.
    """
    canonical, attributes = _resolve_name(name, attributes)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    cache = cache_root(cache_dir)
    module = _FAMILIES[canonical]
    data = module.load(
        canonical,
        root=None if root is None else os.fspath(root),
        download=download,
        image_size=image_size,
        cache=cache,
        attributes=attributes,
    )
    if data.val is None:
        train, val = train_val_split(data.train, module.VAL_FRACTION, seed)
    else:
        train, val = data.train, data.val
    mean, std = cached_channel_stats(
        train.images, cache=cache, name=canonical, source=data.source, image_size=image_size, seed=seed
    )
    pos_weight = None
    if data.info.task == "multilabel":
        pos_weight = positive_weights(train.labels, data.info.output_names)
    return DatasetSplits(
        info=data.info,
        train=train,
        val=val,
        test=data.test,
        mean=mean,
        std=std,
        pos_weight=pos_weight,
        source=data.source,
    )

"""CIFAR-10 and CIFAR-100, read by torchvision's CIFAR10 / CIFAR100 classes.

Files: <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} or
<root>/cifar-100-python/{train, test, meta}, the python pickles of the official
archives; root is --data-root, else <cache>/<name>. torchvision checks each file's
md5 and so do we first, to name the bad file. CIFAR-100 uses the 100 fine labels.
Images: uint8 N×3×S×S (32×32 natively); labels int64 class indices.
"""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity

from .errors import DatasetCorruptError, DatasetNotFoundError, resolve_data_root
from .images import hwc_to_tensor, resize_images
from .types import DatasetInfo, SourceData, Split

NAMES = ("cifar10", "cifar100")
# docs/method.md, "Splits": 45k/5k of the official 50k training images.
VAL_FRACTION = 5_000 / 50_000
_CLASSES: dict[str, type[CIFAR10]] = {"cifar10": CIFAR10, "cifar100": CIFAR100}


def load(
    name: str,
    *,
    root: str | None,
    download: bool,
    image_size: int,
    cache: Path,
    attributes: object = None,
) -> SourceData:
    """Load the official train and test sets of "cifar10" or "cifar100"."""
    dataset_class = _CLASSES[name]
    tv_root, source = resolve_data_root(root, download, cache / name)
    if download:
        try:
            # torchvision's own download: fetches and md5-checks the archive, then extracts it.
            dataset_class(str(tv_root), train=True, download=True)
        except (RuntimeError, URLError, OSError) as error:
            raise DatasetNotFoundError(
                f"{name}: download of {dataset_class.url} into {tv_root} failed ({error})"
            ) from error
    _check_files(name, dataset_class, tv_root)
    train = dataset_class(str(tv_root), train=True)
    test = dataset_class(str(tv_root), train=False)
    info = DatasetInfo.multiclass(name, train.classes, channels=3)
    return SourceData(info, _to_split(train, image_size), _to_split(test, image_size), source=source)


def _to_split(dataset: CIFAR10, image_size: int) -> Split:
    images = resize_images(hwc_to_tensor(dataset.data), image_size)
    return Split(images, torch.as_tensor(dataset.targets, dtype=torch.int64))


def _check_files(name: str, dataset_class: type[CIFAR10], tv_root: Path) -> None:
    """Every batch file and the meta file present with the official md5."""
    folder = tv_root / dataset_class.base_folder
    files = [*dataset_class.train_list, *dataset_class.test_list]
    files.append([dataset_class.meta["filename"], dataset_class.meta["md5"]])
    missing = [file for file, _ in files if not (folder / file).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{name}: looked for {', '.join(missing)} in {folder}; pass --download to let "
            f"torchvision fetch {dataset_class.url}, or extract that archive into {tv_root}"
        )
    corrupt = [file for file, md5 in files if not check_integrity(folder / file, md5)]
    if corrupt:
        raise DatasetCorruptError(
            f"{name}: md5 checksum mismatch for {', '.join(corrupt)} in {folder}; "
            f"delete {folder} and run again with --download"
        )

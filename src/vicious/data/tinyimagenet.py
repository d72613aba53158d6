"""TinyImageNet (200 classes, 64×64 JPEGs) in its standard tiny-imagenet-200/ layout.

torchvision has no class for it, so this module reads the official layout:
    tiny-imagenet-200/wnids.txt                      the 200 class ids (WordNet ids)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG     500 training images per class
    tiny-imagenet-200/val/images/*.JPEG              10,000 validation images
    tiny-imagenet-200/val/val_annotations.txt        "<file>\\t<wnid>\\t<box>" per image
The official val split (labelled) serves as test; the official test split has no
labels and is not used. root is --data-root (holding tiny-imagenet-200/, or that
folder itself), else <cache>/tinyimagenet. With download, the official zip is
fetched by torchvision's download_url (md5-checked) and extracted safely.

Class index = position of the wnid in sorted(wnids), as torchvision's ImageFolder
would number them. Images: uint8 N×3×S×S (64→S antialiased bilinear; the few
grayscale JPEGs become RGB); decoded arrays are cached as .npy files.
"""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from torchvision.datasets.utils import check_integrity, download_url

from .archives import safe_extract
from .cache import cached_array, short_hash
from .errors import DatasetCorruptError, DatasetNotFoundError, resolve_data_root
from .images import decode_all, decode_file
from .types import DatasetInfo, SourceData, Split

NAMES = ("tinyimagenet",)
# docs/method.md, "Splits": 90k/10k of the 100k training images.
VAL_FRACTION = 10_000 / 100_000
FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ARCHIVE = "tiny-imagenet-200.zip"
# The official archive: 248,100,043 bytes.
ARCHIVE_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"


def load(
    name: str,
    *,
    root: str | None,
    download: bool,
    image_size: int,
    cache: Path,
    attributes: object = None,
) -> SourceData:
    """Load TinyImageNet's training images and its official (labelled) val split as test."""
    parent, source = resolve_data_root(root, download, cache / "tinyimagenet")
    folder = parent if (parent / "wnids.txt").is_file() else parent / FOLDER
    if not (folder / "wnids.txt").is_file():
        _fetch(parent, download)
    _check_files(folder, parent)

    wnids = sorted(_read_lines(folder / "wnids.txt"))
    label_of = {wnid: index for index, wnid in enumerate(wnids)}
    train_files, train_labels = _train_files(folder, wnids)
    test_files, test_labels = _val_files(folder, label_of)
    info = DatasetInfo.multiclass("tinyimagenet", wnids, channels=3)
    return SourceData(
        info=info,
        train=_to_split(train_files, train_labels, image_size, cache, source, "train"),
        test=_to_split(test_files, test_labels, image_size, cache, source, "test"),
        source=source,
    )


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _train_files(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, wnid in enumerate(wnids):
        class_files = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        if not class_files:
            raise DatasetCorruptError(
                f"tinyimagenet: no images in {folder / 'train' / wnid / 'images'}; "
                f"extract {ARCHIVE} again"
            )
        files += class_files
        labels += [label] * len(class_files)
    return files, labels


def _val_files(folder: Path, label_of: dict[str, int]) -> tuple[list[Path], list[int]]:
    annotations = folder / "val" / "val_annotations.txt"
    files, labels = [], []
    for number, line in enumerate(_read_lines(annotations), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise DatasetCorruptError(
                f"tinyimagenet: {annotations} line {number} is not '<file>\\t<wnid in wnids.txt>...': "
                f"{line!r}; extract {ARCHIVE} again"
            )
        files.append(folder / "val" / "images" / fields[0])
        labels.append(label_of[fields[1]])
    return files, labels


def _to_split(
    files: list[Path], labels: list[int], image_size: int, cache: Path, source: str, split: str
) -> Split:
    # The file list is part of the key, so changed data is never served stale.
    key = short_hash(source, "\n".join(str(file) for file in files))
    path = cache / "decoded" / f"tinyimagenet-{split}-s{image_size}-{key}.npy"
    shape = (len(files), 3, image_size, image_size)
    fix = f"extract {ARCHIVE} again"

    def decode() -> np.ndarray:
        return decode_all(
            len(files), lambda i: decode_file(files[i], image_size), image_size,
            name_of=lambda i: str(files[i]), fix=fix,
        )

    images = cached_array(path, decode, shape)
    return Split(torch.from_numpy(images), torch.as_tensor(np.asarray(labels), dtype=torch.int64))


def _fetch(parent: Path, download: bool) -> None:
    """Extract the official zip into parent, downloading it first when asked."""
    archive = parent / ARCHIVE
    if download:
        parent.mkdir(parents=True, exist_ok=True)
        try:
            # Skips the download when a file with the right md5 is already there.
            download_url(URL, str(parent), ARCHIVE, ARCHIVE_MD5)
        except (RuntimeError, URLError, OSError) as error:
            raise DatasetNotFoundError(
                f"tinyimagenet: download of {URL} into {parent} failed ({error})"
            ) from error
    if archive.is_file():
        if not check_integrity(archive, ARCHIVE_MD5):
            raise DatasetCorruptError(
                f"tinyimagenet: {archive} fails its md5 check ({ARCHIVE_MD5}); "
                f"delete it and run again with --download (or fetch {URL} again)"
            )
        safe_extract(archive, parent)


def _check_files(folder: Path, parent: Path) -> None:
    needed = [folder / "wnids.txt", folder / "train", folder / "val" / "val_annotations.txt"]
    missing = [str(path.relative_to(folder)) for path in needed if not path.exists()]
    if missing:
        raise DatasetNotFoundError(
            f"tinyimagenet: looked for {', '.join(missing)} in {folder} (and for {ARCHIVE} in "
            f"{parent}); pass --download to fetch {URL} (248 MB, md5 {ARCHIVE_MD5}), "
            f"or download and unzip it into {parent}"
        )

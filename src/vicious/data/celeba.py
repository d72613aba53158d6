"""CelebA as a multi-attribute task, read by torchvision's CelebA class.

Files (torchvision's layout): <root>/celeba/ holding list_attr_celeba.txt,
identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt,
list_eval_partition.txt and the folder img_align_celeba/ of 178×218 JPEGs; root is
--data-root, else <cache>/celeba. torchvision checks the annotation files' md5.
An img_align_celeba.zip left in the folder is extracted (safely) on first use.

Splits: the official train / valid / test partition (162,770 / 19,867 / 19,962).
Attributes: a subset of the 40 chosen by `attributes` (see resolve_attributes).
Images: uint8 N×3×S×S, the whole aligned face resized to S×S (antialiased
bilinear; the original authors' CelebA pipeline also resizes without cropping).
Decoding ~200k JPEGs is slow, so the decoded arrays are cached as .npy files.
Labels: float32 (N, K) with values 0/1.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CelebA
from torchvision.datasets.utils import check_integrity, download_file_from_google_drive

from .archives import safe_extract
from .cache import cached_array, short_hash
from .errors import DatasetCorruptError, DatasetNotFoundError, resolve_data_root
from .images import decode_all, pil_to_array
from .types import DatasetInfo, SourceData, Split

NAMES = ("celeba",)
NUM_ATTRIBUTES = 40
IMAGES_DIR = "img_align_celeba"
IMAGES_ZIP = "img_align_celeba.zip"
DRIVE_FOLDER = "https://drive.google.com/drive/folders/0B7EVK8r0v71pWEZsZE9oNnFzTm8"

# The attribute sets of docs/method.md, "CelebA attribute sets" (indices into
# list_attr_celeba.txt), exactly as written there;
# they grow nearly nested (K=7 lacks 19 and K=15 lacks 11, which smaller sets have).
ATTRIBUTE_SETS: dict[int, tuple[int, ...]] = {
    1: (31,),
    2: (8, 31),
    3: (8, 20, 31),
    4: (2, 8, 20, 31),
    5: (2, 8, 19, 20, 31),
    6: (2, 8, 18, 19, 20, 31),
    7: (2, 8, 18, 20, 31, 36, 39),
    8: (2, 8, 18, 20, 31, 33, 36, 39),
    9: (2, 8, 18, 19, 20, 31, 33, 36, 39),
    10: (2, 8, 11, 18, 19, 20, 31, 33, 36, 39),
    15: (1, 2, 6, 7, 8, 18, 19, 20, 21, 25, 27, 31, 33, 36, 39),
    20: (1, 2, 3, 6, 7, 8, 11, 18, 19, 20, 21, 24, 25, 27, 31, 32, 33, 34, 36, 39),
    30: (0, 1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 15, 18, 19, 20, 21, 23, 24, 25, 27, 28,
         31, 32, 33, 34, 36, 37, 38, 39),
    40: tuple(range(NUM_ATTRIBUTES)),
}

Attributes = str | Sequence[int | str] | None


def celeba_attribute_set(k: int) -> list[int]:
    """The attribute indices of the set of size k (k in 1..10, 15, 20, 30, 40) of
    docs/method.md, "CelebA attribute sets"."""
    if isinstance(k, bool) or not isinstance(k, int) or k not in ATTRIBUTE_SETS:
        valid = ", ".join(str(size) for size in ATTRIBUTE_SETS)
        raise ValueError(f"no CelebA attribute set of size {k!r}; valid sizes: {valid}")
    return list(ATTRIBUTE_SETS[k])


def resolve_attributes(attributes: Attributes, names: Sequence[str]) -> list[int]:
    """Attribute indices for `attributes`, checked against the file's attribute `names`.

    attributes: None (all 40), a set name "k1".."k10", "k15", "k20", "k30", "k40",
    or a list of indices (0–39) and/or attribute names from list_attr_celeba.txt.
    """
    if attributes is None:
        return list(range(len(names)))
    if isinstance(attributes, str):
        text = attributes.strip().lower()
        if not (text.startswith("k") and text[1:].isdigit()):
            raise ValueError(
                f"attribute set {attributes!r} is not of the form 'k<K>' (e.g. 'k10'); "
                "pass a list for a single attribute name"
            )
        return celeba_attribute_set(int(text[1:]))
    indices = []
    for item in attributes:
        if isinstance(item, str):
            if item not in names:
                raise ValueError(f"unknown CelebA attribute {item!r}; known: {', '.join(names)}")
            indices.append(list(names).index(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(names):
                raise ValueError(f"CelebA attribute index {item} is outside 0..{len(names) - 1}")
            indices.append(int(item))
        else:
            raise ValueError(f"CelebA attributes are indices or names, got {item!r}")
    if not indices:
        raise ValueError("the list of CelebA attributes is empty")
    if len(set(indices)) != len(indices):
        raise ValueError(f"CelebA attributes repeat: {list(attributes)}")
    return indices


def load(
    name: str,
    *,
    root: str | None,
    download: bool,
    image_size: int,
    cache: Path,
    attributes: Attributes = None,
) -> SourceData:
    """Load CelebA's official train / valid / test splits with the chosen attributes."""
    tv_root, source = resolve_data_root(root, download, cache / "celeba")
    folder = tv_root / CelebA.base_folder
    if download:
        _download(folder)
    if not (folder / IMAGES_DIR).is_dir() and (folder / IMAGES_ZIP).is_file():
        safe_extract(folder / IMAGES_ZIP, folder)
    _check_files(folder, tv_root)

    transform = functools.partial(pil_to_array, size=image_size)
    parts = {
        split: CelebA(str(tv_root), split=split, target_type="attr", transform=transform)
        for split in ("train", "valid", "test")
    }
    # The header line ends with a space, which the csv reader turns into an empty name.
    names = [attr for attr in parts["train"].attr_names if attr]
    selected = resolve_attributes(attributes, names)
    splits = {
        split: _to_split(dataset, selected, image_size, cache, source, split)
        for split, dataset in parts.items()
    }
    info = DatasetInfo(
        name="celeba",
        num_outputs=len(selected),
        channels=3,
        task="multilabel",
        output_names=tuple(names[index] for index in selected),
    )
    return SourceData(
        info=info, train=splits["train"], val=splits["valid"], test=splits["test"], source=source
    )


def _to_split(
    dataset: CelebA, selected: list[int], image_size: int, cache: Path, source: str, split: str
) -> Split:
    # The file list is part of the key, so a changed partition file is never served stale.
    key = short_hash(source, "\n".join(dataset.filename))
    path = cache / "decoded" / f"celeba-{split}-s{image_size}-{key}.npy"
    shape = (len(dataset), 3, image_size, image_size)
    folder = Path(dataset.root) / dataset.base_folder / IMAGES_DIR

    def decode() -> np.ndarray:
        return decode_all(
            len(dataset), lambda i: dataset[i][0], image_size,
            name_of=lambda i: str(folder / dataset.filename[i]),
            fix=f"extract {IMAGES_ZIP} again (or download it again from {DRIVE_FOLDER})",
        )

    images = cached_array(path, decode, shape)
    # torchvision maps the file's -1/1 to 0/1 (older versions returned -1/1): > 0 covers both.
    labels = (dataset.attr[:, selected] > 0).to(torch.float32)
    return Split(torch.from_numpy(images), labels)


def _download(folder: Path) -> None:
    """torchvision's Google Drive download of each file (md5-checked), without re-fetching."""
    for file_id, md5, filename in CelebA.file_list:
        if filename == IMAGES_ZIP and (folder / IMAGES_DIR).is_dir():
            continue
        try:
            download_file_from_google_drive(file_id, str(folder), filename, md5)
        except (RuntimeError, OSError) as error:
            raise DatasetNotFoundError(
                f"celeba: downloading {filename} into {folder} failed ({error}); Google Drive "
                f"often refuses (daily quota): download the files by hand from {DRIVE_FOLDER} "
                f"into {folder}"
            ) from error


def _check_files(folder: Path, root: Path) -> None:
    """The five annotation files (md5-checked) and the image folder."""
    annotations = [(file, md5) for _, md5, file in CelebA.file_list if file != IMAGES_ZIP]
    missing = [file for file, _ in annotations if not (folder / file).is_file()]
    if not (folder / IMAGES_DIR).is_dir():
        missing.append(f"{IMAGES_DIR}/ (or {IMAGES_ZIP})")
    if missing:
        hint = ""
        if (root / "list_attr_celeba.txt").is_file():
            hint = f" (found list_attr_celeba.txt in {root} itself: pass its parent as --data-root)"
        raise DatasetNotFoundError(
            f"celeba: looked for {', '.join(missing)} in {folder}{hint}; pass --download to let "
            "torchvision fetch them from Google Drive (needs `pip install gdown`), or download "
            f"Anno/*.txt, Eval/list_eval_partition.txt and Img/{IMAGES_ZIP} from {DRIVE_FOLDER} "
            f"into {folder} (Kaggle's jessicali9530/celeba-dataset has the same images, but "
            "its annotations are CSV: take the .txt files from Drive)"
        )
    corrupt = [file for file, md5 in annotations if not check_integrity(folder / file, md5)]
    if corrupt:
        raise DatasetCorruptError(
            f"celeba: md5 checksum mismatch for {', '.join(corrupt)} in {folder}; "
            f"download {'it' if len(corrupt) == 1 else 'them'} again from {DRIVE_FOLDER}"
        )

"""MNIST and Fashion-MNIST, read by torchvision's MNIST / FashionMNIST classes.

torchvision reads the uncompressed IDX files in <root>/<ClassName>/raw/. Files
that exist only gzip-compressed (the Debian package, the embedded subset, a
--data-root holding the .gz files) are decompressed into that layout in the cache
directory, so every source goes through the same torchvision code.

Where Fashion-MNIST is looked for when no --data-root is given, in order:
  1. the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist);
  2. <cache>/fashion-mnist (a previous download), downloading there if asked;
  3. the embedded subset shipped with this package (9k train, 2k test; see
     scripts/make_embedded_dataset.py), so that examples run with no data at all.
MNIST: <cache>/mnist, downloading there if asked.
Images: uint8 N×1×S×S (28→S antialiased bilinear); labels int64 class indices 0–9.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from urllib.error import URLError

import torch
from torchvision.datasets import MNIST, FashionMNIST
from torchvision.datasets.utils import calculate_md5

from .cache import load_json, save_bytes, save_json, short_hash
from .errors import DatasetCorruptError, DatasetNotFoundError, check_data_root
from .idx import check_idx, parse_idx
from .images import resize_images
from .types import DatasetInfo, SourceData, Split

NAMES = ("mnist", "fashion-mnist")
# docs/method.md, "Splits": 50k/10k of the official 60k training images.
VAL_FRACTION = 10_000 / 60_000

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CLASSES: dict[str, type[MNIST]] = {"mnist": MNIST, "fashion-mnist": FashionMNIST}


def load(
    name: str,
    *,
    root: str | None,
    download: bool,
    image_size: int,
    cache: Path,
    attributes: object = None,
) -> SourceData:
    """Load the official train and test sets of "mnist" or "fashion-mnist"."""
    dataset_class = _CLASSES[name]
    tv_root, source = _locate(name, dataset_class, root, download, cache)
    _check_raw(tv_root / dataset_class.__name__ / "raw", name)
    _refuse_legacy_files(tv_root / dataset_class.__name__ / "processed", name)
    train = dataset_class(str(tv_root), train=True)
    test = dataset_class(str(tv_root), train=False)
    info = DatasetInfo.multiclass(name, dataset_class.classes, channels=1)
    return SourceData(info, _to_split(train, image_size), _to_split(test, image_size), source=source)


def _refuse_legacy_files(processed: Path, name: str) -> None:
    # torchvision prefers old processed/*.pt pickles over the raw IDX files when both exist;
    # we read only the raw files, so such pickles are neither trusted nor silently used.
    legacy = sorted(processed.glob("*.pt")) if processed.is_dir() else []
    if legacy:
        raise DatasetCorruptError(
            f"{processed} holds legacy torchvision pickles ({', '.join(p.name for p in legacy)}) that would "
            f"replace the raw {name} files; remove that processed/ folder (the raw IDX files are enough)"
        )


def _to_split(dataset: MNIST, image_size: int) -> Split:
    images = resize_images(dataset.data.unsqueeze(1).contiguous(), image_size)
    return Split(images, dataset.targets.to(torch.int64))


def _has_files(directory: Path, suffix: str = "") -> bool:
    return all((directory / f"{file}{suffix}").is_file() for file in RAW_FILES)


def _locate(
    name: str, dataset_class: type[MNIST], root: str | None, download: bool, cache: Path
) -> tuple[Path, str]:
    """Find the data: (torchvision root holding <ClassName>/raw/, source string)."""
    class_name = dataset_class.__name__
    given = check_data_root(root, download)
    if given is not None:
        raw = given / class_name / "raw"
        if _has_files(raw):
            return given, f"root:{given}"
        for gz_dir in (raw, given):
            if _has_files(gz_dir, ".gz"):
                staged = cache / "staged" / f"{name}-{short_hash(gz_dir.resolve())}"
                fix = "replace it with a good copy, or pass --download with an empty --data-root"
                return _stage(gz_dir, staged, class_name, fix), f"root:{given}"
        if download:
            return _download(name, dataset_class, given), f"root:{given}"
        raise _not_found(name, dataset_class, [raw, given])

    if name == "fashion-mnist" and _has_files(DEBIAN_FASHION_MNIST, ".gz"):
        fix = "reinstall it: apt-get install --reinstall dataset-fashion-mnist"
        staged = _stage(DEBIAN_FASHION_MNIST, cache / "debian", class_name, fix)
        return staged, f"debian:{DEBIAN_FASHION_MNIST}"

    cached = cache / name
    if _has_files(cached / class_name / "raw") or download:
        if download:
            _download(name, dataset_class, cached)
        return cached, f"cache:{cached}"

    if name == "fashion-mnist" and _has_files(EMBEDDED_DIR, ".gz"):
        fix = "reinstall vicious (or regenerate it with scripts/make_embedded_dataset.py)"
        checksums = _read_md5sums(EMBEDDED_DIR / "MD5SUMS")
        return _stage(EMBEDDED_DIR, cache / "embedded", class_name, fix, checksums), "embedded"

    looked = [cached / class_name / "raw"]
    if name == "fashion-mnist":
        looked = [DEBIAN_FASHION_MNIST, *looked, EMBEDDED_DIR]
    raise _not_found(name, dataset_class, looked)


def _not_found(name: str, dataset_class: type[MNIST], looked: list[Path]) -> DatasetNotFoundError:
    places = ", ".join(str(path) for path in looked)
    return DatasetNotFoundError(
        f"{name}: looked for {', '.join(RAW_FILES)} (or the same names ending in .gz) in {places}; "
        f"pass --download to let torchvision fetch them from {dataset_class.mirrors[0]}, "
        "or point --data-root at a directory holding them"
    )


def _download(name: str, dataset_class: type[MNIST], tv_root: Path) -> Path:
    """torchvision's own download (md5-checked) into <tv_root>/<ClassName>/raw/."""
    try:
        dataset_class(str(tv_root), train=True, download=True)
    except (RuntimeError, URLError, OSError) as error:
        raise DatasetNotFoundError(
            f"{name}: download into {tv_root / dataset_class.__name__ / 'raw'} failed ({error}); "
            "check the network, or copy the four IDX files there by hand"
        ) from error
    return tv_root


def _read_md5sums(path: Path) -> dict[str, str]:
    """Parse an `md5sum` listing: {file name: md5}."""
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            md5, file = line.split(maxsplit=1)
            sums[file.lstrip("*")] = md5
    return sums


def _stage(
    gz_dir: Path, tv_root: Path, class_name: str, fix: str, checksums: dict[str, str] | None = None
) -> Path:
    """Decompress gz_dir's four .gz IDX files into <tv_root>/<class_name>/raw/.

    Skipped when a stamp shows the same source files (path, size, mtime) were
    staged before. Each source is checked (md5 when known, gzip CRC, IDX header
    against size) and a bad one is named with `fix`.
    """
    raw = tv_root / class_name / "raw"
    stamp_path = raw / "staged-from.json"
    stamp = {}
    for file in RAW_FILES:
        source = gz_dir / f"{file}.gz"
        status = source.stat()
        stamp[file] = [str(source.resolve()), status.st_size, status.st_mtime_ns]
    if load_json(stamp_path) == stamp and _has_files(raw):
        return tv_root

    raw.mkdir(parents=True, exist_ok=True)
    for file in RAW_FILES:
        source = gz_dir / f"{file}.gz"
        if checksums is not None and calculate_md5(source) != checksums.get(source.name):
            raise DatasetCorruptError(f"{source}: md5 checksum mismatch; {fix}")
        try:
            data = gzip.decompress(source.read_bytes())
            parse_idx(data, str(source))
        except (EOFError, OSError, zlib.error, DatasetCorruptError) as error:
            raise DatasetCorruptError(f"{source} is corrupt ({error}); {fix}") from error
        # A temporary file per writer: processes staging at once (the demo's, a sweep's) must
        # not write into one shared temporary file, and rename a half-written one into place.
        save_bytes(raw / file, data)
    save_json(stamp_path, stamp)
    return tv_root


def _check_raw(raw: Path, name: str) -> None:
    """Check the uncompressed IDX files torchvision will read (sizes and counts)."""
    fix = f"delete {raw} and run again with --download (or copy good files there)"
    shapes = {}
    for file in RAW_FILES:
        try:
            shapes[file] = check_idx(raw / file)
        except DatasetCorruptError as error:
            raise DatasetCorruptError(f"{name}: {error}; {fix}") from error
    for part in ("train", "t10k"):
        images, labels = shapes[f"{part}-images-idx3-ubyte"], shapes[f"{part}-labels-idx1-ubyte"]
        if len(images) != 3 or len(labels) != 1 or images[0] != labels[0]:
            raise DatasetCorruptError(
                f"{name}: {raw}/{part}-images-idx3-ubyte has shape {images} but "
                f"{part}-labels-idx1-ubyte has shape {labels}; {fix}"
            )

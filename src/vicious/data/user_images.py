"""A practitioner's own images for an audit: a folder of image files or an .npz file.

Layouts: a folder of class folders (torchvision's ImageFolder; image files directly in each
non-hidden subfolder, deeper folders ignored) labels each image by its folder: by the folder's
number when every name is a non-negative integer ("0".."9"), else by the index of its name in
sorted order (``class_names``). A folder of image files only is unlabelled. An .npz holds
``images`` (N, H, W), (N, C, H, W) (read so when dim 1 is 1 or 3) or (N, H, W, C), C 1 or 3,
uint8 or float in [0, 1], and optionally ``labels``, (N,) integers. Image files are .png .jpg
.jpeg .bmp .gif .webp .tif .tiff; other and hidden files are skipped. Images come out float32
N×C×S×S in [0, 1], with the model's C (PIL's "L"/"RGB"; for npz ITU-R 601 luma or repetition),
squashed to S×S by antialiased bilinear resizing (PIL's for files, torch's for npz).

The folder or file may come from someone else, so it is read within bounds: a symlink that
resolves outside the folder is refused, at most ``max_entries`` directory entries are scanned,
an image of more than MAX_PIXELS (64 Mi) pixels is refused before it is decoded, an .npz whose
members inflate to more than ``max_bytes`` (or whose array headers claim more than a member holds)
is refused before numpy loads it, and object arrays are never unpickled. Of more than
``max_images`` images a seeded random subset is kept, picked before anything is decoded. Every
refusal is a one-line ValueError naming the problem and the fix.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vicious.files import format_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PIXELS = 64 * 1024 * 1024  # below PIL's own bomb warning (89 M), so an accepted image never warns
MAX_ENTRIES = 1_000_000
MAX_NPZ_BYTES = 4 * 2**30
_RESIZE_CHUNK = 4096  # images interpolated at a time, to bound torch's buffers
_EXTENSIONS = " ".join(IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class UserImages:
    """images: float32 N×C×S×S in [0, 1]; labels: int64 (N,) or None (unlabelled); class_names[i]
    names label i when labels are indices of sorted folder names (None otherwise); source: where
    the images came from, for messages and reports."""

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    source: str


def load_user_images(path: str | os.PathLike[str], *, channels: int, image_size: int, num_classes: int | None = None,
                     max_images: int = 20000, seed: int = 0, max_bytes: int = MAX_NPZ_BYTES,
                     max_entries: int = MAX_ENTRIES) -> UserImages:
    """A folder or an .npz file (see the module docstring) as float32 N×channels×image_size×image_size
    images in [0, 1] with int64 (N,) labels or None; N <= max_images. ``num_classes``, the model's K,
    bounds labels to 0..K-1. Raises FileNotFoundError for a missing path, else one-line ValueErrors."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3 (the model's input channels), not {channels}")
    if image_size < 1 or max_images < 2 or (num_classes is not None and num_classes < 1):
        raise ValueError(f"need image_size >= 1, max_images >= 2, num_classes >= 1: not {image_size}, {max_images}, {num_classes}")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder; give a folder of images or an .npz file")
    if root.is_dir():
        return _load_folder(root, channels, image_size, num_classes, max_images, seed, max_entries)
    if root.suffix.lower() == ".npz":
        return _load_npz(root, channels, image_size, num_classes, max_images, seed, max_bytes)
    raise ValueError(f"{root}: neither a folder nor an .npz file; give a folder of images or an .npz file")


def _load_folder(root: Path, channels: int, size: int, num_classes: int | None,
                 max_images: int, seed: int, max_entries: int) -> UserImages:
    real_root = os.path.realpath(root)
    scanned = 0

    def scan(folder: Path) -> tuple[list[str], list[str]]:
        """The non-hidden subfolders and image files directly in folder, sorted by name."""
        nonlocal scanned
        folders, files = [], []
        try:
            entries = os.scandir(folder)
        except OSError as error:
            raise ValueError(f"{folder}: cannot be listed ({_line(error)}); check its permissions") from error
        with entries:
            for entry in entries:
                scanned += 1
                if scanned > max_entries:
                    raise ValueError(f"{root}: more than {max_entries:,} directory entries; give a smaller folder or raise max_entries")
                if entry.name.startswith("."):
                    continue
                target = os.path.realpath(entry.path) if entry.is_symlink() else real_root
                if os.path.commonpath([real_root, target]) != real_root:
                    raise ValueError(f"{entry.path}: refusing a symlink to {target}, outside {root}; copy the file in or remove the link")
                if entry.is_dir():
                    folders.append(entry.name)
                elif entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(entry.name)  # is_file(): never a FIFO or device, which could block
        return sorted(folders), sorted(files)

    folders, files = scan(root)
    if folders and files:
        raise ValueError(f"{root}: holds both image files and subfolders; choose one layout: "
                         "one subfolder of images per class, or only image files (unlabelled)")
    paths = [root / name for name in files]
    labels: list[int] = []
    class_names: list[str] | None = None
    if folders:
        numeric = all(re.fullmatch(r"[0-9]+", name) for name in folders)
        class_names = None if numeric else folders
        label_of = {name: int(name) if numeric else i for i, name in enumerate(folders)}
        if len(set(label_of.values())) < len(folders):
            raise ValueError(f"{root}: two class folders name the same label (such as '7' and '07'); merge them")
        if num_classes is not None and not numeric and len(folders) > num_classes:
            raise ValueError(f"{root}: {len(folders)} class folders but the model has {num_classes} classes; keep at most "
                             f"{num_classes} (labels are indices of the sorted folder names)")
        for name in folders:
            if label_of[name] >= (num_classes or 2**31):
                bound = f"the model has {num_classes} classes (0..{num_classes - 1})" if num_classes else "labels stop at 2**31"
                raise ValueError(f"{root / name}: label {label_of[name]} but {bound}; rename or remove the folder")
            names = scan(root / name)[1]
            if not names:
                raise ValueError(f"{root / name}: class folder holds no images ({_EXTENSIONS}); add images or remove it")
            paths += [root / name / file for file in names]
            labels += [label_of[name]] * len(names)
    if len(paths) < 2:
        raise ValueError(f"{root}: found {len(paths)} images ({_EXTENSIONS}); an audit needs at least 2")
    chosen = _subset(len(paths), max_images, seed)
    out = np.empty((len(chosen), channels, size, size), dtype=np.uint8)

    def work(k: int) -> None:
        out[k] = _decode(paths[chosen[k]], "L" if channels == 1 else "RGB", size)

    # Threads: PIL releases the GIL while decoding. list() re-raises the first error here, and
    # cancel_futures drops the files not yet started instead of decoding them for nothing.
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        list(pool.map(work, range(len(chosen))))
    finally:
        pool.shutdown(cancel_futures=True)
    kind = f"{len(folders)} classes" if folders else "unlabelled"
    return UserImages(torch.from_numpy(out).float().div_(255),
                      torch.tensor([labels[i] for i in chosen], dtype=torch.int64) if folders else None,
                      class_names, f"folder {os.path.join(root, '')} ({kind}, {_count(chosen, len(paths))})")


def _decode(path: Path, mode: str, size: int) -> np.ndarray:
    """One image file → uint8 C×size×size; its size is checked before its pixels are decoded."""
    try:
        with Image.open(path) as image:  # reads the header only
            if image.size[0] * image.size[1] > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{image.size[0]}×{image.size[1]}")
            converted = image.convert(mode)  # decodes
            if converted.size != (size, size):
                converted = converted.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(converted, dtype=np.uint8).reshape(size, size, -1).transpose(2, 0, 1)
    except Image.DecompressionBombError as error:  # ours, or PIL's own at twice Image.MAX_IMAGE_PIXELS
        raise ValueError(f"{path}: more than {MAX_PIXELS:,} pixels ({_line(error)}); downscale or remove it") from error
    except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for a damaged or unknown file
        raise ValueError(f"{path}: cannot be decoded as an image ({_line(error)}); replace or remove it") from error


def _load_npz(path: Path, channels: int, size: int, num_classes: int | None,
              max_images: int, seed: int, max_bytes: int) -> UserImages:
    headers: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:  # the headers only: a few bytes of each array we will load
                if info.filename in ("images.npy", "labels.npy"):
                    with archive.open(info) as handle:
                        version = np.lib.format.read_magic(handle)
                        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                        shape, _, dtype = read(handle)
                    headers[info.filename[:-4]] = (shape, dtype, info.file_size)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({_line(error)}); write it with numpy.savez") from error
    total = sum(info.file_size for info in infos)
    if total > max_bytes:
        raise ValueError(f"{path}: inflates to {format_bytes(total)}, more than max_bytes = {format_bytes(max_bytes)}; "
                         "save fewer images or raise max_bytes")
    if "images" not in headers:
        names = ", ".join(info.filename.removesuffix(".npy") for info in infos) or "none"
        raise ValueError(f"{path}: no 'images' array (it has: {names}); save with numpy.savez(path, images=...)")
    for name, (shape, dtype, stored) in headers.items():
        if dtype.hasobject:
            raise ValueError(f"{path}: '{name}' is an object array, which is never unpickled; save a numeric array")
        if math.prod(shape) * dtype.itemsize > stored:
            raise ValueError(f"{path}: '{name}' claims shape {shape} of {dtype}, more than its {stored} bytes; write it again")
    try:
        with np.load(path, allow_pickle=False) as data:
            images = data["images"]
            labels = data["labels"] if "labels" in headers else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: cannot load its arrays ({_line(error)}); write it with numpy.savez") from error

    shape = images.shape
    if images.ndim == 4 and shape[1] not in (1, 3) and shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)  # N×H×W×C
    elif images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3) or 0 in images.shape[2:]:
        raise ValueError(f"{path}: images of shape {shape}; save (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3")
    if len(images) < 2:
        raise ValueError(f"{path}: holds {len(images)} images; an audit needs at least 2")
    if np.issubdtype(images.dtype, np.floating):
        low, high = float(images.min()), float(images.max())
        if not (low >= 0 and high <= 1):  # also catches NaN
            raise ValueError(f"{path}: float images range over [{low:g}, {high:g}], not [0, 1]; divide 0..255 values by 255")
    elif images.dtype != np.uint8:
        raise ValueError(f"{path}: images of dtype {images.dtype}; save uint8 0..255 or float in [0, 1]")
    if labels is not None:
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{path}: labels of shape {labels.shape} and dtype {labels.dtype}; save ({len(images)},) "
                             "integer class indices, one per image")
        labels = labels.astype(np.int64)  # uint64 beyond int64 turns negative, refused below
        if labels.min() < 0:
            raise ValueError(f"{path}: negative label {labels.min()}; save class indices 0, 1, ...")
        if num_classes is not None and labels.max() >= num_classes:
            raise ValueError(f"{path}: label {labels.max()} but the model has {num_classes} classes (0..{num_classes - 1}); "
                             "save labels the model predicts")

    chosen = _subset(len(images), max_images, seed)
    x = torch.from_numpy(np.ascontiguousarray(images if len(chosen) == len(images) else images[chosen])).float()
    x = x.div_(255) if images.dtype == np.uint8 else x
    if x.shape[1] == 3 and channels == 1:
        x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # ITU-R 601 luma, as PIL's "L"
    if x.shape[-2:] != (size, size):
        x = torch.cat([F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                       for chunk in x.split(_RESIZE_CHUNK)])
    x = x.expand(-1, channels, -1, -1).clamp(0, 1).contiguous()  # 1 → 3 repeats; clamp: rounding past 1
    return UserImages(x, None if labels is None else torch.from_numpy(labels[chosen]), None,
                      f"file {path} ({'un' if labels is None else ''}labelled, {_count(chosen, len(images))})")


def _subset(count: int, max_images: int, seed: int) -> list[int]:
    """Indices 0..count-1, or a seeded random max_images of them (in order) when count exceeds it."""
    if count <= max_images:
        return list(range(count))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(count, generator=generator)[:max_images].tolist())


def _count(chosen: list[int], total: int) -> str:
    return f"{total} images" if len(chosen) == total else f"{len(chosen)} of {total} images"


def _line(error: BaseException) -> str:
    """An error's message on one line, bounded."""
    return " ".join(str(error).split())[:200] or type(error).__name__

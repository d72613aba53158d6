"""Image conversion shared by the loaders: resizing, decoding files in threads.

Both resizers use antialiased bilinear interpolation (torchvision's tensor resize
with antialias=True is built to match PIL's), done once at load time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .errors import DatasetCorruptError

# Resize this many images at a time to bound the float buffers torch allocates.
_RESIZE_CHUNK = 8192


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 N×C×H×W images to N×C×size×size (antialiased bilinear); uint8 out."""
    if images.shape[-2:] == (size, size):
        return images
    chunks = [
        TF.resize(chunk, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        for chunk in images.split(_RESIZE_CHUNK)
    ]
    return torch.cat(chunks) if chunks else images.new_empty((0, images.shape[1], size, size))


def hwc_to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×C (or N×H×W) numpy images → uint8 N×C×H×W tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim == 3:
        return tensor.unsqueeze(1)
    return tensor.permute(0, 3, 1, 2).contiguous()


def pil_to_array(image: Image.Image, size: int) -> np.ndarray:
    """A PIL image → uint8 3×size×size RGB array.

    Grayscale (and palette, CMYK) images are converted to RGB rather than rejected:
    TinyImageNet has a few grayscale JPEGs. The whole image is resized to a square
    (CelebA's 178×218 faces get squashed, as in the original authors' pipeline).
    """
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def decode_all(
    count: int,
    decode_one: Callable[[int], np.ndarray],
    size: int,
    name_of: Callable[[int], str],
    fix: str,
) -> np.ndarray:
    """Call decode_one(i) for i in range(count) in threads; stack into uint8 count×3×size×size.

    JPEG decoding and PIL resizing release the GIL, so threads give a real speed-up
    without the start-up cost of processes. A file that is missing or cannot be
    decoded raises DatasetCorruptError naming it (name_of(i)) and the `fix`.
    """
    out = np.empty((count, 3, size, size), dtype=np.uint8)

    def work(index: int) -> None:
        try:
            out[index] = decode_one(index)
        except (OSError, SyntaxError, ValueError) as error:
            # PIL raises OSError (also when truncated), SyntaxError or ValueError on bad files.
            raise DatasetCorruptError(f"{name_of(index)}: cannot be decoded ({error}); {fix}") from error

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # list() re-raises the first decoding error here, in the caller.
        list(pool.map(work, range(count)))
    return out


def decode_file(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """Decode one image file to uint8 3×size×size RGB."""
    with Image.open(path) as image:
        return pil_to_array(image, size)

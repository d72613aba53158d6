"""Shared helpers for the metrics tests: real Fashion-MNIST images (IDX format)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx_images(path: Path, count: int) -> np.ndarray:
    """The first ``count`` images of an IDX3 ``.gz`` file as float64 in [0, 1], (count, 28, 28)."""
    with gzip.open(path, "rb") as f:
        magic, n, h, w = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, f"{path} is not an IDX3 image file"
        count = min(count, n)
        raw = f.read(count * h * w)
    return np.frombuffer(raw, dtype=np.uint8).reshape(count, h, w).astype(np.float64) / 255.0


def _load(name: str, count: int) -> np.ndarray:
    path = FMNIST_DIR / name
    if not path.exists():
        pytest.skip(f"real Fashion-MNIST images not found at {path}")
    return read_idx_images(path, count)


@pytest.fixture(scope="session")
def fmnist_test() -> np.ndarray:
    """64 real Fashion-MNIST test images, (64, 28, 28) float64 in [0, 1]."""
    return _load("t10k-images-idx3-ubyte.gz", 64)


@pytest.fixture(scope="session")
def fmnist_train() -> np.ndarray:
    """3000 real Fashion-MNIST training images, (3000, 28, 28) float64 in [0, 1]."""
    return _load("train-images-idx3-ubyte.gz", 3000)


@pytest.fixture(autouse=True)
def _single_torch_thread():
    """Run each metrics test with one torch thread, then restore the setting.

    On a loaded 2-core machine, torch's spinning OpenMP workers starve both
    torch and numpy BLAS calls (a 1024×1024 eigh went from 0.3 s to 10-18 s);
    the metrics tests are small enough that one thread is the fastest choice.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

"""The IDX file format of MNIST and Fashion-MNIST: checking, reading, writing.

torchvision's MNIST classes do the actual reading for training; this module checks
files before torchvision sees them (torchvision fails on a truncated file with an
unhelpful reshape error) and writes IDX files for the embedded subset and for tests.

Layout: 2 zero bytes, a type byte (0x08 = uint8), a byte with the number of
dimensions d, d big-endian uint32 sizes, then the values, row-major.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .errors import DatasetCorruptError

UINT8 = 0x08


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes into a uint8 array, raising DatasetCorruptError when malformed."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != UINT8 or not 1 <= data[3] <= 3:
        raise DatasetCorruptError(f"{name}: not a uint8 IDX file (bad header)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetCorruptError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DatasetCorruptError(
            f"{name}: IDX file has {len(data)} bytes, its header {shape} says {expected}"
            + (" (truncated)" if len(data) < expected else "")
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (plain or .gz) as a uint8 array.

    Raises DatasetCorruptError naming the file when it is truncated or malformed
    (including a damaged gzip stream).
    """
    path = Path(path)
    try:
        with _open(path) as handle:
            data = handle.read()
    except (EOFError, gzip.BadGzipFile, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise DatasetCorruptError(f"{path}: cannot be read ({error})") from error
    return parse_idx(data, str(path))


def check_idx(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The shape in an uncompressed IDX file's header, after checking the file size matches.

    Reads only the header, so checking 47 MB of images costs nothing.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 3:
        raise DatasetCorruptError(f"{path}: not a uint8 IDX file (bad header)")
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise DatasetCorruptError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + int(np.prod(shape))
    size = path.stat().st_size
    if size != expected:
        raise DatasetCorruptError(
            f"{path}: IDX file has {size} bytes, its header {shape} says {expected}"
            + (" (truncated)" if size < expected else "")
        )
    return shape


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array (1 to 3 dimensions) as IDX bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if not 1 <= array.ndim <= 3:
        raise ValueError(f"IDX arrays have 1 to 3 dimensions, got {array.ndim}")
    header = bytes([0, 0, UINT8, array.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape
    )
    return header + array.tobytes()


def write_idx_gz(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write `array` as a gzip-compressed IDX file, byte-for-byte reproducibly (mtime 0)."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(idx_bytes(array))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write `array` as an uncompressed IDX file."""
    Path(path).write_bytes(idx_bytes(array))

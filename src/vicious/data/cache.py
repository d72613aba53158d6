"""The cache directory: staged raw files, decoded image arrays, dataset statistics.

Location: the `cache_dir` argument, else the VICIOUS_CACHE environment variable,
else ~/.cache/vicious. Everything here can be deleted; it is rebuilt on demand.
Arrays are stored as .npy and read with allow_pickle=False (never pickle).
Writes go to a temporary file of the writer's own, fsynced and renamed into place
(``vicious.files.atomic_write``), so that runs sharing a cache never read a
half-written file and a link planted in the cache is replaced, not written through.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vicious.files import atomic_write

ENV_VAR = "VICIOUS_CACHE"
DEFAULT_CACHE = Path("~/.cache/vicious")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory to use (not created here)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_CACHE.expanduser()


def short_hash(*parts: object) -> str:
    """A short, stable digest of `parts`, used to key cache files."""
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def save_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, through a temporary file of this writer's own."""
    atomic_write(path, lambda handle: handle.write(data))


def save_array(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` (.npy) atomically."""
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def load_array(path: Path) -> np.ndarray | None:
    """The array stored at `path`, or None when absent or unreadable (then it is rebuilt)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def cached_array(
    path: Path, build: Callable[[], np.ndarray], shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """Load the array at `path`, or build it with `build()` and store it there.

    A stored array of another shape than `shape` (when given) is stale and rebuilt.
    """
    array = load_array(path)
    if array is None or (shape is not None and array.shape != tuple(shape)):
        array = build()
        save_array(path, array)
    return array


def save_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON to `path` atomically."""
    atomic_write(path, lambda handle: handle.write(json.dumps(data, indent=2).encode("utf-8")))


def load_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at `path`, or None when absent or unreadable."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

"""Errors raised while locating, verifying or reading datasets.

Every message says which files were looked for, where, and how to get them, so a
user can fix the problem from the message alone.
"""

from __future__ import annotations

import os
from pathlib import Path


class DatasetError(Exception):
    """Base class of the dataset errors (lets the CLI catch them all at once)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset's files are not where they were looked for."""


class DatasetCorruptError(DatasetError, ValueError):
    """A dataset file exists but is truncated, malformed or fails its checksum."""


def check_data_root(root: str | os.PathLike[str] | None, download: bool) -> Path | None:
    """`root` as a Path, after checking that a given --data-root directory exists.

    A missing directory is fine when downloading (the download creates it).
    """
    if root is None:
        return None
    path = Path(root).expanduser().resolve()
    if not path.is_dir() and not download:
        what = "is not a directory" if path.exists() else "does not exist"
        raise DatasetNotFoundError(
            f"data root {path} {what}: pass an existing directory as --data-root, "
            "or add --download to fetch the dataset into it"
        )
    return path


def resolve_data_root(root: str | os.PathLike[str] | None, download: bool, cached: Path) -> tuple[Path, str]:
    """The folder to read a dataset from, and the source string recorded with the run.

    The user's --data-root (checked by `check_data_root`) where one is given, else the
    dataset's folder `cached` under the vicious cache.
    """
    given = check_data_root(root, download)
    if given is not None:
        return given, f"root:{given}"
    return cached, f"cache:{cached}"

"""Result files: written atomically, into folders that can hold them and that lead nowhere else;
read back with bounds."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vicious.files import atomic_write_bytes, format_bytes, probe_writable, read_json

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "check_writable", "read_json",
           "refuse_outside_links"]


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, allow_nan=True) + "\n")


def check_writable(folder: Path, *, min_free_bytes: int = 50 * 2**20) -> None:
    """Fail before training starts if results could not be saved in ``folder``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe_writable(folder)
    except OSError as err:
        raise OSError(f"cannot write to output folder {folder}: {err.strerror or err}; choose another --out") from None
    free = _free_bytes(folder)
    if free is not None and free < min_free_bytes:
        raise OSError(
            f"only {format_bytes(free)} free under {folder}; at least {format_bytes(min_free_bytes)} "
            "are needed for checkpoints and results; free some space or choose another --out"
        )


def refuse_outside_links(folder: Path) -> None:
    """Refuse a folder holding a symbolic link that leads out of it.

    Lightning and the CSV logger write into subfolders (checkpoints/<phase>, logs/<phase>)
    and follow links there: a planted ``checkpoints/joint -> ~`` would have them write and
    delete checkpoints in the user's home. Links that stay inside the folder are harmless.
    """
    folder = Path(folder)
    root = os.path.realpath(folder)
    for parent, dirs, files in os.walk(folder):  # does not descend into linked folders
        for name in (*dirs, *files):
            path = os.path.join(parent, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if os.path.commonpath([root, target]) != root:
                    raise OSError(
                        f"{path} is a symbolic link to {target}, outside {folder}; vicious writes only inside "
                        "its folders: remove the link, or copy what it points to into the folder"
                    )


def _free_bytes(folder: Path) -> int | None:
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return stat.f_bavail * stat.f_frsize

"""Writing result files so that a crash never leaves a half-written one."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # Mode 0o666 less the umask, as open() gives (mkstemp's would be private, 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, allow_nan=True) + "\n")


def check_writable(folder: Path, *, min_free_bytes: int = 50 * 2**20) -> None:
    """Fail before training starts if results could not be saved in ``folder``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise OSError(f"cannot write to output folder {folder}: {err.strerror or err}; choose another --out") from None
    free = _free_bytes(folder)
    if free is not None and free < min_free_bytes:
        raise OSError(
            f"only {free / 2**20:.0f} MiB free under {folder}; at least {min_free_bytes / 2**20:.0f} MiB "
            "are needed for checkpoints and results; free some space or choose another --out"
        )


def _free_bytes(folder: Path) -> int | None:
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return stat.f_bavail * stat.f_frsize

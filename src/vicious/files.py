"""Files written without following links (atomic writes, write probes) and read with bounds.

Every file is first created under a fresh random name with ``O_CREAT | O_EXCL``
(``tempfile.mkstemp``), which never opens an existing file nor follows a symbolic link
planted in the folder; a finished file is then renamed over its destination, which
replaces a link found there instead of writing through it. The data cache and the
experiments' result files both write this way, so this module imports nothing of vicious.
A record someone else may have written (a sweep folder's JSON) is read at most a bounded
number of bytes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only set it, racing other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # not Linux: set and restore
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(handle)``: into a temporary file of this writer's own in
    the same folder, fsynced, then renamed over ``path``. An error or a crash leaves the
    previous file whole and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp's private 0600 would keep colleagues from reading shared results:
            # the mode open() gives a new file.
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_write``)."""
    atomic_write(path, lambda handle: handle.write(data))


def probe_writable(folder: str | os.PathLike[str]) -> None:
    """Create, write and remove a file of this process's own in ``folder``; raises OSError where it cannot.

    A fixed probe name could be a link planted in the folder, and writing it would write
    wherever the link points."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".write-test.")
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        os.unlink(name)


MAX_JSON_BYTES = 16 * 2**20  # a run's JSON records are kilobytes; per_sample data lives in CSV


def read_bounded(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path``, refusing (ValueError) a file over ``max_bytes``: a file someone
    else wrote is read at most that far, whatever size it has or claims."""
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes / 2**20:g} MiB, too large for a {what}")
    return data


def read_json(path: str | os.PathLike[str], max_bytes: int = MAX_JSON_BYTES, what: str = "JSON record") -> object:
    """A JSON file read with ``read_bounded``; a damaged one raises ValueError naming it."""
    data = read_bounded(path, max_bytes, what)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:  # RecursionError: nesting deeper than the parser allows
        raise ValueError(f"{path} is not a readable {what} ({str(err)[:120] or 'nested too deeply'})") from None


def format_bytes(n: float) -> str:
    """A size for a message, in binary units: ``format_bytes(3 << 20) == "3 MiB"``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{int(n)} bytes"

"""One writer per folder: a run or sweep folder is locked while a command writes it.

The lock is flock(2) on ``FOLDER/.lock`` (through filelock): the kernel releases it when
its process ends, however it ends, so a killed process never leaves a folder stuck.
``FOLDER/.lock.json`` says who holds it (pid, host, command, start). That record
alone means nothing: one left by a killed process, with no lock held behind it, is
stale and overwritten by the next writer; whether a folder is in use is always asked
of the lock itself (``holder``).

A process may lock a folder it already holds (``vicious train`` then evaluates the
run); the lock is released when the outermost ``folder_lock`` ends.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from vicious.runs.files import atomic_write_json, check_writable

LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.json"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: filelock's own backend, no probing
    fcntl = None


class FolderInUseError(OSError):
    """Another process holds the folder's lock."""


# Folders this process holds, by resolved path.
_held: set[str] = set()
if hasattr(os, "register_at_fork"):
    # A forked child holds nothing of its own (the lock stays its parent's).
    os.register_at_fork(after_in_child=_held.clear)


def describe_holder(record: dict | None) -> str:
    if not record:
        return "another process (it has not said which yet)"
    command = " ".join(str(record.get("command", "?")).split())
    if len(command) > 160:
        command = command[:157] + "..."
    return (f"pid {record.get('pid', '?')} on {record.get('host', '?')} ({command!r}, "
            f"since {record.get('started', '?')})")


def _read_record(folder: Path) -> dict | None:
    """The holder record, read without following a link or blocking on a pipe planted there."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(folder / HOLDER_FILE, flags)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            record = json.loads(f.read(65536)) if stat.S_ISREG(os.fstat(f.fileno()).st_mode) else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def holder(folder: Path) -> dict | None:
    """Who holds ``folder``'s lock now ({} when it has not said), or None when no process does.

    Asks the lock itself, creating nothing: a holder record left by a killed process does not count."""
    lock_path = Path(folder) / LOCK_FILE
    if fcntl is None or os.path.islink(lock_path):
        return None
    try:
        fd = os.open(lock_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None  # no lock file: never locked
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_record(Path(folder)) or {}
        except OSError:
            return None  # a file system without flock: nothing to ask
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) while the block runs; a folder another
    process holds is refused with a FolderInUseError naming that process."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held:  # an outer folder_lock of this process holds it, and will release it
        yield
        return
    check_writable(folder)
    lock_path = folder / LOCK_FILE
    if os.path.islink(lock_path):  # filelock before 4 opens it with O_TRUNC, through a link
        raise OSError(f"{lock_path} is a symbolic link; vicious writes only inside its folders: remove it")
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FolderInUseError(
            f"{folder} is in use by {describe_holder(_read_record(folder))}; wait for it to end, "
            "or choose another folder"
        ) from None
    _held.add(key)
    try:
        command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv else "?"
        atomic_write_json(folder / HOLDER_FILE, {
            "pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        yield
    finally:
        _held.discard(key)
        try:
            (folder / HOLDER_FILE).unlink(missing_ok=True)
        except OSError:
            pass  # the folder went away; the lock is released all the same
        lock.release()

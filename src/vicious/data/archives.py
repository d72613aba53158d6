"""Extracting downloaded archives without letting a member write outside the target.

A crafted archive can name members "/etc/x" or "../../x", or carry a symlink or
hardlink pointing outside the destination and then write through it. safe_extract
checks every member first and refuses the whole archive, naming the member, before
anything is written.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _check_name(root: str, name: str, archive: Path) -> None:
    """Refuse absolute member names, names with a '..' part, and names landing outside root."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")):
        raise ValueError(f"{archive}: refusing member {name!r}: absolute path")
    if ".." in pure.parts:
        raise ValueError(f"{archive}: refusing member {name!r}: path contains '..'")
    if not _inside(root, os.path.normpath(os.path.join(root, name))):
        raise ValueError(f"{archive}: refusing member {name!r}: it would be written outside {root}")


def _check_link(root: str, name: str, target: str, base: str, kind: str, archive: Path) -> None:
    """Refuse a link with an absolute target or one that, resolved from `base`, lies outside root."""
    if os.path.isabs(target):
        raise ValueError(f"{archive}: refusing member {name!r}: {kind} to absolute path {target!r}")
    if not _inside(root, os.path.normpath(os.path.join(base, target))):
        raise ValueError(
            f"{archive}: refusing member {name!r}: {kind} to {target!r} points outside {root}"
        )


def _check_tar(tar: tarfile.TarFile, root: str, archive: Path) -> None:
    for member in tar.getmembers():
        _check_name(root, member.name, archive)
        member_dir = os.path.dirname(os.path.normpath(os.path.join(root, member.name)))
        if member.issym():
            # A symlink's target is relative to the directory holding the link.
            _check_link(root, member.name, member.linkname, member_dir, "symlink", archive)
        elif member.islnk():
            # A hardlink's target is a member name, relative to the archive root.
            _check_link(root, member.name, member.linkname, root, "hardlink", archive)
        elif not (member.isfile() or member.isdir()):
            raise ValueError(f"{archive}: refusing member {member.name!r}: device or special file")


def _check_zip(archive_file: zipfile.ZipFile, root: str, archive: Path) -> None:
    for info in archive_file.infolist():
        _check_name(root, info.filename, archive)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            # Unix zips store a symlink's target as the member's content.
            target = archive_file.read(info).decode("utf-8", "replace")
            member_dir = os.path.dirname(os.path.normpath(os.path.join(root, info.filename)))
            _check_link(root, info.filename, target, member_dir, "symlink", archive)


def safe_extract(archive_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a .zip, .tar, .tar.gz/.tgz (or other compressed tar) archive into dest.

    Every member is checked before anything is written; a member with an absolute
    path, a '..' component, or a symlink/hardlink pointing outside dest makes the
    whole extraction fail with a ValueError naming that member. Returns dest.
    """
    archive = Path(archive_path)
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest_path)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as archive_file:
            _check_zip(archive_file, root, archive)
            archive_file.extractall(root)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tar:
            _check_tar(tar, root, archive)
            if hasattr(tarfile, "data_filter"):
                # Defence in depth where Python has extraction filters (3.8.17+, 3.11.4+).
                tar.extractall(root, filter="data")
            else:  # pragma: no cover - old Python patch releases
                tar.extractall(root)
    else:
        raise ValueError(f"{archive}: not a zip or tar archive")
    return dest_path

"""Extracting downloaded archives without letting a member write outside the target.

A crafted archive can name members "/etc/x" or "../../x", carry a symlink or
hardlink pointing outside the destination and then write through it, or write
through a symlink that is already in the destination (``dest/link -> ~``, member
``link/.bashrc``). It can also be small and inflate to more than the disk holds.
safe_extract checks every member first and refuses the whole archive, naming the
member (or the cap), before anything is written; while extracting it counts the bytes
actually written, so a member whose header lies about its size cannot pass the cap.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from vicious.files import format_bytes

# Generous for the datasets' archives (CelebA's img_align_celeba.zip inflates to 1.5 GB in
# 202,600 members, TinyImageNet's to 0.5 GB in 120,600); a hostile one is stopped long before the disk fills.
MAX_BYTES_VAR, MAX_MEMBERS_VAR = "VICIOUS_MAX_EXTRACT_BYTES", "VICIOUS_MAX_EXTRACT_MEMBERS"
DEFAULT_MAX_BYTES = 8 * 2**30
DEFAULT_MAX_MEMBERS = 1_000_000
_CHUNK = 2**20


class ArchiveTooLargeError(ValueError):
    """An archive holds more bytes or members than the extraction cap allows."""


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


def _check_existing_links(root: str, name: str, archive: Path, replaces_link: bool, seen: set[str]) -> None:
    """Refuse a member whose path passes through a symlink already in the destination that
    leads outside it. ``replaces_link``: the member is itself a symlink, which replaces
    (does not write through) one at its own path."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    path = root
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        last = i == len(parts) - 1
        if (last and replaces_link) or path in seen:
            continue
        if not last:
            seen.add(path)  # folders shared by many members are looked at once
        if os.path.islink(path) and not _inside(root, os.path.realpath(path)):
            raise ValueError(
                f"{archive}: refusing member {name!r}: it would be written through the symlink {path} "
                f"to {os.path.realpath(path)}, outside {root}"
            )


def _caps(max_bytes: int | None, max_members: int | None) -> tuple[int, int]:
    def read(value, variable, default):
        if value is not None:
            return int(value)
        text = os.environ.get(variable)
        try:
            return int(text) if text else default
        except ValueError:
            raise ValueError(f"{variable}={text!r} is not a whole number; give the cap in bytes or members") from None

    return read(max_bytes, MAX_BYTES_VAR, DEFAULT_MAX_BYTES), read(max_members, MAX_MEMBERS_VAR, DEFAULT_MAX_MEMBERS)


def _too_large(archive: Path, what: str, variable: str, argument: str) -> ArchiveTooLargeError:
    return ArchiveTooLargeError(
        f"{archive}: refusing to extract it: {what}; if you trust this archive, raise the cap with the "
        f"environment variable {variable} (or safe_extract's {argument})"
    )


class _Budget:
    """Members and bytes extracted so far, against the caps."""

    def __init__(self, archive: Path, max_bytes: int, max_members: int) -> None:
        self.archive, self.max_bytes, self.max_members = archive, max_bytes, max_members
        self.bytes = self.members = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise _too_large(self.archive, f"it holds more members than the cap of {self.max_members:,}",
                             MAX_MEMBERS_VAR, "max_members")

    def add(self, n: int, declared: bool) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            what = (f"its members declare {format_bytes(self.bytes)} or more uncompressed" if declared
                    else "its members inflate to more than their headers declare")
            raise _too_large(self.archive, f"{what}, over the cap of {format_bytes(self.max_bytes)}",
                             f"{MAX_BYTES_VAR} (bytes)", "max_bytes")


def _check_tar(tar: tarfile.TarFile, root: str, archive: Path, budget: _Budget) -> None:
    seen: set[str] = set()
    for member in tar:  # one header at a time: the member cap bounds what is kept in memory
        budget.member()
        _check_name(root, member.name, archive)
        # tarfile replaces a link at a symlink member's path; a hardlink's data may be copied through it.
        _check_existing_links(root, member.name, archive, member.issym(), seen)
        member_dir = os.path.dirname(os.path.normpath(os.path.join(root, member.name)))
        if member.issym():
            # A symlink's target is relative to the directory holding the link.
            _check_link(root, member.name, member.linkname, member_dir, "symlink", archive)
        elif member.islnk():
            # A hardlink's target is a member name, relative to the archive root.
            _check_link(root, member.name, member.linkname, root, "hardlink", archive)
        elif not (member.isfile() or member.isdir()):
            raise ValueError(f"{archive}: refusing member {member.name!r}: device or special file")
        if member.isfile():
            budget.add(member.size, declared=True)


def _check_zip(archive_file: zipfile.ZipFile, root: str, archive: Path, budget: _Budget) -> None:
    seen: set[str] = set()
    infos = archive_file.infolist()
    for info in infos:
        budget.member()
        _check_name(root, info.filename, archive)
        _check_existing_links(root, info.filename, archive, False, seen)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            # Unix zips store a symlink's target as the member's content (extracted as a plain file).
            if info.file_size > 4096:
                raise ValueError(
                    f"{archive}: refusing member {info.filename!r}: symlink target of {info.file_size} bytes")
            target = archive_file.read(info).decode("utf-8", "replace")
            member_dir = os.path.dirname(os.path.normpath(os.path.join(root, info.filename)))
            _check_link(root, info.filename, target, member_dir, "symlink", archive)
        budget.add(info.file_size, declared=True)


def _extract_zip(archive_file: zipfile.ZipFile, root: str, budget: _Budget) -> None:
    """Write the (checked) members, counting the bytes that come out of the decompressor."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    for info in archive_file.infolist():
        target = os.path.join(root, *PurePosixPath(info.filename.replace("\\", "/")).parts)
        if info.is_dir():
            os.makedirs(target, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # O_NOFOLLOW: never write through a link at the member's own path (checked above; kept here too).
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | nofollow, 0o666)
        try:
            with os.fdopen(fd, "wb") as out, archive_file.open(info) as source:
                while chunk := source.read(_CHUNK):
                    budget.add(len(chunk), declared=False)
                    out.write(chunk)
        except BaseException:  # over the cap, damaged (a CRC that fails), interrupted: no half member
            Path(target).unlink(missing_ok=True)
            raise


def _tar_filter(budget: _Budget):
    """tarfile's "data" filter (defence in depth, Python 3.8.17+, 3.11.4+), counting bytes.

    tarfile copies exactly ``member.size`` bytes of a regular member (a sparse one, at
    most that), so the count of what is written is the count of what headers declare."""

    def keep(member: tarfile.TarInfo, path: str):
        member = tarfile.data_filter(member, path)
        if member is not None and member.isfile():
            budget.add(member.size, declared=False)
        return member

    return keep


def safe_extract(archive_path: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                 max_bytes: int | None = None, max_members: int | None = None) -> Path:
    """Extract a .zip, .tar, .tar.gz/.tgz (or other compressed tar) archive into dest.

    Every member is checked before anything is written; a member with an absolute
    path, a '..' component, a symlink/hardlink pointing outside dest, or a path through
    a symlink in dest that leads outside it makes the whole extraction fail with a
    ValueError naming that member. So does an archive of more than ``max_bytes``
    uncompressed or ``max_members`` members (default: the VICIOUS_MAX_EXTRACT_BYTES and
    VICIOUS_MAX_EXTRACT_MEMBERS environment variables, else 8 GiB and 1,000,000), with
    an ArchiveTooLargeError naming the cap. Returns dest.
    """
    archive = Path(archive_path)
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest_path)
    cap_bytes, cap_members = _caps(max_bytes, max_members)
    try:
        _extract(archive, root, cap_bytes, cap_members)
    except (zipfile.BadZipFile, zlib.error, EOFError, tarfile.TarError) as err:
        # zipfile stops a member at its declared size, then finds the CRC wrong;
        # tarfile's filter refusals land here too.
        raise ValueError(f"{archive}: cannot extract it: {err}; the archive is damaged or crafted, "
                         "delete it and fetch it again") from None
    return dest_path


def _extract(archive: Path, root: str, cap_bytes: int, cap_members: int) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as archive_file:
            _check_zip(archive_file, root, archive, _Budget(archive, cap_bytes, cap_members))
            _extract_zip(archive_file, root, _Budget(archive, cap_bytes, cap_members))
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tar:
            _check_tar(tar, root, archive, _Budget(archive, cap_bytes, cap_members))
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, filter=_tar_filter(_Budget(archive, cap_bytes, cap_members)))
            else:  # pragma: no cover - old Python patch releases; the sizes were checked above
                tar.extractall(root)
    else:
        raise ValueError(f"{archive}: not a zip or tar archive")

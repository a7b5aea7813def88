"""Unpacking zip and tar archives (exported bundles, downloaded datasets) without letting them write elsewhere.

An archive names its members; a hostile or broken one can name ``../../.bashrc``, ``/etc/cron.d/job``, or a
symbolic link to ``/`` followed by a file "inside" the link. :func:`safe_extract` checks every member before
writing anything and refuses the whole archive if one member would land outside the destination, is a link
pointing outside it, is a device, FIFO or other special file, would replace a file already in the
destination, or if the archive unpacks to more than ``max_bytes`` (a zip bomb). Tar archives are then
unpacked with Python's own ``data`` filter as well (:func:`tarfile.data_filter`, PEP 706), which enforces the
same rules.

Members are unpacked into a hidden folder inside the destination and moved into place only when all of them
were read and written whole, so a member that fails late (a bad checksum, a truncated archive, a full disk)
leaves the destination as it was.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

__all__ = ["UnsafeArchiveError", "safe_extract", "DEFAULT_MAX_BYTES"]

#: default limit on the unpacked size of an archive: 20 GiB
DEFAULT_MAX_BYTES = 20 * 1024**3

PathLike = str | os.PathLike


class UnsafeArchiveError(ValueError):
    """An archive refused by :func:`safe_extract`; the message names the archive, the member and the problem."""


def _inside(destination: Path, target: Path) -> bool:
    return target == destination or destination in target.parents


def _member_path(archive: Path, destination: Path, name: str) -> Path:
    if "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a NUL character in its name")
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and posix.parts[0].endswith(":")) or name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to unpack the archive")
    if ".." in posix.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} climbs out of the destination ('..'); refusing to unpack")
    target = Path(os.path.normpath(destination / posix))
    if not _inside(destination, target):
        raise UnsafeArchiveError(f"{archive}: member {name!r} would be written outside {destination}")
    return target


def _check_link(archive: Path, destination: Path, name: str, target_path: Path, link: str, hard: bool) -> None:
    link_posix = PurePosixPath(link.replace("\\", "/"))
    if link_posix.is_absolute():
        raise UnsafeArchiveError(f"{archive}: member {name!r} links to the absolute path {link!r}; refusing to unpack")
    # a symbolic link is relative to its own folder, a tar hard link to the archive's root
    base = destination if hard else target_path.parent
    resolved = Path(os.path.normpath(base / link_posix))
    if not _inside(destination, resolved):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} links to {link!r}, outside {destination}; refusing to unpack"
        )


def _check_total(archive: Path, total: int, max_bytes: int) -> None:
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"{archive}: unpacks to {total:,} bytes, more than the limit of {max_bytes:,} (max_bytes); "
            "refusing to unpack (a zip bomb?)"
        )


def _check_free(archive: Path, destination: Path, name: str, target: Path, is_dir: bool) -> None:
    # a folder may be unpacked into an existing folder; nothing may replace a file the archive did not write
    if os.path.lexists(target) and not (is_dir and target.is_dir() and not target.is_symlink()):
        raise FileExistsError(
            f"{archive}: member {name!r} would replace the existing {target}; unpack into a new folder"
        )


def _move_into(staging: Path, destination: Path) -> None:
    """Rename what ``staging`` holds into ``destination``, merging folders that exist in both."""
    for entry in sorted(staging.iterdir()):
        target = destination / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir() and not target.is_symlink():
            _move_into(entry, target)
        else:
            os.replace(entry, target)


def safe_extract(archive: PathLike, destination: PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Path]:
    """Unpack a zip or tar (``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``) archive into ``destination``.

    Nothing is written unless every member passes and unpacks whole (see the module docstring).

    Args:
        archive: the archive file (its format is read from its content, not its name).
        destination: the folder to unpack into (created if missing).
        max_bytes: refuse an archive whose members add up to more than this many bytes.

    Returns:
        the paths of the files and folders written, in archive order.

    Raises:
        UnsafeArchiveError: naming the archive and the member: absolute path, ``..``, a link out of
            ``destination``, a special file, or too many bytes.
        ValueError: ``archive`` is neither a zip nor a tar file, or is damaged (a bad checksum, truncated);
            the message names it.
        FileNotFoundError: ``archive`` does not exist.
        FileExistsError: a member would replace a file already in ``destination``.
        OSError: writing failed (e.g. no space left); nothing of the archive is left in ``destination``.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: archive not found")
    destination = Path(os.path.abspath(destination))
    written: list[Path] = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            targets = []
            for member in members:
                target = _member_path(archive, destination, member.filename)
                kind = stat.S_IFMT(member.external_attr >> 16)
                if kind == stat.S_IFLNK:
                    raise UnsafeArchiveError(
                        f"{archive}: member {member.filename!r} is a symbolic link; refusing to unpack"
                    )
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise UnsafeArchiveError(
                        f"{archive}: member {member.filename!r} is a special file; refusing to unpack"
                    )
                _check_free(archive, destination, member.filename, target, member.is_dir())
                targets.append(target)
            _check_total(archive, sum(member.file_size for member in members), max_bytes)
            with _staged(archive, destination) as staging:
                for member, target in zip(members, targets):
                    zipped.extract(member, staging)
                    written.append(target)
        return written
    if not tarfile.is_tarfile(archive):
        raise ValueError(f"{archive}: not a zip or tar archive")
    with tarfile.open(archive) as tarred:
        members = tarred.getmembers()
        for member in members:
            target = _member_path(archive, destination, member.name)
            if member.issym() or member.islnk():
                _check_link(archive, destination, member.name, target, member.linkname, hard=member.islnk())
            elif not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(
                    f"{archive}: member {member.name!r} is a device, FIFO or other special file; refusing to unpack"
                )
            _check_free(archive, destination, member.name, target, member.isdir())
            written.append(target)
        _check_total(archive, sum(member.size for member in members if member.isfile()), max_bytes)
        with _staged(archive, destination) as staging:
            try:
                tarred.extractall(staging, filter="data")
            except tarfile.FilterError as error:  # a case the checks above missed: still nothing outside
                raise UnsafeArchiveError(f"{archive}: {error}; refusing to unpack") from error
    return written


@contextmanager
def _staged(archive: Path, destination: Path) -> Iterator[Path]:
    """A hidden folder in ``destination`` to unpack into; moved into ``destination`` only when all went well.

    On any error the folder is deleted, and so is ``destination`` when this call created it.
    """
    created = not destination.exists()
    staging = None
    try:
        destination.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpacking.", suffix=".tmp", dir=destination))
        try:
            yield staging
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as error:
            raise ValueError(f"{archive}: damaged archive ({error}); nothing was unpacked") from error
        _move_into(staging, destination)
    except BaseException:
        if created:
            shutil.rmtree(destination, ignore_errors=True)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)

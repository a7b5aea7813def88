"""Writing output files so that a failed write (disk full, read-only folder, a crash) never leaves a part.

:func:`replacing` hands out a temporary path in the target's own folder; the caller writes the whole file
there (with any library: PIL, matplotlib, ``json``...), and only when that succeeded is the temporary file
renamed over the target (``os.replace``, atomic on one file system). A previous good file therefore stays
as it was until the new one is complete, and a failed write leaves neither a truncated target nor the
temporary file. ``durable=True`` also flushes the file and its folder to disk (checkpoints, which a power cut
must not truncate: :func:`lesionseg.engines.save_atomically` adds the distributed rank to it), and
``exclusive=True`` never replaces a file that is there (the model-zoo export writes only new files).

An :class:`OSError` raised while writing is raised again with the target's path as its ``filename`` (an
``ENOSPC`` from ``write`` names no file, and an error on the temporary file would name that), so the
command line can report "<target>: No space left on device" in one line (:func:`describe_os_error`).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

__all__ = ["replacing", "write_text_atomically", "describe_os_error", "with_filename", "reraise_naming"]

PathLike = str | os.PathLike

#: what to do about the errors a user can fix, by errno
_ADVICE = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "check the permissions of the file and its folder",
    errno.EPERM: "check the permissions of the file and its folder",
}


@contextmanager
def replacing(
    path: PathLike, *, durable: bool = False, exclusive: bool = False, suffix: str | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    The temporary name is ``.<name>.<random><suffix>`` (by default the target's suffix, ``.nii.gz`` whole, so
    writers that pick the format from it, such as PIL's ``Image.save``, matplotlib's ``savefig`` or
    ``nibabel.save``, work unchanged). The file gets the usual permissions (``0o666`` less the umask). The
    folder is created.

    Args:
        path: the file to write.
        durable: ``fsync`` the written file before the rename and the folder after it, so that a power cut
            leaves the old file or the new one, never a truncated one.
        exclusive: never replace a file: when ``path`` exists at the end, :class:`FileExistsError` naming it
            (and nothing is written), even if it appeared while the block ran.
        suffix: the temporary file's suffix instead of the target's (e.g. ``".tmp"``, to find leftovers).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "table.md"
        >>> with replacing(target) as temporary:
        ...     _ = temporary.write_text("| a |")
        >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
        ('| a |', ['table.md'])

    Raises:
        OSError: from creating, writing or renaming the file, with ``filename`` set to ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix is None:
            suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
        # the name is cut short so that the temporary one stays within the file system's 255 bytes
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=suffix)
        os.close(descriptor)
    except OSError as error:
        reraise_naming(error, path)
    temporary = Path(name)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        if durable:
            _fsync(temporary)
        if exclusive:
            os.link(temporary, path)  # fails if path exists, where a rename would replace it
            temporary.unlink()
        else:
            os.replace(temporary, path)
        if durable:  # the rename itself survives a power cut once the folder is on disk
            try:
                _fsync(path.parent)
            except OSError:
                pass  # some file systems cannot sync a folder; the file itself is on disk
    except OSError as error:
        temporary.unlink(missing_ok=True)
        reraise_naming(error, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomically(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """``Path(path).write_text(text)`` through :func:`replacing`; returns ``path`` as a :class:`Path`."""
    path = Path(path)
    with replacing(path) as temporary:
        temporary.write_text(text, encoding=encoding)
    return path


def with_filename(error: OSError, path: PathLike) -> OSError:
    """The same kind of ``OSError`` with ``path`` as its file name, e.g. the target of a temporary file.

    An error without ``errno`` (raised with a message only) is returned as it is: re-raise it with ``raise``
    then, as :func:`reraise_naming` does.
    """
    if error.errno is None:
        return error
    return type(error)(error.errno, error.strerror or os.strerror(error.errno), str(path))


def reraise_naming(error: OSError, path: PathLike) -> NoReturn:
    """Raise :func:`with_filename` of ``error`` (chained to it), or ``error`` itself when it has no errno."""
    named = with_filename(error, path)
    if named is error:
        raise error
    raise named from error


def describe_os_error(error: OSError) -> str:
    """One line for a user: the file, the problem and, where there is one, what to do about it.

    Example:
        >>> import errno
        >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device", "out/mask.png"))
        'out/mask.png: No space left on device (free some space or write elsewhere)'
    """
    problem = error.strerror or str(error)
    where = f"{error.filename}: " if error.filename else ""
    advice = _ADVICE.get(error.errno)
    return f"{where}{problem}" + (f" ({advice})" if advice else "")

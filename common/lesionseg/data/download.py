"""Public datasets in one command: download, verify, unpack, check and group (``lesionseg download``).

:func:`download_busi` fetches the BUSI archive (Al-Dhabyani et al., Data in Brief 28:104863, 2020,
CC BY 4.0) from its published location, and:

1. downloads it into a hidden temporary file beside its destination, with a progress bar, and checks its
   size (the server's ``Content-Length``, and :data:`BUSI_SIZE` when known) and its SHA-256 before
   renaming it into place (:func:`fetch_file`): a failed, corrupted, truncated or interrupted download
   leaves no file behind, least of all one that looks complete. The SHA-256 is mandatory;
2. unpacks it with :func:`lesionseg.utils.safe_extract` into a hidden staging folder, and moves the
   dataset folder into place only when the archive was accepted and holds a BUSI-layout dataset;
3. writes the near-duplicate groups that splits keep together (:func:`lesionseg.data.grouping.find_groups`)
   as ``near_duplicate_groups.json`` beside the dataset folder, where ``groups="auto"`` finds it;
4. checks the dataset (:func:`lesionseg.data.integrity.inspect_dataset`, as ``lesionseg check-data``).

An existing dataset folder or groups file is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lesionseg.data.grouping import GROUPS_FILENAME, find_groups, save_groups
from lesionseg.data.integrity import IntegrityReport, inspect_dataset
from lesionseg.data.io import DataError, PathLike
from lesionseg.data.readers import detect_layout
from lesionseg.utils.archives import safe_extract

__all__ = [
    "BUSI_URL",
    "BUSI_PAGE",
    "BUSI_ARCHIVE",
    "BUSI_FOLDER",
    "BUSI_SHA256",
    "BUSI_SIZE",
    "DownloadError",
    "BusiDownload",
    "file_sha256",
    "fetch_file",
    "download_busi",
]

logger = logging.getLogger(__name__)

#: the dataset's page at Cairo University, which links the archive
BUSI_PAGE = "https://scholar.cu.edu.eg/?q=afahmy/pages/dataset"
#: the archive the page links (the published location)
BUSI_URL = "https://scholar.cu.edu.eg/Dataset_BUSI.zip"
#: the archive's file name, and the folder it unpacks to (``<class>/<class> (n).png`` and masks)
BUSI_ARCHIVE = "Dataset_BUSI.zip"
BUSI_FOLDER = "Dataset_BUSI_with_GT"
# Neither the publisher nor ../shared/data/busi/README.md gives a checksum or size for the archive. This
# SHA-256 is the one torch-em records for the same URL (github.com/constantinpape/torch-em,
# torch_em/data/datasets/medical/busi.py, CHECKSUM); it could not be confirmed here (no network access
# while this was written). Maintainers: after a download you trust, set both from
# `sha256sum Dataset_BUSI.zip` and `stat -c %s Dataset_BUSI.zip`; users can pass --sha256 / --size.
#: SHA-256 (hex) of :data:`BUSI_ARCHIVE`; every download is checked against it (or the one given)
BUSI_SHA256 = "b2ce09f6063a31a73f628b6a6ee1245187cbaec225e93e563735691d68654de7"
#: size in bytes of :data:`BUSI_ARCHIVE`; ``None``: unknown, the SHA-256 and ``Content-Length`` still apply
BUSI_SIZE: int | None = None

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed or did not verify; the message names the URL or file and the problem."""


@dataclass
class BusiDownload:
    """What :func:`download_busi` made.

    Attributes:
        dataset: the dataset folder (``<root>/Dataset_BUSI_with_GT``).
        groups_file: the near-duplicate groups beside it, or ``None`` when they could not be computed (an
            unreadable image: ``report`` names it).
        groups: the near-duplicate groups written (lists of case ids).
        archive: the archive, when kept (``keep_archive``, or an archive that was there before), else ``None``.
        report: the dataset check (``lesionseg check-data``'s findings).
    """

    dataset: Path
    groups_file: Path | None
    groups: list[list[str]]
    archive: Path | None
    report: IntegrityReport


def _check_sha256(sha256: str | None) -> str:
    if sha256 is None:
        raise DownloadError(
            "no SHA-256 to check the archive against: pass one you trust (lesionseg download busi --sha256 HEX), "
            "or, as a maintainer, record it in lesionseg.data.download.BUSI_SHA256; downloads are never unverified"
        )
    digest = str(sha256).strip().lower()
    if not _SHA256.match(digest):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    return digest


def file_sha256(path: PathLike) -> str:
    """The SHA-256 (hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open(url: str, timeout: float, verify_tls: bool):
    scheme = url.partition(":")[0].lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http and https URLs are downloaded, not {scheme!r}")
    context = None
    if scheme == "https" and not verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers={"User-Agent": "lesionseg-download"})
    try:
        return urllib.request.urlopen(request, timeout=timeout, context=context)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url}: the server answered {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, ssl.SSLCertVerificationError):
            raise DownloadError(
                f"{url}: the server's TLS certificate could not be verified ({error.reason.verify_message}); "
                "if you trust the checksum, --no-verify-tls skips the certificate (the SHA-256 is still checked)"
            ) from error
        raise DownloadError(f"{url}: cannot connect ({error.reason})") from error
    except (OSError, ValueError) as error:
        raise DownloadError(f"{url}: cannot connect ({type(error).__name__}: {error})") from error


def fetch_file(
    url: str,
    destination: PathLike,
    sha256: str,
    size: int | None = None,
    timeout: float = 60.0,
    progress: bool | None = None,
    verify_tls: bool = True,
) -> Path:
    """Download ``url`` to ``destination``, atomically, and check its size and SHA-256.

    The bytes go to a hidden temporary file in ``destination``'s folder, which is renamed to ``destination``
    only after every check passed; on any failure (or an interruption) it is deleted.

    Args:
        url: an ``http://`` or ``https://`` URL.
        destination: the file to write; it must not exist.
        sha256: the expected SHA-256, 64 hex digits.
        size: the expected size in bytes, checked against ``Content-Length`` before downloading and against
            the bytes received; ``None`` checks only that the server sent what it announced.
        timeout: seconds to wait for the connection and for each read.
        progress: show a progress bar on stderr (``None``: only on a terminal).
        verify_tls: verify the server's TLS certificate (``False`` relies on the SHA-256 alone).

    Returns:
        ``destination``.

    Raises:
        DownloadError: naming ``url``: cannot connect, an HTTP error, a size or SHA-256 mismatch, or a
            connection closed early.
        FileExistsError: ``destination`` exists.
    """
    sha256 = _check_sha256(sha256)
    destination = Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination}: already exists; not downloading over it")
    with _open(url, timeout, verify_tls) as response:
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.isdigit() else None
        if size is not None and announced is not None and announced != size:
            raise DownloadError(f"{url}: the server announces {announced:,} bytes, expected {size:,}; not downloading")
        descriptor, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
        try:
            digest, received = hashlib.sha256(), 0
            bar = tqdm(
                total=announced, desc=destination.name, unit="B", unit_scale=True, unit_divisor=1024,
                disable=None if progress is None else not progress,
            )  # fmt: skip
            with os.fdopen(descriptor, "wb") as file, bar:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, ValueError) as error:
                        raise DownloadError(
                            f"{url}: the download failed after {received:,} bytes ({type(error).__name__}: {error})"
                        ) from error
                    if not chunk:
                        break
                    file.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                file.flush()
                os.fsync(file.fileno())
            if announced is not None and received != announced:
                raise DownloadError(
                    f"{url}: the connection closed after {received:,} of {announced:,} bytes (truncated download)"
                )
            if size is not None and received != size:
                raise DownloadError(f"{url}: received {received:,} bytes, expected {size:,} (truncated or other file)")
            if digest.hexdigest() != sha256:
                raise DownloadError(
                    f"{url}: SHA-256 mismatch: got {digest.hexdigest()}, expected {sha256} "
                    "(a corrupted or different file); nothing was kept"
                )
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return destination


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _busi_folder(staging: Path, archive: Path) -> Path:
    # the archive's dataset folder: Dataset_BUSI_with_GT/ as published, or a single folder in BUSI layout
    candidate = staging / BUSI_FOLDER
    try:
        layout, folder = detect_layout(candidate if candidate.is_dir() else staging)
    except DataError as error:
        raise DataError(archive, f"holds no BUSI dataset ({error.problem})") from error
    if layout != "busi":
        raise DataError(archive, f"holds no BUSI dataset: expected a {BUSI_FOLDER}/ folder with class folders")
    return folder


def download_busi(
    root: PathLike,
    url: str = BUSI_URL,
    sha256: str | None = BUSI_SHA256,
    size: int | None = BUSI_SIZE,
    overwrite: bool = False,
    keep_archive: bool = False,
    timeout: float = 60.0,
    progress: bool | None = None,
    verify_tls: bool = True,
) -> BusiDownload:
    """Download, verify, unpack, group and check BUSI into ``root`` (see the module docstring).

    Writes ``<root>/Dataset_BUSI_with_GT/`` and ``<root>/near_duplicate_groups.json``. An archive already at
    ``<root>/Dataset_BUSI.zip`` is used (and kept) when its SHA-256 matches.

    Args:
        root: the folder to write into (created if missing).
        url: where to download the archive from.
        sha256: the archive's expected SHA-256 (mandatory).
        size: the archive's expected size in bytes, ``None`` if unknown.
        overwrite: replace an existing dataset folder and groups file (and an archive that does not verify).
        keep_archive: keep the downloaded archive in ``root``.
        timeout: seconds to wait for the connection and each read.
        progress: show progress bars on stderr (``None``: only on a terminal).
        verify_tls: verify the server's TLS certificate.

    Raises:
        FileExistsError: the dataset folder or groups file exists (without ``overwrite``), or an archive that
            does not verify is in the way; nothing is downloaded.
        DownloadError: the download failed or did not verify; nothing is left behind.
        lesionseg.utils.archives.UnsafeArchiveError: a member of the archive would be written outside the
            dataset folder, or is a link or special file; nothing is written.
        DataError: naming the archive, when it holds no BUSI-layout dataset; nothing is left behind.
    """
    sha256 = _check_sha256(sha256)
    root = Path(os.path.abspath(root))
    dataset = root / BUSI_FOLDER
    groups_file = root / GROUPS_FILENAME
    archive = root / BUSI_ARCHIVE
    for existing in (dataset, groups_file):
        if (existing.exists() or existing.is_symlink()) and not overwrite:
            raise FileExistsError(f"{existing}: already exists; pass --overwrite (overwrite=True) to replace it")
    root.mkdir(parents=True, exist_ok=True)

    downloaded = False
    if archive.is_file() and file_sha256(archive) == sha256 and (size is None or archive.stat().st_size == size):
        logger.info("%s: already downloaded and its SHA-256 matches; using it", archive)
    else:
        if archive.exists() or archive.is_symlink():
            if not overwrite:
                raise FileExistsError(
                    f"{archive}: exists but does not match the expected SHA-256 {sha256} (a partial or other "
                    "download); remove it, or pass --overwrite (overwrite=True) to replace it"
                )
            _remove(archive)
        logger.info("downloading %s to %s", url, archive)
        fetch_file(url, archive, sha256, size, timeout=timeout, progress=progress, verify_tls=verify_tls)
        downloaded = True

    try:
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".busi-unpack-"))
        try:
            safe_extract(archive, staging)
            unpacked = _busi_folder(staging, archive)
            if dataset.exists() or dataset.is_symlink():
                _remove(dataset)  # overwrite=True: checked above
            os.replace(unpacked, dataset)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        if downloaded:  # an archive refused or unusable is not kept
            archive.unlink(missing_ok=True)
        raise

    groups: list[list[str]] = []
    written: Path | None = None
    try:
        groups = find_groups(dataset, progress=progress)
    except DataError as error:
        logger.warning("near-duplicate groups not written: %s (the check below lists every such file)", error)
        if groups_file.exists():
            _remove(groups_file)  # a stale file of the previous dataset would be read as this one's
    else:
        temporary = groups_file.with_name(f".{groups_file.name}.part")
        save_groups(
            temporary,
            groups,
            description=f"Groups of near-duplicate images in {BUSI_FOLDER}, found by "
            f"lesionseg.data.grouping.find_groups (thumbnail correlation) after lesionseg download busi from {url}. "
            "Keep each group on one side of any split.",
        )
        os.replace(temporary, groups_file)
        written = groups_file
    report = inspect_dataset(dataset, progress=progress)
    kept = archive if (keep_archive or not downloaded) else None
    if kept is None:
        archive.unlink(missing_ok=True)
    return BusiDownload(dataset=dataset, groups_file=written, groups=groups, archive=kept, report=report)

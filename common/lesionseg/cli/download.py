"""``lesionseg download``: fetch a public dataset, verify, unpack, group and check it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.data.download import BUSI_FOLDER, BUSI_SHA256, BUSI_SIZE, BUSI_URL, DownloadError, download_busi
from lesionseg.data.integrity import ERROR, NOTE, WARNING
from lesionseg.data.io import DataError
from lesionseg.utils.archives import UnsafeArchiveError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download a public dataset (BUSI), verify and unpack it, write its near-duplicate groups, check it",
        description=(
            f"Downloads the BUSI archive (CC BY 4.0; cite Al-Dhabyani et al., Data in Brief 2020) to ROOT, checks "
            f"its size and SHA-256 (a failed or corrupted download leaves nothing behind), unpacks it safely to "
            f"ROOT/{BUSI_FOLDER}, writes ROOT/near_duplicate_groups.json (which `lesionseg split` and the bundles' "
            "splits keep together) and checks every image and mask as `lesionseg check-data` does. Exits with 1 "
            "when the download fails or the check finds an error."
        ),
    )
    parser.add_argument("dataset", choices=("busi",), help="the dataset to download")
    parser.add_argument("--root", type=Path, required=True, help="folder to write the dataset into")
    parser.add_argument("--url", default=BUSI_URL, help="where to download the archive from (default: %(default)s)")
    parser.add_argument(
        "--sha256",
        default=BUSI_SHA256,
        help="the archive's expected SHA-256, always checked (default: the recorded one, %(default)s)",
    )
    parser.add_argument(
        "--size", type=int, default=BUSI_SIZE, help="the archive's expected size in bytes (default: not recorded)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder and groups file")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive in ROOT")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server (default: 60)")
    parser.add_argument(
        "--no-verify-tls",
        action="store_true",
        help="do not verify the server's TLS certificate; the archive's SHA-256 is still checked",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        result = download_busi(
            args.root,
            url=args.url,
            sha256=args.sha256,
            size=args.size,
            overwrite=args.overwrite,
            keep_archive=args.keep_archive,
            timeout=args.timeout,
            progress=None,
            verify_tls=not args.no_verify_tls,
        )
    except (DownloadError, UnsafeArchiveError, DataError, FileExistsError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"dataset: {result.dataset}")
    if result.groups_file is not None:
        print(f"near-duplicate groups: {len(result.groups)} written to {result.groups_file}")
    if result.archive is not None:
        print(f"archive kept: {result.archive}")
    report = result.report
    print(report.summary())
    for problem in report.problems:
        if problem.severity in (ERROR, WARNING):
            print(f"{problem.severity}: {problem}")
    if report.by_severity(NOTE):
        print(f"notes: {len(report.by_severity(NOTE))} (lesionseg check-data {result.dataset} lists them)")
    if report.errors:
        print(f"error: the check found {len(report.errors)} error(s) in {result.dataset}", file=sys.stderr)
        return 1
    return 0

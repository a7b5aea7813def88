"""``lesionseg check-data``: check a dataset for missing, corrupt, mismatched or suspicious files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.data.integrity import ERROR, NOTE, WARNING, inspect_dataset
from lesionseg.data.io import DataError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-data",
        help="check a dataset's images and masks and list every problem",
        description=(
            "Reads every image and mask of SOURCE once and reports, one line each, images without masks and "
            "masks without images, unreadable (missing, empty, truncated, corrupt) files, masks whose size "
            "differs from their image, masks that are not binary, empty masks in lesion classes and "
            "identical or near-duplicate images. Exits with 1 when an error is found, else 0."
        ),
    )
    parser.add_argument("source", type=Path, help="BUSI folder, folder with images/ and masks/, or datalist JSON")
    parser.add_argument("--strict", action="store_true", help="exit with 1 on warnings too")
    parser.add_argument("--no-notes", action="store_true", help="leave out the informational notes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        report = inspect_dataset(args.source, progress=None)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    shown = (ERROR, WARNING) if getattr(args, "no_notes", False) else (ERROR, WARNING, NOTE)
    for problem in report.problems:
        if problem.severity in shown:
            print(f"{problem.severity}: {problem}")
    failed = report.errors or (getattr(args, "strict", False) and report.by_severity(WARNING))
    return 1 if failed else 0

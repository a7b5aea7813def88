"""``lesionseg export-bundle``: a model-zoo bundle folder (and zip) that runs without lesionseg installed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.deploy.zoo import export_bundle


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-bundle",
        help="write a self-contained MONAI model-zoo bundle (vendored code, weights in large_files.yml)",
        description=(
            "Copies the bundle's configs and docs to OUTPUT with lesionseg vendored as its scripts/ package "
            "(configs rewritten to scripts.*), lists models/model.pt in large_files.yml instead of copying it "
            "(the model zoo allows no file over 25 MB) and checks that no file exceeds that limit. The export "
            "runs with MONAI and PyTorch alone: python -m monai.bundle run ... from its folder."
        ),
    )
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle folder, e.g. bundles/dcnet_bundle")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the new folder (its name is the bundle's)")
    parser.add_argument("--zip", action="store_true", help="also write OUTPUT.zip")
    parser.add_argument("--weights-url", help="where models/model.pt will be downloaded from (for large_files.yml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        written = export_bundle(args.bundle, args.output, weights_url=args.weights_url, make_zip=args.zip)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"lesionseg export-bundle: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output.resolve()}" + (f" and {written}" if args.zip else ""))
    return 0

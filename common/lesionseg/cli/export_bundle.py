"""``lesionseg export-bundle``: a model-zoo bundle folder (and zip) that runs without lesionseg installed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.deploy.zoo import ZOO_BUNDLES, export_bundle


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    names = ", ".join(f"{folder}: {entry.name}" for folder, entry in ZOO_BUNDLES.items())
    parser = subparsers.add_parser(
        "export-bundle",
        help="write a self-contained MONAI model-zoo bundle (vendored code, weights in large_files.yml)",
        description=(
            "Writes OUTPUT/models/NAME (the bundle's configs and docs, lesionseg vendored as its scripts/ package "
            "with the configs rewritten to scripts.*, models/model.pt listed in large_files.yml instead of copied: "
            "the model zoo allows no file over 25 MB) and OUTPUT/ci/unit_tests/test_NAME.py (its unit test), the "
            "paths a pull request to the model zoo adds; OUTPUT may be a checkout of the zoo. The code is "
            "formatted with isort and black under the zoo's settings. The export runs with MONAI and PyTorch "
            "alone: python -m monai.bundle run ... from its folder."
        ),
    )
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle folder, e.g. bundles/dcnet_bundle")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="the model zoo's root (a checkout, or any folder)"
    )
    parser.add_argument("--name", help=f"the bundle's name in the model zoo (default: {names})")
    parser.add_argument("--zip", action="store_true", help="also write OUTPUT/NAME.zip")
    parser.add_argument("--weights-url", help="where models/model.pt will be downloaded from (for large_files.yml)")
    parser.add_argument(
        "--no-weights",
        action="store_true",
        help="export a bundle that has no models/model.pt (the model zoo's CI fails it; without this, it is refused)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        written = export_bundle(
            args.bundle,
            args.output,
            weights_url=args.weights_url,
            make_zip=args.zip,
            name=args.name,
            no_weights=args.no_weights,
        )
    except (FileNotFoundError, FileExistsError, ValueError, ModuleNotFoundError) as error:
        print(f"lesionseg export-bundle: {error}", file=sys.stderr)
        return 1
    print(f"wrote {written}")
    return 0

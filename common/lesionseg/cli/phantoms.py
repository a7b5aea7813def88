"""``lesionseg phantoms``: write a synthetic breast-ultrasound dataset in the BUSI layout."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from lesionseg.data.phantoms import KINDS, PhantomConfig, contact_sheet, write_phantom_dataset


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"need a whole number >= 1, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"need a fraction in [0, 1], got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantoms",
        help="write synthetic breast-ultrasound images with lesion masks (BUSI layout)",
        description=(
            "Writes NUM B-mode-like phantoms with speckle, breast anatomy and benign or malignant lesions to "
            "OUTPUT_DIR as <class>/<class> (n).png with <class> (n)_mask.png (and _mask_1.png for a second "
            "lesion), plus a phantoms.json manifest. The same seed gives the same files."
        ),
    )
    parser.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR", help="folder to write (empty or absent)")
    parser.add_argument("--num", type=_positive_int, default=100, help="number of images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset (default: %(default)s)")
    parser.add_argument(
        "--size",
        type=_positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="fixed image height and width (default: varying, like BUSI)",
    )
    parser.add_argument(
        "--normal-fraction",
        type=_fraction,
        help=f"fraction of lesion-free images (default: {PhantomConfig.normal_fraction})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the phantoms a previous run wrote to OUTPUT_DIR (never other images), and the contact sheet",
    )
    parser.add_argument("--contact-sheet", type=Path, metavar="PNG", help="also draw 16 of them with outlines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.contact_sheet is not None and args.contact_sheet.exists() and not args.overwrite:
        print(f"error: {args.contact_sheet}: exists; choose another file or pass --overwrite", file=sys.stderr)
        return 1
    try:
        config = PhantomConfig()
        if args.normal_fraction is not None:
            config = dataclasses.replace(config, normal_fraction=args.normal_fraction)
        if args.size is not None:
            try:
                config = dataclasses.replace(config, height=args.size[0], width=args.size[1])
            except ValueError as error:  # the library names its field; say which option it came from
                raise ValueError(f"--size {args.size[0]} {args.size[1]}: {error}") from None
        output = write_phantom_dataset(
            args.output_dir, num_images=args.num, seed=args.seed, config=config, overwrite=args.overwrite
        )
        sheet = contact_sheet(output, args.contact_sheet, seed=args.seed) if args.contact_sheet else None
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    manifest = json.loads((output / "phantoms.json").read_text())
    counts = ", ".join(f"{manifest['counts'][kind]} {kind}" for kind in KINDS)
    print(
        f"wrote {manifest['num_images']} phantoms to {output}: {counts} "
        f"({manifest['two_lesion_images']} with two lesions)" + (f"; contact sheet {sheet}" if sheet else "")
    )
    return 0

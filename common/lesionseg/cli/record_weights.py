"""``lesionseg record-weights``: make a finished run's checkpoint a bundle's weights, with its metrics and MD5."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.deploy.release import RecordedWeightsError, record_weights


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "record-weights",
        help="copy a finished run's checkpoint into a bundle and record its metrics, MD5 and command",
        description=(
            "Loads RUN/models/model.pt into the bundle's network (refused when it is another network's), copies it "
            "to BUNDLE/models/model.pt and writes the run's lesion metrics (RUN/record.json), the checkpoint's MD5, "
            "the precision and the command into configs/metadata.json's eval_metrics and the model card's "
            "recorded-weights block. export-bundle then refuses weights whose MD5 differs from the recorded one."
        ),
    )
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle folder, e.g. bundles/dcnet_bundle")
    parser.add_argument(
        "--run", type=Path, required=True, help="one model's folder of a busi_accuracy run (../runs/busi_paper/dcnet)"
    )
    parser.add_argument("--command", help="the command that made the run, when its record.json has none")
    parser.add_argument("--replace", action="store_true", help="write over other weights in BUNDLE/models/model.pt")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        metrics = record_weights(args.bundle, args.run, command=args.command, replace=args.replace)
    except (FileNotFoundError, RecordedWeightsError) as error:
        print(f"lesionseg record-weights: {error}", file=sys.stderr)
        return 1
    print(
        f"{args.bundle}: models/model.pt MD5 {metrics['model_md5']}, lesion Dice {metrics['busi_lesion_dice']:.4f} "
        f"over {metrics['busi_lesion_images']} images ({metrics['precision']}); configs/metadata.json and "
        "docs/README.md updated"
    )
    return 0

"""``lesionseg crossval``: k-fold cross-validation of a bundle, resumable, with paper-style tables and figures.

The arguments of :class:`lesionseg.workflows.crossval.CrossValidation`, which documents the fold loop.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.data.io import DataError
from lesionseg.workflows.crossval import CrossValidation, parse_overrides


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crossval",
        help="k-fold cross-validation of a bundle: train and evaluate each fold, tables and figures",
        description=(
            "Divide DATASET into k grouped, class-stratified folds; for each fold train the bundle on the other "
            "folds (a share of them held out for model selection) and evaluate it on the fold; then write "
            "OUTPUT/results.md and results.csv (mean ± std over folds, lesion / normal / all images), "
            "training_curves.png and per_case_boxplots.png. Rerunning with the same arguments skips the folds "
            "already evaluated."
        ),
    )
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder, e.g. bundles/dcnet_bundle")
    parser.add_argument(
        "--dataset-dir", type=Path, required=True, help="dataset in any supported layout, or a datalist JSON"
    )
    parser.add_argument("--folds", type=int, default=5, help="number of folds k (default: %(default)s)")
    parser.add_argument("--output", type=Path, required=True, help="output folder, one fold_<k>/ per fold")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of each fold's training images held out for checkpoint selection; 0 selects on the test "
        "fold itself, the optimistic protocol of many papers (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and validation splits")
    parser.add_argument(
        "--groups",
        default="auto",
        help="near-duplicate groups kept in one fold: auto (near_duplicate_groups.json beside the dataset), "
        "detect (find them), none, or a groups JSON (default: %(default)s)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="bundle config override for every fold, repeatable: --override max_epochs=50 "
        "--override 'image_size=[128,128]' --override resume=false; values are YAML, as in the config files",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        overrides = parse_overrides(args.override)
        crossval = CrossValidation(
            args.bundle, args.dataset_dir, args.folds, args.output, args.val_fraction, args.seed, args.groups, overrides
        )
    except (DataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    written = crossval.run()
    print((crossval.output / "results.md").read_text().split("## Per fold")[0].rstrip())
    for name, path in written.items():
        print(f"  {name + ':':24s}{path}")
    return 0

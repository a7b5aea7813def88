"""``lesionseg split``: write a grouped, class-stratified MONAI datalist for a dataset."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from lesionseg.data.datalist import write_datalist
from lesionseg.data.grouping import auto_groups_file
from lesionseg.data.io import DataError
from lesionseg.data.readers import natural_key
from lesionseg.data.splits import make_datalist


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "split",
        help="split a dataset into a MONAI datalist JSON (training/validation/test or cross-validation folds)",
        description=(
            "Splits SOURCE into training, validation and optionally test sections, stratified by class and "
            "keeping groups of near-duplicate images on one side, and writes a MONAI datalist whose paths "
            "are relative to the JSON's folder. The same arguments always give the same split. An existing "
            "OUTPUT is replaced only with --overwrite."
        ),
    )
    parser.add_argument("source", type=Path, help="BUSI folder, folder with images/ and masks/, or datalist JSON")
    parser.add_argument("-o", "--output", type=Path, required=True, help="datalist JSON to write")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="validation share (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=0.0, help="test share, held out first (default: 0)")
    parser.add_argument("--folds", type=int, help="number of cross-validation folds (needs --fold)")
    parser.add_argument("--fold", type=int, help="the fold that validates, 0 to FOLDS-1 (replaces --val-fraction)")
    parser.add_argument("--seed", type=int, default=0, help="shuffling seed (default: %(default)s)")
    parser.add_argument(
        "--groups",
        default="auto",
        help="near-duplicate groups: 'auto' (near_duplicate_groups.json beside the dataset, if any), 'detect' "
        "(find them from image thumbnails), 'none', or a groups JSON file (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output file (never the datalist being split or the groups file it reads)",
    )
    parser.set_defaults(func=run)


def _counts_table(datalist: dict[str, list[dict]]) -> str:
    classes = {item["class"] for items in datalist.values() for item in items if "class" in item}
    classes = sorted(classes, key=natural_key)
    rows = [["section", "total", *classes]]
    for name, items in datalist.items():
        counts = Counter(item.get("class") for item in items)
        rows.append([name, str(len(items)), *(str(counts[klass]) for klass in classes)])
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, in the command line's words (the library names its parameters)."""
    if (args.folds is None) != (args.fold is None):
        return "--folds and --fold go together: --folds K --fold k trains on K-1 folds and validates on fold k"
    if args.folds is not None and args.folds < 2:
        return f"--folds: need at least 2 folds, got {args.folds}"
    if args.folds is not None and not 0 <= args.fold < args.folds:
        return f"--fold: need 0 to {args.folds - 1} with --folds {args.folds}, got {args.fold}"
    for option, value in (("--val-fraction", args.val_fraction), ("--test-fraction", args.test_fraction)):
        if not 0.0 <= value < 1.0:  # NaN fails too
            return f"{option}: need a fraction in [0, 1), got {value}"
    if args.folds is None and args.val_fraction + args.test_fraction >= 1.0:
        return f"--val-fraction {args.val_fraction} and --test-fraction {args.test_fraction} leave no training data"
    if args.source.is_file() and args.output.resolve() == args.source.resolve():
        return f"{args.output}: is the datalist being split; write the split to another file"
    if args.output.exists():
        groups_file = _groups_file(args)
        if groups_file is not None and args.output.resolve() == groups_file.resolve():
            return f"{args.output}: is the near-duplicate groups file the split reads; write the split to another file"
        if not args.overwrite:
            # it may be the datalist a run depends on (it resumes only on the same images), or another JSON
            return f"{args.output}: exists; choose another file or pass --overwrite to replace it"
    return None


def _groups_file(args: argparse.Namespace) -> Path | None:
    """The groups file the split reads, if any (a bad SOURCE is reported when it is read, not here)."""
    if args.groups in ("detect", "none"):
        return None
    if args.groups != "auto":
        return Path(args.groups)
    try:
        return auto_groups_file(args.source)
    except DataError:
        return None


def run(args: argparse.Namespace) -> int:
    problem = _argument_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        datalist = make_datalist(
            args.source,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            num_folds=args.folds,
            fold=args.fold,
            seed=args.seed,
            groups=args.groups,
        )
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    split = f"fold {args.fold} of {args.folds}" if args.folds else f"validation fraction {args.val_fraction}"
    description = (
        f"lesionseg split of {args.source.name}: {split}, test fraction {args.test_fraction}, seed {args.seed}"
    )
    path = write_datalist(args.output, datalist, description=description)
    print(f"wrote {path}")
    print(_counts_table(datalist))
    return 0

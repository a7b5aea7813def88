"""k-fold cross-validation bookkeeping: fold datalists, each fold's files, and the tables and figures of all folds.

Running the folds (training and evaluating each one through a bundle) is the command line's job
(``lesionseg crossval``); this module holds what does not need a bundle:

- :func:`plan_folds` divides a dataset into ``k`` grouped, class-stratified folds
  (:func:`lesionseg.data.splits.kfold_split`: near-duplicate groups never straddle folds). Fold ``k`` is the
  ``"test"`` section of its datalist; the other folds are divided into ``"training"`` and ``"validation"``
  (model selection) with the same grouping and stratification, so the fold evaluated is never used to choose
  the checkpoint. With ``val_fraction=0`` the test fold also validates (the optimistic protocol of many papers).
- :class:`FoldPaths` names a fold's files under ``<output>/fold_<k>/``.
- :func:`write_results` reads the folds' ``summary.json`` and ``per_image.csv`` and writes ``results.md``,
  ``results.csv`` (mean ± std over folds), ``results_per_fold.csv``, ``results.json``, ``training_curves.png``
  and ``per_case_boxplots.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lesionseg.data.datalist import keep_or_write_datalist
from lesionseg.data.grouping import resolve_groups
from lesionseg.data.io import PathLike
from lesionseg.data.readers import read_dataset
from lesionseg.data.splits import kfold_split, train_val_test_split
from lesionseg.engines.training_log import epoch_curves
from lesionseg.metrics import (
    METRICS,
    format_table,
    read_per_image_csv,
    read_summary_json,
    summarise_folds,
    write_summary_json,
)
from lesionseg.utils.files import write_text_atomically

__all__ = ["FoldPaths", "SECTIONS", "plan_folds", "write_fold_datalists", "write_results"]

logger = logging.getLogger(__name__)

#: the sections of a fold's datalist
SECTIONS = ("training", "validation", "test")


@dataclass(frozen=True)
class FoldPaths:
    """The files of fold ``index`` under ``<output>/fold_<index>/``.

    ``datalist`` (the fold's sections), ``models`` (the bundle's ``ckpt_dir``), ``train`` (its ``output_dir``
    while training: TensorBoard logs), ``prepare`` (a bundle's preparation folder, e.g. TaiChiNet's easy/hard
    parts), ``epoch_log`` (:class:`lesionseg.engines.training_log.EpochLog`), ``trained`` (written when
    training finished), ``evaluation`` (the evaluate workflow's ``output_dir``) with ``summary`` and
    ``per_image``.
    """

    output: Path
    index: int

    @property
    def root(self) -> Path:
        return self.output / f"fold_{self.index}"

    @property
    def datalist(self) -> Path:
        return self.root / "datalist.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def prepare(self) -> Path:
        return self.root / "prepare"

    @property
    def epoch_log(self) -> Path:
        return self.root / "train" / "epochs.jsonl"

    @property
    def trained(self) -> Path:
        return self.root / "train" / "finished.json"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def summary(self) -> Path:
        return self.evaluation / "summary.json"

    @property
    def per_image(self) -> Path:
        return self.evaluation / "per_image.csv"


def plan_folds(
    source: PathLike,
    num_folds: int = 5,
    val_fraction: float = 0.2,
    seed: int = 0,
    groups: str | PathLike | Sequence[Sequence[str]] | None = "auto",
    stratify_key: str | None = "class",
) -> list[dict[str, list[dict]]]:
    """
    The datalist sections of each fold of a ``num_folds``-fold cross-validation of ``source``.

    Args:
        source: a dataset in any layout :func:`lesionseg.data.readers.read_dataset` reads (a datalist: all its
            labelled items).
        num_folds: k, at least 2.
        val_fraction: share of each fold's training folds held out for validation (model selection); 0: the test
            fold validates too.
        seed: seed of the folds and of the validation split.
        groups: near-duplicate groups, see :func:`lesionseg.data.grouping.resolve_groups` (``"auto"``: the
            ``near_duplicate_groups.json`` beside the dataset, if any).
        stratify_key: item key whose classes every fold gets in proportion.

    Returns:
        one ``{"training": [...], "validation": [...], "test": [...]}`` per fold; the test sections are disjoint
        and cover the dataset.

    Raises:
        ValueError: for a bad ``num_folds`` or ``val_fraction``, or when a validation section comes out empty.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    items = read_dataset(source)
    group_list = resolve_groups(groups, source, items)
    plan = []
    for index, test in enumerate(kfold_split(items, num_folds, seed, group_list, stratify_key)):
        test_ids = {id(item) for item in test}
        rest = [item for item in items if id(item) not in test_ids]
        if val_fraction > 0:
            inner = train_val_test_split(rest, val_fraction, 0.0, seed, group_list, stratify_key)
            if not inner["validation"] or not inner["training"]:
                raise ValueError(
                    f"fold {index}: {len(rest)} training images are too few to hold out a {val_fraction} validation "
                    "share; use more images, fewer folds or val_fraction 0."
                )
            training, validation = inner["training"], inner["validation"]
        else:
            training, validation = rest, test
        plan.append({"training": training, "validation": validation, "test": test})
    return plan


def write_fold_datalists(plan: Sequence[Mapping[str, Sequence[Mapping]]], output: PathLike) -> list[Path]:
    """
    Write each fold's datalist (:attr:`FoldPaths.datalist`), keeping those already written.

    A datalist already there must hold the planned images in every section
    (:func:`lesionseg.data.datalist.keep_or_write_datalist`): folds of a half-finished cross-validation must not
    change under it (e.g. because images were added to the dataset).

    Returns:
        the datalist paths, one per fold.

    Raises:
        ValueError: naming the file and the section, when an existing datalist differs from the plan.
    """
    return [
        keep_or_write_datalist(
            FoldPaths(Path(output), index).datalist,
            {section: sections[section] for section in SECTIONS},
            description=f"cross-validation fold {index} of {len(plan)}: test = fold {index}",
        )
        for index, sections in enumerate(plan)
    ]


def write_results(
    output: PathLike,
    num_folds: int,
    title: str = "Cross-validation",
    dice_key: str = "val_mean_dice",
    digits: int = 2,
) -> dict[str, Path]:
    """
    Tables and figures of a finished cross-validation in ``output``.

    Each fold's ``evaluation/summary.json`` gives its mean metrics over its test images; the table reports, per
    image group (lesion, normal, all), the mean ± sample std over the folds of those means (DC-Net, Tables I-II).
    The per-fold table reports mean ± std over each fold's images.

    Args:
        output: the cross-validation folder (holding ``fold_<k>/``).
        num_folds: k.
        title: heading of ``results.md`` and the figures.
        dice_key: the epoch-log key of the validation Dice drawn in the training curves.
        digits: decimals in the tables.

    Returns:
        name -> path of ``results.md``, ``results.csv``, ``results_per_fold.csv``, ``results.json``,
        ``training_curves.png`` and ``per_case_boxplots.png`` (the curves only when an epoch log exists).

    Raises:
        FileNotFoundError: naming the file, when a fold has no evaluation summary or per-image table.
    """
    from lesionseg.metrics.plots import plot_per_case_boxes, plot_training_curves

    output = Path(output)
    folds = [FoldPaths(output, index) for index in range(num_folds)]
    for fold in folds:
        for path in (fold.summary, fold.per_image):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: fold {fold.index} has not been evaluated.")
    summaries = [read_summary_json(fold.summary) for fold in folds]
    records = {f"fold {fold.index}": read_per_image_csv(fold.per_image) for fold in folds}
    over_folds = summarise_folds(summaries)
    groups = [name for name in ("lesion", "normal", "all") if over_folds.get(name, {}).get("n_images", 0) > 0]

    overall_rows = {name: over_folds[name] for name in groups}
    per_fold_rows: dict[str, Mapping[str, Any]] = {}
    for fold, summary in zip(folds, summaries):
        for name in ("lesion", "normal", "all"):
            if summary.get(name, {}).get("n", 0) > 0:
                per_fold_rows[f"fold {fold.index} {name} (n={summary[name]['n']})"] = summary[name]
    metrics = [metric for metric in METRICS if metric in over_folds["all"]]
    counts = {name: over_folds[name]["n_images"] for name in groups}
    table = format_table(overall_rows, metrics=metrics, digits=digits, label="images")
    per_fold_table = format_table(per_fold_rows, metrics=metrics, digits=digits, label="fold, images")
    described = ", ".join(f"{counts[name]} {name}" for name in groups if name != "all")
    markdown = (
        f"# {title}\n\n"
        f"{num_folds} grouped, class-stratified folds; {counts.get('all', 0)} test images in all ({described}).\n"
        f"Mean ± std over the {num_folds} folds of each fold's mean over its test images; Dice, IoU, precision,\n"
        "sensitivity, specificity and accuracy in %, HD95 in pixels (mm where the images have a spacing).\n"
        "Lesion images have a non-empty ground truth, normal images an empty one (see lesionseg.metrics for\n"
        "the empty-mask rules: a normal image scores Dice 1 when nothing is predicted, 0 otherwise; its\n"
        "sensitivity is undefined, n/a, and its precision 0 with a false alarm, undefined otherwise).\n\n"
        f"{table}\n"
        "## Per fold (mean ± std over the fold's test images)\n\n"
        f"{per_fold_table}\n"
        "![training curves](training_curves.png)\n\n"
        "![per-case box plots](per_case_boxplots.png)\n"
    )
    written = {
        "results.md": output / "results.md",
        "results.csv": output / "results.csv",
        "results_per_fold.csv": output / "results_per_fold.csv",
    }
    # each table whole or not at all: a crash here leaves the previous results of a resumed run readable
    write_text_atomically(written["results.md"], markdown)
    write_text_atomically(
        written["results.csv"], format_table(overall_rows, metrics, "csv", digits=digits, label="images")
    )
    per_fold_csv = format_table(per_fold_rows, metrics, "csv", digits=digits, label="fold, images")
    write_text_atomically(written["results_per_fold.csv"], per_fold_csv)
    written["results.json"] = write_summary_json(
        {"over_folds": over_folds, "folds": {f"fold {f.index}": s for f, s in zip(folds, summaries)}},
        output / "results.json",
    )

    curves = {
        f"fold {fold.index}": epoch_curves(fold.epoch_log, dice_key) for fold in folds if fold.epoch_log.is_file()
    }
    if curves:
        written["training_curves.png"] = plot_training_curves(curves, output / "training_curves.png", title=title)
    else:
        logger.warning("no fold has an epoch log (%s); training_curves.png not drawn", folds[0].epoch_log.name)
    all_records = [record for fold_records in records.values() for record in fold_records]
    written["per_case_boxplots.png"] = plot_per_case_boxes(
        {**records, "all folds": all_records}, output / "per_case_boxplots.png", title=f"{title}: per-case metrics"
    )
    return written

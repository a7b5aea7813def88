"""Checking a segmentation dataset for the problems that silently spoil training or evaluation.

:func:`inspect_dataset` reads every file once and reports, each as a :class:`Problem` naming its file:

errors (the data is wrong or unusable as it stands)
    an image listed twice (in a datalist), an image without mask, a mask without image, a file that is missing,
    empty, truncated, corrupt or not
    an image, a mask whose size differs from its image (or from the other masks of its case), a mask whose
    lesion pixels take several values (e.g. 128 beside 255: anti-aliasing, a JPEG-compressed mask or a
    label map; binarising at > 0 may not be what the annotator meant), and an empty mask in a lesion class
    (any class other than ``normal``).
warnings (usable, but worth a look)
    identical images (same pixels) that no groups file keeps together, which leak across a split, or that
    are filed under different classes; an empty mask where the dataset has no classes; a ``normal`` case
    whose mask marks a lesion; a blank image.
notes (information)
    identical images of one class already grouped (``near_duplicate_groups.json`` beside the dataset), and
    groups of near-duplicate images (thumbnail correlation, see :func:`lesionseg.data.grouping.find_groups`)
    that the groups file does not keep together.

Empty masks in the ``normal`` class are expected and only counted.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lesionseg.data.datalist import LABELLED_SECTIONS
from lesionseg.data.grouping import case_id, image_signature, resolve_groups, similar_groups
from lesionseg.data.io import DataError, PathLike, load_pixels, read_json, to_foreground, to_grayscale
from lesionseg.data.readers import natural_key, scan_dataset

__all__ = [
    "ERROR",
    "WARNING",
    "NOTE",
    "LESION_FREE_CLASSES",
    "Problem",
    "IntegrityReport",
    "inspect_dataset",
    "check_dataset",
]

ERROR, WARNING, NOTE = "error", "warning", "note"

#: classes whose masks are expected to be empty
LESION_FREE_CLASSES = ("normal",)

# distinct mask values listed in a message before the rest are counted
_MAX_VALUES_SHOWN = 6


@dataclass(frozen=True)
class Problem:
    """One finding about one file; ``str()`` gives ``"<path>: <message>"``.

    Args:
        path: the file concerned.
        message: what is wrong.
        severity: :data:`ERROR`, :data:`WARNING` or :data:`NOTE`.
    """

    path: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class IntegrityReport:
    """Everything :func:`inspect_dataset` found.

    Attributes:
        source: the dataset folder or datalist checked.
        layout: ``"busi"``, ``"folder_pair"`` or ``"datalist"``.
        problems: the findings, errors first, each group in file order.
        cases_per_class: paired cases by class (``"-"`` for items without one).
        multi_mask_per_class: cases with several mask files (merged into one) by class.
        empty_mask_per_class: cases whose (merged) mask is empty, by class.
        duplicate_sets: sets of identical images (two or more paths each).
        near_duplicate_groups: groups of near-duplicate case ids found from thumbnails.
        groups_file_groups: number of groups in the dataset's ``near_duplicate_groups.json`` (0 if none).
    """

    source: Path
    layout: str
    problems: list[Problem] = field(default_factory=list)
    cases_per_class: Counter = field(default_factory=Counter)
    multi_mask_per_class: Counter = field(default_factory=Counter)
    empty_mask_per_class: Counter = field(default_factory=Counter)
    duplicate_sets: list[list[str]] = field(default_factory=list)
    near_duplicate_groups: list[list[str]] = field(default_factory=list)
    groups_file_groups: int = 0

    def by_severity(self, severity: str) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == severity]

    @property
    def errors(self) -> list[Problem]:
        return self.by_severity(ERROR)

    def summary(self) -> str:
        """A few lines describing the dataset and counting the findings."""

        def per_class(counts: Counter) -> str:
            total = sum(counts.values())
            if set(counts) <= {"-"}:
                return str(total)
            return f"{total} (" + ", ".join(f"{k} {counts[k]}" for k in sorted(counts, key=natural_key)) + ")"

        layouts = {"busi": "BUSI class folders", "folder_pair": "images/ + masks/", "datalist": "MONAI datalist"}
        lines = [
            f"dataset: {self.source} ({layouts[self.layout]})",
            f"cases with image and mask: {per_class(self.cases_per_class)}",
            f"cases with several mask files, merged: {per_class(self.multi_mask_per_class)}",
            f"cases with an empty mask: {per_class(self.empty_mask_per_class)}",
            f"sets of identical images: {len(self.duplicate_sets)}",
            f"near-duplicate groups from thumbnails: {len(self.near_duplicate_groups)}; "
            + (f"groups file lists {self.groups_file_groups}" if self.groups_file_groups else "no groups file"),
            f"found: errors {len(self.errors)}, warnings {len(self.by_severity(WARNING))}, "
            f"notes {len(self.by_severity(NOTE))}",
        ]
        return "\n".join(lines)


def _format_values(values: np.ndarray) -> str:
    shown = [str(tuple(v.tolist())) if np.ndim(v) else str(v.item()) for v in values[:_MAX_VALUES_SHOWN]]
    more = f" and {len(values) - _MAX_VALUES_SHOWN} more" if len(values) > _MAX_VALUES_SHOWN else ""
    return ", ".join(shown) + more


def _lesion_values(pixels: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    # the distinct values (colours) of the foreground pixels
    values = pixels[foreground]
    if len(values) == 0 or (values == values[0]).all():
        return values[:1]
    return np.unique(values, axis=0)


def _check_case(item: Mapping, report: IntegrityReport, hashes: dict, signatures: list) -> None:
    image_path = item["image"]
    mask_paths = [item["label"]] if isinstance(item["label"], (str, os.PathLike)) else list(item["label"])
    klass = str(item.get("class", "-"))
    report.cases_per_class[klass] += 1
    if len(mask_paths) > 1:
        report.multi_mask_per_class[klass] += 1
    problems = report.problems
    try:
        image = to_grayscale(load_pixels(image_path))
    except DataError as error:
        problems.append(Problem(error.path, error.problem))
        image = None
    if image is not None:
        digest = hashlib.sha1(str(image.shape).encode() + image.tobytes()).hexdigest()
        hashes.setdefault(digest, []).append(item)
        signatures.append((case_id(item), image_signature(image)))
        if image.min() == image.max():
            problems.append(Problem(str(image_path), f"image is blank (every pixel is {image.min():g})", WARNING))
    reference = (image.shape, f"its image {image_path}") if image is not None else None
    merged, unusable = None, False
    for mask_path in mask_paths:
        try:
            pixels = load_pixels(mask_path)
        except DataError as error:
            problems.append(Problem(error.path, error.problem))
            unusable = True
            continue
        foreground = to_foreground(pixels)
        if reference is None:
            reference = (foreground.shape, f"mask {mask_path} of the same case")
        if foreground.shape != reference[0]:
            message = f"mask has shape {foreground.shape} (H, W) but {reference[1]} has {reference[0]}"
            problems.append(Problem(str(mask_path), message))
            unusable = True
            continue
        values = _lesion_values(pixels, foreground)
        if len(values) > 1:
            problems.append(
                Problem(
                    str(mask_path),
                    f"mask is not binary: its lesion pixels take {len(values)} values, {_format_values(values)} "
                    "(read as lesion wherever non-zero)",
                )
            )
        merged = foreground if merged is None else merged | foreground
    if merged is None or unusable:
        return  # whether the lesion mask is empty is unknown while part of it cannot be read
    lesion_pixels = int(merged.sum())
    first_mask = str(mask_paths[0])
    if lesion_pixels == 0:
        report.empty_mask_per_class[klass] += 1
        if klass == "-":
            problems.append(Problem(first_mask, "mask is empty (no lesion)", WARNING))
        elif klass not in LESION_FREE_CLASSES:
            problems.append(Problem(first_mask, f"mask is empty but the case is filed as {klass!r}, a lesion class"))
    elif klass in LESION_FREE_CLASSES:
        problems.append(
            Problem(first_mask, f"case is filed as {klass!r} but its mask marks {lesion_pixels} lesion pixels", WARNING)
        )


def _duplicate_problems(hashes: dict, grouped: dict[str, int], report: IntegrityReport) -> None:
    for same in hashes.values():
        if len(same) < 2:
            continue
        report.duplicate_sets.append([item["image"] for item in same])
        first = same[0]
        for other in same[1:]:
            classes = {str(first.get("class", "-")), str(other.get("class", "-"))}
            conflict = f"; filed as {' and '.join(sorted(classes))}" if len(classes) > 1 else ""
            together = grouped.get(case_id(first), -1) == grouped.get(case_id(other), -2)
            if together:
                advice = "grouped, so a split keeps them together"
            else:
                advice = "group them so a split keeps them together"
            # a class conflict is a labelling question whether or not the copies are grouped
            severity = WARNING if conflict or not together else NOTE
            message = f"same pixels as {first['image']}{conflict}; {advice}"
            report.problems.append(Problem(other["image"], message, severity))


def _near_duplicate_problems(
    signatures: Sequence[tuple[str, np.ndarray]],
    grouped: dict[str, int],
    images: dict[str, str],
    digests: dict[str, str],
    report: IntegrityReport,
) -> None:
    if not signatures:
        return
    cases = [case for case, _ in signatures]
    for group in similar_groups(np.stack([signature for _, signature in signatures])):
        members = sorted({cases[i] for i in group}, key=natural_key)
        if len(members) < 2:
            continue
        report.near_duplicate_groups.append(members)
        identical = len({digests[case] for case in members}) == 1  # reported as duplicates already
        if not identical and len({grouped.get(case, case) for case in members}) > 1:
            report.problems.append(
                Problem(
                    images[members[0]],
                    f"near-duplicates {', '.join(members)} are not grouped; a split could separate them "
                    "(lesionseg split --groups detect)",
                    NOTE,
                )
            )


def inspect_dataset(source: PathLike, progress: bool | None = False) -> IntegrityReport:
    """Check every file of a dataset in one pass and collect all findings (see the module docstring).

    Args:
        source: a dataset :func:`lesionseg.data.readers.read_dataset` reads (BUSI folder, images/ +
            masks/ folder, or datalist JSON).
        progress: show a progress bar on stderr (``None``: only on a terminal).

    Raises:
        DataError: naming ``source``, when it is not a dataset in a supported layout.
    """
    scan = scan_dataset(source)
    report = IntegrityReport(Path(scan.root), scan.layout)
    if scan.layout == "datalist":
        content = read_json(scan.root, "datalist file")
        for section in LABELLED_SECTIONS:
            if content.get(section) == []:
                report.problems.append(
                    Problem(
                        str(scan.root),
                        f"section {section!r} is empty; the bundles' training refuses it (it would write no model)",
                        WARNING,
                    )
                )
    for path in scan.images_without_mask:
        report.problems.append(Problem(str(path), "no mask found for this image"))
    for path in scan.masks_without_image:
        report.problems.append(Problem(str(path), "no image found for this mask"))
    # an image listed twice (a datalist can) is one error, checked once
    listed: dict[str, list[Mapping]] = {}
    for item in scan.items:
        listed.setdefault(os.path.normpath(os.path.abspath(item["image"])), []).append(item)
    for same in listed.values():
        if len(same) > 1:
            report.problems.append(
                Problem(
                    str(same[0]["image"]),
                    f"listed {len(same)} times; list each image once (an image in both training and validation "
                    "leaks into the evaluation)",
                )
            )
    hashes: dict[str, list[Mapping]] = {}
    signatures: list[tuple[str, np.ndarray]] = []
    unique = [same[0] for same in listed.values()]
    for item in tqdm(unique, desc="checking", unit="case", disable=None if progress is None else not progress):
        _check_case(item, report, hashes, signatures)
    groups = resolve_groups("auto", source, scan.items)
    report.groups_file_groups = len(groups)
    grouped = {case: index for index, group in enumerate(groups) for case in group}
    _duplicate_problems(hashes, grouped, report)
    images = {case_id(item): item["image"] for item in scan.items}
    digests = {case_id(item): digest for digest, same in hashes.items() for item in same}
    _near_duplicate_problems(signatures, grouped, images, digests, report)
    order = {ERROR: 0, WARNING: 1, NOTE: 2}
    report.problems.sort(key=lambda problem: order[problem.severity])
    return report


def check_dataset(source: PathLike, progress: bool | None = False) -> list[Problem]:
    """All problems :func:`inspect_dataset` finds in a dataset, errors first, then warnings, then notes."""
    return inspect_dataset(source, progress).problems

"""
Where a model's lesion Dice is lost: by class, by lesion size, and which kind of error its poor images show.

A mean Dice over images says how much is lost, not where. Two models with the same mean can fail on
different images: one on small lesions (a few misplaced pixels cost a small lesion most of its Dice), the
other on large malignant ones. The breakdown reads a ``per_image.csv`` (:func:`lesionseg.metrics.read_per_image_csv`)
and keeps its lesion images (``gt_pixels > 0``):

- mean Dice per value of the ``class`` column (BUSI: benign, malignant), when the table has one;
- mean Dice per tercile of lesion area (the ground truth's pixel count at the image's own size). The tercile
  edges come from the images themselves (:func:`lesion_size_edges`); pass the same edges to compare models
  scored on the same images;
- the poor images (Dice < :data:`POOR_DICE`), split into over-segmented (the predicted area is larger than the
  lesion's: the model marks tissue around or beside the lesion) and under-segmented (smaller: the model
  misses part of the lesion, or all of it), and the misses among them (Dice < :data:`MISSED_DICE`).

:func:`dice_by_share` groups the same kind of per-image Dice by a share each image has, such as how much of its
lesion TaiChiNet's prepared easy part covers.

Example:
    >>> rows = [
    ...     {"class": "benign", "dice": 0.9, "gt_pixels": 100, "pred_pixels": 110},
    ...     {"class": "benign", "dice": 0.2, "gt_pixels": 400, "pred_pixels": 2000},
    ...     {"class": "malignant", "dice": 0.0, "gt_pixels": 900, "pred_pixels": 0},
    ...     {"class": "normal", "dice": float("nan"), "gt_pixels": 0, "pred_pixels": 0},
    ... ]
    >>> result = dice_breakdown(rows)
    >>> result.n, result.by_class["benign"].mean, result.poor, result.over_segmented, result.missed
    (3, 0.55, 2, 1, 1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "POOR_DICE",
    "MISSED_DICE",
    "SIZE_GROUPS",
    "GroupDice",
    "DiceBreakdown",
    "SHARE_GROUPS",
    "lesion_size_edges",
    "dice_breakdown",
    "dice_by_share",
]

#: Below this Dice an image counts as poorly segmented.
POOR_DICE = 0.5
#: Below this Dice a lesion counts as missed (the TaiChiNet model card's "lesions missed").
MISSED_DICE = 0.1
#: The lesion-area terciles, smallest first.
SIZE_GROUPS = ("small", "medium", "large")
#: :func:`dice_by_share`'s groups: no share, under 20 %, 20 % to under 50 %, 50 % or more.
SHARE_GROUPS = ("none", "under 20 %", "20-50 %", "50 % or more")


@dataclass(frozen=True)
class GroupDice:
    """Mean lesion Dice of a group of images (NaN for an empty group) and the number of images in it."""

    mean: float
    n: int

    @classmethod
    def of(cls, scores: Sequence[float]) -> "GroupDice":
        """The group of these Dice scores."""
        return cls(float(np.mean(scores)) if len(scores) else math.nan, len(scores))


@dataclass(frozen=True)
class DiceBreakdown:
    """:func:`dice_breakdown`'s result.

    Attributes:
        n: lesion images.
        by_class: class -> its images' Dice (empty when the table has no class).
        by_size: :data:`SIZE_GROUPS` name -> its images' Dice.
        size_edges: the tercile edges in pixels: small <= edges[0] < medium <= edges[1] < large.
        poor: images with Dice < :data:`POOR_DICE`.
        over_segmented: poor images whose predicted area is larger than the lesion's.
        missed: images with Dice < :data:`MISSED_DICE` (also counted in ``poor``).
    """

    n: int
    by_class: dict[str, GroupDice]
    by_size: dict[str, GroupDice]
    size_edges: tuple[float, float]
    poor: int
    over_segmented: int
    missed: int

    @property
    def under_segmented(self) -> int:
        """The other poor images: prediction no larger than the lesion, misses included."""
        return self.poor - self.over_segmented


def lesion_size_edges(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """The lesion-area tercile edges (pixels) of the lesion images in ``rows``: the 1/3 and 2/3 quantiles of
    ``gt_pixels`` (numpy's linear interpolation).

    Raises:
        ValueError: when ``rows`` holds no lesion image.
    """
    areas = [row["gt_pixels"] for row in rows if row["gt_pixels"] > 0]
    if not areas:
        raise ValueError("no lesion image (gt_pixels > 0) to take lesion-size terciles from.")
    low, high = np.quantile(np.asarray(areas, dtype=float), [1 / 3, 2 / 3])
    return float(low), float(high)


def dice_breakdown(rows: Sequence[Mapping[str, Any]], size_edges: tuple[float, float] | None = None) -> DiceBreakdown:
    """Break the lesion images' Dice of one evaluation down by class, lesion size and kind of error.

    Args:
        rows: one record per image with ``dice``, ``gt_pixels`` and ``pred_pixels`` and optionally ``class``
            (:func:`lesionseg.metrics.read_per_image_csv`'s records). Normal images (``gt_pixels == 0``) are
            left out.
        size_edges: tercile edges in pixels (:func:`lesion_size_edges`); the edges of ``rows`` when ``None``.

    Raises:
        ValueError: when ``rows`` holds no lesion image, or a lesion image's Dice is not a number in [0, 1].
    """
    lesions = [row for row in rows if row["gt_pixels"] > 0]
    edges = lesion_size_edges(rows) if size_edges is None else (float(size_edges[0]), float(size_edges[1]))
    for row in lesions:
        if not 0.0 <= row["dice"] <= 1.0:  # NaN fails too: a lesion image always has a Dice
            raise ValueError(f"lesion image {row.get('image', row)!r} has Dice {row['dice']!r}, not in [0, 1].")
    classes = sorted({row["class"] for row in lesions if row.get("class")})
    by_class = {name: GroupDice.of([r["dice"] for r in lesions if r.get("class") == name]) for name in classes}
    size_of = [0 if r["gt_pixels"] <= edges[0] else 1 if r["gt_pixels"] <= edges[1] else 2 for r in lesions]
    by_size = {
        name: GroupDice.of([r["dice"] for r, s in zip(lesions, size_of) if s == i])
        for i, name in enumerate(SIZE_GROUPS)
    }
    poor = [row for row in lesions if row["dice"] < POOR_DICE]
    over = sum(row["pred_pixels"] > row["gt_pixels"] for row in poor)
    return DiceBreakdown(
        n=len(lesions),
        by_class=by_class,
        by_size=by_size,
        size_edges=edges,
        poor=len(poor),
        over_segmented=over,
        missed=sum(row["dice"] < MISSED_DICE for row in lesions),
    )


def dice_by_share(dice: Mapping[str, float], share: Mapping[str, float]) -> dict[str, GroupDice]:
    """Mean Dice of the images grouped by a share in [0, 1] that each image has, e.g. how much of its lesion
    TaiChiNet's easy part covers (:func:`lesionseg.engines.easy_hard.part_shares`).

    Args:
        dice: case -> Dice (a ``per_image.csv``'s ``case`` and ``dice``).
        share: case -> share; only the cases in both mappings count.

    Returns:
        :data:`SHARE_GROUPS` name -> its images' Dice: share 0, under 0.2, 0.2 to under 0.5, 0.5 or more.

    Raises:
        ValueError: when no case is in both, or a share is not in [0, 1] or a Dice not in [0, 1].

    Example:
        >>> groups = dice_by_share({"a": 0.1, "b": 0.9, "c": 0.8}, {"a": 0.05, "b": 0.6, "c": 0.7})
        >>> groups["under 20 %"].mean, groups["50 % or more"].n, groups["none"].n
        (0.1, 2, 0)
    """
    cases = [case for case in dice if case in share]
    if not cases:
        raise ValueError("no case has both a Dice and a share.")
    members: dict[str, list[float]] = {name: [] for name in SHARE_GROUPS}
    for case in cases:
        value, score = float(share[case]), float(dice[case])
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"case {case!r} has share {value!r}, not in [0, 1].")
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"case {case!r} has Dice {score!r}, not in [0, 1].")
        group = 0 if value == 0 else 1 if value < 0.2 else 2 if value < 0.5 else 3
        members[SHARE_GROUPS[group]].append(score)
    return {name: GroupDice.of(scores) for name, scores in members.items()}

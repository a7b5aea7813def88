"""
Mean ± standard deviation of per-image metrics over images, split into lesion and normal images, and over folds.

The papers report mean ± std over test images (TaiChiNet, Tables II-VI) and over cross-validation folds
(DC-Net, Tables I-II). TaiChiNet's Table IV gives BUSI results with and without its normal images (empty
ground truth), so :func:`summarise` reports three groups — ``"all"``, ``"lesion"`` (non-empty ground truth)
and ``"normal"`` (empty ground truth) — and, optionally, one group per value of a record field such as the
BUSI class. Metrics that are undefined for an image (NaN, see :mod:`lesionseg.metrics.per_image`) are left out
of that metric's mean and std, and each metric reports the number of images it used.

A summary is a dict mapping a group name to a group summary::

    {"all": {"n": 3, "dice": {"mean": 0.7, "std": 0.1, "count": 3}, ...}, "lesion": {...}, "normal": {...}}

where ``n`` is the number of images (or, after :func:`summarise_folds`, of folds) in the group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .per_image import DISTANCE_METRICS, OVERLAP_METRICS

__all__ = ["METRICS", "summarise", "summarise_folds", "mean_std"]

#: Metric keys that :func:`summarise` looks for in a record, in table order.
METRICS = OVERLAP_METRICS + DISTANCE_METRICS


def mean_std(values: Sequence[float], ddof: int = 1) -> dict[str, float | int]:
    """
    Mean and standard deviation of the finite values, ignoring NaN.

    Args:
        values: the values; NaN marks an undefined value and is skipped.
        ddof: delta degrees of freedom of the std; 1 (the default) gives the sample standard deviation.

    Returns:
        ``{"mean": ..., "std": ..., "count": ...}``, ``count`` being the number of values used. The mean is NaN
        when no value is left, the std when ``count <= ddof``.

    Raises:
        ValueError: when a value is infinite (an undefined metric must be NaN, not inf).

    Example:
        >>> mean_std([1.0, float("nan"), 3.0])
        {'mean': 2.0, 'std': 1.4142135623730951, 'count': 2}
    """
    array = np.asarray(values, dtype=float).reshape(-1)
    if np.isinf(array).any():
        raise ValueError(f"values must be finite or NaN, got {array.tolist()}.")
    used = array[~np.isnan(array)]
    count = int(used.size)
    mean = float(used.mean()) if count > 0 else math.nan
    std = float(used.std(ddof=ddof)) if count > ddof else math.nan
    return {"mean": mean, "std": std, "count": count}


def summarise(
    records: Sequence[Mapping[str, Any]], group_key: str | None = None, ddof: int = 1
) -> dict[str, dict[str, Any]]:
    """
    Mean ± std of each metric over images, for all images, lesion images and normal images.

    Args:
        records: one dict per image, as returned by :func:`lesionseg.metrics.compute_image_metrics`, possibly
            with extra fields (case name, class, ...). Each needs ``gt_pixels`` (0 for a normal image); the
            metrics summarised are those of :data:`METRICS` present in the first record.
        group_key: a record field (e.g. ``"class"``); when given, the summary also has a group
            ``"<group_key>=<value>"`` for each of its values, in order of first appearance.
        ddof: delta degrees of freedom of the std (1: sample standard deviation).

    Returns:
        a dict mapping group name to ``{"n": number of images, <metric>: {"mean", "std", "count"}, ...}``. The
        groups ``"all"``, ``"lesion"`` and ``"normal"`` are always present (a group without images has n = 0 and
        NaN means).

    Raises:
        ValueError: when ``records`` is empty, or a record lacks ``gt_pixels``, ``group_key`` or a metric of the
            first record.

    Example:
        >>> records = [
        ...     {"case": "a", "dice": 0.8, "sensitivity": 0.9, "gt_pixels": 40},
        ...     {"case": "b", "dice": 0.6, "sensitivity": 0.7, "gt_pixels": 25},
        ...     {"case": "c", "dice": 1.0, "sensitivity": float("nan"), "gt_pixels": 0},
        ... ]
        >>> summary = summarise(records)
        >>> summary["lesion"]["dice"]["mean"], summary["normal"]["dice"]["mean"], summary["all"]["n"]
        (0.7, 1.0, 3)
        >>> summary["all"]["sensitivity"]["count"]  # the normal image has no sensitivity
        2
    """
    if len(records) == 0:
        raise ValueError("records is empty: nothing to summarise.")
    metrics = [name for name in METRICS if name in records[0]]
    required = ["gt_pixels", *metrics] + ([group_key] if group_key is not None else [])
    for index, record in enumerate(records):
        missing = [key for key in required if key not in record]
        if missing:
            raise ValueError(f"records[{index}] lacks the field(s) {missing}.")

    groups: dict[str, list[Mapping[str, Any]]] = {
        "all": list(records),
        "lesion": [record for record in records if record["gt_pixels"] > 0],
        "normal": [record for record in records if record["gt_pixels"] == 0],
    }
    if group_key is not None:
        for record in records:
            groups.setdefault(f"{group_key}={record[group_key]}", []).append(record)
    return {
        name: {
            "n": len(members),
            **{metric: mean_std([record[metric] for record in members], ddof=ddof) for metric in metrics},
        }
        for name, members in groups.items()
    }


def summarise_folds(per_fold_summaries: Sequence[Mapping[str, Mapping[str, Any]]], ddof: int = 1) -> dict[str, Any]:
    """
    Mean ± std over cross-validation folds of the per-fold means, as the DC-Net paper reports.

    Args:
        per_fold_summaries: one summary per fold, as returned by :func:`summarise`.
        ddof: delta degrees of freedom of the std over folds (1: sample standard deviation).

    Returns:
        a summary of the same form, with each group of any fold: ``n`` is the number of folds that have the
        group, ``n_images`` their total number of images, and each metric's ``count`` the number of folds
        whose mean for it is defined (a fold's NaN mean is skipped).

    Raises:
        ValueError: when ``per_fold_summaries`` is empty or a fold's group lacks a metric of the first fold.

    Example:
        >>> folds = [summarise([{"dice": d, "gt_pixels": 9}]) for d in (0.7, 0.8, 0.9)]
        >>> dice = summarise_folds(folds)["lesion"]["dice"]
        >>> round(dice["mean"], 6), round(dice["std"], 6), dice["count"]
        (0.8, 0.1, 3)
    """
    if len(per_fold_summaries) == 0:
        raise ValueError("per_fold_summaries is empty: nothing to summarise.")
    result: dict[str, Any] = {}
    group_names = list(dict.fromkeys(name for summary in per_fold_summaries for name in summary))
    for name in group_names:
        folds = [(index, summary[name]) for index, summary in enumerate(per_fold_summaries) if name in summary]
        metrics = [key for key in folds[0][1] if isinstance(folds[0][1][key], Mapping)]
        for index, group in folds:
            missing = [metric for metric in metrics if metric not in group]
            if missing:
                raise ValueError(f"per_fold_summaries[{index}][{name!r}] lacks the metric(s) {missing}.")
        result[name] = {
            "n": len(folds),
            "n_images": sum(int(group["n"]) for _, group in folds),
            **{metric: mean_std([group[metric]["mean"] for _, group in folds], ddof=ddof) for metric in metrics},
        }
    return result

"""
Per-image binary segmentation metrics (Dice, IoU, precision, sensitivity, specificity, accuracy, HD95) on MONAI.

Both papers score each test image separately and then average over images: DC-Net (Ning et al., Section IV-A)
reports Dice, m-IoU, precision and the 95 % Hausdorff distance (95HD); TaiChiNet (Table IV, Eq. 25-28) reports
JA = TP / (TP + FP + FN), DI = 2TP / (2TP + FP + FN), ACC = (TP + TN) / (TP + FP + FN + TN), SE = TP / (TP + FN)
and PR = TP / (TP + FP). The values come from MONAI: :func:`monai.metrics.compute_dice` and
:func:`monai.metrics.compute_iou` (``ignore_empty=False``), :func:`monai.metrics.get_confusion_matrix` with
:func:`monai.metrics.compute_confusion_matrix_metric`, and :func:`monai.metrics.compute_hausdorff_distance`
(``percentile=95``, symmetric, Euclidean). MONAI's HD95 takes the boundary pixels of each mask (foreground
pixels with a 4-connected background neighbour, pixels outside the image counting as background), the
distance from every boundary pixel of one mask to the nearest boundary pixel of the other (scaled by the
spacing), the 95th percentile of each direction with linear interpolation, and the larger of the two.

Empty masks. BUSI's normal images have an empty ground truth, and a model may predict nothing on a lesion
image, so every metric needs a value for empty masks. This module uses the convention below; values in bold
replace MONAI's answer, which is NaN there (MONAI's HD95 is NaN whenever a mask is empty, its precision NaN
for an empty prediction). Dice and IoU are MONAI's with ``ignore_empty=False``; with its default
(``ignore_empty=True``) they would be NaN for every normal image.

=====================  =======  =======  =========  ===========  ===========  ========  ======================
ground truth / pred.   dice     iou      precision  sensitivity  specificity  accuracy  hd95, hd95_mm
=====================  =======  =======  =========  ===========  ===========  ========  ======================
lesion / lesion        formula  formula  formula    formula      formula      formula   MONAI's HD95
lesion / empty         0        0        **0**      0            1            formula   **empty_distance**
empty / lesion         0        0        0          NaN          formula      formula   **empty_distance**
empty / empty          1        1        NaN        NaN          1            1         **0**
=====================  =======  =======  =========  ===========  ===========  ========  ======================

Reasons:

- empty / empty is a correct "no lesion" answer: the two masks are identical, so Dice = IoU = 1 and the
  Hausdorff distance between the (equal) sets is 0, the values the MetricsReloaded package
  (Project-MONAI/MetricsReloaded; Maier-Hein et al., "Metrics reloaded", Nat. Methods 2024) gives for Dice
  and HD95. (It gives NaN for IoU there; 1 keeps IoU = Dice / (2 - Dice) on every image.) Precision and
  sensitivity count nothing (TP + FP = TP + FN = 0) and stay NaN: there is no lesion to find and no claim made.
- lesion / empty is a missed lesion. Precision TP / (TP + FP) is 0 / 0 here; it is set to 0, as
  MetricsReloaded does, so that a model is not rewarded for abstaining on hard images and every overlap
  metric is defined on every lesion image (the population the papers' "without normal cases" rows average).
- empty / lesion is a false alarm: every predicted pixel is wrong, so precision is 0 by its formula;
  sensitivity has no lesion to measure and is NaN. Dice, IoU, precision and specificity already penalise it.
- A Hausdorff distance to an empty set is infinite. By default (``empty_distance="nan"``) HD95 is NaN when
  exactly one mask is empty, so a mean over images skips it; the summaries report how many images each mean
  uses. ``empty_distance="diagonal"`` gives instead the largest distance possible in the image,
  sqrt(((H - 1) s_row)^2 + ((W - 1) s_col)^2), an upper bound of HD95 for any two non-empty masks.
- Specificity TN / (TN + FP) is NaN only when the ground truth covers the whole image.

The TaiChiNet paper's Table IV "with normal cases" rows cannot be compared with this convention. With 133
normal images among 780, a normal image scoring 0 on DI, JA, PR and SE scales the lesion-only values by
647 / 780, giving DI 0.69, JA 0.62, PR 0.70, SE 0.73 for TaiChiNet, close to the reported 0.673, 0.624,
0.675, 0.738. That suggests (the paper does not say) an implementation in which a correct empty prediction
scores 0 / (0 + eps) = 0. The summaries here report lesion and normal images separately instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)

__all__ = ["OVERLAP_METRICS", "DISTANCE_METRICS", "compute_image_metrics", "compute_batch_metrics"]

#: Metrics in [0, 1], in the order they are returned.
OVERLAP_METRICS = ("dice", "iou", "precision", "sensitivity", "specificity", "accuracy")
#: Distance metrics: HD95 in pixels, and in millimetres when a spacing is given.
DISTANCE_METRICS = ("hd95", "hd95_mm")

_CONFUSION_METRICS = ("precision", "sensitivity", "specificity", "accuracy")
_EMPTY_DISTANCES = ("nan", "diagonal")

Spacing = Sequence[float]


def compute_batch_metrics(
    y_pred: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    spacing: Spacing | Sequence[Spacing] | None = None,
    empty_distance: Literal["nan", "diagonal"] = "nan",
) -> list[dict[str, float | int]]:
    """
    Per-image metrics for a batch of binary masks, with the empty-mask convention of :mod:`lesionseg.metrics.per_image`.

    Args:
        y_pred: predicted masks, shape (B, 1, H, W), numpy or torch; any non-zero value is foreground.
        y: ground-truth masks, same shape; any non-zero value is foreground.
        spacing: pixel size in mm as (row, col), one pair for the whole batch or a sequence of B pairs.
            When given, each dict also holds ``hd95_mm``.
        empty_distance: HD95 when exactly one of the two masks is empty: ``"nan"`` (undefined) or
            ``"diagonal"`` (the image diagonal, the largest distance in the image).

    Returns:
        one dict per image with ``dice``, ``iou``, ``precision``, ``sensitivity``, ``specificity``,
        ``accuracy``, ``hd95`` (pixels), ``hd95_mm`` (only when ``spacing`` is given) as floats, and the
        foreground pixel counts ``gt_pixels`` and ``pred_pixels`` as ints (``gt_pixels == 0`` marks a normal
        image for :func:`lesionseg.metrics.summarise`).

    Raises:
        ValueError: when the shapes differ or are not (B, 1, H, W), when ``spacing`` is not one or B positive
            (row, col) pairs, or when ``empty_distance`` is unknown.

    Example:
        >>> import torch
        >>> y = torch.zeros(2, 1, 8, 8)
        >>> y[0, 0, 2:6, 2:6] = 1  # a lesion image; the second image is normal
        >>> y_pred = torch.zeros(2, 1, 8, 8)
        >>> y_pred[0, 0, 2:6, 2:4] = 1  # half the lesion found; nothing predicted on the normal image
        >>> lesion, normal = compute_batch_metrics(y_pred, y)
        >>> round(lesion["dice"], 4), lesion["precision"], lesion["sensitivity"]
        (0.6667, 1.0, 0.5)
        >>> normal["dice"], normal["hd95"], normal["precision"]
        (1.0, 0.0, nan)
    """
    if empty_distance not in _EMPTY_DISTANCES:
        raise ValueError(f"empty_distance must be one of {_EMPTY_DISTANCES}, got {empty_distance!r}.")
    pred = _as_binary(y_pred, "y_pred")
    gt = _as_binary(y, "y")
    if pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"y_pred must have shape (B, 1, H, W), got {tuple(pred.shape)}.")
    if gt.shape != pred.shape:
        raise ValueError(f"y must have the shape of y_pred {tuple(pred.shape)}, got {tuple(gt.shape)}.")
    batch_size, _, height, width = pred.shape
    spacings = _batch_spacing(spacing, batch_size)

    gt_pixels = gt.flatten(1).sum(1).long()
    pred_pixels = pred.flatten(1).sum(1).long()
    gt_empty, pred_empty = gt_pixels == 0, pred_pixels == 0

    values = {
        "dice": compute_dice(pred, gt, include_background=True, ignore_empty=False)[:, 0],
        "iou": compute_iou(pred, gt, include_background=True, ignore_empty=False)[:, 0],
    }
    confusion = get_confusion_matrix(pred, gt, include_background=True)
    for name in _CONFUSION_METRICS:
        values[name] = compute_confusion_matrix_metric(name, confusion)[:, 0]
    # a missed lesion: precision is 0 / 0 there; scored 0 (see the module docstring)
    values["precision"] = torch.where(~gt_empty & pred_empty, 0.0, values["precision"])

    image_size = (height, width)
    values["hd95"] = _hd95(pred, gt, gt_empty, pred_empty, [(1.0, 1.0)] * batch_size, image_size, empty_distance)
    if spacings is not None:
        values["hd95_mm"] = _hd95(pred, gt, gt_empty, pred_empty, spacings, image_size, empty_distance)

    names = [name for name in OVERLAP_METRICS + DISTANCE_METRICS if name in values]
    return [
        {
            **{name: float(values[name][i]) for name in names},
            "gt_pixels": int(gt_pixels[i]),
            "pred_pixels": int(pred_pixels[i]),
        }
        for i in range(batch_size)
    ]


def compute_image_metrics(
    y_pred: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    spacing: Spacing | None = None,
    empty_distance: Literal["nan", "diagonal"] = "nan",
) -> dict[str, float | int]:
    """
    Metrics of one binary prediction against its ground truth; :func:`compute_batch_metrics` for one image.

    Args:
        y_pred: predicted mask, shape (H, W), numpy or torch; any non-zero value is foreground.
        y: ground-truth mask, same shape.
        spacing: pixel size in mm as (row, col); when given, the dict also holds ``hd95_mm``.
        empty_distance: HD95 when exactly one mask is empty, ``"nan"`` or ``"diagonal"``.

    Returns:
        the dict described in :func:`compute_batch_metrics`.

    Raises:
        ValueError: when a mask is not 2-D or the shapes differ, and as :func:`compute_batch_metrics`.

    Example:
        >>> import numpy as np
        >>> y = np.zeros((6, 6), dtype=bool)
        >>> y[1:3, 1:3] = True
        >>> metrics = compute_image_metrics(np.zeros((6, 6)), y, spacing=(0.5, 0.5), empty_distance="diagonal")
        >>> metrics["dice"], metrics["precision"], metrics["hd95"], metrics["hd95_mm"]  # a missed lesion
        (0.0, 0.0, 7.0710678118654755, 3.5355339059327378)
    """
    pred, gt = _as_binary(y_pred, "y_pred"), _as_binary(y, "y")
    for name, mask in (("y_pred", pred), ("y", gt)):
        if mask.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {tuple(mask.shape)}.")
    return compute_batch_metrics(pred[None, None], gt[None, None], spacing=spacing, empty_distance=empty_distance)[0]


def _as_binary(mask: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """A float tensor of 0 and 1, 1 where ``mask`` is non-zero."""
    if not isinstance(mask, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(mask).__name__}.")
    return (torch.as_tensor(mask) != 0).float()


def _batch_spacing(spacing: Spacing | Sequence[Spacing] | None, batch_size: int) -> list[tuple[float, float]] | None:
    """``spacing`` as B (row, col) pairs of positive floats, or None."""
    if spacing is None:
        return None
    problem = ValueError(f"spacing must be a positive (row, col) pair or {batch_size} such pairs, got {spacing!r}.")
    try:
        array = np.asarray(spacing, dtype=float)
    except (TypeError, ValueError) as error:  # ragged or non-numeric
        raise problem from error
    if array.shape == (2,):
        array = np.broadcast_to(array, (batch_size, 2))
    if array.shape != (batch_size, 2) or not np.all(np.isfinite(array) & (array > 0)):
        raise problem
    return [(float(row), float(col)) for row, col in array]


def _hd95(
    pred: torch.Tensor,
    gt: torch.Tensor,
    gt_empty: torch.Tensor,
    pred_empty: torch.Tensor,
    spacings: list[tuple[float, float]],
    image_size: tuple[int, int],
    empty_distance: str,
) -> torch.Tensor:
    """HD95 per image: MONAI's where both masks are non-empty, the empty-mask convention elsewhere."""
    height, width = image_size
    gt_empty, pred_empty = gt_empty.cpu(), pred_empty.cpu()
    if empty_distance == "nan":
        one_empty = torch.full(gt_empty.shape, math.nan, dtype=torch.float64)
    else:
        diagonals = [math.hypot((height - 1) * row, (width - 1) * col) for row, col in spacings]
        one_empty = torch.tensor(diagonals, dtype=torch.float64)
    hd95 = torch.where(gt_empty & pred_empty, 0.0, one_empty)
    # only pairs of non-empty masks go to MONAI, which would answer NaN (and warn) for the others
    both = torch.nonzero(~gt_empty & ~pred_empty).flatten()
    if len(both) > 0:
        distances = compute_hausdorff_distance(
            pred[both], gt[both], include_background=True, percentile=95, spacing=[spacings[i] for i in both.tolist()]
        )
        hd95[both] = distances[:, 0].cpu().double()
    return hd95

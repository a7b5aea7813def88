"""Where the lesion Dice is lost: class, lesion-size terciles and the kind of error, counted by hand."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from lesionseg.metrics import breakdown, compute_image_metrics, read_per_image_csv, write_per_image_csv
from lesionseg.metrics.breakdown import SHARE_GROUPS, SIZE_GROUPS, dice_breakdown, dice_by_share, lesion_size_edges

# MONAI 1.6.1's own Hausdorff code passes its deprecated `always_return_as_numpy` argument to get_mask_edges
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def row(cls, dice, gt, pred, image=""):
    return {"image": image, "class": cls, "dice": dice, "gt_pixels": gt, "pred_pixels": pred}


# six lesion images, areas 10 ... 60 (terciles: 10, 20 | 30, 40 | 50, 60), and a normal image
ROWS = [
    row("benign", 0.90, 10, 12),
    row("benign", 0.30, 20, 80),  # poor, over-segmented
    row("malignant", 0.05, 30, 0),  # missed, under-segmented
    row("benign", 0.80, 40, 35),
    row("malignant", 0.45, 50, 20),  # poor, under-segmented
    row("malignant", 0.70, 60, 70),
    row("normal", math.nan, 0, 5),
]


def test_groups_and_error_kinds_counted_by_hand():
    result = dice_breakdown(ROWS)
    assert result.n == 6
    assert result.size_edges == pytest.approx((10 + 50 / 3, 10 + 100 / 3))  # numpy's linear quantiles of 10..60
    assert set(result.by_class) == {"benign", "malignant"}  # the normal image is not a lesion image
    assert result.by_class["benign"].mean == pytest.approx((0.90 + 0.30 + 0.80) / 3)
    assert result.by_class["malignant"].n == 3
    assert result.by_class["malignant"].mean == pytest.approx((0.05 + 0.45 + 0.70) / 3)
    assert [result.by_size[name].n for name in SIZE_GROUPS] == [2, 2, 2]
    assert result.by_size["small"].mean == pytest.approx((0.90 + 0.30) / 2)
    assert result.by_size["medium"].mean == pytest.approx((0.05 + 0.80) / 2)
    assert result.by_size["large"].mean == pytest.approx((0.45 + 0.70) / 2)
    assert (result.poor, result.over_segmented, result.under_segmented, result.missed) == (3, 1, 2, 1)


def test_given_edges_group_two_models_over_the_same_images():
    edges = lesion_size_edges(ROWS)
    other = [dict(r, dice=1.0 if r["gt_pixels"] else math.nan, pred_pixels=r["gt_pixels"]) for r in ROWS]
    result = dice_breakdown(other[:3], size_edges=edges)  # alone, its own terciles would split 10 / 20 / 30
    assert [result.by_size[name].n for name in SIZE_GROUPS] == [2, 1, 0]
    assert math.isnan(result.by_size["large"].mean)
    assert (result.poor, result.missed) == (0, 0)
    # an area on an edge belongs to the lower group
    assert dice_breakdown([row("a", 1.0, 5, 5), row("a", 1.0, 7, 7)], size_edges=(5, 6)).by_size["small"].n == 1


def test_a_table_without_classes_and_one_read_from_csv(tmp_path):
    result = dice_breakdown([dict(r, **{"class": None}) for r in ROWS])
    assert result.by_class == {}
    assert result.poor == 3

    gt = np.zeros((8, 8), dtype=np.uint8)
    gt[2:6, 2:6] = 1
    pred = np.zeros_like(gt)
    pred[0:8, 0:8] = 1  # marks the whole image: poor and over-segmented
    records = [{"image": "/d/x.png", "case": "x", "class": "benign", **compute_image_metrics(pred, gt)}]
    path = write_per_image_csv(records, tmp_path / "per_image.csv")
    result = dice_breakdown(read_per_image_csv(path))
    assert result.by_class["benign"].mean == pytest.approx(2 * 16 / (16 + 64))
    assert (result.poor, result.over_segmented, result.under_segmented) == (1, 1, 0)


def test_bad_tables_get_clear_errors():
    with pytest.raises(ValueError, match="no lesion image"):
        dice_breakdown([row("normal", math.nan, 0, 0)])
    with pytest.raises(ValueError, match=r"b\.png.*not in \[0, 1\]"):
        dice_breakdown([row("benign", math.nan, 10, 10, image="/d/b.png")])


def test_docstring_example():
    assert doctest.testmod(breakdown, raise_on_error=False).failed == 0


def test_dice_by_share_groups_counted_by_hand():
    dice = {"empty": 0.0, "tiny": 0.2, "edge_low": 0.4, "mid": 0.6, "edge_high": 0.8, "whole": 1.0, "no_share": 0.5}
    share = {"empty": 0.0, "tiny": 0.05, "edge_low": 0.2, "mid": 0.3, "edge_high": 0.5, "whole": 1.0, "gone": 0.4}
    groups = dice_by_share(dice, share)
    assert list(groups) == list(SHARE_GROUPS)
    # 0 | (0, 0.2) | [0.2, 0.5) | [0.5, 1]; "no_share" and "gone" are in one mapping only
    assert [(g.n, round(g.mean, 6)) for g in groups.values()] == [(1, 0.0), (1, 0.2), (2, 0.5), (2, 0.9)]
    assert math.isnan(dice_by_share({"a": 0.5}, {"a": 0.7})["none"].mean)


def test_dice_by_share_refuses_what_it_cannot_group():
    with pytest.raises(ValueError, match="no case"):
        dice_by_share({"a": 0.5}, {"b": 0.5})
    with pytest.raises(ValueError, match="'a' has share 1.5"):
        dice_by_share({"a": 0.5}, {"a": 1.5})
    with pytest.raises(ValueError, match="'a' has Dice nan"):
        dice_by_share({"a": float("nan")}, {"a": 0.5})

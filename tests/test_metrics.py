"""Per-image metrics, their empty-mask convention, summaries over images and folds, and the tables."""

from __future__ import annotations

import csv
import doctest
import json
import math
import statistics
import warnings

import numpy as np
import pytest
import torch

from lesionseg.metrics import per_image, summary, tables
from lesionseg.metrics.per_image import compute_batch_metrics, compute_image_metrics
from lesionseg.metrics.summary import mean_std, summarise, summarise_folds
from lesionseg.metrics.tables import (
    format_table,
    read_per_image_csv,
    read_summary_json,
    write_per_image_csv,
    write_summary_json,
)

# MONAI 1.6.1's own Hausdorff code passes its deprecated `always_return_as_numpy` argument to get_mask_edges
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

# 5 x 7 masks, counted by hand: TP = 4 (rows 1-2, cols 3-4), FP = 9 - 4 = 5, FN = 8 - 4 = 4, TN = 35 - 13 = 22
GT = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]
)
PRED = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1, 1, 0],
        [0, 0, 0, 1, 1, 1, 0],
        [0, 0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]
)
TP, FP, FN, TN = 4, 5, 4, 22
HAND_COUNTED = {
    "dice": 2 * TP / (2 * TP + FP + FN),
    "iou": TP / (TP + FP + FN),
    "precision": TP / (TP + FP),
    "sensitivity": TP / (TP + FN),
    "specificity": TN / (TN + FP),
    "accuracy": (TP + TN) / (TP + FP + FN + TN),
}


def boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-connected background neighbour, outside the image counting as background."""
    padded = np.pad(mask.astype(bool), 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask.astype(bool) & ~interior


def brute_force_hd95(pred: np.ndarray, gt: np.ndarray, spacing=(1.0, 1.0), points=boundary) -> float:
    """Symmetric HD95: all pairwise boundary distances, 95th percentile (linear) of each direction, the larger."""
    points_pred = np.argwhere(points(pred)) * np.asarray(spacing)
    points_gt = np.argwhere(points(gt)) * np.asarray(spacing)
    distances = np.sqrt(((points_pred[:, None, :] - points_gt[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))


def random_masks(seed: int, shape=(14, 18)) -> tuple[np.ndarray, np.ndarray]:
    """Two non-empty masks: random rectangles, some touching the image border, plus scattered pixels."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(2):
        mask = rng.random(shape) < 0.04
        for _ in range(2):
            top, left = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
            mask[top : top + rng.integers(2, 8), left : left + rng.integers(2, 9)] = True
        masks.append(mask)
    return masks[0], masks[1]


def test_overlap_metrics_match_hand_counted_confusion_matrix():
    metrics = compute_image_metrics(PRED, GT)
    for name, expected in HAND_COUNTED.items():
        assert metrics[name] == pytest.approx(expected, rel=1e-6), name
    assert metrics["gt_pixels"] == TP + FN and metrics["pred_pixels"] == TP + FP
    assert "hd95_mm" not in metrics


def test_any_truthy_values_and_torch_or_numpy_give_the_same_metrics():
    reference = compute_image_metrics(PRED, GT)
    variants = [
        (PRED * 255, GT.astype(bool)),
        (torch.from_numpy(PRED * -3.5), torch.from_numpy(GT).to(torch.uint8)),
        (torch.from_numpy(PRED).bool(), GT.astype(np.float32) * 0.2),
    ]
    for y_pred, y in variants:
        assert compute_image_metrics(y_pred, y) == reference


def test_hd95_of_single_pixels_with_anisotropic_spacing():
    gt, pred = np.zeros((8, 8)), np.zeros((8, 8))
    gt[1, 1], pred[4, 5] = 1, 1  # 3 rows and 4 columns apart
    metrics = compute_image_metrics(pred, gt, spacing=(2.0, 0.5))
    assert metrics["hd95"] == pytest.approx(5.0, rel=1e-6)
    assert metrics["hd95_mm"] == pytest.approx(math.hypot(3 * 2.0, 4 * 0.5), rel=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_hd95_matches_brute_force_boundary_distances(seed):
    pred, gt = random_masks(seed)
    spacing = (0.55, 1.7)
    metrics = compute_image_metrics(pred, gt, spacing=spacing)
    assert metrics["hd95"] == pytest.approx(brute_force_hd95(pred, gt), rel=1e-6, abs=1e-6)
    assert metrics["hd95_mm"] == pytest.approx(brute_force_hd95(pred, gt, spacing), rel=1e-6, abs=1e-6)


def test_hd95_uses_boundaries_not_all_foreground_pixels():
    # a 1-pixel prediction at the centre of a 9x9 lesion: the lesion's boundary ring is 4 to 4 * sqrt(2) away
    # (95th percentile: a corner, 4 * sqrt(2)); all 81 lesion pixels would give 5.0 (the corners are only 4 of 81)
    pred, gt = np.zeros((11, 11)), np.zeros((11, 11))
    gt[1:10, 1:10], pred[5, 5] = 1, 1
    all_pixel_hd95 = brute_force_hd95(pred, gt, points=lambda mask: mask.astype(bool))
    assert all_pixel_hd95 == pytest.approx(5.0)
    hd95 = compute_image_metrics(pred, gt)["hd95"]
    assert hd95 == pytest.approx(brute_force_hd95(pred, gt), rel=1e-6)
    assert hd95 == pytest.approx(4 * math.sqrt(2), rel=1e-6)


LESION = np.zeros((6, 9))
LESION[2:4, 3:7] = 1
EMPTY = np.zeros((6, 9))
NAN = math.nan
DIAGONAL_PX, SPACING = math.hypot(5, 8), (0.5, 2.0)
DIAGONAL_MM = math.hypot(5 * 0.5, 8 * 2.0)
ACCURACY_ONE_EMPTY = (54 - 8) / 54
SPECIFICITY_FALSE_ALARM = (54 - 8) / 54
# (prediction, ground truth, expected) for every combination with an empty mask; "diagonal" marks empty_distance
EMPTY_CASES = {
    "missed lesion": (
        EMPTY,
        LESION,
        dict(dice=0, iou=0, precision=0, sensitivity=0, specificity=1, accuracy=ACCURACY_ONE_EMPTY, hd95="one"),
    ),
    "false alarm": (
        LESION,
        EMPTY,
        dict(
            dice=0,
            iou=0,
            precision=0,
            sensitivity=NAN,
            specificity=SPECIFICITY_FALSE_ALARM,
            accuracy=ACCURACY_ONE_EMPTY,
            hd95="one",
        ),
    ),
    "true negative": (
        EMPTY,
        EMPTY,
        dict(dice=1, iou=1, precision=NAN, sensitivity=NAN, specificity=1, accuracy=1, hd95=0),
    ),
}


@pytest.mark.parametrize("empty_distance", ["nan", "diagonal"])
@pytest.mark.parametrize("case", list(EMPTY_CASES))
def test_empty_mask_convention(case, empty_distance):
    y_pred, y, expected = EMPTY_CASES[case]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = compute_image_metrics(y_pred, y, spacing=SPACING, empty_distance=empty_distance)
    assert not [w for w in caught if "all 0" in str(w.message)], "MONAI's empty-mask warnings leaked"
    if expected["hd95"] == "one":
        one_empty = (NAN, NAN) if empty_distance == "nan" else (DIAGONAL_PX, DIAGONAL_MM)
        expected = {**expected, "hd95": one_empty[0], "hd95_mm": one_empty[1]}
    else:
        expected = {**expected, "hd95_mm": expected["hd95"]}
    for name, value in expected.items():
        assert not math.isinf(metrics[name]), name
        if math.isnan(value):
            assert math.isnan(metrics[name]), name
        else:
            assert metrics[name] == pytest.approx(value, rel=1e-6), name


def test_specificity_is_nan_only_when_ground_truth_fills_the_image():
    full = np.ones((4, 5))
    metrics = compute_image_metrics(full, full)
    assert math.isnan(metrics["specificity"])
    assert metrics["dice"] == metrics["iou"] == metrics["precision"] == metrics["sensitivity"] == 1.0
    assert metrics["hd95"] == 0.0


def test_batch_matches_per_image_with_per_image_spacing():
    empty = np.zeros_like(GT)
    pairs = [(PRED, GT), (empty, GT), (GT, empty), (empty, empty), random_masks(0, GT.shape)]
    spacings = [(0.5, 0.5), (1.0, 2.0), (0.3, 0.7), (1.0, 1.0), (2.0, 0.25)]
    y_pred = torch.stack([torch.as_tensor(p, dtype=torch.float32) for p, _ in pairs])[:, None]
    y = np.stack([g for _, g in pairs])[:, None]
    batch = compute_batch_metrics(y_pred, y, spacing=spacings, empty_distance="diagonal")
    for record, (p, g), spacing in zip(batch, pairs, spacings, strict=True):
        single = compute_image_metrics(p, g, spacing=spacing, empty_distance="diagonal")
        assert record.keys() == single.keys()
        for name in record:
            assert record[name] == pytest.approx(single[name], rel=1e-6, nan_ok=True), name
    one_spacing = compute_batch_metrics(y_pred, y, spacing=(0.5, 2.0))
    assert one_spacing[0]["hd95_mm"] == pytest.approx(brute_force_hd95(PRED, GT, (0.5, 2.0)), rel=1e-6)


@pytest.mark.parametrize(
    "y_pred, y, kwargs, message",
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), {}, "shape"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), {}, "y_pred must be a 2-D"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"spacing": (1.0, -1.0)}, "spacing"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"spacing": (1.0, 1.0, 1.0)}, "spacing"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"empty_distance": "inf"}, "empty_distance"),
    ],
)
def test_bad_image_input_is_rejected(y_pred, y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_image_metrics(y_pred, y, **kwargs)


def test_bad_batch_input_is_rejected():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        compute_batch_metrics(np.zeros((2, 2, 4, 4)), np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="2 such pairs"):
        compute_batch_metrics(np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 4, 4)), spacing=[(1.0, 1.0)] * 3)
    with pytest.raises(TypeError, match="y must be a numpy array"):
        compute_batch_metrics(np.zeros((1, 1, 4, 4)), [[[[0]]]])


RECORDS = [
    {"case": "benign (1)", "class": "benign", "dice": 0.8, "sensitivity": 0.9, "hd95": 3.0, "gt_pixels": 40},
    {"case": "benign (2)", "class": "benign", "dice": 0.5, "sensitivity": 0.6, "hd95": NAN, "gt_pixels": 12},
    {"case": "malignant (1)", "class": "malignant", "dice": 0.65, "sensitivity": 0.7, "hd95": 6.0, "gt_pixels": 9},
    {"case": "normal (1)", "class": "normal", "dice": 1.0, "sensitivity": NAN, "hd95": 0.0, "gt_pixels": 0},
    {"case": "normal (2)", "class": "normal", "dice": 0.0, "sensitivity": NAN, "hd95": NAN, "gt_pixels": 0},
]


def test_summarise_ignores_nan_and_splits_lesion_and_normal():
    result = summarise(RECORDS, group_key="class")
    assert list(result) == ["all", "lesion", "normal", "class=benign", "class=malignant", "class=normal"]
    expected_members = {
        "all": RECORDS,
        "lesion": RECORDS[:3],
        "normal": RECORDS[3:],
        "class=benign": RECORDS[:2],
        "class=malignant": RECORDS[2:3],
        "class=normal": RECORDS[3:],
    }
    for group, members in expected_members.items():
        assert result[group]["n"] == len(members)
        assert set(result[group]) == {"n", "dice", "sensitivity", "hd95"}
        for metric in ("dice", "sensitivity", "hd95"):
            values = [r[metric] for r in members if not math.isnan(r[metric])]
            stats = result[group][metric]
            assert stats["count"] == len(values), (group, metric)
            if values:
                assert stats["mean"] == pytest.approx(statistics.fmean(values)), (group, metric)
            else:
                assert math.isnan(stats["mean"])
            if len(values) > 1:
                assert stats["std"] == pytest.approx(statistics.stdev(values)), (group, metric)
            else:
                assert math.isnan(stats["std"])


def test_summarise_of_real_metrics_and_bad_records():
    records = [compute_image_metrics(PRED, GT), compute_image_metrics(EMPTY, EMPTY)]
    result = summarise(records)
    assert result["lesion"]["dice"]["mean"] == pytest.approx(HAND_COUNTED["dice"], rel=1e-6)
    assert result["normal"]["precision"]["count"] == 0 and result["all"]["precision"]["count"] == 1
    assert "hd95_mm" not in result["all"]
    with pytest.raises(ValueError, match="empty"):
        summarise([])
    with pytest.raises(ValueError, match=r"records\[1\] lacks .*gt_pixels"):
        summarise([{"dice": 1.0, "gt_pixels": 1}, {"dice": 1.0}])
    with pytest.raises(ValueError, match="class"):
        summarise(records, group_key="class")
    with pytest.raises(ValueError, match="finite"):
        mean_std([1.0, math.inf])


def test_summarise_folds_averages_fold_means():
    folds = [
        summarise([{"dice": 0.8, "gt_pixels": 5}, {"dice": 0.6, "gt_pixels": 5}, {"dice": 1.0, "gt_pixels": 0}]),
        summarise([{"dice": 0.9, "gt_pixels": 5}]),  # no normal image in this fold
        summarise([{"dice": 0.5, "gt_pixels": 3}, {"dice": 0.0, "gt_pixels": 0}]),
    ]
    result = summarise_folds(folds)
    lesion_means = [0.7, 0.9, 0.5]
    assert result["lesion"]["n"] == 3 and result["lesion"]["n_images"] == 4
    assert result["lesion"]["dice"]["mean"] == pytest.approx(statistics.fmean(lesion_means))
    assert result["lesion"]["dice"]["std"] == pytest.approx(statistics.stdev(lesion_means))
    assert result["normal"]["dice"]["count"] == 2  # the fold without normal images has a NaN mean
    assert result["normal"]["dice"]["mean"] == pytest.approx(0.5)
    assert result["all"]["n_images"] == 6
    with pytest.raises(ValueError, match="empty"):
        summarise_folds([])


ROWS = {
    "DC-Net": {
        "dice": {"mean": 0.7396, "std": 0.0036, "count": 5},
        "precision": {"mean": 0.75821, "std": 0.01159, "count": 5},
        "hd95": {"mean": 5.444, "std": 0.1, "count": 5},
    },
    "fold 1": {
        "dice": {"mean": 0.5, "std": NAN, "count": 1},
        "precision": {"mean": NAN, "std": NAN, "count": 0},
        "hd95": {"mean": 12.0, "std": 1.25, "count": 2},
    },
}


def test_format_table_markdown():
    assert format_table(ROWS, label="model") == (
        "| model | Dice (%) | Precision (%) | HD95 (px) |\n"
        "| --- | ---: | ---: | ---: |\n"
        "| DC-Net | 73.96 ± 0.36 | 75.82 ± 1.16 | 5.44 ± 0.10 |\n"
        "| fold 1 | 50.00 | n/a | 12.00 ± 1.25 |\n"
    )


def test_format_table_csv_fractions_and_metric_choice():
    assert format_table(ROWS, metrics=["hd95", "dice"], style="csv", percent=False, digits=3) == (
        "group,HD95 (px),Dice\n"
        "DC-Net,5.444 ± 0.100,0.740 ± 0.004\n"
        "fold 1,12.000 ± 1.250,0.500\n"
    )
    assert format_table(ROWS, metrics=["precision"], style="csv").splitlines()[2] == "fold 1,"


def test_format_table_of_a_summary_and_bad_arguments():
    text = format_table(summarise(RECORDS), metrics=["dice"], digits=1)
    assert text.splitlines()[2:] == ["| all | 59.0 ± 37.8 |", "| lesion | 65.0 ± 15.0 |", "| normal | 50.0 ± 70.7 |"]
    with pytest.raises(ValueError, match="style"):
        format_table(ROWS, style="latex")
    with pytest.raises(ValueError, match="lacks"):
        format_table(ROWS, metrics=["iou"])
    with pytest.raises(ValueError, match="empty"):
        format_table({})


def test_write_per_image_csv_round_trips_and_leaves_nan_empty(tmp_path):
    records = [
        {"case": "a", "dice": 1 / 3, "hd95": NAN, "gt_pixels": 4},
        {"case": "b", "dice": np.float32(0.5), "gt_pixels": 0, "class": "normal"},
    ]
    path = write_per_image_csv(records, tmp_path / "out" / "per_image.csv")
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["case", "dice", "hd95", "gt_pixels", "class"]
    assert float(rows[0]["dice"]) == 1 / 3
    assert rows[0]["hd95"] == "" and rows[0]["class"] == "" and rows[1]["hd95"] == ""
    assert rows[1] == {"case": "b", "dice": "0.5", "hd95": "", "gt_pixels": "0", "class": "normal"}
    with pytest.raises(ValueError, match="empty"):
        write_per_image_csv([], tmp_path / "x.csv")


def test_write_summary_json_is_strict_json_with_null_for_nan(tmp_path):
    result = summarise(RECORDS)
    path = write_summary_json(result, tmp_path / "summary.json")

    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    loaded = json.loads(path.read_text(), parse_constant=reject)
    assert loaded["normal"]["sensitivity"] == {"mean": None, "std": None, "count": 0}
    assert loaded["lesion"]["dice"]["mean"] == pytest.approx(result["lesion"]["dice"]["mean"])
    assert loaded["all"]["n"] == 5


@pytest.mark.parametrize("module", [per_image, summary, tables])
def test_docstring_examples(module):
    assert doctest.testmod(module, raise_on_error=False).failed == 0


def test_per_image_csv_and_summary_json_read_back(tmp_path):
    records = [
        {"image": "/d/a.png", "case": "a", "class": None, **compute_image_metrics(PRED, GT, spacing=(0.5, 0.5))},
        {"image": "/d/b.png", "case": "12", "class": "normal", **compute_image_metrics(EMPTY, EMPTY, spacing=(1, 1))},
    ]
    read = read_per_image_csv(write_per_image_csv(records, tmp_path / "per_image.csv"))
    assert read[1]["case"] == "12" and read[0]["class"] is None  # ids stay strings
    for original, back in zip(records, read, strict=True):
        assert back.keys() == original.keys()
        for key, value in original.items():
            if isinstance(value, float):
                assert back[key] == pytest.approx(value, nan_ok=True), key
            else:
                assert back[key] == value and type(back[key]) is type(value), key
    summary = summarise(read)
    back = read_summary_json(write_summary_json(summary, tmp_path / "summary.json"))
    assert math.isnan(back["normal"]["precision"]["mean"]) and back["lesion"]["dice"] == summary["lesion"]["dice"]
    (tmp_path / "bad.csv").write_text("image,dice,gt_pixels\n/d/a.png,high,3\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 2: column 'dice' holds 'high'"):
        read_per_image_csv(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"bad\.json: expected a summary"):
        read_summary_json(tmp_path / "bad.json")

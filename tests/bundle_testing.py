"""The model-zoo unit-test pattern for a bundle: ConfigWorkflow -> initialize -> check_properties() -> run ->
finalize. Shared by the tests of both bundles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# the one implementation of the pattern, under the names the bundle tests use
from lesionseg.workflows.bundle import make_workflow
from lesionseg.workflows.bundle import run_steps as run_zoo_pattern

__all__ = ["check_evaluation_files", "make_workflow", "run_zoo_pattern"]

METRIC_COLUMNS = ("dice", "iou", "precision", "sensitivity", "specificity", "accuracy", "hd95")


def check_evaluation_files(eval_dir: Path, expected_images: Sequence[str]) -> list[dict[str, str]]:
    """Check an evaluate workflow's ``per_image.csv`` and ``summary.json``; return the CSV rows.

    The CSV must have one row per expected image (source paths, in any order) with every metric, and each
    group of the JSON (all, lesion, normal, class=...) must hold the mean, sample std and count of the CSV's
    values, recomputed here with the standard library (empty cells are undefined values, left out).
    """
    import csv
    import json
    import math
    import statistics

    with (eval_dir / "per_image.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["image"] for row in rows) == sorted(str(p) for p in expected_images)
    assert set(METRIC_COLUMNS) | {"case", "gt_pixels", "pred_pixels"} <= set(rows[0])
    summary = json.loads((eval_dir / "summary.json").read_text())
    groups = {
        "all": rows,
        "lesion": [row for row in rows if int(row["gt_pixels"]) > 0],
        "normal": [row for row in rows if int(row["gt_pixels"]) == 0],
    }
    if "class" in rows[0]:
        for row in rows:
            groups.setdefault(f"class={row['class']}", []).append(row)
    assert set(summary) == set(groups)
    for name, members in groups.items():
        assert summary[name]["n"] == len(members), name
        for metric in METRIC_COLUMNS:
            values = [float(row[metric]) for row in members if row[metric] != ""]
            stats = summary[name][metric]
            assert stats["count"] == len(values), (name, metric)
            if values:
                expected = statistics.fmean(values)
                assert math.isclose(stats["mean"], expected, rel_tol=1e-9, abs_tol=1e-12), (name, metric)
            else:
                assert stats["mean"] is None, (name, metric)
            if len(values) > 1:
                expected = statistics.stdev(values)
                assert math.isclose(stats["std"], expected, rel_tol=1e-9, abs_tol=1e-12), (name, metric)
            else:
                assert stats["std"] is None, (name, metric)
    return rows

"""
Paper-style result tables ("81.63 ± 1.20" cells) and per-image CSV / summary JSON files.

Undefined values (NaN, see :mod:`lesionseg.metrics.per_image`) are written as an empty CSV cell, as ``null``
in JSON (strict JSON has no NaN) and as ``n/a`` in a markdown table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lesionseg.utils.files import replacing, write_text_atomically

from .per_image import OVERLAP_METRICS
from .summary import METRICS

__all__ = [
    "METRIC_LABELS",
    "format_table",
    "read_per_image_csv",
    "read_summary_json",
    "write_per_image_csv",
    "write_summary_json",
]

#: integer columns of a per-image table
_COUNT_FIELDS = ("gt_pixels", "pred_pixels")

#: Column headers of the metrics in a table.
METRIC_LABELS = {
    "dice": "Dice",
    "iou": "IoU",
    "precision": "Precision",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "accuracy": "Accuracy",
    "hd95": "HD95 (px)",
    "hd95_mm": "HD95 (mm)",
}


def format_table(
    rows: Mapping[str, Mapping[str, Any]],
    metrics: Sequence[str] | None = None,
    style: Literal["markdown", "csv"] = "markdown",
    percent: bool = True,
    digits: int = 2,
    label: str = "group",
) -> str:
    """
    A table with one row per entry of ``rows`` and one "mean ± std" column per metric.

    Args:
        rows: row name -> group summary (``{"dice": {"mean": .., "std": ..}, ...}``). A summary from
            :func:`lesionseg.metrics.summarise` gives a row per group; to compare models or folds, pass e.g.
            ``{"DC-Net": summary_a["lesion"], "TaiChiNet": summary_b["lesion"]}``.
        metrics: the metric columns, in order; default: those of :data:`lesionseg.metrics.METRICS` in the
            first row.
        style: ``"markdown"`` (a pipe table) or ``"csv"``.
        percent: show the overlap metrics (Dice ... accuracy) in percent, as the DC-Net paper does; distances
            are never scaled.
        digits: decimals shown.
        label: header of the first column.

    Returns:
        the table as text, ending with a newline. A cell is "mean ± std", the mean alone when the std is NaN,
        and ``n/a`` (markdown) or empty (csv) when the mean is NaN.

    Raises:
        ValueError: when ``rows`` is empty, ``style`` is unknown, ``digits`` is negative or a row lacks a metric.

    Example:
        >>> rows = {"DC-Net": {"dice": {"mean": 0.7396, "std": 0.0036}, "hd95": {"mean": 5.44, "std": 0.1}}}
        >>> print(format_table(rows, label="model"), end="")
        | model | Dice (%) | HD95 (px) |
        | --- | ---: | ---: |
        | DC-Net | 73.96 ± 0.36 | 5.44 ± 0.10 |
    """
    if len(rows) == 0:
        raise ValueError("rows is empty: nothing to tabulate.")
    if style not in ("markdown", "csv"):
        raise ValueError(f"style must be 'markdown' or 'csv', got {style!r}.")
    if digits < 0:
        raise ValueError(f"digits must be >= 0, got {digits}.")
    if metrics is None:
        first = next(iter(rows.values()))
        metrics = [name for name in METRICS if name in first]
    for name, row in rows.items():
        missing = [metric for metric in metrics if metric not in row]
        if missing:
            raise ValueError(f"row {name!r} lacks the metric(s) {missing}.")

    missing_cell = "n/a" if style == "markdown" else ""
    header = [label] + [_header(metric, percent) for metric in metrics]
    scaled = {metric: percent and metric in OVERLAP_METRICS for metric in metrics}
    body = [
        [str(name)] + [_cell(row[metric], scaled[metric], digits, missing_cell) for metric in metrics]
        for name, row in rows.items()
    ]
    if style == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, *body])
        return buffer.getvalue()
    alignment = ["---"] + ["---:"] * len(metrics)
    return "".join("| " + " | ".join(line) + " |\n" for line in [header, alignment, *body])


def write_per_image_csv(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """
    Write one row per image, with a column for every field of any record (in order of first appearance).

    Floats are written in full precision; NaN, None and a field a record lacks are written as an empty cell.

    Args:
        records: the per-image dicts, e.g. from :func:`lesionseg.metrics.compute_image_metrics` plus ``case``.
        path: the CSV file to write; its folder is created if needed.

    Returns:
        the path written.

    Raises:
        ValueError: when ``records`` is empty.
    """
    if len(records) == 0:
        raise ValueError(f"records is empty: nothing to write to {path}.")
    path = Path(path)
    fields = list(dict.fromkeys(key for record in records for key in record))
    with replacing(path) as temporary, temporary.open("w", newline="") as file:  # no half-written table
        writer = csv.writer(file)
        writer.writerow(fields)
        for record in records:
            writer.writerow([_csv_value(record.get(field)) for field in fields])
    return path


def write_summary_json(summary: Mapping[str, Any], path: str | Path) -> Path:
    """
    Write a summary (or any nesting of dicts, lists and numbers) as strict JSON, NaN and inf becoming ``null``.

    Args:
        summary: e.g. the result of :func:`lesionseg.metrics.summarise` or :func:`lesionseg.metrics.summarise_folds`.
        path: the JSON file to write; its folder is created if needed.

    Returns:
        the path written.
    """
    return write_text_atomically(path, json.dumps(_json_value(summary), indent=2, allow_nan=False) + "\n")


def read_per_image_csv(path: str | Path) -> list[dict[str, Any]]:
    """
    Read a table :func:`write_per_image_csv` wrote back into records :func:`lesionseg.metrics.summarise` takes.

    Metric columns (:data:`lesionseg.metrics.METRICS`) become floats, an empty cell NaN; ``gt_pixels`` and
    ``pred_pixels`` become ints; other columns stay strings (an empty cell None).

    Raises:
        ValueError: naming the file and the row, when a metric or count cell is not a number, or the file has
            no row.
    """
    path = Path(path)
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise ValueError(f"{path}: no rows.")
    records = []
    for line, row in enumerate(rows, start=2):
        record: dict[str, Any] = {}
        for key, text in row.items():
            try:
                if key in METRICS:
                    record[key] = float(text) if text != "" else math.nan
                elif key in _COUNT_FIELDS:
                    record[key] = int(text)
                else:
                    record[key] = text if text != "" else None
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}, line {line}: column {key!r} holds {text!r}, not a number.") from error
        records.append(record)
    return records


def read_summary_json(path: str | Path) -> dict[str, Any]:
    """
    Read a summary :func:`write_summary_json` wrote, ``null`` means and stds becoming NaN again.

    Raises:
        ValueError: naming the file, when it is not JSON or not a mapping of groups.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from error
    if not isinstance(content, dict) or not all(isinstance(group, dict) for group in content.values()):
        raise ValueError(f"{path}: expected a summary, {{group: {{'n': ..., metric: {{'mean', 'std', 'count'}}}}}}.")
    return {
        name: {
            key: (
                {k: math.nan if v is None and k in ("mean", "std") else v for k, v in value.items()}
                if isinstance(value, dict)
                else value
            )
            for key, value in group.items()
        }
        for name, group in content.items()
    }


def _header(metric: str, percent: bool) -> str:
    header = METRIC_LABELS.get(metric, metric)
    return f"{header} (%)" if percent and metric in OVERLAP_METRICS else header


def _cell(statistics: Mapping[str, Any], scale_to_percent: bool, digits: int, missing_cell: str) -> str:
    """The "mean ± std" cell of one metric."""
    scale = 100.0 if scale_to_percent else 1.0
    mean, std = float(statistics["mean"]), float(statistics.get("std", math.nan))
    if math.isnan(mean):
        return missing_cell
    if math.isnan(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return ""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_value(value: Any) -> Any:
    """``value`` with JSON types only: mappings to dicts, sequences to lists, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, np.ndarray):
        return _json_value(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

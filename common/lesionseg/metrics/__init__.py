"""Segmentation metrics, summaries and tables."""

from lesionseg.metrics.breakdown import dice_breakdown, lesion_size_edges
from lesionseg.metrics.per_image import (
    DISTANCE_METRICS,
    OVERLAP_METRICS,
    compute_batch_metrics,
    compute_image_metrics,
)
from lesionseg.metrics.summary import METRICS, mean_std, summarise, summarise_folds
from lesionseg.metrics.tables import (
    METRIC_LABELS,
    format_table,
    read_per_image_csv,
    read_summary_json,
    write_per_image_csv,
    write_summary_json,
)

__all__ = [
    "DISTANCE_METRICS",
    "METRICS",
    "METRIC_LABELS",
    "OVERLAP_METRICS",
    "compute_batch_metrics",
    "compute_image_metrics",
    "dice_breakdown",
    "format_table",
    "lesion_size_edges",
    "mean_std",
    "read_per_image_csv",
    "read_summary_json",
    "summarise",
    "summarise_folds",
    "write_per_image_csv",
    "write_summary_json",
]

"""PNG figures of results: training curves per fold and per-case box plots of the metrics.

Drawn with matplotlib's object interface on the Agg canvas (no pyplot, no display, no global state), so they
work on a headless machine and inside other programs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from lesionseg.utils.files import replacing

from .tables import METRIC_LABELS

__all__ = ["plot_training_curves", "plot_per_case_boxes"]

Curve = Sequence[tuple[float, float]]

#: the curves :func:`plot_training_curves` draws: key -> panel title
CURVE_PANELS = {"loss": "training loss (mean per epoch)", "val_dice": "Dice: validation (solid), training (dashed)"}
#: a curve drawn dashed, in its run's colour, in another curve's panel: training Dice beside validation Dice
#: shows under-fitting (training at or below validation) and over-fitting (a widening gap) at a glance
COMPANION_CURVES = {"val_dice": "train_dice"}
_GROUP_COLOURS = {"lesion": "tab:blue", "normal": "tab:orange"}


def plot_training_curves(curves: Mapping[str, Mapping[str, Curve]], path: str | Path, title: str = "") -> Path:
    """
    Draw each run's training loss and validation Dice against the epoch, one line per run (fold); a run's
    training Dice, where given, is drawn dashed in the validation Dice's colour.

    Args:
        curves: run name (e.g. ``"fold 0"``) -> ``{"loss": [(epoch, value), ...], "val_dice": [...]}``,
            optionally ``"train_dice"``; a missing or empty curve is left out of its panel.
        path: the PNG to write (its folder is created).
        title: the figure's title.

    Returns:
        the path written.

    Raises:
        ValueError: when ``curves`` is empty.
    """
    if not curves:
        raise ValueError(f"no curves to draw into {path}.")
    figure = Figure(figsize=(11, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(CURVE_PANELS))
    for axis, (key, panel_title) in zip(axes, CURVE_PANELS.items()):
        drawn = False
        for run, run_curves in curves.items():
            points = sorted(run_curves.get(key) or ())
            if points:
                epochs, values = zip(*points)
                (line,) = axis.plot(epochs, values, marker="o", markersize=3, label=str(run))
                drawn = True
                companion = sorted(run_curves.get(COMPANION_CURVES.get(key, ""), ()))
                if companion:
                    epochs, values = zip(*companion)
                    axis.plot(epochs, values, linestyle="--", color=line.get_color(), label=f"{run} (training)")
        axis.set_title(panel_title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if drawn:
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "no values logged", ha="center", va="center", transform=axis.transAxes)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_per_case_boxes(
    records_by_run: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    metrics: Sequence[str] = ("dice", "iou", "precision", "sensitivity", "hd95"),
    title: str = "",
) -> Path:
    """
    Box plots of per-image metric values, one panel per metric, a box per run and image group, points on top.

    Lesion images (``gt_pixels > 0``) and normal images (``gt_pixels == 0``) get separate boxes, as the TaiChiNet
    paper reports them separately; undefined values (NaN, e.g. a normal image's sensitivity) are left out.

    Args:
        records_by_run: run name (e.g. ``"fold 0"``, or ``"all folds"``) -> per-image records as
            :func:`lesionseg.metrics.compute_image_metrics` returns them (with ``gt_pixels``).
        path: the PNG to write (its folder is created).
        metrics: the metrics to draw, one panel each (those no record has are skipped).
        title: the figure's title.

    Returns:
        the path written.

    Raises:
        ValueError: when there are no records or no requested metric in them.
    """
    runs = {name: list(records) for name, records in records_by_run.items() if records}
    if not runs:
        raise ValueError(f"no per-image records to draw into {path}.")
    metrics = [m for m in metrics if any(m in record for records in runs.values() for record in records)]
    if not metrics:
        raise ValueError(f"none of the requested metrics is in the records to draw into {path}.")
    figure = Figure(figsize=(max(6.0, 1.2 * len(runs) + 2) * 1.0, 2.6 * len(metrics)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(len(metrics), 1, squeeze=False)[:, 0])
    rng = np.random.default_rng(0)  # the jitter of the points, the same on every call
    for axis, metric in zip(axes, metrics):
        ticks, tick_labels = [], []
        for index, (run, records) in enumerate(runs.items()):
            ticks.append(index)
            tick_labels.append(str(run))
            for offset, group in ((-0.18, "lesion"), (0.18, "normal")):
                members = [r for r in records if (r.get("gt_pixels", 1) > 0) == (group == "lesion")]
                values = np.asarray([float(r[metric]) for r in members if metric in r], dtype=float)
                values = values[np.isfinite(values)]
                if values.size == 0:
                    continue
                position = index + offset
                colour = _GROUP_COLOURS[group]
                axis.boxplot(
                    values,
                    positions=[position],
                    widths=0.3,
                    showfliers=False,
                    patch_artist=True,
                    boxprops={"facecolor": colour, "alpha": 0.35},
                    medianprops={"color": "black"},
                )
                jitter = rng.uniform(-0.07, 0.07, size=values.size)
                axis.scatter(position + jitter, values, s=8, color=colour, alpha=0.8, zorder=3)
        axis.set_xticks(ticks, tick_labels)
        axis.set_xlim(-0.6, len(runs) - 0.4)
        axis.set_ylabel(METRIC_LABELS.get(metric, metric))
        axis.grid(axis="y", alpha=0.3)
    handles = [Patch(facecolor=colour, alpha=0.5, label=f"{group} images") for group, colour in _GROUP_COLOURS.items()]
    if title:
        figure.suptitle(title)
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    with replacing(path) as temporary:  # a failed write keeps an earlier picture whole
        figure.savefig(temporary, format=path.suffix.lstrip(".") or "png")
    return path

"""An ignite handler that scores every evaluated image and writes a per-image CSV and a summary JSON.

MONAI's :class:`monai.handlers.MetricsSaver` saves the metrics an evaluator already computes, with MONAI's
empty-mask rules (Dice NaN on every normal image); the papers' tables need more: Dice, IoU, precision,
sensitivity, specificity, accuracy and HD95 per image, the empty-mask convention of
:mod:`lesionseg.metrics.per_image`, and lesion and normal images reported apart (TaiChiNet, Table IV).
:class:`PerImageMetricsWriter` collects each image's binary prediction and ground truth after the
evaluator's post-processing (so at whatever size post-processing leaves them: the bundles' evaluate
workflows invert the prediction to the source image size and compare with the mask as read from disk),
scores it with :func:`lesionseg.metrics.compute_image_metrics`, and at the end of the epoch writes

- ``per_image.csv``: one row per image: ``image`` (the source file), ``case`` and ``class`` where the data
  items carry them, the metrics, ``gt_pixels`` and ``pred_pixels`` (``gt_pixels == 0``: a normal image);
- ``summary.json``: :func:`lesionseg.metrics.summarise` of the rows: groups ``all``, ``lesion``,
  ``normal`` (and ``class=<name>`` per class when every item has a class), each
  ``{"n": images, "<metric>": {"mean", "std", "count"}}``; undefined values are ``null``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.utils import ImageMetaKey

from lesionseg.metrics import METRICS, compute_image_metrics, summarise, write_per_image_csv, write_summary_json

__all__ = ["PerImageMetricsWriter", "with_source_labels"]

logger = logging.getLogger(__name__)



def with_source_labels(
    items: Sequence[Mapping], label_key: str = "label", source_key: str = "source_label"
) -> list[dict]:
    """Copies of the data items with their mask path also under ``source_key``, for the evaluate workflows.

    The workflows load ``source_key`` unresized and score the prediction, inverted to the source image size,
    against it (the mask as read from disk); ``label_key`` goes through the resizing preprocessing.

    Args:
        items: data dicts with a ``label_key`` (e.g. a section of :func:`lesionseg.data.splits.datalist_section`);
            they are not changed.
        label_key: the mask's key.
        source_key: the key the copy goes under.

    Raises:
        KeyError: naming the item (its image where it has one) that has no ``label_key``.
    """
    copies = []
    for index, item in enumerate(items):
        if label_key not in item:
            raise KeyError(f"item {index} ({item.get('image', 'no image')}) has no {label_key!r} to evaluate against")
        copies.append({**item, source_key: item[label_key]})
    return copies

class PerImageMetricsWriter:
    """
    Score each evaluated image with :func:`lesionseg.metrics.compute_image_metrics`; write ``per_image.csv`` and
    ``summary.json`` into ``output_dir`` when the evaluation epoch completes.

    Attach it to a MONAI evaluator (``val_handlers``) whose post-processing leaves, for each image, a binary
    prediction and its ground truth of the same shape (1, H, W) in the engine's output. Rows are kept in the
    data loader's order. In a distributed run the rows of all ranks are gathered and rank 0 writes (a sampler that
    pads the ranks to equal length would add its padding images as extra rows; the bundles evaluate in one
    process).

    Args:
        output_dir: folder the two files are written to (created if needed).
        pred_key: key of the binary prediction, shape (1, H, W), in each item of ``engine.state.output``.
        label_key: key of the ground truth, same shape.
        image_key: key of the image whose metadata (``filename_or_obj``) names the row.
        fields: item fields copied into each row when present, looked up in the engine's output, then its
            batch (e.g. the ``case`` and ``class`` of the lesionseg readers).
        spacing_key: item (or image-metadata) field holding the pixel size in mm as (row, col); when an image
            has one, its row also has ``hd95_mm``. The bundles' PNG images carry none; a datalist item may
            give ``"spacing": [0.1, 0.1]``.
        empty_distance: HD95 when exactly one mask is empty, see :func:`lesionseg.metrics.compute_image_metrics`.
        group_key: also summarise per value of this field (when every row has it).
        csv_name: file name of the per-image table.
        summary_name: file name of the summary.

    Raises:
        KeyError: at an iteration, naming the key, when an item lacks the prediction or ground truth.
        ValueError: naming the image, when its prediction and ground truth differ in shape.

    Example (a bundle config, in ``validate#handlers``)::

        - _target_: lesionseg.engines.PerImageMetricsWriter
          output_dir: "@output_dir"
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        fields: Sequence[str] = ("case", "class"),
        spacing_key: str = "spacing",
        empty_distance: Literal["nan", "diagonal"] = "nan",
        group_key: str | None = "class",
        csv_name: str = "per_image.csv",
        summary_name: str = "summary.json",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.pred_key = pred_key
        self.label_key = label_key
        self.image_key = image_key
        self.fields = tuple(fields)
        self.spacing_key = spacing_key
        self.empty_distance = empty_distance
        self.group_key = group_key
        self.csv_name = csv_name
        self.summary_name = summary_name
        self.records: list[dict[str, Any]] = []

    @property
    def csv_path(self) -> Path:
        return self.output_dir / self.csv_name

    @property
    def summary_path(self) -> Path:
        return self.output_dir / self.summary_name

    def attach(self, engine: Engine) -> None:
        """Collect at every iteration of ``engine``; write at the end of each of its epochs."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.records = []

    def collect(self, engine: Engine) -> None:
        """Score the images of the engine's current (decollated) output."""
        outputs = engine.state.output
        batches = engine.state.batch
        if isinstance(outputs, Mapping):  # not decollated: a batch of one dict
            outputs, batches = [outputs], [batches]
        if not isinstance(batches, Sequence) or len(batches) != len(outputs):
            batches = [{}] * len(outputs)
        for output, batch in zip(outputs, batches):
            self.records.append(self.score(output, batch if isinstance(batch, Mapping) else {}))

    def score(self, output: Mapping[Hashable, Any], batch: Mapping[Hashable, Any] | None = None) -> dict[str, Any]:
        """The row of one image: its name, ``fields`` and the metrics of ``output``'s prediction against its label."""
        batch = batch or {}
        for key in (self.pred_key, self.label_key):
            if key not in output:
                raise KeyError(f"PerImageMetricsWriter: the evaluator's output has no {key!r} (keys: {list(output)}).")
        # scored on the CPU: the two may come from different devices (prediction on a GPU, mask as read on the CPU)
        pred, label = (torch.as_tensor(output[key]).detach().cpu() for key in (self.pred_key, self.label_key))
        image = output.get(self.image_key, batch.get(self.image_key))
        meta = getattr(image, "meta", None) or {}
        name = str(meta.get(ImageMetaKey.FILENAME_OR_OBJ, "")) or f"image {len(self.records)}"
        if tuple(pred.shape) != tuple(label.shape) or pred.ndim != 3 or pred.shape[0] != 1:
            raise ValueError(
                f"{name}: prediction {tuple(pred.shape)} and ground truth {tuple(label.shape)} must both be (1, H, W); "
                "does the post-processing bring both to the same size?"
            )
        spacing = self._lookup(self.spacing_key, output, batch, meta)
        if spacing is not None:
            try:
                spacing = [float(value) for value in torch.as_tensor(spacing, dtype=torch.float64).reshape(-1).tolist()]
                metrics = compute_image_metrics(pred[0], label[0], spacing=spacing, empty_distance=self.empty_distance)
            except (TypeError, ValueError, RuntimeError) as error:
                raise ValueError(
                    f"{name}: its {self.spacing_key!r} must be the pixel size in mm as [row, column], two positive "
                    f"numbers such as [0.1, 0.1], got {spacing!r}"
                ) from error
        else:
            metrics = compute_image_metrics(pred[0], label[0], empty_distance=self.empty_distance)
        record: dict[str, Any] = {"image": name}
        for field in self.fields:
            value = self._lookup(field, output, batch, {})
            if value is not None:
                record[field] = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        record.update(metrics)
        return record

    @staticmethod
    def _lookup(key: str, output: Mapping, batch: Mapping, meta: Mapping) -> Any:
        for source in (output, batch, meta):
            if key in source and source[key] is not None:
                return source[key]
        return None

    def write(self, engine: Engine | None = None) -> None:
        """Write the CSV and the summary of the rows collected this epoch (rank 0 of a distributed run)."""
        records = self.records
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, records)
            records = [record for rank_records in gathered for record in rank_records]
            if dist.get_rank() != 0:
                return
        if not records:
            logger.warning("PerImageMetricsWriter: no image was evaluated; nothing written to %s", self.output_dir)
            return
        # hd95_mm exists for images with a spacing only: undefined (NaN) for the others
        metrics = [name for name in METRICS if any(name in record for record in records)]
        records = [{**record, **{name: math.nan for name in metrics if name not in record}} for record in records]
        group_key = self.group_key if self.group_key and all(self.group_key in r for r in records) else None
        summary = summarise(records, group_key=group_key)
        write_per_image_csv(records, self.csv_path)
        write_summary_json(summary, self.summary_path)
        lesion, normal = summary["lesion"], summary["normal"]
        logger.info(
            "per-image metrics of %d images (%d lesion, %d normal) written to %s; lesion Dice %.4f, all Dice %.4f; "
            "summary: %s",
            len(records),
            lesion["n"],
            normal["n"],
            self.csv_path,
            lesion["dice"]["mean"],
            summary["all"]["dice"]["mean"],
            self.summary_path,
        )

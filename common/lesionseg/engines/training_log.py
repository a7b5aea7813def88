"""A per-epoch training log (mean loss, training and validation metrics) as JSON lines, for curves.

TensorBoard's event files hold the loss per iteration and no epoch boundaries; a cross-validation report
wants one point per epoch and fold. :class:`EpochLog` appends one JSON object per epoch to a file as soon as
the epoch (and the validation it triggers) ends, so an interrupted run keeps the epochs it finished;
:func:`read_epoch_log` reads it back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import from_engine
from scipy import stats

__all__ = ["CurveEnd", "EpochLog", "curve_end", "epoch_curves", "epoch_log_attacher", "read_epoch_log"]

logger = logging.getLogger(__name__)


class EpochLog:
    """
    Append ``{"epoch": e, "loss": mean loss of the epoch, <trainer metrics>, <validator metrics>}`` to a JSON-lines
    file at the end of every training epoch.

    Attach it to a trainer after its validation handler (as a bundle's ``train#handlers`` are attached when the
    trainer is made), so that the validator's metrics of the epoch are already computed; they are included when
    the validator ran at this epoch (its ``state.epoch`` equals the trainer's, as MONAI's ``ValidationHandler``
    sets it), under the validator's own names (``val_mean_dice``...).

    Args:
        path: the JSON-lines file; created with its folder, appended to.
        validator: the evaluator that validates the trainer (optional).
        loss_transform: picks the loss from the trainer's ``state.output`` (default: ``output["loss"]`` of the
            first item, as MONAI's decollated trainer output holds it).
    """

    def __init__(self, path: str | os.PathLike, validator: Engine | None = None, loss_transform=None) -> None:
        self.path = Path(path)
        self.validator = validator
        self.loss_transform = loss_transform or from_engine(["loss"], first=True)
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._losses = []

    def _collect(self, engine: Engine) -> None:
        loss = self.loss_transform(engine.state.output)
        loss = loss[0] if isinstance(loss, (list, tuple)) else loss
        self._losses.append(float(loss))

    def _write(self, engine: Engine) -> None:
        record: dict[str, Any] = {
            "epoch": int(engine.state.epoch),
            "loss": sum(self._losses) / len(self._losses) if self._losses else math.nan,
        }
        record.update({name: _number(value) for name, value in engine.state.metrics.items()})
        if self.validator is not None and self.validator.state.epoch == engine.state.epoch:
            record.update({name: _number(value) for name, value in self.validator.state.metrics.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        line = (json.dumps(finite) + "\n").encode()
        with open(self.path, "ab", buffering=0) as file:
            start = file.seek(0, os.SEEK_END)
            try:
                file.write(line)
            except OSError:  # a full disk: cut the part of the line off, so a later epoch starts a clean line
                os.ftruncate(file.fileno(), start)
                raise


def epoch_log_attacher(path: str | os.PathLike):
    """
    A ``before_run`` callback for :func:`lesionseg.workflows.bundle.run_workflow` (or any code holding an
    initialized MONAI ``ConfigWorkflow`` of a bundle's training) that attaches an :class:`EpochLog` writing to
    ``path`` to the workflow's trainer, with its evaluator (``workflow.evaluator``, when it has one) as the
    validator. Attached after the bundle's own handlers, so the epoch's validation metrics are in the record.
    """

    def attach(workflow) -> None:
        EpochLog(path, validator=getattr(workflow, "evaluator", None)).attach(workflow.trainer)

    return attach


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def read_epoch_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """
    The records of an :class:`EpochLog` file, one per epoch in epoch order (a later record of an epoch, from a
    rerun, replaces an earlier one); ``null`` values become NaN.

    Raises:
        ValueError: naming the file and line, for a line that is not a JSON object with an ``epoch``.
    """
    path = Path(path)
    by_epoch: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            epoch = int(record["epoch"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}, line {number}: not an epoch record ({error}).") from error
        by_epoch[epoch] = {k: (math.nan if v is None else v) for k, v in record.items()}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def epoch_curves(
    path: str | os.PathLike, dice_key: str = "val_mean_dice", train_dice_key: str = "train_mean_dice"
) -> dict[str, list[tuple[int, float]]]:
    """
    The curves :func:`lesionseg.metrics.plots.plot_training_curves` draws for one run, from its
    :class:`EpochLog` file: ``{"loss": [(epoch, mean loss), ...], "val_dice": [(epoch, validation Dice), ...],
    "train_dice": [(epoch, training Dice), ...]}`` (epochs without the value are left out; every list is empty
    when the file does not exist).

    Args:
        path: the JSON-lines file of an :class:`EpochLog`.
        dice_key: the record key of the validation Dice (the bundles' ``val_mean_dice``).
        train_dice_key: the record key of the training Dice (the bundles' ``train_mean_dice``, on the
            augmented training batches as the network saw them).
    """
    records = read_epoch_log(path) if Path(path).is_file() else []
    return {
        "loss": [(r["epoch"], r["loss"]) for r in records if "loss" in r],
        "val_dice": [(r["epoch"], r[dice_key]) for r in records if dice_key in r],
        "train_dice": [(r["epoch"], r[train_dice_key]) for r in records if train_dice_key in r],
    }


@dataclass(frozen=True)
class CurveEnd:
    """How a training's Dice curves end, the measurements that tell a short budget from under- or over-fitting.

    Attributes:
        epochs: the epochs logged with a validation Dice.
        best_epoch, best_dice: the epoch of the highest validation Dice and that Dice.
        slope: the least-squares slope of the validation Dice over the last ``window`` epochs, per epoch.
        window: the epochs ``slope`` was fitted over.
        train_dice, val_dice: the mean training and validation Dice over the last ``last`` epochs (the
            training Dice as the trainer measured it: on augmented batches, in training mode, while learning).
        slope_half_width: the half-width of the slope's 95 % interval (Student's t with ``window - 2``
            degrees of freedom; NaN when ``window < 3``): the validation Dice swings from epoch to epoch, and a
            slope inside that swing is no evidence of a rise.
    """

    epochs: int
    best_epoch: int
    best_dice: float
    slope: float
    window: int
    train_dice: float
    val_dice: float
    slope_half_width: float = math.nan

    #: a rise of the validation Dice of at least this much per 10 epochs reads as "still rising"
    RISING_PER_10 = 0.01
    #: training Dice above validation Dice by at least this much reads as over-fitting
    OVERFIT_GAP = 0.05

    def reading(self) -> str:
        """The issue's three signs, where the numbers show them: a curve still rising (the budget), training Dice
        at or below validation Dice (under-fitting or strong augmentation), training well above validation
        (over-fitting); "flat" when none.

        "Still rising" needs a fitted rise of at least :attr:`RISING_PER_10` per 10 epochs and a slope whose
        95 % interval lies above 0; a rise that the epoch-to-epoch swings could give reads "no clear rise"."""
        signs = []
        if self.slope * 10 >= self.RISING_PER_10:
            if self.slope - self.slope_half_width > 0:
                signs.append("still rising: the budget limits it")
            else:
                signs.append("no clear rise: the fitted rise is within the epoch-to-epoch swings")
        gap = self.train_dice - self.val_dice
        if gap <= 0:
            signs.append("training at or below validation: under-fitting or strong augmentation")
        elif gap >= self.OVERFIT_GAP:
            signs.append("training well above validation: over-fitting")
        return "; ".join(signs) or "flat, training close to validation"


def curve_end(
    path: str | os.PathLike,
    window: int = 10,
    last: int = 3,
    dice_key: str = "val_mean_dice",
    train_dice_key: str = "train_mean_dice",
) -> CurveEnd | None:
    """
    Read how an :class:`EpochLog`'s Dice curves end (``None`` without the file or without a validation Dice in
    at least two epochs).

    Args:
        path: the JSON-lines file of an :class:`EpochLog`.
        window: the last epochs the validation Dice's slope is fitted over (fewer when fewer were logged).
        last: the last epochs whose training and validation Dice are averaged (epoch-to-epoch noise is large).
        dice_key, train_dice_key: the record keys of the validation and training Dice.

    Example::

        end = curve_end("runs/busi_paper/dcnet/epochs.jsonl")
        f"{end.slope * 10:+.3f} per 10 epochs; {end.reading()}"
    """
    if not Path(path).is_file():
        return None
    records = [r for r in read_epoch_log(path) if math.isfinite(r.get(dice_key, math.nan))]
    if len(records) < 2:
        return None
    best = max(records, key=lambda r: r[dice_key])
    tail = records[-window:]
    fit = stats.linregress([r["epoch"] for r in tail], [r[dice_key] for r in tail])
    # NaN for two points: a line through two points has no residuals to judge it by
    half_width = float(stats.t.ppf(0.975, len(tail) - 2) * fit.stderr) if len(tail) >= 3 else math.nan
    ending = records[-last:]
    train = [r[train_dice_key] for r in ending if math.isfinite(r.get(train_dice_key, math.nan))]
    return CurveEnd(
        epochs=len(records),
        best_epoch=int(best["epoch"]),
        best_dice=float(best[dice_key]),
        slope=float(fit.slope),
        window=len(tail),
        train_dice=statistics.fmean(train) if train else math.nan,
        val_dice=statistics.fmean(r[dice_key] for r in ending),
        slope_half_width=half_width,
    )

"""``PerImageMetricsWriter`` (an evaluator's per-image CSV and summary JSON) and ``EpochLog`` on bare engines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor

from lesionseg.engines import PerImageMetricsWriter
from lesionseg.engines.training_log import EpochLog, curve_end, epoch_curves, read_epoch_log
from lesionseg.metrics import compute_image_metrics, read_per_image_csv, read_summary_json
from lesionseg.metrics.plots import plot_training_curves


def _mask(shape, box=None):
    mask = torch.zeros(1, *shape)
    if box is not None:
        r0, r1, c0, c1 = box
        mask[0, r0:r1, c0:c1] = 1
    return mask


# (file, class, prediction, ground truth, spacing): images of different sizes, a normal one, one with a spacing
IMAGES = [
    ("/data/a.png", "benign", _mask((8, 10), (1, 5, 2, 7)), _mask((8, 10), (2, 6, 2, 8)), None),
    ("/data/b.png", "malignant", _mask((12, 9)), _mask((12, 9), (3, 9, 1, 4)), None),
    ("/data/c.png", "normal", _mask((6, 6)), _mask((6, 6)), None),
    ("/data/d.png", "benign", _mask((10, 10), (0, 4, 0, 4)), _mask((10, 10), (1, 5, 1, 5)), [0.5, 2.0]),
]


def _evaluator(writer: PerImageMetricsWriter) -> Engine:
    """An engine whose iterations yield one decollated item each, as a MONAI evaluator's post-processing leaves it."""

    def step(engine, item):
        name, klass, pred, label, spacing = item
        image = MetaTensor(torch.rand(pred.shape), meta={"filename_or_obj": name})
        batch = {"case": name[-5], "class": klass, **({"spacing": spacing} if spacing else {})}
        engine.state.batch = [batch]
        return [{"pred": pred, "label": label, "image": image}]

    engine = Engine(step)
    writer.attach(engine)
    return engine


def test_writer_scores_every_image_and_summarises_lesion_and_normal(tmp_path):
    writer = PerImageMetricsWriter(tmp_path / "eval")
    _evaluator(writer).run(IMAGES, max_epochs=1)
    rows = read_per_image_csv(writer.csv_path)
    assert [row["image"] for row in rows] == [name for name, *_ in IMAGES]
    assert [row["class"] for row in rows] == [klass for _, klass, *_ in IMAGES]
    for row, (_, _, pred, label, spacing) in zip(rows, IMAGES):
        expected = compute_image_metrics(pred[0], label[0], spacing=spacing)
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, nan_ok=True), (row["image"], name)
    assert math.isnan(rows[0]["hd95_mm"]) and rows[3]["hd95_mm"] > 0  # only d.png has a spacing
    summary = read_summary_json(writer.summary_path)
    assert summary["all"]["hd95_mm"]["count"] == 1
    assert summary["lesion"]["n"] == 3 and summary["normal"]["n"] == 1 and summary["class=benign"]["n"] == 2
    lesion_dice = [row["dice"] for row in rows if row["gt_pixels"] > 0]
    assert summary["lesion"]["dice"]["mean"] == pytest.approx(np.mean(lesion_dice))
    assert summary["lesion"]["dice"]["std"] == pytest.approx(np.std(lesion_dice, ddof=1))
    assert summary["normal"]["dice"]["mean"] == 1.0 and math.isnan(summary["normal"]["precision"]["mean"])

    # a second evaluation epoch starts afresh
    _evaluator(writer).run(IMAGES[:2], max_epochs=1)
    assert len(read_per_image_csv(writer.csv_path)) == 2


def test_writer_names_the_image_whose_masks_differ_in_size(tmp_path):
    bad = [("/data/odd.png", "benign", _mask((8, 8)), _mask((8, 9)), None)]
    with pytest.raises(ValueError, match=r"/data/odd\.png: prediction \(1, 8, 8\) and ground truth \(1, 8, 9\)"):
        _evaluator(PerImageMetricsWriter(tmp_path)).run(bad, max_epochs=1)
    writer = PerImageMetricsWriter(tmp_path, label_key="truth")
    with pytest.raises(KeyError, match="no 'truth'"):
        writer.score({"pred": _mask((4, 4)), "label": _mask((4, 4))})


def test_epoch_log_records_mean_loss_and_validation_metrics(tmp_path):
    validator = Engine(lambda engine, batch: None)

    def step(engine, loss):
        return [{"loss": torch.tensor(loss)}]

    trainer = Engine(step)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine):  # what MONAI's ValidationHandler leaves, here every second epoch
        engine.state.metrics = {"train_mean_dice": 0.05 * engine.state.epoch}  # a training metric, every epoch
        if engine.state.epoch % 2 == 0:
            validator.state.epoch = engine.state.epoch
            validator.state.metrics = {"val_mean_dice": 0.1 * engine.state.epoch}

    log = tmp_path / "train" / "epochs.jsonl"
    EpochLog(log, validator=validator).attach(trainer)
    trainer.run([1.0, 2.0, 6.0], max_epochs=2)
    records = read_epoch_log(log)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["loss"] == pytest.approx(3.0) and "val_mean_dice" not in records[0]
    assert records[1]["val_mean_dice"] == pytest.approx(0.2)
    # the curves drawn: every epoch's loss, the validation Dice where validation ran
    curves = epoch_curves(log)
    assert curves["loss"] == [(1, pytest.approx(3.0)), (2, pytest.approx(3.0))]
    assert curves["val_dice"] == [(2, pytest.approx(0.2))]
    assert curves["train_dice"] == [(1, pytest.approx(0.05)), (2, pytest.approx(0.1))]
    assert epoch_curves(tmp_path / "absent.jsonl") == {"loss": [], "val_dice": [], "train_dice": []}
    # the training Dice is drawn (dashed, beside the validation Dice): the picture differs without it
    with_training = plot_training_curves({"run": curves}, tmp_path / "with.png").read_bytes()
    without = plot_training_curves({"run": dict(curves, train_dice=[])}, tmp_path / "without.png").read_bytes()
    assert with_training != without
    # a rerun's record of an epoch replaces the earlier one; a broken line names the file and line
    with log.open("a") as file:
        file.write(json.dumps({"epoch": 1, "loss": None}) + "\n")
    assert math.isnan(read_epoch_log(log)[0]["loss"])
    with log.open("a") as file:
        file.write("not json\n")
    with pytest.raises(ValueError, match=r"epochs\.jsonl, line 4"):
        read_epoch_log(log)


def _write_log(path, val, train):
    path.write_text(
        "".join(
            json.dumps({"epoch": e, "loss": 1.0, "val_mean_dice": v, "train_mean_dice": t}) + "\n"
            for e, (v, t) in enumerate(zip(val, train), start=1)
        )
    )
    return path


def test_curve_end_measures_the_slope_the_best_epoch_and_the_training_validation_gap(tmp_path):
    rng = np.random.default_rng(0)
    val = list(0.5 + 0.01 * np.arange(20) + rng.normal(0, 0.01, 20))
    train = [v - 0.02 for v in val]
    end = curve_end(_write_log(tmp_path / "rising.jsonl", val, train))
    assert end.slope == pytest.approx(np.polyfit(np.arange(11, 21), val[-10:], 1)[0])  # the last 10 epochs
    assert end.window == 10 and end.epochs == 20
    assert (end.best_epoch, end.best_dice) == (int(np.argmax(val)) + 1, pytest.approx(max(val)))
    assert end.train_dice == pytest.approx(np.mean(train[-3:])) and end.val_dice == pytest.approx(np.mean(val[-3:]))
    assert end.reading() == "still rising: the budget limits it; training at or below validation: " + (
        "under-fitting or strong augmentation"
    )
    # the slope's 95 % interval, written out: t(0.975, n - 2) * sqrt(SSR / (n - 2) / Sxx)
    x, y = np.arange(11, 21), np.asarray(val[-10:])
    residuals = y - np.polyval(np.polyfit(x, y, 1), x)
    stderr = math.sqrt((residuals**2).sum() / 8 / ((x - x.mean()) ** 2).sum())
    assert end.slope_half_width == pytest.approx(2.306004 * stderr, rel=1e-5)

    # a fitted rise of +0.028 per 10 epochs that the epoch-to-epoch swings (±0.03) could give is no evidence
    swinging = [0.68, 0.72, 0.66, 0.71, 0.67, 0.73, 0.66, 0.72, 0.68, 0.74]
    end = curve_end(_write_log(tmp_path / "swinging.jsonl", swinging, [0.9] * 10))
    assert end.slope * 10 >= end.RISING_PER_10 and end.slope - end.slope_half_width < 0
    assert end.reading() == (
        "no clear rise: the fitted rise is within the epoch-to-epoch swings; training well above validation: "
        "over-fitting"
    )

    flat = [0.7] * 12
    assert curve_end(_write_log(tmp_path / "overfit.jsonl", flat, [0.9] * 12)).reading() == (
        "training well above validation: over-fitting"
    )
    assert curve_end(_write_log(tmp_path / "flat.jsonl", flat, [0.72] * 12)).reading() == (
        "flat, training close to validation"
    )
    # nothing to read: no file, or validation in fewer than two epochs
    assert curve_end(tmp_path / "absent.jsonl") is None
    assert curve_end(_write_log(tmp_path / "one.jsonl", [0.5], [0.4])) is None

"""The BUSI comparison: DC-Net, TaiChiNet and MONAI's BasicUNet trained and evaluated under one CPU protocol.

Two presets, each reproducible with one command (every run prints and records the exact command):

- ``--preset short`` (the default), the protocol every BUSI number so far comes from, described first;
- ``--preset paper``, the papers' protocol (issue 15), described after it.

Short protocol (``--preset short``):

- data: the BUSI development subset (``../shared/data/busi/Dataset_BUSI_with_GT``), one grouped,
  class-stratified 80/20 split (seed 0; near-duplicate groups never straddle it), written once to
  ``OUTPUT/datalist.json`` and read by all three models;
- pipeline: each network's own bundle (``bundles/dcnet_bundle``, ``bundles/taichinet_bundle``) at 128×128,
  min-max intensity, the same seed; BasicUNet runs through the DC-Net bundle with only ``network_def`` and
  ``loss`` replaced (MONAI ``BasicUNet`` with its default features, ``DiceCELoss``; and their arguments in
  ``run_settings``), so it sees exactly DC-Net's data pipeline;
- losses: each paper's own (DC-Net: Eq. 18/27; TaiChiNet: Eq. 13-22 with its easy-to-hard steps), except
  DC-Net's harmonic-loss class weight α = 0.5 instead of the paper's 0.25: with α = 0.25 the per-pixel
  minimiser of Eq. 26 predicts a pixel as lesion only once it is ≥ 75.5 % likely lesion (the decision
  jumps from p ≈ 0.18 to 0.82 there), so a short run under-segments; α = 0.5 puts that jump at 50 %, the
  0.5 threshold every model is evaluated at (the bundle's model card has the derivation and both runs);
- budget: ``--epochs`` (12) for every network, Adam at ``--learning-rate`` (1e-3 for all: the papers' 3e-4
  and 1e-4 are tuned for 200 and 40 GPU epochs); TaiChiNet's easy/hard preparation (a U-Net++ trained
  ``--prepare-epochs`` epochs on the training split) is counted in its wall time; each bundle keeps its own
  batch size and augmentation (TaiChiNet's paper recipe augments, DC-Net's does not);
- evaluation: each bundle's evaluate workflow on the validation section (the best checkpoint by validation
  Dice, predictions inverted to the source size, metrics against the masks as read), reported for the
  lesion images (benign and malignant) and for all images; the difference to BasicUNet is also given
  paired over the same lesion images, with its 95 % interval; where each model loses Dice (per class, per
  tercile of lesion area, over- against under-segmentation of its poor images);
- pictures: ``OUTPUT/training_curves.png`` (each model's loss and validation Dice per epoch).

The target (issue 5): each paper network beats BasicUNet's lesion Dice by at least 0.02 and reaches 0.75.

Paper protocol (``--preset paper``):

- data: BUSI's benign and malignant images only, as in TaiChiNet's headline table (Table IV, first part:
  Dice 0.836 without normal images, 0.673 with them): the same grouped, class-stratified 80/20 split, with the
  bundles' lesion-only switch ``classes: [benign, malignant]`` dropping the normal images from training,
  validation and evaluation (the lesion images of each section are those of the short protocol's split);
- length: 40 epochs at 224×224 for every network (TaiChiNet's recipe; DC-Net's 200 epochs at 256² on its own
  sites would take days on a CPU, and 224 is a multiple of 16, as DC-Net needs);
- recipes: each network keeps its bundle's paper recipe (model cards, ``configs/train.yaml``). DC-Net: Adam
  3e-4, batch 4, Eq. 18/27, no augmentation (the paper names none), with the harmonic α = 0.5 that its model
  card recommends for short budgets: 40 epochs are a fifth of the paper's 200, and with α = 0.25 the loss
  labels a pixel lesion only above a 75.5 % posterior, so a network trained briefly under-segments; α = 0.5
  puts that decision at the 0.5 threshold of evaluation. TaiChiNet: Adam 1e-4, batch 16, its four
  augmentations at p = 0.5, Eq. 13-22 with easy-to-hard steps of 20 epochs each, its U-Net++ preparation with
  ``configs/prepare.yaml``'s recipe. BasicUNet (the peer a user would pick instead, so with a fair recipe):
  MONAI's ``BasicUNet`` with Dice + BCE through the TaiChiNet bundle (its easy-to-hard strategy off), so it
  gets TaiChiNet's data pipeline, augmentation, batch 16 and Adam 1e-4, the settings the TaiChiNet paper
  gives for all the networks it trains (Sec. V-B), its U-Net row (0.725 without normal images) included;
- precision: ``--precision`` for every model (default: each bundle's own: DC-Net auto, TaiChiNet and BasicUNet
  fp32); the table states it;
- run folder: ``../runs/busi_paper`` beside the checkout, outside the work tree, so that a later run on the
  same machine (or a fresh checkout beside it) finds and continues it;
- fit: each finished model's kept checkpoint is also evaluated on its own training images, as on the
  validation images (``OUTPUT/<model>/training_fit/``); the report's fit table sets the two side by side, the
  measurement that tells over-fitting from under-fitting (``--no-training-fit`` leaves it out); where the last
  epoch is not the kept one, its network (``models/training_state.pt``) is evaluated there too
  (``OUTPUT/<model>/last_epoch_fit/``), and for TaiChiNet the parts table groups both by the share of each
  lesion its easy and hard parts cover;
- targets (issue 15): TaiChiNet lesion Dice ≥ 0.80, DC-Net ≥ 0.78, and each ≥ BasicUNet + 0.02 with the
  paired 95 % interval of the difference above 0.

Resuming: results, checkpoints and logs stay under ``OUTPUT/<model>/``. A model whose evaluation finished
(``record.json``) is not rerun (delete its folder to redo it); one interrupted in training resumes from its
last finished epoch (the bundles' ``training_state.pt``; TaiChiNet's easy/hard parts are reused), so running
the same command again continues an interrupted comparison where it stopped. The wall time of a model adds
the finished epochs of interrupted sessions (``OUTPUT/<model>/epoch_seconds.jsonl``) to the session that
finished it (an epoch cut off by the interruption is not counted). Pausing a run (Ctrl-Z, or ``kill -STOP``
and ``kill -CONT`` of its process group while the cores are needed elsewhere) is fine: the pauses are left
out of every time (:class:`lesionseg.utils.clock.RunningClock`), and ``record.json`` says how long they were.

External test set: ``--test-dir DIR`` evaluates every finished model on a separate labelled folder (any
layout ``lesionseg`` reads; every labelled image, ``--eval_section all``, with no class filter: the table's
lesion columns are its lesion images) after its validation evaluation, into ``OUTPUT/<model>/test/``, and
writes ``OUTPUT/test_results.md``.

Usage::

    python benchmarks/busi_accuracy.py                                   # short preset, about two hours
    python benchmarks/busi_accuracy.py --preset paper --precision bf16   # paper preset, several hours
    python benchmarks/busi_accuracy.py --models basicunet dcnet --epochs 4
    python benchmarks/busi_accuracy.py --override "dcnet:loss#alpha=0.5"  # one config id of one model
    python benchmarks/busi_accuracy.py --preset paper --test-dir /data/other_site
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lesionseg.utils import RunningClock, write_text_atomically

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "busi" / "Dataset_BUSI_with_GT"


def without_train_handler(bundle: str, target: str) -> dict[str, Any]:
    """The override that leaves the handler whose ``_target_`` ends with ``target`` out of ``train#handlers`` of
    ``bundles/<bundle>/configs/train.yaml``; found by name, so a reordered list still drops the right one.

    Raises:
        ValueError: the bundle's training handlers have no such handler.
    """
    import yaml

    config = REPO / "bundles" / bundle / "configs" / "train.yaml"
    handlers = yaml.safe_load(config.read_text())["train"]["handlers"]
    for index, handler in enumerate(handlers):
        if str(handler.get("_target_", "")).endswith(target):
            return {f"train#handlers#{index}#_disabled_": True}
    raise ValueError(f"{config}: train#handlers has no {target}")


BASICUNET = {
    "network_def": {"_target_": "BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1},
    "loss": {"_target_": "DiceCELoss", "sigmoid": True},
    # the bundles' run_settings refer to their own loss's arguments and network's options, which these have not
    "run_settings#loss": {},
    "run_settings#network_def": {},
}

#: model name -> (bundle folder, config overrides that make it this model), short preset
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "basicunet": ("dcnet_bundle", BASICUNET),
    "dcnet": ("dcnet_bundle", {"loss#alpha": 0.5}),
    "taichinet": ("taichinet_bundle", {}),
}
BASELINE = "basicunet"
COLUMNS = ("dice", "iou", "precision", "sensitivity", "accuracy", "hd95")
TARGET_DICE, TARGET_MARGIN = 0.75, 0.02
#: BUSI without normal images (TaiChiNet's headline table)
LESION_CLASSES = ["benign", "malignant"]


@dataclass(frozen=True)
class Preset:
    """One protocol: what every model gets unless a command-line option replaces it.

    Args:
        epochs: training epochs of every model.
        size: image height and width.
        learning_rate: Adam's learning rate for every model; ``None`` keeps each bundle's own (its paper's).
        prepare_epochs: epochs of TaiChiNet's U-Net++ preparation; ``None`` keeps ``configs/prepare.yaml``'s.
        classes: the bundles' ``classes`` setting (``None``: not set, every image).
        output: the default results folder.
        models: model name -> (bundle folder, config overrides that make it this model with this recipe).
        targets: model name -> lesion Dice it should reach.
        interval_above_zero: the target also needs the paired 95 % interval of the Dice difference to
            BasicUNet above 0, not only its mean above the margin.
        training_fit: also evaluate each finished model on its own training images
            (:func:`evaluate_training_fit`, the report's fit table).
    """

    epochs: int
    size: int
    learning_rate: float | None
    prepare_epochs: int | None
    classes: list[str] | None
    output: Path
    models: dict[str, tuple[str, dict[str, Any]]]
    targets: dict[str, float] = field(default_factory=dict)
    interval_above_zero: bool = False
    training_fit: bool = False


PRESETS: dict[str, Preset] = {
    # the protocol of every BUSI number before issue 15, unchanged
    "short": Preset(
        epochs=12,
        size=128,
        learning_rate=1e-3,
        prepare_epochs=10,
        classes=None,
        output=REPO / "runs" / "busi_accuracy",
        models=MODELS,
        targets={"dcnet": TARGET_DICE, "taichinet": TARGET_DICE},
    ),
    # issue 15: lesion images only, 40 epochs at 224², each network's paper recipe (module docstring)
    "paper": Preset(
        epochs=40,
        size=224,
        learning_rate=None,
        prepare_epochs=None,
        classes=LESION_CLASSES,
        output=REPO.parent / "runs" / "busi_paper",
        models={
            # TaiChiNet's pipeline and recipe (batch 16, Adam 1e-4, its augmentation) with Dice + BCE alone
            # (its easy-to-hard handler sets a step on TaiChiNet's loss, which DiceCELoss has not)
            "basicunet": (
                "taichinet_bundle",
                {**BASICUNET, "easy_to_hard": False, **without_train_handler("taichinet_bundle", "EasyToHardHandler")},
            ),
            # the bundle's paper recipe (Adam 3e-4, batch 4, no augmentation); α = 0.5 for a 40-epoch budget
            "dcnet": ("dcnet_bundle", {"loss#alpha": 0.5}),
            # the bundle's paper recipe
            "taichinet": ("taichinet_bundle", {}),
        },
        targets={"dcnet": 0.78, "taichinet": 0.80},
        interval_above_zero=True,
        training_fit=True,
    ),
}


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"model:config#id=value"`` -> (model, id, value); the value is read as YAML, as every ``--override`` of
    the ``lesionseg`` command (:func:`lesionseg.utils.overrides.parse_override_value`: ``false`` is a boolean,
    ``0.5`` a float, ``[224, 224]`` a list, anything else a string)."""
    from lesionseg.utils.overrides import OverrideError, parse_overrides

    model, sep, assignment = text.partition(":")
    if not sep or model not in MODELS:
        raise argparse.ArgumentTypeError(
            f"--override takes MODEL:ID=VALUE with MODEL one of {sorted(MODELS)}, got {text!r}"
        )
    try:
        ((key, value),) = parse_overrides([assignment], option=f"--override {model}:").items()
    except OverrideError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return model, key, value


def write_split(dataset_dir: Path, output: Path) -> Path:
    """The one split all models use, as ``output/datalist.json`` (kept if it exists, so reruns agree)."""
    from lesionseg.data.datalist import write_datalist
    from lesionseg.data.splits import datalist_section

    path = output / "datalist.json"
    if not path.exists():
        sections = {
            name: datalist_section(dataset_dir, name, val_fraction=0.2, seed=0) for name in ("training", "validation")
        }
        write_datalist(path, sections, description=f"grouped, class-stratified 80/20 split of {dataset_dir}, seed 0")
    return path


def model_overrides(name: str, args: argparse.Namespace, datalist: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """The config overrides that train and evaluate ``name`` under ``args.preset`` with ``args``' options.

    ``extra`` (``--override``) comes last, so it replaces any of the others.
    """
    preset = PRESETS[args.preset]
    bundle_name, recipe = preset.models[name]
    folder = args.output / name
    overrides: dict[str, Any] = {
        "dataset_dir": str(datalist),
        "image_size": [args.size, args.size],
        "max_epochs": args.epochs,
    }
    if args.learning_rate is not None:
        overrides["learning_rate"] = args.learning_rate
    overrides.update({"seed": 0, "ckpt_dir": str(folder / "models"), "output_dir": str(folder / "train")})
    if preset.classes is not None:
        overrides["classes"] = list(preset.classes)
    if args.precision is not None:
        overrides["precision"] = args.precision
    overrides.update(recipe)
    overrides.update(extra)
    if bundle_name == "taichinet_bundle":
        overrides["prepare_dir"] = str(folder / "easy_hard")
        prepare = {"max_epochs": args.prepare_epochs} if args.prepare_epochs is not None else {}
        overrides["prepare_overrides"] = {**prepare, **overrides.get("prepare_overrides", {})}
    return overrides


def precision_used(bundle: Path, overrides: dict[str, Any]) -> str:
    """The precision a run of ``bundle`` with ``overrides`` trains in on this machine (``auto`` resolved)."""
    import torch
    import yaml

    from lesionseg.engines import resolve_precision

    setting = overrides.get("precision", yaml.safe_load((bundle / "configs" / "train.yaml").read_text())["precision"])
    return resolve_precision(setting, "cuda:0" if torch.cuda.is_available() else "cpu").name


def epoch_timer_attacher(path: Path, clock: RunningClock):
    """A ``before_run`` for :func:`lesionseg.workflows.bundle.run_workflow` that appends
    ``{"epoch": e, "seconds": s, "paused_seconds": p}`` to ``path`` after each training epoch (after its
    validation and checkpoint): ``s`` is the time by ``clock`` (pauses left out) since the previous epoch of this
    session, or since the workflow was ready to run for its first epoch (TaiChiNet's easy/hard preparation
    included), ``p`` how long it was paused in between. The file outlives an interrupted session, so the time
    of a model trained over several sessions adds up (:func:`earlier_seconds`).
    """

    def attach(workflow) -> None:
        from ignite.engine import Events

        last = [clock.elapsed(), clock.stopped_seconds]

        def completed(engine) -> None:
            now, stopped = clock.elapsed(), clock.stopped_seconds
            entry = {"epoch": int(engine.state.epoch), "seconds": now - last[0], "paused_seconds": stopped - last[1]}
            with open(path, "a") as file:
                file.write(json.dumps(entry) + "\n")
            last[:] = now, stopped

        workflow.trainer.add_event_handler(Events.EPOCH_COMPLETED, completed)

    return attach


def earlier_seconds(path: Path, key: str = "seconds") -> float:
    """The training seconds :func:`epoch_timer_attacher` logged to ``path`` (0 without the file); with
    ``key="paused_seconds"``, the pauses it left out of them."""
    if not path.is_file():
        return 0.0
    return sum(json.loads(line).get(key, 0.0) for line in path.read_text().splitlines() if line.strip())


def read_record(path: Path, preset: str) -> dict[str, Any]:
    """A finished model's record, refused when another preset made it (records from before presets: short).

    Raises:
        SystemExit: naming the record, when its preset is not ``preset``: reusing it would report, say, a
            model trained with normal images as a lesion-only one.
    """
    record = json.loads(path.read_text())
    made_by = record.get("preset", "short")
    if made_by != preset:
        raise SystemExit(
            f"error: {path}: made by --preset {made_by}, not {preset}; use another --output (the {preset} preset's "
            f"default is {PRESETS[preset].output}) or delete that model's folder"
        )
    return record


#: the evaluations of a finished model's kept checkpoint beside the validation one: folder -> record file
EVALUATION_RECORDS = {
    "test": "test_record.json",
    "training_fit": "fit_record.json",
    "last_epoch_fit": "last_epoch_fit_record.json",
}


def run_model(name: str, args: argparse.Namespace, datalist: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one model through its bundle; its record (wall time, summary) as a dict.

    A model with a ``record.json`` is not rerun; an interrupted training resumes from its last epoch (the
    bundle's ``training_state.pt``). The record's times add the finished epochs of earlier sessions
    (``epoch_seconds.jsonl``) to this session's time.
    """
    from lesionseg.engines.training_log import epoch_log_attacher
    from lesionseg.workflows.bundle import run_workflow

    folder = args.output / name
    record_path = folder / "record.json"
    if record_path.exists():
        logging.info("%s: evaluated before (%s), not rerun", name, record_path)
        return read_record(record_path, args.preset)
    bundle_name = PRESETS[args.preset].models[name][0]
    bundle = REPO / "bundles" / bundle_name
    overrides = model_overrides(name, args, datalist, extra)

    timing = folder / "epoch_seconds.jsonl"
    earlier = earlier_seconds(timing)  # epochs finished by interrupted sessions
    earlier_paused = earlier_seconds(timing, "paused_seconds")
    if earlier:
        logging.info("%s: resuming; %.1f min of training in earlier sessions", name, earlier / 60)

    with RunningClock() as clock:  # Ctrl-Z or kill -STOP pauses are not training time

        def before_run(workflow) -> None:
            epoch_log_attacher(folder / "epochs.jsonl")(workflow)
            epoch_timer_attacher(timing, clock)(workflow)

        logging.info("%s: training %d epochs at %dx%d through %s", name, args.epochs, args.size, args.size, bundle_name)
        run_workflow(bundle, ["train"], "train", overrides, before_run=before_run)
        trained = clock.elapsed() + earlier
        evaluation = dict(overrides, output_dir=str(folder / "evaluation"), eval_section="validation")
        run_workflow(bundle, ["train", "evaluate"], None, evaluation)
        wall = clock.elapsed() + earlier
    from lesionseg.deploy.release import file_md5

    summary = json.loads((folder / "evaluation" / "summary.json").read_text())
    record = {
        "model": name,
        "bundle": bundle_name,
        "preset": args.preset,
        "command": args.command,
        "train_seconds": trained,
        "wall_seconds": wall,
        "earlier_sessions_seconds": earlier,
        "paused_seconds": earlier_paused + clock.stopped_seconds,  # left out of the times above
        "precision": precision_used(bundle, overrides),
        "image_size": overrides["image_size"],  # also in training_state.pt, which may be deleted once a run is final
        # the checkpoint this record's summary scored: record-weights refuses another (a run trained on since)
        "checkpoint_md5": file_md5(folder / "models" / "model.pt"),
        "overrides": extra,
        "summary": summary,
    }
    write_text_atomically(record_path, json.dumps(record, indent=2))  # a crash leaves no half record
    return record


def evaluate_test_set(name: str, args: argparse.Namespace, datalist: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a finished model's ``models/model.pt`` on every labelled image of ``args.test_dir``.

    Writes ``OUTPUT/<model>/test/`` (per_image.csv, summary.json, predictions) and ``test_record.json``; a model
    with a ``test_record.json`` is not evaluated again. No class filter: the lesion columns of the table are
    the test set's lesion images, the "all" column every image.
    """
    overrides = model_overrides(name, args, datalist, extra)
    overrides.update(dataset_dir=str(args.test_dir), eval_section="all", classes=None)
    images = f"every labelled image of {args.test_dir}"
    return _evaluate_checkpoint(name, args, extra, overrides, "test", images, {"test_dir": str(args.test_dir)})


def evaluate_training_fit(name: str, args: argparse.Namespace, datalist: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a finished model's ``models/model.pt`` on its own training images, as on the validation images.

    The same evaluation on both sides (the kept checkpoint in evaluation mode, no augmentation, each image at
    its own size against its mask), so the difference says whether a model over-fits. The training Dice of
    the epoch log cannot: it is of augmented batches in training mode. Writes ``OUTPUT/<model>/training_fit/``
    and ``fit_record.json``; a model with a ``fit_record.json`` is not evaluated again.
    """
    overrides = dict(model_overrides(name, args, datalist, extra), eval_section="training")
    return _evaluate_checkpoint(name, args, extra, overrides, "training_fit", "its training images", {})


def evaluate_last_epoch_fit(
    name: str, args: argparse.Namespace, datalist: Path, extra: dict[str, Any]
) -> dict[str, Any] | None:
    """Evaluate the network of a finished model's last epoch on its own training images, as
    :func:`evaluate_training_fit` evaluates the kept checkpoint, when the two differ.

    The network comes from ``models/training_state.pt`` (the resumable state) and is written to
    ``OUTPUT/<model>/last_epoch/model.pt``; the evaluation to ``OUTPUT/<model>/last_epoch_fit/`` and
    ``last_epoch_fit_record.json``. The parts table then shows how the fit moved after the kept epoch (for
    TaiChiNet, what its step 2 did). ``None`` (nothing evaluated) without a training state, or when its last
    epoch is the kept one.
    """
    from lesionseg.deploy.release import file_md5
    from lesionseg.engines.checkpoint import load_checkpoint, save_atomically

    folder = args.output / name
    state_path = folder / "models" / "training_state.pt"
    if not state_path.is_file():
        logging.info("%s: no %s, so no last-epoch fit", name, state_path)
        return None
    network = folder / "last_epoch" / "model.pt"
    record_path = folder / EVALUATION_RECORDS["last_epoch_fit"]
    if _evaluated_since(record_path, network, state_path, args.preset):
        logging.info("%s: the last epoch's network was evaluated after %s was written, not rerun", name, state_path)
        return read_record(record_path, args.preset)
    state = load_checkpoint(state_path)
    last_epoch = state["trainer"]["iteration"] // state["trainer"]["epoch_length"]
    kept_epoch = state["best"]["validator"]["best_metric_epoch"]
    if last_epoch == kept_epoch:
        logging.info("%s: the kept checkpoint is the last epoch's (%d); no separate last-epoch fit", name, last_epoch)
        return None
    network.parent.mkdir(exist_ok=True)
    save_atomically(state["model"], network)
    overrides = dict(model_overrides(name, args, datalist, extra), eval_section="training")
    overrides["ckpt_dir"] = str(network.parent)
    images = f"its training images (the network of epoch {last_epoch}, the last)"
    # which state the network came from, and which kept checkpoint it is the last epoch of
    kept = folder / "models" / "model.pt"
    record_extra = {
        "epoch": last_epoch,
        "source_md5": file_md5(state_path),
        "kept_md5": file_md5(kept) if kept.is_file() else None,
    }
    return _evaluate_checkpoint(name, args, extra, overrides, "last_epoch_fit", images, record_extra)


def _evaluated_since(record_path: Path, network: Path, source: Path, preset: str) -> bool:
    """Whether ``record_path`` holds an evaluation of ``network`` as it is now (its MD5), taken from ``source`` as
    it is now (the record's ``source_md5``): then neither needs to be made again. A record written before
    ``source_md5`` was stored counts when it and the network were written after ``source`` (a copy with
    ``cp -r`` changes those times, a copy changes no MD5)."""
    from lesionseg.deploy.release import file_md5

    if not (record_path.is_file() and network.is_file()):
        return False
    record = read_record(record_path, preset)
    if record.get("checkpoint_md5") != file_md5(network):
        return False
    if "source_md5" in record:
        return record["source_md5"] == file_md5(source)
    return min(record_path.stat().st_mtime_ns, network.stat().st_mtime_ns) >= source.stat().st_mtime_ns


def _evaluate_checkpoint(
    name: str,
    args: argparse.Namespace,
    extra: dict[str, Any],
    overrides: dict[str, Any],
    evaluation: str,
    images: str,
    record_extra: dict[str, Any],
) -> dict[str, Any]:
    """Run the bundle's evaluate workflow with ``overrides`` on ``name``'s kept checkpoint, into
    ``OUTPUT/<model>/<evaluation>/``, and record it in ``EVALUATION_RECORDS[evaluation]`` with the checkpoint's
    MD5: a record of the same checkpoint is kept (not evaluated again), one of a checkpoint retrained since is
    redone. ``extra`` is the model's ``--override``, ``images`` says what is evaluated in the log,
    ``record_extra`` goes into the record."""
    from lesionseg.deploy.release import file_md5
    from lesionseg.workflows.bundle import run_workflow

    folder = args.output / name
    record_path = folder / EVALUATION_RECORDS[evaluation]
    checkpoint = Path(overrides["ckpt_dir"]) / "model.pt"
    checkpoint_md5 = file_md5(checkpoint)
    if record_path.exists():
        record = read_record(record_path, args.preset)
        if record.get("checkpoint_md5") == checkpoint_md5:
            logging.info("%s: %s evaluated before (%s), not rerun", name, images, record_path)
            return record
        logging.info("%s: %s was evaluated with another checkpoint (%s); evaluating again", name, images, record_path)
    bundle_name = PRESETS[args.preset].models[name][0]
    bundle = REPO / "bundles" / bundle_name
    overrides = dict(overrides, output_dir=str(folder / evaluation))
    logging.info("%s: evaluating %s on %s", name, checkpoint, images)
    with RunningClock() as clock:
        run_workflow(bundle, ["train", "evaluate"], None, overrides)
    record = {
        "model": name,
        "bundle": bundle_name,
        "preset": args.preset,
        "command": args.command,
        **record_extra,
        "checkpoint_md5": checkpoint_md5,
        "wall_seconds": clock.elapsed(),
        "paused_seconds": clock.stopped_seconds,
        "precision": precision_used(bundle, overrides),
        "overrides": extra,
        "summary": json.loads((folder / evaluation / "summary.json").read_text()),
    }
    write_text_atomically(record_path, json.dumps(record, indent=2))  # a crash leaves no half record
    return record


def _mean(summary: dict, group: str, metric: str, statistic: str = "mean") -> float:
    stats = summary.get(group, {}).get(metric) or {}
    value = stats.get(statistic) if isinstance(stats, dict) else None
    return float("nan") if value is None else float(value)


def paired_dice_difference(
    output: Path, model: str, baseline: str, evaluation: str = "evaluation"
) -> tuple[float, float, int] | None:
    """Mean per-image lesion Dice of ``model`` minus ``baseline`` over the lesion images both evaluated, with
    the half-width of its normal 95 % interval and the number of images (``None`` without both CSVs).

    Both models are scored on the same images, so the per-image differences are paired: their spread, not
    the much larger spread of each model's Dice over images, says whether a difference of 0.02 is real.

    Args:
        output: the results folder, holding ``<model>/<evaluation>/per_image.csv``.
        model, baseline: model names.
        evaluation: ``"evaluation"`` (the validation section) or ``"test"`` (``--test-dir``).
    """
    tables = [output / name / evaluation / "per_image.csv" for name in (model, baseline)]
    return paired_table_difference(*tables)


def paired_table_difference(table: Path, baseline_table: Path) -> tuple[float, float, int] | None:
    """:func:`paired_dice_difference` of two ``per_image.csv`` files: mean lesion Dice of ``table`` minus
    ``baseline_table`` over the lesion images both hold, the half-width of its normal 95 % interval and the
    number of images (``None`` without both files or with fewer than two shared images)."""
    from lesionseg.metrics import read_per_image_csv

    tables = (table, baseline_table)
    if not all(path.is_file() for path in tables):
        return None
    dice = [{r["image"]: r["dice"] for r in read_per_image_csv(path) if r["gt_pixels"] > 0} for path in tables]
    differences = [dice[0][image] - dice[1][image] for image in dice[0] if image in dice[1]]
    if len(differences) < 2:
        return None
    mean = statistics.fmean(differences)
    return mean, 1.96 * statistics.stdev(differences) / math.sqrt(len(differences)), len(differences)


def results_table(
    records: list[dict],
    output: Path | None = None,
    targets: dict[str, float] | None = None,
    interval_above_zero: bool = False,
    evaluation: str = "evaluation",
    time_header: str = "wall time",
) -> str:
    """Markdown: lesion-image metrics, all-image Dice, the difference to the baseline (paired over images
    when ``output`` holds the per-image tables), the time and the precision of each model, then whether each
    model in ``targets`` met its target.

    Args:
        records: :func:`run_model` or :func:`evaluate_test_set` records.
        output: the results folder, for the paired differences.
        targets: model name -> lesion Dice to reach (the margin over BasicUNet is ``TARGET_MARGIN``); the
            short preset's 0.75 for both paper networks when ``None``; ``{}``: no target lines.
        interval_above_zero: a target also needs the lower end of the paired 95 % interval above 0.
        evaluation: the per-image tables' folder, ``"evaluation"`` or ``"test"``.
        time_header: the header of the time column (each record's ``wall_seconds``).
    """
    targets = {"dcnet": TARGET_DICE, "taichinet": TARGET_DICE} if targets is None else targets
    baseline = next((r for r in records if r["model"] == BASELINE), None)
    header = ["model"] + [f"{c}{' (px)' if c == 'hd95' else ''} (lesion)" for c in COLUMNS]
    header += ["dice (all)", "Δ dice vs BasicUNet", time_header, "precision mode"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    paired_by_model = {}
    for record in records:
        summary = record["summary"]
        dice = _mean(summary, "lesion", "dice")
        delta = dice - _mean(baseline["summary"], "lesion", "dice") if baseline and record is not baseline else None
        cells = [record["model"]] + [f"{_mean(summary, 'lesion', c):.{1 if c == 'hd95' else 3}f}" for c in COLUMNS]
        cells[1] += f" ± {_mean(summary, 'lesion', 'dice', 'std'):.3f}"  # the spread the 0.02 margin is judged against
        paired = (
            paired_dice_difference(output, record["model"], BASELINE, evaluation)
            if output and delta is not None
            else None
        )
        paired_by_model[record["model"]] = paired
        if paired is not None:
            delta_cell = f"{paired[0]:+.3f} ± {paired[1]:.3f} (paired, 95 %, n = {paired[2]})"
        else:
            delta_cell = "" if delta is None else f"{delta:+.3f}"
        cells += [f"{_mean(summary, 'all', 'dice'):.3f}", delta_cell]
        cells.append(f"{record['wall_seconds'] / 60:.1f} min")
        cells.append(record.get("precision", "not recorded"))
        lines.append("| " + " | ".join(cells) + " |")
    for record in records:
        if baseline is None or record is baseline or record["model"] not in targets:
            continue
        target = targets[record["model"]]
        dice = _mean(record["summary"], "lesion", "dice")
        delta = dice - _mean(baseline["summary"], "lesion", "dice")
        met = dice >= target and delta >= TARGET_MARGIN
        condition = f"lesion Dice >= {target} and >= BasicUNet + {TARGET_MARGIN}"
        if interval_above_zero:
            paired = paired_by_model.get(record["model"])
            met = met and paired is not None and paired[0] - paired[1] > 0
            condition += ", paired 95 % interval above 0"
        lines.append(f"\n{record['model']}: target ({condition}) {'met' if met else 'missed'}")
    return "\n".join(lines)


def comparison_table(records: list[dict], output: Path, other: Path) -> str:
    """Markdown: each model's lesion Dice here and in ``other`` (another results folder), and the difference,
    paired over the lesion images both evaluated, with its 95 % interval.

    Raises:
        SystemExit: when ``other`` was made on another split (its ``datalist.json`` differs), where pairing
            images would compare different validation sets.
    """
    if (output / "datalist.json").read_bytes() != (other / "datalist.json").read_bytes():
        raise SystemExit(
            f"error: {other / 'datalist.json'} differs from {output / 'datalist.json'}: not the same split"
        )
    lines = [
        f"Against `{other}` (same split):",
        "",
        f"| model | lesion Dice here | lesion Dice in `{other.name}` | Δ (paired, 95 %) |",
        "|---|---|---|---|",
    ]
    for record in records:
        name = record["model"]
        other_record = other / name / "record.json"
        theirs = (
            _mean(json.loads(other_record.read_text())["summary"], "lesion", "dice") if other_record.is_file() else None
        )
        paired = paired_table_difference(
            output / name / "evaluation" / "per_image.csv", other / name / "evaluation" / "per_image.csv"
        )
        theirs_cell = "not run" if theirs is None else f"{theirs:.3f}"
        delta = "" if paired is None else f"{paired[0]:+.3f} ± {paired[1]:.3f} (n = {paired[2]})"
        lines.append(f"| {name} | {_mean(record['summary'], 'lesion', 'dice'):.3f} | {theirs_cell} | {delta} |")
    return "\n".join(lines)


def curves_table(records: list[dict], output: Path) -> str:
    """Markdown: how each model's curves end (``OUTPUT/<model>/epochs.jsonl``), the measurements that say why a
    model misses a target: the validation Dice still rising (budget), training Dice at or below validation
    (under-fitting or strong augmentation), or well above it (over-fitting). Empty without any log."""
    from lesionseg.engines.training_log import curve_end

    ends = {record["model"]: curve_end(output / record["model"] / "epochs.jsonl") for record in records}

    def rise(end) -> str:
        interval = "" if math.isnan(end.slope_half_width) else f" ± {end.slope_half_width * 10:.3f}"
        return f"{end.slope * 10:+.3f}{interval} (last {end.window})"

    rows = [
        f"| {model} | {end.epochs} | {end.best_epoch} ({end.best_dice:.3f}) | {rise(end)} "
        f"| {end.train_dice:.3f} / {end.val_dice:.3f} | {end.reading()} |"
        for model, end in ends.items()
        if end is not None
    ]
    if not rows:
        return ""
    header = (
        "| model | epochs | best epoch (validation Dice) | validation Dice per 10 epochs, fitted (95 %) | "
        "training / validation Dice, last 3 epochs | reading |"
    )
    return "\n".join(["How the curves end (at the training size):", "", header, "|" + "---|" * 6, *rows])


def current_fit_records(folder: Path, preset: str) -> tuple[dict | None, dict | None]:
    """The fit evaluations of the model in ``folder`` that still describe it: the kept checkpoint's
    (``fit_record.json``, when its MD5 is that of ``models/model.pt``) and the last epoch's
    (``last_epoch_fit_record.json``, when it evaluates ``last_epoch/model.pt`` as taken from
    ``models/training_state.pt`` as it is (:func:`_evaluated_since`), or, that state deleted, of the run whose kept
    checkpoint ``models/model.pt`` still is), each ``None`` otherwise.

    A model trained again leaves the old records on disk: its kept checkpoint changed, or its last epoch is
    now the kept one and :func:`evaluate_last_epoch_fit` evaluates nothing. Their numbers are not this model's.
    """
    from lesionseg.deploy.release import file_md5

    kept_path, checkpoint = folder / EVALUATION_RECORDS["training_fit"], folder / "models" / "model.pt"
    kept = None
    if kept_path.is_file() and checkpoint.is_file():
        kept = read_record(kept_path, preset)
        if kept.get("checkpoint_md5") != file_md5(checkpoint):
            logging.info("%s evaluated another checkpoint than %s; left out of the fit tables", kept_path, checkpoint)
            kept = None
    last_path, state = folder / EVALUATION_RECORDS["last_epoch_fit"], folder / "models" / "training_state.pt"
    network = folder / "last_epoch" / "model.pt"
    last = None
    if last_path.is_file():
        if state.is_file():
            current = _evaluated_since(last_path, network, state, preset)
        else:  # the state deleted once the run was final: the network evaluated, of the run whose kept checkpoint
            # is still models/model.pt (a model trained again has another; records before kept_md5 are taken)
            record = read_record(last_path, preset)
            kept_md5 = file_md5(checkpoint) if checkpoint.is_file() else None
            current = (
                network.is_file()
                and record.get("checkpoint_md5") == file_md5(network)
                and record.get("kept_md5", kept_md5) == kept_md5
            )
        if current:
            last = read_record(last_path, preset)
        else:
            logging.info("%s is not of the last epoch of %s; left out of the fit tables", last_path, state)
    return kept, last


def fit_table(records: list[dict], output: Path) -> str:
    """Markdown: each model's kept checkpoint on its own training images against the validation images, the
    same evaluation on both sides (``OUTPUT/<model>/fit_record.json``, :func:`evaluate_training_fit`): training
    well above validation is over-fitting; both low and close together, under-fitting. Empty without any.
    """
    from lesionseg.engines.training_log import CurveEnd

    rows = []
    for record in records:
        kept_fit, last_fit = current_fit_records(output / record["model"], record.get("preset", "short"))
        if kept_fit is None:
            continue
        training, validation = kept_fit["summary"]["lesion"], record["summary"]["lesion"]
        gap = training["dice"]["mean"] - validation["dice"]["mean"]
        if gap >= CurveEnd.OVERFIT_GAP:
            reading = "training well above validation: over-fitting"
        elif gap <= 0:
            reading = "training at or below validation: under-fitting"
        else:
            reading = "training close to validation"
        last = "—"
        if last_fit is not None:
            last_dice = last_fit["summary"]["lesion"]["dice"]
            last = f"{last_dice['mean']:.3f} ± {last_dice['std']:.3f} (epoch {last_fit['epoch']})"
        rows.append(
            f"| {record['model']} | {training['dice']['mean']:.3f} ± {training['dice']['std']:.3f} "
            f"({training['n']}) | {validation['dice']['mean']:.3f} ± {validation['dice']['std']:.3f} "
            f"({validation['n']}) | {gap:+.3f} | {reading} | {last} |"
        )
    if not rows:
        return ""
    intro = (
        "How each model fits its training images: its kept checkpoint evaluated on the training and the "
        "validation lesion images alike (no augmentation, each image at its own size; lesion Dice mean ± std "
        "(images)); the last column, the last epoch's network on the training images where it is not the kept one:"
    )
    header = (
        "| model | training images | validation images | training − validation | reading | "
        "training images, last epoch |"
    )
    return "\n".join([intro, "", header, "|" + "---|" * 6, *rows])


def parts_fit_table(records: list[dict], output: Path) -> str:
    """Markdown: for a model trained on easy/hard parts (TaiChiNet), its training images' Dice (the fit
    evaluations: the kept checkpoint's, and the last epoch's network where it differs) grouped by how much of
    the lesion each part covers (:func:`lesionseg.engines.easy_hard.part_shares`). A model that fits the
    lesion scores alike in every group; one pulled towards the part it was last supervised with scores low
    where that part covers little. Empty without such a model.
    """
    from lesionseg.engines.easy_hard import DATALIST_FILENAME, part_shares
    from lesionseg.metrics import read_per_image_csv
    from lesionseg.metrics.breakdown import SHARE_GROUPS, dice_by_share

    lines = []
    for record in records:
        folder = output / record["model"]
        parts = folder / "easy_hard" / DATALIST_FILENAME
        kept_fit, last_fit = current_fit_records(folder, record.get("preset", "short"))
        if not (parts.is_file() and kept_fit is not None):
            continue
        fits = {"kept": folder / "training_fit" / "per_image.csv"}
        if last_fit is not None:
            fits[f"last (epoch {last_fit['epoch']})"] = folder / "last_epoch_fit" / "per_image.csv"
        shares = part_shares(parts)
        for network, fit in fits.items():
            dice = {row["case"]: row["dice"] for row in read_per_image_csv(fit) if row["gt_pixels"] > 0}
            for index, part in enumerate(("easy part E_p", "hard part H_p")):
                groups = dice_by_share(dice, {case: pair[index] for case, pair in shares.items()})
                cells = [f"{groups[g].mean:.3f} ({groups[g].n})" if groups[g].n else "—" for g in SHARE_GROUPS]
                lines.append(f"| {record['model']} | {network} | {part} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    intro = (
        "How the networks fit their training images by the share of each lesion that the easy/hard parts cover "
        "(training lesion Dice, mean (images); the kept checkpoint, and the last epoch's network where it "
        "differs): the training steps supervise the positive path with the lesion and with one part, so a "
        "model pulled towards the part scores low where it covers little:"
    )
    header = "| model | network | part | " + " | ".join(f"part covers {name}" for name in SHARE_GROUPS) + " |"
    return "\n".join([intro, "", header, "|" + "---|" * (3 + len(SHARE_GROUPS)), *lines])


def breakdown_table(records: list[dict], output: Path, evaluation: str = "evaluation") -> str:
    """Markdown: where each model loses lesion Dice (:mod:`lesionseg.metrics.breakdown`): per class, per
    tercile of lesion area (the same edges for every model, from the first model's images) and which kind
    of error its poor images show. Empty when no model has a ``per_image.csv``.

    Args:
        records: the models' records.
        output: the results folder, holding ``<model>/<evaluation>/per_image.csv``.
        evaluation: ``"evaluation"`` (the validation section) or ``"test"`` (``--test-dir``).
    """
    from lesionseg.metrics import read_per_image_csv
    from lesionseg.metrics.breakdown import MISSED_DICE, POOR_DICE, SIZE_GROUPS, dice_breakdown, lesion_size_edges

    tables = {r["model"]: output / r["model"] / evaluation / "per_image.csv" for r in records}
    rows = {model: read_per_image_csv(path) for model, path in tables.items() if path.is_file()}
    rows = {model: table for model, table in rows.items() if any(r["gt_pixels"] > 0 for r in table)}
    if not rows:
        return ""
    edges = lesion_size_edges(next(iter(rows.values())))
    results = {model: dice_breakdown(table, edges) for model, table in rows.items()}
    classes = sorted({name for result in results.values() for name in result.by_class})

    def cell(group) -> str:
        return "—" if group is None or group.n == 0 else f"{group.mean:.3f} ({group.n})"

    header = ["model", *classes, *(f"{name} lesions" for name in SIZE_GROUPS)]
    header += [f"Dice < {POOR_DICE}: over- / under-segmented", f"missed (Dice < {MISSED_DICE})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, result in results.items():
        cells = [model, *(cell(result.by_class.get(name)) for name in classes)]
        cells += [cell(result.by_size[name]) for name in SIZE_GROUPS]
        cells += [f"{result.poor} / {result.n}: {result.over_segmented} / {result.under_segmented}"]
        cells += [f"{result.missed} / {result.n}"]
        lines.append("| " + " | ".join(cells) + " |")
    intro = (
        f"Where the lesion Dice is lost: mean Dice (images) per class and per tercile of lesion area at the "
        f"image's own size (small <= {edges[0]:.0f} px < medium <= {edges[1]:.0f} px < large); poor images "
        f"(Dice < {POOR_DICE}) are over-segmented when the prediction is larger than the lesion, under-segmented "
        "otherwise (misses included):"
    )
    return "\n".join([intro, "", *lines])


def draw_curves(records: list[dict], output: Path) -> None:
    """``OUTPUT/training_curves.png``: each model's training loss and validation Dice per epoch."""
    from lesionseg.engines.training_log import epoch_curves
    from lesionseg.metrics.plots import plot_training_curves

    logs = {record["model"]: output / record["model"] / "epochs.jsonl" for record in records}
    curves = {model: epoch_curves(log) for model, log in logs.items() if log.is_file()}
    if curves:
        plot_training_curves(curves, output / "training_curves.png", title="BUSI comparison")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with every setting it leaves out taken from its preset (``args.preset``), and
    ``args.command``, the command as a user types it from the repository's root (records and cards quote it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="short",
        help="protocol: short (12 epochs at 128², all images; the default) or paper (40 epochs at 224², lesion "
        "images only, each model's paper recipe); the options below replace single settings of it",
    )
    parser.add_argument(
        "--dataset-dir",
        type=Path,
        default=DEFAULT_DATA,
        help="BUSI folder (default: ../shared/data/busi/Dataset_BUSI_with_GT beside the checkout)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results folder (default: runs/busi_accuracy in the checkout for short, ../runs/busi_paper beside it "
        "for paper); rerunning a command continues the runs in it",
    )
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs of every model (short 12, paper 40)")
    parser.add_argument(
        "--prepare-epochs",
        type=int,
        default=None,
        help="TaiChiNet's U-Net++ epochs (short 10, paper prepare.yaml's 20)",
    )
    parser.add_argument("--size", type=int, default=None, help="image height and width (short 128, paper 224)")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="Adam learning rate of every model (short 1e-3; paper: each bundle's own)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16", "auto"),
        default=None,
        help="precision of every model (default: each bundle's own: DC-Net auto, TaiChiNet fp32); the table states it",
    )
    parser.add_argument(
        "--test-dir",
        type=Path,
        default=None,
        help="a separate labelled folder every finished model is also evaluated on (all its images; test_results.md)",
    )
    parser.add_argument(
        "--compare-to",
        type=Path,
        default=None,
        metavar="DIR",
        help="another results folder on the same split (e.g. the same models in fp32): adds each model's lesion "
        "Dice difference to its namesake there, paired over the same images, with its 95 %% interval",
    )
    parser.add_argument(
        "--training-fit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also evaluate each finished model on its own training images, as on the validation images, for "
        "the fit table (paper: on, short: off)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--override", type=parse_override, action="append", default=[], metavar="MODEL:ID=VALUE")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    for option in ("epochs", "size", "learning_rate", "prepare_epochs", "output", "training_fit"):
        if getattr(args, option) is None:
            setattr(args, option, getattr(preset, option))
    if not args.dataset_dir.is_dir():
        parser.error(f"--dataset-dir {args.dataset_dir} is not a folder (the BUSI images are not in the repository)")
    if args.compare_to is not None and not (args.compare_to / "datalist.json").is_file():
        parser.error(f"--compare-to {args.compare_to} holds no datalist.json: not a results folder of this script")
    if args.test_dir is not None and not args.test_dir.is_dir():
        parser.error(f"--test-dir {args.test_dir} is not a folder")
    if args.epochs < 1 or args.size % 16:
        parser.error("--epochs must be positive and --size a multiple of 16")
    args.command = shlex.join(["python", "benchmarks/busi_accuracy.py", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    command = args.command
    datalist = write_split(args.dataset_dir.resolve(), args.output)
    records, test_records = [], []
    for name in args.models:
        extra = {key: value for model, key, value in args.override if model == name}
        records.append(run_model(name, args, datalist, extra))
        if args.training_fit:
            evaluate_training_fit(name, args, datalist, extra)
            evaluate_last_epoch_fit(name, args, datalist, extra)
        logging.info(
            "%s: finished\n%s", name, results_table(records, args.output, preset.targets, preset.interval_above_zero)
        )
        if args.test_dir is not None:
            test_records.append(evaluate_test_set(name, args, datalist, extra))
    table = results_table(records, args.output, preset.targets, preset.interval_above_zero)
    draw_curves(records, args.output)
    if args.preset == "short":
        setting = f"{args.epochs} epochs at {args.size}x{args.size}, Adam {args.learning_rate}"
    else:
        rate = (
            f"Adam {args.learning_rate} for every model"
            if args.learning_rate is not None
            else "each model's own recipe"
        )
        setting = f"preset {args.preset}: {args.epochs} epochs at {args.size}x{args.size}, {rate}"
    images = "benign and malignant validation images"
    if preset.classes is not None:
        images += f" (classes {preset.classes}: no normal images in training or evaluation)"
    report = (
        f"# BUSI comparison\n\n`{command}`\n\n{setting}, seed 0, {args.threads} CPU threads, torch "
        f"{torch.__version__}; split `{datalist}`; lesion = {images}.\n\n{table}\n"
    )
    extra_tables = (
        curves_table(records, args.output),
        fit_table(records, args.output),
        parts_fit_table(records, args.output),
        breakdown_table(records, args.output),
    )
    for extra_table in extra_tables:
        if extra_table:
            report += "\n" + extra_table + "\n"
    if args.compare_to is not None:
        report += "\n" + comparison_table(records, args.output, args.compare_to) + "\n"
    write_text_atomically(args.output / "results.md", report)
    print(report)
    if args.test_dir is not None:
        test_table = results_table(test_records, args.output, {}, evaluation="test", time_header="evaluation time")
        test_report = (
            f"# BUSI comparison: external test set\n\n`{command}`\n\nThe models of `{args.output}` ({setting}) "
            f"evaluated on every labelled image of `{args.test_dir.resolve()}`; lesion = its images with a lesion, "
            f"all = every image.\n\n{test_table}\n"
        )
        test_breakdown = breakdown_table(test_records, args.output, evaluation="test")
        if test_breakdown:
            test_report += "\n" + test_breakdown + "\n"
        write_text_atomically(args.output / "test_results.md", test_report)
        print(test_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

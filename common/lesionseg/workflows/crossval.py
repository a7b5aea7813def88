"""The cross-validation loop (``lesionseg crossval``): k-fold cross-validation of a bundle, resumable, with
paper-style tables and figures (:class:`CrossValidation`).

Each fold is trained with the bundle's ``configs/train.yaml`` and evaluated with ``train.yaml`` +
``configs/evaluate.yaml`` on its held-out test fold, in this process through
:class:`monai.bundle.ConfigWorkflow` (as ``python -m monai.bundle run`` does; see
:func:`lesionseg.workflows.bundle.run_workflow`). In-process rather than one ``python -m monai.bundle run``
subprocess per workflow: a workflow's error arrives with its traceback and stops the run at once, the
per-epoch log is attached to the trainer as a handler (no parsing of another process's output), and the
seconds of importing torch and MONAI are paid once rather than twice per fold. Each workflow is built from the
config files afresh and seeds itself (``set_determinism``), so a fold gives the same result as the same
workflow run on its own.

Each fold writes only under ``OUTPUT/fold_<k>/`` (its datalist, ``models/`` = the bundle's ``ckpt_dir``,
``train/`` = ``output_dir`` while training, ``prepare/`` = TaiChiNet's ``prepare_dir``, ``evaluation/``), never
into the bundle's own ``models/`` or ``eval/``. A rerun skips every fold whose ``evaluation/summary.json``
exists, and evaluates without retraining a fold whose training finished (``train/finished.json``).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from lesionseg.utils.files import write_text_atomically
from lesionseg.utils.overrides import parse_overrides as parse_key_values
from lesionseg.workflows.bundle import find_config, run_workflow

logger = logging.getLogger(__name__)

#: config ids the runner sets for each fold; --override may not set them
FOLD_IDS = ("dataset_dir", "ckpt_dir", "output_dir", "prepare_dir", "eval_section", "bundle_root")
SETTINGS_FILENAME = "crossval.json"
#: settings that earlier versions did not write into crossval.json: a run of theirs resumes without comparing them
UNRECORDED_BEFORE = ("bundle_configs_sha256",)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["max_epochs=2", "image_size=[32,32]", "resume=false"]`` -> ``{"max_epochs": 2, ..., "resume": False}``.

    Values are YAML, the grammar of every ``--override`` (:func:`lesionseg.utils.overrides.parse_overrides`).

    Raises:
        ValueError: for an entry without ``=`` or with a value that is not YAML, or one setting an id the runner
            sets per fold.
    """
    overrides = parse_key_values(pairs)
    check_fold_overrides(overrides)
    return overrides


def check_fold_overrides(overrides: dict[str, Any]) -> None:
    """Refuse an override of an id the runner sets for each fold (:data:`FOLD_IDS`) with a ``ValueError``."""
    for key in overrides:
        if key in FOLD_IDS:
            raise ValueError(f"--override {key}=...: crossval sets {key!r} itself for each fold")


def _check_settings(path: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings; a rerun must use the same ones, or its folds would not be comparable. A
    folder holding other files and no ``crossval.json`` is not a cross-validation's: refused, as the run would
    write its ``results.md`` and the like over that folder's."""
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError as error:
            raise ValueError(f"{path}: not readable JSON ({error}); use a new --output") from None
        if not isinstance(previous, dict):
            raise ValueError(f"{path}: not a cross-validation's settings; use a new --output")
        unrecorded = [key for key in UNRECORDED_BEFORE if key in settings and key not in previous]
        if unrecorded:  # written by an earlier version: compared from now on
            logger.warning("%s: written without %s; not compared this time", path, ", ".join(unrecorded))
            previous.update({key: settings[key] for key in unrecorded})
            write_text_atomically(path, json.dumps(previous, indent=2) + "\n")
        changed = sorted(key for key in set(previous) | set(settings) if previous.get(key) != settings.get(key))
        if changed:
            details = "; ".join(f"{key}: was {previous.get(key)!r}, now {settings.get(key)!r}" for key in changed)
            raise ValueError(
                f"{path}: this output folder holds a cross-validation with other settings ({details}). "
                "Use a new --output, or rerun with the same arguments to resume."
            )
    else:
        if path.parent.is_dir() and any(path.parent.iterdir()):
            raise ValueError(
                f"{path.parent}: holds files and no {path.name}, so it is not a cross-validation's output folder "
                "(its results.md and the like would be written over); use a new or empty --output"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(settings, indent=2) + "\n")


def _configs_digest(bundle: Path) -> str:
    """SHA-256 of the bundle's ``configs/*.yaml`` (names and contents): a rerun after the recipe was edited (or
    updated by a pull) would train the remaining folds with another one."""
    digest = hashlib.sha256()
    for config in sorted((bundle / "configs").glob("*.yaml")):
        digest.update(config.name.encode() + b"\0" + config.read_bytes() + b"\0")
    return digest.hexdigest()


def _bundle_ids(bundle: Path) -> set[str]:
    from monai.bundle import ConfigParser

    return set(ConfigParser.load_config_files([str(find_config(bundle, "train"))]))


def _release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class CrossValidation:
    """A k-fold cross-validation of ``bundle`` on ``dataset_dir`` into ``output``: the folds are planned, the run's
    settings checked against an earlier run's and the fold datalists written when it is made; :meth:`run` trains
    and evaluates the folds not evaluated yet and writes the tables and figures.

    Args:
        bundle: the bundle folder (holding ``configs/train.yaml`` and ``configs/evaluate.yaml``).
        dataset_dir: a dataset in any supported layout, or a datalist JSON.
        folds: the number of folds k.
        output: the output folder, one ``fold_<k>/`` per fold.
        val_fraction: share of each fold's training images held out for checkpoint selection (0: the test fold).
        seed: seed of the folds and validation splits.
        groups: near-duplicate groups kept in one fold: ``"auto"``, ``"detect"``, ``"none"`` or a groups JSON.
        overrides: bundle config overrides for every fold (:func:`parse_overrides`).

    Raises:
        DataError, FileNotFoundError, ValueError: a missing config, an unusable dataset, or an output folder
            holding a cross-validation with other settings.
    """

    def __init__(
        self,
        bundle: Path,
        dataset_dir: Path,
        folds: int,
        output: Path,
        val_fraction: float = 0.2,
        seed: int = 0,
        groups: str | Path = "auto",
        overrides: dict[str, Any] | None = None,
    ) -> None:
        from lesionseg.engines.crossval import plan_folds, write_fold_datalists

        self.bundle = bundle = Path(bundle).resolve()
        self.output = output = Path(output).resolve()
        self.dataset = dataset = Path(dataset_dir).resolve()
        self.folds = folds
        self.overrides = overrides = dict(overrides or {})
        check_fold_overrides(overrides)
        find_config(bundle, "train")
        find_config(bundle, "evaluate")  # fail now, not after training the first fold
        settings = {
            "bundle": str(bundle),
            "dataset_dir": str(dataset),
            "folds": folds,
            "val_fraction": val_fraction,
            "seed": seed,
            "groups": str(groups),
            "overrides": overrides,
            "bundle_configs_sha256": _configs_digest(bundle),
        }
        self.plan = plan_folds(dataset, folds, val_fraction, seed, groups)
        _check_settings(output / SETTINGS_FILENAME, settings)
        self.datalists = write_fold_datalists(self.plan, output)

    def run(self) -> dict[str, Path]:
        """Train and evaluate every fold not evaluated yet, then write the tables and figures; what was written."""
        from lesionseg.engines.crossval import FoldPaths, write_results
        from lesionseg.engines.training_log import epoch_log_attacher

        bundle, output, plan, overrides = self.bundle, self.output, self.plan, self.overrides
        bundle_ids = _bundle_ids(bundle)
        logger.info(
            "cross-validation of %s on %s: %d folds of %s test images, results in %s",
            bundle.name,
            self.dataset,
            self.folds,
            "/".join(str(len(sections["test"])) for sections in plan),
            output,
        )

        start = time.monotonic()
        for index, (sections, datalist) in enumerate(zip(plan, self.datalists)):
            fold = FoldPaths(output, index)
            label = f"fold {index + 1}/{self.folds} (fold_{index})"
            if fold.summary.is_file() and fold.per_image.is_file():
                logger.info(
                    "%s: skipped, already evaluated (%s exists; delete it to redo the fold)", label, fold.summary
                )
                continue
            fold_start = time.monotonic()
            fold_overrides = {**overrides, "dataset_dir": str(datalist), "ckpt_dir": str(fold.models)}
            if "prepare_dir" in bundle_ids:
                fold_overrides["prepare_dir"] = str(fold.prepare)
            if fold.trained.is_file():
                logger.info("%s: training finished earlier (%s); evaluating only", label, fold.trained)
            else:
                logger.info(
                    "%s: training on %d images, selecting the checkpoint on %d, into %s",
                    label,
                    len(sections["training"]),
                    len(sections["validation"]),
                    fold.root,
                )
                # an interrupted training runs again (from epoch 1, or from a checkpoint where the bundle resumes
                # one from ckpt_dir); its epoch records replace the earlier ones (read_epoch_log keeps an epoch's last)
                workflow = run_workflow(
                    bundle,
                    ["train"],
                    "train",
                    {**fold_overrides, "output_dir": str(fold.train)},
                    before_run=epoch_log_attacher(fold.epoch_log),
                )
                epochs = int(workflow.trainer.state.epoch)
                del workflow
                _release_memory()
                write_text_atomically(  # the marker a rerun skips training by: whole or absent
                    fold.trained, json.dumps({"epochs": epochs, "seconds": round(time.monotonic() - fold_start, 1)})
                )
            logger.info("%s: evaluating on its %d test images", label, len(sections["test"]))
            run_workflow(
                bundle,
                ["train", "evaluate"],
                None,
                {**fold_overrides, "output_dir": str(fold.evaluation), "eval_section": "test"},
            )
            _release_memory()
            summary = json.loads(fold.summary.read_text())
            lesion_dice = summary["lesion"]["dice"]["mean"]
            logger.info(
                "%s: done in %.1f min; lesion Dice %s over %d images (total %.1f min)",
                label,
                (time.monotonic() - fold_start) / 60,
                "n/a" if lesion_dice is None else f"{lesion_dice:.4f}",
                summary["lesion"]["n"],
                (time.monotonic() - start) / 60,
            )

        return write_results(output, self.folds, title=f"{bundle.name}: {self.folds}-fold cross-validation")

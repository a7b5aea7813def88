"""TaiChiNet's one-shot easy/hard preparation as a whole workflow (the logic is
:class:`lesionseg.engines.easy_hard.EasyHardPreparation`; the workflow is the bundle's ``configs/prepare.yaml``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from lesionseg.data.io import PathLike
from lesionseg.workflows.bundle import run_steps

__all__ = ["prepare_for_training", "run_preparation"]


def run_preparation(
    config_file: PathLike | Sequence[PathLike],
    meta_file: PathLike | None = None,
    logging_file: PathLike | bool | None = None,
    **override: Any,
) -> Path:
    """Run the preparation workflow (``configs/prepare.yaml``) in this process; return its datalist.

    The workflow reuses the parts already made (and says so) unless ``force`` is set, so calling this before
    every training costs the time to check them. Its ``initialize`` seeds the random generators: call it
    before seeding the caller's own workflow.

    Args:
        config_file: the preparation config (or configs, merged in order).
        meta_file: the bundle's metadata; ``None``: ``metadata.json`` beside the first config.
        logging_file: logging config; ``None``: ``logging.conf`` beside the first config, ``False``: none.
        override: config ids to override, e.g. ``dataset_dir``, ``prepare_dir``, ``max_epochs``.
    """
    workflow = ConfigWorkflow(
        config_file=[os.fspath(f) for f in config_file]
        if isinstance(config_file, (list, tuple))
        else os.fspath(config_file),
        meta_file=None if meta_file is None else os.fspath(meta_file),
        logging_file=logging_file,
        workflow_type="train",
        **override,
    )
    # a preparation trains a U-Net++ but is not a bundle training: it lacks the ids MONAI requires of one
    run_steps(workflow, check_properties=False, label=f"the easy/hard preparation {config_file}")
    return workflow.parser.get_parsed_content("preparation").datalist_path


def prepare_for_training(
    config_file: PathLike, shared: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> Path:
    """Run the preparation for a training workflow (TaiChiNet's ``train.yaml``); return the parts' datalist.

    The training's settings that the preparation must share (dataset, split, folders, precision) are passed as
    ``shared``; the user's own settings of ``prepare.yaml`` (``overrides``, the training's ``prepare_overrides``)
    are applied over them. The training config makes a callable of it (``_mode_: callable``) for
    :class:`lesionseg.engines.curriculum.EasyToHardHandler`, which calls it when training starts.

    Args:
        config_file: the preparation config (``configs/prepare.yaml``).
        shared: config ids of the preparation set from the training's settings, e.g. ``dataset_dir``.
        overrides: further config ids of the preparation, e.g. ``{"max_epochs": 40, "force": True}``; they win
            over ``shared``.
    """
    return run_preparation(config_file, **{**shared, **(overrides or {})})

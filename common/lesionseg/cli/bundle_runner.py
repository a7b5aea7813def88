"""Running a bundle's workflows from Python, the way ``python -m monai.bundle run`` does."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

logger = logging.getLogger(__name__)


def find_config(bundle_dir: Path, name: str) -> Path:
    """The bundle's ``configs/<name>.yaml`` or ``.json``; a clear error when it has neither."""
    for suffix in (".yaml", ".json"):
        candidate = bundle_dir / "configs" / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{bundle_dir}: no configs/{name}.yaml or configs/{name}.json (is this a MONAI bundle?)")


def run_workflow(
    bundle_dir: str | Path,
    configs: Sequence[str],
    workflow_type: str | None,
    overrides: dict[str, Any] | None = None,
    before_run: Callable[[ConfigWorkflow], None] | None = None,
) -> ConfigWorkflow:
    """Run ``initialize``, ``run`` and ``finalize`` of a bundle workflow and return the workflow.

    Args:
        bundle_dir: the bundle folder (holding ``configs/``).
        configs: config names merged in order, e.g. ``("train", "evaluate")``.
        workflow_type: ``"train"``, ``"infer"`` or ``None``, as MONAI's ``ConfigWorkflow`` takes it; its
            required properties are checked before anything runs.
        overrides: config ids and their new values, e.g. ``{"dataset_dir": "...", "max_epochs": 2}``.
        before_run: called with the initialized workflow just before it runs, e.g. to attach a handler.
    """
    bundle_dir = Path(bundle_dir).resolve()
    config_files = [str(find_config(bundle_dir, name)) for name in configs]
    workflow = ConfigWorkflow(
        config_file=config_files,
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        logging_file=str(bundle_dir / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle_dir),
        **(overrides or {}),
    )
    workflow.initialize()
    missing = workflow.check_properties()
    if missing:
        raise ValueError(f"{bundle_dir}: the {'+'.join(configs)} workflow lacks required ids {missing}")
    if before_run is not None:
        before_run(workflow)
    logger.info("running %s of %s", "+".join(configs), bundle_dir.name)
    workflow.run()
    workflow.finalize()
    return workflow

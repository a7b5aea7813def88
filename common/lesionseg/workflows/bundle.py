"""Running a bundle's workflows from Python, the way ``python -m monai.bundle run`` does.

The one implementation of the model zoo's sequence ``ConfigWorkflow`` -> ``initialize`` -> ``check_properties``
-> ``run`` -> ``finalize``, used by the command line, TaiChiNet's easy/hard preparation, the benchmarks and the
tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

logger = logging.getLogger(__name__)

__all__ = ["find_config", "make_workflow", "run_steps", "run_workflow"]


def find_config(bundle_dir: Path, name: str) -> Path:
    """The bundle's ``configs/<name>.yaml`` or ``.json``; a clear error when it has neither."""
    for suffix in (".yaml", ".json"):
        candidate = bundle_dir / "configs" / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{bundle_dir}: no configs/{name}.yaml or configs/{name}.json (is this a MONAI bundle?)")


def make_workflow(
    bundle_dir: str | Path, configs: Sequence[str], workflow_type: str | None, **overrides: Any
) -> ConfigWorkflow:
    """A workflow of ``bundle_dir`` merging its ``configs/<name>.yaml`` (or ``.json``) in order, with the
    bundle's ``metadata.json`` and ``logging.conf``; nothing is initialized yet.

    Args:
        bundle_dir: the bundle folder (holding ``configs/``).
        configs: config names merged in order, e.g. ``("train", "evaluate")``.
        workflow_type: ``"train"``, ``"infer"`` or ``None``, as MONAI's ``ConfigWorkflow`` takes it.
        overrides: config ids and their new values, e.g. ``dataset_dir="..."``, ``max_epochs=2``.

    Raises:
        FileNotFoundError: naming the bundle, when a config is missing.
    """
    bundle_dir = Path(bundle_dir).resolve()
    config_files = [str(find_config(bundle_dir, name)) for name in configs]
    return ConfigWorkflow(
        config_file=config_files,
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        logging_file=str(bundle_dir / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle_dir),
        **overrides,
    )


def run_steps(
    workflow: ConfigWorkflow,
    before_run: Callable[[ConfigWorkflow], None] | None = None,
    check_properties: bool = True,
    label: str = "the workflow",
) -> ConfigWorkflow:
    """``initialize``, check that no required id is missing, ``run`` and ``finalize`` ``workflow``; return it.

    Args:
        workflow: a workflow not yet initialized (:func:`make_workflow`).
        before_run: called with the initialized workflow just before it runs, e.g. to attach a handler.
        check_properties: check the required properties of the workflow's type (a workflow that is neither a
            training nor an inference, such as TaiChiNet's preparation, has not all of them).
        label: what the error and the log call the workflow, e.g. ``"bundles/dcnet_bundle: the train workflow"``.

    Raises:
        ValueError: naming ``label``, when required ids are missing.
    """
    workflow.initialize()
    missing = workflow.check_properties() if check_properties else None
    if missing:
        raise ValueError(f"{label} lacks required ids {missing}")
    if before_run is not None:
        before_run(workflow)
    logger.info("running %s", label)
    workflow.run()
    workflow.finalize()
    return workflow


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
    workflow = make_workflow(bundle_dir, configs, workflow_type, **(overrides or {}))
    label = f"{Path(bundle_dir).resolve()}: the {'+'.join(configs)} workflow"
    return run_steps(workflow, before_run, label=label)

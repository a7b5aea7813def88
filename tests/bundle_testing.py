"""The model-zoo unit-test pattern for a bundle: ConfigWorkflow -> initialize -> check_properties() -> run ->
finalize. Shared by the tests of both bundles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ConfigWorkflow


def make_workflow(bundle: Path, config_names: Sequence[str], workflow_type: str | None, **overrides) -> ConfigWorkflow:
    """A workflow of ``bundle`` merging ``configs/<name>.yaml`` in order, with the bundle's metadata and logging."""
    configs = bundle / "configs"
    return ConfigWorkflow(
        config_file=[str(configs / f"{name}.yaml") for name in config_names],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **overrides,
    )


def run_zoo_pattern(workflow: ConfigWorkflow) -> None:
    """initialize, check that no required id is missing, run and finalize."""
    workflow.initialize()
    assert not workflow.check_properties(), "required bundle ids are missing"
    workflow.run()
    workflow.finalize()

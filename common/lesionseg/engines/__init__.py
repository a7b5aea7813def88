"""Training-time helpers that the bundles call and MONAI lacks."""

from lesionseg.engines.curriculum import EasyToHardHandler
from lesionseg.engines.easy_hard import (
    EasyHardPreparation,
    check_preparation,
    easy_hard_parts,
    read_prepared_datalist,
    require_preparation,
    run_preparation,
)
from lesionseg.engines.outputs import PrimaryOutputInferer, primary_output

__all__ = [
    "EasyHardPreparation",
    "EasyToHardHandler",
    "PrimaryOutputInferer",
    "check_preparation",
    "easy_hard_parts",
    "primary_output",
    "read_prepared_datalist",
    "require_preparation",
    "run_preparation",
]

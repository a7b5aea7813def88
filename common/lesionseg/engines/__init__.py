"""Training-time helpers that the bundles call and MONAI lacks."""

from lesionseg.engines.checkpoint import (
    RESUME_RULES,
    CheckpointError,
    TrainingCheckpoint,
    check_evaluation_settings,
    load_checkpoint,
    network_options,
    save_atomically,
)
from lesionseg.engines.compiled import CompilerMissingError, compile_for_inference
from lesionseg.engines.config_checks import ConfigError, check_training_config
from lesionseg.engines.cpu_memory import release_freed_memory, reuse_freed_memory
from lesionseg.engines.curriculum import EasyToHardHandler
from lesionseg.engines.distributed import handlers_for_rank, sync_batch_norm
from lesionseg.engines.easy_hard import (
    EasyHardPreparation,
    check_preparation,
    easy_hard_parts,
    require_preparation,
)
from lesionseg.engines.evaluation import PerImageMetricsWriter
from lesionseg.engines.finite import (
    FiniteCheckpointLoader,
    NonFiniteError,
    RefuseNonFinited,
    check_finite_output,
    check_finite_weights,
    check_threshold,
)
from lesionseg.engines.outputs import PrimaryOutputInferer, primary_output
from lesionseg.engines.precision import AutocastInferer, Precision, resolve_precision

__all__ = [
    "AutocastInferer",
    "Precision",
    "resolve_precision",
    "CompilerMissingError",
    "compile_for_inference",
    "ConfigError",
    "check_training_config",
    "release_freed_memory",
    "reuse_freed_memory",
    "CheckpointError",
    "RESUME_RULES",
    "TrainingCheckpoint",
    "check_evaluation_settings",
    "load_checkpoint",
    "network_options",
    "save_atomically",
    "EasyHardPreparation",
    "EasyToHardHandler",
    "handlers_for_rank",
    "sync_batch_norm",
    "FiniteCheckpointLoader",
    "NonFiniteError",
    "RefuseNonFinited",
    "check_finite_output",
    "check_finite_weights",
    "check_threshold",
    "PerImageMetricsWriter",
    "PrimaryOutputInferer",
    "check_preparation",
    "easy_hard_parts",
    "primary_output",
    "require_preparation",
]

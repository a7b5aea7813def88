"""What a process of a distributed training changes (the bundles' ``multi_gpu_train.yaml``): the handlers it
attaches and its network's batch normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from monai.handlers import StatsHandler, ValidationHandler

from lesionseg.engines.checkpoint import TrainingCheckpoint
from lesionseg.engines.curriculum import EasyToHardHandler

__all__ = ["EVERY_RANK_HANDLERS", "handlers_for_rank", "sync_batch_norm"]

#: the handlers every process runs: validation (each rank scores its part of the validation data), the
#: training state (every rank resumes from the same state; only rank 0 writes it), TaiChiNet's easy-to-hard
#: step (the loss must switch on every rank) and console statistics (logged at warning level off rank 0)
EVERY_RANK_HANDLERS = (TrainingCheckpoint, EasyToHardHandler, ValidationHandler, StatsHandler)


def handlers_for_rank(
    handlers: Sequence[Any], every_rank: Sequence[type] = EVERY_RANK_HANDLERS, rank: int | None = None
) -> list[Any]:
    """The training handlers this process attaches: all of them on rank 0, those of ``every_rank`` elsewhere.

    The handlers left out on other ranks are those that write for the whole run (progress bar, TensorBoard,
    MLflow): one copy of each, from rank 0.

    Args:
        handlers: the training handlers, in the order they are attached (kept).
        every_rank: the handler classes (subclasses included) that every rank runs.
        rank: this process's rank; ``None``: the rank in the default process group, 0 outside a distributed run.
    """
    if rank is None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        return list(handlers)
    return [handler for handler in handlers if isinstance(handler, tuple(every_rank))]


def sync_batch_norm(network: torch.nn.Module) -> torch.nn.Module:
    """``network`` with its BatchNorm layers made SyncBatchNorm (statistics over all processes) where CUDA runs.

    SyncBatchNorm runs on CUDA only: without it (gloo on the CPU) ``network`` is returned unchanged and each
    process keeps its own batch statistics.

    Args:
        network: the network, before it is moved to the process's device and wrapped for data parallelism.
    """
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(network) if torch.cuda.is_available() else network

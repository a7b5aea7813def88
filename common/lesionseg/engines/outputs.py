"""Selecting the segmentation map from a network's training-mode outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def primary_output(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Return the lesion map of a network output.

    DC-Net and TaiChiNet return one tensor in eval mode and a tuple in training mode whose first element is
    the lesion map (DC-Net adds its two saliency maps, TaiChiNet the negative path). Post-processing and
    training metrics need only the lesion map; this picks it in both modes.

    Example:
        >>> import torch
        >>> lesion, extra = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
        >>> primary_output((lesion, extra)) is lesion
        True
        >>> primary_output(lesion) is lesion
        True
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Sequence) and len(output) > 0 and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"expected a tensor or a sequence of tensors, got {type(output).__name__}")

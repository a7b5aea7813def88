"""Shape helpers of the blocks that broadcast per-channel values over the spatial axes.

Broadcasting a (B, C, 1, …, 1) tensor keeps the other operand's memory format (contiguous or channels-last),
where flattening the spatial axes would copy a channels-last tensor. Both helpers avoid tuples of dynamic
length, so the blocks stay scriptable with ``torch.jit.script``.
"""

from typing import List

import torch

__all__ = ["channels_by_positions", "per_channel", "sample_rms", "spatial_axes"]


def spatial_axes(x: torch.Tensor) -> List[int]:
    """The spatial axes ``[2, …, x.dim() - 1]`` of a (B, C, *S) tensor, e.g. for a mean over positions."""
    return list(range(2, x.dim()))


def per_channel(values: torch.Tensor, dims: int) -> torch.Tensor:
    """Values of shape (B, C) as (B, C, 1, …, 1) with ``dims`` dimensions, to broadcast over (B, C, *S).

    Example::

        >>> per_channel(torch.ones(2, 3), 4).shape
        torch.Size([2, 3, 1, 1])
    """
    for _ in range(dims - values.dim()):
        values = values.unsqueeze(-1)
    return values


def channels_by_positions(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, *S) as (B, C, N), N the number of positions: a view, not a copy, for a contiguous or a
    channels-last tensor (for the latter the C axis has stride 1), e.g. for a channel Gram matrix."""
    if x.is_contiguous():
        return x.flatten(2)
    return x.movedim(1, -1).flatten(1, -2).transpose(1, 2)


def sample_rms(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The root mean square of each sample of ``x`` (B, C, *S) over its channels and positions, as a (B, 1, …, 1)
    tensor of at least float32 precision (float64 stays float64), at least ``eps``: the scale by which DC-Net
    divides the maps it computes from features and then multiplies them with (CCF's correlation, DCP's
    kernels), so that those products grow linearly, not quadratically, with the features.

    Example::

        >>> sample_rms(torch.full((2, 3, 4, 4), -2.0)).flatten().tolist()
        [2.0, 2.0]
    """
    axes = list(range(1, x.dim()))
    # a half-precision input's mean of squares accumulates in float32; only the (B, 1, …, 1) result is cast
    accumulate = torch.promote_types(x.dtype, torch.float32)
    return x.square().mean(axes, keepdim=True, dtype=accumulate).clamp_min(eps * eps).sqrt()

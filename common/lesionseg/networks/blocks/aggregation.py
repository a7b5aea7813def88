"""The aggregation unit ``A_j`` of DC-Net's coupler (Ning et al., Sec. III-C-3, Fig. 2(a))."""

from __future__ import annotations

import torch
import torch.nn as nn

from lesionseg.networks.blocks.cbr import conv_bn_relu
from lesionseg.networks.blocks.dar import DependencyAwareReinforcement
from lesionseg.networks.blocks.saliency import self_reversal

__all__ = ["AggregationUnit"]


class AggregationUnit(nn.Module):
    """Couples foreground features with the background features of the same level.

    Each side is mapped to an embedding of ``out_channels / 2`` channels by a ``CBR1`` followed by a
    ``CBR3`` (the paper's "two convolutional units f1×1 and f3×3"); the two embeddings are then fused into
    ``out_channels`` channels:

    - ``mode="dar"``: by :class:`DependencyAwareReinforcement` (the paper puts it in all nine units).
    - ``mode="simple"``: by concatenating the foreground embedding with the self-reversed background
      embedding, ``F^f ⊕ φ(F^b)`` (the authors' published model in eight of its nine units, and the paper's
      DC-Net_woD ablation, "channel-wise concatenation" instead of DaR).

    Shapes: ``foreground``, ``background`` (B, in_channels, *S) → (B, out_channels, *S).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels of each input.
        out_channels: output channels, even.
        mode: ``"simple"`` or ``"dar"``.
        attention_scale: scale of DaR's reinforcement term (``mode="dar"`` only).

    Example::

        >>> unit = AggregationUnit(2, 8, 8, mode="simple")
        >>> unit(torch.randn(2, 8, 16, 16), torch.randn(2, 8, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, mode: str = "simple", attention_scale: float = 0.2
    ) -> None:
        super().__init__()
        if mode not in ("simple", "dar"):
            raise ValueError(f"mode must be 'simple' or 'dar', got {mode!r}.")
        if out_channels % 2:
            raise ValueError(f"out_channels must be even (two halves of out_channels / 2), got {out_channels}.")
        half = out_channels // 2
        self.foreground_embedding = nn.Sequential(
            conv_bn_relu(spatial_dims, in_channels, half, kernel_size=1),
            conv_bn_relu(spatial_dims, half, half, kernel_size=3),
        )
        self.background_embedding = nn.Sequential(
            conv_bn_relu(spatial_dims, in_channels, half, kernel_size=1),
            conv_bn_relu(spatial_dims, half, half, kernel_size=3),
        )
        self.reinforcement = (
            DependencyAwareReinforcement(spatial_dims, half, attention_scale=attention_scale) if mode == "dar" else None
        )

    def forward(self, foreground: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        foreground = self.foreground_embedding(foreground)
        background = self.background_embedding(background)
        if self.reinforcement is None:
            return torch.cat([foreground, self_reversal(background)], dim=1)
        return self.reinforcement(foreground, background)

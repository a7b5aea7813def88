"""The attention block ``B_j`` of DC-Net's decomposition subnet (Ning et al., Eq. 4, Fig. 2(b))."""

from __future__ import annotations

import torch
import torch.nn as nn

from lesionseg.networks.blocks.cbr import conv_bn_relu
from lesionseg.networks.blocks.shapes import per_channel, spatial_axes

__all__ = ["ChannelAttentionBlock"]


class ChannelAttentionBlock(nn.Module):
    """Softmax channel attention between two convolutional units, Eq. 4 of the DC-Net paper.

    ``B̃ = CBR1(x)`` maps ``in_channels`` to ``mid_channels``; global average pooling, a fully connected layer
    and a softmax over the channels give one weight per channel, ``ω = softmax(FC(GAP(B̃)))``; the output is
    ``CBR3(ω ⊙ B̃)``. The softmax makes the weights sum to one over the channels, so ``ω ⊙ B̃`` is small; the
    BatchNorm of the following ``CBR3`` restores the scale.

    Shapes: (B, in_channels, *S) → (B, out_channels, *S).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        mid_channels: channels of ``B̃``, the attention weights and the fully connected layer.
        out_channels: output channels.

    Example::

        >>> block = ChannelAttentionBlock(2, 4, 8, 6)
        >>> block(torch.randn(2, 4, 16, 16)).shape
        torch.Size([2, 6, 16, 16])
    """

    def __init__(self, spatial_dims: int, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(spatial_dims, in_channels, mid_channels, kernel_size=1)
        self.fc = nn.Linear(mid_channels, mid_channels)
        self.merge = conv_bn_relu(spatial_dims, mid_channels, out_channels, kernel_size=3)

    def channel_weights(self, features: torch.Tensor) -> torch.Tensor:
        """``ω`` of Eq. 4, (B, mid_channels), for the features ``B̃`` (B, mid_channels, *S)."""
        return torch.softmax(self.fc(features.mean(dim=spatial_axes(features))), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.reduce(x)
        weights = self.channel_weights(features)
        # broadcasting over the spatial dims keeps the features' memory format (no copy for channels-last)
        weighted = features * per_channel(weights, features.dim())
        return self.merge(weighted)

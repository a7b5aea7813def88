"""Self-reversal activation and saliency decomposition of DC-Net (Ning et al., Eq. 5, Fig. 2(c))."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

from lesionseg.networks.blocks.shapes import spatial_axes

__all__ = ["SaliencyDecomposition", "SelfReversal", "self_reversal"]


def self_reversal(x: torch.Tensor) -> torch.Tensor:
    """``φ(x) = max(x^k) − x^k`` for every channel k, the self-reversal activation of Eq. 5.

    The maximum is taken over the spatial positions of each channel of each sample, so the result is
    non-negative, zero where a channel peaks and largest where it is weakest. Unlike ``1 − x`` it does not
    assume features in [0, 1], which ReLU features are not.

    Shapes: (B, C, *S) → (B, C, *S).

    Example::

        >>> self_reversal(torch.tensor([[[0.0, 2.0, 5.0]]]))
        tensor([[[5., 3., 0.]]])
    """
    return x.amax(dim=spatial_axes(x), keepdim=True) - x


class SelfReversal(nn.Module):
    """Module form of :func:`self_reversal` (Eq. 5), shapes (B, C, *S) → (B, C, *S)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self_reversal(x)


class SaliencyDecomposition(nn.Module):
    """The saliency decomposition (SD) module of DC-Net, Eq. 5 and Fig. 2(c).

    The last attention block's features ``B^f`` give the foreground saliency logits through a 1×1
    convolution; their self-reversal ``B^b = φ(B^f)`` gives the background saliency logits through a second,
    separate 1×1 convolution. The sigmoid ``ψ`` of the paper is left to the caller, so the logits can go to
    a loss that takes logits and the probabilities to the coupling subnet.

    Shapes: (B, in_channels, *S) → two tensors (B, out_channels, *S): foreground and background logits.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels of ``B^f``.
        out_channels: channels of each saliency map.

    Example::

        >>> foreground, background = SaliencyDecomposition(2, 8, 1)(torch.randn(2, 8, 16, 16))
        >>> foreground.shape, background.shape
        (torch.Size([2, 1, 16, 16]), torch.Size([2, 1, 16, 16]))
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int = 1) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.foreground_head = conv(in_channels, out_channels, kernel_size=1)
        self.background_head = conv(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.foreground_head(x), self.background_head(self_reversal(x))

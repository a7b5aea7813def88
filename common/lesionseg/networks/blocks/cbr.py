"""The convolutional unit ``f_{a×a}`` of DC-Net (Ning et al., footnote 1 of Sec. III-B)."""

from __future__ import annotations

from monai.networks.blocks import Convolution

__all__ = ["conv_bn_relu"]


def conv_bn_relu(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1
) -> Convolution:
    """``CBR(k)``: a k×k convolution with bias, BatchNorm and ReLU, the paper's unit ``f_{k×k}``.

    Built from MONAI's :class:`~monai.networks.blocks.Convolution` with "same" padding (``dilation`` included),
    so the spatial shape is kept: (B, in_channels, *S) → (B, out_channels, *S). The ReLU works in place on
    the BatchNorm output, which the BatchNorm backward pass does not need.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd convolution kernel size.
        dilation: convolution dilation.

    Example::

        >>> import torch
        >>> conv_bn_relu(2, 3, 8)(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """
    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        dilation=dilation,
        act=("relu", {"inplace": True}),
        norm="batch",
        bias=True,
    )

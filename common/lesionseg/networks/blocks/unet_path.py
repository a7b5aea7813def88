"""The sub-network U-Net of TaiChiNet (Wang et al., IEEE JBHI 2024, Sec. III-A, Fig. 3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Conv
from monai.networks.nets.basic_unet import Down, TwoConv

__all__ = ["UNetPath", "UpConvCat"]


class UpConvCat(nn.Module):
    """One decoder level of the TaiChiNet sub-network U-Net (Fig. 3).

    ``x`` is up-sampled ×2 without parameters, a ``CBR3`` (3×3 conv with bias → BatchNorm → ReLU) maps it
    from ``in_channels`` to ``out_channels``, the encoder skip of the same resolution is concatenated in
    front of it and two ``CBR3`` reduce the ``2 * out_channels`` channels to ``out_channels``.

    Shapes: ``x`` (B, in_channels, *S), ``skip`` (B, out_channels, *2S) → (B, out_channels, *2S).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels of the deeper features ``x``.
        out_channels: channels of the skip features and of the output.
        act: activation type and arguments.
        norm: feature normalisation type and arguments.
        bias: whether the convolutions have a bias.
        dropout: dropout ratio inside every ``CBR3`` (between normalisation and activation).
        upsample_mode: interpolation of the ×2 up-sampling: ``"nearest"`` or ``"linear"`` (bilinear in 2-D).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        bias: bool = True,
        dropout: float = 0.0,
        upsample_mode: str = "nearest",
    ) -> None:
        super().__init__()
        post_conv = Convolution(
            spatial_dims, in_channels, out_channels, act=act, norm=norm, dropout=dropout, bias=bias, padding=1
        )
        self.upsample = UpSample(
            spatial_dims,
            in_channels,
            in_channels,  # the interpolation keeps the channels; post_conv changes them
            scale_factor=2,
            mode="nontrainable",
            pre_conv=None,
            post_conv=post_conv,
            interp_mode=upsample_mode,
            align_corners=None if upsample_mode == "nearest" else False,
        )
        self.convs = TwoConv(spatial_dims, 2 * out_channels, out_channels, act, norm, bias, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([skip, self.upsample(x)], dim=1))


class UNetPath(nn.Module):
    """The sub-network U-Net that TaiChiNet uses for each of its two paths (Sec. III-A, Fig. 3).

    A plain U-Net: ``len(features)`` levels, two ``CBR3`` (3×3 conv with bias → BatchNorm → ReLU) per
    level, 2×2 max-pooling between encoder levels, decoder levels of ×2 up-sampling → ``CBR3`` →
    concatenation with the encoder skip → two ``CBR3`` (:class:`UpConvCat`), and a 1×1 convolution head.
    With the paper's widths ``(32, 64, 128, 256, 512)`` and one input and output channel it has
    8 636 769 parameters, the 8.64 M of the paper's Table I (Model 1).

    The path is split at its bottleneck so that TaiChiNet can exchange features between two paths
    there (C²-attention, Eq. 3–5): ``encode`` is Eq. 1/2 (``F = E(I)``), ``decode`` is Eq. 4/5
    (``O' = D(F')``) followed by the head, and ``forward(x) == decode(*encode(x))``.

    Shapes: input (B, in_channels, *S) with every spatial size divisible by ``2 ** (len(features) - 1)``;
    ``encode`` gives the skips [(B, features[0], *S), …, (B, features[-2], *S / 2 ** (L - 2))] and the
    bottleneck (B, features[-1], *S / 2 ** (L - 1)); ``decode`` and ``forward`` give logits
    (B, out_channels, *S).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        out_channels: number of output channels (logits, no final activation).
        features: channels of each level, shallowest first; at least two levels.
        act: activation type and arguments.
        norm: feature normalisation type and arguments.
        bias: whether the convolutions have a bias.
        dropout: dropout ratio inside every ``CBR3``; MONAI Label's epistemic scoring sets it.
        upsample_mode: interpolation of the decoder's ×2 up-sampling, ``"nearest"`` or ``"linear"``.

    Example::

        >>> path = UNetPath(spatial_dims=2, features=(4, 8, 16))
        >>> skips, bottleneck = path.encode(torch.zeros(2, 1, 32, 32))
        >>> [tuple(s.shape) for s in skips], tuple(bottleneck.shape)
        ([(2, 4, 32, 32), (2, 8, 16, 16)], (2, 16, 8, 8))
        >>> tuple(path.decode(skips, bottleneck).shape)
        (2, 1, 32, 32)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        bias: bool = True,
        dropout: float = 0.0,
        upsample_mode: str = "nearest",
    ) -> None:
        super().__init__()
        features = tuple(features)
        if len(features) < 2:
            raise ValueError(f"features must name at least two levels, got {features}.")
        self.spatial_dims = spatial_dims
        self.size_divisor = 2 ** (len(features) - 1)
        self.encoder = nn.ModuleList(
            [TwoConv(spatial_dims, in_channels, features[0], act, norm, bias, dropout)]
            + [
                Down(spatial_dims, features[i - 1], features[i], act, norm, bias, dropout)
                for i in range(1, len(features))
            ]
        )
        self.decoder = nn.ModuleList(
            [
                UpConvCat(spatial_dims, features[i], features[i - 1], act, norm, bias, dropout, upsample_mode)
                for i in range(len(features) - 1, 0, -1)
            ]
        )
        self.head = Conv[Conv.CONV, spatial_dims](features[0], out_channels, kernel_size=1)

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the shape unless ``x`` is (B, C, *S) with every size of S divisible
        by ``2 ** (len(features) - 1)``."""
        if torch.jit.is_tracing():  # a trace records tensor operations only; the check would be a constant
            return
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"expected a (B, C) + {self.spatial_dims} spatial dimensions input, got shape {list(x.shape)}."
            )
        for size in x.shape[2:]:
            if size % self.size_divisor != 0:
                raise ValueError(
                    f"input of shape {list(x.shape)}: every spatial size must be divisible by "
                    f"{self.size_divisor} (the network halves the image {len(self.decoder)} times)."
                )

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Eq. 1/2: the encoder. Returns the skip features (shallowest first) and the bottleneck."""
        self.check_input_shape(x)
        features: list[torch.Tensor] = []
        for level in self.encoder:
            x = level(x)
            features.append(x)
        return features[:-1], features[-1]

    def decode(self, skips: list[torch.Tensor], bottleneck: torch.Tensor) -> torch.Tensor:
        """Eq. 4/5 and the 1×1 head: logits from the skips (shallowest first) and the bottleneck."""
        x = bottleneck
        for i, level in enumerate(self.decoder):
            x = level(x, skips[len(skips) - 1 - i])
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, bottleneck = self.encode(x)
        return self.decode(skips, bottleneck)

"""Dependency-aware reinforcement (DaR) of DC-Net (Ning et al., Eq. 16-17, Fig. 2(f))."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from lesionseg.networks.blocks.cbr import conv_bn_relu
from lesionseg.networks.blocks.saliency import self_reversal
from lesionseg.networks.blocks.shapes import per_channel, spatial_axes

__all__ = ["DependencyAwareReinforcement", "PyramidPrototype"]


class PyramidPrototype(nn.Module):
    """One pyramidal branch of DaR (Eq. 16): a feature map compressed into one prototype vector.

    Parallel ``CBR3`` units with the given dilations (C → C each), concatenation (3C for three dilations),
    global average pooling and a 1×1 convolution (3C → C, with bias). The 1×1 convolution acts on a 1×1
    map, so it is applied as a linear layer to the pooled vector, and the pooling of the concatenation is
    done as the concatenation of the poolings; neither changes the result.

    Shapes: (B, C, *S) → (B, C).

    Args:
        spatial_dims: number of spatial dimensions.
        channels: C.
        dilations: dilation of each ``CBR3``.
    """

    def __init__(self, spatial_dims: int, channels: int, dilations: Sequence[int] = (1, 3, 5)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            conv_bn_relu(spatial_dims, channels, channels, kernel_size=3, dilation=d) for d in dilations
        )
        self.project = nn.Linear(len(dilations) * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [branch(x).mean(dim=spatial_axes(x)) for branch in self.branches]
        return self.project(torch.cat(pooled, dim=1))


class DependencyAwareReinforcement(nn.Module):
    """Reinforces foreground features with background information selected by their dependency, Eq. 16-17.

    The background embedding ``F^b`` is self-reversed, ``F̃^b = φ(F^b)`` (Eq. 5), and compressed into a key
    and a value prototype ``K, V`` (B, C) by two :class:`PyramidPrototype` branches (Eq. 16). Each
    foreground position queries the key, ``a = ψ(F̃^f Kᵀ)`` (sigmoid, one gate per position), and receives
    the value scaled by it, ``F̃ = a V`` (Eq. 17). A ``CBR1`` maps ``F̃`` to 2C channels and the result is
    added to the concatenation ``F^f ⊕ F̃^b``:

        ``out = (F^f ⊕ F̃^b) + s · CBR1(ψ(F̃^f Kᵀ) V)``,

    where ``s`` = ``attention_scale`` (0.2 in the authors' published model; the paper has no scale, i.e. 1).
    The scale sits after the ``CBR1``: before it, the BatchNorm would undo it.

    The prototypes come from a plain 1×1 convolution (the paper's wording) rather than a convolutional unit
    with BatchNorm, so no BatchNorm sees 1×1 maps and any batch size, 1 included, works in training and
    in evaluation.

    Shapes: ``foreground``, ``background`` (B, C, *S) → (B, 2C, *S).

    Args:
        spatial_dims: number of spatial dimensions.
        channels: C, the channels of each embedding.
        dilations: dilations of the ``CBR3`` units in each pyramidal branch.
        attention_scale: ``s`` above.

    Example::

        >>> dar = DependencyAwareReinforcement(2, 4).eval()
        >>> dar(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        dilations: Sequence[int] = (1, 3, 5),
        attention_scale: float = 0.2,
    ) -> None:
        super().__init__()
        self.attention_scale = attention_scale
        self.key = PyramidPrototype(spatial_dims, channels, dilations)
        self.value = PyramidPrototype(spatial_dims, channels, dilations)
        self.expand = conv_bn_relu(spatial_dims, channels, 2 * channels, kernel_size=1)

    def attention(self, foreground: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """``ψ(F̃^f Kᵀ)``: one gate in (0, 1) per position, (B, 1, *S), for ``F^f`` (B, C, *S) and ``K`` (B, C)."""
        # a broadcast product summed over the channels keeps the memory format (flattening copies channels-last)
        return torch.sigmoid((foreground * per_channel(key, foreground.dim())).sum(dim=1, keepdim=True))

    def forward(self, foreground: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        reversed_background = self_reversal(background)
        key = self.key(reversed_background)
        value = self.value(reversed_background)
        complement = self.attention(foreground, key) * per_channel(value, foreground.dim())
        if foreground.dim() == 4 and foreground.is_contiguous(memory_format=torch.channels_last):
            # a (B, 1, H, W) gate times (B, C, 1, 1) prototypes broadcasts to contiguous: keep the input's layout
            complement = complement.contiguous(memory_format=torch.channels_last)
        reinforcement = self.expand(complement)
        return torch.add(torch.cat([foreground, reversed_background], dim=1), reinforcement, alpha=self.attention_scale)

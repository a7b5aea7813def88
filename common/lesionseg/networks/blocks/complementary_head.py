"""The complementary MLP head of TaiChiNet (Wang et al., IEEE JBHI 2024, Sec. III-C, Eq. 10–12)."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["ComplementaryHead", "PixelMLP"]


class PixelMLP(nn.Sequential):
    """A per-pixel MLP: 1×1 convolution widening to ``hidden_channels``, activation, 1×1 convolution
    narrowing to ``out_channels`` (the "raise then decrease the dimensionality" MLP of Sec. III-C).

    Shapes: (B, in_channels, *S) → (B, out_channels, *S).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        hidden_channels: channels of the hidden layer.
        out_channels: output channels.
        act: activation between the two layers.
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, hidden_channels: int, out_channels: int, act: str | tuple = "gelu"
    ) -> None:
        super().__init__()
        self.add_module(
            "widen", Convolution(spatial_dims, in_channels, hidden_channels, kernel_size=1, act=act, norm=None)
        )
        self.add_module(
            "narrow", Convolution(spatial_dims, hidden_channels, out_channels, kernel_size=1, conv_only=True)
        )


class ComplementaryHead(nn.Module):
    """TaiChiNet's complementary head: two per-pixel MLPs refining each path's output with the other's
    complement, positive-first order ``O'_p → O_n → O_p`` (Eq. 10–12, Fig. 2, Fig. 10(c))::

        O_n = O'_n + MLP_n(Ψ(O'_p))    (Eq. 10)
        O_p = O'_p + MLP_p(Ψ(O_n))     (Eq. 11)
        Ψ(A) = 1 − A                   (Eq. 12)

    The paper applies Ψ to maps in [0, 1] and trains the sums with BCE, which a sum can leave. Here
    (our choice) the decoders' outputs and the head's outputs are logits: Ψ is applied to the
    probability, Ψ(σ(·)), and the MLP's output is added in logit space, so σ(O_n) and σ(O_p) are always
    valid probabilities for BCE and Dice. With ``complement=False`` Ψ is the identity, for the
    consistent mutual learning of Table II where both paths predict the lesion.

    The MLPs act on the ``channels`` probability maps only (1×1 convolutions ``channels → hidden →
    channels``): 2·(2·channels·hidden + hidden + channels) parameters, 26 for one channel and the
    default width, consistent with Table I where the head adds no measurable parameters.

    Shapes: ``o_n`` and ``o_p`` logits (B, channels, *S) → ``(o_n, o_p)`` refined logits, same shapes.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: channels of each path's output (the network's ``out_channels``).
        hidden_channels: width of the MLPs' hidden layer; defaults to ``4 * channels``.
        act: activation inside the MLPs (GELU, as in the MLP blocks the paper cites).
        complement: apply Ψ(A) = 1 − A to the other path's probabilities (True, complementary mutual
            learning) or feed them unchanged (False, consistent mutual learning).

    Example::

        >>> head = ComplementaryHead(spatial_dims=2, channels=1)
        >>> sum(p.numel() for p in head.parameters())
        26
        >>> o_n, o_p = head(torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8))
        >>> tuple(o_n.shape), tuple(o_p.shape)
        ((2, 1, 8, 8), (2, 1, 8, 8))
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int = 1,
        hidden_channels: int | None = None,
        act: str | tuple = "gelu",
        complement: bool = True,
    ) -> None:
        super().__init__()
        hidden_channels = 4 * channels if hidden_channels is None else hidden_channels
        self.mlp_n = PixelMLP(spatial_dims, channels, hidden_channels, channels, act)
        self.mlp_p = PixelMLP(spatial_dims, channels, hidden_channels, channels, act)
        self.complement = complement

    def _psi(self, logits: torch.Tensor) -> torch.Tensor:
        """Eq. 12 on the probabilities: 1 − σ(logits) = σ(−logits), or σ(logits) without complement."""
        return torch.sigmoid(-logits if self.complement else logits)

    def forward(self, o_n: torch.Tensor, o_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o_n = o_n + self.mlp_n(self._psi(o_p))  # Eq. 10
        o_p = o_p + self.mlp_p(self._psi(o_n))  # Eq. 11
        return o_n, o_p

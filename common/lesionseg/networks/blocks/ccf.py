"""Cross-correlation fusion (CCF) of DC-Net (Ning et al., Eq. 13-15, Fig. 2(e))."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lesionseg.networks.blocks.cbr import conv_bn_relu
from lesionseg.networks.blocks.shapes import channels_by_positions, per_channel, sample_rms

__all__ = ["CrossCorrelationFusion"]

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


class CrossCorrelationFusion(nn.Module):
    """Fuses encoder skip features and decoder features, weighted by their channel correlation, Eq. 13-15.

    The decoder features ``X_D`` are up-sampled (linear interpolation) to the size of the encoder features
    ``X_E``; the channel correlation is ``M = X̃_Eᵀ X̂̃_D / N`` (C×C, ``N`` spatial positions, Eq. 13);
    a mapping ``ρ`` turns ``M`` into one weight per channel for each side, ``ω_E`` and ``ω_D`` (Eq. 14);
    the weighted features ``ω_E ⊙ X_E`` and ``ω_D ⊙ X̂_D`` (Eq. 15) are concatenated and merged by a
    ``CBR3`` into C channels.

    Mappings ``ρ``:

    - ``"dense"`` (the authors' published model, which the paper's 54.4 M parameters count): each weight
      vector is a learned affine map of the whole C×C matrix, ``ω = W vec(M) + b`` with ``W`` of size C×C²
      (the published model's ``Conv1d(C, C, kernel_size=C)``). Both maps are one (2C, C²) matrix applied in
      one matrix product. Each sees all of ``M``, so "rows" and "columns" (``M`` and ``Mᵀ``) differ only by
      a fixed permutation of ``W``'s columns and need no separate code.
    - ``"row"`` (the paper's text: a ``c×1`` vertical convolution): ``ω_E = M w_E + b_E`` and
      ``ω_D = Mᵀ w_D + b_D`` with ``w`` of length C and a scalar bias, 2(C + 1) parameters.

    Deviations from the published model, both normalisations of ``M``:

    - It does not divide by ``N``, so ``M`` grows with the image size (about 6.5e4 at 256×256, float16's
      limit); dividing keeps mixed-precision training finite. The division is the ``alpha`` of a single
      ``baddbmm``, applied to the accumulated product before it is rounded.
    - ``normalise=True`` (default) also divides ``M`` by the root mean square of each input, per sample
      (:func:`~lesionseg.networks.blocks.shapes.sample_rms`): ``M̂ = M / (rms(X_E) rms(X̂_D))``, so that
      ``|M̂_ij| ≤ C`` (Cauchy–Schwarz) whatever the inputs' scale. Unnormalised, ``ω`` is quadratic and the
      output cubic in the scale of the inputs; in evaluation mode, before BatchNorm's running statistics have
      adapted, four fusions in a row then overflow float32 (a fresh DC-Net gave NaN logits on a real BUSI
      image for 3 of 4 seeds). Normalised, the output is linear in the inputs' scale. In training the inputs
      come out of BatchNorm and ReLU, with an RMS that varies little between samples (0.55–0.89 over a short
      BUSI training, ``benchmarks/dcnet_normalisation.py``), so the division is close to a constant that
      ``W`` absorbs.

    No activation is applied to ``ω`` (Eq. 15 has none).

    Shapes: ``encoder`` (B, C, *S), ``decoder`` (B, C, *S') → (B, C, *S).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        channels: C, the channels of both inputs and of the output.
        mapping: ``"dense"`` or ``"row"``, see above.
        normalise: divide ``M`` by the inputs' per-sample root mean square, see above (``False``: the
            published model's scale-dependent ``M``, divided by ``N`` only).

    Example::

        >>> fuse = CrossCorrelationFusion(2, 8, mapping="row")
        >>> fuse(torch.randn(2, 8, 32, 32), torch.randn(2, 8, 16, 16)).shape
        torch.Size([2, 8, 32, 32])
    """

    def __init__(self, spatial_dims: int, channels: int, mapping: str = "dense", normalise: bool = True) -> None:
        super().__init__()
        if spatial_dims not in _INTERPOLATION:
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if mapping not in ("dense", "row"):
            raise ValueError(f"mapping must be 'dense' or 'row', got {mapping!r}.")
        self.mapping = mapping
        self.normalise = normalise
        self.interpolation = _INTERPOLATION[spatial_dims]
        if mapping == "dense":
            # rows 0..C-1 give ω_E, rows C..2C-1 give ω_D
            self.weight = nn.Parameter(torch.empty(2 * channels, channels * channels))
            self.bias = nn.Parameter(torch.empty(2 * channels))
        else:
            # one c×1 kernel and one scalar bias per side, stored as (2, C) and (2, 1)
            self.weight = nn.Parameter(torch.empty(2, channels))
            self.bias = nn.Parameter(torch.empty(2, 1))
        self.merge = conv_bn_relu(spatial_dims, 2 * channels, channels, kernel_size=3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal (fan-in) weights and zero bias, the initialisation the DC-Net paper uses throughout."""
        fan_in = self.weight.shape[1]
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / fan_in))
        nn.init.zeros_(self.bias)

    def correlation(self, encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        """``M`` of Eq. 13 divided by the number of positions (and, if ``normalise``, by the inputs' per-sample
        root mean square), (B, C, C), for inputs of equal shape."""
        enc = channels_by_positions(encoder)
        dec = channels_by_positions(decoder)
        empty = enc.new_empty((enc.shape[0], enc.shape[1], dec.shape[1]))  # a tuple: MetaTensor takes no varargs
        gram = torch.baddbmm(empty, enc, dec.transpose(1, 2), beta=0.0, alpha=1.0 / enc.shape[2])
        if not self.normalise:
            return gram
        scale = (sample_rms(encoder) * sample_rms(decoder)).view(-1, 1, 1)
        # a half-precision M is divided in float32 (type promotion): the product of two small scales can underflow
        return (gram / scale).to(gram.dtype)

    def channel_weights(self, correlation: torch.Tensor) -> torch.Tensor:
        """``ω_E ⊕ ω_D`` of Eq. 14, (B, 2C), for the correlation ``M`` (B, C, C)."""
        if self.mapping == "dense":
            return torch.addmm(self.bias, correlation.flatten(1), self.weight.t())
        # ω_E = M w_E and ω_D = Mᵀ w_D: contract M's columns with w_E and its rows with w_D
        weight_e, weight_d = self.weight[0], self.weight[1]
        omega_e = torch.matmul(correlation, weight_e) + self.bias[0]
        omega_d = torch.matmul(weight_d, correlation) + self.bias[1]
        return torch.cat([omega_e, omega_d], dim=1)

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        decoder = F.interpolate(decoder, size=encoder.shape[2:], mode=self.interpolation, align_corners=False)
        weights = self.channel_weights(self.correlation(encoder, decoder))
        weight_e, weight_d = per_channel(weights, encoder.dim()).chunk(2, dim=1)
        # weighting each side before concatenating keeps only the concatenation for the backward pass
        # (the multiplications keep their inputs, which the correlation keeps anyway); broadcasting keeps
        # the memory format of the inputs (contiguous or channels-last) without a copy
        return self.merge(torch.cat([encoder * weight_e, decoder * weight_d], dim=1))

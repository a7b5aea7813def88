"""TaiChiNet: negative–positive cross-attention network (Wang et al., IEEE JBHI 2024, Sec. III, Fig. 2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from lesionseg.networks.blocks.c2_attention import ChannelToSpatialCrossAttention
from lesionseg.networks.blocks.complementary_head import ComplementaryHead
from lesionseg.networks.blocks.unet_path import UNetPath

__all__ = ["TaiChiNet"]

_INFERENCE_OUTPUTS = ("positive", "average")
_MUTUAL_LEARNING = ("complementary", "consistent")


class TaiChiNet(nn.Module):
    """TaiChiNet (Wang et al., "TaiChiNet: Negative–Positive Cross-Attention Network for Breast Lesion
    Segmentation in Ultrasound Images", IEEE JBHI 2024), Fig. 2 and Eq. 1–12.

    Two sub-network U-Nets (:class:`~lesionseg.networks.blocks.UNetPath`) read the same image: the
    negative path learns the normal background, the positive path the lesion. Their bottleneck features
    exchange information through C²-attention
    (:class:`~lesionseg.networks.blocks.ChannelToSpatialCrossAttention`, Eq. 3, 6–9), each path decodes
    its own output (Eq. 4, 5), and the complementary head
    (:class:`~lesionseg.networks.blocks.ComplementaryHead`, Eq. 10–12) refines them,
    ``O'_p → O_n → O_p``. The default configuration has 18 324 188 parameters at one input and output
    channel (Table I: 18.33 M; one path 8.64 M, two paths 17.28 M, C²-attention 1.05 M).

    Outputs are logits (pre-sigmoid): σ(O_p) is the lesion probability, σ(O_n) the background
    probability. The paper does not say which output it evaluates (except for Model 2, below); we take
    the positive one, the lesion path refined by the head.

    - ``net.eval()``: one tensor, the lesion logits (B, out_channels, *S): the positive path's O_p, or
      with ``inference_output="average"`` the logit of the mean of the two paths' lesion probabilities.
    - ``net.train()``: the tuple ``(positive_logits, negative_logits)`` = (O_p, O_n), each
      (B, out_channels, *S), for the segmentation and complementary losses (Eq. 13–22).
    - Without the negative path (Table I, Model 1) both modes return the positive logits alone.

    Input: (B, in_channels, *S) with every spatial size divisible by ``2 ** (len(features) - 1)``
    (16 for the default five levels); otherwise ``ValueError`` naming the shape.

    The ablations of Table I and II, as constructor arguments (rows that differ only in the loss or the
    training schedule share a network; the complementary loss is Models 3, 5, 6, 7 and TaiChiNet, the
    easy-to-hard schedule TaiChiNet only):

    ========================  ===================================================================
    Table I / II row          arguments
    ========================  ===================================================================
    Model 1 (U-Net_p)         ``negative_path=False, cross_attention=False, complementary_head=False``
    Model 2, 3                ``cross_attention=False, complementary_head=False,
                              inference_output="average"``
    Model 4, 6 (+CAtt)        ``complementary_head=False, inference_output="average"``
    Model 5 (+CHead)          ``cross_attention=False``
    Model 7, TaiChiNet        defaults
    TaiChiNet w Cons-ML       ``mutual_learning="consistent"``
    ========================  ===================================================================

    The paper says Model 2 averages the outputs of the two paths; we keep that average for the rows
    without the complementary head and use O_p, which the head has already refined with the negative
    path, for the rows with it (ours). Table I's "Evolution" column names Model 7 "Model 5 + CHead" and
    TaiChiNet "Model 5 + LS"; by its parameter counts (18.33 M) and the text, Model 7 has all three
    components and TaiChiNet is Model 7 trained with the easy-to-hard strategy.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        out_channels: number of output channels of each path.
        features: channels of the levels of each U-Net path, shallowest first (Fig. 3: 32…512).
        dropout: dropout ratio inside every convolution block of both paths (MONAI Label's epistemic
            scoring sets ``network_def#dropout``).
        negative_path: build the negative (background) path; False is Table I's Model 1.
        cross_attention: C²-attention at the bottleneck (Table I "CAtt").
        complementary_head: the complementary MLP head (Table I "CHead").
        mutual_learning: ``"complementary"`` (the negative path predicts the background, Ψ(A) = 1 − A)
            or ``"consistent"`` (Table II "Cons-ML": both paths predict the lesion, Ψ is the identity).
            The targets of each path are set by the loss; this switch sets Ψ in the head and the average.
        inference_output: ``"positive"`` (O_p) or ``"average"`` (mean of the two lesion probabilities,
            returned as a logit) in eval mode.
        scaled_attention: divide the attention scores by sqrt(N) (ours; see
            :class:`~lesionseg.networks.blocks.ChannelToSpatialCrossAttention`).
        head_hidden_channels: hidden width of the head's MLPs; defaults to ``4 * out_channels``.
        upsample_mode: interpolation of the decoders' ×2 up-sampling, ``"nearest"`` or ``"linear"``.

    Example::

        >>> net = TaiChiNet(features=(4, 8, 16, 32, 64)).eval()
        >>> tuple(net(torch.zeros(1, 1, 64, 64)).shape)
        (1, 1, 64, 64)
        >>> positive, negative = net.train()(torch.zeros(2, 1, 64, 64))
        >>> tuple(positive.shape), tuple(negative.shape)
        ((2, 1, 64, 64), (2, 1, 64, 64))
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        dropout: float = 0.0,
        negative_path: bool = True,
        cross_attention: bool = True,
        complementary_head: bool = True,
        mutual_learning: str = "complementary",
        inference_output: str = "positive",
        scaled_attention: bool = True,
        head_hidden_channels: int | None = None,
        upsample_mode: str = "nearest",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if (
            not isinstance(features, Sequence)
            or len(features) < 2
            or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in features)
        ):
            raise ValueError(f"features must be at least two positive integer widths, got {features!r}.")
        if cross_attention and features[-1] % 2:
            raise ValueError(f"features[-1] must be even for the C2-attention, got {features[-1]}.")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}.")
        if upsample_mode not in ("nearest", "linear"):
            raise ValueError(f"upsample_mode must be 'nearest' or 'linear', got {upsample_mode!r}.")
        if head_hidden_channels is not None and (
            isinstance(head_hidden_channels, bool)
            or not isinstance(head_hidden_channels, int)
            or head_hidden_channels < 1
        ):
            raise ValueError(f"head_hidden_channels must be a positive integer or None, got {head_hidden_channels!r}.")
        if mutual_learning not in _MUTUAL_LEARNING:
            raise ValueError(f"mutual_learning must be one of {_MUTUAL_LEARNING}, got {mutual_learning!r}.")
        if inference_output not in _INFERENCE_OUTPUTS:
            raise ValueError(f"inference_output must be one of {_INFERENCE_OUTPUTS}, got {inference_output!r}.")
        if not negative_path and (cross_attention or complementary_head or inference_output == "average"):
            raise ValueError(
                "cross_attention, complementary_head and inference_output='average' need the negative path; "
                "set them to False / 'positive' with negative_path=False."
            )
        features = tuple(features)

        def path() -> UNetPath:
            return UNetPath(
                spatial_dims, in_channels, out_channels, features, dropout=dropout, upsample_mode=upsample_mode
            )

        self.positive = path()
        self.negative = path() if negative_path else None
        self.attention = (
            ChannelToSpatialCrossAttention(spatial_dims, features[-1], scaled=scaled_attention)
            if cross_attention
            else None
        )
        complement = mutual_learning == "complementary"
        self.head = (
            ComplementaryHead(spatial_dims, out_channels, head_hidden_channels, complement=complement)
            if complementary_head
            else None
        )
        self.average = inference_output == "average"
        self.complement = complement

    def check_spatial_size(self, spatial_size: Sequence[int]) -> None:
        """Raise ``ValueError`` unless the network takes inputs of ``spatial_size``, without running it.

        Every size must be divisible by ``2 ** (len(features) - 1)`` (16 for five levels); the message names
        the nearest sizes that work.
        """
        size = tuple(int(n) for n in spatial_size)
        divisor = self.positive.size_divisor
        spatial_dims = self.positive.spatial_dims
        if len(size) != spatial_dims or any(n < 1 or n % divisor for n in size):
            below = [max(divisor, n // divisor * divisor) for n in size]
            above = [max(divisor, -(-n // divisor) * divisor) for n in size]
            suggestion = f"{below} or {above}" if below != above else f"{above}"
            raise ValueError(
                f"TaiChiNet takes {spatial_dims} spatial sizes each divisible by {divisor} (it halves the image "
                f"{len(self.positive.decoder)} times), got {list(size)}; use e.g. {suggestion}."
            )

    def _average_lesion_logits(self, o_p: torch.Tensor, o_n: torch.Tensor) -> torch.Tensor:
        """logit((σ(O_p) + q_n) / 2) with q_n = 1 − σ(O_n) (complementary) or σ(O_n) (consistent),
        computed from log-sigmoids so that it stays finite for large logits."""
        lesion_n = -o_n if self.complement else o_n
        log_mean = torch.logaddexp(F.logsigmoid(o_p), F.logsigmoid(lesion_n))
        log_one_minus_mean = torch.logaddexp(F.logsigmoid(-o_p), F.logsigmoid(-lesion_n))
        return log_mean - log_one_minus_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        skips_p, f_p = self.positive.encode(x)  # Eq. 2; checks the input shape
        if self.negative is None:
            return self.positive.decode(skips_p, f_p)
        skips_n, f_n = self.negative.encode(x)  # Eq. 1
        if self.attention is not None:
            f_n, f_p = self.attention(f_n, f_p)  # Eq. 3, 6-9
        o_n = self.negative.decode(skips_n, f_n)  # Eq. 4
        o_p = self.positive.decode(skips_p, f_p)  # Eq. 5
        if self.head is not None:
            o_n, o_p = self.head(o_n, o_p)  # Eq. 10-12
        if self.training:
            return o_p, o_n
        if self.average:
            return self._average_lesion_logits(o_p, o_n)
        return o_p

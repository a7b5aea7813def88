"""DC-Net, the decomposition-coupling network for ultrasound lesion segmentation.

Z. Ning, Y. Mao, Q. Feng, S. Zhong, Y. Zhang, "Decomposing and Coupling Saliency Map for Lesion Segmentation
in Ultrasound Images" (Sec. III, Fig. 2).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lesionseg.networks.blocks.aggregation import AggregationUnit
from lesionseg.networks.blocks.attention import ChannelAttentionBlock
from lesionseg.networks.blocks.cbr import conv_bn_relu
from lesionseg.networks.blocks.ccf import CrossCorrelationFusion
from lesionseg.networks.blocks.dcp import DifferentiableContextPooling
from lesionseg.networks.blocks.saliency import SaliencyDecomposition

__all__ = ["AuxiliaryStream", "CouplingSubnet", "DCNet", "DecompositionSubnet", "PlainSkipFusion"]

# the authors' published model: the full DaR only in the bottleneck unit A_5
PUBLISHED_AGGREGATION = ("simple",) * 4 + ("dar",) + ("simple",) * 4
ABLATIONS = ("woB", "woF", "woC")


@contextlib.contextmanager
def _batch_norm_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """Keeps the running statistics of ``module``'s BatchNorm layers unchanged (a checkpoint's recomputation).

    Momentum 0 leaves the running mean and variance as they are while the layer still normalises with the
    batch statistics and saves the same tensors for the backward pass as in the original forward pass (the
    checkpoint matches them by position); the batch counter is restored afterwards.
    """
    norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    saved = [(norm, norm.momentum, norm.num_batches_tracked) for norm in norms if norm.training]
    counts = [None if count is None else count.clone() for _, _, count in saved]
    for norm, _, _ in saved:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for (norm, momentum, count), original in zip(saved, counts):
            norm.momentum = momentum
            if count is not None:
                count.copy_(original)


def _checkpointed(module: nn.Module, *inputs: torch.Tensor) -> Any:
    """``module(*inputs)`` with activation checkpointing: its activations are recomputed in the backward pass.

    The recomputation repeats the forward pass exactly (same dropout masks, batch statistics) but does not
    update the running statistics of the module's BatchNorm layers a second time.
    """
    return checkpoint(
        module,
        *inputs,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _batch_norm_statistics_frozen(module)),
    )


class DecompositionSubnet(nn.Module):
    """The decomposition subnet ``D`` (Sec. III-B, Fig. 2(a-c)): an image to foreground and background saliency.

    ``CBR3`` (in → f0), then five :class:`ChannelAttentionBlock` s (in/mid/out): B1 f0/f0/f1 at full
    resolution, 4×4 max pooling, B2 f1/f1/f2, 4×4 max pooling, B3 f2/f3/f3, ×4 up-sampling and concatenation
    with B2's output, B4 (f3+f2)/f2/f1, ×4 up-sampling and concatenation with B1's output, B5 2·f1/f1/f0, and
    :class:`SaliencyDecomposition` on B5. With ``features=(32, 64, 128, 256, …)`` these are the widths of the
    authors' model (B3 128/256/256, B4 384/128/64, B5 128/64/32; the paper's text lists 128/256 and 256/64
    for B3 and B4, which would not match its 54.4 M parameters). Dropout (``dropout`` > 0) is applied to the
    input and the output of B3, where the authors' model has it.

    Shapes: (B, in_channels, H, W), H and W divisible by 16 → two (B, out_channels, H, W) saliency logits.
    """

    def __init__(self, in_channels: int, out_channels: int, features: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        f0, f1, f2, f3 = features[:4]
        self.stem = conv_bn_relu(2, in_channels, f0)
        self.block1 = ChannelAttentionBlock(2, f0, f0, f1)
        self.block2 = ChannelAttentionBlock(2, f1, f1, f2)
        self.block3 = ChannelAttentionBlock(2, f2, f3, f3)
        self.block4 = ChannelAttentionBlock(2, f3 + f2, f2, f1)
        self.block5 = ChannelAttentionBlock(2, 2 * f1, f1, f0)
        self.pool = nn.MaxPool2d(4)
        self.upsample = nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False)
        self.dropout = nn.Dropout(dropout)
        self.decompose = SaliencyDecomposition(2, f0, out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b1 = self.block1(self.stem(x))
        b2 = self.block2(self.pool(b1))
        b3 = self.dropout(self.block3(self.dropout(self.pool(b2))))
        b4 = self.block4(torch.cat([self.upsample(b3), b2], dim=1))
        b5 = self.block5(torch.cat([self.upsample(b4), b1], dim=1))
        return self.decompose(b5)


class PlainSkipFusion(nn.Module):
    """The paper's CCF ablations (Sec. IV-E, "Concat"/"Add"): plain fusion of skip and decoder features.

    The decoder features are up-sampled (bilinear) to the skip's size, concatenated with it (``"concat"``,
    then ``CBR3`` 2C → C) or added to it (``"add"``, then ``CBR3`` C → C).

    Shapes: ``encoder`` (B, C, H, W), ``decoder`` (B, C, H', W') → (B, C, H, W).
    """

    def __init__(self, channels: int, mode: str) -> None:
        super().__init__()
        if mode not in ("concat", "add"):
            raise ValueError(f"mode must be 'concat' or 'add', got {mode!r}.")
        self.mode = mode
        self.merge = conv_bn_relu(2, 2 * channels if mode == "concat" else channels, channels)

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        decoder = F.interpolate(decoder, size=encoder.shape[2:], mode="bilinear", align_corners=False)
        fused = torch.cat([encoder, decoder], dim=1) if self.mode == "concat" else encoder + decoder
        return self.merge(fused)


class AuxiliaryStream(nn.Module):
    """The coupler's auxiliary (background) stream (Sec. III-C-3): a plain U-Net body without a head.

    Five encoder levels of one ``CBR3`` each with 2×2 max pooling after the first four; four decoder levels
    of bilinear ×2 up-sampling, concatenation with the pre-pooling features of the same resolution and one
    ``CBR3`` (2C + C → C). Its outputs are the features the aggregation units ``A_1 … A_9`` receive: the four
    pooled encoder features, the bottleneck and the four decoder features.

    Shapes: (B, in_channels, H, W), H and W divisible by 16 → nine tensors (B, C_j, H_j, W_j).
    """

    def __init__(self, in_channels: int, features: Sequence[int]) -> None:
        super().__init__()
        widths = list(features)
        self.encoder = nn.ModuleList(conv_bn_relu(2, i, o) for i, o in zip([in_channels] + widths[:-1], widths))
        self.decoder = nn.ModuleList(conv_bn_relu(2, 3 * c, c) for c in widths[-2::-1])
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips: list[torch.Tensor] = []
        features: list[torch.Tensor] = []
        for level, conv in enumerate(self.encoder):
            x = conv(x)
            if level < len(self.encoder) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
            features.append(x)
        for level, conv in enumerate(self.decoder):
            x = conv(torch.cat([self.upsample(x), skips[-1 - level]], dim=1))
            features.append(x)
        return features


class CouplingSubnet(nn.Module):
    """The coupling subnet ``C`` (Sec. III-C, Fig. 2(a)): encoder, decoder and, optionally, the coupler.

    Foreground encoder level j = 1…4: ``CBR3`` (one per level) → pooling (DCP by default) → aggregation unit
    ``A_j`` with the background features of the same level; level 5 (bottleneck): ``CBR3`` → ``A_5``.
    Decoder level j = 1…4: ``CBR3`` halving the channels at the lower resolution → skip fusion (CCF by
    default, which up-samples) with the pre-pooling encoder features of the same resolution → ``A_{5+j}``;
    then a 1×1 convolution to the lesion logits. The paper's order (Sec. III-C-2: ``CBR3`` on ``A_{4+j}``,
    then CCF up-samples ``X_D``) is kept; the authors' model up-samples before that ``CBR3``, which has the
    same parameters and four times its cost.

    The coupler is the :class:`AuxiliaryStream` on the background input and the nine
    :class:`~lesionseg.networks.blocks.aggregation.AggregationUnit` s. Without it (``aggregation=None``) the
    encoder and decoder levels follow each other directly and there is no background input.

    Shapes: ``foreground_input`` (and ``background_input``) (B, in_channels, H, W), H and W divisible by 16
    → (B, out_channels, H, W) lesion logits.

    Args:
        in_channels: channels of each input (image and saliency map).
        out_channels: channels of the lesion logits.
        features: widths of the five levels.
        aggregation: the mode of each of the nine aggregation units, or ``None`` for no coupler.
        pooling, dcp_radius, dcp_neighbourhood, skip_fusion, ccf_mapping, attention_scale,
            normalise_products: as in :class:`DCNet`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: Sequence[int],
        pooling: str = "dcp",
        dcp_radius: int = 1,
        dcp_neighbourhood: str = "grid",
        skip_fusion: str = "ccf",
        ccf_mapping: str = "dense",
        aggregation: Sequence[str] | None = PUBLISHED_AGGREGATION,
        attention_scale: float = 0.2,
        normalise_products: bool = True,
    ) -> None:
        super().__init__()
        widths = list(features)
        decoder_widths = widths[-2::-1]  # f3, f2, f1, f0
        self.encoder = nn.ModuleList(conv_bn_relu(2, i, o) for i, o in zip([in_channels] + widths[:-1], widths))
        self.pools = nn.ModuleList(
            self._pool(pooling, c, dcp_radius, dcp_neighbourhood, normalise_products) for c in widths[:-1]
        )
        self.decoder = nn.ModuleList(conv_bn_relu(2, 2 * c, c) for c in decoder_widths)
        self.fusions = nn.ModuleList(
            self._fusion(skip_fusion, c, ccf_mapping, normalise_products) for c in decoder_widths
        )
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)
        self.auxiliary = AuxiliaryStream(in_channels, widths) if aggregation is not None else None
        self.aggregations = nn.ModuleList(
            AggregationUnit(2, c, c, mode=mode, attention_scale=attention_scale)
            for c, mode in zip(widths + decoder_widths, aggregation or ())
        )

    @staticmethod
    def _pool(pooling: str, channels: int, radius: int, neighbourhood: str, normalise: bool) -> nn.Module:
        if pooling == "dcp":
            return DifferentiableContextPooling(
                2, channels, window_size=2, radius=radius, neighbourhood=neighbourhood, normalise=normalise
            )
        return nn.MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2)

    @staticmethod
    def _fusion(skip_fusion: str, channels: int, mapping: str, normalise: bool) -> nn.Module:
        if skip_fusion == "ccf":
            return CrossCorrelationFusion(2, channels, mapping=mapping, normalise=normalise)
        return PlainSkipFusion(channels, skip_fusion)

    def forward(self, foreground_input: torch.Tensor, background_input: torch.Tensor | None = None) -> torch.Tensor:
        background: list[torch.Tensor] = []
        if self.auxiliary is not None:
            if background_input is None:
                raise ValueError("the coupling subnet with a coupler needs a background input.")
            background = self.auxiliary(background_input)
        skips: list[torch.Tensor] = []
        x = foreground_input
        # loops over the module lists rather than indexing them with a loop variable, which TorchScript cannot
        for level, conv in enumerate(self.encoder):
            x = conv(x)
            for index, pool in enumerate(self.pools):
                if index == level:
                    skips.append(x)
                    x = pool(x)
            x = self._aggregate(level, x, background)
        for level, conv in enumerate(self.decoder):
            for index, fusion in enumerate(self.fusions):
                if index == level:
                    x = fusion(skips[-1 - level], conv(x))
            x = self._aggregate(len(self.encoder) + level, x, background)
        return self.head(x)

    def _aggregate(self, unit_index: int, x: torch.Tensor, background: list[torch.Tensor]) -> torch.Tensor:
        """``A_{unit_index + 1}`` on ``x`` and the background features of its level; ``x`` without a coupler."""
        for index, unit in enumerate(self.aggregations):
            if index == unit_index:
                x = unit(x, background[index])
        return x


class DCNet(nn.Module):
    """DC-Net (Ning et al., Sec. III): a decomposition subnet for saliency and a coupling subnet for the lesion.

    The decomposition subnet (:class:`DecompositionSubnet`) splits the image into foreground and background
    saliency maps ``S_f, S_b``; the coupling subnet (:class:`CouplingSubnet`) segments the lesion from
    ``I ⊕ S_f`` in its encoder-decoder, helped by an auxiliary stream on ``I ⊕ S_b`` through nine aggregation
    units. The network computes the sigmoid of the saliency logits where the coupling subnet consumes them.

    The defaults reproduce the authors' published model, 54.41 M parameters with ``in_channels=1`` (the
    paper's Table V: 54.4 M). Where it departs from that model (each documented at its block), it follows the
    paper or keeps the output finite: the CCF correlation is divided by the number of positions; CCF's
    correlation and DCP's kernels are divided by their inputs' per-sample RMS (``normalise_products``); the
    decoder ``CBR3`` runs before CCF's up-sampling (the paper's order; same parameters, a quarter of the
    cost); the self-reversal is the paper's ``max − x`` rather than ``1 − x``; DaR's prototypes come from a
    plain 1×1 convolution (the paper's wording) rather than one with BatchNorm; dropout defaults to 0.
    All convolution and linear weights are He-normal (fan-in) with zero bias, as in the paper (Sec. IV-A).
    The three 1×1 output heads see non-negative features (ReLU outputs and the self-reversal ``max − x``), so
    He-normal heads start every pixel's logit at one seed-chosen offset (mean lesion logits of +11, −0.1, −13
    and −3.4 for seeds 0–3 on BUSI images); ``head_init_std`` starts them small instead.
    Computation: 23.3 GMAC per 256×256 image (MONAI's default ``BasicUNet``: 4.9).

    Outputs (all pre-sigmoid logits): in evaluation mode (``net.eval()``) one tensor, the lesion logits
    (B, out_channels, H, W). In training mode a tuple ``(lesion, foreground_saliency, background_saliency)``
    of (B, out_channels, H, W) logits, for the loss of Eq. 18 (``S_b`` is supervised by ``1 − Y``); with
    ``ablation="woC"`` there are no saliency maps and the tuple is ``(lesion,)``.

    Args:
        in_channels: image channels.
        out_channels: channels of the lesion logits and of each saliency map.
        features: coupling-subnet widths per level (5 values, even). The decomposition subnet's widths are
            derived from the first four (see :class:`DecompositionSubnet`).
        dropout: dropout probability around the decomposition subnet's block B3 (the authors' model: 0.3;
            the paper does not mention dropout, so the default is 0.0). MONAI Label's epistemic scoring sets it.
        dcp_radius: τ of DCP, in windows.
        dcp_neighbourhood: ``"grid"`` (2-D neighbouring windows, the authors' model) or ``"band"`` (Eq. 10 on
            the flattened window index).
        pooling: ``"dcp"``, or the Sec. IV-D ablations ``"max"`` and ``"avg"`` (2×2).
        ccf_mapping: ``"dense"`` (published model) or ``"row"`` (the paper's ``c×1`` convolution), see
            :class:`~lesionseg.networks.blocks.ccf.CrossCorrelationFusion`.
        skip_fusion: ``"ccf"``, or the Sec. IV-E ablations ``"concat"`` and ``"add"``.
        aggregation: fusion of each of the nine aggregation units ``A_1…A_9``, each ``"simple"`` or ``"dar"``
            (a sequence of nine, or one string for all). Default: ``"dar"`` only in the bottleneck unit
            ``A_5``, as the published model; ``"dar"`` everywhere is the paper's text, ``"simple"`` everywhere
            is its DC-Net_woD ablation.
        attention_scale: scale of DaR's reinforcement term (published model 0.2; the paper's text: 1).
        ablation: ``None`` for DC-Net, or a Sec. IV-C variant: ``"woB"`` (no coupler; the coupling subnet sees
            ``I ⊕ S_f`` only), ``"woF"`` (no coupler; ``I ⊕ S_b`` only), ``"woC"`` (no decomposition subnet
            and no coupler; the image only).
        use_checkpoint: in training, do not keep the decomposition subnet's activations but recompute them in
            the backward pass (activation checkpointing). The subnet runs first, so its recomputation comes
            last, when the coupling subnet's activations are already freed: at 256×256 and batch 4 the peak
            training memory drops from 3.1 GB to 2.3 GB for about 6 % more computation. Results are unchanged
            (same dropout masks; BatchNorm running statistics are updated once).
        head_init_std: ``None`` (default) keeps the heads He-normal; a number re-initialises the three output
            heads with normal weights of this standard deviation and zero bias, so that every map starts near
            logit 0 (p ≈ 0.5) whatever the seed. Measured on BUSI (128², α = 0.5, seed 0): with 0.01 the lesion
            map collapsed to empty and stayed so for the first two epochs, while the He-normal heads (which
            start this seed at all-lesion) reached a validation Dice of 0.62 by epoch 2 — see the model card.
        normalise_products: divide CCF's correlation and DCP's kernel maps, both computed from the features
            they then multiply, by those features' per-sample root mean square (default; no parameters). Without
            it each CCF is cubic and each DCP quadratic in the scale of its input, and in evaluation mode, while
            BatchNorm's running statistics have not adapted (a fresh or briefly trained network), the logits
            overflow to NaN: 3 of 4 fresh seeds on a real BUSI image at 256². ``False`` is the published model.

    Raises:
        ValueError: for an unknown option, odd widths, or, in ``forward``, an input that is not
            (B, in_channels, H, W) with H and W divisible by 16 (and large enough for DCP's reflected border).

    Example::

        >>> net = DCNet(features=(4, 8, 16, 32, 64)).eval()
        >>> net(torch.rand(1, 1, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
        >>> [t.shape[1] for t in net.train()(torch.rand(2, 1, 32, 32))]
        [1, 1, 1]
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        dropout: float = 0.0,
        dcp_radius: int = 1,
        dcp_neighbourhood: str = "grid",
        pooling: str = "dcp",
        ccf_mapping: str = "dense",
        skip_fusion: str = "ccf",
        aggregation: str | Sequence[str] = PUBLISHED_AGGREGATION,
        attention_scale: float = 0.2,
        ablation: str | None = None,
        use_checkpoint: bool = True,
        head_init_std: float | None = None,
        normalise_products: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(features, Sequence) or not all(
            isinstance(f, int) and not isinstance(f, bool) for f in features
        ):
            raise ValueError(f"features must be 5 even integer widths of at least 2, got {features!r}.")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}.")
        if isinstance(dcp_radius, bool) or not isinstance(dcp_radius, int) or dcp_radius < 0:
            raise ValueError(f"dcp_radius must be a non-negative integer, got {dcp_radius!r}.")
        if dcp_neighbourhood not in ("grid", "band"):
            raise ValueError(f"dcp_neighbourhood must be 'grid' or 'band', got {dcp_neighbourhood!r}.")
        if ccf_mapping not in ("dense", "row"):
            raise ValueError(f"ccf_mapping must be 'dense' or 'row', got {ccf_mapping!r}.")
        if not (isinstance(attention_scale, (int, float)) and math.isfinite(attention_scale)):
            raise ValueError(f"attention_scale must be a finite number, got {attention_scale!r}.")
        if head_init_std is not None and (
            isinstance(head_init_std, bool)
            or not isinstance(head_init_std, (int, float))
            or not (math.isfinite(head_init_std) and head_init_std >= 0)
        ):
            raise ValueError(f"head_init_std must be None or a non-negative number, got {head_init_std!r}.")
        features = tuple(int(f) for f in features)
        if len(features) != 5 or any(f < 2 or f % 2 for f in features):
            raise ValueError(f"features must be 5 even widths of at least 2, got {features}.")
        if pooling not in ("dcp", "max", "avg"):
            raise ValueError(f"pooling must be 'dcp', 'max' or 'avg', got {pooling!r}.")
        if skip_fusion not in ("ccf", "concat", "add"):
            raise ValueError(f"skip_fusion must be 'ccf', 'concat' or 'add', got {skip_fusion!r}.")
        if ablation is not None and ablation not in ABLATIONS:
            hint = " (DC-Net_woD is aggregation='simple')" if ablation == "woD" else ""
            raise ValueError(f"ablation must be None or one of {ABLATIONS}{hint}, got {ablation!r}.")
        modes = (aggregation,) * 9 if isinstance(aggregation, str) else tuple(aggregation)
        if len(modes) != 9 or any(m not in ("simple", "dar") for m in modes):
            raise ValueError(f"aggregation must be 'simple', 'dar' or nine of them (A_1…A_9), got {aggregation!r}.")
        self.in_channels = in_channels
        self.ablation = ablation
        self.pooling = pooling
        self.dcp_radius = dcp_radius
        self.dcp_neighbourhood = dcp_neighbourhood
        self.use_checkpoint = use_checkpoint
        self.decomposition = (
            DecompositionSubnet(in_channels, out_channels, features, dropout) if ablation != "woC" else None
        )
        self.coupling = CouplingSubnet(
            in_channels + (out_channels if ablation != "woC" else 0),
            out_channels,
            features,
            pooling=pooling,
            dcp_radius=dcp_radius,
            dcp_neighbourhood=dcp_neighbourhood,
            skip_fusion=skip_fusion,
            ccf_mapping=ccf_mapping,
            aggregation=modes if ablation is None else None,
            attention_scale=attention_scale,
            normalise_products=normalise_products,
        )
        self._init_he_normal()
        if head_init_std is not None:
            for head in self.heads():
                nn.init.normal_(head.weight, std=float(head_init_std))
                nn.init.zeros_(head.bias)

    def _init_he_normal(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, CrossCorrelationFusion):
                module.reset_parameters()

    def heads(self) -> list[nn.Conv2d]:
        """The 1×1 convolutions that produce the output logits: the lesion head, then (unless ``woC``) the
        foreground and background saliency heads."""
        heads = [self.coupling.head]
        if self.decomposition is not None:
            heads += [self.decomposition.decompose.foreground_head, self.decomposition.decompose.background_head]
        return heads

    def min_spatial_size(self) -> int:
        """The smallest H and W the network takes: 16, or more for DCP's reflected border."""
        if self.pooling == "dcp" and self.dcp_radius > 0 and self.dcp_neighbourhood == "grid":
            return 16 * (self.dcp_radius + 1)
        return 16

    def check_spatial_size(self, spatial_size: Sequence[int]) -> None:
        """Raise ``ValueError`` unless the network takes inputs of ``spatial_size`` (H, W), without running it.

        The message names the size, the rule (H and W divisible by 16, and at least :meth:`min_spatial_size`)
        and the nearest sizes that work.
        """
        size = tuple(int(n) for n in spatial_size)
        smallest = self.min_spatial_size()
        if len(size) != 2 or any(n % 16 or n < smallest for n in size):
            below = [max(smallest, n // 16 * 16) for n in size]
            above = [max(smallest, -(-n // 16) * 16) for n in size]
            suggestion = f"{below} or {above}" if below != above else f"{above}"
            raise ValueError(
                f"DCNet takes (H, W) divisible by 16 (four 2x2 poolings) and at least {smallest}, got "
                f"{list(size)}; use e.g. {suggestion}."
            )

    def _check_input(self, x: torch.Tensor) -> None:
        # str.format rather than f-strings: TorchScript compiles this check (torch.jit.script)
        shape = list(x.shape)
        shape_text = "(" + ", ".join([str(size) for size in shape]) + ")"
        if x.dim() != 4 or shape[1] != self.in_channels or shape[2] % 16 or shape[3] % 16:
            raise ValueError(
                "DCNet expects an input (B, {}, H, W) with H and W divisible by 16, got {}.".format(
                    self.in_channels, shape_text
                )
            )
        if self.pooling == "dcp" and self.dcp_radius > 0:
            rows, columns = shape[2] // 16, shape[3] // 16  # windows of the deepest DCP
            windows = rows * columns if self.dcp_neighbourhood == "band" else min(rows, columns)
            if windows <= self.dcp_radius:
                raise ValueError(
                    "DCNet with DCP radius {} ('{}') needs more than {} windows at 1/16 resolution for its "
                    "reflected border, i.e. H and W of at least {} for 'grid'; got {}.".format(
                        self.dcp_radius, self.dcp_neighbourhood, self.dcp_radius, 16 * (self.dcp_radius + 1), shape_text
                    )
                )

    @torch.jit.unused
    def _decompose_checkpointed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decomposition subnet with activation checkpointing (eager training only, not TorchScript)."""
        return _checkpointed(self.decomposition, x)

    def forward(
        self, x: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check_input(x)
        if self.decomposition is None:
            lesion = self.coupling(x)
            if self.training:
                return (lesion,)
            return lesion
        if self.use_checkpoint and self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
            foreground, background = self._decompose_checkpointed(x)
        else:
            foreground, background = self.decomposition(x)
        foreground_input = torch.cat([x, torch.sigmoid(foreground)], dim=1)
        background_input = torch.cat([x, torch.sigmoid(background)], dim=1)
        if self.ablation is None:
            lesion = self.coupling(foreground_input, background_input)
        elif self.ablation == "woB":
            lesion = self.coupling(foreground_input)
        else:
            lesion = self.coupling(background_input)
        if self.training:
            return lesion, foreground, background
        return lesion

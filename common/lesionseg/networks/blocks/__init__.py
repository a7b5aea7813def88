"""Building blocks of DC-Net and TaiChiNet (torch and MONAI only)."""

from lesionseg.networks.blocks.aggregation import AggregationUnit
from lesionseg.networks.blocks.attention import ChannelAttentionBlock
from lesionseg.networks.blocks.c2_attention import ChannelToSpatialCrossAttention
from lesionseg.networks.blocks.cbr import conv_bn_relu
from lesionseg.networks.blocks.ccf import CrossCorrelationFusion
from lesionseg.networks.blocks.complementary_head import ComplementaryHead, PixelMLP
from lesionseg.networks.blocks.dar import DependencyAwareReinforcement, PyramidPrototype
from lesionseg.networks.blocks.dcp import DifferentiableContextPooling
from lesionseg.networks.blocks.saliency import SaliencyDecomposition, SelfReversal, self_reversal
from lesionseg.networks.blocks.unet_path import UNetPath, UpConvCat

__all__ = [
    "AggregationUnit",
    "ChannelAttentionBlock",
    "ChannelToSpatialCrossAttention",
    "ComplementaryHead",
    "CrossCorrelationFusion",
    "DependencyAwareReinforcement",
    "DifferentiableContextPooling",
    "PixelMLP",
    "PyramidPrototype",
    "SaliencyDecomposition",
    "SelfReversal",
    "UNetPath",
    "UpConvCat",
    "conv_bn_relu",
    "self_reversal",
]

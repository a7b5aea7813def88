"""The DC-Net and TaiChiNet networks."""

from lesionseg.networks.nets.dcnet import DCNet
from lesionseg.networks.nets.taichinet import TaiChiNet

__all__ = ["DCNet", "TaiChiNet"]

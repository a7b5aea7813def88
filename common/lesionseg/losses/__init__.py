"""Loss functions of DC-Net and TaiChiNet, built on MONAI losses."""

from lesionseg.losses.complementary import ComplementaryLoss
from lesionseg.losses.dcnet_loss import DCNetLoss
from lesionseg.losses.harmonic import HarmonicLoss
from lesionseg.losses.taichinet_loss import TaiChiNetLoss

__all__ = ["ComplementaryLoss", "DCNetLoss", "HarmonicLoss", "TaiChiNetLoss"]

"""Loss functions of DC-Net and TaiChiNet, built on MONAI losses."""

"""Building blocks of DC-Net and TaiChiNet (torch and MONAI only)."""

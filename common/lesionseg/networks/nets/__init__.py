"""The DC-Net and TaiChiNet networks."""

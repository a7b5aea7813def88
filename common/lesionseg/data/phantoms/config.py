"""What the phantom generator draws from: the image classes and :class:`PhantomConfig`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["KINDS", "PhantomConfig", "as_range"]

#: the image classes of BUSI, in its folder names
KINDS = ("benign", "malignant", "normal")


@dataclass(frozen=True)
class PhantomConfig:
    """What the phantom generator draws from.

    Lengths of anatomy scale with the image height (the imaging depth); speckle is set in pixels.

    Args:
        height: image height in pixels, fixed or an inclusive ``(low, high)`` range drawn per image.
        width: image width in pixels, fixed or an inclusive ``(low, high)`` range drawn per image.
        normal_fraction: fraction of images without a lesion (class ``normal``, empty mask).
        malignant_fraction: fraction of the lesion images that are malignant; the rest are benign.
        two_lesion_fraction: fraction of the lesion images that hold two lesions.
        cyst_fraction: fraction of benign lesions that are anechoic cysts rather than solid masses.
        benign_radius: range of a benign lesion's radius, as a fraction of the image height (drawn
            log-uniformly: small lesions are the common ones).
        malignant_radius: range of a malignant lesion's radius, as a fraction of the image height.
        speckle: strength of the speckle; 1 is speckle as log compression to ``dynamic_range_db`` shows
            it, 0 none.
        speckle_sigma: ``(axial, lateral)`` standard deviation in pixels of the point-spread function that
            correlates the speckle; lateral resolution is the poorer one, so grains are wider than tall.
        dynamic_range_db: log-compression dynamic range mapped to the 0-255 display range.

    Example:
        >>> config = PhantomConfig(height=64, width=(80, 96), normal_fraction=0.5)
        >>> config.height_range, config.width_range
        ((64, 64), (80, 96))
    """

    height: int | tuple[int, int] = (160, 320)
    width: int | tuple[int, int] = (200, 400)
    normal_fraction: float = 0.17
    malignant_fraction: float = 0.33
    two_lesion_fraction: float = 0.08
    cyst_fraction: float = 0.4
    benign_radius: tuple[float, float] = (0.05, 0.25)
    malignant_radius: tuple[float, float] = (0.1, 0.33)
    speckle: float = 1.0
    speckle_sigma: tuple[float, float] = (0.7, 1.4)
    dynamic_range_db: float = 50.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # pairs read back from JSON come as lists
            if isinstance(getattr(self, field.name), list):
                object.__setattr__(self, field.name, tuple(getattr(self, field.name)))
        for name in ("height", "width"):
            low, high = as_range(getattr(self, name))
            if not 16 <= low <= high:
                raise ValueError(f"PhantomConfig.{name}: need 16 <= low <= high pixels, got {getattr(self, name)}")
        for name in ("normal_fraction", "malignant_fraction", "two_lesion_fraction", "cyst_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PhantomConfig.{name}: need a fraction in [0, 1], got {value}")
        for name in ("benign_radius", "malignant_radius"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 0.4:
                raise ValueError(f"PhantomConfig.{name}: need 0 < low <= high <= 0.4, got {getattr(self, name)}")
        if self.speckle < 0:
            raise ValueError(f"PhantomConfig.speckle: need a value >= 0, got {self.speckle}")
        if min(self.speckle_sigma) <= 0:
            raise ValueError(f"PhantomConfig.speckle_sigma: need positive sigmas, got {self.speckle_sigma}")
        if self.dynamic_range_db <= 0:
            raise ValueError(f"PhantomConfig.dynamic_range_db: need a value > 0, got {self.dynamic_range_db}")

    @property
    def height_range(self) -> tuple[int, int]:
        return as_range(self.height)

    @property
    def width_range(self) -> tuple[int, int]:
        return as_range(self.width)


def as_range(value: int | Sequence[int]) -> tuple[int, int]:
    """``(low, high)`` of a size given as one number (``low == high``) or as an inclusive range."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    low, high = value
    return int(low), int(high)


"""One phantom: tissue and lesions drawn, then imaged (point-spread function, gain, speckle, log compression)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lesionseg.data.phantoms.anatomy import Anatomy
from lesionseg.data.phantoms.config import KINDS, PhantomConfig
from lesionseg.data.phantoms.drawing import noise
from lesionseg.data.phantoms.lesion import Lesion

__all__ = ["Phantom", "make_phantom", "render"]


@dataclass(frozen=True)
class Phantom:
    """One synthetic B-mode image and its lesions.

    Args:
        image: ``(H, W)`` uint8 grayscale image.
        lesion_masks: one ``(H, W)`` bool mask per lesion (none for ``normal``); lesions do not overlap.
        kind: ``"benign"``, ``"malignant"`` or ``"normal"``.
    """

    image: np.ndarray
    lesion_masks: tuple[np.ndarray, ...]
    kind: str

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool union of all lesion masks (all False for ``normal``)."""
        merged = np.zeros(self.image.shape, dtype=bool)
        for lesion in self.lesion_masks:
            merged |= lesion
        return merged


def make_phantom(
    rng: np.random.Generator,
    height: int,
    width: int,
    kind: str,
    config: PhantomConfig | None = None,
    num_lesions: int | None = None,
) -> Phantom:
    """Draw one phantom of the given class.

    ``benign``: an anechoic cyst or a solid oval/lobulated mass, wider than tall, with posterior acoustic
    enhancement. ``malignant``: an irregular or spiculated heterogeneous mass, possibly taller than wide,
    often with an echogenic halo and posterior shadowing. ``normal``: breast tissue only.

    Args:
        rng: source of all randomness; the same generator state gives the same phantom.
        height: image height in pixels (at least 16).
        width: image width in pixels (at least 16).
        kind: ``"benign"``, ``"malignant"`` or ``"normal"``.
        config: speckle, lesion size and class mix settings (:class:`PhantomConfig` defaults when None).
        num_lesions: 1 or 2 lesions for the lesion classes (0 for ``normal``); None draws two with
            probability ``config.two_lesion_fraction``.

    Example:
        >>> phantom = make_phantom(np.random.default_rng(0), 64, 80, "malignant")
        >>> phantom.image.shape, phantom.image.dtype.name, len(phantom.lesion_masks), bool(phantom.mask.any())
        ((64, 80), 'uint8', 1, True)
        >>> again = make_phantom(np.random.default_rng(0), 64, 80, "malignant")
        >>> bool(np.array_equal(phantom.image, again.image))
        True
    """
    config = config or PhantomConfig()
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if height < 16 or width < 16:
        raise ValueError(f"height, width: need at least 16 pixels each, got {height} x {width}")
    if kind == "normal":
        if num_lesions not in (None, 0):
            raise ValueError(f"num_lesions: a normal phantom has no lesion, got {num_lesions}")
        num_lesions = 0
    elif num_lesions is None:
        num_lesions = 2 if rng.random() < config.two_lesion_fraction else 1
    elif num_lesions not in (1, 2):
        raise ValueError(f"num_lesions: a {kind} phantom has 1 or 2 lesions, got {num_lesions}")

    shape = (height, width)
    anatomy = Anatomy.draw(rng, shape)
    echo, gain = anatomy.tissue(rng)
    texture = noise(rng, shape, [(0.02 * height, 0.03 * height)])[0]
    masks = []
    for band in range(num_lesions):  # each lesion gets its own band of columns, so lesions never overlap
        lesion = Lesion.draw(rng, kind, anatomy, config, band=(band, num_lesions))
        masks.append(lesion.paint(rng, echo, gain, texture))
    return Phantom(image=render(rng, echo, gain, config), lesion_masks=tuple(masks), kind=kind)


def render(rng: np.random.Generator, echo: np.ndarray, gain: np.ndarray, config: PhantomConfig) -> np.ndarray:
    """Blur by the point-spread function, apply gain, add log-compressed speckle, quantise to uint8."""
    sigma = config.speckle_sigma
    level = ndimage.gaussian_filter(echo, sigma) + gain
    # fully developed speckle: a complex Gaussian field blurred by the point-spread function, whose intensity
    # (exponential, i.e. Rayleigh amplitude) scanners average over neighbouring looks (compounding); a
    # Gaussian average as wide as the point-spread function stands in for that (about four looks)
    real, imag = noise(rng, echo.shape, [sigma, sigma])
    intensity = ndimage.gaussian_filter(real**2 + imag**2, sigma)
    speckle_db = 10 * np.log10(np.maximum(intensity, 1e-6))
    speckle_db -= speckle_db.mean()  # so that gain alone sets the mean level
    contrast = rng.uniform(0.75, 1.05)
    brightness = rng.uniform(-0.12, 0.04)
    display = contrast * level + brightness + config.speckle * speckle_db / config.dynamic_range_db
    return np.round(np.clip(display, 0.0, 1.0) * 255).astype(np.uint8)

"""Lesions of the phantoms: benign cysts and masses, malignant irregular masses, with their acoustic effects."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lesionseg.data.phantoms.anatomy import Anatomy
from lesionseg.data.phantoms.config import PhantomConfig
from lesionseg.data.phantoms.drawing import Border, ellipse_frame

__all__ = ["Lesion"]


@dataclass
class Lesion:
    """One lesion: a rotated ellipse with an irregular border, its echo texture and its acoustic effects."""

    center: tuple[float, float]
    radii: tuple[float, float]
    angle: float
    border: Border
    level: float
    heterogeneity: float
    margin: float
    attenuation: float
    halo: float
    capsule: float
    edge_shadow: float
    calcifications: int

    @classmethod
    def draw(
        cls, rng: np.random.Generator, kind: str, anatomy: Anatomy, config: PhantomConfig, band: tuple[int, int]
    ) -> Lesion:
        """A benign or malignant lesion inside column band ``band = (index, count)`` of the image."""
        height, width = anatomy.shape
        if kind == "benign":
            radius = math.exp(rng.uniform(*np.log(config.benign_radius))) * height
        else:
            radius = rng.uniform(*config.malignant_radius) * height
        if kind == "benign" and rng.random() < config.cyst_fraction:
            aspect = rng.uniform(0.5, 0.9)  # height / width: parallel to the skin
            params = dict(
                angle=rng.uniform(-0.25, 0.25),
                border=Border.draw(rng, orders=(2, 3), amplitude=0.03),
                level=rng.uniform(0.0, 0.06),
                heterogeneity=0.01,
                margin=0.03,
                attenuation=-rng.uniform(0.15, 0.3),
                halo=0.0,
                capsule=rng.uniform(0.0, 0.15),
                edge_shadow=rng.uniform(0.05, 0.15) * (rng.random() < 0.6),
                calcifications=0,
            )
        elif kind == "benign":
            aspect = rng.uniform(0.45, 0.85)
            lobes = int(rng.integers(2, 6))
            params = dict(
                angle=rng.uniform(-0.3, 0.3),
                border=Border.draw(rng, orders=(lobes, lobes + 1), amplitude=rng.uniform(0.03, 0.1)),
                level=rng.uniform(0.13, 0.3),
                heterogeneity=0.03,
                margin=0.05,
                attenuation=-rng.uniform(0.0, 0.15),
                halo=0.0,
                capsule=rng.uniform(0.0, 0.15) * (rng.random() < 0.5),
                edge_shadow=rng.uniform(0.05, 0.12) * (rng.random() < 0.4),
                calcifications=0,
            )
        else:
            aspect = rng.uniform(0.5, 1.3)  # taller than wide (non-parallel) is a sign of malignancy
            spiculated = rng.random() < 0.35
            params = dict(
                angle=rng.uniform(-0.5, 0.5),
                border=Border.draw(
                    rng,
                    orders=range(2, 11),
                    amplitude=rng.uniform(0.06, 0.14),
                    spikes=int(rng.integers(4, 12)) if spiculated else 0,
                ),
                level=rng.uniform(0.07, 0.24),
                heterogeneity=0.08,
                margin=rng.uniform(0.06, 0.2),
                attenuation=rng.uniform(0.15, 0.45) if rng.random() < 0.75 else -rng.uniform(0.0, 0.1),
                halo=rng.uniform(0.08, 0.2) * (rng.random() < 0.5),
                capsule=0.0,
                edge_shadow=0.0,
                calcifications=int(rng.integers(2, 8)) if rng.random() < 0.3 else 0,
            )
        ry, rx = radius * math.sqrt(aspect), radius / math.sqrt(aspect)
        reach = params["border"].reach
        index, count = band
        band_left, band_right = index * width / count, (index + 1) * width / count
        top = anatomy.skin.max() + 0.04 * height
        # shrink the lesion until its farthest border point fits in its band and below the skin
        room = min((band_right - band_left) / 2, (height - top) / 2) - 2
        scale = min(1.0, max(room, 1.5) / (reach * max(rx, ry)))
        ry, rx = max(ry * scale, 1.5), max(rx * scale, 1.5)
        extent = reach * max(rx, ry)
        cx = rng.uniform(band_left + extent, max(band_right - extent, band_left + extent))
        # anywhere it fits below the skin, preferably in the upper part of the gland
        shallowest, deepest = top + extent, max(height - extent - 2, top + extent)
        low = float(np.clip(anatomy.gland_top.mean(), shallowest, deepest))
        cy = rng.uniform(low, min(low + 0.3 * height, deepest))
        return cls(center=(cy, cx), radii=(ry, rx), **params)

    def paint(
        self, rng: np.random.Generator, echo: np.ndarray, gain: np.ndarray, texture: np.ndarray
    ) -> np.ndarray:
        """Draw the lesion into ``echo``, its shadow or enhancement into ``gain``; return its mask."""
        height, width = echo.shape
        ry, rx = self.radii
        window, rho, theta = ellipse_frame(echo.shape, *self.center, ry, rx, self.angle, 1.6 * self.border.reach)
        q = rho / self.border(theta)  # < 1 inside the border
        inside = q < 1
        if not inside.any():  # a lesion of a few pixels: keep at least its centre
            inside[np.unravel_index(np.argmin(q), q.shape)] = True
        weight = np.clip((1 - q) / (2 * self.margin) + 0.5, 0, 1)
        lesion_echo = self.level + self.heterogeneity * texture[window]
        halo_profile = np.exp(-0.5 * ((q - 1.15) / 0.08) ** 2) * (1 - weight)
        capsule_profile = np.exp(-0.5 * ((q - 1) * min(ry, rx) / 0.8) ** 2)
        region = echo[window]
        region += weight * (lesion_echo - region) + self.halo * halo_profile + self.capsule * capsule_profile
        rows, cols = np.nonzero(q < 0.8)
        if self.calcifications and rows.size:
            picks = rng.integers(0, rows.size, self.calcifications)
            region[rows[picks], cols[picks]] = rng.uniform(0.75, 0.95, self.calcifications)

        mask = np.zeros(echo.shape, dtype=bool)
        mask[window] = inside
        # posterior effects integrate the lesion's extra attenuation down each column (the beam direction);
        # below the thickest column the gain changes by the full -attenuation. Inside, there is nothing to
        # amplify in a cyst: the change applies outside the lesion only.
        excess = mask * np.float32(self.attenuation / max(int(mask.sum(axis=0).max()), 1))
        posterior = ndimage.gaussian_filter(np.cumsum(excess, axis=0), (1.0, 0.015 * height + 0.8))
        outside = np.ones(echo.shape, dtype=np.float32)
        outside[window] -= weight
        gain -= posterior * outside
        if self.edge_shadow:
            # refraction at the curved lateral edges casts thin dark streaks straight down
            rows, cols = np.nonzero(mask)
            columns = np.arange(width, dtype=np.float32)[None, :]
            depth = np.arange(height, dtype=np.float32)[:, None]
            for edge_col in (cols.min(), cols.max()):
                edge_row = rows[cols == edge_col].mean()
                streak = np.exp(-0.5 * ((columns - edge_col) / 2.0) ** 2)
                gain -= self.edge_shadow * streak * np.clip((depth - edge_row) / 3.0, 0, 1)
        return mask

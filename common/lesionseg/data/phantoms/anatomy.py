"""The breast behind a phantom: layer boundaries, tissue echo levels, lobules, ducts, ribs, ligaments and gain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lesionseg.data.phantoms.drawing import Border, bend, draw_curves, ellipse_frame, noise, smooth_curve

__all__ = ["Anatomy"]


@dataclass
class Anatomy:
    """Layer boundaries (depth in pixels per column) and tissue levels of one breast image.

    Echo levels are in display units: 0 is the bottom and 1 the top of the dynamic range.
    """

    shape: tuple[int, int]
    skin: np.ndarray
    gland_top: np.ndarray
    gland_bottom: np.ndarray
    muscle_top: np.ndarray
    muscle_bottom: np.ndarray
    fat_level: float
    gland_level: float
    muscle_level: float
    deep_level: float

    @classmethod
    def draw(cls, rng: np.random.Generator, shape: tuple[int, int]) -> Anatomy:
        height, width = shape
        tilt = rng.uniform(-0.08, 0.08) * np.linspace(-0.5, 0.5, width) * width

        def boundary(depth: float, wobble: float) -> np.ndarray:
            undulation = smooth_curve(rng, width, rng.uniform(0.15, 0.4) * width)
            return depth * height + tilt + wobble * height * undulation

        skin = boundary(rng.uniform(0.015, 0.04), 0.004)
        gland_top = np.maximum(boundary(rng.uniform(0.12, 0.38), 0.04), skin + 0.06 * height)
        gland_bottom = np.maximum(gland_top + rng.uniform(0.2, 0.45) * height, boundary(0.5, 0.04))
        muscle_top = gland_bottom + rng.uniform(0.02, 0.08) * height
        muscle_bottom = muscle_top + rng.uniform(0.08, 0.2) * height + 0.02 * height * smooth_curve(rng, width, width)
        return cls(
            shape=shape,
            skin=skin,
            gland_top=gland_top,
            gland_bottom=gland_bottom,
            muscle_top=muscle_top,
            muscle_bottom=muscle_bottom,
            fat_level=rng.uniform(0.3, 0.42),
            gland_level=rng.uniform(0.6, 0.76),
            muscle_level=rng.uniform(0.3, 0.42),
            deep_level=rng.uniform(0.12, 0.28),
        )

    def tissue(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Mean echo level of every pixel and the additive display gain, both before speckle."""
        height, width = self.shape
        depth = np.arange(height, dtype=np.float32)[:, None]
        # textures bend with the layers: their rows follow the undulation of the gland surface
        follow = self.gland_top - self.gland_top.mean()
        scales = [
            (0.015 * height, 0.07 * height),  # coarse: glandular versus fatty tissue
            (0.02 * height, 0.035 * height),  # mottle: tissue heterogeneity of every layer
            (0.5 + 0.004 * height, 0.035 * height),  # fine: horizontal streaks
            (0.4 + 0.002 * height, 0.05 * height),  # strands: thin bright fibrous lines
        ]
        coarse, mottle, fine, strands = bend(noise(rng, self.shape, scales), follow)

        fat = self.fat_level + 0.03 * coarse + 0.025 * fine
        gland = self.gland_level + 0.1 * coarse + 0.05 * fine + 0.2 * np.clip(strands - 0.9, 0, 1.5)
        islands = np.clip((-coarse - 0.9) * 2.5, 0, 1)  # fatty islands among the gland, as dark as fat
        gland += islands * (self.fat_level + 0.03 * fine - gland)
        muscle = self.muscle_level + 0.03 * coarse + 0.25 * np.clip(strands - 0.7, 0, 1.2)
        deep = self.deep_level + 0.04 * coarse + 0.03 * fine

        echo = np.where(depth < self.gland_top, fat, gland)
        echo = np.where(depth >= self.gland_bottom, fat, echo)
        echo = np.where(depth >= self.muscle_top, muscle, echo)
        echo = np.where(depth >= self.muscle_bottom, deep, echo).astype(np.float32)
        echo += rng.uniform(0.04, 0.08) * mottle
        echo[depth[:, 0] < self.skin.min() - 1] = rng.uniform(0.0, 0.15)  # coupling gel above the skin

        gain = self._gain(rng)
        self._paint_lobules(rng, echo)
        self._paint_ducts(rng, echo)
        self._paint_rib(rng, echo, gain)
        self._paint_lines(rng, echo)
        return echo, gain

    def _gain(self, rng: np.random.Generator) -> np.ndarray:
        """Imperfect time-gain compensation, fall-off at depth, shadows of dense tissue, probe lift-off."""
        height, width = self.shape
        depth = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
        columns = np.arange(width, dtype=np.float32)[None, :]
        tgc = 0.05 * smooth_curve(rng, height, 0.2 * height)[:, None]
        falloff = rng.uniform(0.05, 0.3) * np.clip((depth - rng.uniform(0.5, 0.8)) / 0.35, 0, 1) ** 2
        gain = np.broadcast_to(tgc - falloff, self.shape).astype(np.float32)
        for _ in range(int(rng.poisson(1.2))):
            # dense fibrous tissue attenuates: a soft dark column from some depth down, as behind a cancer
            centre, spread = rng.uniform(0, width), rng.uniform(0.02, 0.06) * width + 1
            start = rng.uniform(0.15, 0.6)
            band = np.exp(-0.5 * ((columns - centre) / spread) ** 2) * np.clip((depth - start) / 0.1, 0, 1)
            gain -= rng.uniform(0.08, 0.25) * band
        lateral = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
        for edge in (lateral, 1 - lateral):
            if rng.random() < 0.3:  # one edge of the probe lifted off the skin: that side goes dark
                gain -= rng.uniform(0.15, 0.4) * np.clip(1 - edge / rng.uniform(0.04, 0.12), 0, 1) ** 1.5
        return gain

    def _paint_lobules(self, rng: np.random.Generator, echo: np.ndarray) -> None:
        """Fat lobules: dark oval blobs wrapped in bright septa, in the fat layer and among the gland."""
        height, width = self.shape
        lobules = []
        x = rng.uniform(-0.05, 0.05) * height
        while x < width:  # a row of lobules along the subcutaneous fat
            rx = rng.uniform(0.05, 0.13) * height
            column = int(np.clip(x, 0, width - 1))
            top, bottom = self.skin[column] + 0.03 * height, self.gland_top[column]
            ry = max(min(rng.uniform(0.35, 0.7) * rx, 0.5 * (bottom - top)), 1.5)
            lobules.append((rng.uniform(top + ry, max(bottom - ry, top + ry + 1)), x, ry, rx))
            x += rx * rng.uniform(1.4, 2.2)
        for _ in range(int(rng.integers(2, 8))):  # fatty lobules inside the gland and behind it
            column = int(rng.integers(0, width))
            rx = rng.uniform(0.04, 0.11) * height
            cy = rng.uniform(self.gland_top[column], self.muscle_top[column])
            lobules.append((cy, float(column), rng.uniform(0.3, 0.6) * rx, rx))
        for cy, cx, ry, rx in lobules:
            level = self.fat_level + rng.uniform(-0.1, 0.04)
            border = Border.draw(rng, orders=(2, 3, 4), amplitude=0.06)
            window, rho, theta = ellipse_frame(self.shape, cy, cx, ry, rx, rng.uniform(-0.25, 0.25), 1.3)
            q = rho / border(theta)
            inside = np.clip((1 - q) / 0.25 + 0.5, 0, 1)
            # the septum shows where the beam meets it squarely: top and bottom more than the sides
            septum = rng.uniform(0.15, 0.3) * np.exp(-0.5 * ((q - 1) * min(ry, rx) / 0.9) ** 2) * np.sin(theta) ** 2
            region = echo[window]
            region += inside * (level - region) + septum

    def _paint_ducts(self, rng: np.random.Generator, echo: np.ndarray) -> None:
        """Ducts: long thin anechoic tubes with bright walls, roughly parallel to the skin."""
        height, width = self.shape
        for _ in range(int(rng.poisson(1.0))):
            column = int(rng.integers(0, width))
            cy = rng.uniform(self.gland_top[column], self.gland_bottom[column])
            rx = rng.uniform(0.08, 0.2) * height
            ry = max(rng.uniform(0.02, 0.04) * height, 1.5)
            window, rho, _ = ellipse_frame(self.shape, cy, column, ry, rx, rng.uniform(-0.15, 0.15), 1.6)
            wall = 0.2 * np.exp(-0.5 * ((rho - 1) * ry / 0.8) ** 2)
            lumen = np.clip((1 - rho) * ry / 2 + 0.5, 0, 1)
            region = echo[window]
            region += lumen * (rng.uniform(0.1, 0.25) - region) + wall * (1 - lumen)

    def _paint_rib(self, rng: np.random.Generator, echo: np.ndarray, gain: np.ndarray) -> None:
        """Sometimes a rib behind the chest wall: a dark oval with a bright front surface and a shadow."""
        height, width = self.shape
        if rng.random() >= 0.3 or self.muscle_bottom.mean() > 0.8 * height:
            return
        column = int(rng.integers(0, width))
        rx = rng.uniform(0.12, 0.25) * height
        ry = rng.uniform(0.05, 0.09) * height
        cy = self.muscle_bottom[column] + 1.2 * ry
        window, rho, theta = ellipse_frame(self.shape, cy, column, ry, rx, rng.uniform(-0.1, 0.1), 1.2)
        inside = np.clip((1 - rho) * ry / 1.5 + 0.5, 0, 1)
        front = 0.5 * np.exp(-0.5 * ((rho - 1) * ry / 1.2) ** 2) * (theta < 0)
        region = echo[window]
        region += inside * (rng.uniform(0.08, 0.18) - region) + front
        # bone reflects nearly everything: below its centre line the columns it covers go dark
        gain[window] -= rng.uniform(0.2, 0.4) * inside * (theta > 0)

    def _paint_lines(self, rng: np.random.Generator, echo: np.ndarray) -> None:
        """Bright specular lines: skin, fasciae along the layer boundaries and Cooper's ligaments."""
        height, width = self.shape
        columns = np.arange(width, dtype=np.float32)
        curves, weights = [], []
        boundaries = [
            (self.skin, 1.0),
            (self.skin + rng.uniform(0.012, 0.025) * height, 0.6),
            (self.gland_top, 0.8),
            (self.muscle_top, 0.9),
            (self.muscle_bottom, 0.9),
        ]
        for curve, strength in boundaries:
            curves.append(np.stack([curve, columns], axis=1))
            weights.append(strength * np.clip(0.7 + 0.6 * smooth_curve(rng, width, 0.05 * width), 0, 1))
        for _ in range(int(rng.integers(1, 6))):
            # Cooper's ligaments: arcs rising from the gland surface through the fat towards the skin
            column = rng.uniform(0, width - 1)
            start = np.array([self.gland_top[int(column)], column])
            rise = self.gland_top[int(column)] - self.skin[int(column)]
            end = start + [-rng.uniform(0.4, 1.0) * rise, rng.uniform(-1.5, 1.5) * rise]
            control = (start + end) / 2 + rng.normal(0, 0.25 * rise, 2)
            t = np.linspace(0, 1, int(3 * np.abs(end - start).sum()) + 8)[:, None]
            curves.append((1 - t) ** 2 * start + 2 * t * (1 - t) * control + t**2 * end)
            weights.append(np.clip(rng.uniform(0.4, 0.8) - 0.4 * t[:, 0] ** 2, 0, 1))
        echo += (0.95 - echo) * draw_curves(self.shape, curves, weights, 0.8)

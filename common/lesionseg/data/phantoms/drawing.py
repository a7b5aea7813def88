"""Drawing primitives of the phantoms: smooth random curves and fields, ellipses, irregular borders, thin lines."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft
from scipy import ndimage

__all__ = ["Border", "bend", "draw_curves", "ellipse_frame", "noise", "smooth_curve"]


def smooth_curve(rng: np.random.Generator, length: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-deviation random curve of ``length`` samples, correlated over about ``sigma``."""
    # drawn longer and cut, so that the two ends are not correlated through the wrap-around
    curve = ndimage.gaussian_filter1d(rng.standard_normal(length + int(4 * sigma) + 1), sigma, mode="wrap")[:length]
    return ((curve - curve.mean()) / max(float(curve.std()), 1e-6)).astype(np.float32)


def noise(rng: np.random.Generator, shape: tuple[int, int], sigmas: Sequence[Sequence[float]]) -> np.ndarray:
    """Zero-mean, unit-deviation periodic Gaussian random fields, filtered in the Fourier domain.

    Args:
        rng: source of the white noise.
        shape: ``(rows, columns)`` of each field.
        sigmas: one ``(rows, columns)`` pair per field: standard deviations in pixels of the Gaussian
            correlation.

    Returns:
        ``(len(sigmas), rows, columns)`` float32.
    """
    sigma = np.asarray(sigmas, dtype=np.float32)
    freq_rows = scipy.fft.fftfreq(shape[0]).astype(np.float32)
    freq_cols = scipy.fft.rfftfreq(shape[1]).astype(np.float32)
    # the Gaussian's transfer function is separable: an outer product of one factor per axis
    transfer = (
        np.exp(-2 * np.pi**2 * (sigma[:, 0:1] * freq_rows) ** 2)[:, :, None]
        * np.exp(-2 * np.pi**2 * (sigma[:, 1:2] * freq_cols) ** 2)[:, None, :]
    )
    white = rng.standard_normal((len(sigma), *shape), dtype=np.float32)
    fields = scipy.fft.irfft2(scipy.fft.rfft2(white) * transfer, s=shape)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    return fields / np.maximum(fields.std(axis=(1, 2), keepdims=True), 1e-6)


def bend(fields: np.ndarray, follow: np.ndarray) -> np.ndarray:
    """Shift every column of periodic ``(..., rows, columns)`` fields down by ``follow[column]`` rows.

    Textures bent this way run along the undulating tissue layers instead of straight across the image.
    """
    rows = fields.shape[-2]
    source = np.arange(rows, dtype=np.float32)[:, None] - follow[None, :].astype(np.float32)
    below = np.floor(source)
    fraction = source - below
    index = below.astype(np.int64) % rows
    upper = np.take_along_axis(fields, np.broadcast_to(index, fields.shape), axis=-2)
    lower = np.take_along_axis(fields, np.broadcast_to((index + 1) % rows, fields.shape), axis=-2)
    return upper + fraction * (lower - upper)


def ellipse_frame(
    shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float, angle: float, reach: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Window around a rotated ellipse and, in it, each pixel's normalised radius and polar angle.

    ``rho == 1`` on the ellipse; the window covers ``reach`` times the larger radius. Angle 0 points along
    the ellipse's first axis (rotated by ``angle`` from the image rows), positive angles downwards.
    """
    height, width = shape
    extent = reach * max(ry, rx) + 2
    y0, y1 = min(max(int(cy - extent), 0), height), min(max(int(cy + extent) + 1, 0), height)
    x0, x1 = min(max(int(cx - extent), 0), width), min(max(int(cx + extent) + 1, 0), width)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = (cos * dx + sin * dy) / np.float32(rx)
    v = (cos * dy - sin * dx) / np.float32(ry)
    return (slice(y0, y1), slice(x0, x1)), np.hypot(u, v), np.arctan2(v, u)


def draw_curves(
    shape: tuple[int, int], curves: list[np.ndarray], weights: list[np.ndarray], sigma: float
) -> np.ndarray:
    """Rasterise curves given as ``(N, 2)`` (row, column) samples into a ``[0, 1]`` image of thin lines.

    Samples should be at most half a pixel apart; ``weights`` (one per curve, scalar or per sample) set the
    brightness along each line.
    """
    height, width = shape
    canvas = np.zeros(shape, dtype=np.float32)
    points = np.concatenate(curves)
    values = np.concatenate([np.broadcast_to(w, (len(c),)) for c, w in zip(curves, weights)]).astype(np.float32)
    rows, cols = np.round(points[:, 0]).astype(int), np.round(points[:, 1]).astype(int)
    keep = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    np.maximum.at(canvas, (rows[keep], cols[keep]), values[keep])
    # across a blurred one-pixel line the peak is 1 / (sqrt(2 pi) sigma): rescale so it reaches the weight
    lines = ndimage.gaussian_filter(canvas, sigma) * np.float32(math.sqrt(2 * math.pi) * sigma)
    return np.clip(lines, 0.0, 1.0)


class Border:
    """Closed border in polar form, ``r(theta) = 1 + sum_k a_k cos(k theta + phi_k) + spicules``, tabulated.

    Args:
        harmonics: rows ``(order, amplitude, phase)``.
        spikes: rows ``(direction, height, angular width)`` of narrow Gaussian spicules.
    """

    _ANGLES = np.linspace(-np.pi, np.pi, 1441)

    def __init__(self, harmonics: np.ndarray, spikes: np.ndarray) -> None:
        theta = self._ANGLES
        radius = 1 + (harmonics[:, 1:2] * np.cos(harmonics[:, 0:1] * theta + harmonics[:, 2:3])).sum(axis=0)
        offsets = np.angle(np.exp(1j * (theta - spikes[:, 0:1])))
        radius += (spikes[:, 1:2] * np.exp(-0.5 * (offsets / spikes[:, 2:3]) ** 2)).sum(axis=0)
        self.table = np.maximum(radius, 0.2)
        #: the farthest the border gets from the centre, in units of the ellipse radii
        self.reach = float(self.table.max())

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        orders: Sequence[int],
        amplitude: float,
        spikes: int = 0,
    ) -> Border:
        """Random phases, amplitudes up to ``amplitude`` falling as 1/sqrt(order), ``spikes`` spicules."""
        order = np.asarray(orders, dtype=float)
        amplitudes = amplitude * rng.uniform(0.3, 1.0, order.size) / np.sqrt(order / order[0])
        harmonics = np.stack([order, amplitudes, rng.uniform(-np.pi, np.pi, order.size)], axis=1)
        spike_rows = np.stack(
            [rng.uniform(-np.pi, np.pi, spikes), rng.uniform(0.1, 0.35, spikes), rng.uniform(0.03, 0.09, spikes)],
            axis=1,
        )
        return cls(harmonics, spike_rows)

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        return np.interp(theta, self._ANGLES, self.table).astype(np.float32)

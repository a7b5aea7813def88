"""Differentiable context pooling (DCP) of DC-Net (Ning et al., Eq. 7-11, Fig. 2(d))."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool

from lesionseg.networks.blocks.shapes import sample_rms

__all__ = ["DifferentiableContextPooling"]


class DifferentiableContextPooling(nn.Module):
    """Pooling by learned, input-dependent kernels that are shared between neighbouring windows, Eq. 7-11.

    The input ``Z`` (B, C, *S) is cut into ``m`` non-overlapping windows of ``r^d`` positions (``r`` =
    ``window_size``). A 2×2 (2^d) convolution ``C → 1`` on ``Z``, zero-padded at the end of each axis so its
    map keeps the size ``S``, gives the pooling kernel map ``Δ_Z`` (one kernel ``δ_q`` of ``r^d`` weights
    per window ``q``, shared by all channels). Eq. 8-11 read, per channel ``k`` and window ``p``,

        ``Ū_p = m / ΣH · Σ_q H_pq <Z_p, δ_q>``,

    with ``U = Z̄ Δ̄ᵀ`` the m×m matrix of Eq. 8 and ``H`` the neighbourhood matrix of Eq. 10. Since
    ``Σ_q H_pq <Z_p, δ_q> = <Z_p, Σ_q H_pq δ_q>``, the kernels of the neighbouring windows are aggregated
    first and each window then takes one weighted sum: O(m) memory and time; the m×m matrix is never built.

    Neighbourhoods (``radius`` = τ):

    - ``"grid"``: the (2τ+1)^d windows around ``p`` on the window grid (τ = 1: the eight neighbours the
      paper mentions, as in the authors' model).
    - ``"band"``: Eq. 10 read literally, ``|p − q| ≤ τ`` on the raster-order (flattened) window index, so
      a band wraps from the end of one row of windows to the start of the next.

    Border rule: neighbours outside the window grid (or outside ``[0, m)`` for ``"band"``) are reflected
    back at the window level (window −1 is window 1, keeping the kernel positions inside the window). Every
    window therefore has exactly ``n = (2τ+1)^d`` (grid) or ``n = 2τ+1`` (band) neighbours counted with
    multiplicity, ``H_pq`` counts how often ``q`` is a neighbour of ``p`` (a 0/1 band matrix away from the
    border, as in Eq. 10), ``ΣH = m·n`` and the smoothing factor of Eq. 11 is ``m / ΣH = 1 / n``: each
    window is pooled with the mean kernel of its neighbourhood. Reflection needs more than τ windows along
    each axis (along the flattened index for ``"band"``).

    Kernel normalisation: none, as in the paper (Eq. 8 projects by the raw ``Δ̄_Z``, and Eq. 11 only adds
    the smoothing factor) and the authors' model (the 2×2 convolution has no activation). The only
    normalisation, ``1 / n``, averages kernels, so it maps a constant kernel to itself: with the constant
    kernel ``1 / r^d`` (the paper's special case i, here a zero-weight kernel convolution with bias
    ``1 / r^d``) DCP is exactly average pooling, for τ = 0 and for any τ. A softmax over each window would
    make every constant kernel average pooling, but would also bound DCP to a convex combination, which
    neither the paper's equations nor its published model do.

    Scale (a deviation from the paper and the published model): with ``normalise=True`` (default) the
    data-dependent part of the kernel map is divided by the input's per-sample root mean square
    (:func:`~lesionseg.networks.blocks.shapes.sample_rms`), ``Δ_Z = (w ⋆ Z) / rms(Z) + b``. Unnormalised,
    ``Z ⊙ Δ_Z`` is quadratic in the scale of ``Z``; in evaluation mode, before BatchNorm's running statistics
    have adapted, four poolings in a row squared a fresh DC-Net's features from 2 to 5e3 on a real BUSI
    image (up to 3e9 for other seeds), and its CCF fusions then overflowed float32. Normalised, DCP is linear
    in the scale of its input. The bias is not divided, so the constant kernel below is still exact average
    pooling. In training ``Z`` comes out of BatchNorm and ReLU, with an RMS that varies little between samples
    (0.55–0.89 over a short BUSI training, ``benchmarks/dcnet_normalisation.py``), so the division is close
    to a constant that ``w`` absorbs.

    Shapes: (B, C, *S) → (B, C, *S / r); every spatial size must be divisible by ``r``.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: channels ``C`` of the input (the kernel convolution maps them to one kernel map).
        window_size: ``r``, the pooling window edge and stride.
        radius: τ ≥ 0, the neighbourhood radius in windows; 0 pools each window with its own kernel.
        neighbourhood: ``"grid"`` or ``"band"``, see above.
        normalise: divide the kernel convolution's weighted sum by the input's per-sample root mean square,
            see above (``False``: the paper's kernels, quadratic in the input's scale).

    Example (τ = 0 and the constant kernel ``1/4`` is 2×2 average pooling)::

        >>> pool = DifferentiableContextPooling(2, 3, radius=0)
        >>> _ = torch.nn.init.zeros_(pool.kernel_conv.weight), torch.nn.init.constant_(pool.kernel_conv.bias, 0.25)
        >>> x = torch.randn(1, 3, 8, 8)
        >>> torch.allclose(pool(x), torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)
        True
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        window_size: int = 2,
        radius: int = 1,
        neighbourhood: str = "grid",
        normalise: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if window_size < 1:
            raise ValueError(f"window_size must be positive, got {window_size}.")
        if radius < 0:
            raise ValueError(f"radius must be non-negative, got {radius}.")
        if neighbourhood not in ("grid", "band"):
            raise ValueError(f"neighbourhood must be 'grid' or 'band', got {neighbourhood!r}.")
        self.spatial_dims = spatial_dims
        self.window_size = window_size
        self.radius = radius
        self.neighbourhood = neighbourhood
        self.normalise = normalise
        # padding 1 on both sides and dropping the first output position == zero padding at the end only,
        # without copying the (B, C, *S) input into a padded buffer
        self.kernel_conv = Conv[Conv.CONV, spatial_dims](in_channels, 1, kernel_size=2, padding=1)
        self.neighbour_mean = Pool[Pool.AVG, 1 if neighbourhood == "band" else spatial_dims](
            kernel_size=2 * radius + 1, stride=1
        )
        self.window_pool = Pool[Pool.AVG, spatial_dims](kernel_size=window_size)
        d = spatial_dims
        # (B, g_1, r, ..., g_d, r) <-> (B, r, ..., r, g_1, ..., g_d): window grid last, kernel positions first
        self._to_grid = [0] + [2 + 2 * i for i in range(d)] + [1 + 2 * i for i in range(d)]
        self._from_grid = [0] + [item for i in range(d) for item in (1 + d + i, 1 + i)]
        self._window_positions = window_size**d

    def kernel_map(self, x: torch.Tensor) -> torch.Tensor:
        """``Δ_Z``: the pooling kernels of all windows, (B, 1, *S), for the input ``x`` (B, C, *S)."""
        if self.normalise:
            weighted = self.kernel_conv._conv_forward(x, self.kernel_conv.weight, None)
            bias = self.kernel_conv.bias
            assert bias is not None  # for TorchScript: the kernel convolution is built with a bias
            # a half-precision map is divided in float32 (type promotion; it has one channel, so this is cheap)
            kernels = (weighted / sample_rms(x) + bias).to(weighted.dtype)
        else:
            kernels = self.kernel_conv(x)
        for dim in range(2, 2 + self.spatial_dims):
            kernels = kernels.narrow(dim, 1, kernels.shape[dim] - 1)
        return kernels

    def _check_input(self, x: torch.Tensor) -> None:
        # str.format rather than f-strings: TorchScript compiles this check (torch.jit.script)
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                "expected (B, C, *S) with {} spatial dims, got shape {}.".format(
                    self.spatial_dims, "(" + ", ".join([str(size) for size in x.shape]) + ")"
                )
            )
        spatial = list(x.shape[2:])
        spatial_text = "(" + ", ".join([str(size) for size in spatial]) + ")"
        grid: list[int] = []
        for s in spatial:
            if s % self.window_size:
                raise ValueError(
                    "spatial shape {} is not divisible by the window size {}.".format(spatial_text, self.window_size)
                )
            grid.append(s // self.window_size)
        windows = 1
        for g in grid:
            windows *= g
        lengths = [windows] if self.neighbourhood == "band" else grid
        if self.radius > 0 and min(lengths) <= self.radius:
            raise ValueError(
                "DCP with '{}' radius {} needs more than {} windows of size {} along each axis (reflected "
                "borders), got spatial shape {}.".format(
                    self.neighbourhood, self.radius, self.radius, self.window_size, spatial_text
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        r, tau, d, positions = self.window_size, self.radius, self.spatial_dims, self._window_positions
        batch = x.shape[0]
        spatial = list(x.shape[2:])
        grid = [s // r for s in spatial]
        split = [batch]
        for g in grid:
            split += [g, r]
        # (B, r^d, *grid): the r^d kernel weights of every window, windows on a grid
        kernels = self.kernel_map(x).reshape(split).permute(self._to_grid).reshape([batch, positions] + grid)
        if tau > 0:
            if self.neighbourhood == "band":
                flat = kernels.flatten(2)
                kernels = self.neighbour_mean(F.pad(flat, [tau, tau], mode="reflect")).view_as(kernels)
            else:
                kernels = self.neighbour_mean(F.pad(kernels, [tau] * (2 * d), mode="reflect"))
        # back to a (B, 1, *S) map, times r^d so that average pooling of Z ⊙ map is each window's weighted sum
        kernels = (kernels * positions).view([batch] + [r] * d + grid).permute(self._from_grid)
        return self.window_pool(x * kernels.reshape([batch, 1] + spatial))

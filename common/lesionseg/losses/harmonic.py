"""The harmonic loss of DC-Net (Ning et al.), a focal-loss variant that keeps the gradient of hard pixels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

# true-class logits below this have p_t < 1e-13: the modulating factor is 1 to within 1e-13 there
_UNMODULATED_BELOW = -30.0


class HarmonicLoss(_Loss):
    """
    Pixel-wise harmonic loss, computed from logits with a sigmoid per channel.

    Eq. 26 of the DC-Net paper (Eq. 19 with the class weight α_t):

    .. math::

        L_h(p_t) = -\\alpha_t \\frac{(1 + \\sigma)(1 - p_t)^{\\gamma - 1}}{\\sigma + (1 - p_t)^\\gamma} \\log p_t

    with p_t = p, α_t = α where y = 1 and p_t = 1 - p, α_t = 1 - α where y = 0.

        Ning et al., "Decomposing and Coupling Saliency Map for Lesion Segmentation in Ultrasound Images",
        Section III-D, Definition 2, Eq. 19 and 26.

    The loss is evaluated in log space from the signed logit z_t (z where y = 1, -z where y = 0):
    log p_t = logsigmoid(z_t), -log p_t = softplus(-z_t) and (1 - p_t)^k = exp(k · logsigmoid(-z_t)), with the
    modulating factor written as (1 - p_t)^(γ-1) / (w + (1 - w)(1 - p_t)^γ), w = σ / (1 + σ). For
    z_t < -30 the factor is 1 to within 1e-13 (p_t < 1e-13), so there the loss is the exact softplus(-z_t)
    and the factor is evaluated at z_t = -30: its chain-rule derivative times -log p_t would otherwise
    overflow float32 (γ |z_t| > 3.4e38 for |z_t| > 7e37) before it met the vanishing derivative of
    1 - p_t, and give a NaN gradient. Loss and gradient therefore stay finite for any finite logit (for σ
    down to about 1e-18, below which σ² underflows float32 in the gradient); inputs are cast to float32, so
    the loss is the same under float16/bfloat16 autocast.

    Limits of σ (properties P-2 and P-3 of the paper, q = 1 - p_t):

    - σ → ∞: the factor (1 + σ) / (σ + q^γ) → 1 and L_h → -α_t q^(γ-1) log p_t, the α-balanced focal loss
      with exponent γ - 1 (P-3); at γ = 1 it is the α-weighted binary cross-entropy. ``sigma=math.inf``
      is accepted and gives these forms exactly.
    - σ → 0: L_h → -α_t log(p_t) / q for every q > 0, independent of γ (P-2). The limit is pointwise, not
      uniform: for σ > 0 the loss of a pixel with q^γ ≪ σ still goes to 0 (as q^γ / σ), whereas the limit
      tends to α_t as p_t → 1 — σ^(1/γ) is the width of the suppressed "easy" range (p_t > 0.75 for the
      paper's γ = 5, σ = 1e-3). σ = 0 itself (0/0 at p_t = 1) is rejected.
    - P-4 (q^γ ≫ σ): L_h ≈ -α_t (1 + σ) log(p_t) / q. P-5 (q^γ ≪ σ): L_h ≈ -α_t ((1 + σ) / σ) q^(γ-1) log p_t;
      the paper prints P-5 without the 1/σ and with the power of q in the denominator, but its own text
      ("the amplification factor (1 + σ)/σ") and Eq. 19 give the form here.

    Targets may be soft (values in [0, 1], e.g. masks resized with interpolation): the loss is then
    y · L_h(p_t = p, α_t = α) + (1 - y) · L_h(p_t = 1 - p, α_t = 1 - α), the same convention as
    ``BCEWithLogitsLoss``; for binary targets this is exactly Eq. 26. Target values are not checked.

    Example:
        >>> import math
        >>> import torch
        >>> from monai.losses import FocalLoss
        >>> from torch.nn import BCEWithLogitsLoss
        >>> logits = torch.linspace(-4.0, 4.0, 33).reshape(1, 1, 3, 11)
        >>> target = (torch.arange(33) % 2).float().reshape(1, 1, 3, 11)
        >>> # P-3, sigma -> inf: the focal loss with exponent gamma - 1 ...
        >>> harmonic = HarmonicLoss(gamma=3.0, sigma=math.inf, alpha=0.25, reduction="none")
        >>> focal = FocalLoss(gamma=2.0, alpha=0.25, reduction="none")
        >>> torch.allclose(harmonic(logits, target), focal(logits, target))
        True
        >>> # ... and at gamma = 1 the binary cross-entropy (alpha=None: no class weighting)
        >>> harmonic = HarmonicLoss(gamma=1.0, sigma=math.inf, alpha=None, reduction="none")
        >>> torch.allclose(harmonic(logits, target), BCEWithLogitsLoss(reduction="none")(logits, target))
        True
        >>> # P-2, sigma -> 0: -log(p_t) / (1 - p_t) wherever (1 - p_t)^gamma >> sigma, whatever gamma
        >>> p_t = torch.where(target > 0, logits.sigmoid(), 1 - logits.sigmoid())
        >>> harmonic = HarmonicLoss(gamma=2.0, sigma=1e-12, alpha=None, reduction="none")
        >>> torch.allclose(harmonic(logits, target), -p_t.log() / (1 - p_t))
        True
        >>> # against the alpha-weighted cross-entropy, the paper's setting suppresses an easy pixel
        >>> # (p_t > 0.75) and amplifies a low-confidence one
        >>> paper = HarmonicLoss(reduction="none")
        >>> cross_entropy = BCEWithLogitsLoss(reduction="none")
        >>> easy, low_confidence = torch.tensor([[[[3.0, 0.5]]]]), torch.ones(1, 1, 1, 2)
        >>> (paper(easy, low_confidence) < 0.25 * cross_entropy(easy, low_confidence)).tolist()
        [[[[True, False]]]]
    """

    def __init__(
        self,
        gamma: float = 5.0,
        sigma: float = 1e-3,
        alpha: float | None = 0.25,
        reduction: LossReduction | str = LossReduction.MEAN,
        clamp: tuple[float, float] | None = None,
    ) -> None:
        """
        Args:
            gamma: harmonic exponent γ ≥ 1 (Eq. 19); the paper uses 5. γ = 1 with σ = ∞ is cross-entropy.
            sigma: harmonic parameter σ > 0 (Eq. 19); ``math.inf`` is allowed (the focal limit, P-3). The
                paper uses 1e-3.
            alpha: class weight α ∈ [0, 1] of lesion pixels; background pixels get 1 - α (Eq. 26). ``None``
                drops the weighting (Eq. 19; the "none" setting of the paper's Fig. 18). The paper uses 0.25.
            reduction: {``"none"``, ``"mean"``, ``"sum"``} over all elements. ``"none"`` returns the
                per-element loss with the input's shape.
            clamp: ``(low, high)`` to clamp each element's loss into, as the DC-Net authors' published code
                does with (1e-6, 1 - 1e-6). Off by default (Eq. 26 has no clamp): a clamped element has
                zero gradient, so every pixel whose loss exceeds ``high`` — the hard pixels the loss is
                meant to emphasise — stops contributing to training.

        Raises:
            ValueError: when an argument is out of its range.
        """
        super().__init__(reduction=LossReduction(reduction).value)
        if not (math.isfinite(gamma) and gamma >= 1.0):
            raise ValueError(f"gamma must be a finite number >= 1, got {gamma}")
        if not sigma > 0.0:
            raise ValueError(
                f"sigma must be > 0 (math.inf allowed), got {sigma}; sigma = 0 is the P-2 limit, singular at p_t = 1"
            )
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        if clamp is not None:
            if len(clamp) != 2 or not clamp[0] < clamp[1]:
                raise ValueError(f"clamp must be a pair (low, high) with low < high, got {clamp}")
            clamp = (float(clamp[0]), float(clamp[1]))
        self.gamma = float(gamma)
        self.sigma = float(sigma)
        self.alpha = None if alpha is None else float(alpha)
        self.clamp = clamp
        # w = σ / (1 + σ): the modulating factor's denominator becomes w + (1 - w) q^γ, exact at σ = ∞
        self._sigma_weight = 1.0 if math.isinf(self.sigma) else self.sigma / (1.0 + self.sigma)

    def _loss_of_true_class(self, signed_logit: torch.Tensor) -> torch.Tensor:
        """Eq. 19 without α_t, as a function of the logit of the true class z_t (p_t = sigmoid(z_t))."""
        # the modulating factor is 1 below z_t = -30 (see the class docstring); where() passes no gradient
        # to the unselected branch, so its value at the clamped logit cannot reach the gradient
        log_q = F.logsigmoid(-signed_logit.clamp_min(_UNMODULATED_BELOW))  # log(1 - p_t)
        modulation = torch.exp((self.gamma - 1.0) * log_q) / (
            self._sigma_weight + (1.0 - self._sigma_weight) * torch.exp(self.gamma * log_q)
        )
        modulation = torch.where(signed_logit < _UNMODULATED_BELOW, torch.ones_like(modulation), modulation)
        return modulation * F.softplus(-signed_logit)  # softplus(-z_t) = -log p_t

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits, shape (B, C, H[, W, D]); a sigmoid is applied per element.
            target: labels in [0, 1], same shape as ``input``.

        Raises:
            ValueError: when ``input`` and ``target`` differ in shape.
        """
        if input.shape != target.shape:
            raise ValueError(f"target shape {tuple(target.shape)} differs from input shape {tuple(input.shape)}")
        logits = input.float()
        target = target.float()
        positive_weight, negative_weight = (1.0, 1.0) if self.alpha is None else (self.alpha, 1.0 - self.alpha)
        loss = positive_weight * target * self._loss_of_true_class(logits) + negative_weight * (
            1.0 - target
        ) * self._loss_of_true_class(-logits)
        if self.clamp is not None:
            loss = loss.clamp(*self.clamp)
        if self.reduction == LossReduction.MEAN.value:
            # divided before summing: a sum of per-element losses near float32's maximum would overflow
            return (loss / loss.numel()).sum()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss

"""The total training loss of DC-Net: Dice on both saliency maps, Dice plus harmonic loss on the lesion map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceLoss
from torch.nn.modules.loss import _Loss

from lesionseg.losses.harmonic import HarmonicLoss


class DCNetLoss(_Loss):
    """
    DC-Net's hybrid loss, Eq. 18 with Eq. 27 of the DC-Net paper:

    .. math::

        L = \\lambda_1 L_d(S_f, Y) + \\lambda_2 L_d(S_b, 1 - Y)
            + \\lambda_3 (L_d(\\hat{Y}, Y) + \\lambda_4 L_h(\\hat{Y}, Y))

    with the Dice loss L_d (``monai.losses.DiceLoss``) and the harmonic loss L_h (:class:`HarmonicLoss`).
    The paper's setting (Section V-B, Fig. 17) is λ1 : λ2 : λ3 = 0.5 : 0.5 : 1 and λ4 = 10.

        Ning et al., "Decomposing and Coupling Saliency Map for Lesion Segmentation in Ultrasound Images",
        Section III-D, Eq. 18, 26 and 27.

    ``forward(input, target)`` takes the network's training output, the tuple
    ``(lesion_logits, foreground_saliency_logits, background_saliency_logits)`` of (B, 1, H, W) logits, or
    the lesion logits alone (the evaluation output, or the 1-tuple of a DC-Net trained without its
    decomposition subnet), for which only the lesion term λ3 (L_d + λ4 L_h) is computed. ``target`` is the
    (B, 1, H, W) lesion mask Y. The result is a scalar,
    as MONAI's ``SupervisedTrainer`` expects, in float64: λ4 = 10 times a float32 harmonic loss leaves
    float32's range for diverged logits (|z| > 1e37), where the float64 total and every gradient stay finite;
    the unweighted terms of the last call are kept, detached,
    in :attr:`last_terms` for logging (keys ``"lesion_dice"``, ``"lesion_harmonic"`` and, for the
    training tuple, ``"foreground_saliency_dice"``, ``"background_saliency_dice"``).

    The paper does not write L_d out; it cites V-Net (Milletari et al.), whose Dice has squared terms in
    the denominator, hence ``squared_pred=True``. Dice is computed over the whole batch (``batch=True``):
    per image, the Dice loss of an empty mask — BUSI's normal images — is ≈ 1 whatever the prediction,
    with a vanishing gradient except where the prediction is already ~0, so it adds a constant instead of
    a signal; pooled over the batch, an empty image contributes its false positives to the denominator.

    Example:
        >>> import torch
        >>> loss = DCNetLoss()
        >>> outputs = tuple(torch.randn(2, 1, 16, 16, requires_grad=True) for _ in range(3))
        >>> target = (torch.rand(2, 1, 16, 16) > 0.5).float()
        >>> total = loss(outputs, target)
        >>> total.shape, sorted(loss.last_terms)
        (torch.Size([]), ['background_saliency_dice', 'foreground_saliency_dice', 'lesion_dice', 'lesion_harmonic'])
        >>> expected = 0.5 * loss.last_terms["foreground_saliency_dice"] + 0.5 * loss.last_terms[
        ...     "background_saliency_dice"] + loss.last_terms["lesion_dice"] + 10 * loss.last_terms["lesion_harmonic"]
        >>> torch.allclose(total, expected.double())
        True
    """

    def __init__(
        self,
        weights: Sequence[float] = (0.5, 0.5, 1.0),
        harmonic_weight: float = 10.0,
        gamma: float = 5.0,
        sigma: float = 1e-3,
        alpha: float | None = 0.25,
        clamp: tuple[float, float] | None = None,
        squared_pred: bool = True,
        batch: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
    ) -> None:
        """
        Args:
            weights: (λ1, λ2, λ3) of Eq. 18, the weights of the foreground-saliency Dice, the
                background-saliency Dice and the coupling-subnet loss L_C = L_d + λ4 L_h.
            harmonic_weight: λ4 of Eq. 27, the weight of the harmonic loss within L_C.
            gamma: γ of the harmonic loss (Eq. 26).
            sigma: σ of the harmonic loss (Eq. 26).
            alpha: α of the harmonic loss (Eq. 26); ``None`` drops the class weighting.
            clamp: per-pixel clamp of the harmonic loss, see :class:`HarmonicLoss`; off by default.
            squared_pred: Dice with squared terms in the denominator (V-Net's form), see ``DiceLoss``.
            batch: pool the Dice over the batch before dividing (see above), see ``DiceLoss``.
            smooth_nr: Dice numerator smoothing, see ``DiceLoss``.
            smooth_dr: Dice denominator smoothing, see ``DiceLoss``.

        Raises:
            ValueError: when ``weights`` does not hold three non-negative numbers or ``harmonic_weight``
                is negative (and for the harmonic parameters, see :class:`HarmonicLoss`).
        """
        super().__init__()
        weights = tuple(float(w) for w in weights)
        if len(weights) != 3 or min(weights) < 0.0:
            raise ValueError(f"weights must be three non-negative numbers (lambda1, lambda2, lambda3), got {weights}")
        if harmonic_weight < 0.0:
            raise ValueError(f"harmonic_weight must be non-negative, got {harmonic_weight}")
        self.foreground_weight, self.background_weight, self.lesion_weight = weights
        self.harmonic_weight = float(harmonic_weight)
        self.dice = DiceLoss(
            sigmoid=True, squared_pred=squared_pred, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr
        )
        self.harmonic = HarmonicLoss(gamma=gamma, sigma=sigma, alpha=alpha, clamp=clamp)
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(lesion_logits, foreground_saliency_logits, background_saliency_logits)``, each
                (B, 1, H, W), or ``lesion_logits`` alone or as ``(lesion_logits,)``.
            target: lesion mask Y, (B, 1, H, W), values in {0, 1}.

        Raises:
            ValueError: when ``input`` is a sequence not of three tensors, or a map's shape differs from
                ``target``'s.
        """
        if isinstance(input, torch.Tensor):
            lesion, saliency = input, None
        elif len(input) == 1:  # a DC-Net without its decomposition subnet
            lesion, saliency = input[0], None
        elif len(input) == 3:
            lesion, *saliency = input
        else:
            raise ValueError(
                "input must be the lesion logits, alone or in a 1-tuple, or the tuple (lesion_logits, "
                f"foreground_saliency_logits, background_saliency_logits), got a sequence of {len(input)}"
            )
        names = ("lesion_logits", "foreground_saliency_logits", "background_saliency_logits")
        for name, logits in zip(names, [lesion] + (saliency or [])):
            if logits.shape != target.shape:
                raise ValueError(f"{name} shape {tuple(logits.shape)} differs from target shape {tuple(target.shape)}")

        target = target.float()
        terms = {
            "lesion_dice": self.dice(lesion.float(), target),
            "lesion_harmonic": self.harmonic(lesion, target),
        }
        weights = {"lesion_dice": self.lesion_weight, "lesion_harmonic": self.lesion_weight * self.harmonic_weight}
        if saliency is not None:
            foreground, background = saliency
            terms["foreground_saliency_dice"] = self.dice(foreground.float(), target)
            terms["background_saliency_dice"] = self.dice(background.float(), 1.0 - target)
            weights["foreground_saliency_dice"] = self.foreground_weight
            weights["background_saliency_dice"] = self.background_weight
        total = sum(weights[name] * value.double() for name, value in terms.items())
        self.last_terms = {name: value.detach() for name, value in terms.items()}
        return total

"""TaiChiNet's complementary loss: the negative path's output should be the complement of the positive one."""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss


class ComplementaryLoss(_Loss):
    """
    Complementary loss L_C(O_n, O_p), Eq. 18–19 of the TaiChiNet paper:

    .. math::

        L_C = \\sum_{(i,j)} \\tfrac{1}{2} (O_n - (1 - O_p))^2 + \\sum_{(i,j)} \\tfrac{1}{2} (O_p - (1 - O_n))^2
            = \\sum_{(i,j)} (O_n + O_p - 1)^2,

    i.e. the squared error between the negative (background) output O_n and the complement 1 - O_p of the
    positive (lesion) output; both halves of Eq. 18 are the same term. It is zero exactly when
    O_n = 1 - O_p.

        Wang et al., "TaiChiNet: Negative-positive cross-attention network for breast lesion segmentation
        in ultrasound images", IEEE JBHI 2024, Section IV-B, Eq. 18–19.

    Eq. 18 sums over pixels; ``reduction="mean"`` (default) averages instead, so that the term keeps the
    scale of the per-pixel cross-entropy and Dice terms it is added to in Eq. 13, whatever the image size.

    Example:
        >>> import torch
        >>> positive_logits = torch.randn(2, 1, 8, 8)
        >>> loss = ComplementaryLoss()
        >>> float(loss(-positive_logits, positive_logits))  # sigmoid(-z) = 1 - sigmoid(z)
        0.0
        >>> bool(loss(positive_logits, positive_logits) > 0)
        True
    """

    def __init__(self, sigmoid: bool = True, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        """
        Args:
            sigmoid: the inputs are logits and get a sigmoid (default); if False they are probabilities.
            reduction: {``"none"``, ``"mean"``, ``"sum"``} over all elements; ``"sum"`` is Eq. 18 as written.
        """
        super().__init__(reduction=LossReduction(reduction).value)
        self.sigmoid = sigmoid

    def forward(self, negative: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """
        Args:
            negative: output of the negative (background) path, (B, C, H[, W, D]).
            positive: output of the positive (lesion) path, same shape.

        Raises:
            ValueError: when the two shapes differ.
        """
        if negative.shape != positive.shape:
            raise ValueError(
                f"negative shape {tuple(negative.shape)} differs from positive shape {tuple(positive.shape)}"
            )
        negative, positive = negative.float(), positive.float()
        if self.sigmoid:
            # sigmoid(-z) is 1 - sigmoid(z) without the cancellation for large z
            negative_probability, positive_complement = torch.sigmoid(negative), torch.sigmoid(-positive)
        else:
            negative_probability, positive_complement = negative, 1.0 - positive
        loss = (negative_probability - positive_complement).square()
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss

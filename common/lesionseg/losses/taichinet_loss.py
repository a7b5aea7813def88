"""The total training loss of TaiChiNet, with its two-step easy-to-hard schedule."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch.nn.modules.loss import _Loss

from lesionseg.losses.complementary import ComplementaryLoss

MUTUAL_LEARNING_MODES = ("complementary", "consistent")


class TaiChiNetLoss(_Loss):
    """
    TaiChiNet's objective, Eq. 13–15 and 20–22 of the TaiChiNet paper:

    .. math::

        L = L_S(O_n, G_n) + L_S(O_p, G_p) + L_S(O_p, P_p) + [\\text{step} = 2] \\, L_C(O_n, O_p)

    with L_S = Dice + binary cross-entropy (``monai.losses.DiceCELoss``, Eq. 14–17), G_n = 1 - G_p,
    L_C the complementary loss (:class:`ComplementaryLoss`, Eq. 18) and P_p the part of the lesion the
    current step trains on: the easy part E_p in step 1 (Eq. 21), the hard part H_p in step 2 (Eq. 22).
    All weights are 1, as in the paper.

        Wang et al., "TaiChiNet: Negative-positive cross-attention network for breast lesion segmentation
        in ultrasound images", IEEE JBHI 2024, Section IV, Eq. 13–24, Table II.

    Readings of the paper:

    - Easy-to-hard (Section IV-C): the easy/hard terms supervise the positive path only (Eq. 20–22
      reformulate Eq. 15, the positive constraint); "L_S(O_n, G_n) of (14) is used in both steps, but the
      complementary loss L_C(O_n, O_p) only works in the 2nd step". The "+" of Eq. 20 joins the two steps
      in time, not in one sum. ``step`` is a public attribute that a training handler sets between epochs
      (``loss.step = 2``); the paper does not say when to switch.
    - ``target`` with 3 channels (G_p, E_p, H_p) runs that schedule. With 1 channel (G_p only, training
      "without the easy-to-hard strategy", Model 7 of Table I) the objective is Eq. 13 as written,
      L_S(O_n, G_n) + L_S(O_p, G_p) + L_C, whatever ``step``.
    - Eq. 16 is a Dice with squared terms in the denominator (``squared_pred=True``). Eq. 17 prints the
      cross-entropy with prediction and label swapped inside the logarithm; the standard binary
      cross-entropy is used. Eq. 17 and 18 sum over pixels; the cross-entropy and L_C are averaged over
      pixels instead (a sum would outweigh the Dice terms by the pixel count, ≈ 5·10⁴ at 224×224).
    - Dice over the whole batch (``batch=True``): BUSI's normal images have an empty G_p and, as the
      U-Net++ used to mine them can miss, E_p or H_p can be empty too; per image, the Dice loss of an empty
      mask is ≈ 1 with a vanishing gradient, a constant rather than a signal.
    - ``mutual="consistent"`` is the "consistent mutual learning" of Table II (Section V-E): "two paths,
      which both focus on the foreground lesions", so the second path is supervised with G_p instead of
      G_n and the mutual term is MSE(O_n, O_p) instead of L_C. ``mutual=None`` drops the mutual term
      (Models 2 and 4 of Table I).

    ``forward(input, target)`` takes the training output ``(positive_logits, negative_logits)`` of
    (B, 1, H, W) logits, or the positive logits alone (evaluation output; only the positive-path terms).
    It returns a scalar, as MONAI's ``SupervisedTrainer`` expects, computed in float64 (in float32 a mean
    cross-entropy over pixels overflows for diverged logits, |z| > 1e37); the unweighted terms of the last call
    are kept, detached, in :attr:`last_terms` for logging (keys ``"positive"``, ``"negative"``,
    ``"easy_part"`` or ``"hard_part"``, ``"mutual"``, each present when computed).

    Example:
        >>> import torch
        >>> loss = TaiChiNetLoss(step=1)
        >>> outputs = (torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16))
        >>> lesion = (torch.rand(2, 1, 16, 16) > 0.5).float()
        >>> easy = lesion * (torch.rand(2, 1, 16, 16) > 0.5)
        >>> target = torch.cat([lesion, easy, lesion - easy], dim=1)  # G_p, E_p, H_p
        >>> _ = loss(outputs, target)
        >>> sorted(loss.last_terms)
        ['easy_part', 'negative', 'positive']
        >>> loss.step = 2
        >>> _ = loss(outputs, target)
        >>> sorted(loss.last_terms)
        ['hard_part', 'mutual', 'negative', 'positive']
    """

    def __init__(
        self,
        step: int = 1,
        mutual: str | None = "complementary",
        squared_pred: bool = True,
        batch: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
    ) -> None:
        """
        Args:
            step: easy-to-hard step, 1 (easy part E_p, no mutual term) or 2 (hard part H_p, mutual term on).
            mutual: ``"complementary"`` (TaiChiNet: negative path against G_n, L_C of Eq. 18),
                ``"consistent"`` (Table II's Cons-ML: both paths against G_p, MSE(O_n, O_p)) or ``None``
                (no mutual term).
            squared_pred: Dice with squared terms in the denominator (Eq. 16), see ``DiceLoss``.
            batch: pool the Dice over the batch before dividing (see above), see ``DiceLoss``.
            smooth_nr: Dice numerator smoothing, see ``DiceLoss``.
            smooth_dr: Dice denominator smoothing, see ``DiceLoss``.

        Raises:
            ValueError: when ``step`` or ``mutual`` has an unknown value.
        """
        super().__init__()
        if mutual is not None and mutual not in MUTUAL_LEARNING_MODES:
            raise ValueError(f"mutual must be one of {MUTUAL_LEARNING_MODES} or None, got {mutual!r}")
        self.step = step
        self.mutual = mutual
        self.segmentation = DiceCELoss(
            sigmoid=True, squared_pred=squared_pred, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr
        )
        self.complementary = ComplementaryLoss()
        self.last_terms: dict[str, torch.Tensor] = {}

    @property
    def step(self) -> int:
        """Easy-to-hard step: 1 trains on the easy part E_p, 2 on the hard part H_p with the mutual term."""
        return self._step

    @step.setter
    def step(self, value: int) -> None:
        if isinstance(value, bool) or value not in (1, 2):
            raise ValueError(f"step must be 1 (easy part) or 2 (hard part), got {value!r}")
        self._step = int(value)

    def forward(self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(positive_logits, negative_logits)``, each (B, 1, H, W), or ``positive_logits`` alone.
            target: (B, 1, H, W) lesion mask G_p, or (B, 3, H, W) with channels (G_p, E_p, H_p); values
                in {0, 1}.

        Raises:
            ValueError: when ``input`` is a sequence not of two tensors, ``target`` has neither 1 nor 3
                channels, or the shapes of the outputs and the target do not match.
        """
        if isinstance(input, torch.Tensor):
            positive, negative = input, None
        elif len(input) == 2:
            positive, negative = input
        else:
            raise ValueError(
                "input must be the positive logits or the tuple (positive_logits, negative_logits), "
                f"got a sequence of {len(input)}"
            )
        if target.ndim < 2 or target.shape[1] not in (1, 3):
            raise ValueError(
                "target must have 1 channel (lesion mask G_p) or 3 channels (G_p, easy part E_p, hard part H_p), "
                f"got shape {tuple(target.shape)}"
            )
        expected_shape = (target.shape[0], 1, *target.shape[2:])
        for name, logits in (("positive_logits", positive), ("negative_logits", negative)):
            if logits is not None and tuple(logits.shape) != expected_shape:
                raise ValueError(
                    f"{name} must have shape {expected_shape} to match target {tuple(target.shape)}, "
                    f"got {tuple(logits.shape)}"
                )

        # in float64: a float32 cross-entropy term (a mean over pixels) and the sum of the terms overflow for
        # diverged logits (|z| > 1e37); at B x H x W elements this costs little next to the network
        target = target.double()
        lesion = target[:, :1]
        # without easy/hard masks, Eq. 13 as written: the mutual term is always on
        easy_to_hard = target.shape[1] == 3
        terms = {"positive": self.segmentation(positive.double(), lesion)}
        if easy_to_hard:
            part_name, part = ("easy_part", target[:, 1:2]) if self.step == 1 else ("hard_part", target[:, 2:3])
            terms[part_name] = self.segmentation(positive.double(), part)
        if negative is not None:
            negative_target = lesion if self.mutual == "consistent" else 1.0 - lesion
            terms["negative"] = self.segmentation(negative.double(), negative_target)
            if self.mutual is not None and (self.step == 2 or not easy_to_hard):
                if self.mutual == "complementary":
                    terms["mutual"] = self.complementary(negative, positive)
                else:
                    terms["mutual"] = F.mse_loss(torch.sigmoid(negative.double()), torch.sigmoid(positive.double()))
        self.last_terms = {name: value.detach() for name, value in terms.items()}
        return torch.stack([value.double() for value in terms.values()]).sum()

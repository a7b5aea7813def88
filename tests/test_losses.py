"""Losses of DC-Net (harmonic loss, Eq. 18/26/27) and TaiChiNet (Eq. 13-22), against literal transcriptions."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.losses import DiceLoss, FocalLoss

from lesionseg.losses import complementary, dcnet_loss, harmonic, taichinet_loss
from lesionseg.losses.complementary import ComplementaryLoss
from lesionseg.losses.dcnet_loss import DCNetLoss
from lesionseg.losses.harmonic import HarmonicLoss
from lesionseg.losses.taichinet_loss import TaiChiNetLoss

SHAPE = (2, 1, 8, 8)


def eq26(probability: torch.Tensor, label: torch.Tensor, gamma: float, sigma: float, alpha: float) -> torch.Tensor:
    """DC-Net Eq. 26 written out on probabilities, in float64, for binary labels."""
    p_t = torch.where(label == 1, probability, 1 - probability)
    alpha_t = torch.where(label == 1, torch.full_like(p_t, alpha), torch.full_like(p_t, 1 - alpha))
    return -alpha_t * (1 + sigma) * (1 - p_t) ** (gamma - 1) / (sigma + (1 - p_t) ** gamma) * torch.log(p_t)


def squared_dice(probability: torch.Tensor, label: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Dice loss with squared denominator (V-Net; TaiChiNet Eq. 16), pooled over the batch."""
    numerator = 2 * (probability * label).sum() + smooth
    return 1 - numerator / ((probability**2).sum() + (label**2).sum() + smooth)


def dice_bce(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """TaiChiNet's L_S (Eq. 14-17), with the standard binary cross-entropy averaged over pixels."""
    p = torch.sigmoid(logits)
    bce = -(label * torch.log(p) + (1 - label) * torch.log(1 - p)).mean()
    return squared_dice(p, label) + bce


@pytest.fixture
def logits_and_mask():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(SHAPE, generator=generator)
    mask = (torch.rand(SHAPE, generator=generator) > 0.6).float()
    return logits, mask


@pytest.mark.parametrize("module", [harmonic, complementary, dcnet_loss, taichinet_loss])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- harmonic loss


@pytest.mark.parametrize(
    "gamma, sigma, alpha", [(5.0, 1e-3, 0.25), (3.0, 1e-2, 0.75), (9.0, 1e-4, 0.1), (1.0, 0.5, 0.5)]
)
def test_harmonic_equals_eq26(logits_and_mask, gamma, sigma, alpha):
    logits, mask = logits_and_mask
    expected = eq26(torch.sigmoid(logits.double()), mask.double(), gamma, sigma, alpha)
    loss = HarmonicLoss(gamma=gamma, sigma=sigma, alpha=alpha, reduction="none")(logits, mask)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-7)


def test_harmonic_sigma_to_infinity_is_focal_with_gamma_minus_one(logits_and_mask):
    logits, mask = logits_and_mask
    p_t = torch.where(mask == 1, torch.sigmoid(logits.double()), 1 - torch.sigmoid(logits.double()))
    alpha_t = torch.where(mask == 1, 0.25, 0.75).double()
    focal_gamma_minus_one = -alpha_t * (1 - p_t) ** 4 * torch.log(p_t)  # P-3 with gamma = 5
    errors = [
        (HarmonicLoss(gamma=5.0, sigma=sigma, reduction="none")(logits, mask).double() - focal_gamma_minus_one)
        .abs()
        .max()
        for sigma in (1.0, 1e2, 1e4)
    ]
    assert errors[0] > errors[1] > errors[2]
    exact = HarmonicLoss(gamma=5.0, sigma=math.inf, reduction="none")(logits, mask)
    torch.testing.assert_close(exact.double(), focal_gamma_minus_one, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(exact, FocalLoss(gamma=4.0, alpha=0.25, reduction="none")(logits, mask))
    cross_entropy = HarmonicLoss(gamma=1.0, sigma=math.inf, alpha=None, reduction="none")(logits, mask)
    torch.testing.assert_close(cross_entropy, F.binary_cross_entropy_with_logits(logits, mask, reduction="none"))


@pytest.mark.parametrize("gamma", [2.0, 5.0, 9.0])
def test_harmonic_sigma_to_zero_pointwise_limit(gamma):
    # p_t in [0.05, 0.6]: (1 - p_t)^gamma >= 0.4^9 = 2.6e-4, far above sigma
    p_t = torch.linspace(0.05, 0.6, 12, dtype=torch.float64).reshape(1, 1, 3, 4)
    logits = torch.logit(p_t).float()
    mask = torch.ones_like(logits)
    limit = -torch.log(p_t) / (1 - p_t)  # P-2, independent of gamma
    loss = HarmonicLoss(gamma=gamma, sigma=1e-10, alpha=None, reduction="none")(logits, mask)
    torch.testing.assert_close(loss.double(), limit, rtol=1e-5, atol=0.0)
    # the limit is not uniform: where (1 - p_t)^gamma << sigma (easy pixels) the loss vanishes, the limit -> 1
    easy_pixel = torch.full((1, 1, 1, 1), 12.0)  # p_t = 1 - 6e-6
    easy = HarmonicLoss(gamma=gamma, sigma=1e-6, alpha=None)(easy_pixel, torch.ones_like(easy_pixel))
    assert easy.item() < 1e-3


def test_harmonic_p4_p5_regimes():
    sigma, gamma = 1e-3, 5.0
    loss = HarmonicLoss(gamma=gamma, sigma=sigma, alpha=None, reduction="none")
    # P-4, q^gamma >> sigma (q = 0.8): -(1 + sigma) log(p_t) / q
    q = torch.tensor(0.8, dtype=torch.float64)
    value = loss(torch.logit(1 - q).float().reshape(1, 1, 1, 1), torch.ones(1, 1, 1, 1)).double()
    torch.testing.assert_close(value.squeeze(), -(1 + sigma) * torch.log(1 - q) / q, rtol=1e-2, atol=0.0)
    # P-5 (as corrected), q^gamma << sigma (q = 0.05): -((1 + sigma) / sigma) q^(gamma - 1) log(p_t)
    q = torch.tensor(0.05, dtype=torch.float64)
    value = loss(torch.logit(1 - q).float().reshape(1, 1, 1, 1), torch.ones(1, 1, 1, 1)).double()
    p5 = -(1 + sigma) / sigma * q ** (gamma - 1) * torch.log(1 - q)
    torch.testing.assert_close(value.squeeze(), p5, rtol=1e-3, atol=0.0)


def test_harmonic_alpha_weights_lesion_and_background(logits_and_mask):
    logits, _ = logits_and_mask
    ones, zeros = torch.ones_like(logits), torch.zeros_like(logits)
    weighted = HarmonicLoss(alpha=0.25, reduction="none")
    unweighted = HarmonicLoss(alpha=None, reduction="none")
    torch.testing.assert_close(weighted(logits, ones), 0.25 * unweighted(logits, ones))
    torch.testing.assert_close(weighted(logits, zeros), 0.75 * unweighted(logits, zeros))
    # y = 0 with logit z is y = 1 with logit -z, and alpha swaps with 1 - alpha
    torch.testing.assert_close(weighted(logits, zeros), HarmonicLoss(alpha=0.75, reduction="none")(-logits, ones))


@pytest.mark.parametrize("alpha, threshold", [(0.25, 0.755), (0.5, 0.5)])
def test_harmonic_decision_threshold_of_the_posterior(alpha, threshold):
    """For a pixel that is lesion with probability pi, the expected loss pi * L(z, 1) + (1 - pi) * L(z, 0) is
    minimised by a negative logit (predicted background) until pi passes a threshold, where the minimiser jumps
    across 0: 0.755 at the paper's alpha = 0.25 (why short runs under-segment, see the DC-Net model card), 0.5
    at alpha = 0.5, where the loss is symmetric."""
    loss = HarmonicLoss(alpha=alpha, reduction="none")
    logits = torch.linspace(-8.0, 8.0, 16001, dtype=torch.float64).reshape(1, 1, 1, -1)
    lesion, background = (loss(logits, torch.full_like(logits, y)).flatten() for y in (1.0, 0.0))

    def decision(pi: float) -> float:
        return logits.flatten()[(pi * lesion + (1 - pi) * background).argmin()].item()

    below, above = decision(threshold - 0.006), decision(threshold + 0.006)
    assert below < -1.0 and above > 1.0, (below, above)  # a jump (p from < 0.27 to > 0.73), not a crossing


def test_harmonic_soft_target_interpolates_the_two_labels(logits_and_mask):
    logits, _ = logits_and_mask
    soft = torch.rand(SHAPE, generator=torch.Generator().manual_seed(1))
    loss = HarmonicLoss(reduction="none")
    expected = soft * loss(logits, torch.ones_like(soft)) + (1 - soft) * loss(logits, torch.zeros_like(soft))
    torch.testing.assert_close(loss(logits, soft), expected)


@pytest.mark.parametrize("sigma", [1e-3, 1e-12, math.inf])
@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_harmonic_finite_loss_and_gradient_at_extreme_logits(sigma, gamma):
    logits = torch.tensor([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4]).reshape(1, 1, 1, 7).repeat(1, 1, 2, 1)
    logits.requires_grad_(True)
    mask = torch.tensor([0.0, 1.0]).reshape(1, 1, 2, 1).expand(1, 1, 2, 7)
    loss = HarmonicLoss(gamma=gamma, sigma=sigma, reduction="none")(logits, mask)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    # a confidently wrong pixel keeps a gradient towards the label
    assert logits.grad[0, 0, 1, 1] < 0 and logits.grad[0, 0, 0, 5] > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_harmonic_finite_in_low_precision_and_autocast(dtype):
    conv = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(100.0)
        conv.bias.zero_()
    image = torch.tensor([-1.0, -0.3, 0.0, 0.3, 1.0]).reshape(1, 1, 1, 5)
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]).reshape(1, 1, 1, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(image)  # +-100 in bfloat16
        loss = HarmonicLoss()(logits, mask)
    loss.backward()
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0
    half = torch.tensor([-100.0, 100.0], dtype=dtype).reshape(1, 1, 1, 2).requires_grad_(True)
    value = HarmonicLoss()(half, torch.ones(1, 1, 1, 2))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(half.grad).all()


def test_harmonic_reductions(logits_and_mask):
    logits, mask = logits_and_mask
    per_pixel = HarmonicLoss(reduction="none")(logits, mask)
    assert per_pixel.shape == SHAPE
    torch.testing.assert_close(HarmonicLoss(reduction="sum")(logits, mask), per_pixel.sum())
    torch.testing.assert_close(HarmonicLoss()(logits, mask), per_pixel.mean())


def test_harmonic_clamp_zeroes_gradient_of_clamped_pixels(logits_and_mask):
    logits, mask = logits_and_mask
    low, high = 1e-3, 0.5
    per_pixel = HarmonicLoss(reduction="none")(logits, mask).detach()
    clamped = (per_pixel < low) | (per_pixel > high)
    assert clamped.any() and (~clamped).any()
    leaf = logits.clone().requires_grad_(True)
    loss = HarmonicLoss(reduction="none", clamp=(low, high))(leaf, mask)
    torch.testing.assert_close(loss.detach(), per_pixel.clamp(low, high))
    loss.sum().backward()
    assert (leaf.grad[clamped] == 0).all() and (leaf.grad[~clamped] != 0).all()
    # without the clamp, the hard pixels (loss above high) do get a gradient
    unclamped = logits.clone().requires_grad_(True)
    HarmonicLoss(reduction="sum")(unclamped, mask).backward()
    assert (unclamped.grad[per_pixel > high] != 0).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gamma": 0.5}, "gamma"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"alpha": 1.5}, "alpha"),
        ({"clamp": (0.5, 0.1)}, "clamp"),
        ({"reduction": "median"}, "median"),
    ],
)
def test_harmonic_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HarmonicLoss(**kwargs)


def test_harmonic_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="target shape"):
        HarmonicLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


@settings(max_examples=40, deadline=None)
@given(
    logit=st.floats(-1e4, 1e4, allow_nan=False),
    label=st.floats(0.0, 1.0),
    gamma=st.floats(1.0, 9.0),
    sigma=st.one_of(st.floats(1e-6, 1e3), st.just(math.inf)),
)
def test_harmonic_property_finite_and_non_negative(logit, label, gamma, sigma):
    leaf = torch.tensor([[[[logit]]]], requires_grad=True)
    loss = HarmonicLoss(gamma=gamma, sigma=sigma)(leaf, torch.tensor([[[[label]]]]))
    loss.backward()
    assert torch.isfinite(loss) and loss >= 0 and torch.isfinite(leaf.grad).all()


@settings(max_examples=40, deadline=None)
@given(
    logits=st.lists(st.floats(-40.0, 40.0, allow_nan=False), min_size=2, max_size=2),
    label=st.sampled_from([0.0, 1.0]),
    gamma=st.floats(1.0, 9.0),
    sigma=st.floats(1e-4, 1e2),
)
def test_harmonic_property_decreases_with_p_t(logits, label, gamma, sigma):
    signed = torch.tensor(sorted(logits)).reshape(1, 1, 1, 2)  # z_t ascending, so p_t ascending
    z = signed if label == 1.0 else -signed
    loss = HarmonicLoss(gamma=gamma, sigma=sigma, reduction="none")(z, torch.full_like(z, label)).flatten()
    assert loss[0] >= loss[1] * (1 - 1e-5)


# ---------------------------------------------------------------- DC-Net total loss


def dcnet_outputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple((2 * torch.randn(SHAPE, generator=generator)).requires_grad_(True) for _ in range(3))


def test_dcnet_loss_equals_eq18_eq27(logits_and_mask):
    _, mask = logits_and_mask
    lesion, foreground, background = dcnet_outputs()
    dice = DiceLoss(sigmoid=True, squared_pred=True, batch=True)
    harmonic_term = eq26(torch.sigmoid(lesion.double()), mask.double(), 5.0, 1e-3, 0.25).mean()
    expected = (
        0.5 * dice(foreground, mask)
        + 0.5 * dice(background, 1 - mask)
        + 1.0 * (dice(lesion, mask) + 10.0 * harmonic_term)
    )
    loss = DCNetLoss()
    total = loss((lesion, foreground, background), mask)
    assert total.shape == ()
    torch.testing.assert_close(total.double(), expected.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.last_terms["lesion_harmonic"].double(), harmonic_term, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss.last_terms["background_saliency_dice"], dice(background, 1 - mask).detach())
    assert all(not term.requires_grad for term in loss.last_terms.values())
    total.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (lesion, foreground, background))


def test_dcnet_loss_weights_and_tensor_input(logits_and_mask):
    _, mask = logits_and_mask
    lesion, foreground, background = dcnet_outputs()
    loss = DCNetLoss(weights=(0.2, 0.3, 2.0), harmonic_weight=4.0, gamma=3.0, sigma=1e-2, alpha=0.5)
    total = loss([lesion, foreground, background], mask)
    terms = loss.last_terms
    expected = 0.2 * terms["foreground_saliency_dice"] + 0.3 * terms["background_saliency_dice"]
    expected = expected + 2.0 * (terms["lesion_dice"] + 4.0 * terms["lesion_harmonic"])
    torch.testing.assert_close(total.detach(), expected.double())  # the total is summed in float64
    lesion_only = 2.0 * (terms["lesion_dice"] + 4.0 * terms["lesion_harmonic"])
    for lesion_input in (lesion, (lesion,)):
        torch.testing.assert_close(loss(lesion_input, mask).detach(), lesion_only, check_dtype=False)
        assert set(loss.last_terms) == {"lesion_dice", "lesion_harmonic"}


def test_dcnet_loss_handles_empty_masks_and_autocast():
    lesion, foreground, background = dcnet_outputs()
    empty = torch.zeros(SHAPE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total = DCNetLoss()((lesion.bfloat16(), foreground.bfloat16(), background.bfloat16()), empty)
    total.backward()
    assert total.dtype == torch.float64 and torch.isfinite(total)
    assert all(torch.isfinite(t.grad).all() for t in (lesion, foreground, background))


def test_dcnet_loss_training_lowers_it(logits_and_mask):
    _, mask = logits_and_mask
    outputs = tuple(torch.zeros(SHAPE, requires_grad=True) for _ in range(3))
    optimizer = torch.optim.Adam(outputs, lr=0.1)
    loss = DCNetLoss()
    values = []
    for _ in range(20):
        optimizer.zero_grad()
        value = loss(outputs, mask)
        value.backward()
        optimizer.step()
        values.append(value.item())
    assert values[-1] < 0.5 * values[0]


def test_dcnet_loss_rejects_bad_input():
    lesion, foreground, _ = dcnet_outputs()
    mask = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="sequence of 2"):
        DCNetLoss()((lesion, foreground), mask)
    with pytest.raises(ValueError, match="foreground_saliency_logits shape"):
        DCNetLoss()((lesion, foreground[:, :, :4], foreground), mask)
    with pytest.raises(ValueError, match="weights"):
        DCNetLoss(weights=(0.5, 1.0))
    with pytest.raises(ValueError, match="harmonic_weight"):
        DCNetLoss(harmonic_weight=-1.0)


# ---------------------------------------------------------------- complementary loss


def test_complementary_loss_zero_for_complements_positive_otherwise():
    generator = torch.Generator().manual_seed(2)
    positive = 4 * torch.randn(SHAPE, generator=generator)
    loss = ComplementaryLoss()
    assert loss(-positive, positive).item() == 0.0
    probabilities = torch.rand(SHAPE, generator=generator)
    assert ComplementaryLoss(sigmoid=False)(1 - probabilities, probabilities).item() == 0.0
    negative = 4 * torch.randn(SHAPE, generator=generator)
    assert loss(negative, positive).item() > 0.0


def test_complementary_loss_equals_eq18():
    generator = torch.Generator().manual_seed(3)
    negative, positive = (torch.randn(SHAPE, generator=generator) for _ in range(2))
    o_n, o_p = torch.sigmoid(negative), torch.sigmoid(positive)
    eq18 = (0.5 * (o_n - (1 - o_p)) ** 2).sum() + (0.5 * (o_p - (1 - o_n)) ** 2).sum()
    torch.testing.assert_close(ComplementaryLoss(reduction="sum")(negative, positive), eq18)
    torch.testing.assert_close(ComplementaryLoss()(negative, positive), eq18 / o_n.numel())
    assert ComplementaryLoss(reduction="none")(negative, positive).shape == SHAPE
    with pytest.raises(ValueError, match="negative shape"):
        ComplementaryLoss()(negative, positive[:, :, :4])


# ---------------------------------------------------------------- TaiChiNet total loss


@pytest.fixture
def taichinet_batch():
    generator = torch.Generator().manual_seed(4)
    positive = (2 * torch.randn(SHAPE, generator=generator)).requires_grad_(True)
    negative = (2 * torch.randn(SHAPE, generator=generator)).requires_grad_(True)
    lesion = (torch.rand(SHAPE, generator=generator) > 0.5).float()
    easy = lesion * (torch.rand(SHAPE, generator=generator) > 0.5).float()
    hard = lesion - easy
    return positive, negative, lesion, easy, hard


def mse_complement(negative: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    return ((torch.sigmoid(negative) - (1 - torch.sigmoid(positive))) ** 2).mean()


def test_taichinet_loss_step1_and_step2_equal_eq13_eq20_22(taichinet_batch):
    positive, negative, lesion, easy, hard = taichinet_batch
    target = torch.cat([lesion, easy, hard], dim=1)
    loss = TaiChiNetLoss(step=1)
    step1 = dice_bce(negative, 1 - lesion) + dice_bce(positive, lesion) + dice_bce(positive, easy)
    torch.testing.assert_close(loss((positive, negative), target), step1, check_dtype=False)
    assert set(loss.last_terms) == {"positive", "negative", "easy_part"}
    loss.step = 2
    step2 = (
        dice_bce(negative, 1 - lesion)
        + dice_bce(positive, lesion)
        + dice_bce(positive, hard)
        + mse_complement(negative, positive)
    )
    total = loss((positive, negative), target)
    torch.testing.assert_close(total, step2, check_dtype=False)
    total.backward()
    assert positive.grad.abs().sum() > 0 and negative.grad.abs().sum() > 0


def test_taichinet_loss_mutual_term_reaches_both_paths(taichinet_batch):
    positive, negative, lesion, *_ = taichinet_batch
    loss = TaiChiNetLoss(step=2)
    loss((positive, negative), lesion)
    mutual = loss.last_terms["mutual"]
    torch.testing.assert_close(mutual, mse_complement(negative, positive).detach())
    complement = ComplementaryLoss()(negative, positive)
    complement.backward()
    assert positive.grad.abs().sum() > 0 and negative.grad.abs().sum() > 0


@pytest.mark.parametrize("step", [1, 2])
def test_taichinet_loss_single_channel_target_is_plain_eq13(taichinet_batch, step):
    positive, negative, lesion, *_ = taichinet_batch
    eq13 = dice_bce(negative, 1 - lesion) + dice_bce(positive, lesion) + mse_complement(negative, positive)
    torch.testing.assert_close(TaiChiNetLoss(step=step)((positive, negative), lesion), eq13, check_dtype=False)


def test_taichinet_loss_consistent_and_no_mutual_learning(taichinet_batch):
    positive, negative, lesion, easy, hard = taichinet_batch
    target = torch.cat([lesion, easy, hard], dim=1)
    consistent = (
        dice_bce(negative, lesion)
        + dice_bce(positive, lesion)
        + dice_bce(positive, hard)
        + ((torch.sigmoid(negative) - torch.sigmoid(positive)) ** 2).mean()
    )
    torch.testing.assert_close(
        TaiChiNetLoss(step=2, mutual="consistent")((positive, negative), target), consistent, check_dtype=False
    )
    independent = dice_bce(negative, 1 - lesion) + dice_bce(positive, lesion)
    torch.testing.assert_close(TaiChiNetLoss(mutual=None)((positive, negative), lesion), independent, check_dtype=False)


def test_taichinet_loss_positive_logits_alone(taichinet_batch):
    positive, _, lesion, easy, hard = taichinet_batch
    loss = TaiChiNetLoss(step=2)
    torch.testing.assert_close(loss(positive, lesion), dice_bce(positive, lesion), check_dtype=False)
    target = torch.cat([lesion, easy, hard], dim=1)
    torch.testing.assert_close(
        loss(positive, target), dice_bce(positive, lesion) + dice_bce(positive, hard), check_dtype=False
    )
    assert set(loss.last_terms) == {"positive", "hard_part"}


def test_taichinet_loss_training_lowers_it(taichinet_batch):
    *_, lesion, easy, hard = taichinet_batch
    outputs = (torch.zeros(SHAPE, requires_grad=True), torch.zeros(SHAPE, requires_grad=True))
    optimizer = torch.optim.Adam(outputs, lr=0.1)
    loss = TaiChiNetLoss(step=2)
    target = torch.cat([lesion, easy, hard], dim=1)
    values = []
    for _ in range(30):
        optimizer.zero_grad()
        value = loss(outputs, target)
        value.backward()
        optimizer.step()
        values.append(value.item())
    assert values[-1] < 0.5 * values[0]


@pytest.mark.parametrize("step", [0, 3, "2", True, 1.5])
def test_taichinet_loss_rejects_bad_step(step):
    with pytest.raises(ValueError, match="step must be 1"):
        TaiChiNetLoss(step=step)
    loss = TaiChiNetLoss()
    with pytest.raises(ValueError, match="step must be 1"):
        loss.step = step
    assert loss.step == 1


def test_taichinet_loss_rejects_bad_target_and_input(taichinet_batch):
    positive, negative, lesion, easy, _ = taichinet_batch
    loss = TaiChiNetLoss()
    with pytest.raises(ValueError, match="1 channel .* or 3 channels"):
        loss((positive, negative), torch.cat([lesion, easy], dim=1))
    with pytest.raises(ValueError, match="negative_logits must have shape"):
        loss((positive, negative[:, :, :4]), lesion)
    with pytest.raises(ValueError, match="sequence of 3"):
        loss((positive, negative, negative), lesion)
    with pytest.raises(ValueError, match="mutual"):
        TaiChiNetLoss(mutual="symmetric")

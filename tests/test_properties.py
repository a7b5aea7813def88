"""Property-based tests (hypothesis): readers on any pixels and any bytes, losses and metrics on any input,
extreme values included."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from lesionseg.data.io import DataError, load_pixels, read_image, read_mask
from lesionseg.losses import ComplementaryLoss, DCNetLoss, HarmonicLoss, TaiChiNetLoss
from lesionseg.metrics.per_image import OVERLAP_METRICS, compute_batch_metrics

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SIDES = st.integers(1, 12)


def _shape(channels: int | None = None):
    return st.tuples(SIDES, SIDES).map(lambda hw: hw if channels is None else (*hw, channels))


# ------------------------------------------------------------------------------------------------- readers


@FAST
@given(pixels=st.one_of(arrays(np.uint8, _shape()), arrays(np.uint16, _shape())))
def test_gray_png_round_trips_exactly_in_row_column_order(tmp_path_factory, pixels):
    path = tmp_path_factory.mktemp("gray") / "image.png"
    Image.fromarray(pixels).save(path)
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == pixels.shape
    assert np.array_equal(image, pixels.astype(np.float32))
    assert np.array_equal(read_mask(path), (pixels > 0).astype(np.uint8))


@FAST
@given(pixels=arrays(np.uint8, _shape(4)))
def test_rgba_image_is_luma_and_mask_is_painted_non_black(tmp_path_factory, pixels):
    path = tmp_path_factory.mktemp("rgba") / "image.png"
    Image.fromarray(pixels, "RGBA").save(path)
    rgb = pixels[..., :3].astype(np.float64)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert np.allclose(read_image(path), luma, atol=1e-3)
    expected = (pixels[..., :3] > 0).any(axis=-1) & (pixels[..., 3] > 0)
    assert np.array_equal(read_mask(path), expected.astype(np.uint8))


@FAST
@given(data=st.binary(min_size=1, max_size=300), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".nii"]))
def test_any_bytes_give_an_image_or_a_data_error_naming_the_file(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("bytes") / f"file{suffix}"
    path.write_bytes(data)
    try:
        pixels = load_pixels(path)
    except DataError as error:
        assert str(error).startswith(f"{path}: ") and error.path == str(path)
    else:
        assert pixels.ndim in (2, 3) and pixels.size > 0


@FAST
@given(pixels=arrays(np.uint8, _shape()), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_a_truncated_png_is_a_data_error_or_its_intact_pixels_never_wrong_ones(tmp_path_factory, pixels, cut):
    folder = tmp_path_factory.mktemp("cut")
    Image.fromarray(pixels).save(folder / "good.png")
    data = (folder / "good.png").read_bytes()
    path = folder / "cut.png"
    path.write_bytes(data[: int(cut * len(data))])
    try:
        image = read_image(path)
    except DataError as error:
        assert str(error).startswith(f"{path}: ")
    else:  # cut only where decoders need nothing more (the end chunk, a checksum): the pixels are whole
        assert np.array_equal(image, pixels.astype(np.float32))


# -------------------------------------------------------------------------------------------------- losses

# every float32 value, the extremes included (but no NaN/Inf: those are refused by the readers upstream)
LOGITS = st.floats(width=32, allow_nan=False, allow_infinity=False)
LABELS = st.sampled_from([0.0, 1.0])


def _tensor(values, shape=(1, 1, 2, 3)):
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


@FAST
@given(logits=st.lists(LOGITS, min_size=6, max_size=6), labels=st.lists(LABELS, min_size=6, max_size=6),
       gamma=st.floats(1.0, 8.0), sigma=st.one_of(st.floats(1e-6, 1e3), st.just(math.inf)))
def test_harmonic_loss_and_gradient_are_finite_for_any_float32_logits(logits, labels, gamma, sigma):
    logits = _tensor(logits).requires_grad_()
    loss = HarmonicLoss(gamma=gamma, sigma=sigma)(logits, _tensor(labels))
    loss.backward()
    assert torch.isfinite(loss) and loss >= 0 and torch.isfinite(logits.grad).all()


@FAST
@given(logits=st.lists(st.floats(-60, 60), min_size=6, max_size=6), labels=st.lists(LABELS, min_size=6, max_size=6))
def test_harmonic_at_gamma_one_sigma_infinite_is_the_literal_cross_entropy(logits, labels):
    z, y = _tensor(logits).double(), _tensor(labels).double()
    literal = (y * F.softplus(-z) + (1 - y) * F.softplus(z)).mean()  # -y log s(z) - (1 - y) log(1 - s(z))
    loss = HarmonicLoss(gamma=1.0, sigma=math.inf, alpha=None)(z, y)
    assert torch.allclose(loss.double(), literal, rtol=1e-5, atol=1e-6)


@FAST
@given(logits=st.lists(LOGITS, min_size=6, max_size=6), labels=st.lists(LABELS, min_size=6, max_size=6))
def test_harmonic_without_alpha_is_symmetric_in_the_two_classes(logits, labels):
    z, y = _tensor(logits), _tensor(labels)
    loss = HarmonicLoss(alpha=None, reduction="none")
    assert torch.equal(loss(z, y), loss(-z, 1 - y))


@FAST
@given(values=st.lists(LOGITS, min_size=18, max_size=18), labels=st.lists(LABELS, min_size=6, max_size=6),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
# found by hypothesis: -1.63e38 and -3.4e38 for lesion pixels gave a NaN gradient (the harmonic loss's modulating
# factor's derivative times -log p_t overflowed float32), and a lesion map of such logits an infinite total
@example(values=[-88.0, 88.0, -3.4e38, -1e4, 1e4, -1e4] + [-1.63e38, 20.0, 1.63e38, 88.0, -88.0, -88.0] + [0.0] * 6,
         labels=[1.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float32)
@example(values=[-3.4e38] * 6 + [3.4e38] * 6 + [-1.63e38] * 6, labels=[1.0] * 6, dtype=torch.float32)
def test_composite_losses_are_finite_with_finite_gradients_for_any_logits(values, labels, dtype):
    largest = torch.finfo(dtype).max  # the extremes of each precision, not beyond (that would be infinity)
    outputs = [_tensor(values[6 * k : 6 * k + 6]).clamp(-largest, largest).to(dtype).requires_grad_() for k in range(3)]
    target = _tensor(labels)
    dcnet = DCNetLoss()(tuple(outputs), target)
    easy = target * _tensor([1, 0, 1, 0, 1, 0])
    taichinet = TaiChiNetLoss(step=2)((outputs[0], outputs[1]), torch.cat([target, easy, target - easy], dim=1))
    mutual = ComplementaryLoss()(outputs[1], outputs[0])
    (dcnet + taichinet + mutual).backward()
    for value in (dcnet, taichinet, mutual):
        assert torch.isfinite(value) and value >= 0
    for output in outputs:
        assert torch.isfinite(output.grad.float()).all()


@FAST
@given(logits=st.lists(st.floats(-1e6, 1e6), min_size=6, max_size=6))
def test_complementary_loss_is_zero_exactly_for_complementary_outputs(logits):
    z = _tensor(logits)
    assert float(ComplementaryLoss()(-z, z)) == 0.0


# ------------------------------------------------------------------------------------------------- metrics


@settings(max_examples=60, deadline=None)
@given(gt=arrays(np.bool_, st.tuples(SIDES, SIDES)), pred_seed=st.integers(0, 2**16), fill=st.sampled_from([
    "random", "empty", "full", "same"]))
def test_metrics_are_finite_or_nan_exactly_where_documented(gt, pred_seed, fill):
    pred = {
        "random": np.random.default_rng(pred_seed).random(gt.shape) > 0.5,
        "empty": np.zeros_like(gt),
        "full": np.ones_like(gt),
        "same": gt.copy(),
    }[fill]
    for empty_distance in ("nan", "diagonal"):
        (metrics,) = compute_batch_metrics(pred[None, None], gt[None, None], spacing=(0.1, 0.2),
                                           empty_distance=empty_distance)
        gt_empty, pred_empty, gt_full = not gt.any(), not pred.any(), gt.all()
        nan_allowed = {
            "precision": gt_empty and pred_empty,
            "sensitivity": gt_empty,
            "specificity": bool(gt_full),
        }
        for name in OVERLAP_METRICS:
            value = metrics[name]
            if math.isnan(value):
                assert nan_allowed.get(name, False), (name, gt.astype(int), pred.astype(int))
            else:
                assert 0.0 <= value <= 1.0, (name, value)
        one_empty = gt_empty != pred_empty
        for name in ("hd95", "hd95_mm"):
            value = metrics[name]
            if empty_distance == "nan" and one_empty:
                assert math.isnan(value)
            else:
                assert math.isfinite(value) and value >= 0, (name, value)

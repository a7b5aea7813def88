"""bfloat16 numerics on the CPU (``precision: bf16``): training losses and predicted masks against float32, and
the two blocks whose sums grow with the image, CCF's channel correlation (DC-Net) and C²-attention's scores
(TaiChiNet), at the published widths and 256 x 256.

bfloat16 keeps float32's 8-bit exponent, so its overflow and underflow thresholds are float32's (3.4e38 and
1.2e-38); what it loses is significand: 8 bits, a unit roundoff u = 2^-9 (round to nearest). Autocast rounds
the inputs and weights of every convolution and matrix product to bfloat16, accumulates in float32 and
rounds the result; the tolerances below follow from that. The CUDA fp16 path also needs values below float16's
65504, which the CCF test checks too.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lesionseg.data.phantoms import make_phantom
from lesionseg.engines import AutocastInferer, Precision, PrimaryOutputInferer
from lesionseg.losses import DCNetLoss, TaiChiNetLoss
from lesionseg.networks.blocks.c2_attention import ChannelToSpatialCrossAttention
from lesionseg.networks.blocks.ccf import CrossCorrelationFusion
from lesionseg.networks.nets import DCNet, TaiChiNet

U = 2.0**-9  # bfloat16's unit roundoff
FLOAT16_MAX = torch.finfo(torch.float16).max
SIZE = 64
WIDTHS = (8, 16, 32, 64, 128)


def _phantoms(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    phantoms = [make_phantom(rng, SIZE, SIZE, ("benign", "malignant")[i % 2]) for i in range(count)]
    images = torch.tensor(np.stack([p.image for p in phantoms])[:, None] / 255.0, dtype=torch.float32)
    masks = torch.tensor(np.stack([p.mask for p in phantoms])[:, None], dtype=torch.float32)
    return images, masks


def _setup(name: str):
    torch.manual_seed(0)
    # the bundles' learning rates
    if name == "dcnet":
        return DCNet(features=WIDTHS), DCNetLoss(), 3e-4, (lambda masks: masks)
    # step 1 with the complementary loss: the ground truth stands in for the easy part, no hard part
    network = TaiChiNet(features=WIDTHS)
    return network, TaiChiNetLoss(step=1), 1e-4, (lambda m: torch.cat([m, m, torch.zeros_like(m)], 1))


def _matrix_products(network: torch.nn.Module) -> int:
    return sum(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)) for m in network.modules())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcnet", "taichinet"])
def test_bf16_training_losses_and_masks_match_fp32(name):
    """Training: from the same weights and batches, five bf16 steps give losses within τ of fp32's, with

        τ = 2u · sqrt(L)   (L matrix-product layers; 3.7 % for DC-Net's 90, 2.9 % for TaiChiNet's 56).

    Each layer rounds its inputs and weights (2u relative) and accumulates in float32; over L layers the
    roundings are independent and add like a random walk, sqrt(L) of them. The loss, computed in float32
    from float32 logits, changes by at most the logits' relative change for these losses (Dice, BCE and
    Eq. 26 have |z ∂ℓ/∂z| ≲ ℓ for a loss ℓ at the logits of the first steps). From the second step on the weights differ
    too: Adam moves every weight by about the learning rate whatever the gradient's size, so a weight whose
    gradient sign differs between the precisions (gradients near 0) ends up 2·lr apart per step. At the
    bundles' learning rates (DC-Net 3e-4, TaiChiNet 1e-4) five steps stay within τ (measured: 1.0 % and
    0.08 %); at 1e-3 DC-Net's losses part by 5 % within four steps, the trajectories then diverge as any
    two runs of a chaotic optimisation do, and are compared by accuracy, not step by step.

    Prediction: after 60 fp32 steps (the last 55 at 1e-3, to get a network that segments) the network
    segments held-out phantoms in eval mode in fp32 and bf16 (the bundles' AutocastInferer). A pixel
    flips only where its fp32 logit lies within bf16's logit error of the threshold; the logits cross the
    threshold at the lesion borders, and the masks agree to Dice ≥ 0.95: a one-pixel band is 4/d of a lesion d
    pixels across, and only part of it flips (measured
    Dice 0.978 for DC-Net, 0.989 for TaiChiNet).
    """
    base, loss_function, lr, target_of = _setup(name)
    images, masks = _phantoms(16, seed=0)
    train_images, train_masks, test_images = images[:12], masks[:12], images[12:]
    tolerance = 2 * U * math.sqrt(_matrix_products(base))
    losses, networks = {}, {}
    for precision in ("fp32", "bf16"):
        network = copy.deepcopy(base).train()
        optimizer = torch.optim.Adam(network.parameters(), lr=lr)
        inferer = AutocastInferer(Precision(precision, "cpu"))
        losses[precision] = []
        for step in range(5):
            batch = slice(4 * (step % 3), 4 * (step % 3) + 4)
            optimizer.zero_grad()
            outputs = inferer(train_images[batch], network)
            assert all(o.dtype == torch.float32 for o in outputs)
            loss = loss_function(outputs, target_of(train_masks[batch]))
            assert loss.dtype == torch.float64 and torch.isfinite(loss)  # float32 terms, summed in float64
            loss.backward()
            optimizer.step()
            losses[precision].append(loss.item())
        networks[precision] = (network, optimizer)
    differences = [abs(b - a) / a for a, b in zip(losses["fp32"], losses["bf16"])]
    assert max(differences) <= tolerance, f"{name}: relative loss differences {differences}, tolerance {tolerance:.4f}"

    network, optimizer = networks["fp32"]
    for group in optimizer.param_groups:
        group["lr"] = 1e-3
    for step in range(5, 60):
        batch = slice(4 * (step % 3), 4 * (step % 3) + 4)
        optimizer.zero_grad()
        loss_function(network(train_images[batch]), target_of(train_masks[batch])).backward()
        optimizer.step()
    network.eval()
    with torch.no_grad():
        logits = {p: AutocastInferer(Precision(p, "cpu"), PrimaryOutputInferer())(test_images, network)
                  for p in ("fp32", "bf16")}
    fp32_mask, bf16_mask = logits["fp32"] > 0, logits["bf16"] > 0
    assert fp32_mask.any(), "the network found no lesion: train it longer"
    dice = 2 * (fp32_mask & bf16_mask).sum().item() / (fp32_mask.sum() + bf16_mask.sum()).item()
    assert dice >= 0.95, f"{name}: Dice between bf16 and fp32 masks {dice:.4f}"



# the CCFs of DC-Net at the published widths (32, 64, 128, 256, 512) for a 256 x 256 input: (C, H = W) of the
# encoder side; the decoder side comes at half the size
CCF_LEVELS = [(256, 32), (128, 64), (64, 128), (32, 256)]


@pytest.mark.parametrize("channels, size", CCF_LEVELS)
def test_ccf_correlation_in_bf16_at_full_width_and_256(channels, size):
    """M = X_E X̂_Dᵀ / N / (rms(X_E) rms(X̂_D)) (Eq. 13, normalised) and ω = W vec(M) + b (Eq. 14) under bf16
    autocast, for features like
    BatchNorm + ReLU outputs (half-normal) and 16 times larger ones (a trained network's BatchNorm scales).

    The features are non-negative, so every term of M is: each product carries 2u from rounding its factors,
    a sum of non-negative terms keeps that relative error, and rounding the product adds u; the division by
    the float32 RMS values is float32 and the result is rounded to bfloat16 again (u): |ΔM| ≤ 4u |M|
    entrywise. ω sums terms of both signs: |Δω| ≤ (4u + u) Σ|W||M| + u |ω| ≤ 6u Σ|W||M| entrywise (rounded
    M, rounded W, rounded result; b = 0). Nothing overflows (M stays below float16's 65504, so the CUDA fp16
    path is finite too)
    and nothing underflows (no entry that is non-zero in fp32 becomes 0).
    """
    torch.manual_seed(0)
    block = CrossCorrelationFusion(2, channels)
    generator = torch.Generator().manual_seed(channels)
    for scale in (1.0, 16.0):
        encoder = F.relu(torch.randn(2, channels, size, size, generator=generator)) * scale
        decoder = F.relu(torch.randn(2, channels, size // 2, size // 2, generator=generator)) * scale
        decoder = F.interpolate(decoder, size=(size, size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            correlation = block.correlation(encoder, decoder)
            weights = block.channel_weights(correlation)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                correlation_bf16 = block.correlation(encoder, decoder)
                weights_bf16 = block.channel_weights(correlation_bf16)
            weights_bound = 6 * U * (correlation.flatten(1).abs() @ block.weight.abs().t())
        assert correlation_bf16.dtype == torch.bfloat16, "autocast did not run the correlation in bfloat16"
        assert torch.isfinite(correlation_bf16).all() and torch.isfinite(weights_bf16).all()
        assert correlation.abs().max() < FLOAT16_MAX
        assert torch.equal(correlation != 0, correlation_bf16 != 0), "entries underflowed to 0 in bfloat16"
        error = (correlation_bf16.float() - correlation).abs()
        worst = (error / correlation.abs()).max()
        assert (error <= 4 * U * correlation.abs()).all(), f"scale {scale}: max |ΔM|/|M| = {worst} > 4u"
        assert ((weights_bf16.float() - weights).abs() <= weights_bound).all(), f"scale {scale}: ω beyond its bound"


def test_c2_attention_in_bf16_at_full_width_and_256():
    """C²-attention at TaiChiNet's bottleneck for a 256 x 256 input: C = 512 channels of 16 x 16 positions.

    The scores s·Q Kᵀ (s = 1/sqrt(N)) come from bf16-rounded Q and K (each the rounded output of a 1x1
    convolution of rounded features: 3u), so |Δscore| ≤ 6u · s Σ|q||k| = 6u · S. A softmax weight changes by
    the factor exp(±2 |Δscore|) at most, and the attended values V (3u) by as much: the attention output's
    relative error is about exp(12u · S) - 1 + 3u or less (V's rows add without much cancellation). For
    BatchNorm + ReLU-like features S ≈ 10 and the bound is 27 %, the measured error about 0.5 %. Larger
    features (x4, x16) saturate the softmax towards one
    channel in fp32 already; the outputs stay finite and close (measured ≤ 3 %), which is checked against
    the looser 5 %.
    """
    torch.manual_seed(0)
    channels, size = 512, 16
    block = ChannelToSpatialCrossAttention(2, channels)
    generator = torch.Generator().manual_seed(1)
    for scale, limit in ((1.0, None), (4.0, 0.05), (16.0, 0.05)):
        negative = F.relu(torch.randn(2, channels, size, size, generator=generator)) * scale
        positive = F.relu(torch.randn(2, channels, size, size, generator=generator)) * scale
        with torch.no_grad():
            queries = torch.cat([block.query_n(negative), block.query_p(positive)], 1).flatten(2)
            keys = torch.cat([block.key_n(negative), block.key_p(positive)], 1).flatten(2)
            score_scale = (queries.abs() @ keys.abs().transpose(1, 2)).max().item() / math.sqrt(size * size)
            outputs = block(negative, positive)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outputs_bf16 = block(negative, positive)
        bound = math.expm1(12 * U * score_scale) + 3 * U if limit is None else limit
        for features, out, out_bf16 in zip((negative, positive), outputs, outputs_bf16):
            assert torch.isfinite(out_bf16).all()
            attended, attended_bf16 = out - features, out_bf16.float() - features
            relative = ((attended_bf16 - attended).norm() / attended.norm()).item()
            assert relative <= bound, (
                f"scale {scale}: relative error {relative:.4f} > {bound:.4f} (S = {score_scale:.1f})"
            )

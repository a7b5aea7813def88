"""DC-Net's blocks against literal implementations of the paper's equations (Ning et al., Eq. 4-5, 7-17)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lesionseg.networks.blocks.aggregation import AggregationUnit
from lesionseg.networks.blocks.attention import ChannelAttentionBlock
from lesionseg.networks.blocks.cbr import conv_bn_relu
from lesionseg.networks.blocks.ccf import CrossCorrelationFusion
from lesionseg.networks.blocks.dar import DependencyAwareReinforcement, PyramidPrototype
from lesionseg.networks.blocks.dcp import DifferentiableContextPooling
from lesionseg.networks.blocks.saliency import SaliencyDecomposition, self_reversal


def _reflect(index: int, size: int) -> int:
    """Reflection without repeating the edge (torch's "reflect"): -1 -> 1, size -> size - 2."""
    if index < 0:
        return -index
    if index >= size:
        return 2 * (size - 1) - index
    return index


def _neighbour_matrix(grid: tuple[int, int], radius: int, neighbourhood: str) -> torch.Tensor:
    """H of Eq. 10 (m x m) with reflected borders: H[p, q] counts how often window q neighbours window p."""
    rows, cols = grid
    m = rows * cols
    h = torch.zeros(m, m, dtype=torch.float64)
    for p in range(m):
        if neighbourhood == "band":
            for d in range(-radius, radius + 1):
                h[p, _reflect(p + d, m)] += 1
        else:
            i, j = divmod(p, cols)
            for di in range(-radius, radius + 1):
                for dj in range(-radius, radius + 1):
                    h[p, _reflect(i + di, rows) * cols + _reflect(j + dj, cols)] += 1
    return h


def _windows(t: torch.Tensor, r: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, m, r*r): windows in raster order, positions in raster order inside each window."""
    b, c, hh, ww = t.shape
    return t.reshape(b, c, hh // r, r, ww // r, r).permute(0, 1, 2, 4, 3, 5).reshape(b, c, -1, r * r)


def literal_dcp(pool: DifferentiableContextPooling, x: torch.Tensor) -> torch.Tensor:
    """Eq. 8-11 as written: U = Z̄ Δ̄ᵀ (m x m per channel), Ū = m / ΣH · (H ⊙ U) 1, on the window grid."""
    r, tau = pool.window_size, pool.radius
    b, c, hh, ww = x.shape
    # Δ_Z: the 2x2 convolution with zero padding at the end of each axis, so the map keeps H x W; its weighted
    # sum divided by the root mean square of each sample when the pooling normalises
    kernels = F.conv2d(F.pad(x, (0, 1, 0, 1)), pool.kernel_conv.weight)
    if pool.normalise:
        kernels = kernels / x.square().mean((1, 2, 3), keepdim=True).sqrt()
    kernels = kernels + pool.kernel_conv.bias.view(1, -1, 1, 1)
    z_bar = _windows(x, r).double()  # (B, C, m, r²)
    delta_bar = _windows(kernels, r).double()  # (B, 1, m, r²)
    u = z_bar @ delta_bar.transpose(-1, -2)  # (B, C, m, m), Eq. 8
    h = _neighbour_matrix((hh // r, ww // r), tau, pool.neighbourhood)
    m = h.shape[0]
    u_bar = (m / h.sum()) * (h * u).sum(-1)  # Eq. 11
    return u_bar.reshape(b, c, hh // r, ww // r).float()


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("neighbourhood", ["grid", "band"])
@pytest.mark.parametrize("radius", [0, 1, 2])
@pytest.mark.parametrize("window_size, shape", [(2, (12, 16)), (3, (9, 12))])
def test_dcp_equals_literal_eq_8_to_11(neighbourhood, radius, window_size, shape, normalise):
    torch.manual_seed(radius)
    pool = DifferentiableContextPooling(
        2, 3, window_size=window_size, radius=radius, neighbourhood=neighbourhood, normalise=normalise
    )
    x = torch.randn(2, 3, *shape)
    torch.testing.assert_close(pool(x), literal_dcp(pool, x), atol=1e-5, rtol=1e-5)


def test_dcp_kernel_map_is_zero_padded_2x2_convolution():
    pool = DifferentiableContextPooling(2, 4, normalise=False)
    x = torch.randn(2, 4, 8, 6)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), pool.kernel_conv.weight, pool.kernel_conv.bias)
    torch.testing.assert_close(pool.kernel_map(x), expected)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_dcp_is_linear_in_the_scale_of_its_input_only_when_normalised(memory_format):
    """Normalised, DCP(k·Z) = k·DCP(Z) for k > 0 (its kernels do not grow with Z); the paper's form is quadratic."""
    torch.manual_seed(0)
    x = torch.rand(2, 4, 8, 8).to(memory_format=memory_format)  # non-negative, like the ReLU features DCP pools
    for normalise, power in ((True, 1), (False, None)):
        pool = DifferentiableContextPooling(2, 4, normalise=normalise)
        torch.nn.init.zeros_(pool.kernel_conv.bias)  # a bias adds a linear term to the paper's quadratic one
        scaled = pool(1e3 * x)
        if power is None:
            torch.testing.assert_close(scaled, 1e6 * pool(x), rtol=1e-4, atol=1e-2)
        else:
            torch.testing.assert_close(scaled, 1e3 * pool(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("neighbourhood", ["grid", "band"])
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_dcp_with_constant_kernel_is_average_pooling(neighbourhood, radius):
    """The paper's special case (i): Δ̄ = 1/r² gives average pooling; averaging neighbours keeps it for τ > 0."""
    pool = DifferentiableContextPooling(2, 3, radius=radius, neighbourhood=neighbourhood)
    torch.nn.init.zeros_(pool.kernel_conv.weight)
    torch.nn.init.constant_(pool.kernel_conv.bias, 0.25)
    x = torch.randn(2, 3, 12, 8)
    torch.testing.assert_close(pool(x), F.avg_pool2d(x, 2), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("spatial_dims", [1, 3])
def test_dcp_other_dimensions_constant_kernel_is_average_pooling(spatial_dims):
    pool = DifferentiableContextPooling(spatial_dims, 2, radius=1)
    torch.nn.init.zeros_(pool.kernel_conv.weight)
    torch.nn.init.constant_(pool.kernel_conv.bias, 1.0 / 2**spatial_dims)
    x = torch.randn(2, 2, *([8] * spatial_dims))
    expected = F.avg_pool1d(x, 2) if spatial_dims == 1 else F.avg_pool3d(x, 2)
    torch.testing.assert_close(pool(x), expected, atol=1e-6, rtol=1e-6)


def test_dcp_context_reaches_neighbouring_windows():
    """With τ = 1 an input change in one window changes the pooled value of its neighbour, with τ = 0 it does not
    (unnormalised: the normalised kernels share one per-sample scale, which any change moves a little)."""
    x = torch.randn(1, 2, 8, 8)
    changed = x.clone()
    changed[..., 0:2, 0:2] += 1.0  # window (0, 0)
    for radius, touched in ((0, False), (1, True)):
        torch.manual_seed(0)
        pool = DifferentiableContextPooling(2, 2, radius=radius, normalise=False)
        difference = (pool(changed) - pool(x))[..., 0, 1].abs().max()  # window (0, 1)
        assert bool(difference > 1e-6) is touched


def test_dcp_gradients_reach_kernel_convolution_and_input():
    pool = DifferentiableContextPooling(2, 3)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    pool(x).square().sum().backward()
    assert pool.kernel_conv.weight.grad.abs().sum() > 0
    assert pool.kernel_conv.bias.grad.abs() > 0
    assert x.grad.abs().sum() > 0


def test_dcp_rejects_bad_sizes_and_options():
    pool = DifferentiableContextPooling(2, 3, radius=1)
    with pytest.raises(ValueError, match="not divisible"):
        pool(torch.randn(1, 3, 9, 8))
    with pytest.raises(ValueError, match="more than 1 windows"):
        pool(torch.randn(1, 3, 2, 8))  # one window along H cannot be reflected
    with pytest.raises(ValueError, match="neighbourhood"):
        DifferentiableContextPooling(2, 3, neighbourhood="ring")
    with pytest.raises(ValueError, match="radius"):
        DifferentiableContextPooling(2, 3, radius=-1)


def literal_ccf(fuse: CrossCorrelationFusion, encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
    """Eq. 13-15 with the documented division of M by the number of positions (and by both inputs' RMS)."""
    b, c = encoder.shape[:2]
    up = F.interpolate(decoder, size=encoder.shape[2:], mode="bilinear", align_corners=False)
    x_e, x_d = encoder.flatten(2).transpose(1, 2), up.flatten(2).transpose(1, 2)  # (B, N, C)
    m = x_e.transpose(1, 2) @ x_d / x_e.shape[1]  # Eq. 13, (B, C, C)
    if fuse.normalise:
        m = m / (x_e.square().mean((1, 2)) * x_d.square().mean((1, 2))).sqrt().view(b, 1, 1)
    if fuse.mapping == "dense":
        w_e, w_d = fuse.weight[:c], fuse.weight[c:]
        omega_e = m.reshape(b, -1) @ w_e.t() + fuse.bias[:c]
        omega_d = m.reshape(b, -1) @ w_d.t() + fuse.bias[c:]
    else:  # ρ = a c x 1 convolution over each row of M (ω_E) and each column (ω_D)
        omega_e = torch.stack([m[:, p, :] @ fuse.weight[0] for p in range(c)], 1) + fuse.bias[0]
        omega_d = torch.stack([m[:, :, q] @ fuse.weight[1] for q in range(c)], 1) + fuse.bias[1]
    weighted = torch.cat([omega_e[..., None, None] * encoder, omega_d[..., None, None] * up], 1)  # Eq. 15
    return fuse.merge(weighted)


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("mapping", ["dense", "row"])
def test_ccf_equals_literal_eq_13_to_15(mapping, normalise):
    torch.manual_seed(0)
    fuse = CrossCorrelationFusion(2, 4, mapping=mapping, normalise=normalise).eval()
    torch.nn.init.normal_(fuse.bias)  # non-zero biases so that their placement is checked too
    encoder, decoder = torch.randn(2, 4, 8, 12), torch.randn(2, 4, 4, 6)
    out = fuse(encoder, decoder)
    assert out.shape == (2, 4, 8, 12)
    torch.testing.assert_close(out, literal_ccf(fuse, encoder, decoder), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mapping, extra", [("dense", lambda c: 2 * (c**3 + c)), ("row", lambda c: 2 * (c + 1))])
def test_ccf_mapping_parameter_counts(mapping, extra):
    c = 6
    fuse = CrossCorrelationFusion(2, c, mapping=mapping)
    merge = sum(p.numel() for p in fuse.merge.parameters())
    assert sum(p.numel() for p in fuse.parameters()) - merge == extra(c)  # published Conv1d(C, C, C) x 2, or c x 1 x 2


def test_ccf_correlation_is_finite_in_float16_where_the_raw_gram_overflows():
    encoder = torch.full((1, 2, 128, 128), 3.0)  # raw Gram entries 9 * 16384 > 65504, float16's maximum
    decoder = torch.full((1, 2, 128, 128), 3.0)
    for normalise, expected in ((False, 9.0), (True, 1.0)):  # M / N, and M / N / (rms(X_E) rms(X_D)) = 9 / 9
        correlation = CrossCorrelationFusion(2, 2, normalise=normalise).correlation(encoder.half(), decoder.half())
        assert torch.isfinite(correlation).all() and correlation.dtype == torch.float16
        torch.testing.assert_close(correlation.float(), torch.full((1, 2, 2), expected))


@pytest.mark.parametrize("mapping", ["dense", "row"])
def test_ccf_is_linear_in_the_scale_of_its_inputs_only_when_normalised(mapping):
    """Normalised, the channel weights ω do not depend on the inputs' scale, so CCF's weighted features grow
    linearly with it and BatchNorm in eval mode cannot be fed a cube; unnormalised, ω grows quadratically."""
    torch.manual_seed(0)
    encoder, decoder = torch.rand(2, 4, 8, 8), torch.rand(2, 4, 4, 4)
    for normalise, growth in ((True, 1.0), (False, 1e6)):
        fuse = CrossCorrelationFusion(2, 4, mapping=mapping, normalise=normalise)
        small = fuse.channel_weights(fuse.correlation(encoder, F.interpolate(decoder, size=(8, 8), mode="bilinear")))
        large = fuse.channel_weights(
            fuse.correlation(1e3 * encoder, F.interpolate(1e3 * decoder, size=(8, 8), mode="bilinear"))
        )
        torch.testing.assert_close(large, growth * small, rtol=1e-4, atol=1e-5 * growth)


def test_ccf_correlation_is_bounded_by_the_channel_count_and_zero_for_zero_input():
    torch.manual_seed(0)
    fuse = CrossCorrelationFusion(2, 3)
    for scale in (1e-20, 1.0, 1e15):
        encoder = scale * torch.randn(2, 3, 8, 8)
        correlation = fuse.correlation(encoder, encoder.flip(-1))
        assert torch.isfinite(correlation).all() and correlation.abs().max() <= 3.0
    zeros = torch.zeros(1, 3, 8, 8)
    assert torch.equal(fuse.correlation(zeros, torch.ones(1, 3, 8, 8)), torch.zeros(1, 3, 3))


@pytest.mark.parametrize("mapping", ["dense", "row"])
def test_ccf_gradients_and_batch_of_one_in_eval(mapping):
    fuse = CrossCorrelationFusion(2, 4, mapping=mapping)
    encoder = torch.randn(2, 4, 8, 8, requires_grad=True)
    decoder = torch.randn(2, 4, 4, 4, requires_grad=True)
    fuse(encoder, decoder).square().mean().backward()
    for name, parameter in fuse.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert encoder.grad.abs().sum() > 0 and decoder.grad.abs().sum() > 0
    assert fuse.eval()(encoder[:1], decoder[:1]).shape == (1, 4, 8, 8)


def test_ccf_rejects_unknown_mapping():
    with pytest.raises(ValueError, match="mapping"):
        CrossCorrelationFusion(2, 4, mapping="column")


def test_self_reversal_is_channel_max_minus_features():
    x = torch.randn(2, 3, 5, 4)
    reversed_x = self_reversal(x)
    expected = x.amax(dim=(2, 3), keepdim=True) - x  # Eq. 5
    torch.testing.assert_close(reversed_x, expected)
    assert (reversed_x >= 0).all()
    assert (reversed_x.flatten(2).amin(2) == 0).all()  # zero where each channel peaks


def test_saliency_decomposition_background_head_sees_reversed_features():
    sd = SaliencyDecomposition(2, 4, 1)
    x = torch.randn(2, 4, 8, 8)
    foreground, background = sd(x)
    torch.testing.assert_close(foreground, sd.foreground_head(x))
    torch.testing.assert_close(background, sd.background_head(self_reversal(x)))


def test_attention_block_equals_eq_4():
    torch.manual_seed(0)
    block = ChannelAttentionBlock(2, 3, 5, 4).eval()
    x = torch.randn(2, 3, 8, 8)
    features = block.reduce(x)
    weights = torch.softmax(block.fc(features.mean(dim=(2, 3))), dim=1)  # ω = φ(FC(GAP(B̃)))
    torch.testing.assert_close(block(x), block.merge(weights[..., None, None] * features))
    torch.testing.assert_close(block.channel_weights(features).sum(1), torch.ones(2))


def test_attention_block_gradients_and_batch_of_one_in_eval():
    block = ChannelAttentionBlock(2, 3, 5, 4)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    block(x).mean().backward()
    assert block.fc.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    assert block.eval()(x[:1]).shape == (1, 4, 8, 8)


def test_pyramid_prototype_equals_concat_pool_then_1x1_convolution():
    branch = PyramidPrototype(2, 4).eval()
    x = torch.randn(2, 4, 12, 12)
    stacked = torch.cat([conv(x) for conv in branch.branches], dim=1)  # (B, 3C, H, W)
    pooled = F.adaptive_avg_pool2d(stacked, 1)
    conv_weight = branch.project.weight[..., None, None]  # the 1x1 convolution of Eq. 16
    expected = F.conv2d(pooled, conv_weight, branch.project.bias).flatten(1)
    torch.testing.assert_close(branch(x), expected)
    assert [conv.conv.dilation for conv in branch.branches] == [(1, 1), (3, 3), (5, 5)]


def test_dar_equals_eq_17_with_scaled_reinforcement():
    torch.manual_seed(0)
    dar = DependencyAwareReinforcement(2, 4, attention_scale=0.2).eval()
    foreground, background = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    reversed_background = self_reversal(background)
    key, value = dar.key(reversed_background), dar.value(reversed_background)
    f_f = foreground.flatten(2).transpose(1, 2)  # (B, hw, C)
    complement = torch.sigmoid(f_f @ key[:, :, None]) @ value[:, None, :]  # ψ(F̃^f Kᵀ) V, (B, hw, C)
    complement = complement.transpose(1, 2).reshape(2, 4, 6, 6)
    expected = torch.cat([foreground, reversed_background], 1) + 0.2 * dar.expand(complement)
    torch.testing.assert_close(dar(foreground, background), expected)


def test_dar_without_scale_term_is_concatenation_of_foreground_and_reversed_background():
    dar = DependencyAwareReinforcement(2, 4, attention_scale=0.0)
    foreground, background = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(dar(foreground, background), torch.cat([foreground, self_reversal(background)], 1))


def test_dar_gradients_and_batch_of_one_in_training_and_eval():
    dar = DependencyAwareReinforcement(2, 4)
    foreground = torch.randn(2, 4, 6, 6, requires_grad=True)
    background = torch.randn(2, 4, 6, 6, requires_grad=True)
    out = dar(foreground, background)
    assert out.shape == (2, 8, 6, 6)
    out.square().mean().backward()
    for name, parameter in dar.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert background.grad.abs().sum() > 0
    assert dar(foreground[:1], background[:1]).shape == (1, 8, 6, 6)  # no BatchNorm on 1x1 maps
    assert dar.eval()(foreground[:1], background[:1]).shape == (1, 8, 6, 6)


def test_simple_aggregation_concatenates_foreground_and_reversed_background_embeddings():
    unit = AggregationUnit(2, 6, 8, mode="simple").eval()
    foreground, background = torch.randn(2, 6, 8, 8), torch.randn(2, 6, 8, 8)
    expected = torch.cat(
        [unit.foreground_embedding(foreground), self_reversal(unit.background_embedding(background))], 1
    )
    torch.testing.assert_close(unit(foreground, background), expected)
    assert [m.conv.kernel_size for m in unit.foreground_embedding] == [(1, 1), (3, 3)]


def test_dar_aggregation_shapes_gradients_and_errors():
    unit = AggregationUnit(2, 8, 8, mode="dar")
    foreground = torch.randn(2, 8, 8, 8, requires_grad=True)
    background = torch.randn(2, 8, 8, 8, requires_grad=True)
    out = unit(foreground, background)
    assert out.shape == (2, 8, 8, 8)
    out.mean().backward()
    assert foreground.grad.abs().sum() > 0 and background.grad.abs().sum() > 0
    assert unit.eval()(foreground[:1], background[:1]).shape == (1, 8, 8, 8)
    with pytest.raises(ValueError, match="even"):
        AggregationUnit(2, 8, 7)
    with pytest.raises(ValueError, match="mode"):
        AggregationUnit(2, 8, 8, mode="sum")


def test_conv_bn_relu_is_conv_with_bias_batchnorm_relu():
    unit = conv_bn_relu(2, 3, 5, kernel_size=3, dilation=2)
    assert unit.conv.bias is not None and unit.conv.dilation == (2, 2) and unit.conv.padding == (2, 2)
    out = unit(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 5, 8, 8) and (out >= 0).all()

"""TaiChiNet (Wang et al., IEEE JBHI 2024): its blocks against literal transcriptions of the paper's equations,
its size against Table I, its output contract, gradients, training and export."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from lesionseg.networks.blocks.c2_attention import ChannelToSpatialCrossAttention
from lesionseg.networks.blocks.complementary_head import ComplementaryHead
from lesionseg.networks.blocks.unet_path import UNetPath
from lesionseg.networks.nets.taichinet import TaiChiNet

NARROW = (4, 8, 16, 32, 64)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and on a shared 2-core machine every multi-threaded kernel
    waits at an OpenMP barrier for a descheduled thread: one thread runs this file ~10x faster there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Network arguments of the rows of Table I and II (rows differing only in the loss share a network).
ABLATIONS = {
    "model1_positive_path_only": dict(negative_path=False, cross_attention=False, complementary_head=False),
    "model2_3_two_paths": dict(cross_attention=False, complementary_head=False, inference_output="average"),
    "model4_6_attention": dict(complementary_head=False, inference_output="average"),
    "model5_head": dict(cross_attention=False),
    "model7_taichinet": dict(),
    "consistent_mutual_learning": dict(mutual_learning="consistent"),
    "consistent_two_paths_average": dict(
        mutual_learning="consistent", cross_attention=False, complementary_head=False, inference_output="average"
    ),
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def as_matrix(conv: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight (C_out, C_in) and bias (C_out,) of a 1×1 convolution."""
    return conv.weight[:, :, 0, 0], conv.bias


def literal_c2_attention(attention, f_n, f_p, scale):
    """Eq. 6-9 for each image separately, with explicit matrices and an explicit softmax."""
    out_n, out_p = torch.empty_like(f_n), torch.empty_like(f_p)
    for b in range(f_n.shape[0]):
        x_n, x_p = f_n[b].flatten(1), f_p[b].flatten(1)  # (C, N)

        def project(conv, x):
            weight, bias = as_matrix(conv)
            return weight @ x + bias[:, None]

        key = torch.cat([project(attention.key_n, x_n), project(attention.key_p, x_p)], dim=0)  # Eq. 6
        value = torch.cat([project(attention.value_n, x_n), project(attention.value_p, x_p)], dim=0)  # Eq. 7
        for query_conv, x, out in ((attention.query_n, x_n, out_n), (attention.query_p, x_p, out_p)):
            scores = scale * (project(query_conv, x) @ key.T)  # (C, C)
            exp = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
            channel_scores = exp / exp.sum(dim=1, keepdim=True)  # softmax over the key channels
            out[b] = (x + channel_scores @ value).reshape(out[b].shape)  # Eq. 8, 9
    return out_n, out_p


@pytest.mark.parametrize("scaled", [True, False])
def test_c2_attention_matches_eq_6_to_9(scaled):
    torch.manual_seed(0)
    attention = ChannelToSpatialCrossAttention(spatial_dims=2, channels=8, scaled=scaled).double()
    f_n, f_p = torch.randn(2, 8, 3, 5, dtype=torch.float64), torch.randn(2, 8, 3, 5, dtype=torch.float64)
    scale = 1 / math.sqrt(15) if scaled else 1.0
    expected_n, expected_p = literal_c2_attention(attention, f_n, f_p, scale)
    out_n, out_p = attention(f_n, f_p)
    torch.testing.assert_close(out_n, expected_n, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out_p, expected_p, rtol=1e-10, atol=1e-10)


def test_c2_attention_exchanges_information_between_paths():
    torch.manual_seed(0)
    attention = ChannelToSpatialCrossAttention(spatial_dims=2, channels=8)
    f_n, f_p = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    out_n, out_p = attention(f_n, f_p)
    out_n_changed, out_p_changed = attention(f_n, f_p + 1.0)
    # The positive features enter the negative output through K_p and V_p (Eq. 6-8) and vice versa.
    assert not torch.allclose(out_n, out_n_changed)
    assert not torch.allclose(out_p, out_p_changed)


def test_c2_attention_rejects_mismatched_features():
    attention = ChannelToSpatialCrossAttention(spatial_dims=2, channels=8)
    with pytest.raises(ValueError, match="same shape"):
        attention(torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 2, 2))
    with pytest.raises(ValueError, match="even"):
        ChannelToSpatialCrossAttention(spatial_dims=2, channels=7)


def literal_mlp(mlp, x):
    """Per pixel: W2 · GELU(W1 · x + b1) + b2, GELU(t) = t · Φ(t)."""
    w1, b1 = as_matrix(mlp.widen.conv)
    w2, b2 = as_matrix(mlp.narrow.conv)
    pixels = x.permute(0, 2, 3, 1)  # (B, H, W, C)
    hidden = pixels @ w1.T + b1
    hidden = hidden * 0.5 * (1 + torch.erf(hidden / math.sqrt(2)))
    return (hidden @ w2.T + b2).permute(0, 3, 1, 2)


@pytest.mark.parametrize("complement", [True, False])
def test_complementary_head_matches_eq_10_to_12(complement):
    torch.manual_seed(0)
    head = ComplementaryHead(spatial_dims=2, channels=2, hidden_channels=5, complement=complement).double()
    o_n_prime, o_p_prime = torch.randn(2, 2, 4, 3, dtype=torch.float64), torch.randn(2, 2, 4, 3, dtype=torch.float64)

    def psi(logits):  # Eq. 12 on probabilities; the identity for consistent mutual learning
        probability = 1 / (1 + torch.exp(-logits))
        return 1 - probability if complement else probability

    expected_n = o_n_prime + literal_mlp(head.mlp_n, psi(o_p_prime))  # Eq. 10
    expected_p = o_p_prime + literal_mlp(head.mlp_p, psi(expected_n))  # Eq. 11, with the refined O_n
    o_n, o_p = head(o_n_prime, o_p_prime)
    torch.testing.assert_close(o_n, expected_n, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(o_p, expected_p, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("upsample_mode", ["nearest", "linear"])
def test_unet_path_layout_and_split(upsample_mode):
    torch.manual_seed(0)
    path = UNetPath(features=NARROW, upsample_mode=upsample_mode).eval()
    x = torch.randn(2, 1, 32, 48)
    skips, bottleneck = path.encode(x)
    assert [tuple(s.shape) for s in skips] == [(2, 4, 32, 48), (2, 8, 16, 24), (2, 16, 8, 12), (2, 32, 4, 6)]
    assert bottleneck.shape == (2, 64, 2, 3)
    torch.testing.assert_close(path(x), path.decode(skips, bottleneck))
    assert path(x).shape == (2, 1, 32, 48)


def test_parameter_counts_match_table_1():
    def within_one_percent(value, target):
        return abs(value - target) <= 0.01 * target

    one_path = count(UNetPath())
    attention = count(ChannelToSpatialCrossAttention(spatial_dims=2, channels=512))
    assert within_one_percent(one_path, 8.64e6), one_path
    assert within_one_percent(attention, 1.05e6), attention
    two_paths = count(TaiChiNet(cross_attention=False, complementary_head=False))
    assert two_paths == 2 * one_path and within_one_percent(two_paths, 17.28e6), two_paths
    with_head = count(TaiChiNet(cross_attention=False))
    assert 0 < with_head - two_paths < 1000, with_head - two_paths  # Table I: the head adds nothing measurable
    whole = count(TaiChiNet())
    assert whole == with_head + attention and within_one_percent(whole, 18.33e6), whole


def test_eval_returns_one_tensor_and_training_returns_positive_then_negative():
    torch.manual_seed(0)
    net = TaiChiNet(in_channels=3, out_channels=2, features=NARROW)
    x = torch.randn(2, 3, 32, 64)
    positive, negative = net.train()(x)
    assert positive.shape == negative.shape == (2, 2, 32, 64)
    net.eval()
    output = net(x)
    assert isinstance(output, torch.Tensor) and output.shape == (2, 2, 32, 64)
    # Only the top level switched to training: the sub-modules stay in eval, so both calls see the same
    # normalisation and the eval output must be the first element of the tuple.
    net.training = True
    positive_eval, negative_eval = net(x)
    torch.testing.assert_close(output, positive_eval)
    assert not torch.allclose(positive_eval, negative_eval)


@pytest.mark.parametrize("complement", [True, False])
def test_average_output_is_the_mean_lesion_probability(complement):
    torch.manual_seed(0)
    net = TaiChiNet(
        features=NARROW,
        complementary_head=False,
        inference_output="average",
        mutual_learning="complementary" if complement else "consistent",
    ).eval()
    x = torch.randn(2, 1, 32, 32)
    averaged = net(x)
    net.training = True  # the tuple, with the sub-modules still in eval mode
    positive, negative = net(x)
    lesion_from_negative = 1 - torch.sigmoid(negative) if complement else torch.sigmoid(negative)
    torch.testing.assert_close(torch.sigmoid(averaged), (torch.sigmoid(positive) + lesion_from_negative) / 2)
    # Stays finite where the probabilities saturate.
    big = net._average_lesion_logits(torch.tensor([80.0, -80.0]), torch.tensor([-80.0, 80.0]))
    assert torch.isfinite(big).all()


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_builds_runs_and_backpropagates(name):
    torch.manual_seed(0)
    net = TaiChiNet(features=NARROW, **ABLATIONS[name])
    x = torch.randn(2, 1, 32, 32)
    outputs = net.train()(x)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert len(outputs) == (1 if name.startswith("model1") else 2)
    sum(o.square().mean() for o in outputs).backward()
    assert all(p.grad is not None for p in net.parameters())
    with torch.no_grad():
        output = net.eval()(x)
    assert isinstance(output, torch.Tensor) and output.shape == (2, 1, 32, 32)


def grads_of_positive_loss(net, x):
    net.zero_grad()
    positive, _ = net.train()(x)
    positive.square().mean().backward()
    return net


def no_gradient(parameter):
    return parameter.grad is None or not parameter.grad.any()


def conv_weights(module):
    return {name: p for name, p in module.named_parameters() if name.endswith("conv.weight")}


def test_positive_loss_reaches_the_negative_path_through_attention_and_head():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)

    full = grads_of_positive_loss(TaiChiNet(features=NARROW), x)
    # Through the head (Eq. 11) every convolution of the negative path, encoder and decoder, gets gradient.
    for name, weight in conv_weights(full.negative).items():
        assert weight.grad is not None and weight.grad.abs().sum() > 0, name
    assert full.attention.query_n.weight.grad.abs().sum() > 0
    assert full.head.mlp_n.widen.conv.weight.grad.abs().sum() > 0

    attention_only = grads_of_positive_loss(TaiChiNet(features=NARROW, complementary_head=False), x)
    # Through C²-attention alone (K_n, V_n, Eq. 6-9) only the negative encoder is reached.
    for level in attention_only.negative.encoder:
        for name, weight in conv_weights(level).items():
            assert weight.grad.abs().sum() > 0, name
    assert attention_only.attention.key_n.weight.grad.abs().sum() > 0
    assert no_gradient(attention_only.attention.query_n.weight)  # Q_n only shapes F'_n
    assert all(no_gradient(p) for p in attention_only.negative.decoder.parameters())

    independent = grads_of_positive_loss(TaiChiNet(features=NARROW, cross_attention=False, complementary_head=False), x)
    # Model 2: without interaction the positive loss cannot reach the negative path.
    assert all(no_gradient(p) for p in independent.negative.parameters())


def test_negative_loss_reaches_the_positive_path():
    torch.manual_seed(0)
    net = TaiChiNet(features=NARROW).train()
    _, negative = net(torch.randn(2, 1, 32, 32))
    negative.square().mean().backward()
    for name, weight in conv_weights(net.positive).items():
        assert weight.grad is not None and weight.grad.abs().sum() > 0, name
    # O_n is refined before O_p (Eq. 10, 11), so the positive MLP and head are not on its path.
    assert all(no_gradient(p) for p in net.head.mlp_p.parameters())
    assert net.positive.head.weight.grad.abs().sum() > 0  # O'_p feeds MLP_n


def test_adam_steps_lower_the_two_path_loss():
    torch.manual_seed(0)
    net = TaiChiNet(features=NARROW).train()
    images = torch.rand(4, 1, 32, 32)
    masks = torch.zeros(4, 1, 32, 32)
    masks[:, :, 8:20, 10:24] = 1.0
    images = images + masks  # a visible lesion

    def loss_fn():
        positive, negative = net(images)
        return F.binary_cross_entropy_with_logits(positive, masks) + F.binary_cross_entropy_with_logits(
            negative, 1 - masks
        )

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = loss_fn()
    for _ in range(8):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last = loss_fn()
    assert last < 0.7 * first, (first.item(), last.item())


@pytest.mark.parametrize("shape", [(1, 1, 30, 32), (1, 1, 32, 24), (1, 1, 32), (1, 1, 32, 32, 32)])
def test_bad_input_size_raises_value_error_naming_the_shape(shape):
    net = TaiChiNet(features=NARROW).eval()
    with pytest.raises(ValueError, match=re.escape(str(list(shape)))):
        net(torch.zeros(shape))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="mutual_learning"):
        TaiChiNet(features=NARROW, mutual_learning="opposite")
    with pytest.raises(ValueError, match="inference_output"):
        TaiChiNet(features=NARROW, inference_output="negative")
    with pytest.raises(ValueError, match="negative path"):
        TaiChiNet(features=NARROW, negative_path=False)
    with pytest.raises(ValueError, match="two levels"):
        UNetPath(features=(8,))


def test_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    net = TaiChiNet(features=NARROW, dropout=0.5)
    x = torch.randn(2, 1, 32, 32)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    assert not torch.allclose(net(x)[0], net(x)[0])


def test_autocast_bfloat16_forward_and_backward():
    torch.manual_seed(0)
    net = TaiChiNet(features=NARROW)
    x = torch.randn(2, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        positive, negative = net.train()(x)
        (positive.float().mean() + negative.float().mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.eval()
    reference = net(x)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = net(x)
    assert output.shape == reference.shape
    torch.testing.assert_close(output.float(), reference, rtol=0.1, atol=0.1)


def test_torchscript_trace_and_script():
    torch.manual_seed(0)
    net = TaiChiNet(features=NARROW).eval()
    x, other_size = torch.randn(1, 1, 32, 32), torch.randn(2, 1, 64, 48)
    expected = net(other_size)
    # Correctness, not speed: skip the JIT's optimisation passes, which take seconds on 2 cores.
    with torch.jit.optimized_execution(False):
        traced = torch.jit.trace(net, x, check_trace=False)
        torch.testing.assert_close(traced(other_size), expected)  # the trace did not freeze the size
        scripted = torch.jit.script(net)
        torch.testing.assert_close(scripted(other_size), expected)
        positive, negative = scripted.train()(other_size)
    assert positive.shape == negative.shape == (2, 1, 64, 48)

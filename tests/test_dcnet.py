"""DC-Net as a whole: published size, output contract, ablations, checkpointing, tracing, mixed precision, training."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from PIL import Image

from lesionseg.data.phantoms import make_phantom
from lesionseg.losses import DCNetLoss
from lesionseg.networks.blocks.ccf import CrossCorrelationFusion
from lesionseg.networks.nets.dcnet import DCNet

NARROW = (4, 8, 16, 32, 64)



def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def published() -> DCNet:
    return DCNet(in_channels=1)


def test_default_reproduces_published_parameter_count(published):
    count = _count(published)
    print(f"DC-Net parameters: {count} ({count / 1e6:.2f} M; paper Table V: 54.4 M)")
    assert abs(count - 54.4e6) <= 0.02 * 54.4e6


def test_dense_ccf_maps_hold_most_parameters(published):
    """The published model's Conv1d(C, C, kernel_size=C) maps, two per decoder level: 2·Σ(C³ + C)."""
    light = DCNet(in_channels=1, ccf_mapping="row")
    widths = (256, 128, 64, 32)
    assert _count(published) - _count(light) == sum(2 * (c**3 + c) - 2 * (c + 1) for c in widths)


def test_he_normal_initialisation(published):
    conv = published.coupling.encoder[4].conv  # 256 -> 512, 3x3: fan-in 2304
    fan_in = conv.weight[0].numel()
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.02)
    assert (conv.bias == 0).all()
    ccf = published.coupling.fusions[0]
    assert ccf.weight.std().item() == pytest.approx(math.sqrt(2.0 / ccf.weight.shape[1]), rel=0.02)


def test_heads_are_he_normal_by_default_and_small_on_request():
    torch.manual_seed(0)
    he, small = DCNet(features=NARROW), DCNet(features=NARROW, head_init_std=1e-2)
    assert [h.in_channels for h in he.heads()] == [NARROW[0]] * 3
    for head in he.heads():
        assert head.weight.std().item() > 0.1  # sqrt(2 / 4) for the 4 input channels
    for head in small.heads():
        assert head.weight.abs().max().item() < 0.05 and (head.bias == 0).all()  # std 0.01
    assert len(DCNet(features=NARROW, ablation="woC").heads()) == 1


def test_initial_logits_depend_on_the_seed_unless_the_heads_start_small():
    """Non-negative features under He-normal heads start every pixel at one seed-chosen offset (seen: -13 to
    +11 at full width on BUSI); small heads start all three maps near logit 0."""
    image = torch.rand(2, 1, 32, 32)
    offsets = {"small": [], "he": []}
    for seed in range(4):
        for name, std in (("small", 1e-2), ("he", None)):
            torch.manual_seed(seed)
            with torch.no_grad():
                maps = DCNet(features=(16, 32, 64, 128, 256), head_init_std=std).train()(image)
            offsets[name].append(max(m.mean().abs().item() for m in maps))
    assert max(offsets["small"]) < 0.5
    assert max(offsets["he"]) > 1.0


@pytest.mark.parametrize("shape", [(32, 32), (48, 64), (64, 32)])
def test_eval_returns_one_tensor_of_lesion_logits(shape):
    net = DCNet(features=NARROW).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, *shape))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 1, *shape)


def test_training_returns_lesion_and_saliency_logits():
    net = DCNet(in_channels=3, out_channels=2, features=NARROW).train()
    out = net(torch.rand(2, 3, 32, 48))
    assert isinstance(out, tuple) and len(out) == 3
    assert all(t.shape == (2, 2, 32, 48) for t in out)


def test_batch_of_one_in_eval():
    net = DCNet(features=NARROW).eval()
    assert net(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)


VARIANTS = [
    {"pooling": "max"},
    {"pooling": "avg"},
    {"dcp_neighbourhood": "band"},
    {"dcp_radius": 0},
    {"dcp_radius": 2, "dcp_neighbourhood": "band"},
    {"ccf_mapping": "row"},
    {"skip_fusion": "concat"},
    {"skip_fusion": "add"},
    {"aggregation": "dar"},
    {"aggregation": "simple"},
    {"ablation": "woB"},
    {"ablation": "woF"},
    {"ablation": "woC"},
    {"dropout": 0.3},
]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_variants_build_train_and_evaluate(options):
    torch.manual_seed(0)
    net = DCNet(features=NARROW, **options).train()
    x = torch.rand(2, 1, 32, 32)
    out = net(x)
    expected = 1 if options.get("ablation") == "woC" else 3
    assert isinstance(out, tuple) and len(out) == expected
    sum(t.mean() for t in out).backward()
    assert all(p.grad is not None for p in net.parameters()), "a parameter is unused"
    assert net.eval()(x).shape == (2, 1, 32, 32)


def test_variant_structure():
    assert not DCNet(features=NARROW, ablation="woB").coupling.aggregations
    assert DCNet(features=NARROW, ablation="woC").decomposition is None
    modes = [u.reinforcement is not None for u in DCNet(features=NARROW).coupling.aggregations]
    assert modes == [False] * 4 + [True] + [False] * 4  # the published model: DaR in the bottleneck unit only
    assert not any(isinstance(m, CrossCorrelationFusion) for m in DCNet(features=NARROW, skip_fusion="add").modules())


def test_ablations_use_the_named_saliency_map():
    """woB couples I ⊕ S_f, woF I ⊕ S_b: only the used head gets a gradient through the lesion logits."""
    for ablation, used in (("woB", "foreground_head"), ("woF", "background_head")):
        net = DCNet(features=NARROW, ablation=ablation).train()
        net(torch.rand(2, 1, 32, 32))[0].mean().backward()
        heads = net.decomposition.decompose
        unused = "background_head" if used == "foreground_head" else "foreground_head"
        assert getattr(heads, used).weight.grad.abs().sum() > 0
        assert getattr(heads, unused).weight.grad is None


def test_dropout_is_active_in_training_only():
    net = DCNet(features=NARROW, dropout=0.5)
    x = torch.rand(2, 1, 32, 32)
    net.train()
    assert not torch.equal(net(x)[0], net(x)[0])
    net.eval()
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize(
    "shape, match",
    [((1, 1, 40, 32), "divisible by 16"), ((1, 2, 32, 32), r"\(B, 1, H, W\)"), ((1, 32, 32), "divisible by 16")],
)
def test_bad_input_raises_value_error_naming_the_shape(shape, match):
    net = DCNet(features=NARROW).eval()
    with pytest.raises(ValueError, match=match) as error:
        net(torch.rand(*shape))
    assert str(tuple(shape)) in str(error.value)


def test_input_too_small_for_reflected_dcp_border():
    x = torch.rand(1, 1, 16, 32)
    with pytest.raises(ValueError, match="at least 32"):
        DCNet(features=NARROW).eval()(x)
    assert DCNet(features=NARROW, pooling="max").eval()(x).shape == (1, 1, 16, 32)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"features": (4, 8, 16, 32)}, "features"),
        ({"features": (4, 8, 15, 32, 64)}, "features"),
        ({"pooling": "lp"}, "pooling"),
        ({"skip_fusion": "mul"}, "skip_fusion"),
        ({"aggregation": ("dar",) * 8}, "aggregation"),
        ({"ablation": "woD"}, "aggregation='simple'"),
        ({"head_init_std": -1.0}, "head_init_std"),
    ],
)
def test_bad_options_raise_value_error(options, match):
    with pytest.raises(ValueError, match=match):
        DCNet(**{"features": NARROW, **options})


def test_checkpointing_changes_neither_gradients_nor_batchnorm_statistics():
    torch.manual_seed(0)
    checkpointed = DCNet(features=NARROW, dropout=0.3, use_checkpoint=True)
    plain = DCNet(features=NARROW, dropout=0.3, use_checkpoint=False)
    plain.load_state_dict(checkpointed.state_dict())
    x = torch.rand(2, 1, 32, 32)
    for net in (checkpointed, plain):
        net.train()
        torch.manual_seed(1)  # same dropout masks
        sum(t.square().mean() for t in net(x)).backward()
    for (name, a), b in zip(checkpointed.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    for (name, a), b in zip(checkpointed.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)  # running statistics updated once, counters included


def test_channels_last_gives_the_same_outputs_gradients_and_layout():
    """The bundles run DC-Net channels-last: same numbers as contiguous, and no block converts back.

    Gradients are compared in float64. In float32 the two layouts' kernels (oneDNN's channels-last
    convolutions on AMX/AVX-512 CPUs) sum in different orders, and a first-layer weight gradient is a sum over
    every position of the batch back through the whole network: measured against a float64 reference, each
    float32 layout is off by up to 1e-5 of the largest gradient (contiguous 4e-6, channels-last 1e-5 on this
    net), so a float32 comparison of the two layouts tests rounding, not layout. In float64 the same rounding
    is 1e-16 per operation and the layouts agree to 1e-13 of the largest gradient; a real layout error (a
    wrong permutation or broadcast) would differ at order 1.
    """
    torch.manual_seed(0)
    contiguous = DCNet(features=NARROW)
    channels_last = DCNet(features=NARROW).to(memory_format=torch.channels_last)
    channels_last.load_state_dict(contiguous.state_dict())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():  # both in training mode, as built
        for a, b in zip(contiguous(x), channels_last(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    gradients = {}
    for name, net in (("contiguous", contiguous), ("channels_last", channels_last)):
        net.double().zero_grad()
        sum(t.square().mean() for t in net(x.double())).backward()
        gradients[name] = [p.grad for p in net.parameters()]
    scale = max(float(g.abs().max()) for g in gradients["contiguous"])
    names = [name for name, _ in contiguous.named_parameters()]
    for name, a, b in zip(names, gradients["contiguous"], gradients["channels_last"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * scale, msg=name)
    channels_last.float()
    # every 4-D activation entering a convolution stays channels-last (a copy back would show as contiguous)
    seen = []
    hooks = [
        m.register_forward_pre_hook(lambda m, i: seen.append(i[0].is_contiguous(memory_format=torch.channels_last)))
        for m in channels_last.modules()
        if isinstance(m, torch.nn.Conv2d) and m.in_channels > 2
    ]
    with torch.no_grad():
        channels_last.eval()(x)
    for hook in hooks:
        hook.remove()
    assert seen and all(seen), f"{seen.count(False)} of {len(seen)} convolution inputs were not channels-last"


def test_trace_in_eval_generalises_to_other_sizes():
    net = DCNet(features=NARROW).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about the input checks, which it freezes
        traced = torch.jit.trace(net, torch.rand(1, 1, 32, 32))
    x = torch.rand(2, 1, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), net(x))


def test_runs_under_cpu_autocast_bfloat16():
    net = DCNet(features=NARROW)
    x = torch.rand(2, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net.train()(x)
        loss = sum(t.float().mean() for t in out)
    loss.backward()
    assert all(torch.isfinite(t).all() for t in out)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(net.eval()(x)).all()


def _phantoms(count: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark elliptic lesions on a brighter, noisy background."""
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, masks = [], []
    for _ in range(count):
        cy, cx = torch.randint(10, size - 10, (2,), generator=generator).tolist()
        mask = (((yy - cy) / 6.0) ** 2 + ((xx - cx) / 8.0) ** 2 <= 1).float()
        images.append(0.7 - 0.5 * mask + 0.1 * torch.rand(size, size, generator=generator))
        masks.append(mask)
    return torch.stack(images)[:, None], torch.stack(masks)[:, None]


def test_adam_steps_lower_the_lesion_loss():
    torch.manual_seed(0)
    net = DCNet(features=NARROW).train()
    images, masks = _phantoms()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        lesion, foreground, background = net(images)
        loss = F.binary_cross_entropy_with_logits(lesion, masks)
        aux = F.binary_cross_entropy_with_logits(foreground, masks) + F.binary_cross_entropy_with_logits(
            background, 1 - masks
        )
        optimizer.zero_grad()
        (loss + 0.5 * aux).backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses



# ------------------------------------------------------------ finite evaluation output on real-image statistics

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def _ultrasound_image(size: int = 256) -> torch.Tensor:
    """A 256² phantom B-mode image, min-max scaled as the bundles' preprocessing does, (1, 1, H, W)."""
    image = make_phantom(np.random.default_rng(0), size, size, "malignant").image.astype(np.float32)
    return torch.from_numpy((image - image.min()) / (image.max() - image.min()))[None, None]


def _bundle_network(bundle: str) -> torch.nn.Module:
    """The network exactly as a bundle's inference workflow builds it (``network``: ``network_def`` and layout)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "inference.yaml"))
    parser["device"] = "$torch.device('cpu')"
    return parser.get_parsed_content("network")


def test_unnormalised_products_overflow_in_eval_before_batchnorm_adapts():
    """The failure that ``normalise_products`` removes, reproduced on a phantom (seed 3): a fresh network's
    BatchNorm running statistics are the identity, and the quadratic DCP and cubic CCF compound to NaN logits."""
    torch.manual_seed(3)
    with torch.no_grad():
        logits = DCNet(normalise_products=False).eval()(_ultrasound_image())
    assert not torch.isfinite(logits).all()


@pytest.mark.parametrize("bundle", ["dcnet_bundle", "taichinet_bundle"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_bundle_networks_give_finite_eval_logits_fresh_on_ultrasound_statistics(bundle, seed):
    torch.manual_seed(seed)
    net = _bundle_network(bundle).eval()
    image = _ultrasound_image()
    with torch.no_grad():
        assert torch.isfinite(net(image)).all()
        # linear, not polynomial, in the input scale: raw 8-bit intensities (a missing min-max) stay finite too
        assert torch.isfinite(net(255.0 * image)).all()


def test_eval_logits_finite_after_one_epoch_on_a_handful_of_images():
    """The MONAI Label case: one short epoch moves BatchNorm's running statistics part of the way only."""
    torch.manual_seed(0)
    net = DCNet()
    rng = np.random.default_rng(1)
    phantoms = [make_phantom(rng, 128, 128, kind) for kind in ("benign", "malignant", "benign", "malignant")]
    images = torch.from_numpy(np.stack([p.image for p in phantoms]).astype(np.float32) / 255.0)[:, None]
    masks = torch.from_numpy(np.stack([p.mask for p in phantoms]).astype(np.float32))[:, None]
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-4)
    loss_function = DCNetLoss()
    for batch in (slice(0, 2), slice(2, 4)):
        optimizer.zero_grad()
        loss_function(net.train()(images[batch]), masks[batch]).backward()
        optimizer.step()
    image = _ultrasound_image()
    with torch.no_grad():
        assert torch.isfinite(net.eval()(image)).all()
        # raw 8-bit intensities: the unnormalised products overflowed here after the same two steps (NaN)
        assert torch.isfinite(net.eval()(255.0 * image)).all()


@pytest.mark.busi
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fresh_dcnet_eval_logits_are_finite_on_a_real_busi_image(busi_dir, seed):
    """The image on which a fresh DC-Net gave NaN logits for seeds 0, 2 and 3 before the normalisation."""
    image = np.asarray(Image.open(busi_dir / "malignant" / "malignant (1).png").convert("L").resize((256, 256)))
    image = image.astype(np.float32)
    x = torch.from_numpy((image - image.min()) / (image.max() - image.min()))[None, None]
    torch.manual_seed(seed)
    with torch.no_grad():
        assert torch.isfinite(DCNet().eval()(x)).all()

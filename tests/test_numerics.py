"""Mixed precision: a training step of each network at 256 x 256 under autocast (bfloat16 on the CPU, float16
with gradient scaling on a GPU) gives a finite loss, finite gradients and finite weights."""

from __future__ import annotations

import pytest
import torch

from lesionseg.losses import DCNetLoss, TaiChiNetLoss
from lesionseg.networks.nets import DCNet, TaiChiNet

SIZE = 256


def _batch(network_name: str, device: str, batch: int = 1):
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 1, SIZE, SIZE, generator=generator)
    lesion = torch.zeros(batch, 1, SIZE, SIZE)
    lesion[:, :, 96:160, 80:176] = 1.0
    if network_name == "taichinet":  # (G_p, E_p, H_p): the step-2 target, complementary loss on
        easy = lesion.clone()
        easy[:, :, 96:128] = 0.0
        target = torch.cat([lesion, easy, lesion - easy], dim=1)
    else:
        target = lesion
    return image.to(device), target.to(device)


def _networks():
    # the published widths (DC-Net 54 M, TaiChiNet 18 M parameters), as the bundles train them
    return {
        "dcnet": (lambda: DCNet(), lambda: DCNetLoss()),
        "taichinet": (lambda: TaiChiNet(), lambda: TaiChiNetLoss(step=2)),
    }


def _training_step(name: str, device: str, dtype: torch.dtype, scaler=None) -> None:
    torch.manual_seed(0)
    make_network, make_loss = _networks()[name]
    network, loss_function = make_network().to(device).train(), make_loss()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    image, target = _batch(name, device)
    with torch.autocast(device, dtype=dtype):
        outputs = network(image)
        loss = loss_function(outputs, target)
    assert outputs[0].dtype == dtype, "autocast did not run the network in low precision"
    assert torch.isfinite(loss), f"{name}: loss {loss}"
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    gradients = [p.grad for p in network.parameters() if p.grad is not None]
    assert len(gradients) == len(list(network.parameters())), "some parameters got no gradient"
    assert all(torch.isfinite(g).all() for g in gradients), f"{name}: non-finite gradients"
    assert any(g.abs().sum() > 0 for g in gradients)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in network.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcnet", "taichinet"])
def test_bfloat16_autocast_training_step_on_cpu_is_finite(name):
    # about 25 s (DC-Net) and 13 s (TaiChiNet) on two CPU cores: bfloat16 has no fast CPU kernels everywhere
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _training_step(name, "cpu", torch.bfloat16)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 autocast is checked on a GPU; none here")
@pytest.mark.parametrize("name", ["dcnet", "taichinet"])
def test_float16_autocast_training_step_on_gpu_is_finite(name):
    _training_step(name, "cuda", torch.float16, scaler=torch.amp.GradScaler("cuda"))

"""TorchScript and ONNX exports of DC-Net and TaiChiNet: the same logits as eager PyTorch (within 1e-4 of the
output's scale) on random images and phantoms at two sizes and two batch sizes, from one file each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lesionseg.data.phantoms import make_phantom
from lesionseg.deploy import check_close, export_onnx, export_torchscript
from lesionseg.networks.nets import DCNet, TaiChiNet

NARROW = (4, 8, 16, 32, 64)
# the export's sizes and two others: height and width are free in both files
SIZES = ((64, 64), (96, 128))


def _briefly_trained(name: str) -> torch.nn.Module:
    """A narrow network after four Adam steps on phantoms and noise (both sizes): an untrained DC-Net in
    evaluation mode is no test of an export, since its running statistics (mean 0, variance 1) let its
    cross-correlation fusions grow the logits to 1e20 and beyond, where float32 rounding alone differs."""
    torch.manual_seed(0)
    net = DCNet(features=NARROW) if name == "dcnet" else TaiChiNet(features=NARROW)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for step in range(4):
        size = SIZES[step % 2]
        phantoms = _images(size, "phantom", batch=2, seed=100 + step)
        images = torch.cat([phantoms, _images(size, "random", batch=2, seed=100 + step)])
        targets = torch.cat([(phantoms < 0.25).float(), torch.zeros(2, 1, *size)])
        outputs = net(images)
        loss = sum(F.binary_cross_entropy_with_logits(output, targets) for output in outputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def _images(size: tuple[int, int], kind: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    if kind == "random":
        return torch.rand(batch, 1, *size, generator=torch.Generator().manual_seed(seed))
    rng = np.random.default_rng(seed)
    kinds = ("benign", "malignant", "normal")
    images = [make_phantom(rng, *size, kinds[i % 3]).image.astype(np.float32) / 255.0 for i in range(batch)]
    return torch.from_numpy(np.stack(images)[:, None])


CASES = [(size, kind, batch) for size in SIZES for kind in ("random", "phantom") for batch in (1, 2)]


@pytest.fixture(scope="module", params=["dcnet", "taichinet"])
def network(request):
    return request.param, _briefly_trained(request.param)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_matches_eager_at_any_size(network, tmp_path):
    name, net = network
    export_torchscript(net, tmp_path / f"{name}.ts", image_size=SIZES[0])
    loaded = torch.jit.load(str(tmp_path / f"{name}.ts"))
    assert not isinstance(loaded, torch.jit.TopLevelTracedModule), "scripted, not traced"
    with torch.no_grad():
        for size, kind, batch in CASES:
            image = _images(size, kind, batch, seed=batch)
            expected = net(image)
            assert torch.isfinite(expected).all() and expected.std() > 1e-3, "a constant output compares nothing"
            check_close(expected, loaded(image), 1e-4, what=f"{name} TorchScript at {size} {kind} batch {batch}")


def test_torchscript_keeps_the_input_checks(network, tmp_path):
    name, net = network
    loaded = export_torchscript(net, tmp_path / f"{name}.ts")
    with pytest.raises(Exception, match="divisible by 16"):
        loaded(torch.rand(1, 1, 40, 32))


def test_onnx_matches_eager_at_any_size(network, tmp_path):
    pytest.importorskip("onnx", reason='ONNX export needs the onnx package: pip install "lesionseg[onnx]"')
    pytest.importorskip("onnxruntime", reason='ONNX Runtime is not installed: pip install "lesionseg[onnx]"')
    from lesionseg.deploy import onnx_session

    name, net = network
    model = export_onnx(net, tmp_path / f"{name}.onnx", image_size=SIZES[0])
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[2:] == ["height", "width"]
    session = onnx_session(tmp_path / f"{name}.onnx", threads=1)
    with torch.no_grad():
        for size, kind, batch in CASES:
            image = _images(size, kind, batch, seed=batch)
            (output,) = session.run(None, {"image": image.numpy()})
            check_close(net(image), output, 1e-4, what=f"{name} ONNX at {size} {kind} batch {batch}")


def test_check_close_fails_on_a_real_difference():
    expected = torch.tensor([[0.0, 10.0, -20.0]])
    assert check_close(expected, expected + 1e-4) == pytest.approx(1e-4, rel=0.05)  # 1e-4 x scale 20 allowed
    with pytest.raises(AssertionError, match="differs from eager PyTorch by up to 0.01"):
        check_close(expected, expected + torch.tensor([[0.0, 0.0, 0.01]]))
    with pytest.raises(AssertionError, match="shape"):
        check_close(expected, expected[:, :2])
    with pytest.raises(AssertionError, match="not finite"):
        check_close(torch.tensor([float("nan")]), torch.tensor([0.0]))


BUNDLES = {
    "dcnet": Path(__file__).resolve().parents[1] / "bundles" / "dcnet_bundle",
    "taichinet": Path(__file__).resolve().parents[1] / "bundles" / "taichinet_bundle",
}
# the README's `python -m monai.bundle onnx_export ... --use_trace True --converter_kwargs "{...}"`
README_CONVERTER_KWARGS = {
    "dynamo": False,
    "input_names": ["image"],
    "output_names": ["pred"],
    "dynamic_axes": {"image": {0: "batch", 2: "height", 3: "width"}, "pred": {0: "batch", 2: "height", 3: "width"}},
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_monai_bundle_export_commands_of_the_readme(network, tmp_path):
    """``ckpt_export`` (TorchScript by torch.jit.script) and ``onnx_export`` of a bundle checkpoint, with the
    arguments the README gives, reproduce the network that wrote the checkpoint at another size."""
    from monai.bundle import ckpt_export, onnx_export

    name, net = network
    bundle = BUNDLES[name]
    torch.save(net.state_dict(), tmp_path / "model.pt")
    common = {
        "net_id": "network_def",
        "ckpt_file": str(tmp_path / "model.pt"),
        "meta_file": str(bundle / "configs" / "metadata.json"),
        "config_file": str(bundle / "configs" / "inference.yaml"),
        "bundle_root": str(bundle),
        "network_def#features": list(NARROW),
    }
    image = _images((96, 128), "phantom", batch=2, seed=7)
    with torch.no_grad():
        expected = net(image)
    ckpt_export(filepath=str(tmp_path / "model.ts"), **common)
    with torch.no_grad():
        check_close(expected, torch.jit.load(str(tmp_path / "model.ts"))(image), what="ckpt_export TorchScript")
    pytest.importorskip("onnx", reason='onnx_export needs the onnx package: pip install "lesionseg[onnx]"')
    pytest.importorskip("onnxruntime", reason='ONNX Runtime is not installed: pip install "lesionseg[onnx]"')
    from lesionseg.deploy import onnx_session

    onnx_export(
        filepath=str(tmp_path / "model.onnx"),
        input_shape=[1, 1, 64, 64],
        use_trace=True,
        converter_kwargs=README_CONVERTER_KWARGS,
        **common,
    )
    (output,) = onnx_session(tmp_path / "model.onnx").run(None, {"image": image.numpy()})
    check_close(expected, output, what="onnx_export ONNX")

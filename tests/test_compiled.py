"""Compiled inference (lesionseg.engines.compiled): the same outputs as eager, one compile per network, the
weights shared, and a plain error where no C++ compiler is there."""

from __future__ import annotations

import doctest
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lesionseg.cli import main
from lesionseg.engines import AutocastInferer, CompilerMissingError, compile_for_inference
from lesionseg.engines import compiled as compiled_module

needs_cxx = pytest.mark.skipif(
    not any(shutil.which(name) for name in ("g++", "c++", "clang++")), reason="TorchInductor needs a C++ compiler"
)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1)
    )
    with torch.no_grad():  # running statistics that are not (0, 1)
        net.train()(torch.rand(2, 1, 16, 16) * 3 + 1)
    return net.eval()


@needs_cxx
def test_docstring_examples():  # they compile, so they need the C++ compiler too
    assert doctest.testmod(compiled_module, raise_on_error=False).failed == 0


@needs_cxx
def test_compiled_forward_matches_eager_and_shares_the_weights():
    net, image = _net(), torch.rand(2, 1, 16, 16)
    forward = compile_for_inference(net)
    with torch.inference_mode():
        torch.testing.assert_close(forward(image), net(image), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # new weights loaded into the eager network are the compiled one's too
        for parameter in net.parameters():
            parameter.mul_(-2.0)
    with torch.inference_mode():
        torch.testing.assert_close(forward(image), net(image), rtol=1e-5, atol=1e-6)
    assert set(net.state_dict()) == set(_net().state_dict())  # model.pt keys: no `_orig_mod.` prefix


@needs_cxx
def test_autocast_inferer_compiles_each_network_once_and_returns_float32():
    inferer = AutocastInferer("bf16", compile=True)
    first, second, image = _net(), _net(), torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        second[0].weight.mul_(0.5)
    with torch.inference_mode():
        out = inferer(image, first)
        compiled = inferer.compiled._compiled
        again = inferer(image, first)
        assert inferer.compiled._compiled is compiled  # the same network is not compiled again
        other = inferer(image, second)
        assert inferer.compiled._compiled is not compiled
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eager, eager_other = first(image).float(), second(image).float()
    assert out.dtype == torch.float32
    torch.testing.assert_close(again, out)
    # bf16 rounding in either path: within a few bf16 ulps of the logits' scale
    torch.testing.assert_close(out, eager, rtol=0.02, atol=0.02 * eager.abs().max().item())
    torch.testing.assert_close(other, eager_other, rtol=0.02, atol=0.02 * eager_other.abs().max().item())


def test_without_a_cxx_compiler_the_error_says_so(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(CompilerMissingError, match=r"needs a C\+\+ compiler \(looked for /nonexistent/c\+\+\)"):
        compile_for_inference(_net(), "cpu")
    compile_for_inference(_net(), "cuda")  # no host compiler check for CUDA (Triton)


@pytest.fixture
def tiny_bundle(tmp_path):
    from monai.bundle import ConfigParser

    from lesionseg.workflows.bundle import find_config

    bundle = tmp_path / "taichinet_bundle"
    shutil.copytree(
        Path(__file__).resolve().parents[1] / "bundles" / "taichinet_bundle",
        bundle,
        ignore=shutil.ignore_patterns("models", "eval", "runs"),
    )
    parser = ConfigParser()
    parser.read_config(find_config(bundle, "inference"))
    parser["network_def"]["features"] = [2, 4, 8, 16, 32]
    (bundle / "models").mkdir()
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle


@needs_cxx
@pytest.mark.slow
def test_predict_compile_gives_the_eager_masks(tiny_bundle, tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 56), dtype=np.uint8)).save(images / f"image{index}.png")
    args = ["predict", "--bundle", str(tiny_bundle), "--input", str(images), "--device", "cpu", "--probabilities",
            "--override=network_def#features=[2,4,8,16,32]", "--override=image_size=[32,32]"]
    assert main([*args, "--output", str(tmp_path / "eager")]) == 0
    assert main([*args, "--output", str(tmp_path / "compiled"), "--compile"]) == 0
    for index in range(3):
        eager = np.asarray(Image.open(tmp_path / "eager" / f"image{index}_prob.png"), dtype=np.int32)
        compiled = np.asarray(Image.open(tmp_path / "compiled" / f"image{index}_prob.png"), dtype=np.int32)
        assert np.abs(eager - compiled).max() <= 1  # 8-bit probabilities: at most one rounding step apart


def test_predict_compile_refuses_torchscript_and_a_missing_compiler(tiny_bundle, tmp_path, capsys, monkeypatch):
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((40, 56), dtype=np.uint8)).save(image)
    scripted = tmp_path / "model.ts"
    torch.jit.script(_net()).save(str(scripted))
    assert main(["predict", "--model", str(scripted), "--input", str(image), "--output", str(tmp_path / "a"),
                 "--compile"]) == 2
    assert "a TorchScript --model is compiled already" in capsys.readouterr().err
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    args = ["predict", "--bundle", str(tiny_bundle), "--input", str(image), "--output", str(tmp_path / "b"),
            "--device", "cpu", "--compile", "--override=network_def#features=[2,4,8,16,32]"]
    assert main(args) == 2
    assert "--compile: compiled inference on a CPU needs a C++ compiler" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()

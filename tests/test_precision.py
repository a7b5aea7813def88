"""The ``precision`` setting (fp32, bf16, fp16, auto): how ``auto`` resolves per device, the autocast inferer the
bundles run their forward passes through, every workflow of both bundles in bf16 on the CPU (float32 outputs, the
loss summed in float64, plain float32 checkpoint, same-seed determinism, resume), ``lesionseg predict --precision``,
and TaiChiNet's channels-last memory format."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_testing import make_workflow
from monai.bundle import ConfigParser
from monai.engines import IterationEvents
from PIL import Image

from lesionseg.cli import main
from lesionseg.data.phantoms import write_phantom_dataset
from lesionseg.engines import AutocastInferer, Precision, resolve_precision
from lesionseg.engines import precision as precision_module
from lesionseg.engines.precision import CpuFeatures, cpu_features, to_float32

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ("dcnet_bundle", "taichinet_bundle")
TINY = {"image_size": [32, 32], "network_def#features": [2, 4, 8, 16, 32], "num_workers": 0, "batch_size": 2}


def _cpu(amx: bool, avx512_bf16: bool) -> CpuFeatures:
    return CpuFeatures(model="Test CPU", amx_bf16=amx, avx512_bf16=avx512_bf16, capability="AVX512", source="test")


# ---------------------------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    "amx, avx512_bf16, expected",
    [(True, True, "bf16"), (True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")],
)
def test_auto_on_the_cpu_picks_bf16_with_amx_or_avx512_bf16_and_logs_why(
    monkeypatch, caplog, amx, avx512_bf16, expected
):
    monkeypatch.setattr(precision_module, "cpu_features", lambda: _cpu(amx, avx512_bf16))
    with caplog.at_level(logging.INFO, logger="lesionseg.engines.precision"):
        resolved = resolve_precision("auto", "cpu")
    assert (resolved.name, resolved.device_type, resolved.requested) == (expected, "cpu", "auto")
    assert resolved.dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[expected]
    assert not resolved.grad_scaling
    message = caplog.records[-1].getMessage()
    assert f"precision {expected}" in message and "Test CPU" in message
    assert f"AMX-BF16 {'yes' if amx else 'no'}" in message
    assert f"AVX512-BF16 {'yes' if avx512_bf16 else 'no'}" in message
    assert ("native" in message) and ((expected == "fp32") == ("no native" in message))


@pytest.mark.parametrize(
    "capability, expected", [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp16"), ((6, 1), "fp16")]
)
def test_auto_on_cuda_picks_bf16_from_compute_capability_8_and_fp16_below(monkeypatch, caplog, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    with caplog.at_level(logging.INFO, logger="lesionseg.engines.precision"):
        resolved = resolve_precision("auto", torch.device("cuda", 1))
    assert (resolved.name, resolved.device_type) == (expected, "cuda")
    assert resolved.grad_scaling == (expected == "fp16")  # fp16 trains with a gradient scaler
    assert f"compute capability {capability[0]}.{capability[1]}" in caplog.records[-1].getMessage()
    # an explicit fp16 is accepted on CUDA
    assert resolve_precision("FP16", "cuda").grad_scaling


def test_explicit_settings_and_bad_ones(monkeypatch, caplog):
    monkeypatch.setattr(precision_module, "cpu_features", lambda: _cpu(False, False))
    assert resolve_precision("fp32", "cpu").name == "fp32"
    with caplog.at_level(logging.WARNING, logger="lesionseg.engines.precision"):
        assert resolve_precision(" BF16 ", "cpu").name == "bf16"  # runs, emulated, with a warning
    assert any("without AMX or AVX-512-BF16" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="'fp16' runs on CUDA only"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match=r"one of fp32, bf16, fp16, auto; got 'half'"):
        resolve_precision("half", "cpu")
    with pytest.raises(ValueError, match="one of fp32, bf16, fp16, auto"):
        AutocastInferer(True)  # the old boolean `amp` is not a precision


def test_cpu_features_come_from_proc_cpuinfo_flags_else_from_torch(monkeypatch):
    cpu_features.cache_clear()
    try:
        monkeypatch.setattr(precision_module, "_read_cpuinfo", lambda: ("Xeon Test", {"fpu", "avx512f", "avx512_bf16"}))
        features = cpu_features()
        assert (features.model, features.amx_bf16, features.avx512_bf16, features.source) == (
            "Xeon Test", False, True, "/proc/cpuinfo")
        assert features.native_bf16
        cpu_features.cache_clear()
        monkeypatch.setattr(precision_module, "_read_cpuinfo", lambda: None)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
        features = cpu_features()
        assert (features.amx_bf16, features.avx512_bf16, features.source) == (True, False, "torch")
    finally:
        monkeypatch.undo()
        cpu_features.cache_clear()
    # this machine: the real file (or torch) read without error
    assert isinstance(cpu_features().describe(), str)


# ------------------------------------------------------------------------------------------- the inferer


class _Recorder(torch.nn.Module):
    """A convolution that records the dtype it computed in, returning (lesion, extra) as the networks do in
    training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.dtypes: list[torch.dtype] = []

    def forward(self, x):
        y = self.conv(x)
        self.dtypes.append(y.dtype)
        return y[:, :1], y[:, 1:]


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_autocast_inferer_runs_the_network_in_the_precision_and_returns_float32(name, dtype):
    net = _Recorder()
    outputs = AutocastInferer(Precision(name, "cpu"))(torch.rand(2, 1, 8, 8), net)
    assert net.dtypes == [dtype]
    assert isinstance(outputs, tuple) and all(o.dtype == torch.float32 for o in outputs)
    assert net.conv.weight.dtype == torch.float32  # autocast casts copies: the weights stay float32
    # fp32 means fp32 also inside someone else's autocast region
    if name == "fp32":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            AutocastInferer(Precision("fp32", "cpu"))(torch.rand(2, 1, 8, 8), net)
        assert net.dtypes[-1] == torch.float32


def test_autocast_inferer_resolves_a_setting_for_the_inputs_device(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_features", lambda: _cpu(True, True))
    inferer = AutocastInferer("auto")
    net = _Recorder()
    inferer(torch.rand(1, 1, 4, 4), net)
    assert inferer.precision.name == "bf16" and net.dtypes == [torch.bfloat16]
    # resolved for another device type (MONAI Label changes the device per request): resolved again
    inferer = AutocastInferer(Precision("fp16", "cuda", requested="auto"))
    inferer(torch.rand(1, 1, 4, 4), net)
    assert (inferer.precision.name, inferer.precision.device_type) == ("bf16", "cpu")


def test_to_float32_casts_nested_outputs_and_keeps_other_values():
    half = torch.ones(2, dtype=torch.bfloat16)
    labels = torch.ones(2, dtype=torch.int64)
    cast = to_float32({"a": [half, (half, labels)], "b": None})
    assert cast["a"][0].dtype == torch.float32 and cast["a"][1][0].dtype == torch.float32
    assert cast["a"][1][1] is labels and cast["b"] is None
    single = torch.ones(2)
    assert to_float32(single) is single


# ------------------------------------------------------------------------------------------- the bundles


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("precision") / "data", num_images=10, seed=3, size=(40, 48),
                                 progress=False)


def _train(bundle: str, data: Path, root: Path, precision: str, max_epochs: int = 2, **extra):
    extra = {"easy_to_hard": False, **extra} if bundle == "taichinet_bundle" else extra
    workflow = make_workflow(
        REPO / "bundles" / bundle, ["train"], "train", **TINY, max_epochs=max_epochs, precision=precision,
        tensorboard=False, dataset_dir=str(data), ckpt_dir=str(root / "models"), output_dir=str(root / "eval"), **extra,
    )
    workflow.initialize()
    seen = {"forward": set(), "pred": set(), "loss": set()}
    first_conv = next(m for m in workflow.network_def.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen["forward"].add(o.dtype))

    def record(engine):
        seen["pred"].update(p.dtype for p in (engine.state.output["pred"] if isinstance(engine.state.output["pred"],
                                                                                         (tuple, list))
                                               else [engine.state.output["pred"]]))
        seen["loss"].add(engine.state.output["loss"].dtype)

    workflow.trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, record)
    assert not workflow.check_properties()
    workflow.run()
    workflow.finalize()
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    return workflow, seen, state


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_bf16_training_on_the_cpu_autocasts_keeps_outputs_and_checkpoint_float32_and_repeats(
    bundle, phantoms, tmp_path
):
    workflow, seen, state = _train(bundle, phantoms, tmp_path / "bf16", "bf16")
    assert workflow.parser.get_parsed_content("precision_policy").name == "bf16"
    assert not workflow.trainer.amp  # MONAI's CUDA-only autocast and gradient scaler stay off for bf16
    assert seen["forward"] == {torch.bfloat16}, "the network did not run in bfloat16 on the CPU"
    # float32 outputs; the composite losses sum their terms in float64 (finite for any float32 logits)
    assert seen["pred"] == {torch.float32} and seen["loss"] == {torch.float64}
    _, seen32, state32 = _train(bundle, phantoms, tmp_path / "fp32", "fp32")
    assert seen32["forward"] == {torch.float32}
    # model.pt: the same plain state dict, float32 weights
    assert list(state) == list(state32)
    assert all(state[k].dtype == state32[k].dtype for k in state)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    # the same seed gives the same bits
    _, _, again = _train(bundle, phantoms, tmp_path / "again", "bf16")
    assert all(torch.equal(state[k], again[k]) for k in state)
    # resume: a third epoch continues from the saved state
    resumed, _, _ = _train(bundle, phantoms, tmp_path / "bf16", "bf16", max_epochs=3)
    assert resumed.trainer.state.epoch == 3
    assert resumed.trainer.state.iteration == 3 * 4  # 8 training images, batch 2: epochs 1-2 were not rerun


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_workflow_has_the_precision_setting(bundle):
    configs = REPO / "bundles" / bundle / "configs"
    for names in (["train"], ["train", "evaluate"], ["inference"], ["train", "multi_gpu_train"]):
        parser = ConfigParser()
        parser.read_config([str(configs / f"{name}.yaml") for name in names])
        # each network's default from the BUSI check of bf16 against fp32 (issue 14, docs/precision.md)
        assert parser["precision"] == {"dcnet_bundle": "auto", "taichinet_bundle": "fp32"}[bundle], names
        parser["precision"] = "bf16"
        if "multi_gpu_train" in names:
            continue  # its network needs a process group; it inherits train.yaml's inferers
        inferer_ids = ["inferer"] if names == ["inference"] else ["train#inferer", "validate#inferer"]
        for inferer_id in inferer_ids:
            inferer = parser.get_parsed_content(inferer_id)
            assert isinstance(inferer, AutocastInferer) and inferer.precision.name == "bf16", (names, inferer_id)
    if bundle == "taichinet_bundle":
        parser = ConfigParser()
        parser.read_config(str(configs / "prepare.yaml"))
        parser["precision"] = "bf16"
        assert parser.get_parsed_content("train#inferer").precision.name == "bf16"
        assert parser.get_parsed_content("preparation#precision").name == "bf16"
        # train.yaml hands its setting to the preparation it runs
        train = ConfigParser()
        train.read_config(str(configs / "train.yaml"))
        train["precision"] = "bf16"
        assert train.get_parsed_content("prepare_parts").keywords["shared"]["precision"] == "bf16"


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("config", ["train", "inference"])
def test_both_bundles_run_the_network_channels_last(bundle, config):
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / f"{config}.yaml"))
    parser["network_def#features"] = [2, 4, 8, 16, 32]
    network = parser.get_parsed_content("network")
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)


def test_taichinet_gives_the_same_numbers_channels_last():
    from lesionseg.networks.nets import TaiChiNet

    torch.manual_seed(0)
    contiguous = TaiChiNet(features=(4, 8, 16, 32, 64))
    channels_last = TaiChiNet(features=(4, 8, 16, 32, 64)).to(memory_format=torch.channels_last)
    channels_last.load_state_dict(contiguous.state_dict())
    x = torch.rand(2, 1, 32, 32)
    # the summation order differs between the layouts, and batch statistics (training mode) amplify it
    with torch.no_grad():
        torch.testing.assert_close(contiguous.eval()(x), channels_last.eval()(x), rtol=1e-4, atol=1e-5)
        for a, b in zip(contiguous.train()(x), channels_last.train()(x)):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def dcnet_tiny(tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("dcnet") / "dcnet_bundle"
    shutil.copytree(REPO / "bundles" / "dcnet_bundle" / "configs", bundle / "configs")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    parser["network_def#features"] = TINY["network_def#features"]
    torch.manual_seed(0)
    (bundle / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle


def test_predict_precision_option(dcnet_tiny, tmp_path, capsys, caplog):
    from lesionseg.workflows.predictor import load_predictor

    overrides = {"network_def#features": TINY["network_def#features"], "image_size": [32, 32]}
    # the bundle's setting, auto: bf16 on a CPU with AMX or AVX-512-BF16, fp32 on others
    expected = resolve_precision("auto", "cpu").name
    assert load_predictor(dcnet_tiny, overrides=overrides, device="cpu").precision.name == expected
    predictor = load_predictor(dcnet_tiny, overrides=overrides, device="cpu", precision="bf16")
    assert predictor.precision.name == "bf16"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 56), dtype=np.uint8)).save(tmp_path / "image.png")
    probability = predictor(np.asarray(Image.open(tmp_path / "image.png")), "image.png")
    assert probability.dtype == np.float32 and probability.shape == (40, 56)
    args = ["predict", "--bundle", str(dcnet_tiny), "--input", str(tmp_path / "image.png"), "--device", "cpu",
            "--override=network_def#features=[2,4,8,16,32]", "--override=image_size=[32,32]"]
    assert main([*args, "--output", str(tmp_path / "bf16"), "--precision", "bf16"]) == 0
    assert (tmp_path / "bf16" / "image_mask.png").is_file()
    capsys.readouterr()
    assert main([*args, "--output", str(tmp_path / "fp16"), "--precision", "fp16"]) == 2
    assert "'fp16' runs on CUDA only" in capsys.readouterr().err
    assert not (tmp_path / "fp16").exists()
    with pytest.raises(SystemExit):
        main([*args, "--output", str(tmp_path / "x"), "--precision", "half"])


@pytest.mark.parametrize("bundle", BUNDLES)
def test_fp16_training_uses_monai_gradient_scaler_with_its_autocast_off_and_a_float32_loss(bundle):
    """fp16 (CUDA only, so emulated here with a Precision made for the CPU): the trainer gets amp=True for MONAI's
    GradScaler and amp_kwargs that switch MONAI's own autocast (which would take the loss in) off."""
    from monai.engines import SupervisedTrainer

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.yaml"))
    parser["precision_policy"] = "$lesionseg.engines.Precision('fp16', 'cpu')"
    amp = parser.get_parsed_content("train#trainer#amp")
    amp_kwargs = parser.get_parsed_content("train#trainer#amp_kwargs")
    assert amp is True and amp_kwargs == {"enabled": False}
    net = _Recorder()
    data = [{"image": torch.rand(2, 1, 8, 8), "label": (torch.rand(2, 1, 8, 8) > 0.5).float()}]
    with warnings.catch_warnings():  # MONAI's GradScaler is disabled without CUDA, and says so
        warnings.simplefilter("ignore")
        trainer = SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=data, network=net,
            optimizer=torch.optim.Adam(net.parameters()), loss_function=lambda pred, label: torch.nn.functional.
            binary_cross_entropy_with_logits(pred[0], label), inferer=parser.get_parsed_content("train#inferer"),
            amp=amp, amp_kwargs=amp_kwargs, decollate=False,
        )
    losses = []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda engine: losses.append(engine.state.output["loss"]))
    trainer.run()
    assert trainer.scaler is not None
    assert net.dtypes == [torch.float16] and losses[0].dtype == torch.float32


class _DeepSupervision(torch.nn.Module):
    """Two 'heads' as BasicUNetPlusPlus(deep_supervision=True) returns them in eval mode, recording the dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.dtypes: list[torch.dtype] = []

    def forward(self, x):
        y = self.conv(x)
        self.dtypes.append(y.dtype)
        return [y, -y]


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_easy_hard_mining_runs_in_the_precision(phantoms, tmp_path, precision, dtype):
    from ignite.engine import Engine
    from monai.transforms import Compose, EnsureTyped, Resized, ScaleIntensityd

    from lesionseg.data.splits import datalist_section
    from lesionseg.data.transforms import LoadUltrasoundd
    from lesionseg.engines.easy_hard import EasyHardPreparation

    training = datalist_section(phantoms, "training", val_fraction=0.2, seed=0)
    network = _DeepSupervision()
    preprocessing = Compose([
        LoadUltrasoundd(keys=["image", "label"]),
        Resized(keys=["image", "label"], spatial_size=(32, 32), mode=["area", "nearest-exact"]),
        ScaleIntensityd(keys="image"),
        EnsureTyped(keys=["image", "label"], dtype=torch.float32),
    ])
    preparation = EasyHardPreparation(Engine(lambda engine, batch: None), training, tmp_path / "parts", preprocessing,
                                      network=network, batch_size=4, precision=precision)
    (tmp_path / "parts").mkdir()  # as run() makes it before training and mining
    preparation._mine()
    assert network.dtypes and set(network.dtypes) == {dtype}


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_validation_refuses_non_finite_outputs_naming_the_image(bundle, phantoms, tmp_path):
    """A diverged network's NaN outputs would threshold to empty masks and read as a low validation Dice."""
    from lesionseg.engines import NonFiniteError

    extra = {"easy_to_hard": False} if bundle == "taichinet_bundle" else {}
    workflow = make_workflow(
        REPO / "bundles" / bundle, ["train"], "train", **TINY, max_epochs=1, tensorboard=False,
        dataset_dir=str(phantoms), ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"), **extra,
    )  # fmt: skip
    workflow.initialize()
    with torch.no_grad():
        for parameter in workflow.network_def.parameters():
            parameter.fill_(float("nan"))
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    with pytest.raises(Exception) as raised:
        evaluator.run()
    errors = [raised.value]
    while errors[-1].__cause__ is not None or errors[-1].__context__ is not None:
        errors.append(errors[-1].__cause__ or errors[-1].__context__)
    refused = [error for error in errors if isinstance(error, NonFiniteError)]
    assert refused, repr(raised.value)
    assert str(refused[0]).startswith(str(phantoms)) and "the network's output holds" in str(refused[0])

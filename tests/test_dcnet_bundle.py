"""The DC-Net bundle, exercised the way the MONAI model zoo's CI does: ConfigWorkflow -> initialize ->
check_properties() -> run -> finalize, for train, evaluate and inference, on tiny phantoms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_testing import check_evaluation_files, make_workflow, run_zoo_pattern
from monai.bundle import verify_metadata, verify_net_in_out
from PIL import Image

from lesionseg.data.io import read_mask
from lesionseg.data.phantoms import write_phantom_dataset
from lesionseg.data.readers import read_dataset
from lesionseg.data.splits import datalist_section
from lesionseg.engines import CheckpointError

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "dcnet_bundle"
SCHEMA = Path(__file__).resolve().parents[1].parent / "shared" / "schemas" / "meta_schema_20240725.json"
CONFIGS = BUNDLE / "configs"
# small enough for 2 CPU cores: 32x32 inputs and a network 16x narrower than the published one
TINY = {"image_size": [32, 32], "network_def#features": [2, 4, 8, 16, 32], "num_workers": 0, "batch_size": 2}


def _workflow(config_names, workflow_type, **overrides):
    return make_workflow(BUNDLE, config_names, workflow_type, **overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Phantoms and one short training run shared by the evaluate and inference tests."""
    root = tmp_path_factory.mktemp("dcnet_bundle")
    data = write_phantom_dataset(root / "data", num_images=10, seed=3, size=(48, 64))
    overrides = {**TINY, "dataset_dir": str(data), "ckpt_dir": str(root / "models"), "output_dir": str(root / "train")}
    workflow = _workflow(["train"], "train", max_epochs=2, **overrides)
    run_zoo_pattern(workflow)
    return root, data, overrides, workflow


@pytest.mark.slow
def test_train_writes_best_checkpoint_as_plain_state_dict(trained):
    root, _, _, workflow = trained
    checkpoint = root / "models" / "model.pt"
    assert checkpoint.is_file()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    network = workflow.network_def
    network.load_state_dict(state)  # a plain state dict of the network, nothing wrapped around it
    assert workflow.trainer.state.epoch == 2
    assert list((root / "train").glob("events.out.tfevents.*")), "TensorBoard logs are missing"


@pytest.mark.slow
def test_evaluate_writes_masks_at_source_size_and_metrics(trained):
    root, data, overrides, _ = trained
    eval_dir = root / "evaluation"
    workflow = _workflow(["train", "evaluate"], None, **{**overrides, "output_dir": str(eval_dir)})
    run_zoo_pattern(workflow)
    masks = sorted((eval_dir / "predictions").glob("*_mask.png"))
    assert masks and len(masks) == len(list((eval_dir / "predictions").glob("*_overlay.png")))
    for mask in masks:
        source = next(data.rglob(mask.name.replace("_mask.png", ".png")))
        with Image.open(source) as image, Image.open(mask) as predicted:
            assert predicted.size == image.size
            assert set(predicted.getdata()) <= {0, 255}
    validation = datalist_section(data, "validation", val_fraction=0.2, seed=0)
    check_evaluation_files(eval_dir, [item["image"] for item in validation])
    assert not list(eval_dir.glob("*_raw.csv")), "MONAI's MetricsSaver files would duplicate per_image.csv"


@pytest.mark.slow
def test_evaluate_a_whole_folder_scores_every_image_against_its_mask_on_disk(trained):
    root, data, overrides, _ = trained
    eval_dir = root / "evaluation_all"
    workflow = _workflow(["train", "evaluate"], None, **{**overrides, "output_dir": str(eval_dir)}, eval_section="all")
    run_zoo_pattern(workflow)
    items = read_dataset(data)
    rows = check_evaluation_files(eval_dir, [item["image"] for item in items])
    assert any(int(row["gt_pixels"]) == 0 for row in rows), "the normal (empty-mask) images are missing"
    labels = {item["image"]: item["label"] for item in items}
    for row in rows:
        # the row's Dice is the written source-size mask's Dice against the mask file(s) as read
        gt = read_mask(labels[row["image"]]) > 0
        with Image.open(eval_dir / "predictions" / f"{Path(row['image']).stem}_mask.png") as picture:
            pred = np.asarray(picture) > 0
        dice = 1.0 if not gt.any() and not pred.any() else 2 * (gt & pred).sum() / (gt.sum() + pred.sum())
        assert float(row["dice"]) == pytest.approx(dice, abs=1e-6), row["image"]
        assert int(row["gt_pixels"]) == gt.sum() and int(row["pred_pixels"]) == pred.sum()


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, refused",
    [
        ({"image_size": [48, 48]}, "image_size: trained with [32, 32], now [48, 48]"),
        ({"network_def#pooling": "max"}, "network_def#pooling: trained with 'dcp', now 'max'"),
        ({"val_fraction": 0.4}, "val_fraction: trained with 0.2, now 0.4"),
        ({"classes": ["benign"]}, "the validation images differ"),
    ],
)
def test_evaluate_refuses_settings_the_model_was_not_trained_with(trained, change, refused):
    """The weights load at any size and under any option without parameters: the run's training state decides."""
    root, _, overrides, _ = trained
    eval_dir = root / "evaluation_refused"
    workflow = _workflow(["train", "evaluate"], None, **{**overrides, "output_dir": str(eval_dir), **change})
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps an error of a config expression
        run_zoo_pattern(workflow)
    error = _cause(raised.value, CheckpointError)
    assert isinstance(error, CheckpointError) and refused in str(error), raised.value
    assert "--check_training_settings False" in str(error)
    assert not (eval_dir / "summary.json").exists()


@pytest.mark.slow
def test_evaluate_under_other_settings_on_purpose(trained):
    """`--check_training_settings False` scores at another size; another section ignores the split."""
    root, data, overrides, _ = trained
    for name, change in (
        ("other_size", {"image_size": [48, 48], "check_training_settings": False}),
        ("all_images", {"val_fraction": 0.4, "eval_section": "all"}),
    ):
        eval_dir = root / name
        run_zoo_pattern(_workflow(["train", "evaluate"], None, **{**overrides, "output_dir": str(eval_dir), **change}))
        assert (eval_dir / "summary.json").is_file(), name
    workflow = _workflow(["train", "evaluate"], None, **{**overrides, "check_training_settings": "False"})
    with pytest.raises(RuntimeError) as raised:
        run_zoo_pattern(workflow)
    assert "check_training_settings: must be true or false" in str(_cause(raised.value, ValueError))


def _cause(error: BaseException, kind: type) -> BaseException:
    """The first error of ``kind`` in the chain of ``error`` (else the last one)."""
    while not isinstance(error, kind) and (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    return error


@pytest.mark.slow
def test_inference_segments_a_folder(trained, tmp_path):
    root, data, overrides, _ = trained
    workflow = _workflow(
        ["inference"],
        "infer",
        dataset_dir=str(data),
        ckpt_dir=overrides["ckpt_dir"],
        output_dir=str(tmp_path),
        image_size=TINY["image_size"],
        **{"network_def#features": TINY["network_def#features"]},
    )
    run_zoo_pattern(workflow)
    sources = [p for p in data.rglob("*.png") if "_mask" not in p.name]
    assert len(list(tmp_path.glob("*_mask.png"))) == len(sources)


@pytest.mark.slow
def test_old_style_run_training_command_trains(tmp_path):
    """``python -m monai.bundle run training --config_file ...``, the spelling users know, through the real CLI."""
    data = write_phantom_dataset(tmp_path / "data", num_images=6, seed=5, size=(40, 48), progress=False)
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.yaml"]
    command += ["--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf"]
    command += ["--bundle_root", str(BUNDLE), "--dataset_dir", str(data), "--max_epochs", "1"]
    command += ["--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "train")]
    for key, value in TINY.items():
        command += [f"--{key}", json.dumps(value)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny tensors, see conftest.one_torch_thread
    result = subprocess.run(command, cwd=BUNDLE, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "models" / "model.pt").is_file()


def test_metadata_against_offline_schema(tmp_path):
    if not SCHEMA.is_file():
        pytest.skip(f"model-zoo schema not found at {SCHEMA}")
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["modality"] == "US" and len(image["spatial_shape"]) == 2
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion"}
    assert meta["version"] in meta["changelog"]


def test_network_input_output_matches_metadata():
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.yaml"),
        n=2,
        **{"network_def#features": TINY["network_def#features"]},
    )


def _training_pipeline(part: str = "preprocessing", **overrides):
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update({"image_size": [32, 32], **overrides})
    pipeline = parser.get_parsed_content(f"train#{part}")
    pipeline = pipeline if isinstance(pipeline, Compose) else Compose(pipeline)
    pipeline.set_random_state(seed=0)
    return pipeline


def test_augmentation_is_off_by_default_and_aug_prob_moves_image_and_mask_together(tmp_path):
    """The paper recipe (flip_prob 0, aug_prob 0) leaves every training image as loaded; aug_prob 1 applies
    TaiChiNet's augmentation, with the geometric part on the image and its mask alike."""
    data = write_phantom_dataset(tmp_path / "data", num_images=3, seed=5, size=(40, 48), normal_fraction=0.0)
    item = {key: read_dataset(data)[0][key] for key in ("image", "label")}
    recipe = _training_pipeline()(dict(item))
    deterministic = _training_pipeline("deterministic_transforms")(dict(item))  # loading and resizing alone
    assert torch.equal(recipe["image"], deterministic["image"]) and torch.equal(recipe["label"], deterministic["label"])

    for seed in range(4):  # a few draws: each changes both tensors, and the mask stays a binary mask
        pipeline = _training_pipeline(aug_prob=1.0)
        pipeline.set_random_state(seed=seed)
        augmented = pipeline(dict(item))
        assert not torch.equal(augmented["image"], recipe["image"])
        assert not torch.equal(augmented["label"], recipe["label"])
        assert set(torch.unique(augmented["label"]).tolist()) <= {0.0, 1.0} and augmented["label"].sum() > 0
        # where the mask went the image went too: the lesion's mean intensity stays apart from the background's
        lesion = augmented["label"].bool()
        assert augmented["label"].shape == recipe["label"].shape
        gap = augmented["image"][lesion].mean() - augmented["image"][~lesion].mean()
        reference = recipe["image"][recipe["label"].bool()].mean() - recipe["image"][~recipe["label"].bool()].mean()
        assert torch.sign(gap) == torch.sign(reference) and abs(gap) > 0.3 * abs(reference)

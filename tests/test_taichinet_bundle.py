"""The TaiChiNet bundle, exercised the way the MONAI model zoo's CI does: ConfigWorkflow -> initialize ->
check_properties() -> run -> finalize, for the easy/hard preparation, easy-to-hard training, evaluation,
inference and distributed training, on tiny phantoms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from bundle_testing import check_evaluation_files, make_workflow, run_zoo_pattern
from ignite.engine import Events
from monai.bundle import verify_metadata, verify_net_in_out
from PIL import Image

from lesionseg.data.datalist import read_prepared_datalist
from lesionseg.data.io import read_mask
from lesionseg.data.phantoms import write_phantom_dataset
from lesionseg.data.splits import datalist_section
from lesionseg.engines.easy_hard import DATALIST_FILENAME, WEIGHTS_FILENAME

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "taichinet_bundle"
SCHEMA = Path(__file__).resolve().parents[1].parent / "shared" / "schemas" / "meta_schema_20240725.json"
CONFIGS = BUNDLE / "configs"
# small enough for 2 CPU cores: 32x32 inputs, networks 16x narrower than the published ones, one worker
TINY = {"image_size": [32, 32], "network_def#features": [2, 4, 8, 16, 32], "num_workers": 0, "batch_size": 2}
# the preparation's U-Net++, as tiny (a one-shot preparation of two epochs)
TINY_PREPARATION = {
    "image_size": [32, 32],
    "network_def#features": [4, 4, 8, 8, 16, 4],
    "num_workers": 0,
    "batch_size": 4,
    "max_epochs": 2,
}



def _workflow(config_names, workflow_type, **overrides):
    return make_workflow(BUNDLE, config_names, workflow_type, **overrides)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "data", num_images=10, seed=3, size=(48, 64))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """One short easy-to-hard training (which first runs the preparation), shared by the later tests."""
    root = tmp_path_factory.mktemp("taichinet_bundle")
    overrides = {
        **TINY,
        "dataset_dir": str(data),
        "prepare_dir": str(root / "easy_hard"),
        "ckpt_dir": str(root / "models"),
        "output_dir": str(root / "train"),
    }
    workflow = _workflow(["train"], "train", max_epochs=2, prepare_overrides=TINY_PREPARATION, **overrides)
    run_zoo_pattern(workflow)
    return root, overrides, workflow


@pytest.mark.slow
def test_prepare_writes_the_parts_and_a_rerun_reuses_them(data, tmp_path):
    overrides = {**TINY_PREPARATION, "dataset_dir": str(data), "prepare_dir": str(tmp_path / "parts")}
    first = _workflow(["prepare"], "train", **overrides)
    run_zoo_pattern(first)
    assert first.trainer.state.epoch == TINY_PREPARATION["max_epochs"]
    datalist = tmp_path / "parts" / DATALIST_FILENAME
    items = read_prepared_datalist(datalist, "training")
    assert len(items) == len(first.train_dataset_data)
    for item in items:
        gt = read_mask(item["label"]) > 0
        easy, hard = (np.asarray(Image.open(item[key])) > 0 for key in ("easy", "hard"))
        assert not (easy & ~gt).any() and not (hard & ~gt).any() and not (easy & hard).any()
    weights = (tmp_path / "parts" / WEIGHTS_FILENAME).stat().st_mtime_ns

    again = _workflow(["prepare"], "train", **overrides)
    run_zoo_pattern(again)
    assert again.trainer.state.epoch == 0, "the rerun trained the U-Net++ again instead of reusing its parts"
    assert (tmp_path / "parts" / WEIGHTS_FILENAME).stat().st_mtime_ns == weights


@pytest.mark.slow
def test_train_prepares_then_runs_both_steps_on_the_parts(trained):
    root, _, workflow = trained
    # the preparation ran first, into prepare_dir
    assert (root / "easy_hard" / DATALIST_FILENAME).is_file()
    assert all("easy" in item and "hard" in item for item in workflow.train_dataset.data)
    # the last iteration was in step 2 on three-channel targets (G_p, E_p, H_p): only then is there a hard part
    loss = workflow.parser.get_parsed_content("loss")
    assert loss.step == 2
    assert set(loss.last_terms) == {"positive", "negative", "hard_part", "mutual"}
    assert workflow.trainer.state.epoch == 2


@pytest.mark.slow
def test_building_and_checking_train_trains_nothing_and_run_prepares_first(data, tmp_path):
    """initialize() and check_properties() (the zoo's checks, MONAI Label's parsing) make no easy/hard parts:
    the U-Net++ is trained by `run`, before the first epoch."""
    workflow = _workflow(
        ["train"],
        "train",
        **TINY,
        max_epochs=1,
        dataset_dir=str(data),
        prepare_dir=str(tmp_path / "easy_hard"),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "train"),
        prepare_overrides=TINY_PREPARATION,
    )
    workflow.initialize()
    assert not workflow.check_properties()
    assert not (tmp_path / "easy_hard").exists(), "building or checking the workflow ran the preparation"
    assert not any("easy" in item for item in workflow.train_dataset.data)
    first_epoch_parts = []
    datalist = tmp_path / "easy_hard" / DATALIST_FILENAME
    workflow.trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: first_epoch_parts.append(datalist.is_file()))
    workflow.run()
    workflow.finalize()
    assert first_epoch_parts == [True], "the parts must exist before the first epoch"
    prepared = read_prepared_datalist(datalist, "training")
    parts = {item["image"]: (item["easy"], item["hard"]) for item in prepared}
    assert {item["image"]: (item["easy"], item["hard"]) for item in workflow.train_dataset.data} == parts
    assert workflow.trainer.state.epoch == 1


@pytest.mark.slow
def test_train_writes_best_checkpoint_as_plain_state_dict(trained):
    root, _, workflow = trained
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    workflow.network_def.load_state_dict(state)  # a plain state dict of the network, nothing wrapped around it
    assert list((root / "train").glob("events.out.tfevents.*")), "TensorBoard logs are missing"


@pytest.mark.slow
def test_without_easy_to_hard_trains_on_the_ground_truth_alone(data, tmp_path):
    workflow = _workflow(
        ["train"],
        "train",
        **TINY,
        max_epochs=1,
        easy_to_hard=False,
        dataset_dir=str(data),
        prepare_dir=str(tmp_path / "easy_hard"),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "train"),
    )
    run_zoo_pattern(workflow)
    assert not (tmp_path / "easy_hard").exists(), "easy_to_hard=false must not run the preparation"
    loss = workflow.parser.get_parsed_content("loss")
    # Eq. 13 as written: both paths against the ground truth, complementary loss on
    assert set(loss.last_terms) == {"positive", "negative", "mutual"}


@pytest.mark.slow
def test_evaluate_writes_masks_at_source_size_and_metrics(trained, data):
    root, overrides, _ = trained
    eval_dir = root / "evaluation"
    missing_parts = root / "no_parts"
    workflow = _workflow(
        ["train", "evaluate"], None, **{**overrides, "output_dir": str(eval_dir), "prepare_dir": str(missing_parts)}
    )
    run_zoo_pattern(workflow)
    assert not missing_parts.exists(), "evaluation must not need or make easy/hard parts"
    masks = sorted((eval_dir / "predictions").glob("*_mask.png"))
    assert masks and len(masks) == len(list((eval_dir / "predictions").glob("*_overlay.png")))
    for mask in masks:
        source = next(data.rglob(mask.name.replace("_mask.png", ".png")))
        with Image.open(source) as image, Image.open(mask) as predicted:
            assert predicted.size == image.size
            assert set(np.unique(np.asarray(predicted))) <= {0, 255}
    validation = datalist_section(data, "validation", val_fraction=0.2, seed=0)
    check_evaluation_files(eval_dir, [item["image"] for item in validation])
    assert not list(eval_dir.glob("*_raw.csv")), "MONAI's MetricsSaver files would duplicate per_image.csv"


@pytest.mark.slow
def test_inference_segments_a_folder(trained, data, tmp_path):
    _, overrides, _ = trained
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
@pytest.mark.skipif(not shutil.which("g++"), reason="TorchInductor on a CPU needs a C++ compiler")
def test_compiled_inference_writes_the_eager_masks(trained, data, tmp_path):
    _, overrides, _ = trained
    masks = {}
    for compile in (False, True):
        output = tmp_path / f"compile_{compile}"
        workflow = _workflow(
            ["inference"],
            "infer",
            dataset_dir=str(data),
            ckpt_dir=overrides["ckpt_dir"],
            output_dir=str(output),
            image_size=TINY["image_size"],
            compile=compile,
            **{"network_def#features": TINY["network_def#features"]},
        )
        run_zoo_pattern(workflow)
        # compiled at the first batch, when asked for
        assert (workflow.inferer.compiled is not None and workflow.inferer.compiled._compiled is not None) == compile
        masks[compile] = {p.name: np.asarray(Image.open(p)) for p in sorted(output.glob("*_mask.png"))}
    assert masks[True].keys() == masks[False].keys() and masks[True]
    for name, eager in masks[False].items():
        # fused kernels sum in another order: a pixel at the threshold may flip, no more
        assert np.mean(masks[True][name] != eager) <= 1e-3, name


@pytest.mark.slow
def test_multi_gpu_training_requires_the_preparation_first(trained, tmp_path, single_process_group):
    root, overrides, _ = trained
    overrides = {**overrides, "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "train")}
    missing = _workflow(
        ["train", "multi_gpu_train"], "train", **{**overrides, "prepare_dir": str(tmp_path / "none")}, max_epochs=1
    )
    with pytest.raises(RuntimeError) as error:
        missing.initialize()
    cause = error.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, FileNotFoundError)
    assert str(tmp_path / "none" / DATALIST_FILENAME) in str(cause) and "configs/prepare.yaml" in str(cause)
    dist.destroy_process_group()

    # with the parts made (by the training above), one epoch in step 1
    workflow = _workflow(["train", "multi_gpu_train"], "train", **overrides, max_epochs=1)
    run_zoo_pattern(workflow)
    assert workflow.trainer.state.epoch == 1
    assert (tmp_path / "models" / "model.pt").is_file()


def test_old_style_training_id_runs_the_same_expressions():
    config = (CONFIGS / "train.yaml").read_text()
    assert 'training: "@run"' in config


def test_metadata_against_offline_schema():
    if not SCHEMA.is_file():
        pytest.skip(f"model-zoo schema not found at {SCHEMA}")
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["modality"] == "US" and image["spatial_shape"] == ["16*n", "16*n"]
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion"}
    assert meta["version"] in meta["changelog"]
    assert any("TaiChiNet" in ref and "Biomedical and Health Informatics" in ref for ref in meta["references"])


def test_network_input_output_matches_metadata():
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.yaml"),
        n=2,
        **{"network_def#features": TINY["network_def#features"]},
    )

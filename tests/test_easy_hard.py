"""TaiChiNet's easy-to-hard strategy (Wang et al., IEEE JBHI 2024, Sec. IV-C): the one-shot preparation of the
easy and hard parts (Eq. 23-24) against a literal transcription, its reuse, and the step schedule handler."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.networks.nets import BasicUNetPlusPlus
from monai.transforms import Compose, EnsureTyped, Resized, ScaleIntensityd
from PIL import Image

from lesionseg.data.datalist import read_prepared_datalist
from lesionseg.data.io import DataError, read_mask
from lesionseg.data.phantoms import write_phantom_dataset
from lesionseg.data.splits import datalist_section
from lesionseg.data.transforms import LoadUltrasoundd
from lesionseg.engines.curriculum import EasyToHardHandler
from lesionseg.engines.easy_hard import (
    DATALIST_FILENAME,
    WEIGHTS_FILENAME,
    EasyHardPreparation,
    check_preparation,
    easy_hard_parts,
    part_shares,
    require_preparation,
    with_parts,
)
from lesionseg.losses import TaiChiNetLoss

NETWORK_SIZE = (32, 32)
FEATURES = (4, 4, 8, 8, 16, 4)
EPOCHS = 2


def unet_plus_plus() -> BasicUNetPlusPlus:
    return BasicUNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=1, features=FEATURES, deep_supervision=True)



def literal_parts(out1: np.ndarray, out4: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 23-24 pixel by pixel: E_p = Out(1) ∩ GT, H_p = (Out(4) ∩ GT) ∩ complement of E_p in GT."""
    easy, hard = np.zeros(gt.shape, bool), np.zeros(gt.shape, bool)
    for index in np.ndindex(gt.shape):
        easy[index] = bool(out1[index]) and bool(gt[index])
        hard[index] = bool(out4[index]) and bool(gt[index]) and not easy[index]
    return easy, hard


@pytest.mark.parametrize("as_tensor", [False, True])
def test_parts_equal_a_literal_eq_23_24(as_tensor):
    rng = np.random.default_rng(0)
    out1, out4, gt = (rng.random((3, 9, 11)) > 0.5 for _ in range(3))
    expected_easy, expected_hard = literal_parts(out1, out4, gt)
    convert = torch.from_numpy if as_tensor else np.asarray
    easy, hard = easy_hard_parts(convert(out1), convert(out4), convert(gt.astype(np.uint8)))
    np.testing.assert_array_equal(np.asarray(easy), expected_easy)
    np.testing.assert_array_equal(np.asarray(hard), expected_hard)


def test_parts_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        easy_hard_parts(np.ones((4, 4)), np.ones((4, 4)), np.ones((4, 5)))


def _preprocessing() -> Compose:
    return Compose(
        [
            LoadUltrasoundd(keys=["image", "label"]),
            Resized(keys=["image", "label"], spatial_size=NETWORK_SIZE, mode=["area", "nearest-exact"]),
            ScaleIntensityd(keys="image"),
            EnsureTyped(keys=["image", "label"], dtype=torch.float32),
        ]
    )


def _preparation(data: Path, prepare_dir: Path, **kwargs) -> EasyHardPreparation:
    """A preparation as configs/prepare.yaml builds it, with a tiny U-Net++."""
    torch.manual_seed(0)
    training = datalist_section(data, "training", val_fraction=0.25, seed=0)
    validation = datalist_section(data, "validation", val_fraction=0.25, seed=0)
    network = unet_plus_plus()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=EPOCHS,
        train_data_loader=DataLoader(Dataset(training, transform=_preprocessing()), batch_size=4, shuffle=True),
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), 1e-3),
        loss_function=DeepSupervisionLoss(DiceCELoss(sigmoid=True), weights=[0.25] * 4),
    )
    return EasyHardPreparation(
        trainer, training, prepare_dir, _preprocessing(), validation_data=validation, dataset_dir=data, **kwargs
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Phantoms whose sizes (40 x 56) differ from the network's (32 x 32), prepared once."""
    root = tmp_path_factory.mktemp("easy_hard")
    data = write_phantom_dataset(root / "data", num_images=8, seed=5, size=(40, 56), progress=False)
    preparation = _preparation(data, root / "prepared", recipe={"max_epochs": EPOCHS})
    datalist = preparation.run()
    return data, preparation, datalist


def _mtimes(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_preparation_writes_disjoint_parts_inside_the_ground_truth(prepared):
    data, preparation, datalist = prepared
    assert preparation.trainer.state.epoch == EPOCHS
    items = read_prepared_datalist(datalist, "training")
    assert len(items) == len(preparation.training_data)
    for item in items:
        gt = read_mask(item["label"]).astype(bool)
        easy, hard = (np.asarray(Image.open(item[key])) for key in ("easy", "hard"))
        assert easy.shape == hard.shape == gt.shape  # the source mask's size, not the network's
        assert set(np.unique(easy)) <= {0, 255} and set(np.unique(hard)) <= {0, 255}
        easy, hard = easy > 0, hard > 0
        assert not (easy & ~gt).any() and not (hard & ~gt).any() and not (easy & hard).any()
    # the validation section is copied, without parts
    validation = read_prepared_datalist(datalist, "validation")
    assert [item["image"] for item in validation] == [item["image"] for item in preparation.validation_data]
    assert all("easy" not in item for item in validation)
    assert not Path(preparation.prepare_dir).resolve().is_relative_to(data.resolve())


@pytest.mark.slow
def test_parts_are_the_saved_networks_outputs_through_eq_23_24(prepared):
    """Recompute every part from the saved U-Net++: Out(1) is its first output, Out(4) its last, thresholded at
    0.5 at the network's size, resized to the source with nearest neighbour, then Eq. 23-24 literally."""
    _, preparation, datalist = prepared
    network = unet_plus_plus()
    network.load_state_dict(torch.load(preparation.prepare_dir / WEIGHTS_FILENAME, weights_only=True))
    network.eval()
    easy_fractions = []
    for item in read_prepared_datalist(datalist, "training"):
        image = _preprocessing()({"image": item["image"], "label": item["label"]})["image"]
        with torch.no_grad():
            outputs = network(image[None])
        gt = read_mask(item["label"]).astype(bool)
        out1, out4 = (
            torch.nn.functional.interpolate(
                (torch.sigmoid(output) > 0.5).float(), size=gt.shape, mode="nearest-exact"
            )[0, 0].numpy()
            > 0.5
            for output in (outputs[0], outputs[3])
        )
        expected_easy, expected_hard = literal_parts(out1, out4, gt)
        np.testing.assert_array_equal(np.asarray(Image.open(item["easy"])) > 0, expected_easy)
        np.testing.assert_array_equal(np.asarray(Image.open(item["hard"])) > 0, expected_hard)
        if gt.any():
            easy_fractions.append(expected_easy.sum() / gt.sum())
    recorded = json.loads(Path(datalist).read_text())["preparation"]["statistics"]
    assert recorded["lesion_images"] == len(easy_fractions)
    assert recorded["mean_easy_fraction"] == pytest.approx(np.mean(easy_fractions))


@pytest.mark.slow
def test_rerun_reuses_the_parts_without_training(prepared, caplog):
    data, preparation, _ = prepared
    before = _mtimes(preparation.prepare_dir)
    again = _preparation(data, preparation.prepare_dir, recipe={"max_epochs": EPOCHS + 1})
    with caplog.at_level(logging.INFO, logger="lesionseg.engines.easy_hard"):
        assert again.run() == preparation.datalist_path
    assert again.trainer.state.epoch == 0  # never trained
    assert _mtimes(preparation.prepare_dir) == before
    assert "reusing" in caplog.text
    assert "force=True" in caplog.text and "'max_epochs': 3" in caplog.text  # the changed recipe is reported


@pytest.mark.slow
def test_force_makes_the_parts_again(prepared, tmp_path):
    data, preparation, _ = prepared
    copy = tmp_path / "prepared"
    forced = _preparation(data, copy, force=True)
    forced.run()
    first_mtimes = _mtimes(copy)
    forced = _preparation(data, copy, force=True)
    forced.run()
    assert forced.trainer.state.epoch == EPOCHS
    assert all(_mtimes(copy)[path] > mtime for path, mtime in first_mtimes.items())


@pytest.mark.slow
def test_parts_of_another_dataset_are_not_reused(prepared, tmp_path):
    _, preparation, datalist = prepared
    training, validation = preparation.training_data, preparation.validation_data
    assert check_preparation(preparation.prepare_dir, training, validation) is None
    assert check_preparation(preparation.prepare_dir, training[::-1], validation) is None  # order is free
    problem = check_preparation(preparation.prepare_dir, training[1:], validation)
    assert "training section" in problem and str(datalist) in problem
    assert "validation section" in check_preparation(preparation.prepare_dir, training, [])
    assert "not found" in check_preparation(tmp_path, training, validation)
    with pytest.raises(ValueError, match="--force True"):
        require_preparation(preparation.prepare_dir, training[1:], validation, dataset_dir="DATA")


def test_missing_preparation_names_the_file_and_the_command(tmp_path):
    training = [{"image": str(tmp_path / "a.png"), "label": str(tmp_path / "a_mask.png")}]
    with pytest.raises(FileNotFoundError) as error:
        require_preparation(tmp_path / "parts", training, dataset_dir="/data/busi")
    message = str(error.value)
    assert str(tmp_path / "parts" / DATALIST_FILENAME) in message
    assert "configs/prepare.yaml" in message and "--dataset_dir /data/busi" in message


def test_a_missing_part_file_is_named(tmp_path):
    image, mask = tmp_path / "a.png", tmp_path / "a_mask.png"
    training = [{"image": str(image), "label": str(mask)}]
    (tmp_path / DATALIST_FILENAME).write_text(
        json.dumps(
            {
                "training": [{"image": "a.png", "label": "a_mask.png", "easy": "e.png", "hard": "h.png"}],
                "validation": [],
            }
        )
    )
    (tmp_path / "e.png").touch()
    assert check_preparation(tmp_path, training, validation=[]) == f"{tmp_path / 'h.png'}: hard mask not found"


def test_prepare_dir_inside_the_dataset_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    training = [{"image": str(data / "a.png"), "label": str(data / "a_mask.png")}]
    with pytest.raises(ValueError, match="inside the dataset folder"):
        EasyHardPreparation(
            Engine(lambda e, b: None), training, data / "easy_hard", Compose([]), network=torch.nn.Linear(1, 1)
        )


def test_empty_training_section_and_a_string_force_are_refused(tmp_path):
    stand_in = Engine(lambda e, b: None)
    with pytest.raises(ValueError, match="training_data is empty"):
        EasyHardPreparation(stand_in, [], tmp_path, Compose([]), network=torch.nn.Linear(1, 1))
    training = [{"image": str(tmp_path / "data" / "a.png"), "label": str(tmp_path / "data" / "a_mask.png")}]
    with pytest.raises(TypeError, match="--force True"):  # what "--force true" on the command line gives
        EasyHardPreparation(stand_in, training, tmp_path / "parts", Compose([]), network=stand_in, force="true")


def _run_schedule(handler: EasyToHardHandler, loss, max_epochs: int, resume_epoch: int | None = None) -> list[int]:
    """The loss's step at each of two iterations per epoch."""
    trainer = Engine(lambda engine, batch: loss.step)
    handler.attach(trainer)
    steps = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: steps.append(engine.state.output))
    if resume_epoch is not None:
        # what MONAI's CheckpointLoader does with a trainer in its load_dict
        trainer.load_state_dict({"epoch": resume_epoch, "max_epochs": max_epochs, "epoch_length": 2})
    trainer.run([0, 1], max_epochs=max_epochs)
    return steps


def test_handler_switches_to_step_2_at_the_configured_epoch(caplog):
    loss = TaiChiNetLoss()
    with caplog.at_level(logging.INFO, logger="schedule"):
        steps = _run_schedule(EasyToHardHandler(loss, step2_start_epoch=3, name="schedule"), loss, max_epochs=5)
    assert steps == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert "epoch 3: easy-to-hard step 2" in caplog.text


@pytest.mark.parametrize(
    ("resume_epoch", "initial_step", "expected"),
    [(3, 1, [2, 2, 2, 2]), (1, 2, [1, 1, 2, 2, 2, 2, 2, 2]), (2, 1, [2, 2, 2, 2, 2, 2])],
)
def test_handler_derives_the_step_from_the_epoch_on_resume(resume_epoch, initial_step, expected):
    """A resumed run continues in the step of its epoch, whatever step the (new) loss object starts in."""
    loss = TaiChiNetLoss(step=initial_step)
    assert _run_schedule(EasyToHardHandler(loss, step2_start_epoch=3), loss, 5, resume_epoch) == expected


def test_handler_defaults_to_the_trainers_loss_and_none_never_switches():
    loss = TaiChiNetLoss()
    trainer = Engine(lambda engine, batch: loss.step)
    trainer.loss_function = loss  # as on MONAI's SupervisedTrainer
    EasyToHardHandler(step2_start_epoch=2).attach(trainer)
    trainer.run([0], max_epochs=2)
    assert loss.step == 2
    loss = TaiChiNetLoss()
    assert _run_schedule(EasyToHardHandler(loss, step2_start_epoch=None), loss, 3) == [1] * 6


def test_handler_says_when_easy_to_hard_is_off(caplog):
    """No preparation and no step 2 (easy_to_hard: false) is logged as off, not as "staying in step 1"."""
    loss = TaiChiNetLoss()
    with caplog.at_level(logging.INFO, logger="schedule"):
        _run_schedule(EasyToHardHandler(loss, step2_start_epoch=None, name="schedule"), loss, 2)
    assert "easy-to-hard off" in caplog.text and "Eq. 13" in caplog.text
    assert "stays in step 1" not in caplog.text


@pytest.mark.parametrize("epoch", [0, -1, 2.5, True, "3"])
def test_handler_refuses_a_bad_epoch(epoch):
    with pytest.raises(ValueError, match="step2_start_epoch"):
        EasyToHardHandler(TaiChiNetLoss(), step2_start_epoch=epoch)


def test_handler_needs_a_loss_with_steps():
    trainer = Engine(lambda engine, batch: None)
    EasyToHardHandler(torch.nn.MSELoss(), step2_start_epoch=2).attach(trainer)
    with pytest.raises(TypeError, match="'step' attribute"):
        trainer.run([0], max_epochs=1)


def _prepared_datalist(folder: Path, images: list[str]) -> Path:
    """A preparation's datalist for ``images``, as EasyHardPreparation writes it (paths relative to it)."""
    folder.mkdir(parents=True, exist_ok=True)
    training = [
        {"image": f"../data/{n}.png", "label": f"../data/{n}_mask.png", **{k: f"{k}/{n}.png" for k in ("easy", "hard")}}
        for n in images
    ]
    (folder / DATALIST_FILENAME).write_text(json.dumps({"training": training, "validation": []}))
    return folder / DATALIST_FILENAME


def test_handler_prepares_when_the_run_starts_and_keeps_the_random_state(tmp_path):
    """The parts are made at STARTED (not when the handler is built), once, and the items gain them; the
    preparation's seeding and drawing leave the trainer's random state as it was."""
    items = [{"image": str(tmp_path / "data" / f"{name}.png"), "label": str(tmp_path / "data" / f"{name}_mask.png")}
             for name in ("b", "a")]  # fmt: skip
    dataset = Dataset(items)
    calls = []

    def prepare():
        calls.append(True)
        torch.manual_seed(123), np.random.seed(123)  # as the preparation's set_determinism, then its training
        torch.rand(5), np.random.rand(5)
        return _prepared_datalist(tmp_path / "parts", ["a", "b"])

    loss = TaiChiNetLoss()
    draws = []
    trainer = Engine(lambda engine, batch: draws.append((torch.rand(1).item(), np.random.rand())))
    trainer.loss_function = loss
    handler = EasyToHardHandler(step2_start_epoch=None, prepare=prepare, dataset=dataset)
    handler.attach(trainer)
    assert calls == [] and "easy" not in dataset.data[0]
    torch.manual_seed(0), np.random.seed(0)
    trainer.run([0], max_epochs=1)
    trainer.run([0], max_epochs=2)  # a second run of the same trainer does not prepare again
    assert calls == [True]
    assert [Path(item["easy"]) for item in dataset.data] == [tmp_path / "parts" / "easy" / f"{n}.png" for n in "ba"]
    assert [Path(item["hard"]) for item in dataset.data] == [tmp_path / "parts" / "hard" / f"{n}.png" for n in "ba"]
    torch.manual_seed(0), np.random.seed(0)
    assert draws[0] == (torch.rand(1).item(), np.random.rand()), "the preparation changed the training's random state"


def test_parts_for_other_images_are_refused(tmp_path):
    datalist = _prepared_datalist(tmp_path / "parts", ["a"])
    items = [{"image": str(tmp_path / "data" / "z.png"), "label": str(tmp_path / "data" / "z_mask.png")}]
    with pytest.raises(ValueError) as error:
        with_parts(items, datalist)
    assert str(datalist) in str(error.value) and "z.png" in str(error.value) and "force" in str(error.value)
    with pytest.raises(TypeError, match="prepare"):
        EasyToHardHandler(TaiChiNetLoss(), prepare="configs/prepare.yaml")


def _mask(path: Path, box: tuple[int, int, int, int], size=(8, 8)) -> str:
    """An 8x8 mask PNG with rows box[0]:box[1], columns box[2]:box[3] set; returns its name."""
    pixels = np.zeros(size, np.uint8)
    pixels[box[0] : box[1], box[2] : box[3]] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path.name


def _datalist_with_boxes(folder: Path, items: list[tuple[str, tuple, tuple, tuple]]) -> Path:
    """A preparation's datalist of (case, lesion box, easy box, hard box) items, 8x8 masks (boxes as in _mask)."""
    training = []
    for case, lesion, easy, hard in items:
        _mask(folder / "data" / f"{case}.png", (0, 8, 0, 8))
        _mask(folder / "data" / f"{case}_mask.png", lesion)
        _mask(folder / "easy" / f"{case}.png", easy)
        _mask(folder / "hard" / f"{case}.png", hard)
        training.append({"image": f"data/{case}.png", "label": f"data/{case}_mask.png", "case": case,
                         "easy": f"easy/{case}.png", "hard": f"hard/{case}.png"})
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": training, "validation": []}))
    return path


def test_part_shares_are_the_parts_pixel_counts_over_the_lesions(tmp_path):
    datalist = _datalist_with_boxes(tmp_path, [
        ("a", (0, 4, 0, 4), (0, 1, 0, 4), (1, 4, 0, 2)),  # lesion 16 px: easy 4, hard 6
        ("b", (0, 2, 0, 5), (0, 2, 0, 5), (0, 0, 0, 0)),  # lesion 10 px: all easy, no hard part
        ("normal", (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)),  # no lesion: left out
    ])
    assert part_shares(datalist) == {"a": (4 / 16, 6 / 16), "b": (1.0, 0.0)}


def test_part_shares_name_a_part_of_the_wrong_size(tmp_path):
    datalist = _datalist_with_boxes(tmp_path, [("a", (0, 4, 0, 4), (0, 1, 0, 4), (1, 4, 0, 2))])
    _mask(tmp_path / "hard" / "a.png", (0, 1, 0, 1), size=(4, 4))
    with pytest.raises(DataError, match=r"hard.a\.png.*\(4, 4\).*\(8, 8\)"):
        part_shares(datalist)

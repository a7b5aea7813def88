"""``lesionseg predict``: geometry round trips for every input format, weights handling, bad files, overlays.

The networks are the bundles' own at tiny widths with random weights (saved as a temporary bundle copy's
``models/model.pt``): these tests check shapes, geometry, file handling and agreement with the bundle's own
inference workflow, not accuracy.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image
from skimage.segmentation import find_boundaries

from lesionseg.cli import main
from lesionseg.data.io import DataError, dicom_affine, read_stack, to_voxels
from lesionseg.workflows.bundle import run_workflow

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ("dcnet_bundle", "taichinet_bundle")
TINY = {"network_def#features": [2, 4, 8, 16, 32], "image_size": [32, 32]}
TINY_ARGS = [f"--override=network_def#features={TINY['network_def#features']}", "--override=image_size=[32,32]"]
# a TorchScript --model has its own network: only the preprocessing is set (network_def would be refused)
TORCHSCRIPT_ARGS = ["--override=image_size=[32,32]"]
YELLOW, LIME = (255, 255, 0), (0, 255, 0)


def _tiny_network(configs: Path, seed: int, **overrides) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.yaml"))
    for key, value in {**TINY, **overrides}.items():
        parser[key] = value
    torch.manual_seed(seed)
    return parser.get_parsed_content("network_def")


def _make_tiny_bundle(name: str, folder: Path) -> Path:
    bundle = folder / name
    shutil.copytree(REPO / "bundles" / name / "configs", bundle / "configs")
    # fp32 rather than the bundles' auto (bf16 on AMX CPUs): these tests compare masks of a random tiny network
    # pixel for pixel between two paths and need its probabilities to split the threshold as they do in
    # float32 on every machine; precision has its own tests (test_precision.py, test_bf16_numerics.py)
    for config in (bundle / "configs").glob("*.yaml"):
        config.write_text(config.read_text().replace("\nprecision: auto\n", "\nprecision: fp32\n"))
    (bundle / "models").mkdir()
    torch.save(_tiny_network(bundle / "configs", seed=0).state_dict(), bundle / "models" / "model.pt")
    return bundle


@pytest.fixture(scope="module", params=BUNDLES)
def tiny_bundle(request, tmp_path_factory) -> Path:
    """A copy of the bundle's configs with a randomly initialised tiny network as models/model.pt."""
    return _make_tiny_bundle(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def dcnet_tiny(tmp_path_factory) -> Path:
    """The tiny DC-Net bundle alone, for the tests of file formats and outputs, which do not depend on the network."""
    return _make_tiny_bundle("dcnet_bundle", tmp_path_factory.mktemp("dcnet"))


def _texture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth gray texture in [0, 1] with a dark disc, so a random network gives a non-trivial map."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.3, 1.0, size=(5, 6)).astype(np.float32)
    image = np.asarray(Image.fromarray(coarse).resize(shape[::-1], Image.Resampling.BILINEAR))
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    disc = (rows - shape[0] * 0.45) ** 2 + (cols - shape[1] * 0.55) ** 2 < (min(shape) * 0.25) ** 2
    return np.where(disc, image * 0.2, image)


def _predict(bundle: Path | None, inputs: Path, output: Path, *extra: str, overrides: list[str] = TINY_ARGS) -> int:
    args = ["predict", "--input", str(inputs), "--output", str(output), *overrides, *extra]
    if bundle is not None:
        args += ["--bundle", str(bundle)]
    return main(args)


def _probability_range(bundle: Path, images: Path, folder: Path, *extra: str) -> tuple[float, float]:
    """The least and greatest lesion probability of the tiny random network on ``images`` (a file or folder)."""
    assert _predict(bundle, images, folder, "--probabilities", *extra) == 0
    maps = [np.asarray(Image.open(path)) / 65535.0 for path in folder.rglob("*_prob.png")]
    return min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)


def _splitting_threshold(bundle: Path, image: Path, folder: Path) -> float:
    """Halfway between the least and greatest lesion probability of the tiny random network on ``image``: a
    threshold that splits its map into lesion and background, so that mask comparisons are not between two
    all-lesion masks."""
    return sum(_probability_range(bundle, image, folder)) / 2


def _empty_threshold(bundle: Path, images: Path, folder: Path, *extra: str) -> str:
    """A threshold (inside (0, 1)) that no probability of the tiny network on ``images`` reaches."""
    highest = _probability_range(bundle, images, folder, *extra)[1]
    assert highest < 1 - 1e-4
    return str((highest + 1) / 2)


def _full_threshold(bundle: Path, images: Path, folder: Path) -> str:
    """A threshold (inside (0, 1)) that every probability of the tiny network on ``images`` reaches."""
    lowest = _probability_range(bundle, images, folder)[0]
    assert lowest > 1e-4
    return str(lowest / 2)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _write_pictures(folder: Path) -> dict[str, tuple[int, int]]:
    """Pictures of several formats, sizes and depths; returns file name -> (H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    gray = _texture((37, 53), 0)
    Image.fromarray((gray * 255).astype(np.uint8)).save(folder / "odd.png")
    rgb = np.stack([_texture((40, 30), 1)] * 3, axis=-1) * np.array([1.0, 0.8, 0.6])
    Image.fromarray((rgb * 255).astype(np.uint8), "RGB").save(folder / "colour.png")
    Image.fromarray((_texture((33, 47), 2) * 65535).astype(np.uint16)).save(folder / "deep.png")
    Image.fromarray((_texture((29, 64), 3) * 65535).astype(np.uint16)).save(folder / "deep.tif")
    photo = np.stack([_texture((50, 35), 4)] * 3, -1)
    Image.fromarray((photo * 255).astype(np.uint8)).save(folder / "photo.jpg", quality=90)
    Image.fromarray((_texture((41, 41), 5) * 255).astype(np.uint8)).save(folder / "scan.bmp")
    # the same stem as odd.png: the outputs must not overwrite each other
    Image.fromarray((_texture((21, 34), 6) * 255).astype(np.uint8)).save(folder / "odd.jpg")
    return {name: np.asarray(Image.open(folder / name)).shape[:2] for name in (
        "odd.png", "colour.png", "deep.png", "deep.tif", "photo.jpg", "scan.bmp", "odd.jpg")}


def test_pictures_come_back_at_their_own_size(tiny_bundle, tmp_path):
    sizes = _write_pictures(tmp_path / "in")
    assert _predict(tiny_bundle, tmp_path / "in", tmp_path / "out", "--probabilities") == 0
    out = tmp_path / "out"
    names = {"odd.png": "odd_png", "colour.png": "colour", "deep.png": "deep_png", "deep.tif": "deep_tif",
             "photo.jpg": "photo", "scan.bmp": "scan", "odd.jpg": "odd_jpg"}
    for name, stem in names.items():
        mask, probability, overlay = (
            Image.open(out / f"{stem}{postfix}.png") for postfix in ("_mask", "_prob", "_overlay")
        )
        assert (mask.mode, mask.size[::-1]) == ("L", sizes[name]), name
        assert (probability.mode, probability.size[::-1]) == ("I;16", sizes[name]), name
        assert (overlay.mode, overlay.size[::-1]) == ("RGB", sizes[name]), name
        mask, probability = np.asarray(mask), np.asarray(probability) / 65535.0
        assert set(np.unique(mask)) <= {0, 255}
        # the mask is the thresholded probability (up to the 16-bit rounding at the threshold itself)
        decided = np.abs(probability - 0.5) > 1e-4
        assert np.array_equal((mask > 0)[decided], (probability >= 0.5)[decided])
    records = (out / "predictions.csv").read_text().splitlines()
    assert len(records) == 1 + len(names)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == len(names) and summary["failed"] == []


def test_masks_equal_the_bundle_inference_workflow(tiny_bundle, tmp_path):
    """predict and `monai.bundle run --config_file configs/inference.yaml` give the same masks."""
    _write_pictures(tmp_path / "in")
    for duplicate in ("odd.jpg", "deep.tif"):  # the workflow names its outputs by stem only
        (tmp_path / "in" / duplicate).unlink()
    threshold = _splitting_threshold(tiny_bundle, tmp_path / "in" / "odd.png", tmp_path / "calibration")
    assert _predict(tiny_bundle, tmp_path / "in", tmp_path / "predict", "--threshold", str(threshold)) == 0
    overrides = {**TINY, "dataset_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "workflow")}
    # the AsDiscreted of the bundle's mask postprocessing (after Activationsd and Invertd)
    overrides["mask_postprocessing#2#threshold"] = threshold
    run_workflow(tiny_bundle, ["inference"], "infer", overrides)
    workflow_masks = sorted((tmp_path / "workflow").glob("*_mask.png"))
    assert len(workflow_masks) == 5
    reference = _png(tmp_path / "workflow" / "odd_mask.png")
    assert 0 < np.count_nonzero(reference) < reference.size, "the threshold should split odd.png's map"
    for expected in workflow_masks:
        assert np.array_equal(_png(tmp_path / "predict" / expected.name), _png(expected)), expected.name


def _rotation_affine() -> np.ndarray:
    angle = np.deg2rad(30)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine[:3, :3] = affine[:3, :3] @ np.diag([0.3, 0.7, 2.0])
    affine[:3, 3] = [-12.5, 40.0, 7.0]
    return affine


def test_nifti_keeps_affine_shape_and_orientation(dcnet_tiny, tmp_path):
    picture = (_texture((37, 53), 7) * 255).astype(np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(picture).save(tmp_path / "in" / "picture.png")
    affine = _rotation_affine()
    # the picture as NIfTI voxels (x along the columns), 2D and as one slice of a (x, y, 1) volume
    nib.save(nib.Nifti1Image(picture.T.astype(np.int16), affine), tmp_path / "in" / "flat.nii.gz")
    nib.save(nib.Nifti1Image(picture.T[..., None].astype(np.float32), affine), tmp_path / "in" / "slab.nii")
    volume = np.stack([picture.T, np.flipud(picture.T), picture.T // 2], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "in" / "volume.nii.gz")
    threshold = _splitting_threshold(dcnet_tiny, tmp_path / "in" / "picture.png", tmp_path / "calibration")
    options = ("--probabilities", "--threshold", str(threshold))
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "out", *options) == 0
    out = tmp_path / "out"
    expected = _png(out / "picture_mask.png") > 0
    assert 0 < expected.sum() < expected.size
    for stem, shape in (("flat", (53, 37)), ("slab", (53, 37, 1)), ("volume", (53, 37, 3))):
        mask = nib.load(out / f"{stem}_mask.nii.gz")
        probability = nib.load(out / f"{stem}_prob.nii.gz")
        for image in (mask, probability):
            assert image.shape == shape, stem
            np.testing.assert_allclose(image.affine, affine, atol=1e-5)
        assert mask.get_data_dtype() == np.uint8 and probability.get_data_dtype() == np.float32
        voxels = np.asarray(mask.dataobj)
        assert set(np.unique(voxels)) <= {0, 1}
        # the first slice is the picture itself: the same mask, in NIfTI's (x, y) layout
        assert np.array_equal(voxels.reshape(53, 37, -1)[..., 0].T > 0, expected), stem
    assert sorted(p.name for p in out.glob("volume_overlay_*.png")) == [f"volume_overlay_{k:03d}.png" for k in range(3)]
    assert Image.open(out / "flat_overlay.png").size == (53, 37)


def test_voxel_layout_round_trip(tmp_path):
    volume = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii")
    stack = read_stack(tmp_path / "v.nii")
    assert stack.slices.shape == (2, 3, 4)
    assert np.array_equal(stack.slices[1], volume[:, :, 1].T)
    assert np.array_equal(to_voxels(stack, stack.slices), volume)


def _write_dicom(path: Path, pixels: np.ndarray, geometry: bool = True, frames: int | None = None) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # ultrasound image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "US"
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = pixels.dtype.itemsize * 8
    dataset.HighBit, dataset.PixelRepresentation = dataset.BitsStored - 1, 0
    if frames:
        dataset.NumberOfFrames = frames
    if geometry:
        dataset.PixelSpacing = [0.5, 0.25]
        dataset.ImageOrientationPatient = [0.8, 0.6, 0.0, -0.6, 0.8, 0.0]
        dataset.ImagePositionPatient = [10.0, -20.0, 30.0]
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path, enforce_file_format=True)


def test_dicom_mask_is_nifti_in_the_dicom_geometry(dcnet_tiny, tmp_path):
    picture = (_texture((37, 53), 8) * 4000).astype(np.uint16)
    (tmp_path / "in").mkdir()
    Image.fromarray(picture).save(tmp_path / "in" / "picture.png")
    _write_dicom(tmp_path / "in" / "scan.dcm", picture)
    _write_dicom(tmp_path / "in" / "cine", np.stack([picture, picture[::-1]]), geometry=False, frames=2)  # no suffix
    threshold = _splitting_threshold(dcnet_tiny, tmp_path / "in" / "picture.png", tmp_path / "calibration")
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "out", "--threshold", str(threshold)) == 0
    out = tmp_path / "out"
    expected = _png(out / "picture_mask.png") > 0
    assert 0 < expected.sum() < expected.size
    scan = nib.load(out / "scan_mask.nii.gz")
    assert scan.shape == (53, 37)
    expected_affine = dicom_affine((0.8, 0.6, 0, -0.6, 0.8, 0), (10, -20, 30), (0.5, 0.25))
    np.testing.assert_allclose(scan.affine, expected_affine, atol=1e-6)
    assert np.array_equal(np.asarray(scan.dataobj).T > 0, expected)
    cine = nib.load(out / "cine_mask.nii.gz")
    assert cine.shape == (53, 37, 2)
    assert np.array_equal(np.asarray(cine.dataobj)[..., 0].T > 0, expected)
    assert (out / "cine_overlay_001.png").is_file()


def test_dicom_affine_matches_monai_pydicom_reader(tmp_path):
    pytest.importorskip("pydicom")
    from monai.transforms import LoadImage

    pixels = np.arange(37 * 53, dtype=np.uint16).reshape(37, 53)
    _write_dicom(tmp_path / "a.dcm", pixels)
    stack = read_stack(tmp_path / "a.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's note that the optional nvImageCodec decoder is absent
        monai_image = LoadImage(reader="PydicomReader", image_only=True)(str(tmp_path / "a.dcm"))
    np.testing.assert_allclose(stack.affine, monai_image.affine.numpy(), atol=1e-6)
    assert np.array_equal(to_voxels(stack, stack.slices), monai_image.numpy())
    assert stack.spacing == (0.5, 0.25)


def test_dicom_without_a_reader_names_the_package(tmp_path, monkeypatch):
    (tmp_path / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    monkeypatch.setitem(sys.modules, "itk", None)
    with pytest.raises(DataError, match=r"a\.dcm: reading DICOM needs pydicom or itk.*pip install pydicom"):
        read_stack(tmp_path / "a.dcm")


def test_checkpoint_option_replaces_models_model_pt(tiny_bundle, tmp_path):
    Image.fromarray((_texture((37, 53), 9) * 255).astype(np.uint8)).save(tmp_path / "image.png")
    other = tmp_path / "other.pt"
    torch.save(_tiny_network(tiny_bundle / "configs", seed=1).state_dict(), other)
    assert _predict(tiny_bundle, tmp_path / "image.png", tmp_path / "default", "--probabilities") == 0
    assert _predict(tiny_bundle, tmp_path / "image.png", tmp_path / "same", "--probabilities",
                    "--checkpoint", str(tiny_bundle / "models" / "model.pt")) == 0
    assert _predict(tiny_bundle, tmp_path / "image.png", tmp_path / "other", "--probabilities",
                    "--checkpoint", str(other)) == 0
    # the layout MONAI's CheckpointSaver writes when it saves more than the network
    nested = tmp_path / "nested.pt"
    torch.save({"model": torch.load(other, weights_only=True), "optimizer": {"state": {}, "param_groups": []}}, nested)
    assert _predict(tiny_bundle, tmp_path / "image.png", tmp_path / "nested", "--probabilities",
                    "--checkpoint", str(nested)) == 0
    default, same, changed, nested = (
        _png(tmp_path / name / "image_prob.png") for name in ("default", "same", "other", "nested")
    )
    assert np.array_equal(default, same)
    assert not np.array_equal(default, changed)
    assert np.array_equal(changed, nested)


def test_missing_weights_are_refused_with_the_way_to_get_them(tiny_bundle, tmp_path, capsys):
    bundle = tmp_path / "untrained"
    shutil.copytree(tiny_bundle / "configs", bundle / "configs")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "image.png")
    assert _predict(bundle, tmp_path / "image.png", tmp_path / "out") == 2
    message = capsys.readouterr().err
    assert "no trained weights" in message and str(bundle / "models" / "model.pt") in message
    assert "python -m monai.bundle run --config_file configs/train.yaml" in message and "--checkpoint" in message
    assert not (tmp_path / "out").exists()


def test_weights_of_another_width_get_a_clear_error(dcnet_tiny, tmp_path, capsys):
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "image.png")
    code = main(["predict", "--bundle", str(dcnet_tiny), "--input", str(tmp_path / "image.png"), "--output",
                 str(tmp_path / "out"), "--override", "network_def#features=[4,8,16,32,64]"])
    assert code == 2
    assert "do not fit the network" in capsys.readouterr().err


def test_unknown_override_is_refused(dcnet_tiny, tmp_path, capsys):
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "image.png")
    assert _predict(dcnet_tiny, tmp_path / "image.png", tmp_path / "out", "--override", "no_such_id=1") == 2
    assert "no_such_id: no such id" in capsys.readouterr().err
    assert _predict(dcnet_tiny, tmp_path / "image.png", tmp_path / "out", "--override", "network_def#widht=3") == 2
    assert "cannot build 'network_def'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, extra, why",
    [
        ("threshold=0.3", [], "; --threshold sets it."),
        ("dataset_dir=/data", [], ". The ids"),
        ("precision=bf16", ["--precision", "fp32"], "; --precision sets it."),
        ("ckpt_dir=/weights", ["--checkpoint", "CHECKPOINT"], "; --checkpoint gives the weights."),
    ],
)
def test_override_of_an_id_predict_does_not_read_is_refused(dcnet_tiny, tmp_path, capsys, override, extra, why):
    """``--override threshold=0.3`` was accepted and changed nothing (predict's threshold is --threshold): an
    id of the bundle that predict does not read is refused, naming it and the ids that can be changed."""
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "image.png")
    extra = [str(dcnet_tiny / "models" / "model.pt") if arg == "CHECKPOINT" else arg for arg in extra]
    assert _predict(dcnet_tiny, tmp_path / "image.png", tmp_path / "out", "--override", override, *extra) == 2
    message = capsys.readouterr().err
    id = override.split("=")[0]
    assert f"inference.yaml: --override {id}: predict does not read '{id}'{why}" in message, message
    read = ("network_def", "ckpt_dir", "image_key", "preprocessing", "precision", "check_training_settings")
    read = [name for name in read if name != id]
    assert f"The ids --override can change here: {', '.join(read)} and the ids they refer to (" in message
    assert "image_size" in message.split("refer to")[1]
    assert not (tmp_path / "out").exists()


def test_override_of_an_id_the_network_refers_to_is_read(dcnet_tiny, tmp_path, capsys):
    """An id that a read id refers to (``features: "@widths"`` in network_def) can be overridden; ``network_def``
    itself cannot be with a TorchScript model, which brings its own network."""
    bundle = tmp_path / "bundle"
    shutil.copytree(dcnet_tiny, bundle)
    config = bundle / "configs" / "inference.yaml"
    text = config.read_text().replace("\n  dropout: 0.0\n", '\n  dropout: 0.0\n  features: "@widths"\n', 1)
    config.write_text(text + "widths: [4, 8, 16, 32, 64]\n")
    Image.fromarray((_texture((20, 30), 0) * 255).astype(np.uint8)).save(tmp_path / "image.png")
    widths = f"--override=widths={TINY['network_def#features']}"
    assert _predict(bundle, tmp_path / "image.png", tmp_path / "out", widths, overrides=TORCHSCRIPT_ARGS) == 0
    assert _predict(bundle, tmp_path / "image.png", tmp_path / "wide", overrides=TORCHSCRIPT_ARGS) == 2
    assert "do not fit the network" in capsys.readouterr().err  # the override was what made the weights fit
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(1, 1, 3, padding=1)), tmp_path / "model.ts")
    assert _predict(dcnet_tiny, tmp_path / "image.png", tmp_path / "model", "--model", str(tmp_path / "model.ts")) == 2
    message = capsys.readouterr().err
    assert "predict does not read 'network_def'; a TorchScript --model brings its own network" in message
    assert "can change here: image_key, preprocessing, precision and the ids they refer to (image_size)" in message


def test_bad_files_are_reported_and_the_others_written(dcnet_tiny, tmp_path, capsys):
    folder = tmp_path / "in"
    _write_pictures(folder)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    good = (folder / "odd.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "broken.nii.gz").write_bytes(b"not gzip at all")
    (folder / "fake.dcm").write_bytes(b"not a DICOM file")
    assert _predict(dcnet_tiny, folder, tmp_path / "out") == 1
    printed = capsys.readouterr().out
    for name in ("corrupt.png", "truncated.png", "empty.jpg", "broken.nii.gz", "fake.dcm"):
        assert str(folder / name) in printed, name
        assert not list((tmp_path / "out").glob(f"{name.split('.')[0]}_*")), name
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == 7
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == 7 and len(summary["failed"]) == 5


def test_overlay_outlines_the_ground_truth_and_prediction(dcnet_tiny, tmp_path):
    """BUSI-named masks are found and merged; the overlay draws exactly their outline in green."""
    (tmp_path / "in").mkdir()
    (tmp_path / "truth").mkdir()
    image = _texture((37, 53), 10)
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "in" / "case (1).png")
    first, second = np.zeros((37, 53), bool), np.zeros((37, 53), bool)
    first[5:15, 5:20], second[20:33, 30:50] = True, True
    Image.fromarray(first).save(tmp_path / "truth" / "case (1)_mask.png")
    Image.fromarray(second).save(tmp_path / "truth" / "case (1)_mask_1.png")
    # a threshold no probability reaches: an empty prediction, so only the ground truth is drawn
    empty = _empty_threshold(dcnet_tiny, tmp_path / "in", tmp_path / "calibration")
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "empty", "--ground-truth", str(tmp_path / "truth"),
                    "--threshold", empty) == 0
    overlay = _png(tmp_path / "empty" / "case (1)_overlay.png")
    outline = find_boundaries(first | second, mode="inner")
    assert np.all(overlay[outline] == LIME)
    assert not np.any(np.all(overlay[~outline] == LIME, axis=-1) & (overlay[~outline, 2] == 0))
    record = (tmp_path / "empty" / "predictions.csv").read_text().splitlines()
    fields = dict(zip(record[0].split(","), record[1].split(",")))
    assert float(fields["dice"]) == 0.0 and float(fields["iou"]) == 0.0  # a missed lesion
    assert fields["hd95"] == ""  # undefined against an empty prediction (NaN, an empty cell)
    # a threshold every probability reaches: the whole image is the prediction, outlined along its border
    full = _full_threshold(dcnet_tiny, tmp_path / "in", tmp_path / "calibration_full")
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "full", "--ground-truth", str(tmp_path / "truth"),
                    "--threshold", full) == 0
    overlay = _png(tmp_path / "full" / "case (1)_overlay.png")
    assert np.all(overlay[0] == YELLOW) and np.all(overlay[:, -1] == YELLOW)
    assert np.all(overlay[outline] == LIME)


@pytest.mark.filterwarnings(r"ignore:.torch\.jit\.\w+. is deprecated:DeprecationWarning")
def test_torchscript_export_gives_the_bundle_masks(tiny_bundle, tmp_path):
    """A model exported with MONAI's ckpt_export (scripted, config embedded), as docs/predict.md does it,
    predicts as the bundle does."""
    from monai.bundle import ckpt_export

    configs = tiny_bundle / "configs"
    exported = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def", filepath=str(exported), ckpt_file=str(tiny_bundle / "models" / "model.pt"),
        meta_file=str(configs / "metadata.json"), config_file=str(configs / "inference.yaml"),
        **{"network_def#features": TINY["network_def#features"]},
    )
    _write_pictures(tmp_path / "in")
    for name in ("colour.png", "deep.png", "deep.tif", "scan.bmp", "odd.jpg"):
        (tmp_path / "in" / name).unlink()
    assert _predict(tiny_bundle, tmp_path / "in", tmp_path / "bundle", "--probabilities") == 0
    for name, option in (("model", "--model"), ("as_bundle", "--bundle")):
        assert _predict(None, tmp_path / "in", tmp_path / name, "--probabilities", option, str(exported),
                        overrides=TORCHSCRIPT_ARGS) == 0
    for mask in sorted((tmp_path / "bundle").glob("*_prob.png")):
        reference = _png(mask).astype(int)
        for other in ("model", "as_bundle"):
            assert np.abs(_png(tmp_path / other / mask.name).astype(int) - reference).max() <= 2, (other, mask.name)


def test_weights_trained_at_another_size_or_with_other_options_are_refused(tmp_path, capsys):
    """The run's training state beside the weights says how they were trained: a network loads at any size and
    under any option without parameters, and would segment worse with no error."""
    from monai.bundle import ConfigWorkflow

    bundle = _make_tiny_bundle("dcnet_bundle", tmp_path)
    _write_pictures(tmp_path / "in")
    state = {"format": 1, "settings": {"image_size": [64, 64], "network_def#pooling": "dcp", "learning_rate": 1.0}}
    torch.save(state, bundle / "models" / "training_state.pt")
    capsys.readouterr()
    assert _predict(bundle, tmp_path / "in", tmp_path / "out") != 0
    error = capsys.readouterr().err
    assert "image_size: trained with [64, 64], now [32, 32]" in error and "learning_rate" not in error
    assert "--override 'image_size=[H, W]'" in error and not (tmp_path / "out").exists()
    as_trained = [TINY_ARGS[0], "--override=image_size=[64,64]"]
    assert _predict(bundle, tmp_path / "in", tmp_path / "as_trained", overrides=as_trained) == 0
    state["settings"]["network_def#pooling"] = "max"  # the config leaves pooling out: its default, dcp, is compared
    torch.save(state, bundle / "models" / "training_state.pt")
    assert _predict(bundle, tmp_path / "in", tmp_path / "out", overrides=as_trained) != 0
    assert "network_def#pooling: trained with 'max', now 'dcp'" in capsys.readouterr().err
    on_purpose = [*as_trained, "--override=check_training_settings=false"]
    assert _predict(bundle, tmp_path / "in", tmp_path / "on_purpose", overrides=on_purpose) == 0
    # the bundle's own inference workflow checks the size too
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.yaml"),
        workflow_type="inference",
        bundle_root=str(bundle),
        dataset_dir=str(tmp_path / "in"),
        output_dir=str(tmp_path / "bundle_out"),
        **TINY,
    )
    workflow.initialize()
    with pytest.raises(RuntimeError) as raised:
        workflow.run()
    cause = raised.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert "image_size: trained with [64, 64], now [32, 32]" in str(cause)


def test_busi_folder_with_its_own_masks_as_ground_truth(dcnet_tiny, tiny_busi, tmp_path):
    """Images beside their BUSI masks: the masks are not predicted on but matched (1-bit, RGBA, two-file)."""
    # a threshold no probability reaches: only the ground truth is outlined
    empty = _empty_threshold(dcnet_tiny, tiny_busi, tmp_path / "calibration", "--recursive")
    assert _predict(dcnet_tiny, tiny_busi, tmp_path / "out", "--recursive", "--ground-truth", str(tiny_busi),
                    "--threshold", empty) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["images"], summary["with_ground_truth"], summary["without_ground_truth"]) == (8, 8, 0)
    assert (tmp_path / "out" / "benign" / "benign (2)_mask.png").is_file()
    assert not list((tmp_path / "out").rglob("*_mask_mask.png"))
    # benign (2)'s two lesion files are merged into the outline
    overlay = _png(tmp_path / "out" / "benign" / "benign (2)_overlay.png")
    assert np.all(overlay[5, 5:20] == LIME) and np.all(overlay[39, 35:60] == LIME)


def test_ground_truth_of_another_size_is_reported_and_the_mask_kept(dcnet_tiny, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "truth").mkdir()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "in" / "a.png")
    Image.fromarray(np.zeros((20, 31), np.uint8)).save(tmp_path / "truth" / "a_mask.png")
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "out", "--ground-truth", str(tmp_path / "truth")) == 1
    printed = capsys.readouterr().out
    assert f"{tmp_path / 'truth' / 'a_mask.png'}: ground truth of shape (1, 20, 31)" in printed
    assert (tmp_path / "out" / "a_mask.png").is_file() and (tmp_path / "out" / "a_overlay.png").is_file()


def _write_case(folder: Path, name: str, seed: int, lesion: tuple[slice, slice] | None) -> None:
    """A 20 x 30 image ``<name>.png`` in ``folder`` and, given a lesion, its mask ``<name>_mask.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((_texture((20, 30), seed) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    if lesion is not None:
        mask = np.zeros((20, 30), np.uint8)
        mask[lesion] = 255
        Image.fromarray(mask).save(folder / f"{name}_mask.png")


def _scores(table: Path) -> dict[str, tuple[float, float, str]]:
    """File -> (Dice, IoU, ground truth) of a predictions.csv."""
    with open(table, newline="") as file:
        rows = list(csv.DictReader(file))
    return {row["file"]: (float(row["dice"]), float(row["iou"]), row["ground_truth"]) for row in rows}


@pytest.mark.parametrize("layout", ["beside", "mirrored"])
def test_ground_truth_is_taken_from_the_images_own_sub_folder(dcnet_tiny, tmp_path, layout):
    """Per-case folders with the same file names (``p01/image.png``, ``p02/image.png``): each image is scored
    against its own case's mask. Matching by name alone gave every image the union of all cases' masks."""
    lesions = {"p01": (slice(2, 7), slice(3, 13)), "p02": (slice(10, 18), slice(12, 27))}  # 50 and 120 pixels
    images = tmp_path / "cases"
    truth = images if layout == "beside" else tmp_path / "masks"
    for seed, (case, lesion) in enumerate(lesions.items()):
        _write_case(images / case, "image", seed, lesion if layout == "beside" else None)
        if layout == "mirrored":
            _write_case(truth / case, "image", seed, lesion)
            (truth / case / "image.png").unlink()
    # a threshold every probability reaches: the prediction is the whole image, so Dice and IoU depend on the
    # ground truth's area alone
    lowest = _probability_range(dcnet_tiny, images, tmp_path / "calibration", "--recursive")[0]
    assert lowest > 1e-4
    assert _predict(dcnet_tiny, images, tmp_path / "out", "--recursive", "--ground-truth", str(truth),
                    "--threshold", str(lowest / 2)) == 0
    scores = _scores(tmp_path / "out" / "predictions.csv")
    assert len(scores) == 2
    for case, area in (("p01", 50), ("p02", 120)):
        dice, iou, found = scores[str(images / case / "image.png")]
        assert found == str(truth / case / "image_mask.png")
        # exact up to the metrics' float32
        assert dice == pytest.approx(2 * area / (area + 600), rel=1e-6) and iou == pytest.approx(area / 600, rel=1e-6)


@pytest.mark.parametrize("mask_name", ["image_mask.png", "image.png"])
def test_ground_truth_of_one_name_in_several_folders_is_refused(dcnet_tiny, tmp_path, capsys, mask_name):
    """No mask where the image's folder is mirrored and masks of its name in two folders at its place (two mask
    trees beside the images): refused naming the image and both, before anything is written (by name alone
    both masks were merged, or the first taken)."""
    _write_case(tmp_path / "data" / "images" / "p01", "image", 0, None)
    for tree in ("masks", "labels"):
        (tmp_path / "data" / tree / "p01").mkdir(parents=True)
        Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "data" / tree / "p01" / mask_name)
    arguments = ("--ground-truth", str(tmp_path / "data"), "--recursive")
    assert _predict(dcnet_tiny, tmp_path / "data" / "images", tmp_path / "out", *arguments) == 2
    message = capsys.readouterr().err
    assert f"lesionseg predict: {tmp_path / 'data' / 'images' / 'p01' / 'image.png'}: " in message
    for tree in ("masks", "labels"):
        assert str(tmp_path / "data" / tree / "p01" / mask_name) in message
    assert not (tmp_path / "out").exists()


# layout (files), --input, --ground-truth, --recursive -> each input's masks, as FolderPrediction matches them
# (paths relative to the layout's folder; "refused": a DataError naming the image)
GROUND_TRUTH_LAYOUTS = {
    "BUSI class folder against the dataset": (
        ["benign/a.png", "benign/a_mask.png", "benign/a_mask_1.png", "benign/b.png", "malignant/m.png",
         "malignant/m_mask.png"],
        "benign", ".", False,
        {"benign/a.png": ["benign/a_mask.png", "benign/a_mask_1.png"], "benign/b.png": []},
    ),
    "BUSI, the whole dataset": (
        ["benign/a.png", "benign/a_mask.png", "malignant/m.png", "malignant/m_mask.png"], ".", ".", True,
        {"benign/a.png": ["benign/a_mask.png"], "malignant/m.png": ["malignant/m_mask.png"]},
    ),
    "one file against the dataset": (
        ["benign/a.png", "benign/a_mask.png"], "benign/a.png", ".", False, {"benign/a.png": ["benign/a_mask.png"]},
    ),
    "flat, beside, other kinds; a.jpg is a.png's sibling image": (
        ["b.png", "b_gt.png", "c.png", "c.jpg", "d.png", "e.png", "e_SEG.png"], ".", ".", False,
        {"b.png": ["b_gt.png"], "c.jpg": [], "c.png": [], "d.png": [], "e.png": ["e_SEG.png"]},
    ),
    "two kinds of mask for one image": (["e.png", "e_gt.png", "e_seg.png"], ".", ".", False, {"e.png": "refused"}),
    "images/ + masks/, the pair's root as ground truth": (
        ["images/f.png", "images/g.png", "images/g.jpg", "masks/f_mask.png", "masks/g.png"], ".", ".", True,
        {"images/f.png": ["masks/f_mask.png"], "images/g.jpg": ["masks/g.png"], "images/g.png": ["masks/g.png"]},
    ),
    "images/ + masks/, not recursive, masks named as the images": (
        ["h.png", "masks/h.png"], ".", ".", False, {"h.png": ["masks/h.png"]},
    ),
    "images/ + masks/ with classes": (
        ["images/benign/1.png", "images/malignant/1.png", "masks/benign/1_mask.png", "masks/malignant/1_mask.png"],
        "images", ".", True,
        {"images/benign/1.png": ["masks/benign/1_mask.png"], "images/malignant/1.png": ["masks/malignant/1_mask.png"]},
    ),
    "one class against the whole masks tree": (
        ["images/malignant/1.png", "masks/benign/1_mask.png", "masks/malignant/1_mask.png"],
        "images/malignant", "masks", False, {"images/malignant/1.png": ["masks/malignant/1_mask.png"]},
    ),
    "per-case folders in one tree, p02 and p03 unlabelled": (
        ["p01/image.png", "p01/image_mask.png", "p02/image.png", "p03/image.png"], ".", ".", True,
        {"p01/image.png": ["p01/image_mask.png"], "p02/image.png": [], "p03/image.png": []},
    ),
    "one unlabelled case against the tree": (
        ["p01/image.png", "p01/image_mask.png", "p02/image.png", "p03/image.png"], "p03", ".", False,
        {"p03/image.png": []},
    ),
    "one unlabelled case, one file": (
        ["p01/image.png", "p01/image_mask.png", "p02/image.png"], "p02/image.png", ".", False, {"p02/image.png": []},
    ),
    "per-case folders, no masks at all": (
        ["p01/g.png", "p02/g.png"], ".", ".", True, {"p01/g.png": [], "p02/g.png": []},
    ),
    "per-case folders, a separate masks tree": (
        ["images/p01/image.png", "images/p02/image.png", "masks/p01/image_mask.png"], "images", "masks", True,
        {"images/p01/image.png": ["masks/p01/image_mask.png"], "images/p02/image.png": []},
    ),
    "one case against a masks tree holding another case's": (
        ["images/p01/image.png", "masks/p02/image_mask.png"], "images/p01", "masks", False,
        {"images/p01/image.png": []},
    ),
    "deeper separate trees": (
        ["images/site1/p01/img.png", "images/site1/p02/img.png", "masks/site1/p01/img_mask.png",
         "masks/site1/p02/img_mask.png"], "images/site1", "masks", True,
        {"images/site1/p01/img.png": ["masks/site1/p01/img_mask.png"],
         "images/site1/p02/img.png": ["masks/site1/p02/img_mask.png"]},
    ),
    "a flat masks folder for nested images with unique names": (
        ["images/x/k.png", "masks/k_mask.png"], "images", "masks", True, {"images/x/k.png": ["masks/k_mask.png"]},
    ),
    "the same name at the image's place in two mask trees": (
        ["images/p01/image.png", "masks/p01/image_mask.png", "labels/p01/image_mask.png"], "images", ".", True,
        {"images/p01/image.png": "refused"},
    ),
    "a copied subset against the original dataset: no place fits": (
        ["test/a.png", "ds/images/a.png", "ds/masks/a.png"], "test", "ds", False, {"test/a.png": []},
    ),
    "Kvasir-style images/ beside masks/ with the same names, a separate copy as input: no place fits": (
        ["me/images/a.png", "kvasir/images/a.png", "kvasir/masks/a.png"], "me/images", "kvasir", False,
        {"me/images/a.png": []},
    ),
    "case names repeated across sites against a flat per-case masks tree": (
        ["images/site1/p01/img.png", "images/site2/p01/img.png", "masks/p01/img_mask.png"], "images", "masks", True,
        {"images/site1/p01/img.png": [], "images/site2/p01/img.png": []},
    ),
    "a masks tree beside images/ and an unlabelled/ tree": (
        ["data/images/p01/image.png", "data/masks/p01/image_mask.png", "data/unlabelled/p01/image.png"],
        "data", "data", True,
        {"data/images/p01/image.png": ["data/masks/p01/image_mask.png"], "data/unlabelled/p01/image.png": []},
    ),
    "an interrupted multi-slice run's masks": (
        ["images/p01/ct.png", "masks/p01/ct_mask.png", "masks/p01/ct_overlay_000.png"], "images", ".", True,
        {"images/p01/ct.png": []},
    ),
    "the ground-truth folder inside the input tree": (
        ["data/images/a.png", "data/masks/a.png"], "data", "data/masks", True,
        {"data/images/a.png": ["data/masks/a.png"]},
    ),
    "ISIC's _segmentation masks": (
        ["in/ISIC_1.png", "gt/ISIC_1_segmentation.png"], "in", "gt", False,
        {"in/ISIC_1.png": ["gt/ISIC_1_segmentation.png"]},
    ),
    "--input one site of a per-case tree whose top holds another case": (
        ["data/p01/img.png", "data/p01/img_mask.png", "data/site2/p01/img.png"], "data/site2", "data", True,
        {"data/site2/p01/img.png": []},
    ),
    "images/ + masks/ pairs below the top (train/, test/)": (
        ["data/images/1.png", "data/masks/1_mask.png", "data/test/images/1.png", "data/test/masks/1_mask.png",
         "data/p01/images/x.png", "data/p01/masks/x.png"], "data", "data", True,
        {"data/images/1.png": ["data/masks/1_mask.png"], "data/p01/images/x.png": ["data/p01/masks/x.png"],
         "data/test/images/1.png": ["data/test/masks/1_mask.png"]},
    ),
    "a subset of a tree that keeps images beside their masks: no image is a mask": (
        ["data/a.png", "data/a_mask.png", "data/b.png", "sub/b.png", "kv/images/c.png", "kv/masks/c.png",
         "me/images/c.png"], "sub", "data", False, {"sub/b.png": []},
    ),
    "a val/ tree beside images/ and masks/": (
        ["data/images/1.png", "data/masks/1.png", "data/val/1.png"], "data/val", "data", False, {"data/val/1.png": []},
    ),
    "--ground-truth one case folder inside --input": (
        ["data/p01/image.png", "data/p01/image_mask.png", "data/p02/image.png"], "data", "data/p01", True,
        {"data/p01/image.png": ["data/p01/image_mask.png"], "data/p02/image.png": []},
    ),
    "--ground-truth BUSI's class folder inside --input, the dataset": (
        ["benign/a.png", "benign/a_mask.png", "benign/a_mask_1.png", "malignant/m.png", "malignant/m_mask.png"],
        ".", "benign", True, {"benign/a.png": ["benign/a_mask.png", "benign/a_mask_1.png"], "malignant/m.png": []},
    ),
    "a copy of an image that has its mask in a masks/ folder beside it": (
        ["data/h.png", "data/masks/h.png", "copy/h.png", "data2/k.png", "data2/gt/k_mask.png", "copy/k.png"],
        "copy", "data", False, {"copy/h.png": [], "copy/k.png": []},
    ),
    "--ground-truth inside --input, its mirrored folder another input's": (
        ["study/p01/image.png", "study/labelled/p01/image.png", "study/labelled/p01/image_mask.png"],
        "study", "study/labelled", True,
        {"study/labelled/p01/image.png": ["study/labelled/p01/image_mask.png"], "study/p01/image.png": []},
    ),
    "a masks/ folder that two folders of images lead to": (
        ["data/a.png", "data/masks/a.png", "data/val/a.png", "p01/image.png", "p01/masks/image.png",
         "p01/visit2/image.png"], ".", ".", True,
        {"data/a.png": [], "data/val/a.png": [], "p01/image.png": [], "p01/visit2/image.png": []},
    ),
    "two masks of one name and index": (
        ["d/a.png", "d/a_mask.png", "d/a_mask.jpg"], "d", "d", False, {"d/a.png": "refused"},
    ),
    "another tree that keeps another case's image beside its mask": (
        ["study/p01/image.png", "study/labelled/p01/image.png", "study/labelled/p01/image_mask.png", "gt/a.png",
         "gt/a_mask.png", "in/x/a.png"], "study/p01", "study/labelled", False, {"study/p01/image.png": []},
    ),
    "a copy of a BUSI image against its class folder": (
        ["benign/a.png", "benign/a_mask.png", "copies/a.png"], "copies", "benign", False,
        {"copies/a.png": ["benign/a_mask.png"]}, {"copies/a.png": "benign/a.png"},
    ),
    "--ground-truth a class folder inside --input, with an unlabelled image and an images/ pair": (
        ["benign/a.png", "benign/a_mask.png", "benign/new.png", "train/images/t.png", "train/masks/t_mask.png"],
        ".", "benign", True, {"benign/a.png": ["benign/a_mask.png"], "benign/new.png": [], "train/images/t.png": []},
    ),
    "a copy against per-case folders that name their masks mask.png": (
        ["orig/p01/image.png", "orig/p01/mask.png", "orig/p02/image.png", "orig/p02/mask.png", "copy/p01/image.png",
         "copy/p02/image.png"], "copy", "orig", True, {"copy/p01/image.png": [], "copy/p02/image.png": []},
        {"copy/p01/image.png": "orig/p01/image.png", "copy/p02/image.png": "orig/p02/image.png"},
    ),
    "a new batch reusing the case ids of such folders": (
        ["orig/p01/image.png", "orig/p01/mask.png", "new/p01/image.png"], "new", "orig", True,
        {"new/p01/image.png": []},
    ),
    "a flat copy of some BUSI images against the dataset": (
        ["BUSI/benign/benign (1).png", "BUSI/benign/benign (1)_mask.png", "BUSI/benign/benign (1)_mask_1.png",
         "BUSI/malignant/malignant (1).png", "BUSI/malignant/malignant (1)_mask.png", "copies/benign (1).png",
         "copies/malignant (1).png"], "copies", "BUSI", False,
        {"copies/benign (1).png": ["BUSI/benign/benign (1)_mask.png", "BUSI/benign/benign (1)_mask_1.png"],
         "copies/malignant (1).png": ["BUSI/malignant/malignant (1)_mask.png"]},
        {"copies/benign (1).png": "BUSI/benign/benign (1).png",
         "copies/malignant (1).png": "BUSI/malignant/malignant (1).png"},
    ),
    "an earlier run's predictions are not ground truth": (
        ["benign/a.png", "benign/a_mask.png", "benign/b.png", "benign/run1/b_mask.png", "benign/run1/b_overlay.png",
         "run2/p/c_mask.png", "benign/c.png"], "benign", ".", False,
        {"benign/a.png": ["benign/a_mask.png"], "benign/b.png": [], "benign/c.png": []},
    ),
}


@pytest.mark.parametrize("layout", sorted(GROUND_TRUTH_LAYOUTS))
def test_ground_truth_is_matched_by_place_and_never_guessed(tmp_path, layout):
    """:class:`GroundTruth` as :class:`FolderPrediction` uses it, on layouts users have: each image gets the
    masks at its place, or none, or a refusal; never another case's mask, another image or a run's output."""
    from lesionseg.workflows.predict import GroundTruth, list_inputs

    files, given_input, given_truth, recursive, expected = GROUND_TRUTH_LAYOUTS[layout][:5]
    copies = GROUND_TRUTH_LAYOUTS[layout][5] if len(GROUND_TRUTH_LAYOUTS[layout]) > 5 else {}
    for index, name in enumerate(files):  # each file its own picture: a copy is a copy only where it is one
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if re.search(r"mask|_gt|_seg|labels/|/gt/", name, re.IGNORECASE):  # a mask: 0 and 255
            pixels = np.where(np.arange(16).reshape(4, 4) == index % 16, 255, 0).astype(np.uint8)
        else:  # an image: a gradient of its own
            pixels = (np.arange(16).reshape(4, 4) * 8 + index).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / name)
    for copy, original in copies.items():
        shutil.copyfile(tmp_path / original, tmp_path / copy)
    (tmp_path / "run2").mkdir(exist_ok=True)
    (tmp_path / "run2" / "predictions.csv").write_text("file\n")  # run2/ is an earlier predict's output folder
    (tmp_path / "run2" / "summary.json").write_text("{}")
    source = tmp_path / given_input
    truth = GroundTruth(tmp_path / given_truth, exclude=tmp_path / "out", input_root=source)
    masks = truth.mask_files()
    inputs = [path for path in list_inputs(source, recursive) if path.resolve() not in masks]
    truth.set_inputs(inputs)
    found = {}
    for path in inputs:
        try:
            found[str(path.relative_to(tmp_path))] = [str(mask.relative_to(tmp_path)) for mask in truth.find(path)]
        except DataError:
            found[str(path.relative_to(tmp_path))] = "refused"
    assert found == expected


def test_masks_beside_the_images_are_not_predicted_on(dcnet_tiny, tmp_path):
    """``--input D --ground-truth D`` with ``_gt``, ``_seg``, ``_label`` masks: the masks are ground truth, not
    images (only ``_mask`` was left out of the inputs); images with those words inside their names stay."""
    folder = tmp_path / "data"
    names = {"a": "a_gt", "b": "b_seg", "c": "c_label_1", "d": "d_GT", "seg_view": None, "case_gt_x": None}
    for seed, (image, mask) in enumerate(names.items()):
        _write_case(folder, image, seed, None)
        if mask is not None:
            Image.fromarray(np.zeros((20, 30), np.uint8)).save(folder / f"{mask}.png")
    assert _predict(dcnet_tiny, folder, tmp_path / "out", "--ground-truth", str(folder)) == 0
    with open(tmp_path / "out" / "predictions.csv", newline="") as table:
        rows = {Path(row["file"]).name: row["ground_truth"] for row in csv.DictReader(table)}
    assert rows == {f"{image}.png": str(folder / f"{mask}.png") if mask else "" for image, mask in names.items()}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["images"], summary["with_ground_truth"], summary["without_ground_truth"]) == (6, 4, 2)


def test_model_and_device_problems_are_refused(dcnet_tiny, tmp_path, capsys):
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "image.png")
    assert _predict(None, tmp_path / "image.png", tmp_path / "out") == 2
    assert "--bundle DIR" in capsys.readouterr().err
    weights = str(dcnet_tiny / "models" / "model.pt")
    assert _predict(None, tmp_path / "image.png", tmp_path / "out", "--model", weights) == 2
    assert "not a TorchScript model" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert _predict(dcnet_tiny, tmp_path / "image.png", tmp_path / "out", "--device", "cuda") == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("frames", [1, 3])
def test_itk_reads_dicom_as_pydicom_does(tmp_path, frames):
    """The fallback for machines without pydicom gives the same slices and geometry (runs where ITK is installed)."""
    pytest.importorskip("itk")
    from lesionseg.data.io import _read_dicom, _read_with_itk

    pixels = (np.arange(frames * 37 * 53) % 4000).astype(np.uint16).reshape(frames, 37, 53)
    _write_dicom(tmp_path / "a.dcm", pixels if frames > 1 else pixels[0], frames=frames if frames > 1 else None)
    reference, fallback = _read_dicom(tmp_path / "a.dcm"), _read_with_itk(tmp_path / "a.dcm")
    assert np.array_equal(fallback.slices, reference.slices)
    assert fallback.voxel_shape == reference.voxel_shape and fallback.spacing == reference.spacing
    np.testing.assert_allclose(fallback.affine[:, :2], reference.affine[:, :2], atol=1e-6)
    np.testing.assert_allclose(fallback.affine[:, 3], reference.affine[:, 3], atol=1e-6)


def test_outputs_are_not_read_back_as_inputs_or_ground_truth(dcnet_tiny, tiny_busi, tmp_path):
    """Writing into a folder inside the input folder and running again predicts on the images only, and an
    earlier run's ``<name>_mask.png`` there is not taken for the ground truth of ``<name>``."""
    results = tiny_busi / "results"
    empty = _empty_threshold(dcnet_tiny, tiny_busi, tmp_path / "calibration", "--recursive")
    args = ("--recursive", "--ground-truth", str(tiny_busi), "--threshold", empty)
    assert _predict(dcnet_tiny, tiny_busi, results, *args) == 0
    first = (results / "predictions.csv").read_text()
    assert _predict(dcnet_tiny, tiny_busi, results, *args, "--overwrite") == 0
    summary = json.loads((results / "summary.json").read_text())
    assert (summary["images"], summary["with_ground_truth"]) == (8, 8)
    # the first run's <name>_mask.png in results/ are not merged into the ground truth of the second
    assert (results / "predictions.csv").read_text() == first
    with open(results / "predictions.csv", newline="") as table:
        truths = [row["ground_truth"] for row in csv.DictReader(table)]
    assert len(truths) == 8 and not any(str(results) in truth for truth in truths), truths
    assert not list(tiny_busi.rglob("*_overlay_overlay.png"))


def _busi_like_folder(folder: Path) -> dict[Path, bytes]:
    """Two images with their ground truth ``<name>_mask.png`` beside them; returns every file's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(("case (1)", "case (2)")):
        Image.fromarray((_texture((30, 40), index) * 255).astype(np.uint8)).save(folder / f"{name}.png")
        truth = np.zeros((30, 40), np.uint8)
        truth[5:15, 10:30] = 255
        Image.fromarray(truth).save(folder / f"{name}_mask.png")
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def _files(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    "case",
    ["output_is_input", "output_holds_input_folder", "output_is_ground_truth", "output_holds_single_input",
     "output_inside_input_holds_images", "output_is_a_link_to_input"],
)
def test_output_folder_holding_inputs_is_refused_and_nothing_written(dcnet_tiny, tmp_path, capsys, case):
    """`--output X --input X` wrote <name>_mask.png predictions over BUSI's ground truth <name>_mask.png."""
    data = tmp_path / "data" / "busi"
    before = _busi_like_folder(data)
    inputs, extra, output = data, [], data
    if case == "output_holds_input_folder":
        output = tmp_path / "data"
    elif case == "output_is_ground_truth":
        (tmp_path / "images").mkdir()
        shutil.copy(data / "case (1).png", tmp_path / "images" / "case (1).png")
        before = _files(tmp_path)
        inputs, extra = tmp_path / "images", ["--ground-truth", str(data)]
    elif case == "output_holds_single_input":
        inputs = data / "case (1).png"
    elif case == "output_inside_input_holds_images":
        output = data / "more"
        _busi_like_folder(output)
        before = _files(tmp_path)
        extra = ["--recursive"]
    elif case == "output_is_a_link_to_input":
        output = tmp_path / "link"
        output.symlink_to(data, target_is_directory=True)
        before = _files(tmp_path)
    assert _predict(dcnet_tiny, inputs, output, *extra) == 2
    message = capsys.readouterr().err
    assert f"lesionseg predict: {output}: the output folder " in message, message
    assert "choose" in message
    assert _files(tmp_path) == before, "predict wrote or changed files although it refused the output folder"


def test_existing_results_are_kept_unless_overwrite(dcnet_tiny, tmp_path, capsys):
    _busi_like_folder(tmp_path / "in")
    out = tmp_path / "out"
    assert _predict(dcnet_tiny, tmp_path / "in", out, "--probabilities") == 0
    written = _files(out)
    assert len(written) == 2 + 2 * 3  # predictions.csv, summary.json; mask, prob and overlay per image
    # results of an earlier run (or any file of those names) are never replaced silently
    (out / "case (2)_overlay.png").write_bytes(b"someone's file")
    before = _files(out)
    assert _predict(dcnet_tiny, tmp_path / "in", out) == 2
    message = capsys.readouterr().err
    assert f"{out}: holds the results of an earlier run" in message and "--overwrite" in message
    assert str(out / "predictions.csv") in message
    assert _files(out) == before
    # a folder holding only one of them is refused too
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "case (1)_mask.png").write_bytes(b"keep me")
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "other") == 2
    assert str(tmp_path / "other" / "case (1)_mask.png") in capsys.readouterr().err
    assert (tmp_path / "other" / "case (1)_mask.png").read_bytes() == b"keep me"
    # --overwrite replaces them, and still never writes among the inputs
    assert _predict(dcnet_tiny, tmp_path / "in", out, "--probabilities", "--overwrite") == 0
    replaced = _files(out)
    assert replaced.keys() == written.keys()
    assert all(replaced[path] == written[path] for path in written if path.name != "summary.json")  # timing differs
    inputs = _files(tmp_path / "in")
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "in", "--overwrite") == 2
    assert "the output folder is the --input folder" in capsys.readouterr().err
    assert _files(tmp_path / "in") == inputs


def test_two_inputs_never_write_the_same_output(dcnet_tiny, tmp_path, capsys):
    """``a.png`` and ``a.jpg`` are written as ``a_png_*`` and ``a_jpg_*``; ``a_png.bmp`` would be ``a_png_*``
    too: it is reported, not written over the first."""
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((20, 30), 100, np.uint8)).save(tmp_path / "in" / "a.png")
    Image.fromarray(np.full((20, 30), 100, np.uint8)).save(tmp_path / "in" / "a.jpg")
    Image.fromarray(np.full((25, 35), 100, np.uint8)).save(tmp_path / "in" / "a_png.bmp")
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "out") == 1
    printed = capsys.readouterr().out
    assert f"{tmp_path / 'out' / 'a_png_mask.png'}: would be written twice in this run" in printed
    assert Image.open(tmp_path / "out" / "a_png_mask.png").size == (30, 20)  # a.png's, not a_png.bmp's


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "nan", "inf", "half"])
def test_threshold_outside_zero_one_is_refused(dcnet_tiny, tmp_path, capsys, value):
    """0 marked every pixel lesion and 1.5 none, with exit 0."""
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "image.png")
    with pytest.raises(SystemExit) as raised:
        _predict(dcnet_tiny, tmp_path / "image.png", tmp_path / "out", "--threshold", value)
    assert raised.value.code == 2
    message = capsys.readouterr().err
    assert "argument --threshold" in message and value in message and "between 0 and 1" in message
    assert not (tmp_path / "out").exists()


def test_predict_file_refuses_a_threshold_outside_zero_one(tmp_path):
    from lesionseg.workflows.predict import predict_file

    for value in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            predict_file(tmp_path / "a.png", tmp_path / "a", predictor=None, threshold=value, probabilities=False,
                         truth_files=[])


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it was raised from (MONAI and ignite wrap a workflow's errors)."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _poisoned(state: dict, value: float) -> tuple[dict, str]:
    """``state`` with ``value`` (NaN or infinity) in one weight of its third tensor; returns it and that key."""
    state = {key: tensor.clone() for key, tensor in state.items()}
    key = [k for k, v in state.items() if v.is_floating_point()][2]
    state[key].view(-1)[0] = value
    return state, key


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_checkpoint_with_non_finite_weights_is_refused(dcnet_tiny, tmp_path, capsys, value):
    """NaN weights gave NaN probabilities, read as "no lesion" everywhere, with exit 0."""
    Image.fromarray((_texture((20, 30), 0) * 255).astype(np.uint8)).save(tmp_path / "image.png")
    state, key = _poisoned(torch.load(dcnet_tiny / "models" / "model.pt", weights_only=True), value)
    for name, saved in (("bad.pt", state), ("nested.pt", {"model": state})):
        torch.save(saved, tmp_path / name)
        assert _predict(dcnet_tiny, tmp_path / "image.png", tmp_path / "out", "--checkpoint", str(tmp_path / name)) == 2
        message = capsys.readouterr().err
        assert f"lesionseg predict: {tmp_path / name}: refused: tensor '{key}' holds" in message, message
        assert not (tmp_path / "out").exists()
    # the bundle's own models/model.pt
    bundle = tmp_path / "bundle"
    shutil.copytree(dcnet_tiny, bundle)
    torch.save(state, bundle / "models" / "model.pt")
    assert _predict(bundle, tmp_path / "image.png", tmp_path / "out") == 2
    assert f"{bundle / 'models' / 'model.pt'}: refused: tensor '{key}'" in capsys.readouterr().err


@pytest.mark.filterwarnings(r"ignore:.torch\.jit\.\w+. is deprecated:DeprecationWarning")
def test_torchscript_model_with_non_finite_weights_is_refused(dcnet_tiny, tmp_path):
    """A TorchScript file saved without MONAI's metadata (plain torch.jit.save) loads; with NaN weights it is
    refused naming the tensor. (MONAI's load_net_with_metadata failed on such a file with a JSONDecodeError.)"""
    from lesionseg.workflows.predictor import ModelError, load_predictor

    network = torch.nn.Conv2d(1, 1, 3, padding=1)
    torch.jit.save(torch.jit.script(network), tmp_path / "model.ts")
    preprocessing = {"image_size": TINY["image_size"]}
    predictor = load_predictor(bundle=dcnet_tiny, model=tmp_path / "model.ts", overrides=preprocessing, device="cpu")
    assert predictor(np.ones((20, 30), np.float32), "image.png").shape == (20, 30)
    with torch.no_grad():
        network.weight[0, 0, 1, 1] = float("nan")
    torch.jit.save(torch.jit.script(network), tmp_path / "nan.ts")
    with pytest.raises(ModelError, match=rf"{tmp_path / 'nan.ts'}: refused: tensor 'weight' holds 1 NaN"):
        load_predictor(bundle=dcnet_tiny, model=tmp_path / "nan.ts", overrides=preprocessing, device="cpu")
    (tmp_path / "broken.ts").write_bytes((tmp_path / "model.ts").read_bytes()[:-200])
    with pytest.raises(ModelError, match=rf"{tmp_path / 'broken.ts'}: not"):
        load_predictor(bundle=dcnet_tiny, model=tmp_path / "broken.ts", overrides=preprocessing, device="cpu")


class _Overflowing(torch.nn.Module):
    """A network whose output overflows to infinity (and NaN) on every image."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        logits = batch * 0 + torch.finfo(torch.float32).max
        logits = logits * 2  # inf
        return torch.cat([logits[..., :1] - logits[..., :1], logits[..., 1:]], dim=-1)  # nan in one column


def test_non_finite_network_output_is_refused_naming_the_image(dcnet_tiny, tmp_path, monkeypatch, capsys):
    """An image on which the network overflows is reported by name and nothing of it is written."""
    import lesionseg.workflows.predict as predict_module
    from lesionseg.workflows.predictor import NonFiniteOutputError, Predictor, load_predictor

    reference = load_predictor(dcnet_tiny, overrides=TINY, device="cpu")
    overflowing = Predictor(_Overflowing(), reference.preprocessing, reference.image_key, "cpu")
    Image.fromarray((_texture((20, 30), 0) * 255).astype(np.uint8)).save(tmp_path / "image.png")
    message = rf"^{tmp_path / 'image.png'}: the network's output holds \d+ NaN and \d+ infinite"
    with pytest.raises(NonFiniteOutputError, match=message):
        overflowing(np.ones((20, 30), np.float32), tmp_path / "image.png")
    monkeypatch.setattr(predict_module, "load_predictor", lambda *args, **kwargs: overflowing)
    assert _predict(dcnet_tiny, tmp_path / "image.png", tmp_path / "out") == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == 0 and summary["failed"][0]["file"] == str(tmp_path / "image.png")
    assert "the network's output holds" in summary["failed"][0]["problem"]
    assert not list((tmp_path / "out").glob("image_*"))


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_bundle_inference_refuses_non_finite_weights(bundle_name, tmp_path):
    """The bundles' own inference workflow (`monai.bundle run --config_file configs/inference.yaml`) loads
    models/model.pt with FiniteCheckpointLoader, and checks the network's output before thresholding it."""
    from lesionseg.engines import NonFiniteError, RefuseNonFinited

    bundle = _make_tiny_bundle(bundle_name, tmp_path)
    state, key = _poisoned(torch.load(bundle / "models" / "model.pt", weights_only=True), float("nan"))
    torch.save(state, bundle / "models" / "model.pt")
    _write_pictures(tmp_path / "in")
    overrides = {**TINY, "dataset_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "workflow")}
    with pytest.raises(Exception) as raised:
        run_workflow(bundle, ["inference"], "infer", overrides)
    assert any(
        isinstance(error, NonFiniteError)
        and str(error).startswith(f"{bundle / 'models' / 'model.pt'}: refused: tensor '{key}'")
        for error in _chain(raised.value)
    ), repr(raised.value)
    assert not list((tmp_path / "workflow").glob("*_mask.png"))
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    assert isinstance(parser.get_parsed_content("postprocessing").transforms[0], RefuseNonFinited)


def test_unwritable_output_is_reported_without_a_traceback_or_partial_files(dcnet_tiny, tmp_path, monkeypatch, capsys):
    import errno

    import lesionseg.data.writers as writers

    _busi_like_folder(tmp_path / "in")
    (tmp_path / "notes.txt").write_text("a file")
    # --output naming a file, or a folder that cannot be created
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "notes.txt") == 2
    assert f"{tmp_path / 'notes.txt'}: is a file, not a folder" in capsys.readouterr().err
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "notes.txt" / "out") == 2
    assert f"{tmp_path / 'notes.txt' / 'out'}: cannot create the output folder" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "a file"

    # the disk fills up after the first mask is written: that mask is removed, and the run stops there in one
    # line naming the file (every later image would fail alike)
    def disk_full(probability, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(writers, "save_probability_png", disk_full)
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "out", "--probabilities") == 1
    captured = capsys.readouterr()
    expected = f"lesionseg predict: {tmp_path / 'out' / 'case (1)_prob.png'}: No space left on device (free some"
    assert expected in captured.err and "Traceback" not in captured.out + captured.err
    assert list((tmp_path / "out").iterdir()) == []

    # another failed write (here a permission) skips that image and reports it; the others are written
    def refused(probability, path):
        raise OSError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(writers, "save_probability_png", refused)
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "out2", "--probabilities") == 1
    captured = capsys.readouterr()
    for name in ("case (1).png", "case (2).png"):
        assert f"{tmp_path / 'in' / name}: cannot write its results (Permission denied: " in captured.out
    assert "Traceback" not in captured.out + captured.err
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["summary.json"]


def test_bundle_inference_refuses_to_write_among_its_images(dcnet_tiny, tmp_path):
    """`monai.bundle run --config_file configs/inference.yaml --dataset_dir X --output_dir X` wrote
    <name>_mask.png over the ground truth beside the images."""
    before = _busi_like_folder(tmp_path / "data")
    overrides = {**TINY, "dataset_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "data")}
    with pytest.raises(Exception) as raised:
        run_workflow(dcnet_tiny, ["inference"], "infer", overrides)
    refusal = f"{tmp_path / 'data'}: the output folder holds the input"
    assert any(refusal in str(error) for error in _chain(raised.value))
    assert _files(tmp_path / "data") == before
    overrides["output_dir"] = str(tmp_path / "results")  # elsewhere it writes as before
    run_workflow(dcnet_tiny, ["inference"], "infer", overrides)
    masks = sorted(p.name for p in (tmp_path / "results").glob("*_mask.png"))
    assert masks == ["case (1)_mask.png", "case (2)_mask.png"]


def test_a_bad_pixel_limit_setting_stops_the_run_once(dcnet_tiny, tmp_path, monkeypatch, capsys):
    _busi_like_folder(tmp_path / "in")
    monkeypatch.setenv("LESIONSEG_MAX_PIXELS", "lots")
    assert _predict(dcnet_tiny, tmp_path / "in", tmp_path / "out") == 2
    assert "lesionseg predict: LESIONSEG_MAX_PIXELS='lots': must be a positive whole number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bundle_name", BUNDLES)
@pytest.mark.parametrize("value", [0.0, 1.5, float("nan")])
def test_bundle_inference_and_evaluation_refuse_a_threshold_outside_zero_one(bundle_name, value):
    """`--threshold 1.5` on the bundles' inference (or evaluation) gave empty masks with no error."""
    configs = REPO / "bundles" / bundle_name / "configs"
    for files, key, built in (
        ([configs / "inference.yaml"], "threshold", "mask_postprocessing"),
        ([configs / "train.yaml", configs / "evaluate.yaml"], "eval_threshold", "validate#postprocessing"),
    ):
        parser = ConfigParser()
        parser.read_config([str(f) for f in files])
        parser[key] = value
        with pytest.raises(Exception) as raised:
            parser.get_parsed_content(built)
        refusal = f"{key}: {value!r} is not a probability strictly between 0 and 1"
        assert any(refusal in str(e) for e in _chain(raised.value))
        parser[key] = 0.25
        parser.get_parsed_content(built, lazy=False)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_output_disk_stops_at_the_first_file_in_one_line(
    dcnet_tiny, tmp_path, capsys, caplog, error
):
    from test_write_failures import _failing_disk

    folder = tmp_path / "in"
    _write_pictures(folder)
    output = tmp_path / "out"
    output.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        _failing_disk(patch, output, budget=200, error=error)
        assert _predict(dcnet_tiny, folder, output) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lesionseg predict:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    # the file that could not be written is named, not the tables at the end of a run that went on failing
    assert lines[0].startswith(f"lesionseg predict: {output}{os.sep}") and os.strerror(error) in lines[0], lines[0]
    assert not [record for record in caplog.records if "skipped" in record.getMessage()], "the run went on"
    # nothing half-written: what is there is whole (a mask of the first image at most), and no temporary file
    assert not [p for p in output.rglob(".*")], "a temporary file was left behind"
    for mask in output.glob("*_mask.png"):
        Image.open(mask).load()

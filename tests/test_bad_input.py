"""Bad input, as a matrix: every case gets one clear error that names the file (or config key), the problem and
what to do, or, where the input is merely unusual (16-bit, RGBA, 1x1...), is read correctly.

Readers (lesionseg.data.io, readers, transforms), the integrity check, the bundles' settings and the networks'
arguments. The reader cases are also the ones ``lesionseg predict`` meets, since it reads images with
:func:`lesionseg.data.io.read_image` / ``LoadUltrasoundd``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch
from monai.transforms import Compose, Resized
from PIL import Image

from lesionseg.data.datalist import read_datalist, write_datalist
from lesionseg.data.integrity import ERROR, check_dataset
from lesionseg.data.io import MAX_PIXELS, DataError, read_image, read_mask
from lesionseg.data.readers import read_dataset, read_folder_pair, read_images
from lesionseg.data.splits import datalist_section
from lesionseg.data.transforms import LoadUltrasoundd
from lesionseg.engines.config_checks import ConfigError, check_training_config
from lesionseg.networks.nets import DCNet, TaiChiNet

TINY_FEATURES = (2, 4, 8, 16, 32)


def _gray(path: Path, shape=(6, 8), value=None) -> Path:
    if value is None:
        array = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    else:
        array = np.full(shape, value, np.uint8)
    Image.fromarray(array, "L").save(path)
    return path


def _nifti(path: Path, array: np.ndarray) -> Path:
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), path)
    return path


def _raises(call, path_or_key: str, *words: str, error=DataError):
    """``call()`` raises ``error`` whose message starts with ``path_or_key`` and holds every word."""
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert message.startswith(f"{path_or_key}: ") or f"\n{path_or_key}: " in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return raised.value


# --------------------------------------------------------------------------------------- file-level cases
# each returns nothing; the names are the matrix's rows


def case_zero_byte_file(tmp):
    path = tmp / "zero.png"
    path.write_bytes(b"")
    _raises(lambda: read_image(path), str(path), "empty file (0 bytes)", "export it again")


def case_truncated_png(tmp):
    data = _gray(tmp / "good.png", (40, 50)).read_bytes()
    path = tmp / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    _raises(lambda: read_image(path), str(path), "truncated or corrupt", "export it again")


def case_text_file_named_png(tmp):
    path = tmp / "notes.png"
    path.write_text("patient notes, not an image")
    _raises(lambda: read_image(path), str(path), "not an image PIL can read", "convert it to PNG")


def case_dicom_file(tmp):
    path = tmp / "scan.dcm"
    path.write_bytes(bytes(128) + b"DICM" + bytes(64))
    _raises(lambda: read_image(path), str(path), "not an image", "DICOM")


def case_png_with_a_jpg_extension_reads_as_png(tmp):
    path = tmp / "actually_png.jpg"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8), "L").save(path, format="PNG")
    assert np.array_equal(read_image(path), np.arange(48, dtype=np.float32).reshape(6, 8))  # content decides


def case_cmyk_image(tmp):
    path = tmp / "print.jpg"
    Image.new("CMYK", (4, 3)).save(path)
    _raises(lambda: read_image(path), str(path), "unsupported pixel format 'CMYK'", "convert it")


def case_multi_frame_tiff(tmp):
    path = tmp / "cine.tif"
    Image.new("L", (4, 3)).save(path, save_all=True, append_images=[Image.new("L", (4, 3))])
    _raises(lambda: read_image(path), str(path), "holds 2 frames", "single 2D image")


def case_folder_given_as_image(tmp):
    _raises(lambda: read_image(tmp), str(tmp), "is a folder")


def case_missing_file(tmp):
    _raises(lambda: read_mask(tmp / "gone_mask.png"), str(tmp / "gone_mask.png"), "file not found")


def case_unreadable_file(tmp, monkeypatch):
    path = _gray(tmp / "locked.png")
    if os.geteuid() == 0:  # root reads anything: make the permission check fail as it would for a user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == path else real(p, mode))
    else:
        path.chmod(0)
    _raises(lambda: read_image(path), str(path), "permission denied", "chmod")


def case_one_by_one_image_reads_and_resizes(tmp):
    path = _gray(tmp / "dot.png", (1, 1), 7)
    assert read_image(path).shape == (1, 1)
    loaded = Compose([LoadUltrasoundd(keys="image"), Resized(keys="image", spatial_size=(32, 32))])({"image": path})
    assert tuple(loaded["image"].shape) == (1, 32, 32) and torch.all(loaded["image"] == 7)


def case_10000_by_10000_image_is_refused_from_its_header(tmp, monkeypatch):
    path = tmp / "huge.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 M pixels, a small file
    assert path.stat().st_size < 2_000_000
    error = _raises(lambda: read_image(path), str(path), "10000 x 10000 = 100,000,000 pixels",
                    f"limit of {MAX_PIXELS:,}", "LESIONSEG_MAX_PIXELS=100000000")
    assert "DecompressionBomb" not in str(error)
    # the limit is a setting: the argument and the environment variable lower (or raise) it
    small = _gray(tmp / "small.png", (20, 20))
    _raises(lambda: read_image(small, max_pixels=399), str(small), "20 x 20 = 400 pixels")
    assert read_image(small, max_pixels=400).shape == (20, 20)
    monkeypatch.setenv("LESIONSEG_MAX_PIXELS", "399")
    _raises(lambda: LoadUltrasoundd(keys="image")({"image": small}), str(small), "limit of 399")
    monkeypatch.setenv("LESIONSEG_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="LESIONSEG_MAX_PIXELS='lots': must be a positive whole number"):
        read_image(small)


def case_nan_in_a_float_tiff(tmp):
    path = tmp / "float.tif"
    array = np.ones((4, 5), np.float32)
    array[1, 2] = np.nan
    Image.fromarray(array, "F").save(path)
    _raises(lambda: read_image(path), str(path), "holds 1 NaN and 0 infinite", "nan_to_num")


def case_inf_in_a_nifti_image(tmp):
    array = np.zeros((5, 4), np.float32)
    array[0, 0], array[1, 1] = np.inf, -np.inf
    path = _nifti(tmp / "image.nii.gz", array)
    _raises(lambda: read_image(path), str(path), "holds 0 NaN and 2 infinite", "finite")


def case_nan_in_a_nifti_mask(tmp):
    array = np.zeros((5, 4), np.float32)
    array[2, 3] = np.nan
    path = _nifti(tmp / "label.nii", array)
    _raises(lambda: read_mask(path), str(path), "holds 1 NaN")


def case_nifti_volume_instead_of_a_2d_image(tmp):
    path = _nifti(tmp / "volume.nii.gz", np.zeros((8, 6, 5), np.float32))
    _raises(lambda: read_image(path), str(path), "NIfTI volume of shape (8, 6, 5)", "expected a 2D image")


def case_truncated_nifti(tmp):
    data = _nifti(tmp / "good.nii.gz", np.random.default_rng(0).random((40, 30)).astype(np.float32)).read_bytes()
    path = tmp / "cut.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    _raises(lambda: read_image(path), str(path), "truncated or corrupt NIfTI")


def case_2d_nifti_reads_like_the_png_it_was_made_from(tmp):
    # MONAI's convention: the first NIfTI axis is the width (what LoadImage + SaveImage write for a PNG)
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)  # (H, W)
    path = _nifti(tmp / "image.nii", pixels.T[..., None])  # (W, H, 1)
    assert np.array_equal(read_image(path), pixels.astype(np.float32))


def case_mask_with_values_0_128_255(tmp):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:4], mask[3, 1:4] = 255, 128  # anti-aliased edge
    path = tmp / "mask.png"
    Image.fromarray(mask, "L").save(path)
    assert np.array_equal(read_mask(path), (mask > 0).astype(np.uint8))  # read as lesion wherever non-zero
    # ... and check-data calls it out as an error to look at
    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    _gray(tmp / "images" / "a.png")
    path.rename(tmp / "masks" / "a.png")
    problems = [p for p in check_dataset(tmp) if p.severity == ERROR]
    assert [p.path for p in problems] == [str(tmp / "masks" / "a.png")]
    expected = "not binary: its lesion pixels take 2 values, 128, 255 (read as lesion wherever non-zero)"
    assert expected in problems[0].message


def case_rgba_mask(tmp):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[0, 0] = (255, 255, 255, 255)  # painted lesion
    rgba[1, 1] = (255, 255, 255, 0)  # white but fully transparent: nothing was painted
    rgba[2, 2] = (0, 0, 0, 255)  # opaque black background
    path = tmp / "mask.png"
    Image.fromarray(rgba, "RGBA").save(path)
    expected = np.zeros((4, 5), np.uint8)
    expected[0, 0] = 1
    assert np.array_equal(read_mask(path), expected)


def case_16_bit_masks_and_images(tmp):
    mask = np.zeros((4, 5), np.uint16)
    mask[1:3, 2:4] = 65535
    Image.fromarray(mask).save(tmp / "mask16.png")
    Image.fromarray((mask > 0).astype(np.uint16)).save(tmp / "mask01.png")  # a 0/1 label map, dark to the eye
    assert np.array_equal(read_mask(tmp / "mask16.png"), read_mask(tmp / "mask01.png"))
    assert read_mask(tmp / "mask16.png").sum() == 4
    Image.fromarray(np.full((4, 5), 40000, np.uint16)).save(tmp / "image16.png")
    assert read_image(tmp / "image16.png").max() == 40000  # not squashed to 8 bits


def case_image_and_mask_sizes_differ(tmp):
    image, mask = _gray(tmp / "a.png", (6, 8)), _gray(tmp / "a_mask.png", (6, 9), 255)
    _raises(lambda: LoadUltrasoundd()({"image": image, "label": mask}), str(mask),
            "mask has shape (6, 9) (H, W) but its image", str(image))


def case_missing_mask(tmp):
    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    _gray(tmp / "images" / "a.png")
    _gray(tmp / "images" / "b.png")
    _gray(tmp / "masks" / "a.png", value=255)
    _raises(lambda: read_dataset(tmp), str(tmp / "images" / "b.png"), "no mask found for this image")


def case_mask_without_image(tmp):
    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    _gray(tmp / "images" / "a.png")
    _gray(tmp / "masks" / "a.png", value=255)
    _gray(tmp / "masks" / "z.png", value=255)
    _raises(lambda: read_dataset(tmp), str(tmp / "masks" / "z.png"), "no image found for this mask")


def case_duplicate_ids_in_a_folder(tmp):
    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    _gray(tmp / "images" / "a.png")
    Image.new("RGB", (8, 6)).save(tmp / "images" / "a.jpg")
    _gray(tmp / "masks" / "a.png", value=255)
    _raises(lambda: read_folder_pair(tmp / "images", tmp / "masks"), str(tmp / "images" / "a.png"),
            "same name as a.jpg")


def case_duplicate_entries_in_a_datalist(tmp):
    image, mask = _gray(tmp / "a.png"), _gray(tmp / "a_mask.png", value=255)
    other, other_mask = _gray(tmp / "b.png", value=3), _gray(tmp / "b_mask.png", value=255)
    item = {"image": str(image), "label": str(mask)}
    datalist = write_datalist(tmp / "list.json", {"training": [item, {"image": str(other), "label": str(other_mask)}],
                                                  "validation": [item]})
    problems = [p for p in check_dataset(datalist) if p.severity == ERROR]
    assert [(p.path, p.message.split(";")[0]) for p in problems] == [(str(image), "listed 2 times")]
    assert "leaks into the evaluation" in problems[0].message


def case_unreadable_folder(tmp, monkeypatch):
    folder = tmp / "benign"
    folder.mkdir()
    _gray(folder / "benign (1).png")
    if os.geteuid() == 0:  # root lists anything: fail the listing as it would for a user
        real = Path.iterdir

        def iterdir(self):
            if self == folder:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "iterdir", iterdir)
    else:
        folder.chmod(0)
    try:
        _raises(lambda: read_dataset(tmp), str(folder), "cannot read the folder (permission denied)", "chmod")
    finally:
        folder.chmod(0o755)


def case_invalid_datalist_json(tmp):
    path = tmp / "list.json"
    path.write_text('{"training": [')
    _raises(lambda: read_datalist(path), str(path), "not valid JSON")


def case_datalist_without_the_section(tmp):
    path = tmp / "list.json"
    path.write_text(json.dumps({"train": []}))
    _raises(lambda: read_datalist(path, "training"), str(path), "no section 'training'; it has ['train']")


def case_prediction_folder_with_a_bad_file_keeps_the_good_ones(tmp):
    # what `lesionseg predict` does per file: a bad file is reported by name, the others are read
    for name in ("1.png", "2.png", "4.png"):
        _gray(tmp / name)
    data = _gray(tmp / "3.png", (40, 50)).read_bytes()
    (tmp / "3.png").write_bytes(data[: len(data) // 2])
    read, failed = [], []
    for item in read_images(tmp):
        try:
            read.append(LoadUltrasoundd(keys="image")(item)["image"].shape)
        except DataError as error:
            failed.append(error)
    assert len(read) == 3 and [e.path for e in failed] == [str(tmp / "3.png")]
    assert "truncated or corrupt" in str(failed[0])


def _labelled_datalist(tmp, training, validation=None):
    """A datalist of two phantom-like pairs per section, each item changed by ``training`` / ``validation``."""
    items = []
    for name in ("a", "b", "c", "d"):
        image = _gray(tmp / f"{name}.png")
        items.append({"image": str(image), "label": str(_gray(tmp / f"{name}_mask.png", value=255))})
    sections = {"training": [training(dict(i)) if index == 1 else i for index, i in enumerate(items[:2])],
                "validation": [(validation or (lambda i: i))(dict(i)) for i in items[2:]]}
    path = tmp / "list.json"
    path.write_text(json.dumps(sections))
    return path


def _renamed(old, new):
    def rename(item):
        item[new] = item.pop(old)
        return item

    return rename


def case_misspelt_label_key_in_a_datalist(tmp):
    # passed check-data (its section was "unlabelled"), then training died with MONAI's KeyError: 'label'
    path = _labelled_datalist(tmp, _renamed("label", "lable"))
    for call in (lambda: check_dataset(path), lambda: datalist_section(path, "training")):
        _raises(call, str(path), "training[1] has the unknown key 'lable' (did you mean 'label'?)")
    path = _labelled_datalist(tmp, lambda item: item, _renamed("image", "imgae"))
    _raises(lambda: datalist_section(path, "validation"), str(path), "validation[0] has the unknown key 'imgae'")
    # extra keys of one's own are fine, and so is a key beside the one it resembles
    path = _labelled_datalist(tmp, lambda item: {**item, "patient_age": 50, "label_1": item["label"]})
    assert len(datalist_section(path, "training")) == 2 and not [p for p in check_dataset(path) if p.severity == ERROR]


def case_training_item_without_a_label(tmp):
    path = _labelled_datalist(tmp, _renamed("label", "mask"))
    for call in (lambda: check_dataset(path), lambda: datalist_section(path, "training")):
        _raises(call, str(path), "training[1] has no 'label' (its keys: image, mask)")


def case_every_training_item_without_a_label(tmp):
    # a whole section of misspelt keys was left out as "unlabelled" by check-data, then KeyError in training
    path = _labelled_datalist(tmp, lambda item: item)
    content = json.loads(path.read_text())
    content["training"] = [{"image": item["image"], "mask": item["label"]} for item in content["training"]]
    path.write_text(json.dumps(content))
    for call in (lambda: check_dataset(path), lambda: datalist_section(path, "training")):
        _raises(call, str(path), "training[0] has no 'label'")


@pytest.mark.parametrize("spacing", ["0.1mm", [0.1], [0.1, -0.1], [0.1, "a"], [0.1, float("inf")], {"row": 0.1}])
def test_bad_spacing_in_a_datalist_names_the_file_item_and_value(spacing, tmp_path):
    path = _labelled_datalist(tmp_path, lambda item: item, lambda item: {**item, "spacing": spacing})
    for call in (lambda: check_dataset(path), lambda: datalist_section(path, "validation")):
        _raises(call, str(path), "validation[0]['spacing'] must be the pixel size in mm as [row, column]",
                f"got {spacing!r}")


def test_bad_spacing_reaching_the_metrics_writer_names_the_image_and_value():
    # a spacing that does not come from a datalist file (e.g. set by a transform) died with a TypeError
    from lesionseg.engines.evaluation import PerImageMetricsWriter

    mask = torch.zeros(1, 8, 8)
    mask[0, 2:5, 2:5] = 1
    writer = PerImageMetricsWriter("unused")
    assert "hd95_mm" in writer.score({"pred": mask, "label": mask, "spacing": [0.5, 0.5]})
    for spacing in ("0.1mm", [0.1, 0.2, 0.3], [0.1, -1.0]):
        message = r"^image 0: its 'spacing' must be the pixel size in mm as \[row, column\]"
        with pytest.raises(ValueError, match=message):
            writer.score({"pred": mask, "label": mask, "spacing": spacing})


def case_empty_validation_section(tmp):
    # trained, exited 0, wrote no models/model.pt: no epoch was validated, so none was the best
    path = _labelled_datalist(tmp, lambda item: item)
    content = json.loads(path.read_text())
    content["validation"] = []
    path.write_text(json.dumps(content))
    _raises(lambda: datalist_section(path, "validation"), str(path), "section 'validation' is empty",
            "would write no models/model.pt")
    assert [(p.path, p.severity) for p in check_dataset(path) if "is empty" in p.message] == [(str(path), "warning")]


def case_dataset_folder_too_small_for_a_validation_split(tmp):
    folder = tmp / "benign"
    folder.mkdir()
    _gray(folder / "benign (1).png")
    _gray(folder / "benign (1)_mask.png", value=255)
    _raises(lambda: datalist_section(tmp, "validation", val_fraction=0.2), str(tmp),
            "its split has an empty 'validation' section (training 1, validation 0 images)", "use more images")


FILE_CASES = {name[len("case_"):]: function for name, function in globals().items() if name.startswith("case_")}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_file(case, tmp_path, monkeypatch):
    function = FILE_CASES[case]
    if "monkeypatch" in function.__code__.co_varnames[: function.__code__.co_argcount]:
        function(tmp_path, monkeypatch)
    else:
        function(tmp_path)


# ------------------------------------------------------------------------------------- settings and networks

CONFIG_CASES = {
    "negative_learning_rate": (dict(learning_rate=-1e-3), "learning_rate", "must be a finite number > 0"),
    "nan_learning_rate": (dict(learning_rate=float("nan")), "learning_rate", "got nan"),
    "zero_batch_size": (dict(batch_size=0), "batch_size", "whole number >= 1, got 0"),
    "fractional_max_epochs": (dict(max_epochs=2.5), "max_epochs", "whole number >= 1"),
    "negative_workers": (dict(num_workers=-1), "num_workers", ">= 0"),
    "val_fraction_above_one": (dict(val_fraction=1.5), "val_fraction", "between 0 and 1"),
    "probability_above_one": (dict(probabilities={"flip_prob": 2}), "flip_prob", "in [0, 1]"),
    "image_size_not_a_list": (dict(image_size="256"), "image_size", "list of positive whole numbers"),
    "dcnet_image_size_not_divisible_by_16": (
        dict(image_size=[100, 100], network=DCNet(features=TINY_FEATURES)),
        "image_size",
        "divisible by 16 (four 2x2 poolings) and at least 32, got [100, 100]; use e.g. [96, 96] or [112, 112]",
    ),
    "dcnet_image_size_too_small": (
        dict(image_size=[16, 16], network=DCNet(features=TINY_FEATURES)),
        "image_size",
        "at least 32, got [16, 16]; use e.g. [32, 32]",
    ),
    "taichinet_image_size_not_divisible": (
        dict(image_size=[200, 224], network=TaiChiNet(features=TINY_FEATURES)),
        "image_size",
        "each divisible by 16 (it halves the image 4 times), got [200, 224]; use e.g. [192, 224] or [208, 224]",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_setting_names_its_key(case, tmp_path):
    settings, key, words = CONFIG_CASES[case]
    _raises(lambda: check_training_config(**settings), key, words, error=ConfigError)


def test_missing_dataset_dir_and_several_bad_settings_are_reported_together(tmp_path):
    error = _raises(
        lambda: check_training_config(dataset_dir=tmp_path / "nowhere", learning_rate=0, batch_size=4),
        "dataset_dir",
        "not found; pass --dataset_dir",
        error=ConfigError,
    )
    assert str(error).splitlines()[1].startswith("learning_rate: ")
    good = dict(dataset_dir=tmp_path, image_size=[32, 32], network=DCNet(features=TINY_FEATURES), learning_rate=3e-4,
                batch_size=2, max_epochs=1, val_interval=1, num_workers=0, val_fraction=0.2)
    assert check_training_config(**good)


NETWORK_CASES = {
    "dcnet_unknown_pooling": (DCNet, dict(pooling="maxx"), "pooling must be 'dcp', 'max' or 'avg', got 'maxx'"),
    "dcnet_unknown_neighbourhood": (DCNet, dict(dcp_neighbourhood="ring"), "dcp_neighbourhood must be"),
    "dcnet_unknown_ccf_mapping": (DCNet, dict(ccf_mapping="sparse"), "ccf_mapping must be 'dense' or 'row'"),
    "dcnet_dropout_above_one": (DCNet, dict(dropout=1.5), "dropout must be a probability in [0, 1)"),
    "dcnet_negative_radius": (DCNet, dict(dcp_radius=-1), "dcp_radius must be a non-negative integer"),
    "dcnet_odd_widths": (DCNet, dict(features=(3, 4, 8, 16, 32)), "features must be 5 even widths"),
    "taichinet_unknown_upsampling": (TaiChiNet, dict(upsample_mode="cubic"), "upsample_mode must be"),
    "taichinet_one_level": (TaiChiNet, dict(features=(8,)), "features must be at least two positive"),
    "taichinet_zero_channels": (TaiChiNet, dict(in_channels=0), "in_channels must be a positive integer"),
    "taichinet_unknown_mutual_learning": (TaiChiNet, dict(mutual_learning="mirror"), "mutual_learning must be"),
}


@pytest.mark.parametrize("case", sorted(NETWORK_CASES))
def test_bad_network_option_names_the_argument(case):
    network, arguments, words = NETWORK_CASES[case]
    arguments = {"features": TINY_FEATURES, **arguments}
    with pytest.raises(ValueError) as raised:
        network(**arguments)
    assert words in str(raised.value)


# ------------------------------------------------------------------------------- through the bundle workflow


@pytest.mark.parametrize("bundle", ["dcnet_bundle", "taichinet_bundle"])
def test_bundle_refuses_bad_settings_by_key_before_reading_data(bundle, tmp_path):
    """initialize reports the keys; nothing is trained, prepared or read (the dataset folder does not exist)."""
    from bundle_testing import make_workflow

    workflow = make_workflow(
        Path(__file__).resolve().parents[1] / "bundles" / bundle,
        ["train"],
        "train",
        dataset_dir=str(tmp_path / "no_such_dataset"),
        learning_rate=-0.01,
        image_size=[100, 100],
        ckpt_dir=str(tmp_path / "models"),
        prepare_dir=str(tmp_path / "easy_hard"),
        **{"network_def#features": list(TINY_FEATURES)},
    )
    with pytest.raises(Exception) as raised:
        workflow.initialize()
    cause = raised.value
    while not isinstance(cause, ConfigError) and cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, ConfigError), raised.value
    lines = str(cause).splitlines()
    assert [line.split(":")[0] for line in lines] == ["learning_rate", "image_size"]
    assert "use e.g. [96, 96] or [112, 112]" in lines[1]
    assert not (tmp_path / "easy_hard").exists() and not (tmp_path / "models").exists()

"""Reading images and masks (lesionseg.data.io) and the MONAI loading transforms (lesionseg.data.transforms)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, Invertd, RandFlipd, Resized, ScaleIntensityd
from PIL import Image

from lesionseg.data.io import DataError, read_image, read_mask
from lesionseg.data.readers import read_busi
from lesionseg.data.transforms import LoadUltrasound, LoadUltrasoundd

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, size=(5, 7), dtype=np.uint8)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, written out."""
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


def save(path, array, mode=None, **kwargs):
    Image.fromarray(array, mode).save(path, **kwargs) if mode else Image.fromarray(array).save(path, **kwargs)
    return path


# ------------------------------------------------------------------------------------------------ read_image


def test_read_image_gray_keeps_values_and_row_column_order(tmp_path):
    image = np.zeros((3, 8), dtype=np.uint8)
    image[2, 5] = 77  # row 2, column 5 of a wide image
    result = read_image(save(tmp_path / "wide.png", image))
    assert result.dtype == np.float32 and result.shape == (3, 8)
    assert result[2, 5] == 77 and result.sum() == 77


def test_read_image_16_bit_is_not_squashed(tmp_path):
    values = np.array([[0, 255, 256], [1000, 40000, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(read_image(path), values.astype(np.float32))


def test_read_image_rgb_is_luma(tmp_path):
    np.testing.assert_allclose(read_image(save(tmp_path / "c.png", RGB, "RGB")), luma(RGB), atol=1e-4)


def test_read_image_rgba_drops_alpha(tmp_path):
    rgba = np.concatenate([RGB, RNG.integers(0, 256, size=(5, 7, 1), dtype=np.uint8)], axis=-1)
    np.testing.assert_allclose(read_image(save(tmp_path / "a.png", rgba, "RGBA")), luma(RGB), atol=1e-4)


def test_read_image_gray_alpha_palette_and_1_bit(tmp_path):
    gray_alpha = np.stack([GRAY, np.full_like(GRAY, 9)], axis=-1)
    np.testing.assert_array_equal(read_image(save(tmp_path / "la.png", gray_alpha, "LA")), GRAY)

    palette = Image.fromarray(RGB, "RGB").quantize(colors=8)
    palette.save(tmp_path / "p.png")
    colours = np.asarray(palette.convert("RGB"))
    np.testing.assert_allclose(read_image(tmp_path / "p.png"), luma(colours), atol=1e-4)

    bits = GRAY > 128
    save(tmp_path / "bits.png", bits)
    assert Image.open(tmp_path / "bits.png").mode == "1"
    np.testing.assert_array_equal(read_image(tmp_path / "bits.png"), bits * 255.0)


def test_gray_stored_as_rgb_reads_back_exactly(tmp_path):
    rgb = np.repeat(GRAY[..., None], 3, axis=-1)
    np.testing.assert_array_equal(read_image(save(tmp_path / "g.png", rgb, "RGB")), GRAY)


@pytest.mark.parametrize("suffix", [".bmp", ".tif", ".jpg"])
def test_read_image_other_formats(tmp_path, suffix):
    smooth = np.tile(np.arange(0, 160, 10, dtype=np.uint8), (12, 1))
    result = read_image(
        save(tmp_path / f"image{suffix}", smooth, quality=100)
        if suffix == ".jpg"
        else save(tmp_path / f"image{suffix}", smooth)
    )
    tolerance = 3 if suffix == ".jpg" else 0  # JPEG is lossy
    np.testing.assert_allclose(result, smooth, atol=tolerance)


# ------------------------------------------------------------------------------------------------- read_mask


def test_read_mask_binarises_each_mode(tmp_path):
    lesion = np.zeros((5, 7), dtype=bool)
    lesion[1:3, 2:6] = True
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[lesion, 2] = 1  # any non-zero channel counts
    rgba = np.zeros((5, 7, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[lesion, :3] = 200
    rgba[0, 0] = (255, 255, 255, 0)  # transparent: painted nowhere, so background
    palette = Image.fromarray(lesion.astype(np.uint8), "P")  # index 0 black, index 1 red, as label maps are
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.save(tmp_path / "palette.png")
    paths = [
        tmp_path / "palette.png",
        save(tmp_path / "bits.png", lesion),
        save(tmp_path / "gray.png", lesion.astype(np.uint8) * 255, "L"),
        save(tmp_path / "rgb.png", rgb, "RGB"),
        save(tmp_path / "rgba.png", rgba, "RGBA"),
    ]
    for path in paths:
        mask = read_mask(path)
        assert mask.dtype == np.uint8 and mask.shape == (5, 7), path
        np.testing.assert_array_equal(mask, lesion, err_msg=str(path))


def test_read_mask_or_merges_files(tmp_path):
    first, second = np.zeros((6, 6), dtype=bool), np.zeros((6, 6), dtype=bool)
    first[0:3, 0:3], second[2:6, 2:6] = True, True
    paths = [save(tmp_path / "m.png", first), save(tmp_path / "m_1.png", second.astype(np.uint8) * 255, "L")]
    np.testing.assert_array_equal(read_mask(paths), first | second)
    np.testing.assert_array_equal(read_mask(str(paths[0])), first)


def test_read_mask_size_mismatch_names_both_files(tmp_path):
    small = save(tmp_path / "small.png", np.zeros((4, 4), dtype=np.uint8), "L")
    large = save(tmp_path / "large.png", np.zeros((4, 5), dtype=np.uint8), "L")
    with pytest.raises(DataError) as raised:
        read_mask([small, large])
    assert str(raised.value).startswith(str(large)) and str(small) in str(raised.value)
    with pytest.raises(ValueError, match="at least one"):
        read_mask([])


# -------------------------------------------------------------------------------------------------- bad files


def _bad_files(tmp_path):
    good = save(tmp_path / "good.png", GRAY, "L").read_bytes()
    zero = tmp_path / "zero.png"
    zero.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    start = good.index(b"IDAT") + 8
    corrupt[start : start + 16] = bytes(16)
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    (tmp_path / "text.png").write_text("not an image")
    Image.new("CMYK", (4, 3)).save(tmp_path / "cmyk.jpg")
    Image.new("L", (4, 3)).save(tmp_path / "stack.tif", save_all=True, append_images=[Image.new("L", (4, 3))])
    return {
        "missing.png": "not found",
        "zero.png": "empty file",
        "truncated.png": "truncated or corrupt",
        "corrupt.png": "truncated or corrupt",
        "text.png": "not an image",
        "cmyk.jpg": "unsupported pixel format 'CMYK'",
        "stack.tif": "2 frames",
        ".": "is a folder",
    }


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_bad_files_raise_data_error_naming_the_file(tmp_path, reader):
    for name, problem in _bad_files(tmp_path).items():
        path = tmp_path / name
        with pytest.raises(DataError) as raised:
            reader(path)
        assert str(raised.value).startswith(f"{path}: "), str(raised.value)
        assert problem in str(raised.value)
        assert raised.value.path == str(path)


def test_data_error_survives_pickling_and_accepts_a_whole_message():
    error = pickle.loads(pickle.dumps(DataError("/a/b.png", "broken")))
    assert isinstance(error, ValueError) and str(error) == "/a/b.png: broken"
    error = DataError("/a/c.png: no mask: none at all")
    assert (error.path, error.problem, str(error)) == (
        "/a/c.png",
        "no mask: none at all",
        "/a/c.png: no mask: none at all",
    )


# ------------------------------------------------------------------------------------------------ transforms


def test_load_ultrasoundd_gives_channel_first_meta_tensors(tiny_busi, tiny_busi_lesions):
    item = next(i for i in read_busi(tiny_busi) if i["case"] == "benign (2)")  # RGB image, two mask files
    data = LoadUltrasoundd(keys=("image", "label"))(item)
    image, label = data["image"], data["label"]
    assert isinstance(image, MetaTensor) and isinstance(label, MetaTensor)
    assert image.shape == label.shape == (1, 48, 64)
    assert image.dtype == label.dtype == torch.float32
    np.testing.assert_allclose(image[0].numpy(), read_image(item["image"]))
    expected = np.zeros((48, 64), dtype=np.float32)
    for r0, r1, c0, c1 in tiny_busi_lesions["benign (2)"][1]:
        expected[r0:r1, c0:c1] = 1
    np.testing.assert_array_equal(label[0].numpy(), expected)
    assert image.meta["filename_or_obj"] == item["image"]
    assert label.meta["filename_or_obj"] == item["label"][0]
    assert image.meta["spatial_shape"].tolist() == [48, 64]
    assert image.meta["original_channel_dim"] == "no_channel"
    assert data["case"] == "benign (2)"  # other keys pass through


def test_load_ultrasoundd_size_mismatch_names_both_files(tmp_path):
    image = save(tmp_path / "image.png", GRAY, "L")
    mask = save(tmp_path / "mask.png", np.zeros((5, 8), dtype=np.uint8), "L")
    with pytest.raises(DataError) as raised:
        LoadUltrasoundd()({"image": str(image), "label": str(mask)})
    assert str(raised.value).startswith(str(mask)) and str(image) in str(raised.value)


def test_load_ultrasoundd_missing_keys_and_bad_values(tmp_path):
    image = str(save(tmp_path / "image.png", GRAY, "L"))
    assert LoadUltrasoundd(allow_missing_keys=True)({"image": image})["image"].shape == (1, 5, 7)
    with pytest.raises(KeyError):
        LoadUltrasoundd()({"image": image})
    with pytest.raises(TypeError, match="single file"):
        LoadUltrasound()([image, image])
    with pytest.raises(TypeError, match="file path"):
        LoadUltrasound(mask=True)(42)


def test_load_ultrasoundd_composes_and_runs_in_worker_processes(tiny_busi):
    items = read_busi(tiny_busi)
    load = LoadUltrasoundd(keys=("image", "label"))
    pipeline = Compose(
        [
            load,
            ScaleIntensityd(keys="image"),
            Resized(keys=["image", "label"], spatial_size=(32, 32), mode=["area", "nearest"]),
            RandFlipd(keys=["image", "label"], prob=1.0, spatial_axis=1),
        ]
    )
    assert pickle.loads(pickle.dumps(load)).keys == load.keys
    batches = list(DataLoader(Dataset(items, transform=pipeline), batch_size=4, num_workers=2))
    assert [tuple(b["image"].shape) for b in batches] == [(4, 1, 32, 32), (4, 1, 32, 32)]
    assert all(set(torch.unique(b["label"]).tolist()) <= {0.0, 1.0} for b in batches)
    assert batches[0]["image"].meta["filename_or_obj"] == [item["image"] for item in items[:4]]

    cached = CacheDataset(items[:2], transform=pipeline, progress=False, num_workers=1)
    sample = cached[0]
    # Invertd restores the original (H, W) through the MONAI metadata, as the bundles' inference does
    restored = Invertd(keys="label", transform=pipeline, orig_keys="image", nearest_interp=True)(sample)
    assert restored["label"].shape == (1, 48, 64)


# ------------------------------------------------------------------------------------------ one reader path


def test_nifti_reads_alike_for_training_and_predict(tmp_path):
    """One NIfTI reader: a 2D image, gray or colour (RGB24 voxels), gives the same (H, W) gray levels to the
    training loader (read_image) and to predict (read_stack); the colour file was refused by the first and read
    by the second."""
    import nibabel

    from lesionseg.data.io import read_stack

    gray = RNG.integers(0, 256, size=(5, 7)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(gray.T, np.eye(4)), tmp_path / "gray.nii.gz")
    colour = np.zeros((7, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])  # (W, H) voxels
    for index, name in enumerate("RGB"):
        colour[name] = RGB[..., index].T
    image = nibabel.Nifti1Image(colour, np.eye(4))
    image.set_data_dtype(colour.dtype)
    nibabel.save(image, tmp_path / "colour.nii")
    for name, expected in (("gray.nii.gz", gray), ("colour.nii", luma(RGB))):
        training = read_image(tmp_path / name)
        predicting = read_stack(tmp_path / name).slices
        assert training.shape == (5, 7) and predicting.shape == (1, 5, 7), name
        np.testing.assert_allclose(training, expected, atol=1e-4)
        np.testing.assert_array_equal(predicting[0], training)

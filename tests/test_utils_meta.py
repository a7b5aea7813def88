"""lesionseg.utils.meta: one lookup of an item's metadata for every transform that names a file."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from lesionseg.data.layout import ToXYMaskd
from lesionseg.data.writers import SaveMaskd
from lesionseg.engines import NonFiniteError, RefuseNonFinited
from lesionseg.utils import meta as meta_module
from lesionseg.utils.meta import item_meta, source_filename


def test_docstring_examples():
    assert doctest.testmod(meta_module, raise_on_error=False).failed == 0


def test_a_meta_tensor_and_a_meta_dict_give_the_same_answers():
    meta = {"filename_or_obj": "/data/a.png", "spatial_shape": np.array([4, 6])}
    as_tensor = {"image": MetaTensor(torch.zeros(1, 4, 6), meta=meta)}
    as_dict = {"image": torch.zeros(1, 4, 6), "image_meta_dict": meta}
    for data in (as_tensor, as_dict):
        assert source_filename(data, "image") == "/data/a.png"
        assert item_meta(data, "image")["spatial_shape"].tolist() == [4, 6]
    assert item_meta({"image": torch.zeros(1)}, "image") == {} and source_filename({}, "image") is None
    assert item_meta({"image_meta_dict": "not a mapping"}, "image") == {}


def test_the_transforms_name_the_file_from_a_meta_dict_too(tmp_path):
    """Apps that hand over plain arrays with MONAI's `<key>_meta_dict` (older MONAI Label paths) get the same
    file names in errors and outputs as MetaTensor pipelines."""
    meta = {"filename_or_obj": str(tmp_path / "in" / "case 1.png"), "spatial_shape": np.array([4, 6])}
    data = {"pred": torch.full((1, 4, 6), float("nan")), "image": torch.zeros(1, 4, 6), "image_meta_dict": meta}
    with pytest.raises(NonFiniteError, match=r"case 1\.png"):
        RefuseNonFinited(keys="pred")(data)
    data["pred"] = torch.ones(1, 4, 6)
    SaveMaskd(keys="pred", output_dir=tmp_path / "out", overlay=False)(data)
    assert (tmp_path / "out" / "case 1_mask.png").is_file()
    assert tuple(ToXYMaskd(keys="pred", ref_key="image")(data)["pred"].shape) == (6, 4)


def test_save_maskd_writes_a_second_source_with_the_same_name_beside_the_first_not_over_it(tmp_path, caplog):
    def item(name, value=1.0):
        meta = {"filename_or_obj": str(tmp_path / name), "spatial_shape": np.array([4, 6])}
        return {"pred": torch.full((1, 4, 6), value), "image": torch.zeros(1, 4, 6), "image_meta_dict": meta}

    save = SaveMaskd(keys="pred", output_dir=tmp_path / "out", overlay=False)
    save(item("a.png"))
    save(item("a.png"))  # the same source again (a rerun of the item) writes the same file
    before = (tmp_path / "out" / "a_mask.png").read_bytes()
    save(item("a.jpg", 0.0))
    save(item("b/a.png", 0.0))
    save(item("a.jpg", 0.0))
    assert (tmp_path / "out" / "a_mask.png").read_bytes() == before  # the first source's mask is kept
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a_2_mask.png", "a_3_mask.png", "a_mask.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "a_2_mask.png")).max() == 0  # a.jpg's (empty) mask
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 2 and "a.jpg: the outputs a_mask.png and a_overlay.png are" in warnings[0]
    assert "a.png's, so this image's are a_2_mask.png and a_2_overlay.png" in warnings[0]
    spelled = dict(item("a.png"), image_meta_dict={"filename_or_obj": f"{tmp_path}/./a.png"})
    save(spelled)  # a.png spelled another way is the same source: its own outputs, no warning
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a_2_mask.png", "a_3_mask.png", "a_mask.png"]
    assert len([record for record in caplog.records if record.levelname == "WARNING"]) == 2
    save(item("scan.nii.gz"))  # both suffixes go: scan_mask.png, not scan.nii_mask.png
    assert (tmp_path / "out" / "scan_mask.png").is_file()

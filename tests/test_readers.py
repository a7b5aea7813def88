"""Dataset readers: BUSI layout, images/ + masks/ folders, MONAI datalists and layout detection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from lesionseg.data.datalist import read_datalist, write_datalist
from lesionseg.data.io import DataError, read_mask
from lesionseg.data.readers import read_busi, read_dataset, read_folder_pair, read_images

TINY_CASES = [
    "benign (1)",
    "benign (2)",
    "benign (3)",
    "benign (4)",
    "malignant (1)",
    "malignant (2)",
    "normal (1)",
    "normal (2)",
]


def png(path: Path, value: int = 0, shape=(4, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


def test_read_busi_pairs_every_case(tiny_busi, tiny_busi_lesions):
    items = read_busi(tiny_busi)
    assert [item["case"] for item in items] == TINY_CASES
    for item in items:
        klass, rectangles = tiny_busi_lesions[item["case"]]
        assert item["class"] == klass
        assert item["image"] == str(tiny_busi / klass / f"{item['case']}.png")
        expected = [str(tiny_busi / klass / f"{item['case']}_mask.png")]
        expected += [str(tiny_busi / klass / f"{item['case']}_mask_{k}.png") for k in range(1, len(rectangles))]
        assert item["label"] == (expected[0] if len(expected) == 1 else expected)


def test_read_busi_orders_naturally_and_ignores_other_files(tmp_path):
    for n in (10, 2, 1):
        png(tmp_path / "benign" / f"benign ({n}).png")
        png(tmp_path / "benign" / f"benign ({n})_mask.png")
    png(tmp_path / "benign" / "benign (2)_mask_10.png")
    png(tmp_path / "benign" / "benign (2)_mask_2.png")
    (tmp_path / "benign" / "notes.txt").write_text("not an image")
    (tmp_path / "benign" / ".DS_Store").write_bytes(b"\0")
    items = read_busi(tmp_path)
    assert [item["case"] for item in items] == ["benign (1)", "benign (2)", "benign (10)"]
    assert [Path(p).name for p in items[1]["label"]] == [
        "benign (2)_mask.png",
        "benign (2)_mask_2.png",
        "benign (2)_mask_10.png",
    ]


def test_read_busi_reports_missing_and_orphan_masks(tiny_busi):
    (tiny_busi / "malignant" / "malignant (1)_mask.png").unlink()
    png(tiny_busi / "normal" / "normal (9)_mask.png")
    with pytest.raises(DataError) as raised:
        read_busi(tiny_busi)
    message = str(raised.value)
    assert message.startswith(f"{tiny_busi / 'malignant' / 'malignant (1).png'}: no mask found")
    assert f"{tiny_busi / 'normal' / 'normal (9)_mask.png'}: no image found" in message


def test_read_busi_rejects_a_folder_without_classes(tmp_path):
    with pytest.raises(DataError, match="no images found in class sub-folders"):
        read_busi(tmp_path)
    with pytest.raises(DataError, match="folder not found"):
        read_busi(tmp_path / "absent")


def test_read_folder_pair_matches_stems_and_infers_the_suffix(tmp_path):
    for stem in ("case 2", "case 10", "case 1"):
        png(tmp_path / "images" / f"{stem}.png")
        png(tmp_path / "masks" / f"{stem}.png")
    items = read_folder_pair(tmp_path / "images", tmp_path / "masks")
    assert [item["case"] for item in items] == ["case 1", "case 2", "case 10"]
    assert all(item["label"] == str(tmp_path / "masks" / f"{item['case']}.png") for item in items)

    for path in (tmp_path / "masks").iterdir():
        path.rename(path.with_name(f"{path.stem}_mask.bmp"))
    for suffix in (None, "_mask"):
        items = read_folder_pair(tmp_path / "images", tmp_path / "masks", mask_suffix=suffix)
        names = [Path(item["label"]).name for item in items]
        assert names == ["case 1_mask.bmp", "case 2_mask.bmp", "case 10_mask.bmp"]


def test_read_folder_pair_names_unmatched_files(tmp_path):
    png(tmp_path / "images" / "a.png")
    png(tmp_path / "masks" / "a.png")
    png(tmp_path / "images" / "lonely.png")
    png(tmp_path / "masks" / "stray.png")
    with pytest.raises(DataError) as raised:
        read_folder_pair(tmp_path / "images", tmp_path / "masks")
    assert str(raised.value).startswith(f"{tmp_path / 'images' / 'lonely.png'}: no mask found")
    assert f"{tmp_path / 'masks' / 'stray.png'}: no image found" in str(raised.value)

    png(tmp_path / "images" / "a.jpg")
    with pytest.raises(DataError, match=r"a\.png: same name as a\.jpg"):
        read_folder_pair(tmp_path / "images", tmp_path / "masks")


def test_datalist_round_trip_with_relative_paths(tiny_busi, tmp_path):
    items = read_busi(tiny_busi)
    path = write_datalist(tmp_path / "lists" / "datalist.json", {"training": items[:5], "validation": items[5:]})
    content = json.loads(path.read_text())
    assert content["training"][0]["image"] == "../busi/Dataset_BUSI_with_GT/benign/benign (1).png"
    assert isinstance(content["training"][1]["label"], list)
    assert read_datalist(path) == items[:5]
    assert read_datalist(path, "validation") == items[5:]
    # MONAI's own reader understands the file
    monai_items = load_decathlon_datalist(path, data_list_key="validation")
    assert [(i["image"], i["label"]) for i in monai_items] == [(i["image"], i["label"]) for i in items[5:]]


def test_datalist_metadata_is_written_before_the_sections_and_skipped_by_readers(tiny_busi, tmp_path):
    """How a datalist was made (an easy/hard preparation's settings) sits beside its sections, not among them."""
    items = read_busi(tiny_busi)
    metadata = {"preparation": {"threshold": 0.5, "recipe": {"max_epochs": 2}}}
    path = write_datalist(tmp_path / "list.json", {"training": items[:3]}, description="made here", metadata=metadata)
    content = json.loads(path.read_text())
    assert list(content) == ["description", "preparation", "training"]
    assert content["preparation"] == metadata["preparation"]
    assert read_dataset(path) == read_datalist(path, "training") == items[:3]


def test_read_datalist_keeps_values_that_name_folders(tiny_busi):
    # MONAI would turn "class": "benign" into the path of the benign/ folder beside the JSON
    path = write_datalist(tiny_busi / "datalist.json", {"training": read_busi(tiny_busi)})
    assert read_datalist(path)[0]["class"] == "benign"


def test_read_datalist_base_dir_and_errors(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(
        json.dumps({"name": "x", "training": [{"image": "i.png", "label": ["a.png", "b.png"]}], "test": ["t.png"]})
    )
    assert read_datalist(path, base_dir="/data") == [{"image": "/data/i.png", "label": ["/data/a.png", "/data/b.png"]}]
    assert read_datalist(path, "test") == [{"image": str(tmp_path / "t.png")}]
    with pytest.raises(DataError, match=r"no section 'validation'; it has \['training', 'test'\]") as raised:
        read_datalist(path, "validation")
    assert str(raised.value).startswith(str(path))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_datalist(bad)
    bad.write_text(json.dumps({"training": [{"label": "a.png"}]}))
    with pytest.raises(DataError, match=r"training\[0\] has no 'image'"):
        read_datalist(bad)
    with pytest.raises(DataError, match="not found"):
        read_datalist(tmp_path / "absent.json")


def test_read_dataset_detects_each_layout(tiny_busi, tmp_path):
    busi_items = read_busi(tiny_busi)
    assert read_dataset(tiny_busi) == busi_items
    assert read_dataset(tiny_busi.parent) == busi_items  # the folder holding Dataset_BUSI_with_GT

    pair = tmp_path / "pair"
    for item in busi_items[:3]:
        shutil.copy(item["image"], png(pair / "images" / f"{item['case']}.png"))
        png(pair / "masks" / f"{item['case']}_mask.png")
    assert [item["case"] for item in read_dataset(pair)] == [item["case"] for item in busi_items[:3]]

    datalist = write_datalist(tmp_path / "d.json", {"training": busi_items[:5], "validation": busi_items[5:]})
    assert read_dataset(datalist) == busi_items
    content = json.loads(datalist.read_text())
    content["test"] = ["unlabelled.png"]  # a Decathlon test list carries no labels: left out
    datalist.write_text(json.dumps(content))
    assert read_dataset(datalist) == busi_items


@pytest.mark.parametrize("make", ["empty folder", "plain file", "absent"])
def test_read_dataset_explains_the_layouts(tmp_path, make):
    source = {"empty folder": tmp_path, "plain file": tmp_path / "x.png", "absent": tmp_path / "nothing"}[make]
    if make == "plain file":
        png(source)
    with pytest.raises(DataError) as raised:
        read_dataset(source)
    assert str(raised.value).startswith(str(source))
    if make != "absent":
        assert all(words in str(raised.value) for words in ("BUSI", "'images/' and 'masks/'", "datalist"))


def test_read_images_for_inference(tiny_busi, tmp_path):
    (tiny_busi / "benign" / "benign (3)_mask.png").unlink()
    items = read_images(tiny_busi)
    assert [item["case"] for item in items] == TINY_CASES  # the image without mask is kept
    assert next(i for i in items if i["case"] == "benign (3)")["class"] == "benign"

    flat = tmp_path / "flat"
    for name in ("scan 2.png", "scan 10.jpg", "scan 2_mask.png"):
        png(flat / name)
    assert [Path(item["image"]).name for item in read_images(flat)] == ["scan 2.png", "scan 10.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        read_images(empty)


@pytest.mark.busi
def test_read_busi_on_the_real_data(busi_dir):
    items = read_busi(busi_dir)
    counts = {klass: sum(item["class"] == klass for item in items) for klass in ("benign", "malignant", "normal")}
    assert len(items) == 623 and counts == {"benign": 349, "malignant": 168, "normal": 106}
    multi = [item for item in items if isinstance(item["label"], list)]
    assert 0 < len(multi) <= 17
    for item in multi:  # the lesion mask is the union of the case's mask files
        merged = read_mask(item["label"])
        parts = [read_mask(path) for path in item["label"]]
        np.testing.assert_array_equal(merged, np.logical_or.reduce(parts))
        assert all(0 < part.sum() < merged.sum() for part in parts), item["case"]
    assert all(read_mask(item["label"]).sum() == 0 for item in items if item["class"] == "normal")
    assert read_dataset(busi_dir.parent) == items

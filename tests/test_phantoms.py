"""Synthetic ultrasound phantoms: reproducibility, lesion masks and echogenicity, BUSI layout, contact sheet, CLI."""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from lesionseg.cli import main
from lesionseg.data import phantoms
from lesionseg.data.phantoms import PhantomConfig, contact_sheet, make_phantom, write_phantom_dataset

SMALL = (48, 64)


def phantom(seed: int, kind: str, **kwargs) -> phantoms.Phantom:
    return make_phantom(np.random.default_rng(seed), *SMALL, kind, **kwargs)


def green_pixels(png: Path) -> int:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int(((rgb[..., 1] > 180) & (rgb[..., 0] < 120) & (rgb[..., 2] < 120)).sum())


@pytest.mark.parametrize("module", [phantoms.config, phantoms.render])
def test_docstring_examples(module):
    result = doctest.testmod(module, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("kind", phantoms.KINDS)
def test_same_seed_same_phantom_other_seed_other_phantom(kind):
    first, again, other = phantom(7, kind), phantom(7, kind), phantom(8, kind)
    assert first.image.shape == SMALL and first.image.dtype == np.uint8
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.mask, again.mask)
    assert not np.array_equal(first.image, other.image)


@pytest.mark.parametrize("kind", ["benign", "malignant"])
def test_lesion_masks_are_binary_and_not_empty(kind):
    for seed in range(4):
        result = phantom(seed, kind)
        assert len(result.lesion_masks) in (1, 2)
        for lesion in result.lesion_masks:
            assert lesion.dtype == bool and lesion.shape == SMALL and lesion.any()
        assert np.array_equal(result.mask, np.logical_or.reduce(result.lesion_masks))
        assert not result.mask.all()


def test_normal_phantom_has_no_lesion():
    result = phantom(0, "normal")
    assert result.lesion_masks == ()
    assert result.mask.dtype == bool and not result.mask.any()


@pytest.mark.parametrize("kind", ["benign", "malignant"])
def test_lesions_are_darker_than_the_tissue_around_them(kind):
    for seed in range(6):
        result = make_phantom(np.random.default_rng(seed), 96, 128, kind)
        for lesion in result.lesion_masks:
            ring = ndimage.binary_dilation(lesion, iterations=4) & ~result.mask
            assert result.image[lesion].mean() < result.image[ring].mean()


def test_two_lesions_are_separate():
    result = phantom(3, "malignant", num_lesions=2)
    first, second = result.lesion_masks
    assert first.any() and second.any() and not (first & second).any()


def test_speckle_is_centred_and_scales_with_its_strength():
    """Speckle changes pixels around the tissue's level without shifting it; its amplitude follows ``speckle``."""
    images = {
        strength: make_phantom(np.random.default_rng(1), 96, 128, "normal", PhantomConfig(speckle=strength))
        .image.astype(float)
        for strength in (0.0, 0.5, 1.0)
    }
    tissue = images[0.0]
    full, half = images[1.0] - tissue, images[0.5] - tissue
    unclipped = (tissue > 40) & (tissue < 215)
    assert full.std() > 5  # gray levels: visible grain
    assert 1.8 < full.std() / half.std() < 2.2
    assert abs(full[unclipped].mean()) < 1.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: phantom(0, "cyst"), "kind"),
        (lambda: phantom(0, "normal", num_lesions=1), "num_lesions"),
        (lambda: phantom(0, "benign", num_lesions=3), "num_lesions"),
        (lambda: make_phantom(np.random.default_rng(0), 8, 64, "benign"), "height"),
        (lambda: PhantomConfig(normal_fraction=1.5), "normal_fraction"),
        (lambda: PhantomConfig(width=(300, 200)), "width"),
        (lambda: PhantomConfig(malignant_radius=(0.2, 0.1)), "malignant_radius"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_dataset_has_busi_layout(tmp_path):
    config = PhantomConfig(height=SMALL[0], width=SMALL[1], normal_fraction=1 / 3, two_lesion_fraction=1.0)
    output = write_phantom_dataset(tmp_path / "out", num_images=6, seed=0, config=config, progress=False)

    manifest = json.loads((output / "phantoms.json").read_text())
    counts = manifest["counts"]
    assert counts["normal"] == 2 and sum(counts.values()) == 6 and manifest["seed"] == 0
    assert manifest["two_lesion_images"] == 4
    assert PhantomConfig(**manifest["config"]) == config
    for kind in phantoms.KINDS:
        names = sorted(path.name for path in (output / kind).iterdir())
        expected = []
        for n in range(1, counts[kind] + 1):
            expected += [f"{kind} ({n}).png", f"{kind} ({n})_mask.png"]
            if kind != "normal":  # two lesions everywhere: the second one in _mask_1
                expected.append(f"{kind} ({n})_mask_1.png")
        assert names == sorted(expected)
        for n in range(1, counts[kind] + 1):
            image = Image.open(output / kind / f"{kind} ({n}).png")
            masks = [Image.open(path) for path in sorted((output / kind).glob(f"{kind} ({n})_mask*.png"))]
            assert image.mode == "L" and image.size == SMALL[::-1]
            values = [np.asarray(mask) for mask in masks]
            for mask, array in zip(masks, values):
                assert mask.size == image.size
                assert set(np.unique(array)) <= {0, 255}
            if kind == "normal":
                assert not values[0].any()
            else:  # _mask holds the first lesion only, _mask_1 the second, and they do not overlap
                assert values[0].any() and values[1].any() and not (values[0] & values[1]).any()


def test_dataset_is_reproducible_and_sizes_vary_in_range(tmp_path):
    config = PhantomConfig(height=(40, 56), width=(50, 70))
    first = write_phantom_dataset(tmp_path / "a", num_images=5, seed=4, config=config, progress=False)
    second = write_phantom_dataset(tmp_path / "b", num_images=5, seed=4, config=config, progress=False)
    files = sorted(path.relative_to(first) for path in first.rglob("*.png"))
    assert files == sorted(path.relative_to(second) for path in second.rglob("*.png"))
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in files)
    sizes = {Image.open(first / name).size for name in files}
    assert len(sizes) > 1
    assert all(50 <= width <= 70 and 40 <= height <= 56 for width, height in sizes)


def test_size_and_normal_fraction_arguments_override_config(tmp_path):
    output = write_phantom_dataset(
        tmp_path / "out", num_images=4, seed=1, size=(40, 52), normal_fraction=1.0, progress=False
    )
    assert sorted(path.name for path in (output / "normal").glob("* (?).png")) == [
        f"normal ({n}).png" for n in range(1, 5)
    ]
    assert Image.open(output / "normal" / "normal (1).png").size == (52, 40)


def test_refuses_non_empty_folder_unless_overwrite(tmp_path):
    output = tmp_path / "out"
    write_phantom_dataset(output, num_images=4, seed=0, size=SMALL, progress=False)
    with pytest.raises(FileExistsError, match=re.escape(str(output))):
        write_phantom_dataset(output, num_images=2, seed=0, size=SMALL, progress=False)
    (output / "notes.txt").write_text("kept")
    write_phantom_dataset(output, num_images=2, seed=0, size=SMALL, normal_fraction=0.0, overwrite=True, progress=False)
    images = [path for path in output.rglob("*.png") if "_mask" not in path.name]
    assert len(images) == 2  # nothing left over from the first run
    assert (output / "notes.txt").read_text() == "kept"


def test_contact_sheet_outlines_lesions_of_any_busi_folder(tiny_busi, tmp_path):
    """The tiny BUSI folder has RGB images and 1-bit, RGBA and split (_mask_1) masks."""
    sheet = contact_sheet(tiny_busi, tmp_path / "sheet.png", num=8, columns=4)
    assert Image.open(sheet).size[0] > 0 and green_pixels(sheet) > 0
    only_normal = tmp_path / "normal_only"
    (only_normal / "normal").mkdir(parents=True)
    for path in (tiny_busi / "normal").iterdir():
        (only_normal / "normal" / path.name).write_bytes(path.read_bytes())
    assert green_pixels(contact_sheet(only_normal, tmp_path / "normal.png", num=2)) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{empty}: no '<class>/<class> (n).png' image")):
        contact_sheet(empty, tmp_path / "x.png")


@pytest.mark.busi
def test_contact_sheet_of_real_busi(busi_dir, tmp_path):
    sheet = contact_sheet(busi_dir, tmp_path / "busi.png", num=3, columns=3)
    assert green_pixels(sheet) > 0


def test_cli_writes_dataset_and_contact_sheet(tmp_path, capsys):
    output, sheet = tmp_path / "phantoms", tmp_path / "sheet.png"
    argv = ["phantoms", str(output), "--num", "4", "--seed", "2", "--size", "40", "48", "--normal-fraction", "0.25"]
    assert main([*argv, "--contact-sheet", str(sheet)]) == 0
    summary = capsys.readouterr().out
    assert str(output) in summary and "1 normal" in summary and sheet.is_file()
    assert Image.open(output / "normal" / "normal (1).png").size == (48, 40)

    assert main(argv) == 1  # the folder is no longer empty
    assert str(output) in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_cli_rejects_bad_numbers(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["phantoms", str(tmp_path / "x"), "--normal-fraction", "2"])
    assert "--normal-fraction" in capsys.readouterr().err
    assert main(["phantoms", str(tmp_path / "x"), "--size", "8", "8"]) == 1
    assert "height" in capsys.readouterr().err


def test_cli_error_for_a_used_folder_names_the_flag_not_the_argument(tmp_path, capsys):
    """Through the command line the fix is ``--overwrite``, which the message must say (not only overwrite=True)."""
    output = tmp_path / "phantoms"
    argv = ["phantoms", str(output), "--num", "2", "--size", "40", "48"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert str(output) in err and "--overwrite" in err, err


def test_overwrite_never_deletes_a_folder_of_real_images(tiny_busi, capsys):
    """``--overwrite`` replaces a phantom dataset (its phantoms.json says so); BUSI-layout images without that
    manifest may be real data and are kept."""
    before = {p: p.read_bytes() for p in tiny_busi.rglob("*") if p.is_file()}
    assert any(p.name.endswith("_mask.png") for p in before)
    assert main(["phantoms", str(tiny_busi), "--num", "2", "--size", "40", "48", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert str(tiny_busi) in err and "no phantom dataset" in err, err
    assert {p: p.read_bytes() for p in tiny_busi.rglob("*") if p.is_file()} == before


def test_overwrite_replaces_a_previous_phantom_dataset_whole(tmp_path):
    output = tmp_path / "out"
    write_phantom_dataset(output, num_images=6, seed=0, size=SMALL, progress=False)
    write_phantom_dataset(output, num_images=2, seed=1, size=SMALL, overwrite=True, progress=False)
    fresh = write_phantom_dataset(tmp_path / "fresh", num_images=2, seed=1, size=SMALL, progress=False)
    files = {str(p.relative_to(output)): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert files == {str(p.relative_to(fresh)): p.read_bytes() for p in fresh.rglob("*") if p.is_file()}


def test_every_class_folder_is_written_even_an_empty_one(tmp_path):
    output = write_phantom_dataset(
        tmp_path / "out", num_images=2, seed=0, size=SMALL, normal_fraction=0.0, progress=False
    )
    assert sorted(p.name for p in output.iterdir()) == ["benign", "malignant", "normal", "phantoms.json"]

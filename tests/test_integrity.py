"""Dataset integrity check (lesionseg.data.integrity) and the ``lesionseg check-data`` command."""

from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lesionseg.cli import check_data
from lesionseg.data.datalist import write_datalist
from lesionseg.data.integrity import ERROR, NOTE, WARNING, Problem, check_dataset, inspect_dataset
from lesionseg.data.readers import read_busi


def run_check_data(argv):
    parser = argparse.ArgumentParser(prog="lesionseg")
    check_data.add_parser(parser.add_subparsers())
    args = parser.parse_args(["check-data", *map(str, argv)])
    return args.func(args)


def test_problem_prints_path_then_message():
    assert str(Problem("/d/a.png", "broken")) == "/d/a.png: broken"
    assert Problem("/d/a.png", "broken").severity == ERROR


def test_clean_dataset_has_no_problems(tiny_busi, capsys):
    report = inspect_dataset(tiny_busi)
    assert report.problems == []
    assert report.cases_per_class == {"benign": 4, "malignant": 2, "normal": 2}
    assert report.multi_mask_per_class == {"benign": 1}
    assert report.empty_mask_per_class == {"normal": 2}  # expected for normal: counted, not a problem
    assert report.near_duplicate_groups == [["benign (1)", "benign (4)"]]  # grouped by the groups file
    assert run_check_data([tiny_busi]) == 0
    output = capsys.readouterr().out
    assert "cases with image and mask: 8 (benign 4, malignant 2, normal 2)" in output
    assert "found: errors 0, warnings 0, notes 0" in output


def break_dataset(dataset):
    """Damage a copy of the tiny dataset in every way the check must catch; returns path -> expected words."""
    benign, malignant, normal = (dataset / k for k in ("benign", "malignant", "normal"))
    expected = {}
    # truncated image
    data = (benign / "benign (1).png").read_bytes()
    (benign / "benign (1).png").write_bytes(data[: len(data) // 2])
    expected[benign / "benign (1).png"] = (ERROR, "truncated or corrupt")
    # mask of the wrong size
    Image.open(benign / "benign (3)_mask.png").resize((60, 48)).save(benign / "benign (3)_mask.png")
    expected[benign / "benign (3)_mask.png"] = (ERROR, "mask has shape (48, 60) (H, W) but its image")
    # missing mask
    (malignant / "malignant (1)_mask.png").unlink()
    expected[malignant / "malignant (1).png"] = (ERROR, "no mask found")
    # RGB mask with 128 next to 255
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[30:40, 10:20] = 255
    rgb[30:40, 20:22] = 128
    Image.fromarray(rgb, "RGB").save(malignant / "malignant (2)_mask.png")
    expected[malignant / "malignant (2)_mask.png"] = (
        ERROR,
        "not binary: its lesion pixels take 2 values, (128, 128, 128), (255, 255, 255)",
    )
    # orphan mask, empty (0-byte) mask file
    shutil.copy(normal / "normal (1)_mask.png", normal / "normal (5)_mask.png")
    expected[normal / "normal (5)_mask.png"] = (ERROR, "no image found")
    (benign / "benign (2)_mask_1.png").write_bytes(b"")
    expected[benign / "benign (2)_mask_1.png"] = (ERROR, "empty file (0 bytes)")
    # empty mask in a lesion class, lesion in a normal case
    Image.new("L", (64, 48)).save(benign / "benign (4)_mask.png")
    expected[benign / "benign (4)_mask.png"] = (ERROR, "mask is empty but the case is filed as 'benign'")
    Image.open(malignant / "malignant (2).png").save(normal / "normal (3).png")
    Image.fromarray(rgb[..., 0] > 0).save(normal / "normal (3)_mask.png")
    expected[normal / "normal (3)_mask.png"] = (WARNING, "filed as 'normal' but its mask marks 120 lesion pixels")
    # identical images under two classes
    expected[normal / "normal (3).png"] = (
        WARNING,
        f"same pixels as {malignant / 'malignant (2).png'}; filed as malignant and normal",
    )
    return expected


def test_broken_dataset_reports_every_problem_on_its_own_line(tiny_busi, capsys):
    expected = break_dataset(tiny_busi)
    problems = check_dataset(tiny_busi)
    found = {problem.path: problem for problem in problems}
    for path, (severity, words) in expected.items():
        assert str(path) in found, f"{path} not reported; got {[str(p) for p in problems]}"
        assert found[str(path)].severity == severity and words in found[str(path)].message, found[str(path)]
    assert len(problems) == len(expected), [str(p) for p in problems]
    assert [p.severity for p in problems] == sorted((p.severity for p in problems), key=[ERROR, WARNING, NOTE].index)

    assert run_check_data([tiny_busi]) == 1
    lines = capsys.readouterr().out.splitlines()
    for path, (severity, words) in expected.items():
        assert sum(line.startswith(f"{severity}: {path}: ") and words in line for line in lines) == 1, path
    assert "found: errors 7, warnings 2, notes 0" in lines


def test_warnings_fail_only_with_strict(tiny_busi, capsys):
    Image.open(tiny_busi / "benign" / "benign (2).png").save(tiny_busi / "benign" / "benign (9).png")
    shutil.copy(tiny_busi / "benign" / "benign (2)_mask.png", tiny_busi / "benign" / "benign (9)_mask.png")
    problems = check_dataset(tiny_busi)
    assert [(p.severity, p.path) for p in problems] == [(WARNING, str(tiny_busi / "benign" / "benign (9).png"))]
    assert "group them so a split keeps them together" in problems[0].message
    assert run_check_data([tiny_busi]) == 0
    assert run_check_data(["--strict", tiny_busi]) == 1

    groups_file = tiny_busi.parent / "near_duplicate_groups.json"
    groups_file.write_text(json.dumps({"groups": [["benign (1)", "benign (4)"], ["benign (2)", "benign (9)"]]}))
    assert [p.severity for p in check_dataset(tiny_busi)] == [NOTE]  # grouped copies: information only


def test_ungrouped_near_duplicates_are_noted(tiny_busi):
    (tiny_busi.parent / "near_duplicate_groups.json").unlink()
    problems = check_dataset(tiny_busi)
    assert [(p.severity, p.path) for p in problems] == [(NOTE, str(tiny_busi / "benign" / "benign (1).png"))]
    assert "benign (1), benign (4) are not grouped" in problems[0].message


def test_datalist_with_missing_files(tiny_busi, tmp_path):
    items = read_busi(tiny_busi)
    items[0] = dict(items[0], image=str(tmp_path / "gone.png"))
    path = write_datalist(tmp_path / "list.json", {"training": items[:4], "validation": items[4:]})
    report = inspect_dataset(path)
    assert report.layout == "datalist"
    assert [str(p) for p in report.errors] == [f"{tmp_path / 'gone.png'}: file not found"]


def test_not_a_dataset(tmp_path, capsys):
    assert run_check_data([tmp_path]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: no dataset found")


@pytest.mark.busi
def test_check_dataset_on_the_real_busi(busi_dir):
    report = inspect_dataset(busi_dir)
    assert report.errors == []
    assert report.cases_per_class == {"benign": 349, "malignant": 168, "normal": 106}
    assert report.empty_mask_per_class == {"normal": 106}
    assert sum(report.multi_mask_per_class.values()) <= 17
    assert report.groups_file_groups == 112
    # a lesion filed under both benign and malignant (Pawłowska et al.) shows up as identical images
    assert Counter(p.severity for p in report.problems)[WARNING] == len(report.duplicate_sets)

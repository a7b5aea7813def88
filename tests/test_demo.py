"""``lesionseg demo``, the README's main job, end to end at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lesionseg.cli import main

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "dcnet_bundle"


@pytest.mark.slow
def test_demo_trains_evaluates_and_draws(tmp_path, capsys):
    output = tmp_path / "demo"
    args = ["demo", "--output", str(output), "--bundle", str(BUNDLE), "--num-images", "12", "--epochs", "1"]
    assert main([*args, "--image-size", "32", "--features", "2", "4", "8", "16", "32"]) == 0
    assert (output / "models" / "model.pt").is_file()
    summary = json.loads((output / "summary.json").read_text())
    assert 0.0 <= summary["validation"]["dice"] <= 1.0
    masks = list((output / "evaluation" / "predictions").glob("*_mask.png"))
    assert masks, "no predicted masks were written"
    with Image.open(output / "overlays.png") as sheet:
        assert sheet.mode == "RGB" and sheet.width > 0
    with Image.open(output / "training_curves.png") as curves:
        assert curves.width > 0
    # one epoch logged, with its validation Dice
    epochs = [json.loads(line) for line in (output / "train" / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1] and "val_mean_dice" in epochs[0]
    table = (output / "results.md").read_text()
    assert "| images | Dice (%) |" in table and "| lesion |" in table
    out = capsys.readouterr().out
    assert "demo finished" in out and "| lesion |" in out


def test_a_demo_folder_with_other_phantoms_is_refused_before_training(tmp_path, capsys):
    from lesionseg.data.phantoms import write_phantom_dataset

    output = tmp_path / "demo"
    write_phantom_dataset(output / "phantoms", num_images=12, seed=0)
    args = ["demo", "--output", str(output), "--bundle", str(BUNDLE), "--epochs", "1", "--image-size", "32"]
    assert main([*args, "--num-images", "16"]) == 1
    assert "phantoms: holds 12 phantoms of seed 0, not the 16 of seed 0 asked for" in capsys.readouterr().err
    assert main([*args, "--num-images", "12", "--seed", "1"]) == 1
    assert not (output / "models").exists()

"""benchmarks/busi_accuracy.py: its two presets, the external test set (--test-dir), skipping and resuming."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from lesionseg.data.phantoms import write_phantom_dataset
from lesionseg.data.readers import read_busi
from lesionseg.deploy.release import file_md5
from lesionseg.engines import resolve_precision

REPO = Path(__file__).resolve().parents[1]
LESION_CLASSES = ["benign", "malignant"]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("busi_accuracy", REPO / "benchmarks" / "busi_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


busi_accuracy = _load_benchmark()


def _overrides(argv, tmp_path):
    args = busi_accuracy.parse_args(["--dataset-dir", str(tmp_path), *argv])
    datalist = args.output / "datalist.json"
    extras = {name: {k: v for model, k, v in args.override if model == name} for name in busi_accuracy.MODELS}
    return args, {
        name: busi_accuracy.model_overrides(name, args, datalist, extras[name]) for name in busi_accuracy.MODELS
    }


def _train_config(bundle):
    return yaml.safe_load((REPO / "bundles" / bundle / "configs" / "train.yaml").read_text())


def test_short_preset_is_todays_protocol(tmp_path):
    """The default preset passes the bundles exactly the overrides, in the order, that the script passed before
    presets."""
    args, overrides = _overrides([], tmp_path)
    out = REPO / "runs" / "busi_accuracy"
    assert args.preset == "short" and args.output == out
    common = lambda name: {  # noqa: E731
        "dataset_dir": str(out / "datalist.json"),
        "image_size": [128, 128],
        "max_epochs": 12,
        "learning_rate": 1e-3,
        "seed": 0,
        "ckpt_dir": str(out / name / "models"),
        "output_dir": str(out / name / "train"),
    }
    basicunet = {
        "network_def": {"_target_": "BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1},
        "loss": {"_target_": "DiceCELoss", "sigmoid": True},
        "run_settings#loss": {},
        "run_settings#network_def": {},
    }
    expected = {
        "basicunet": {**common("basicunet"), **basicunet},
        "dcnet": {**common("dcnet"), "loss#alpha": 0.5},
        "taichinet": {
            **common("taichinet"),
            "prepare_dir": str(out / "taichinet" / "easy_hard"),
            "prepare_overrides": {"max_epochs": 10},
        },
    }
    for name in expected:
        assert list(overrides[name].items()) == list(expected[name].items())
    assert busi_accuracy.PRESETS["short"].models["basicunet"][0] == "dcnet_bundle"


def test_override_values_are_read_as_yaml_as_in_the_bundles_configs():
    parse = busi_accuracy.parse_override
    assert parse("dcnet:resume=false") == ("dcnet", "resume", False)  # a Python literal would need False
    assert parse("taichinet:easy_to_hard=False") == ("taichinet", "easy_to_hard", False)
    assert parse("dcnet:aug_prob=0.5") == ("dcnet", "aug_prob", 0.5)
    assert parse("dcnet:loss#alpha=1e-1") == ("dcnet", "loss#alpha", 0.1)
    assert parse("dcnet:image_size=[128, 128]") == ("dcnet", "image_size", [128, 128])
    for bad in ("unet:aug_prob=0.5", "dcnet:aug_prob", "dcnet:=1", "dcnet:image_size=[1, 2"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"--override"):
            parse(bad)


def test_paper_preset_recipes_precision_and_run_folder(tmp_path):
    args, overrides = _overrides(["--preset", "paper"], tmp_path)
    # outside the work tree, beside the checkout, so a later run on the machine continues it
    assert args.output == REPO.parent / "runs" / "busi_paper"
    assert REPO not in args.output.parents
    assert (args.epochs, args.size, args.learning_rate) == (40, 224, None)
    for name, config in overrides.items():
        assert config["classes"] == LESION_CLASSES, name
        assert (config["max_epochs"], config["image_size"]) == (40, [224, 224])
        # each model's own learning rate and batch size: none is set for all, and the precision is the bundles'
        assert not {"learning_rate", "batch_size", "precision"} & set(config), name
    # the recipes the paper preset relies on are the bundles' defaults (the model cards' paper recipes)
    taichinet, dcnet = _train_config("taichinet_bundle"), _train_config("dcnet_bundle")
    assert (taichinet["batch_size"], taichinet["learning_rate"], taichinet["aug_prob"]) == (16, 1e-4, 0.5)
    assert (dcnet["batch_size"], dcnet["learning_rate"], dcnet["flip_prob"]) == (4, 3e-4, 0.0)
    assert (taichinet["precision"], dcnet["precision"]) == ("fp32", "auto")
    assert overrides["dcnet"]["loss#alpha"] == 0.5
    assert busi_accuracy.PRESETS["paper"].models["dcnet"][0] == "dcnet_bundle"
    assert "max_epochs" not in overrides["taichinet"]["prepare_overrides"]  # prepare.yaml's own recipe
    # BasicUNet: Dice + BCE on TaiChiNet's pipeline (batch 16, Adam 1e-4, its augmentation), easy-to-hard off
    assert busi_accuracy.PRESETS["paper"].models["basicunet"][0] == "taichinet_bundle"
    unet = overrides["basicunet"]
    assert unet["network_def"]["_target_"] == "BasicUNet" and unet["loss"]["_target_"] == "DiceCELoss"
    assert unet["easy_to_hard"] is False
    disabled = [key for key in unet if key.endswith("#_disabled_")]
    assert len(disabled) == 1
    index = int(disabled[0].split("#")[2])
    assert taichinet["train"]["handlers"][index]["_target_"].endswith("EasyToHardHandler")

    # one --precision for every model, an --override still wins for its model
    _, overrides = _overrides(
        ["--preset", "paper", "--precision", "bf16", "--override", "dcnet:precision=fp32"], tmp_path
    )
    assert [overrides[name]["precision"] for name in ("basicunet", "dcnet", "taichinet")] == ["bf16", "fp32", "bf16"]
    with pytest.raises(SystemExit):
        busi_accuracy.parse_args(["--dataset-dir", str(tmp_path), "--test-dir", str(tmp_path / "absent")])


def test_a_record_of_another_preset_is_refused(tmp_path):
    """Reusing a finished model of the short preset in a paper run would report a model trained on normal images
    as a lesion-only one."""
    args = busi_accuracy.parse_args(["--dataset-dir", str(tmp_path), "--preset", "paper", "--output", str(tmp_path)])
    (tmp_path / "dcnet").mkdir()
    record = {"model": "dcnet", "wall_seconds": 1, "summary": _summary(0.7)}  # written before presets: short
    (tmp_path / "dcnet" / "record.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"dcnet/record.json: made by --preset short, not paper"):
        busi_accuracy.run_model("dcnet", args, tmp_path / "datalist.json", {})
    (tmp_path / "dcnet" / "record.json").write_text(json.dumps({**record, "preset": "paper"}))
    assert busi_accuracy.run_model("dcnet", args, tmp_path / "datalist.json", {})["preset"] == "paper"


def _summary(dice):
    group = {metric: {"mean": dice, "std": 0.1} for metric in busi_accuracy.COLUMNS}
    return {"lesion": group, "all": group}


def test_results_table_states_precision_and_the_paper_targets():
    records = [
        {"model": "basicunet", "wall_seconds": 60, "precision": "bf16", "summary": _summary(0.70)},
        {"model": "dcnet", "wall_seconds": 120, "precision": "bf16", "summary": _summary(0.80)},
        {"model": "taichinet", "wall_seconds": 120, "summary": _summary(0.79)},  # a record from before this column
    ]
    table = busi_accuracy.results_table(records, None, {"dcnet": 0.78, "taichinet": 0.80})
    assert table.splitlines()[0].endswith("| wall time | precision mode |")
    assert "| 2.0 min | bf16 |" in table and "| not recorded |" in table
    assert "dcnet: target (lesion Dice >= 0.78 and >= BasicUNet + 0.02) met" in table
    assert "taichinet: target (lesion Dice >= 0.8 and >= BasicUNet + 0.02) missed" in table
    # the paper preset also wants the paired interval above 0: without per-image tables it cannot be shown
    strict = busi_accuracy.results_table(records, None, {"dcnet": 0.78}, interval_above_zero=True)
    assert "dcnet: target (lesion Dice >= 0.78 and >= BasicUNet + 0.02, paired 95 % interval above 0) missed" in strict
    assert "target" not in busi_accuracy.results_table(records, None, {})


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _classes(per_image_csv):
    return [row["class"] for row in _csv_rows(per_image_csv)]


@pytest.mark.slow
def test_paper_preset_on_phantoms_with_a_test_set_skips_and_resumes(tmp_path):
    """Three tiny models, one epoch at 32², lesion-only; the test set scored after validation; a rerun skips
    finished models; a model whose record is gone resumes its training from its last epoch."""
    data = write_phantom_dataset(tmp_path / "data", num_images=12, seed=3, size=(48, 64), normal_fraction=0.25)
    test = write_phantom_dataset(tmp_path / "test", num_images=5, seed=8, size=(40, 56), normal_fraction=0.4)
    test_classes = sorted(item["class"] for item in read_busi(test))
    assert "normal" in test_classes and "normal" in {item["class"] for item in read_busi(data)}
    out = tmp_path / "runs"
    tiny = ["num_workers=0", "batch_size=2"]
    overrides = [f"{model}:{o}" for model in ("basicunet", "dcnet", "taichinet") for o in tiny] + [
        "basicunet:network_def#features=[2, 2, 4, 8, 16, 2]",
        "dcnet:network_def#features=[2, 4, 8, 16, 32]",
        "taichinet:network_def#features=[2, 4, 8, 16, 32]",
        "taichinet:prepare_overrides={'network_def#features': [4, 4, 8, 8, 16, 4], 'num_workers': 0, 'batch_size': 4}",
    ]
    argv = ["--preset", "paper", "--dataset-dir", str(data), "--output", str(out), "--epochs", "1", "--size", "32"]
    argv += ["--prepare-epochs", "1", "--threads", "1", "--test-dir", str(test)]
    argv += [arg for override in overrides for arg in ("--override", override)]
    assert busi_accuracy.main(argv) == 0

    results, test_results = (out / "results.md").read_text(), (out / "test_results.md").read_text()
    assert "classes ['benign', 'malignant']" in results and (out / "training_curves.png").is_file()
    assert "How the curves end" not in results  # one epoch each: no curve to read
    for name in ("basicunet", "dcnet", "taichinet"):
        for text in (results, test_results):
            row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
            # the bundles' defaults: DC-Net auto, TaiChiNet (and BasicUNet, on its pipeline) fp32
            expected = resolve_precision("auto", "cpu").name if name == "dcnet" else "fp32"
            assert row.endswith(f"| {expected} |"), row
        # validation: lesion images only; test set: every labelled image, normal ones included
        assert set(_classes(out / name / "evaluation" / "per_image.csv")) <= set(LESION_CLASSES)
        assert sorted(_classes(out / name / "test" / "per_image.csv")) == test_classes
    assert "(paired, 95 %, n = " in test_results
    # where the Dice is lost, over each model's lesion images
    for text, evaluation in ((results, "evaluation"), (test_results, "test")):
        table = text.partition("Where the lesion Dice is lost")[2]
        for name in ("basicunet", "dcnet", "taichinet"):
            per_image = _csv_rows(out / name / evaluation / "per_image.csv")
            lesions = sum(int(r["gt_pixels"]) > 0 for r in per_image)
            row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
            missed = sum(float(r["dice"]) < 0.1 for r in per_image if int(r["gt_pixels"]) > 0)
            assert row.endswith(f"| {missed} / {lesions} |"), row

    # how each model fits its training images: its checkpoint on the training section's lesion images
    training_lesions = [i for i in json.loads((out / "datalist.json").read_text())["training"]
                        if i["class"] in LESION_CLASSES]
    fit = results.partition("How each model fits its training images")[2].partition("\n\n")[2]
    for name in ("basicunet", "dcnet", "taichinet"):
        per_image = _csv_rows(out / name / "training_fit" / "per_image.csv")
        # the datalist's paths are relative to it
        expected = sorted(str((out / i["image"]).resolve()) for i in training_lesions)
        assert sorted(str(Path(r["image"]).resolve()) for r in per_image) == expected
        train_dice = statistics.fmean(float(r["dice"]) for r in per_image)
        val_dice = json.loads((out / name / "record.json").read_text())["summary"]["lesion"]["dice"]["mean"]
        row = next(line for line in fit.splitlines() if line.startswith(f"| {name} |"))
        assert row.startswith(f"| {name} | {train_dice:.3f} ± "), row
        assert f"({len(training_lesions)}) | {val_dice:.3f} ± " in row and f"| {train_dice - val_dice:+.3f} |" in row

    # a rerun trains and evaluates nothing again
    def written():
        files = [*out.glob("*/*record.json"), *out.glob("*/models/*.pt"), *out.glob("*/*/summary.json")]
        return {path: path.stat().st_mtime_ns for path in files}

    before = written()
    # records (training, test, fit), checkpoints (model.pt, training_state.pt), three summaries per model
    assert len(before) == 9 + 6 + 9
    assert busi_accuracy.main(argv) == 0
    assert written() == before

    # an unfinished model (no record) resumes: a longer run continues with epoch 2, not from epoch 1
    (out / "basicunet" / "record.json").unlink()
    # a fit record of another checkpoint (as after a retraining) is redone, not reported for this one
    fit_record = out / "basicunet" / "fit_record.json"
    fit_record.write_text(json.dumps(dict(json.loads(fit_record.read_text()), checkpoint_md5="0" * 32)))
    assert busi_accuracy.main([*argv, "--epochs", "2", "--models", "basicunet"]) == 0
    checkpoint = file_md5(out / "basicunet" / "models" / "model.pt")
    for name in ("fit_record.json", "test_record.json"):
        assert json.loads((out / "basicunet" / name).read_text())["checkpoint_md5"] == checkpoint, name
    epochs = [json.loads(line)["epoch"] for line in (out / "basicunet" / "epochs.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    curves = (out / "results.md").read_text().partition("How the curves end")[2]
    assert "| basicunet | 2 | " in curves  # its two validation Dice values: a slope to fit
    # its time adds the epoch of the first session to this one's
    timed = [json.loads(line) for line in (out / "basicunet" / "epoch_seconds.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in timed] == [1, 2]
    record = json.loads((out / "basicunet" / "record.json").read_text())
    assert record["earlier_sessions_seconds"] == pytest.approx(timed[0]["seconds"])
    assert record["train_seconds"] >= timed[0]["seconds"] + timed[1]["seconds"]
    # nothing paused it: a busy training is not mistaken for a pause
    assert record["paused_seconds"] == 0.0 and [entry["paused_seconds"] for entry in timed] == [0.0, 0.0]


def test_breakdown_table_uses_one_set_of_size_edges_for_all_models(tmp_path):
    from lesionseg.metrics import write_per_image_csv

    areas = [100, 200, 300, 400, 500, 600]
    dice = {"basicunet": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], "dcnet": [0.0, 0.2, 0.9, 0.9, 0.9, 0.9]}
    for model, values in dice.items():
        rows = [
            {"image": f"{i}.png", "class": "benign" if i % 2 else "malignant", "dice": d, "gt_pixels": a}
            for i, (a, d) in enumerate(zip(areas, values))
        ]
        rows = [dict(r, pred_pixels=2 * r["gt_pixels"]) for r in rows]  # every poor image over-segmented
        rows.append({"image": "n.png", "class": "normal", "dice": float("nan"), "gt_pixels": 0, "pred_pixels": 0})
        write_per_image_csv(rows, tmp_path / model / "evaluation" / "per_image.csv")
    table = busi_accuracy.breakdown_table([{"model": "basicunet"}, {"model": "dcnet"}], tmp_path)
    assert "small <= 267 px < medium <= 433 px < large" in table
    lines = table.splitlines()
    assert lines[2] == "| model | benign | malignant | small lesions | medium lesions | large lesions | " + (
        "Dice < 0.5: over- / under-segmented | missed (Dice < 0.1) |"
    )
    # classes (odd images benign), then the terciles 100-200 / 300-400 / 500-600 px, then the poor images
    assert lines[4:] == [
        "| basicunet | 0.600 (3) | 0.700 (3) | 0.850 (2) | 0.650 (2) | 0.450 (2) | 1 / 6: 1 / 0 | 0 / 6 |",
        "| dcnet | 0.667 (3) | 0.600 (3) | 0.100 (2) | 0.900 (2) | 0.900 (2) | 2 / 6: 2 / 0 | 1 / 6 |",
    ]
    assert busi_accuracy.breakdown_table([{"model": "taichinet"}], tmp_path) == ""  # no table: no breakdown


def test_parts_fit_table_groups_the_training_fit_by_the_share_of_each_part(tmp_path):
    """TaiChiNet's training-image Dice grouped by how much of each lesion its easy and hard parts cover."""
    import numpy as np
    from PIL import Image

    from lesionseg.metrics import write_per_image_csv

    parts = tmp_path / "taichinet" / "easy_hard"
    # case -> (rows of its 10x10 lesion (10 px each) in the easy part, in the hard part, training Dice)
    cases = {"all_easy": (10, 0, 0.9), "half": (5, 5, 0.7), "tenth": (1, 9, 0.5), "none_easy": (0, 10, 0.1)}
    training, rows = [], []
    for case, (easy_rows, hard_rows, dice) in cases.items():
        for name, first, last in (("mask", 0, 10), ("easy", 0, easy_rows), ("hard", easy_rows, easy_rows + hard_rows)):
            pixels = np.zeros((10, 10), np.uint8)
            pixels[first:last] = 255
            (parts / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(parts / name / f"{case}.png")
        training.append({"image": f"mask/{case}.png", "label": f"mask/{case}.png", "case": case,
                         "easy": f"easy/{case}.png", "hard": f"hard/{case}.png"})
        rows.append({"image": f"{case}.png", "case": case, "dice": dice, "gt_pixels": 100, "pred_pixels": 100})
    (parts / "datalist.json").write_text(json.dumps({"training": training, "validation": []}))
    write_per_image_csv(rows, tmp_path / "taichinet" / "training_fit" / "per_image.csv")
    write_per_image_csv(rows, tmp_path / "basicunet" / "training_fit" / "per_image.csv")  # no parts: no rows
    _write_fit_records(tmp_path / "basicunet", {})
    # the last epoch's network, which fits every image alike
    last_rows = [dict(row, dice=0.6) for row in rows]
    write_per_image_csv(last_rows, tmp_path / "taichinet" / "last_epoch_fit" / "per_image.csv")
    _write_fit_records(tmp_path / "taichinet", {}, last_summary={})
    records = [{"model": "basicunet", "preset": "paper"}, {"model": "taichinet", "preset": "paper"}]
    table = busi_accuracy.parts_fit_table(records, tmp_path)
    lines = table.splitlines()
    assert lines[2] == (
        "| model | network | part | part covers none | part covers under 20 % | part covers 20-50 % | "
        "part covers 50 % or more |"
    )
    # easy shares 1.0, 0.5, 0.1, 0; hard shares 0, 0.5, 0.9, 1.0
    assert lines[4:] == [
        "| taichinet | kept | easy part E_p | 0.100 (1) | 0.500 (1) | — | 0.800 (2) |",
        "| taichinet | kept | hard part H_p | 0.900 (1) | — | — | 0.433 (3) |",
        "| taichinet | last (epoch 40) | easy part E_p | 0.600 (1) | 0.600 (1) | — | 0.600 (2) |",
        "| taichinet | last (epoch 40) | hard part H_p | 0.600 (1) | — | — | 0.600 (3) |",
    ]
    assert busi_accuracy.parts_fit_table(records[:1], tmp_path) == ""
    _retrain(tmp_path / "taichinet")  # the old last-epoch evaluation is not of this model's last epoch
    assert busi_accuracy.parts_fit_table(records, tmp_path).splitlines()[4:] == lines[4:6]


def test_last_epoch_fit_evaluates_the_training_states_network_when_it_is_not_the_kept_one(tmp_path, monkeypatch):
    import torch

    from lesionseg.engines.checkpoint import save_atomically

    args = busi_accuracy.parse_args(["--preset", "paper", "--dataset-dir", str(tmp_path), "--output", str(tmp_path)])
    weights = {"layer.weight": torch.arange(4.0)}
    calls = []
    monkeypatch.setattr(busi_accuracy, "_evaluate_checkpoint", lambda *a: calls.append(a) or {"evaluated": True})
    assert busi_accuracy.evaluate_last_epoch_fit("taichinet", args, tmp_path / "datalist.json", {}) is None  # no state
    (tmp_path / "taichinet" / "models").mkdir(parents=True)
    save_atomically({"layer.weight": torch.zeros(4)}, tmp_path / "taichinet" / "models" / "model.pt")  # the kept one
    for kept_epoch, expected in ((40, None), (18, {"evaluated": True})):
        state = {"format": 1, "trainer": {"epoch_length": 26, "iteration": 1040, "max_epochs": 40},
                 "best": {"validator": {"best_metric": 0.7, "best_metric_epoch": kept_epoch}}, "model": weights}
        save_atomically(state, tmp_path / "taichinet" / "models" / "training_state.pt")
        assert busi_accuracy.evaluate_last_epoch_fit("taichinet", args, tmp_path / "datalist.json", {}) == expected
    ((name, _, extra, overrides, evaluation, images, record_extra),) = calls  # only where the epochs differ
    models = tmp_path / "taichinet" / "models"
    assert (name, extra, evaluation) == ("taichinet", {}, "last_epoch_fit")
    # the state the network was taken from, and the kept checkpoint of that run
    assert record_extra == {
        "epoch": 40,
        "source_md5": file_md5(models / "training_state.pt"),
        "kept_md5": file_md5(models / "model.pt"),
    }
    assert overrides["eval_section"] == "training" and "epoch 40" in images
    saved = torch.load(Path(overrides["ckpt_dir"]) / "model.pt", weights_only=True)
    assert Path(overrides["ckpt_dir"]) == tmp_path / "taichinet" / "last_epoch"
    assert torch.equal(saved["layer.weight"], weights["layer.weight"])


def test_last_epoch_fit_rerun_neither_loads_the_state_nor_rewrites_the_network_it_evaluated(tmp_path, monkeypatch):
    import os

    import torch

    from lesionseg.deploy.release import file_md5
    from lesionseg.engines.checkpoint import save_atomically

    args = busi_accuracy.parse_args(["--preset", "paper", "--dataset-dir", str(tmp_path), "--output", str(tmp_path)])
    folder = tmp_path / "taichinet"
    (folder / "models").mkdir(parents=True)
    state_path = folder / "models" / "training_state.pt"
    state = {"format": 1, "trainer": {"epoch_length": 26, "iteration": 1040, "max_epochs": 40},
             "best": {"validator": {"best_metric": 0.7, "best_metric_epoch": 18}},
             "model": {"layer.weight": torch.arange(4.0)}}
    save_atomically(state, state_path)

    def evaluate(name, args, extra, overrides, evaluation, images, record_extra):
        md5 = file_md5(Path(overrides["ckpt_dir"]) / "model.pt")
        record = {"preset": "paper", **record_extra, "checkpoint_md5": md5}
        (folder / "last_epoch_fit_record.json").write_text(json.dumps(record))
        return record

    monkeypatch.setattr(busi_accuracy, "_evaluate_checkpoint", evaluate)
    first = busi_accuracy.evaluate_last_epoch_fit("taichinet", args, tmp_path / "datalist.json", {})
    network = folder / "last_epoch" / "model.pt"
    written = network.stat().st_mtime_ns
    loads = []
    monkeypatch.setattr("lesionseg.engines.checkpoint.load_checkpoint", lambda path: loads.append(path) or state)
    assert busi_accuracy.evaluate_last_epoch_fit("taichinet", args, tmp_path / "datalist.json", {}) == first
    assert loads == [] and network.stat().st_mtime_ns == written
    earlier = written - 10**9  # copied with cp -r: the times change, in any order, the contents do not
    for path in (network, folder / "last_epoch_fit_record.json"):
        os.utime(path, ns=(earlier, earlier))
    assert busi_accuracy.evaluate_last_epoch_fit("taichinet", args, tmp_path / "datalist.json", {}) == first
    assert loads == []
    state["model"] = {"layer.weight": torch.arange(4.0) + 1}  # the model trained again: its last network anew
    save_atomically(state, state_path)
    busi_accuracy.evaluate_last_epoch_fit("taichinet", args, tmp_path / "datalist.json", {})
    assert loads == [state_path]
    network.write_bytes(b"not the evaluated network")  # a changed network is evaluated again, not trusted
    busi_accuracy.evaluate_last_epoch_fit("taichinet", args, tmp_path / "datalist.json", {})
    assert loads == [state_path, state_path]


def _results_folder(root: Path, dice_by_image: dict[str, float], datalist: str = '{"training": []}') -> Path:
    """A results folder of one model ("dcnet") as the script leaves it: datalist, record and per-image CSV."""
    from lesionseg.metrics import write_per_image_csv

    (root / "dcnet" / "evaluation").mkdir(parents=True)
    (root / "datalist.json").write_text(datalist)
    rows = [{"image": image, "dice": dice, "gt_pixels": 10} for image, dice in dice_by_image.items()]
    rows.append({"image": "normal.png", "dice": 1.0, "gt_pixels": 0})  # not a lesion image: left out
    write_per_image_csv(rows, root / "dcnet" / "evaluation" / "per_image.csv")
    mean = sum(dice_by_image.values()) / len(dice_by_image)
    record = {"model": "dcnet", "summary": {"lesion": {"dice": {"mean": mean}}}}
    (root / "dcnet" / "record.json").write_text(json.dumps(record))
    return root


def test_compare_to_pairs_each_model_with_its_namesake_over_the_same_lesion_images(tmp_path):
    here = _results_folder(tmp_path / "bf16", {"a.png": 0.80, "b.png": 0.60, "c.png": 0.70, "only_here.png": 0.0})
    there = _results_folder(tmp_path / "fp32", {"a.png": 0.70, "b.png": 0.60, "c.png": 0.50})
    record = json.loads((here / "dcnet" / "record.json").read_text())
    table = busi_accuracy.comparison_table([record], here, there)
    # differences 0.10, 0.00, 0.20 over the three shared lesion images: mean 0.10, sd 0.10, 1.96 sd / sqrt(3)
    assert "| dcnet | 0.525 | 0.600 | +0.100 ± 0.113 (n = 3) |" in table
    other_split = _results_folder(tmp_path / "other", {"a.png": 0.7}, datalist='{"training": [1]}')
    with pytest.raises(SystemExit, match="not the same split"):
        busi_accuracy.comparison_table([record], here, other_split)


def test_fit_table_reads_over_and_under_fitting_from_the_same_evaluation_on_both_sides(tmp_path):
    def summary(mean, n):
        return {"lesion": {"n": n, "dice": {"mean": mean, "std": 0.1, "count": n}}}

    records = []
    for name, training, validation in (("dcnet", 0.85, 0.72), ("basicunet", 0.77, 0.75), ("taichinet", 0.70, 0.71)):
        last = summary(0.65, 413) if name == "taichinet" else None
        _write_fit_records(tmp_path / name, summary(training, 413), last_summary=last)
        records.append({"model": name, "preset": "paper", "summary": summary(validation, 104)})
    records.append({"model": "unfitted", "preset": "paper", "summary": summary(0.5, 104)})  # no fit record: no row
    rows = busi_accuracy.fit_table(records, tmp_path).splitlines()[4:]
    assert rows == [
        "| dcnet | 0.850 ± 0.100 (413) | 0.720 ± 0.100 (104) | +0.130 | training well above validation: over-fitting "
        "| — |",
        "| basicunet | 0.770 ± 0.100 (413) | 0.750 ± 0.100 (104) | +0.020 | training close to validation | — |",
        "| taichinet | 0.700 ± 0.100 (413) | 0.710 ± 0.100 (104) | -0.010 | training at or below validation: "
        "under-fitting | 0.650 ± 0.100 (epoch 40) |",
    ]
    assert busi_accuracy.fit_table(records[3:], tmp_path) == ""
    folder = tmp_path / "taichinet"
    state, kept = folder / "models" / "training_state.pt", folder / "models" / "model.pt"
    fit = folder / "fit_record.json"
    state.unlink()  # deleted once the run was final: still shown
    assert busi_accuracy.fit_table(records, tmp_path).splitlines()[4:] == rows
    # trained again with its last epoch the kept one (its kept fit evaluated anew), then the state deleted: the
    # old last-epoch evaluation is not this model's
    before = kept.read_bytes(), fit.read_text()
    kept.write_bytes(b"trained again, its last epoch the kept one")
    fit.write_text(json.dumps(dict(json.loads(before[1]), checkpoint_md5=file_md5(kept))))
    kept_fit, last_fit = busi_accuracy.current_fit_records(folder, "paper")
    assert kept_fit is not None and last_fit is None
    kept.write_bytes(before[0])
    fit.write_text(before[1])
    state.write_bytes(b"training state")
    # trained again: TaiChiNet's last epoch is now the kept one, and the old evaluation of it is not shown
    _retrain(tmp_path / "taichinet")
    assert busi_accuracy.fit_table(records, tmp_path).splitlines()[-1].endswith("under-fitting | — |")
    (tmp_path / "dcnet" / "models" / "model.pt").write_bytes(b"another kept checkpoint")  # its fit is not this one's
    assert [row.split(" |")[0] for row in busi_accuracy.fit_table(records, tmp_path).splitlines()[4:]] == [
        "| basicunet",
        "| taichinet",
    ]


def _write_fit_records(folder: Path, summary: dict, last_summary: dict | None = None) -> None:
    """The kept checkpoint, the training state and the fit records of a model as the script leaves them:
    ``fit_record.json`` of ``models/model.pt``, and with ``last_summary`` the last epoch's network and its
    ``last_epoch_fit_record.json``, written after the state as :func:`busi_accuracy.evaluate_last_epoch_fit`
    writes them."""
    from lesionseg.deploy.release import file_md5

    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "models" / "model.pt").write_bytes(b"kept checkpoint of " + folder.name.encode())
    (folder / "models" / "training_state.pt").write_bytes(b"training state")
    record = {"preset": "paper", "checkpoint_md5": file_md5(folder / "models" / "model.pt"), "summary": summary}
    (folder / "fit_record.json").write_text(json.dumps(record))
    if last_summary is not None:
        (folder / "last_epoch").mkdir(exist_ok=True)
        (folder / "last_epoch" / "model.pt").write_bytes(b"last epoch's network")
        md5, kept_md5 = file_md5(folder / "last_epoch" / "model.pt"), file_md5(folder / "models" / "model.pt")
        last = {"preset": "paper", "epoch": 40, "checkpoint_md5": md5, "kept_md5": kept_md5, "summary": last_summary}
        (folder / "last_epoch_fit_record.json").write_text(json.dumps(last))


def _retrain(folder: Path) -> None:
    """Write ``folder``'s training state anew, a second after its fit records, as training again does."""
    import os

    later = (folder / "last_epoch_fit_record.json").stat().st_mtime_ns + 10**9
    os.utime(folder / "models" / "training_state.pt", ns=(later, later))

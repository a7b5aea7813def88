"""``lesionseg crossval``: grouped stratified folds, per-fold runs of a bundle, resume, tables and figures."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionseg.cli import main
from lesionseg.data.datalist import read_datalist
from lesionseg.data.phantoms import write_phantom_dataset
from lesionseg.data.readers import read_dataset
from lesionseg.engines.crossval import FoldPaths, plan_folds, write_fold_datalists
from lesionseg.engines.training_log import read_epoch_log
from lesionseg.metrics import read_per_image_csv
from lesionseg.workflows.crossval import CrossValidation, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
DCNET = ROOT / "bundles" / "dcnet_bundle"
TAICHINET = ROOT / "bundles" / "taichinet_bundle"
# tiny networks at 32x32, one epoch: seconds per fold on 2 CPU cores
TINY = [
    "max_epochs=1",
    "image_size=[32,32]",
    "network_def#features=[2,4,8,16,32]",
    "num_workers=0",
    "batch_size=2",
]


def _files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (caches aside) with its modification time."""
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def _image_set(items):
    return {os.path.abspath(item["image"]) for item in items}


@pytest.mark.parametrize("dataset, val_fraction", [("tiny_busi", 0.0), ("tiny_busi", 0.4), ("phantoms", 0.25)])
def test_folds_are_disjoint_grouped_and_keep_the_test_fold_out_of_training(dataset, val_fraction, request, tmp_path):
    if dataset == "phantoms":
        data = write_phantom_dataset(tmp_path / "data", num_images=24, seed=1, size=(24, 24), progress=False)
    else:
        data = request.getfixturevalue("tiny_busi")
    if dataset == "tiny_busi" and val_fraction > 0:
        # 4 training images, one unit per class: the class-stratified validation share of each rounds to 0
        with pytest.raises(ValueError, match="too few to hold out a 0.4 validation share"):
            plan_folds(data, num_folds=2, val_fraction=val_fraction)
        return
    plan = plan_folds(data, num_folds=2, val_fraction=val_fraction)
    everything = _image_set(read_dataset(data))
    tests = [_image_set(sections["test"]) for sections in plan]
    assert tests[0].isdisjoint(tests[1]) and tests[0] | tests[1] == everything
    for sections, test in zip(plan, tests):
        training, validation = _image_set(sections["training"]), _image_set(sections["validation"])
        assert training.isdisjoint(test)
        if val_fraction > 0:
            assert validation and validation.isdisjoint(test) and validation.isdisjoint(training)
            assert training | validation | test == everything
        else:
            assert validation == test and training | test == everything
        # the near-duplicate pair of tiny_busi never straddles two sections
        for name in ("training", "validation", "test") if dataset == "tiny_busi" else ():
            cases = {item["case"] for item in sections[name]}
            assert ("benign (1)" in cases) == ("benign (4)" in cases), name
        # class-stratified: each test fold has half of each class
        totals = Counter(item["class"] for item in read_dataset(data))
        counts = Counter(item["class"] for item in sections["test"])
        assert all(abs(counts[klass] - total / 2) <= 1 for klass, total in totals.items()), counts


def test_fold_datalists_are_kept_and_a_changed_dataset_is_refused(tiny_busi, tmp_path):
    plan = plan_folds(tiny_busi, num_folds=2, val_fraction=0.0)
    paths = write_fold_datalists(plan, tmp_path / "cv")
    assert paths == [FoldPaths(tmp_path / "cv", k).datalist for k in range(2)]
    for path, sections in zip(paths, plan):
        for name in ("training", "validation", "test"):
            items = read_datalist(path, name)
            assert _image_set(items) == _image_set(sections[name])
            assert all("class" in item and "case" in item for item in items)
    before = paths[0].stat().st_mtime_ns
    assert write_fold_datalists(plan, tmp_path / "cv") == paths and paths[0].stat().st_mtime_ns == before
    swapped = [plan[1], plan[0]]
    with pytest.raises(ValueError, match=r"fold_0.*datalist\.json.*differs"):
        write_fold_datalists(swapped, tmp_path / "cv")


def test_parse_overrides():
    assert parse_overrides(["max_epochs=3", "image_size=[64, 64]", "amp=False", "name=run a", "lr=1e-3"]) == {
        "max_epochs": 3,
        "image_size": [64, 64],
        "amp": False,
        "name": "run a",
        "lr": 1e-3,
    }
    with pytest.raises(ValueError, match="ID=VALUE"):
        parse_overrides(["max_epochs"])
    with pytest.raises(ValueError, match="ckpt_dir"):
        parse_overrides(["ckpt_dir=/tmp/x"])


OVERRIDE_GRAMMAR = {
    # booleans as YAML writes them (crossval read 'false' as the string 'false', a truthy value)
    "resume=false": ("resume", False), "resume=False": ("resume", False), "amp=TRUE": ("amp", True),
    # numbers, exponents without a dot included (a float on MONAI's command line, a string in YAML 1.1)
    "max_epochs=3": ("max_epochs", 3), "learning_rate=1e-3": ("learning_rate", 1e-3),
    "learning_rate=3.0e-4": ("learning_rate", 3e-4), "val_fraction=0.25": ("val_fraction", 0.25),
    # lists and mappings
    "image_size=[64, 64]": ("image_size", [64, 64]),
    "network_def#features=[2,4,8,16,32]": ("network_def#features", [2, 4, 8, 16, 32]),
    "prepare_overrides={max_epochs: 2, force: true}": ("prepare_overrides", {"max_epochs": 2, "force": True}),
    # nothing, and strings
    "step2_start_epoch=null": ("step2_start_epoch", None), "step2_start_epoch=None": ("step2_start_epoch", None),
    "name=run a": ("name", "run a"), "path=/data/x=y": ("path", "/data/x=y"),
}


@pytest.mark.parametrize("text", sorted(OVERRIDE_GRAMMAR))
def test_crossval_and_predict_read_overrides_with_one_grammar(text):
    from lesionseg.workflows.predict import parse_overrides as predict_overrides

    key, value = OVERRIDE_GRAMMAR[text]
    for parse in (parse_overrides, predict_overrides):
        parsed = parse([text])
        assert parsed == {key: value} and type(parsed[key]) is type(value), (parse.__module__, parsed)


def test_override_errors_quote_the_entry_and_plain_yaml_is_left_alone():
    import yaml

    from lesionseg.workflows.predict import ModelError
    from lesionseg.workflows.predict import parse_overrides as predict_overrides

    for parse, error in ((parse_overrides, ValueError), (predict_overrides, ModelError)):
        with pytest.raises(error, match=r"--override 'image_size=\[1, 2': the value is not valid YAML"):
            parse(["image_size=[1, 2"])
        with pytest.raises(error, match="expected ID=VALUE"):
            parse(["=3"])
    # the additions to YAML live in lesionseg's loader only
    assert yaml.safe_load("1e-3") == "1e-3" and yaml.safe_load("None") == "None"


def test_bad_input_fails_before_any_training_and_names_the_problem(tmp_path, capsys, tiny_busi):
    missing = tmp_path / "nowhere"
    assert main(["crossval", "--bundle", str(DCNET), "--dataset-dir", str(missing), "--output", str(tmp_path)]) == 1
    assert str(missing) in capsys.readouterr().err
    not_a_bundle = tmp_path / "empty"
    not_a_bundle.mkdir()
    args = ["crossval", "--bundle", str(not_a_bundle), "--dataset-dir", str(tiny_busi), "--output", str(tmp_path / "o")]
    assert main(args) == 1
    assert "configs/train.yaml" in capsys.readouterr().err
    args = ["crossval", "--bundle", str(DCNET), "--dataset-dir", str(tiny_busi), "--output", str(tmp_path / "o")]
    assert main([*args, "--override", "output_dir=/tmp/x"]) == 1
    assert "sets 'output_dir' itself" in capsys.readouterr().err
    assert main([*args, "--folds", "1"]) == 1
    assert "num_folds must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _crossval(bundle, data, output, *extra):
    args = ["crossval", "--bundle", str(bundle), "--dataset-dir", str(data), "--folds", "2", "--output", str(output)]
    for override in [*TINY, *extra]:
        args += ["--override", override]
    return main(args)


def _cell(values, digits=2):
    """A results-table cell from per-fold means, computed here without lesionseg."""
    values = [v for v in values if not math.isnan(v)]
    mean, std = statistics.fmean(values) * 100, statistics.stdev(values) * 100
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


@pytest.mark.slow
def test_crossval_writes_tables_and_figures_and_resumes_only_missing_folds(tmp_path, capsys):
    data = write_phantom_dataset(tmp_path / "data", num_images=12, seed=3, size=(40, 52), progress=False)
    output = tmp_path / "cv"
    bundle_files = _files(DCNET)
    assert _crossval(DCNET, data, output) == 0
    folds = [FoldPaths(output, k) for k in range(2)]

    # per fold: its own checkpoint, an epoch log, and an evaluation of exactly its test images
    for fold in folds:
        assert fold.models.joinpath("model.pt").is_file()
        assert [r["epoch"] for r in read_epoch_log(fold.epoch_log)] == [1]
        assert {"loss", "val_mean_dice"} <= set(read_epoch_log(fold.epoch_log)[0])
        records = read_per_image_csv(fold.per_image)
        assert {r["image"] for r in records} == _image_set(read_datalist(fold.datalist, "test"))
    assert _files(DCNET) == bundle_files, "a fold wrote into the bundle's folder"

    # the table: mean ± std over folds of each fold's mean, recomputed from the per-image CSVs
    per_fold = [read_per_image_csv(fold.per_image) for fold in folds]
    rows = {line.split(",")[0]: line.split(",")[1:] for line in (output / "results.csv").read_text().splitlines()}
    header = rows.pop("images")
    assert header[:2] == ["Dice (%)", "IoU (%)"] and "HD95 (px)" in header
    assert list(rows) == ["lesion", "normal", "all"]
    for group, keep in (("lesion", lambda r: r["gt_pixels"] > 0), ("all", lambda r: True)):
        for column, metric in ((0, "dice"), (1, "iou")):
            fold_means = [statistics.fmean(r[metric] for r in records if keep(r)) for records in per_fold]
            assert rows[group][column] == _cell(fold_means), (group, metric)
    markdown = (output / "results.md").read_text()
    assert "| images | Dice (%) | IoU (%) |" in markdown and "| lesion | " in markdown and "## Per fold" in markdown
    for picture in ("training_curves.png", "per_case_boxplots.png"):
        with Image.open(output / picture) as image:
            assert image.format == "PNG" and image.width > 300 and np.asarray(image.convert("L")).std() > 0
    capsys.readouterr()

    # resume: fold 0 is skipped, fold 1 (deleted) is trained and evaluated again
    model_0 = folds[0].models.joinpath("model.pt").stat().st_mtime_ns
    shutil.rmtree(folds[1].root)
    assert _crossval(DCNET, data, output) == 0
    log = capsys.readouterr().out
    assert "fold 1/2 (fold_0): skipped, already evaluated" in log
    assert "fold 2/2 (fold_1): training on" in log and "fold 1/2 (fold_0): training" not in log
    assert folds[0].models.joinpath("model.pt").stat().st_mtime_ns == model_0
    assert folds[1].summary.is_file() and folds[1].models.joinpath("model.pt").is_file()

    # a fold trained but not evaluated is evaluated without training again
    shutil.rmtree(folds[0].evaluation)
    assert _crossval(DCNET, data, output) == 0
    log = capsys.readouterr().out
    assert "fold 1/2 (fold_0): training finished earlier" in log and "fold 2/2 (fold_1): skipped" in log
    assert folds[0].models.joinpath("model.pt").stat().st_mtime_ns == model_0 and folds[0].summary.is_file()

    # a fold interrupted while training is trained again (into its existing models/)
    shutil.rmtree(folds[1].evaluation)
    folds[1].trained.unlink()
    assert _crossval(DCNET, data, output) == 0
    assert "fold 2/2 (fold_1): training on" in capsys.readouterr().out
    assert [r["epoch"] for r in read_epoch_log(folds[1].epoch_log)] == [1] and folds[1].summary.is_file()

    # a fold whose per-image table is missing is evaluated again, not skipped (the tables need it)
    folds[0].per_image.unlink()
    assert _crossval(DCNET, data, output) == 0
    assert "fold 1/2 (fold_0): training finished earlier" in capsys.readouterr().out and folds[0].per_image.is_file()

    # other settings in the same output folder are refused before anything runs
    assert _crossval(DCNET, data, output, "learning_rate=0.1") == 1
    assert "crossval.json" in capsys.readouterr().err


def test_an_edited_recipe_a_foreign_folder_or_a_damaged_record_is_refused(tmp_path):
    """What a resumed cross-validation cannot compare would mix recipes across folds, or write over results."""
    data = write_phantom_dataset(tmp_path / "data", num_images=12, seed=3, size=(40, 52), progress=False)
    bundle = tmp_path / "bundle"
    shutil.copytree(DCNET, bundle, ignore=shutil.ignore_patterns("models", "eval"))
    output = tmp_path / "cv"
    CrossValidation(bundle, data, 2, output)
    config = bundle / "configs" / "train.yaml"
    config.write_text(config.read_text().replace("aug_prob: 0.0", "aug_prob: 0.5"))
    with pytest.raises(ValueError, match="bundle_configs_sha256: was"):
        CrossValidation(bundle, data, 2, output)
    settings = json.loads((output / "crossval.json").read_text())
    del settings["bundle_configs_sha256"]  # a run of an earlier version: resumed, compared from now on
    (output / "crossval.json").write_text(json.dumps(settings))
    CrossValidation(bundle, data, 2, output)
    assert "bundle_configs_sha256" in json.loads((output / "crossval.json").read_text())

    (output / "crossval.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"cv/crossval.json: not readable JSON"):
        CrossValidation(bundle, data, 2, output)

    results = tmp_path / "busi_paper"
    results.mkdir()
    (results / "results.md").write_text("a benchmark's results")
    with pytest.raises(ValueError, match="holds files and no crossval.json"):
        CrossValidation(bundle, data, 2, results)
    assert [p.name for p in results.iterdir()] == ["results.md"]


@pytest.mark.slow
def test_crossval_of_taichinet_prepares_each_fold_in_its_own_folder(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", num_images=12, seed=3, size=(40, 52), progress=False)
    preparation = {"max_epochs": 1, "image_size": [32, 32], "network_def#features": [4, 4, 8, 8, 16, 4]}
    preparation.update({"num_workers": 0, "batch_size": 4})
    output = tmp_path / "cv"
    bundle_files = _files(TAICHINET)
    assert _crossval(TAICHINET, data, output, f"prepare_overrides={json.dumps(preparation)}") == 0
    for k in range(2):
        fold = FoldPaths(output, k)
        prepared = read_datalist(fold.prepare / "datalist.json", "training")
        # the easy/hard parts are mined on the fold's training images only, never on its test fold
        assert _image_set(prepared) == _image_set(read_datalist(fold.datalist, "training"))
        assert fold.summary.is_file()
    assert (output / "results.md").is_file() and (output / "per_case_boxplots.png").is_file()
    assert _files(TAICHINET) == bundle_files, "a fold wrote into the bundle's folder"

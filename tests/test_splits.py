"""Grouped, stratified splits and near-duplicate groups (lesionseg.data.splits)."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionseg.cli import split as split_cli
from lesionseg.data.datalist import read_datalist, write_datalist
from lesionseg.data.grouping import find_groups, load_groups, resolve_groups, save_groups, similar_groups
from lesionseg.data.io import DataError
from lesionseg.data.readers import read_busi
from lesionseg.data.splits import datalist_section, kfold_split, make_datalist, train_val_test_split

CLASS_SIZES = {"a": 50, "b": 30, "c": 20}


def synthetic_items():
    return [
        {"image": f"/d/{k}/{k}{i}.png", "label": f"/d/{k}/{k}{i}_mask.png", "class": k, "case": f"{k}{i}"}
        for k, n in CLASS_SIZES.items()
        for i in range(n)
    ]


# groups of 2 to 4 cases, one mixing classes (BUSI files a lesion under both benign and malignant)
GROUPS = [["a0", "a1"], ["a2", "a3", "a4", "a5"], ["b0", "b1", "b2"], ["c0", "c1"], ["a6", "b3"], ["zz9", "a7"]]


def section_of(sections):
    return {item["case"]: name for name, items in sections.items() for item in items}


def assert_partition(sections, items):
    cases = [item["case"] for part in sections.values() for item in part]
    assert sorted(cases) == sorted(item["case"] for item in items)  # disjoint and covering


def assert_grouped(sections, groups):
    where = section_of(sections)
    for group in groups:
        assert len({where[case] for case in group if case in where}) <= 1, group


@pytest.mark.parametrize("num_folds", [2, 5])
def test_kfold_split_is_a_grouped_stratified_partition(num_folds):
    items = synthetic_items()
    folds = kfold_split(items, num_folds=num_folds, seed=3, groups=GROUPS)
    sections = {str(k): fold for k, fold in enumerate(folds)}
    assert len(folds) == num_folds
    assert_partition(sections, items)
    assert_grouped(sections, GROUPS)
    largest_group = 4
    for fold in folds:
        counts = Counter(item["class"] for item in fold)
        for klass, total in CLASS_SIZES.items():
            assert abs(counts[klass] - total / num_folds) <= largest_group, (klass, counts)
        assert abs(len(fold) - len(items) / num_folds) <= largest_group
        assert [item["case"] for item in fold] == [i["case"] for i in items if i in fold]  # items' order


def test_kfold_split_without_groups_balances_each_class_exactly():
    folds = kfold_split(synthetic_items(), num_folds=5)
    for fold in folds:
        assert Counter(item["class"] for item in fold) == {k: n // 5 for k, n in CLASS_SIZES.items()}


def test_splits_are_deterministic_and_depend_on_the_seed():
    items = synthetic_items()
    first = [[i["case"] for i in fold] for fold in kfold_split(items, 5, seed=1, groups=GROUPS)]
    again = [[i["case"] for i in fold] for fold in kfold_split(synthetic_items(), 5, seed=1, groups=GROUPS)]
    other = [[i["case"] for i in fold] for fold in kfold_split(items, 5, seed=2, groups=GROUPS)]
    assert first == again and first != other
    split = train_val_test_split(items, 0.2, 0.1, seed=4, groups=GROUPS)
    assert split == train_val_test_split(synthetic_items(), 0.2, 0.1, seed=4, groups=GROUPS)


def test_train_val_test_split_fractions_and_groups():
    items = synthetic_items()
    split = train_val_test_split(items, val_fraction=0.2, test_fraction=0.1, seed=0, groups=GROUPS)
    assert list(split) == ["training", "validation", "test"]
    assert_partition(split, items)
    assert_grouped(split, GROUPS)
    for name, fraction in (("validation", 0.2), ("test", 0.1)):
        counts = Counter(item["class"] for item in split[name])
        for klass, total in CLASS_SIZES.items():
            assert abs(counts[klass] - fraction * total) <= 4, (name, klass, counts)

    plain = train_val_test_split(items, val_fraction=0.25)
    assert list(plain) == ["training", "validation"]
    counts = Counter(item["class"] for item in plain["validation"])
    assert all(abs(counts[k] - 0.25 * n) < 1 for k, n in CLASS_SIZES.items())  # rounded per class


def test_items_sharing_a_case_or_without_class_stay_consistent():
    items = [{"image": f"/x/{i}.png", "label": f"/x/{i}_m.png"} for i in range(20)]
    items.append({"image": "/elsewhere/3.png", "label": "/elsewhere/3_m.png"})  # same case id "3"
    split = train_val_test_split(items, val_fraction=0.3, seed=1)
    where = {item["image"]: name for name, part in split.items() for item in part}
    assert where["/x/3.png"] == where["/elsewhere/3.png"]
    assert len(split["validation"]) in (6, 7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"val_fraction": 1.0}, "must be in"),
        ({"val_fraction": 0.6, "test_fraction": 0.4}, "leave some training"),
        ({"val_fraction": -0.1}, "must be in"),
    ],
)
def test_bad_fractions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_val_test_split(synthetic_items(), **kwargs)


def test_bad_fold_arguments():
    items = synthetic_items()
    with pytest.raises(ValueError, match="at least 2"):
        kfold_split(items, num_folds=1)
    with pytest.raises(ValueError, match="cannot make 5 folds of 3 items"):
        kfold_split(items[:3], num_folds=5)
    with pytest.raises(ValueError, match="go together"):
        make_datalist(items, num_folds=5)
    with pytest.raises(ValueError, match=r"fold must be in \[0, 5\)"):
        make_datalist(items, num_folds=5, fold=5)


def test_make_datalist_fold_i_validates_with_fold_i():
    items = synthetic_items()
    folds = kfold_split(items, num_folds=4, seed=7, groups=GROUPS)
    for fold in range(4):
        datalist = make_datalist(synthetic_items(), num_folds=4, fold=fold, seed=7, groups=GROUPS)
        assert [i["case"] for i in datalist["validation"]] == [i["case"] for i in folds[fold]]
        assert sorted(i["case"] for i in datalist["training"]) == sorted(
            i["case"] for k, f in enumerate(folds) if k != fold for i in f
        )
    with_test = make_datalist(items, test_fraction=0.2, num_folds=4, fold=1, groups=GROUPS)
    assert list(with_test) == ["training", "validation", "test"]
    assert_partition(with_test, items)
    assert_grouped(with_test, GROUPS)
    held_out = train_val_test_split(items, 0.0, 0.2, seed=0, groups=GROUPS)["test"]
    assert with_test["test"] == held_out


def test_make_datalist_uses_the_groups_file_beside_the_dataset(tiny_busi):
    # the fixture's near_duplicate_groups.json (in the parent folder) groups benign (1) and benign (4)
    for seed in range(6):
        where = section_of(make_datalist(tiny_busi, val_fraction=0.5, seed=seed))
        assert where["benign (1)"] == where["benign (4)"]
    separated = [
        seed
        for seed in range(12)
        if len(
            set(
                section_of(make_datalist(tiny_busi, val_fraction=0.5, seed=seed, groups="none"))[c]
                for c in ("benign (1)", "benign (4)")
            )
        )
        == 2
    ]
    assert separated, "without groups some seed should separate the pair, else this test proves nothing"


def test_datalist_section_agrees_between_calls_and_reads_json(tiny_busi, tmp_path):
    training = datalist_section(tiny_busi, "training", val_fraction=0.25, seed=0)
    validation = datalist_section(tiny_busi, "validation", val_fraction=0.25, seed=0)
    assert training == datalist_section(tiny_busi, "training", val_fraction=0.25, seed=0)
    assert_partition({"t": training, "v": validation}, read_busi(tiny_busi))
    assert len(validation) == 2
    with pytest.raises(ValueError, match="no section 'test'"):
        datalist_section(tiny_busi, "test")

    path = write_datalist(tmp_path / "list.json", {"training": training, "validation": validation})
    assert datalist_section(path, "validation", val_fraction=0.9) == validation  # split arguments unused
    # "all": every labelled item, unsplit: the dataset's items, or every section of a datalist
    assert datalist_section(tiny_busi, "all", val_fraction=0.25) == read_busi(tiny_busi)
    assert datalist_section(path, "all") == read_datalist(path, "training") + read_datalist(path, "validation")
    with pytest.raises(DataError, match="no section 'test'"):
        datalist_section(path, "test")


def test_groups_files(tmp_path):
    path = save_groups(tmp_path / "groups.json", GROUPS, description="test")
    assert load_groups(path) == GROUPS
    assert resolve_groups(str(path)) == GROUPS
    assert resolve_groups("none") == resolve_groups(None) == []
    for content in ('{"groups": [["a", 1]]}', '["a"]', "{broken"):
        path.write_text(content)
        with pytest.raises(DataError) as raised:
            load_groups(path)
        assert str(raised.value).startswith(str(path))


def literal_groups(signatures, threshold):
    """Pairwise loop and breadth-first search: the definition similar_groups vectorises."""
    num = len(signatures)
    linked = [
        [j for j in range(num) if j != i and float(signatures[i] @ signatures[j]) > threshold] for i in range(num)
    ]
    seen, groups = set(), []
    for start in range(num):
        if start in seen:
            continue
        component, frontier = {start}, [start]
        while frontier:
            node = frontier.pop()
            for other in linked[node]:
                if other not in component:
                    component.add(other)
                    frontier.append(other)
        seen |= component
        if len(component) > 1:
            groups.append(sorted(component))
    return groups


def test_similar_groups_matches_the_literal_definition():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 64))
    rows = [base[k] + rng.normal(scale=s, size=64) for k in range(40) for s in (0.0, 0.2)[: 1 + (k % 3 == 0)]]
    rows += [base[5] + base[6]]  # links two groups only transitively
    signatures = np.asarray(rows)
    signatures /= np.linalg.norm(signatures, axis=1, keepdims=True)
    for threshold in (0.5, 0.7, 0.95):
        assert similar_groups(signatures, threshold, block=7) == literal_groups(signatures, threshold)


def test_similar_groups_is_fast_for_a_thousand_images():
    signatures = np.random.default_rng(1).normal(size=(1000, 256)).astype(np.float32)
    signatures[500] = signatures[3]
    signatures /= np.linalg.norm(signatures, axis=1, keepdims=True)
    start = time.perf_counter()
    groups = similar_groups(signatures, 0.96)
    assert time.perf_counter() - start < 2.0
    assert groups == [[3, 500]]


def test_find_groups_finds_near_duplicates_and_resized_copies(tiny_busi):
    assert find_groups(tiny_busi) == [["benign (1)", "benign (4)"]]
    copy = tiny_busi / "malignant" / "malignant (7).png"
    Image.open(tiny_busi / "normal" / "normal (2).png").resize((80, 60)).save(copy)
    shutil.copy(tiny_busi / "normal" / "normal (2)_mask.png", copy.with_name("malignant (7)_mask.png"))
    assert find_groups(tiny_busi) == [["benign (1)", "benign (4)"], ["malignant (7)", "normal (2)"]]
    # unrelated tiny images correlate below 0.3, so a low threshold links more of them
    assert len(sum(find_groups(read_busi(tiny_busi), threshold=0.1), [])) > 4
    assert resolve_groups("detect", items=read_busi(tiny_busi)) == find_groups(tiny_busi)


@pytest.mark.busi
def test_real_busi_groups_never_straddle_a_split(busi_dir):
    groups = load_groups(busi_dir.parent / "near_duplicate_groups.json")
    items = read_busi(busi_dir)
    split = make_datalist(busi_dir, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert_partition(split, items)
    assert_grouped(split, groups)
    assert {name: len(part) for name, part in split.items()} == pytest.approx(
        {"training": 0.7 * 623, "validation": 0.2 * 623, "test": 0.1 * 623}, abs=4
    )
    for fold in range(5):
        assert_grouped(make_datalist(busi_dir.parent, num_folds=5, fold=fold), groups)


@pytest.mark.busi
def test_find_groups_recovers_the_real_busi_groups(busi_dir):
    start = time.perf_counter()
    found = find_groups(busi_dir)
    elapsed = time.perf_counter() - start
    known = load_groups(busi_dir.parent / "near_duplicate_groups.json")
    where = {case: index for index, group in enumerate(found) for case in group}
    for group in known:  # every listed group lies inside one found group
        assert len({where.get(case) for case in group}) == 1 and group[0] in where, group
    assert len(found) <= len(known) + 3, json.dumps(found)
    assert elapsed < 60


def run_split(argv):
    parser = argparse.ArgumentParser(prog="lesionseg")
    split_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["split", *map(str, argv)])
    return args.func(args)


def test_split_command_writes_a_relative_datalist(tiny_busi, tmp_path, capsys):
    output = tmp_path / "out" / "datalist.json"
    assert run_split([tiny_busi.parent, "--output", output, "--val-fraction", "0.25", "--seed", "3"]) == 0
    content = json.loads(output.read_text())
    assert content["validation"][0]["image"].startswith("../busi/Dataset_BUSI_with_GT/")
    expected = make_datalist(tiny_busi, val_fraction=0.25, seed=3)
    assert {name: read_datalist(output, name) for name in expected} == expected
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {output}"
    assert lines[1].split() == ["section", "total", "benign", "malignant", "normal"]
    for line, (name, items) in zip(lines[2:], expected.items(), strict=True):
        counts = Counter(item["class"] for item in items)
        assert line.split() == [name, str(len(items)), *(str(counts[k]) for k in ("benign", "malignant", "normal"))]

    options = ["--folds", "3", "--fold", "2", "--test-fraction", "0.25", "--overwrite"]
    assert run_split([tiny_busi, "-o", output, *options]) == 0
    folds = make_datalist(tiny_busi, test_fraction=0.25, num_folds=3, fold=2)
    assert {name: read_datalist(output, name) for name in folds} == folds
    assert run_split([tiny_busi, "-o", output, "--folds", "3"]) == 1
    assert "--folds and --fold go together" in capsys.readouterr().err


def test_split_command_replaces_an_existing_file_only_with_overwrite(tiny_busi, tmp_path, capsys):
    # e.g. the datalist an interrupted training resumes on: it resumes only with the same images
    output = write_datalist(tmp_path / "datalist.json", make_datalist(tiny_busi, val_fraction=0.25, seed=3))
    before = output.read_bytes()
    capsys.readouterr()
    assert run_split([tiny_busi, "-o", output, "--seed", "5"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {output}: exists; choose another file or pass --overwrite to replace it"
    )
    assert output.read_bytes() == before
    assert run_split([tiny_busi, "-o", output, "--seed", "5", "--overwrite"]) == 0
    expected = make_datalist(tiny_busi, seed=5)
    assert {name: read_datalist(output, name) for name in expected} == expected


@pytest.mark.parametrize("given", ["auto", "file"])
def test_split_command_never_replaces_the_groups_file_it_reads(tiny_busi, capsys, given):
    # near_duplicate_groups.json beside the dataset, where `lesionseg download` writes it and "auto" finds it
    groups = save_groups(tiny_busi.parent / "near_duplicate_groups.json", [["benign (1)", "benign (2)"]])
    before = groups.read_bytes()
    options = ["--groups", groups] if given == "file" else []
    assert run_split([tiny_busi, "-o", groups, "--overwrite", *options]) == 1
    assert f"{groups}: is the near-duplicate groups file the split reads" in capsys.readouterr().err
    assert groups.read_bytes() == before


LESION_CLASSES = ["benign", "malignant"]


def test_classes_filter_drops_normal_images_from_every_section_after_the_split(tiny_busi, tmp_path):
    """The lesion-only protocol: the same split, minus the normal images, from a folder and from a datalist."""
    split = {"val_fraction": 0.5, "seed": 0}
    sections = {name: datalist_section(tiny_busi, name, **split) for name in ("training", "validation")}
    assert {item["class"] for items in sections.values() for item in items} == {"benign", "malignant", "normal"}
    expected = {name: [item for item in items if item["class"] != "normal"] for name, items in sections.items()}
    for name in sections:
        # after the split: each section keeps exactly its own lesion images, so they are those of the unfiltered run
        assert datalist_section(tiny_busi, name, classes=LESION_CLASSES, **split) == expected[name]
        # off by default and with None: no change
        assert datalist_section(tiny_busi, name, classes=None, **split) == sections[name]
    path = write_datalist(tmp_path / "list.json", sections)
    assert datalist_section(path, "validation", classes=LESION_CLASSES) == expected["validation"]
    assert datalist_section(path, "all", classes=LESION_CLASSES) == expected["training"] + expected["validation"]
    assert [item["case"] for item in datalist_section(tiny_busi, "all", classes="normal")] == [
        "normal (1)",
        "normal (2)",
    ]


def test_classes_filter_refuses_what_it_cannot_filter(tiny_busi, tmp_path, caplog):
    # no item of the classes: an error naming the dataset and the classes it has
    with pytest.raises(DataError, match=r"Dataset_BUSI_with_GT.*no image of the classes \['malignent'\].*'benign'"):
        datalist_section(tiny_busi, "training", classes=["malignent"], val_fraction=0.5)
    # one misspelt class beside a real one: kept, with a warning naming it
    with caplog.at_level("WARNING", logger="lesionseg.data.splits"):
        kept = datalist_section(tiny_busi, "training", classes=["benign", "malignent"], val_fraction=0.5)
    assert {item["class"] for item in kept} == {"benign"}
    assert "malignent" in caplog.text
    # items without a class (an images/ + masks/ folder): an error naming the folder and the image
    pair = tmp_path / "pair"
    for folder in ("images", "masks"):
        (pair / folder).mkdir(parents=True)
        for case in ("a", "b"):
            Image.fromarray(np.full((8, 8), 255 if folder == "masks" else 90, np.uint8)).save(
                pair / folder / f"{case}.png"
            )
    with pytest.raises(DataError, match=r"pair.*keeps images by class, but .*a\.png .*has no class"):
        datalist_section(pair, "all", classes=LESION_CLASSES)
    assert len(datalist_section(pair, "all")) == 2
    for bad in ([], [1], {"benign": 1}):
        with pytest.raises(ValueError, match="classes must be"):
            datalist_section(tiny_busi, "training", classes=bad, val_fraction=0.5)


@pytest.mark.parametrize("bundle", ["dcnet_bundle", "taichinet_bundle"])
def test_bundles_classes_setting_filters_every_section_they_read(bundle, tiny_busi, monkeypatch):
    """`classes` in train.yaml (default null: no change) reaches training, validation, evaluation and TaiChiNet's
    easy/hard preparation."""
    from monai.bundle import ConfigParser

    import lesionseg.workflows.easy_hard

    configs = Path(__file__).resolve().parents[1] / "bundles" / bundle / "configs"

    def parsed(names, ids, **overrides):
        parser = ConfigParser()
        parser.read_config([str(configs / f"{name}.yaml") for name in names])
        parser.update(
            {"bundle_root": str(configs.parent), "dataset_dir": str(tiny_busi), "val_fraction": 0.5, **overrides}
        )
        return {key: parser.get_parsed_content(key) for key in ids}

    cases = lambda items: [item["case"] for item in items]  # noqa: E731
    split = {name: datalist_section(tiny_busi, name, val_fraction=0.5) for name in ("training", "validation")}
    lesion = {name: [item for item in items if item["class"] != "normal"] for name, items in split.items()}
    ids = ["classes", "train#dataset#data", "validate#dataset#data"]
    default = parsed(["train"], ids)
    assert default["classes"] is None
    assert cases(default["train#dataset#data"]) == cases(split["training"])
    filtered = parsed(["train"], ids, classes=LESION_CLASSES)
    assert cases(filtered["train#dataset#data"]) == cases(lesion["training"])
    assert cases(filtered["validate#dataset#data"]) == cases(lesion["validation"])
    evaluation = parsed(["train", "evaluate"], ["eval_items"], classes=LESION_CLASSES, eval_section="all")
    assert cases(evaluation["eval_items"]) == cases(item for item in read_busi(tiny_busi) if item["class"] != "normal")
    if bundle == "taichinet_bundle":
        prepare = parsed(
            ["prepare"], ["classes", "train#dataset#data", "preparation#validation_data"], classes=LESION_CLASSES
        )
        assert cases(prepare["train#dataset#data"]) == cases(lesion["training"])
        assert cases(prepare["preparation#validation_data"]) == cases(lesion["validation"])
        assert parsed(["prepare"], ["classes"])["classes"] is None
        # training hands its setting to the preparation it runs
        handed = {}
        monkeypatch.setattr(
            lesionseg.workflows.easy_hard, "run_preparation", lambda config, **kwargs: handed.update(kwargs)
        )
        parsed(["train"], ["prepare_parts"], classes=LESION_CLASSES)["prepare_parts"]()
        assert handed["classes"] == LESION_CLASSES

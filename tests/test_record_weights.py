"""``lesionseg record-weights`` and ``bundles/hosted_weights.yml``: a run's checkpoint becomes the bundle's weights
with its metrics, MD5 and command, and the zoo export takes the URL from one place and refuses other weights."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import verify_metadata
from test_zoo_export import needs_formatters

from lesionseg.cli import main
from lesionseg.deploy.release import (
    CARD_BEGIN,
    CARD_END,
    RecordedWeightsError,
    check_recorded_weights,
    hosted_weights_url,
    record_weights,
)
from lesionseg.deploy.zoo import export_bundle
from lesionseg.networks.nets import DCNet

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "schemas" / "meta_schema_20240725.json"
FEATURES = [2, 4, 8, 16, 32]
COMMAND = "python benchmarks/busi_accuracy.py --preset paper --models dcnet --dataset-dir ../shared/data/busi"
LESION = {
    "n": 104,
    "dice": {"mean": 0.81234, "std": 0.15, "count": 104},
    "iou": {"mean": 0.7, "std": 0.2, "count": 104},
    "precision": {"mean": 0.83, "std": 0.2, "count": 104},
    "sensitivity": {"mean": 0.8, "std": 0.2, "count": 104},
    "hd95": {"mean": 41.25, "std": 30.0, "count": 104},
}


@pytest.fixture
def bundle(tmp_path) -> Path:
    """DC-Net's bundle definition (configs, docs, licence, no weights) with a tiny network, in ``bundles/``."""
    target = tmp_path / "bundles" / "dcnet_bundle"
    shutil.copytree(ROOT / "bundles" / "dcnet_bundle", target, ignore=shutil.ignore_patterns("models", "eval"))
    inference = target / "configs" / "inference.yaml"
    config = yaml.safe_load(inference.read_text())
    config["network_def"]["features"] = FEATURES
    inference.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


#: the input size of DC-Net's bundle (train.yaml and inference.yaml)
BUNDLE_IMAGE_SIZE = yaml.safe_load((ROOT / "bundles" / "dcnet_bundle" / "configs" / "inference.yaml").read_text())[
    "image_size"
]


def _run(
    folder: Path,
    seed: int = 0,
    command: str | None = COMMAND,
    features: list[int] = FEATURES,
    image_size: list[int] = BUNDLE_IMAGE_SIZE,
) -> Path:
    """One model's folder of a finished busi_accuracy run: a checkpoint of a tiny DC-Net, the training state
    with the settings it was trained with, and its record."""
    torch.manual_seed(seed)
    (folder / "models").mkdir(parents=True)
    weights = DCNet(in_channels=1, out_channels=1, features=features).state_dict()
    torch.save(weights, folder / "models" / "model.pt")
    state = {"format": 1, "settings": {"image_size": list(image_size), "batch_size": 4}, "model": weights}
    torch.save(state, folder / "models" / "training_state.pt")
    record = {"model": "dcnet", "preset": "paper", "precision": "bf16", "wall_seconds": 9000.0}
    record["summary"] = {"lesion": LESION}
    if command is not None:
        record["command"] = command
    (folder / "record.json").write_text(json.dumps(record))
    return folder


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _state(bundle: Path) -> dict[str, bytes]:
    return {str(p.relative_to(bundle)): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}


def test_the_run_becomes_the_bundles_weights_with_its_metrics_md5_and_command(bundle, tmp_path):
    run = _run(tmp_path / "run" / "dcnet")
    metrics = record_weights(bundle, run)

    md5 = _md5(run / "models" / "model.pt")
    assert (bundle / "models" / "model.pt").read_bytes() == (run / "models" / "model.pt").read_bytes()
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["eval_metrics"] == metrics
    assert metrics == {
        "busi_lesion_dice": 0.8123,
        "busi_lesion_iou": 0.7,
        "busi_lesion_precision": 0.83,
        "busi_lesion_sensitivity": 0.8,
        "busi_lesion_hd95": 41.25,
        "busi_lesion_dice_std": 0.15,
        "busi_lesion_images": 104,
        "busi_protocol": "paper",
        "precision": "bf16",
        "model_md5": md5,
        "command": COMMAND,
    }
    card = (bundle / "docs" / "README.md").read_text()
    block = card[card.index(CARD_BEGIN) : card.index(CARD_END)]
    assert f"MD5 `{md5}`" in block and "paper protocol" in block
    assert f"trained at the bundle's `image_size` ({BUNDLE_IMAGE_SIZE[0]}×{BUNDLE_IMAGE_SIZE[1]})" in block
    assert "| 104 | 0.812 ± 0.150 | 0.700 | 0.830 | 0.800 | 41.2 | bf16 | 2.5 h |" in block
    assert f"`{COMMAND}`" in block and "No trained checkpoint is recorded yet" not in card
    if SCHEMA.is_file():  # the zoo's schema (eval_metrics: an object) still holds
        verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))

    before = _state(bundle)
    assert record_weights(bundle, run) == metrics  # again: the same files, one block
    assert _state(bundle) == before and card.count(CARD_BEGIN) == 1


def test_the_cards_table_rounds_the_runs_own_values_as_its_results_do_not_the_metadatas_rounded_ones(
    bundle, tmp_path
):
    run = _run(tmp_path / "run" / "dcnet")
    record = json.loads((run / "record.json").read_text())
    lesion = record["summary"]["lesion"]
    lesion["dice"]["mean"], lesion["precision"]["mean"] = 0.7615254, 0.8134990  # 4 places: 0.7615, 0.8135
    (run / "record.json").write_text(json.dumps(record))
    metrics = record_weights(bundle, run)
    assert (metrics["busi_lesion_dice"], metrics["busi_lesion_precision"]) == (0.7615, 0.8135)
    card = (bundle / "docs" / "README.md").read_text()
    assert "| 104 | 0.762 ± 0.150 | 0.700 | 0.813 | 0.800 | 41.2 | bf16 | 2.5 h |" in card  # not 0.761, 0.814


def test_the_recorded_command_names_paths_beside_the_checkout_relative_to_it(bundle, tmp_path):
    import doctest

    from lesionseg.deploy import release

    assert doctest.testmod(release, raise_on_error=False).failed == 0
    run = _run(tmp_path / "runs" / "one" / "dcnet")  # beside the checkout (tmp_path/bundles/..): ../runs/one
    record = json.loads((run / "record.json").read_text())
    record["command"] = (
        f"python benchmarks/busi_accuracy.py --output {tmp_path}/runs/one --dataset-dir "
        f"'{tmp_path.parent}/shared data/busi' --compare-to={tmp_path}/runs/first"
    )
    (run / "record.json").write_text(json.dumps(record))
    # the checkout is bundle.parent.parent (tmp_path): its parent's other folders are ../<name>
    expected = (
        "python benchmarks/busi_accuracy.py --output runs/one --dataset-dir '../shared data/busi' "
        "--compare-to=runs/first"
    )
    assert record_weights(bundle, run)["command"] == expected
    assert f"Made by `{expected}`." in (bundle / "docs" / "README.md").read_text()
    # given by hand, with an open quote and shell syntax: only the path changes
    by_hand = f"python benchmarks/busi_accuracy.py --output {tmp_path}/runs/one 2>&1 | tee log  # the second run's"
    (run / "record.json").write_text(json.dumps(dict(record, command=by_hand)))
    expected = "python benchmarks/busi_accuracy.py --output runs/one 2>&1 | tee log  # the second run's"
    assert record_weights(bundle, run)["command"] == expected
    # a bundle outside <checkout>/bundles/: nothing says where the checkout is, the command is kept
    elsewhere = tmp_path / "elsewhere" / "dcnet_bundle"
    shutil.copytree(bundle, elsewhere)
    assert record_weights(elsewhere, run)["command"] == by_hand


def test_a_record_without_a_wall_time_says_so_instead_of_zero_hours(bundle, tmp_path):
    run = _run(tmp_path / "run" / "dcnet")
    record = json.loads((run / "record.json").read_text())
    del record["wall_seconds"]
    (run / "record.json").write_text(json.dumps(record))
    record_weights(bundle, run)
    card = (bundle / "docs" / "README.md").read_text()
    assert "| bf16 | not recorded |" in card and "0.0 h" not in card


def test_a_checkpoint_of_another_network_is_refused_and_nothing_written(bundle, tmp_path):
    run = _run(tmp_path / "run" / "dcnet", features=[4, 8, 16, 32, 64])
    before = _state(bundle)
    with pytest.raises(RecordedWeightsError, match=r"run/dcnet/models/model.pt: not a checkpoint of .*network_def"):
        record_weights(bundle, run)
    assert _state(bundle) == before
    (run / "models" / "model.pt").write_bytes((run / "models" / "model.pt").read_bytes()[:1000])  # cut short
    with pytest.raises(RecordedWeightsError, match=r"run/dcnet/models/model.pt: "):
        record_weights(bundle, run)
    assert _state(bundle) == before


def test_a_run_trained_at_another_size_than_the_bundle_runs_is_refused_and_nothing_written(bundle, tmp_path):
    # a fully convolutional network loads at any size: only the training state says which size it saw
    other = [size + 32 for size in BUNDLE_IMAGE_SIZE]
    run = _run(tmp_path / "run" / "dcnet", image_size=other)
    before = _state(bundle)
    with pytest.raises(RecordedWeightsError, match=r"configs/train.yaml: image_size \[.*\], but .* trained at \["):
        record_weights(bundle, run)
    assert _state(bundle) == before
    for name in ("train.yaml", "inference.yaml"):  # one config at the run's size is not enough: both are checked
        config = bundle / "configs" / name
        config.write_text(yaml.safe_dump(dict(yaml.safe_load(config.read_text()), image_size=other), sort_keys=False))
        if name == "train.yaml":
            with pytest.raises(RecordedWeightsError, match=r"configs/inference.yaml: image_size"):
                record_weights(bundle, run)
    assert record_weights(bundle, run)["model_md5"] == _md5(run / "models" / "model.pt")
    (run / "models" / "training_state.pt").unlink()  # deleted once the run was final: the record says the size
    with pytest.raises(RecordedWeightsError, match=r"dcnet/record.json: does not say the input size the run was"):
        record_weights(bundle, run)
    record = json.loads((run / "record.json").read_text())
    (run / "record.json").write_text(json.dumps(dict(record, image_size=BUNDLE_IMAGE_SIZE)))
    with pytest.raises(RecordedWeightsError, match=r"configs/train.yaml: image_size .*\(.*dcnet/record.json\)"):
        record_weights(bundle, run)  # the configs are at the other size now
    (run / "record.json").write_text(json.dumps(dict(record, image_size=other)))
    assert record_weights(bundle, run)["model_md5"] == _md5(run / "models" / "model.pt")
    torch.save({"format": 1, "settings": {"batch_size": 4}}, run / "models" / "training_state.pt")  # no size
    assert record_weights(bundle, run)["model_md5"] == _md5(run / "models" / "model.pt")  # the record's


def test_a_run_with_other_network_options_or_a_checkpoint_trained_since_is_refused(bundle, tmp_path):
    """Options without parameters load under any value, and a checkpoint trained on after its evaluation is not
    the one its record scored: neither may carry the record's metrics into the card."""
    run = _run(tmp_path / "run" / "dcnet")
    record = json.loads((run / "record.json").read_text())
    before = _state(bundle)
    state_path = run / "models" / "training_state.pt"
    state = torch.load(state_path, weights_only=True)
    state["settings"]["network_def#attention_scale"] = 1.0  # the run's own record of how it trained
    torch.save(state, state_path)
    with pytest.raises(RecordedWeightsError, match=r"network_def#attention_scale: trained with 1.0, now 0.2"):
        record_weights(bundle, run)
    state_path.unlink()  # deleted once the run was final: its record says the size, its overrides the option
    record["image_size"] = BUNDLE_IMAGE_SIZE
    (run / "record.json").write_text(json.dumps(dict(record, overrides={"network_def#attention_scale": 1.0})))
    with pytest.raises(RecordedWeightsError, match=r"inference.yaml: network_def#attention_scale is 0.2, but the run"):
        record_weights(bundle, run)
    assert _state(bundle) == before
    md5 = _md5(run / "models" / "model.pt")
    # dropout changes training only, and pooling given as its default changes nothing
    same = {"network_def#dropout": 0.1, "network_def#pooling": "dcp", "aug_prob": 0.5}
    (run / "record.json").write_text(json.dumps(dict(record, overrides=same, checkpoint_md5="0" * 32)))
    with pytest.raises(
        RecordedWeightsError, match=rf"not the checkpoint .*record.json scored \(MD5 0{{32}} then, {md5}"
    ):
        record_weights(bundle, run)
    assert _state(bundle) == before
    (run / "record.json").write_text(json.dumps(dict(record, overrides=same, checkpoint_md5=md5)))
    assert record_weights(bundle, run)["model_md5"] == md5


def test_another_runs_training_state_in_the_bundle_is_refused(bundle, tmp_path):
    """Beside recorded weights, a stale training state would make evaluation and inference check them against
    another run, and training resume from it."""
    run = _run(tmp_path / "run" / "dcnet")
    (bundle / "models").mkdir()
    (bundle / "models" / "training_state.pt").write_bytes(b"an earlier run's state")
    before = _state(bundle)
    with pytest.raises(RecordedWeightsError, match=r"models/training_state.pt: the training state of another run"):
        record_weights(bundle, run)
    assert _state(bundle) == before


def test_each_bundle_runs_its_network_at_one_size_in_training_and_inference():
    for bundle in ("dcnet_bundle", "taichinet_bundle"):
        sizes = {
            name: yaml.safe_load((ROOT / "bundles" / bundle / "configs" / name).read_text())["image_size"]
            for name in ("train.yaml", "inference.yaml")
        }
        assert sizes["train.yaml"] == sizes["inference.yaml"], (bundle, sizes)


def test_other_weights_in_the_bundle_are_kept_unless_replace(bundle, tmp_path):
    first, second = _run(tmp_path / "a" / "dcnet", seed=0), _run(tmp_path / "b" / "dcnet", seed=1)
    record_weights(bundle, first)
    before = _state(bundle)
    with pytest.raises(RecordedWeightsError, match=r"dcnet_bundle/models/model.pt: holds other weights"):
        record_weights(bundle, second)
    assert _state(bundle) == before
    record_weights(bundle, second, replace=True)
    assert _md5(bundle / "models" / "model.pt") == _md5(second / "models" / "model.pt")


def test_a_run_without_a_command_or_a_record_gets_a_clear_error(bundle, tmp_path, capsys):
    run = _run(tmp_path / "run" / "dcnet", command=None)
    with pytest.raises(RecordedWeightsError, match=r"run/dcnet/record.json: no command recorded"):
        record_weights(bundle, run)
    record = json.loads((run / "record.json").read_text())
    record["summary"]["lesion"]["hd95"]["mean"] = float("nan")  # json writes NaN
    (tmp_path / "nan").mkdir()
    shutil.copytree(run / "models", tmp_path / "nan" / "models")
    (tmp_path / "nan" / "record.json").write_text(json.dumps(record))
    with pytest.raises(RecordedWeightsError, match=r"nan/record.json: no summary.lesion mean of hd95"):
        record_weights(bundle, tmp_path / "nan", command=COMMAND)
    code = main(["record-weights", "--bundle", str(bundle), "--run", str(run), "--command", COMMAND])
    assert code == 0 and "lesion Dice 0.8123 over 104 images (bf16)" in capsys.readouterr().out
    (run / "record.json").write_text('{"summary": {"lesion": ')  # cut short, as by a full disk
    assert main(["record-weights", "--bundle", str(bundle), "--run", str(run)]) == 1
    assert "run/dcnet/record.json: not JSON" in capsys.readouterr().err
    (run / "record.json").unlink()
    assert main(["record-weights", "--bundle", str(bundle), "--run", str(run)]) == 1
    assert "run/dcnet/record.json: missing" in capsys.readouterr().err


def test_the_export_refuses_weights_other_than_the_recorded_ones(bundle, tmp_path):
    run = _run(tmp_path / "run" / "dcnet")
    record_weights(bundle, run)
    check_recorded_weights(bundle, bundle / "models" / "model.pt")  # the recorded checkpoint passes
    torch.manual_seed(5)
    torch.save(DCNet(in_channels=1, out_channels=1, features=FEATURES).state_dict(), bundle / "models" / "model.pt")
    (bundle / "docs" / "data_license.txt").write_text("BUSI: CC BY 4.0\n")
    with pytest.raises(RecordedWeightsError, match=r"models/model.pt: MD5 [0-9a-f]{32}, but .*metadata.json records"):
        export_bundle(bundle, tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


def test_hosted_weights_yml_is_the_one_place_for_the_url(bundle, tmp_path):
    hosted = bundle.parent / "hosted_weights.yml"
    assert hosted_weights_url(bundle) is None  # no file
    shutil.copy(ROOT / "bundles" / "hosted_weights.yml", hosted)
    assert hosted_weights_url(bundle) is None  # the repository's: not hosted yet
    hosted.write_text("dcnet_bundle: http://example.org/model.pt\n")
    with pytest.raises(RecordedWeightsError, match=r"hosted_weights.yml: dcnet_bundle: expected an https:// URL"):
        hosted_weights_url(bundle)
    hosted.write_text("- a list\n")
    with pytest.raises(RecordedWeightsError, match=r"hosted_weights.yml: expected bundle folder name: URL lines"):
        hosted_weights_url(bundle)


@needs_formatters
def test_the_export_writes_the_hosted_url_and_the_md5_into_large_files(bundle, tmp_path):
    run = _run(tmp_path / "run" / "dcnet")
    record_weights(bundle, run)
    url = "https://example.org/breast_ultrasound_dcnet_segmentation/model.pt"
    (bundle.parent / "hosted_weights.yml").write_text(f"dcnet_bundle: {url}\ntaichinet_bundle: null\n")
    (bundle / "docs" / "data_license.txt").write_text("BUSI: CC BY 4.0\n")
    destination = export_bundle(bundle, tmp_path / "zoo")
    entry = yaml.safe_load((destination / "large_files.yml").read_text())["large_files"]
    assert entry == [
        {"path": "models/model.pt", "url": url, "hash_val": _md5(run / "models" / "model.pt"), "hash_type": "md5"}
    ]
    exported = json.loads((destination / "configs" / "metadata.json").read_text())
    assert exported["eval_metrics"]["model_md5"] == entry[0]["hash_val"]
    assert f"`{COMMAND}`" in (destination / "docs" / "README.md").read_text()

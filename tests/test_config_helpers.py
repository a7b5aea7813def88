"""The lesionseg helpers the bundle configs call in place of inline logic: the handlers of a distributed rank,
SyncBatchNorm where it runs, the evaluate workflows' source labels, the inference datalist and TaiChiNet's
preparation run from its training."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from ignite.handlers import ProgressBar
from monai.bundle import ConfigParser
from monai.handlers import StatsHandler, ValidationHandler

import lesionseg.workflows.easy_hard
from lesionseg.data.readers import inference_datalist, read_images
from lesionseg.engines import EasyToHardHandler, TrainingCheckpoint, handlers_for_rank, sync_batch_norm
from lesionseg.engines.evaluation import with_source_labels
from lesionseg.workflows.easy_hard import prepare_for_training

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


@pytest.fixture
def training_handlers(tmp_path):
    """One handler of each kind a bundle's training attaches, in the bundles' order."""
    network = torch.nn.Linear(1, 1)
    return [
        EasyToHardHandler(step2_start_epoch=2),
        ValidationHandler(interval=1),
        TrainingCheckpoint(tmp_path / "state.pt", {"model": network}),
        StatsHandler(),
        ProgressBar(persist=True),
    ]


def test_rank_zero_attaches_every_handler(training_handlers):
    assert handlers_for_rank(training_handlers, rank=0) == training_handlers


def test_other_ranks_attach_the_per_rank_handlers_only_in_their_order(training_handlers):
    assert handlers_for_rank(training_handlers, rank=1) == training_handlers[:4]
    assert handlers_for_rank(training_handlers, every_rank=[StatsHandler], rank=3) == [training_handlers[3]]


def test_outside_a_distributed_run_is_rank_zero(training_handlers):
    assert not torch.distributed.is_initialized()
    assert handlers_for_rank(training_handlers) == training_handlers


def test_the_rank_comes_from_the_process_group(training_handlers, single_process_group, monkeypatch):
    torch.distributed.init_process_group(backend="gloo")
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 1)
    assert handlers_for_rank(training_handlers) == training_handlers[:4]


def test_sync_batch_norm_on_cuda_only(monkeypatch):
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sync_batch_norm(network) is network
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    converted = sync_batch_norm(network)
    assert isinstance(converted[1], torch.nn.SyncBatchNorm) and isinstance(converted[0], torch.nn.Conv2d)


def test_source_labels_are_copies_of_the_label_paths():
    items = [{"image": "a.png", "label": "a_mask.png", "class": "benign"}, {"image": "b.png", "label": "b_mask.png"}]
    originals = [dict(item) for item in items]
    copies = with_source_labels(items)
    assert copies == [{**item, "source_label": item["label"]} for item in originals]
    assert items == originals


def test_source_labels_name_the_item_without_a_label():
    with pytest.raises(KeyError, match=r"item 1 \(b.png\) has no 'label'"):
        with_source_labels([{"image": "a.png", "label": "a_mask.png"}, {"image": "b.png"}])


def test_inference_datalist_holds_every_image_and_nothing_else(tiny_busi):
    items = inference_datalist(tiny_busi)
    assert items == [{"image": item["image"]} for item in read_images(tiny_busi)]
    assert len(items) == len([p for p in tiny_busi.rglob("*.png") if "_mask" not in p.name])


def test_preparation_gets_the_shared_settings_with_the_users_overrides_winning(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(
        lesionseg.workflows.easy_hard, "run_preparation", lambda config, **ids: calls.append((config, ids)) or "list"
    )
    shared = {"dataset_dir": "data", "prepare_dir": "parts", "num_workers": 2}
    assert prepare_for_training("prepare.yaml", shared, {"num_workers": 0, "force": True}) == "list"
    assert calls == [("prepare.yaml", {"dataset_dir": "data", "prepare_dir": "parts", "num_workers": 0, "force": True})]
    assert prepare_for_training("prepare.yaml", shared) == "list" and calls[-1][1] == shared


def test_taichinet_training_prepares_with_its_own_settings(tmp_path):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "taichinet_bundle" / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": "data", "prepare_overrides": {"max_epochs": 3}})
    prepare = parser.get_parsed_content("prepare_parts")
    assert isinstance(prepare, functools.partial) and prepare.func is prepare_for_training
    assert prepare.keywords["config_file"] == str(tmp_path / "configs" / "prepare.yaml")
    assert prepare.keywords["overrides"] == {"max_epochs": 3}
    shared = prepare.keywords["shared"]
    assert shared["dataset_dir"] == "data" and shared["prepare_dir"] == str(tmp_path / "easy_hard")
    shared_ids = "bundle_root dataset_dir prepare_dir val_fraction split_seed classes num_workers precision"
    assert set(shared) == set(shared_ids.split())

"""Determinism on the CPU: the same seed gives bit-identical weights after a few training steps through each
bundle's training workflow, augmentation and (for TaiChiNet) the easy/hard preparation included; another
seed gives other weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle_testing import make_workflow, run_zoo_pattern

from lesionseg.data.phantoms import write_phantom_dataset

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
TINY = {"image_size": [32, 32], "network_def#features": [2, 4, 8, 16, 32], "num_workers": 0, "batch_size": 2}
EXTRA = {
    # augmentation on, so that its random state is part of what must repeat
    "dcnet_bundle": {"flip_prob": 0.5, "aug_prob": 0.5},
    "taichinet_bundle": {
        "step2_start_epoch": 2,
        "prepare_overrides": {"image_size": [32, 32], "network_def#features": [4, 4, 8, 8, 16, 4],
                              "num_workers": 0, "batch_size": 4, "max_epochs": 1},
    },
}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("determinism") / "data", num_images=10, seed=4,
                                 size=(40, 48), progress=False)


def _train(bundle: str, data: Path, root: Path, seed: int) -> dict[str, torch.Tensor]:
    workflow = make_workflow(
        BUNDLES / bundle,
        ["train"],
        "train",
        **TINY,
        **EXTRA[bundle],
        max_epochs=2,
        seed=seed,
        dataset_dir=str(data),
        ckpt_dir=str(root / "models"),
        output_dir=str(root / "train"),
        prepare_dir=str(root / "easy_hard"),
    )
    run_zoo_pattern(workflow)
    assert workflow.trainer.state.iteration == 8  # 8 training images, batch 2, two epochs
    return {key: value.detach().clone() for key, value in workflow.network_def.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["dcnet_bundle", "taichinet_bundle"])
def test_same_seed_same_weights_after_training(bundle, phantoms, tmp_path):
    first = _train(bundle, phantoms, tmp_path / "first", seed=0)
    again = _train(bundle, phantoms, tmp_path / "again", seed=0)
    other = _train(bundle, phantoms, tmp_path / "other", seed=1)
    assert first.keys() == again.keys()
    different = [key for key in first if not torch.equal(first[key], again[key])]
    assert not different, f"the same seed gave different {different[:5]}"
    assert any(not torch.equal(first[key], other[key]) for key in first), "the seed changes nothing"
    if bundle == "taichinet_bundle":  # the preparation repeated too: the same easy/hard parts
        for part in ("easy", "hard"):
            names = sorted(p.name for p in (tmp_path / "first" / "easy_hard" / part).glob("*.png"))
            assert names and all(
                (tmp_path / "first" / "easy_hard" / part / n).read_bytes()
                == (tmp_path / "again" / "easy_hard" / part / n).read_bytes()
                for n in names
            )

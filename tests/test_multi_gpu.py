"""``configs/multi_gpu_train.yaml`` of both bundles, for real: ``torchrun --nproc_per_node=2`` with the gloo
backend on the CPU, tiny phantoms and widths, two epochs. It finishes, each process trains on its half of the
data (DistributedSampler), only rank 0 writes the one checkpoint and the TensorBoard log, and the loss falls."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lesionseg.data.phantoms import write_phantom_dataset

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"dcnet": ROOT / "bundles" / "dcnet_bundle", "taichinet": ROOT / "bundles" / "taichinet_bundle"}
NUM_IMAGES = 10  # 8 training images, 2 validation images (the 80/20 split)
BATCH = 2
TINY = {
    "dcnet": {"image_size": [32, 32], "network_def#features": [4, 8, 16, 32, 64], "learning_rate": 0.003},
    "taichinet": {"image_size": [32, 32], "network_def#features": [2, 4, 8, 16, 32], "learning_rate": 0.003},
}
TINY_PREPARATION = {
    "image_size": [32, 32],
    "network_def#features": [4, 4, 8, 8, 16, 4],
    "batch_size": 4,
    "max_epochs": 1,
    "num_workers": 0,
}


def _arguments(overrides: dict) -> list[str]:
    arguments = []
    for key, value in overrides.items():
        arguments += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return arguments


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    environment.pop("CUDA_VISIBLE_DEVICES", None)
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_torchrun_two_processes_with_gloo(name, tmp_path):
    data = write_phantom_dataset(tmp_path / "data", num_images=NUM_IMAGES, seed=5, size=(48, 64), progress=False)
    bundle = BUNDLES[name]
    overrides = {
        **TINY[name],
        "dataset_dir": str(data),
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "logs"),
        "batch_size": BATCH,
        "num_workers": 0,
        "max_epochs": 2,
    }
    if name == "taichinet":
        # the easy/hard parts first, in one process (multi_gpu_train.yaml requires them)
        overrides["prepare_dir"] = str(tmp_path / "easy_hard")
        prepare = {**TINY_PREPARATION, **{k: overrides[k] for k in ("dataset_dir", "prepare_dir")}}
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/prepare.yaml"]
        _run([*command, *_arguments(prepare)], bundle)

    configs = "['configs/train.yaml','configs/multi_gpu_train.yaml']"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "monai.bundle", "run", "--config_file", configs, *_arguments(overrides)]
    result = _run(command, bundle)
    log = result.stdout + result.stderr

    # one best model and one resumable state, written once (rank 0), the best model a plain state dict of the
    # network itself (no DistributedDataParallel "module." prefix)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.pt", "training_state.pt"]
    state_dict = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert state_dict and not any(key.startswith("module.") for key in state_dict), list(state_dict)[:3]
    # each process iterates over half of the 8 training images: 4 per rank, 2 batches per epoch
    iterations = {int(m) for m in re.findall(r"Iter: \d+/(\d+)", log)}
    assert iterations == {NUM_IMAGES * 8 // 10 // 2 // BATCH}, f"iterations per epoch {iterations}\n{log[-3000:]}"
    assert "Epoch[2] Complete" in log or "Epoch: 2/2" in log, log[-3000:]

    # one process alone (rank 0) writes TensorBoard (the file name ends in its pid and a counter): one event
    # file of the training handler, one of the validation handler; the training loss falls from epoch 1 to 2
    events = sorted((tmp_path / "logs").glob("events.out.tfevents.*"))
    assert len(events) == 2 and len({e.name.split(".")[-2] for e in events}) == 1, events
    scalars = {}
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        scalars.update({tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]})
    assert {"train_loss", "val_mean_dice"} <= set(scalars), scalars.keys()
    assert len(scalars["val_mean_dice"]) == 2  # one validation per epoch
    losses = [event.value for event in scalars["train_loss"]]
    per_epoch = len(losses) // 2
    assert len(losses) == 2 * per_epoch == 4, losses
    first, second = sum(losses[:per_epoch]) / per_epoch, sum(losses[per_epoch:]) / per_epoch
    assert second < first, f"the loss did not fall: {losses}"

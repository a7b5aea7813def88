"""Constants and helpers of the MONAI Label tests (``conftest.py`` holds the fixtures)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUNDLES = ("dcnet_bundle", "taichinet_bundle")
SOURCE_SHAPE = (72, 88)  # (H, W) of the datastore images
LABELLED = 4

TINY = {"image_size": [32, 32], "features": [2, 4, 8, 16, 32]}
#: what a run writes beside a bundle and a served copy must not carry
RUN_OUTPUTS = ("models/training_state.pt", "models/model.ts", "models/model.onnx", "eval/case_mask.png")


def tiny_config(path: Path, extra: dict | None = None) -> None:
    """Rewrite a bundle config with the tiny settings (and ``extra`` top-level ids)."""
    import yaml

    config = yaml.safe_load(path.read_text())
    config["image_size"] = TINY["image_size"]
    config["network_def"]["features"] = TINY["features"]
    if "precision" in config:
        # fp32, not DC-Net's auto (bf16 on AMX CPUs): the tests compare MONAI Label's masks with the bundle's
        # own run pixel for pixel, and bf16 sums in another order with another thread count, which flips
        # pixels at the threshold of a random tiny network; precision has its own tests (tests/test_precision.py)
        config["precision"] = "fp32"
    config.update(extra or {})
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def copy_bundle(name: str, model_dir: Path) -> Path:
    """Copy ``bundles/<name>`` (configs, docs, licence) into ``model_dir``, make it tiny, save a model and
    leave the files of ``RUN_OUTPUTS`` beside it (as a trained bundle folder has them).

    Only the size settings change: ``resume`` and TaiChiNet's ``easy_to_hard`` keep the bundles' defaults
    (``true``), which the app overrides for MONAI Label's training."""
    import torch
    from monai.bundle import ConfigParser

    target = model_dir / name
    ignore = shutil.ignore_patterns("models", "eval", "easy_hard", "logs")
    shutil.copytree(REPO / "bundles" / name, target, ignore=ignore)
    tiny_config(target / "configs" / "inference.yaml")
    tiny_config(target / "configs" / "train.yaml", {"num_workers": 0, "batch_size": 2})
    parser = ConfigParser()
    parser.read_config(str(target / "configs" / "inference.yaml"))
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    (target / "models").mkdir()
    torch.save(network.state_dict(), target / "models" / "model.pt")
    for output in RUN_OUTPUTS:
        (target / output).parent.mkdir(exist_ok=True)
        (target / output).write_bytes(b"written by a run")
    return target


def server_env(tmp_path: Path) -> dict:
    """Environment for a ``monailabel start_server`` subprocess: offline, nothing automatic."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONAI_LABEL_")}
    env.update(
        {
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
            "MONAI_LABEL_TRACKING_ENABLED": "false",
            "MONAI_LABEL_SESSION_PATH": str(tmp_path / "sessions"),
            "OMP_NUM_THREADS": "1",
            # the monailabel script runs `python` from PATH unless told which
            "MONAILABEL_PYEXE": sys.executable,
        }
    )
    return env

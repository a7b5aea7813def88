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
# what MONAI Label's app needs to stay offline: bundles from model/, no SAM 2 (its weights are downloaded)
OFFLINE_CONF = {"zoo_source": "github", "sam2": "false", "preload": "false"}


def tiny_config(path: Path, extra: dict | None = None) -> None:
    """Rewrite a bundle config with the tiny settings (and ``extra`` top-level ids)."""
    import yaml

    config = yaml.safe_load(path.read_text())
    config["image_size"] = TINY["image_size"]
    config["network_def"]["features"] = TINY["features"]
    config.update(extra or {})
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def copy_bundle(name: str, model_dir: Path) -> Path:
    """Copy ``bundles/<name>`` (configs, docs, licence) into ``model_dir``, make it tiny and save a model."""
    import torch
    from monai.bundle import ConfigParser

    target = model_dir / name
    ignore = shutil.ignore_patterns("models", "eval", "easy_hard", "logs")
    shutil.copytree(REPO / "bundles" / name, target, ignore=ignore)
    tiny_config(target / "configs" / "inference.yaml")
    # MONAI Label fine-tunes from models/model.pt on every training: no resuming of an earlier run's state
    train_extra = {"num_workers": 0, "batch_size": 2, "resume": False}
    if name == "taichinet_bundle":
        # MONAI Label passes its own datalist and cannot pass the dataset folder the preparation mines
        train_extra["easy_to_hard"] = False
    tiny_config(target / "configs" / "train.yaml", train_extra)
    parser = ConfigParser()
    parser.read_config(str(target / "configs" / "inference.yaml"))
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    (target / "models").mkdir()
    torch.save(network.state_dict(), target / "models" / "model.pt")
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
            "MONAI_ZOO_SOURCE": "github",
            "OMP_NUM_THREADS": "1",
            # the monailabel script runs `python` from PATH unless told which
            "MONAILABEL_PYEXE": sys.executable,
        }
    )
    return env

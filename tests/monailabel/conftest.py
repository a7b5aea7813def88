"""Fixtures for the MONAI Label tests: MONAI Label's stock ``monaibundle`` app serving both bundles.

These tests run in the MONAI Label virtual environment (``.ci/monailabel-tests.sh`` builds it); where
``monailabel`` is not importable (the main environment) this folder is not collected.

- ``studies`` (session): a MONAI Label datastore folder of 6 phantom images (72 x 88, H x W, so that a
  transposed mask would have the wrong size), the first 4 with labels in ``labels/final/``.
- ``app_dir`` (session): the stock ``monaibundle`` app, copied by ``monailabel apps --download`` from the
  installed package (no network), with both bundles in its ``model/`` folder. The copies are the bundles as
  they are, with tiny settings written into their configs (image size 32, network widths 2..32, no worker
  processes; TaiChiNet trains without the easy/hard preparation, see the README) and ``models/model.pt``
  saved from the network's random initialisation.
- ``client`` (session): a FastAPI ``TestClient`` of MONAI Label's server app (``monailabel.app.app``), started
  as MONAI Label's own endpoint tests start it, offline: bundles from the local ``model/`` folder
  (``zoo_source`` other than ``monaihosting``), no SAM, no automatic scoring.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# this folder itself, on sys.path through tests/, is a namespace package named monailabel: look for the real,
# regular package
_spec = importlib.util.find_spec("monailabel")
if _spec is None or _spec.origin in (None, "namespace"):
    collect_ignore_glob = ["test_*.py"]
else:
    from monailabel_testing import BUNDLES, LABELLED, OFFLINE_CONF, SOURCE_SHAPE, copy_bundle

@pytest.fixture(scope="session")
def studies(tmp_path_factory) -> Path:
    """The datastore: ``<id>.png`` images, labels of the first ``LABELLED`` in ``labels/final/<id>.png``."""
    import numpy as np
    from PIL import Image

    from lesionseg.data.io import read_mask
    from lesionseg.data.phantoms import write_phantom_dataset
    from lesionseg.data.readers import read_dataset

    root = tmp_path_factory.mktemp("monailabel_data")
    phantoms = write_phantom_dataset(
        root / "phantoms", num_images=6, seed=3, size=SOURCE_SHAPE, normal_fraction=0.0, progress=False
    )
    folder = root / "studies"
    (folder / "labels" / "final").mkdir(parents=True)
    for index, item in enumerate(read_dataset(phantoms)):
        image_id = f"case_{index}"
        shutil.copy(item["image"], folder / f"{image_id}.png")
        if index < LABELLED:  # one mask file per image: BUSI's extra _mask_1 files merged
            mask = read_mask(item["label"] if isinstance(item["label"], list) else [item["label"]])
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "labels" / "final" / f"{image_id}.png")
    return folder


@pytest.fixture(scope="session")
def app_dir(tmp_path_factory) -> Path:
    """The stock monaibundle app with both (tiny) bundles in ``model/``."""
    apps = tmp_path_factory.mktemp("apps")
    monailabel = Path(sys.executable).parent / "monailabel"
    subprocess.run(
        [str(monailabel), "apps", "--download", "--name", "monaibundle", "--output", str(apps)],
        check=True,
        timeout=120,
        capture_output=True,
        # the monailabel script runs `python` from PATH unless told which
        env={**os.environ, "MONAILABEL_PYEXE": sys.executable},
    )
    app = apps / "monaibundle"
    assert (app / "main.py").is_file(), f"monailabel apps --download wrote no {app / 'main.py'}"
    for name in BUNDLES:
        copy_bundle(name, app / "model")
    return app


@pytest.fixture(scope="session")
def client(app_dir, studies, tmp_path_factory):
    """MONAI Label's FastAPI server app, in-process, serving both bundles (inference, training, scoring)."""
    from fastapi.testclient import TestClient
    from monailabel.config import settings

    conf = {
        **OFFLINE_CONF,
        "models": ",".join(BUNDLES),
        "epistemic_model": ",".join(BUNDLES),
        "epistemic_simulation_size": "3",
        "epistemic_dropout": "0.2",
    }
    settings.MONAI_LABEL_APP_DIR = str(app_dir)
    settings.MONAI_LABEL_STUDIES = str(studies)
    settings.MONAI_LABEL_APP_CONF = conf
    settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False
    settings.MONAI_LABEL_AUTO_UPDATE_SCORING = False
    settings.MONAI_LABEL_TRACKING_ENABLED = False
    settings.MONAI_LABEL_SESSION_PATH = str(tmp_path_factory.mktemp("sessions"))
    (app_dir / "logs").mkdir(exist_ok=True)
    (app_dir / "logs" / "app.log").touch()

    from monailabel.app import app
    from monailabel.interfaces.utils.app import clear_cache

    clear_cache()
    with TestClient(app) as test_client:
        yield test_client
    clear_cache()

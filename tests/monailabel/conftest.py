"""Fixtures for the MONAI Label tests: MONAI Label's stock ``monaibundle`` app serving both bundles.

These tests run in the MONAI Label virtual environment (``.ci/monailabel-tests.sh`` builds it); where
``monailabel`` is not importable (the main environment) this folder is not collected.

- ``studies`` (session): a MONAI Label datastore folder of 6 phantom images (72 x 88, H x W, so that a
  transposed mask would have the wrong size), the first 4 with labels in ``labels/final/``.
- ``bundle_source`` (session): a folder of both bundles as a user has them (``--conf bundles``): the bundles as
  they are, with tiny settings written into their configs (image size 32, network widths 2..32, no worker
  processes), ``models/model.pt`` saved from the network's random initialisation and what runs write beside a
  bundle (training state, exports, ``eval/``), which the app must not carry.
- ``app_dir`` (session): the repository's app, ``monailabel/lesionseg_app`` (with ``monailabel/start.sh``),
  copied to a temporary folder so that MONAI Label's ``logs/`` and the served copies stay out of the checkout.
- ``client`` (session): a FastAPI ``TestClient`` of MONAI Label's server app (``monailabel.app.app``), started
  as MONAI Label's own endpoint tests start it, with the app's defaults (no ``epistemic_model`` or other
  settings) besides the bundle folders and a small scoring; no automatic scoring.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

# this folder itself, on sys.path through tests/, is a namespace package named monailabel: look for the real,
# regular package
_spec = importlib.util.find_spec("monailabel")
if _spec is None or _spec.origin in (None, "namespace"):
    collect_ignore_glob = ["test_*.py"]
else:
    from monailabel_testing import BUNDLES, LABELLED, REPO, SOURCE_SHAPE, copy_bundle


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
def bundle_source(tmp_path_factory) -> Path:
    """Both (tiny) bundles, trained-bundle style, in one folder."""
    source = tmp_path_factory.mktemp("bundles")
    for name in BUNDLES:
        copy_bundle(name, source)
    return source


@pytest.fixture(scope="session")
def app_dir(tmp_path_factory) -> Path:
    """A copy of the repository's ``monailabel/`` folder: its ``lesionseg_app``."""
    target = tmp_path_factory.mktemp("apps") / "monailabel"
    ignore = shutil.ignore_patterns("model", "logs", "bin", "__pycache__")
    shutil.copytree(REPO / "monailabel", target, ignore=ignore)
    assert (target / "lesionseg_app" / "main.py").is_file()
    return target / "lesionseg_app"


@pytest.fixture(scope="session")
def served_dir(tmp_path_factory) -> Path:
    """The folder of the served copies (``--conf model_dir``) of the in-process server."""
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="session")
def client(app_dir, bundle_source, served_dir, studies, tmp_path_factory):
    """MONAI Label's FastAPI server app, in-process, serving both bundles (inference, training, scoring)."""
    from fastapi.testclient import TestClient
    from monailabel.config import settings

    conf = {"bundles": str(bundle_source), "model_dir": str(served_dir), "epistemic_simulation_size": "3"}
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

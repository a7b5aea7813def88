"""The served copies of the bundles: what MONAI Label reads and what its training rewrites.

A served copy holds only what serving needs: ``configs/``, ``docs/``, ``LICENSE`` and ``models/model.pt``.
What runs write beside a bundle (``models/training_state.pt``, ``eval/``, exported ``.ts``/``.onnx``
files, easy/hard parts) is not copied.
"""

from __future__ import annotations

import filecmp
import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

#: the bundles the app serves when ``--conf models`` is not given
DEFAULT_BUNDLES = ("dcnet_bundle", "taichinet_bundle")
#: the bundle's files and folders a served copy holds besides ``models/model.pt``
DEFINITION = ("configs", "docs", "LICENSE")
MODEL_FILE = Path("models") / "model.pt"


def bundle_names(models: str | None) -> list[str]:
    """The bundle names of ``--conf models`` (comma separated; all of ``DEFAULT_BUNDLES`` when empty)."""
    names = [n.strip() for n in (models or "").split(",") if n.strip()]
    return names or list(DEFAULT_BUNDLES)


def prepare_served_bundles(source: Path, served: Path, names: list[str]) -> dict[str, str]:
    """Make ``served/<name>`` for each bundle name from ``source/<name>``.

    The definition (``configs/``, ``docs/``, ``LICENSE``) is brought up to date at every start, so that the served
    copy follows the source; ``models/model.pt`` is copied only into a copy that has none, because MONAI Label's
    training rewrites it there (the fine-tuned weights stay across restarts; delete the served copy to start
    again from the source's weights).

    Args:
        source: folder holding the bundle folders (the repository's ``bundles/`` by default).
        served: folder of the served copies, created if missing.
        names: bundle folder names under ``source``.

    Returns:
        ``{name: path of the served copy}``.

    Raises:
        FileNotFoundError: naming the bundle's ``configs/metadata.json`` or ``models/model.pt`` when one is
            missing (the served copy is then left as it was).
        ValueError: when ``served`` is ``source`` (the copies would be the bundles themselves).
    """
    if served.resolve() == source.resolve():
        raise ValueError(f"{served}: the served copies' folder (model_dir) must differ from the bundles' folder")
    copies: dict[str, str] = {}
    for name in names:
        bundle = source / name
        metadata = bundle / "configs" / "metadata.json"
        if not metadata.is_file():
            raise FileNotFoundError(f"{metadata}: missing, cannot serve bundle {name!r} (is {bundle} a bundle?)")
        if not (bundle / MODEL_FILE).is_file() and not (served / name / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{bundle / MODEL_FILE}: missing, cannot serve bundle {name!r} (train the bundle first, or leave it "
                "out with --conf models)"
            )
        target = served / name
        target.mkdir(parents=True, exist_ok=True)
        for part in DEFINITION:
            _copy_changed(bundle / part, target / part)
        model = target / MODEL_FILE
        if model.is_file():
            logger.info(f"{name}: serving the weights already in {model} (MONAI Label's training writes there)")
        else:
            model.parent.mkdir(exist_ok=True)
            # copy to a temporary name first: an interrupted copy never looks like a model
            partial = model.with_suffix(".pt.partial")
            shutil.copy2(bundle / MODEL_FILE, partial)
            partial.replace(model)
            logger.info(f"{name}: weights copied from {bundle / MODEL_FILE}")
        copies[name] = str(target)
    return copies


def _copy_changed(source: Path, target: Path) -> None:
    """Copy the file or folder ``source`` to ``target``, writing only the files that differ (MONAI Label starts
    the app again in each background task, while the server reads the served copy)."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for file in files:
        copy = target / file.relative_to(source) if file != source else target
        if not copy.is_file() or not filecmp.cmp(file, copy, shallow=False):
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, copy)

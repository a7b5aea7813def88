"""The served copies of the bundles: what MONAI Label reads and what its training rewrites.

A served copy holds only what serving needs: ``configs/``, ``docs/``, ``LICENSE`` and ``models/model.pt``.
What runs write beside a bundle (``models/training_state.pt``, ``eval/``, exported ``.ts``/``.onnx``
files, easy/hard parts) is not copied. ``served.json`` in each copy says which bundle and which weights it was
made from: a folder without it is not the app's to write in, and a copy whose source changed its weights, its
input size or its network is refused rather than served with weights of another recipe.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

#: the bundles the app serves when ``--conf models`` is not given
DEFAULT_BUNDLES = ("dcnet_bundle", "taichinet_bundle")
#: the bundle's files and folders a served copy holds besides ``models/model.pt``
DEFINITION = ("configs", "docs", "LICENSE")
MODEL_FILE = Path("models") / "model.pt"
#: in each served copy: the source bundle and the MD5 of the weights copied from it
MARKER = "served.json"
#: the config ids of train.yaml and inference.yaml that the weights depend on and the load cannot check
#: (a network loads at any input size, and MONAI Label loads weights non-strictly)
WEIGHT_DEFINING_IDS = ("image_size", "network_def")


def bundle_names(models: str | None) -> list[str]:
    """The bundle names of ``--conf models`` (comma separated; all of ``DEFAULT_BUNDLES`` when empty)."""
    names = [n.strip() for n in (models or "").split(",") if n.strip()]
    return names or list(DEFAULT_BUNDLES)


def prepare_served_bundles(source: Path, served: Path, names: list[str]) -> dict[str, str]:
    """Make ``served/<name>`` for each bundle name from ``source/<name>``.

    The definition (``configs/``, ``docs/``, ``LICENSE``) is brought up to date at every start, so that the served
    copy follows the source; ``models/model.pt`` is copied only into a copy that has none, because MONAI Label's
    training rewrites it there (the fine-tuned weights stay across restarts; delete the served copy to start
    again from the source's weights). The weights a copy keeps were trained from the source's weights of then,
    at its ``image_size`` and with its ``network_def``: a source whose weights changed since, or whose
    ``image_size`` or ``network_def`` differs from the copy's, is refused, naming both.

    Args:
        source: folder holding the bundle folders (the repository's ``bundles/`` by default).
        served: folder of the served copies, created if missing.
        names: bundle folder names under ``source``.

    Returns:
        ``{name: path of the served copy}``.

    Raises:
        FileNotFoundError: naming the bundle's ``configs/metadata.json`` or ``models/model.pt`` when one is
            missing (the served copy is then left as it was).
        ValueError: when ``served`` is ``source`` (the copies would be the bundles themselves); when
            ``served/<name>`` exists but was not made by the app; when its kept weights no longer fit the source
            (the copy is then left as it was).
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
        marker = _read_marker(target)
        model = target / MODEL_FILE
        if model.is_file() and not _keeps_its_weights(bundle, target, marker):
            model.unlink()  # an untrained copy of the bundle's earlier weights: the new ones are copied below
        target.mkdir(parents=True, exist_ok=True)
        for part in DEFINITION:
            _copy_changed(bundle / part, target / part)
        if model.is_file():
            logger.info(f"{name}: serving the weights already in {model} (MONAI Label's training writes there)")
        else:
            model.parent.mkdir(exist_ok=True)
            # copy to a temporary name first: an interrupted copy never looks like a model
            partial = model.with_suffix(".pt.partial")
            shutil.copy2(bundle / MODEL_FILE, partial)
            partial.replace(model)
            marker = {"source": str(bundle.resolve()), "weights_md5": _md5(bundle / MODEL_FILE)}
            logger.info(f"{name}: weights copied from {bundle / MODEL_FILE}")
        # a copy made before the app wrote markers keeps weights_md5 None (its source weights are not known)
        marker = {"weights_md5": None, **(marker or {}), "source": str(bundle.resolve())}
        record = json.dumps(marker, indent=2) + "\n"
        if not (target / MARKER).is_file() or (target / MARKER).read_text() != record:
            (target / MARKER).write_text(record)
        copies[name] = str(target)
    return copies


def _read_marker(target: Path) -> dict[str, Any] | None:
    """``served.json`` of the served copy ``target``; ``None`` for a copy that does not exist yet, or one made by
    an earlier version of the app (``configs/`` and ``models/`` only); a folder holding anything else is not a
    served copy and is refused."""
    path = target / MARKER
    if path.is_file():
        try:
            marker = json.loads(path.read_text())
        except ValueError as error:
            raise ValueError(f"{path}: not readable JSON ({error}); delete {target} to make the copy again") from None
        if not isinstance(marker, dict):
            raise ValueError(f"{path}: not a served copy's record; delete {target} to make the copy again")
        return marker
    if target.exists():
        # what the app copies, and what MONAI Label's training writes into a copy (eval/: logs; easy_hard/)
        foreign = sorted(p.name for p in target.iterdir() if p.name not in {*DEFINITION, "models", "eval", "easy_hard"})
        if foreign or not target.is_dir():
            raise ValueError(
                f"{target}: exists and is not a served copy made by this app (no {MARKER}; holds "
                f"{', '.join(foreign) or 'a file'}); give --conf model_dir a folder of the app's own"
            )
    return None


def _keeps_its_weights(bundle: Path, target: Path, marker: dict[str, Any] | None) -> bool:
    """Whether ``target`` keeps its weights: ``False`` when they are an untrained copy of the bundle's weights of
    before (the bundle's new ones replace them); an error when MONAI Label trained them and the bundle no longer
    describes them (other weights, another ``image_size`` or ``network_def``)."""
    model = target / MODEL_FILE
    fix = f"delete {target} to serve {bundle / MODEL_FILE} (what MONAI Label trained in the copy is lost)"
    recorded = (marker or {}).get("weights_md5")
    source_md5 = _md5(bundle / MODEL_FILE) if (bundle / MODEL_FILE).is_file() else None
    served_md5 = _md5(model)
    if served_md5 in (recorded, source_md5):  # not trained by MONAI Label: the bundle's weights, then or now
        if source_md5 not in (None, served_md5):
            logger.info(f"{target.name}: the bundle's weights changed; {model} was not trained since: replaced")
            return False
        return True
    if recorded and source_md5 not in (None, recorded):
        raise ValueError(
            f"{bundle / MODEL_FILE}: changed since {model} was copied from it, and MONAI Label has trained that "
            f"copy since; {fix}, or restore the bundle's weights to keep the copy's"
        )
    for config in ("train.yaml", "inference.yaml"):
        now, served = bundle / "configs" / config, target / "configs" / config
        if not (now.is_file() and served.is_file()):
            continue
        source_ids, served_ids = _weight_defining(now), _weight_defining(served)
        changed = [key for key in WEIGHT_DEFINING_IDS if source_ids.get(key) != served_ids.get(key)]
        if changed:
            lines = "; ".join(
                f"{key}: {served_ids.get(key)!r} in the copy, {source_ids.get(key)!r} in {now}" for key in changed
            )
            raise ValueError(
                f"{model}: its weights were trained under the copy's {config}, and the bundle's now differs "
                f"({lines}): served with the new configs they would compute another model; {fix}, or go back to "
                "the old values"
            )
    return True


def _weight_defining(config: Path) -> dict[str, Any]:
    """The ids of ``WEIGHT_DEFINING_IDS`` in the YAML file ``config`` (unresolved), ``network_def`` with the
    defaults of the options it leaves out, so that writing a default out changes nothing."""
    from lesionseg.engines.checkpoint import network_options

    try:
        content = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{config}: not readable YAML ({error})") from None
    if not isinstance(content, dict):
        return {}
    ids = {key: content.get(key) for key in WEIGHT_DEFINING_IDS}
    if isinstance(ids.get("network_def"), dict):
        ids["network_def"] = json.loads(json.dumps(network_options(ids["network_def"]), default=str))  # tuples: lists
    return ids


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_changed(source: Path, target: Path) -> None:
    """Copy the file or folder ``source`` to ``target``, writing only the files that differ (MONAI Label starts
    the app again in each background task, while the server reads the served copy)."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for file in files:
        copy = target / file.relative_to(source) if file != source else target
        if not copy.is_file() or not filecmp.cmp(file, copy, shallow=False):
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, copy)

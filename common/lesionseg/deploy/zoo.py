"""A MONAI model-zoo bundle folder (and zip) that runs without ``lesionseg`` installed.

The model zoo's bundles carry their own Python code in a ``scripts/`` package at the bundle root, which the
configs reach as ``scripts.x.y`` (MONAI puts the bundle root on ``sys.path`` when a workflow runs, the zoo's
tests append it themselves, and ``python -m monai.bundle`` run from the bundle root finds it as the current
folder). :func:`export_bundle` makes such a bundle from one of this project's bundles:

- ``configs/``, ``docs/`` and the bundle's top-level files (``LICENSE``) are copied; what a run writes into the
  bundle (``models/``, ``eval/``, ``easy_hard/``, caches) is not;
- ``scripts/`` is the ``lesionseg`` package, less its command line (``cli``) and this export code
  (``deploy``), with every ``lesionseg.`` import rewritten to ``scripts.``; the configs' ``lesionseg.``
  dotted paths and ``$import lesionseg`` lines are rewritten the same way;
- ``configs/metadata.json`` loses its ``lesionseg`` requirement and lists instead the third-party packages
  the vendored code imports, with the installed versions;
- weights (``models/model.pt``, which is 218 MB for DC-Net) never go into the folder: they are listed in
  ``large_files.yml`` (path, URL, MD5), which ``python -m monai.bundle download_large_files`` and the zoo's
  CI read. The URL is where the weights will be uploaded (``weights_url``); no file of the export may
  exceed the zoo's 25 MB.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import logging
import re
import shutil
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

import yaml

import lesionseg

__all__ = ["MAX_FILE_BYTES", "VENDORED_PACKAGE", "export_bundle", "vendored_requirements"]

logger = logging.getLogger(__name__)

#: the model zoo's limit for a file in a bundle's folder
MAX_FILE_BYTES = 25 * 1024 * 1024
#: the package name the zoo's bundles use for their own code
VENDORED_PACKAGE = "scripts"
#: lesionseg parts a bundle does not run: the command line and this export code
_NOT_VENDORED = {"cli", "deploy", "__main__.py", "__pycache__"}
#: the folders a bundle's runs write into (checkpoints, logs and predictions, TaiChiNet's easy/hard parts)
_RUN_OUTPUTS = {"models", "eval", "easy_hard", "scripts", "__pycache__"}
#: what a model card needs when the weights are not uploaded yet
WEIGHTS_URL_PLACEHOLDER = "https://example.invalid/upload-models-model.pt-and-put-its-url-here"

_DOTTED = re.compile(r"\blesionseg(?=\.[A-Za-z_])")
_IMPORT = re.compile(r"(\$?\bimport\s+)lesionseg\b|(\bfrom\s+)lesionseg\b")


def _rewrite(text: str, package: str) -> str:
    """``lesionseg.x`` -> ``<package>.x`` and ``import lesionseg`` / ``from lesionseg`` -> ``<package>``."""
    text = _IMPORT.sub(lambda m: (m.group(1) or m.group(2)) + package, text)
    return _DOTTED.sub(package, text)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _vendor(destination: Path, package: str) -> list[Path]:
    """Copy lesionseg (less :data:`_NOT_VENDORED`) to ``destination`` with its imports rewritten."""
    source = Path(lesionseg.__file__).resolve().parent
    written = []
    for path in sorted(source.rglob("*.py")):
        relative = path.relative_to(source)
        if relative.parts[0] in _NOT_VENDORED or "__pycache__" in relative.parts:
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_rewrite(path.read_text(encoding="utf-8"), package), encoding="utf-8")
        written.append(target)
    for path in written:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top, _, rest = name.partition(".")
                if top == "lesionseg":
                    raise RuntimeError(f"{path}: still imports {name} after vendoring")
                if top == package and rest.split(".")[0] in _NOT_VENDORED:
                    raise RuntimeError(f"{path}: imports {name}, which a bundle does not carry")
    return written


def vendored_requirements(files: Iterable[Path], package: str = VENDORED_PACKAGE) -> dict[str, str]:
    """Distribution name -> installed version of every third-party package that ``files`` import.

    The standard library, ``torch``, ``monai`` and ``numpy`` (which the metadata pins in their own fields) and
    the vendored package itself are left out.
    """
    distributions = importlib.metadata.packages_distributions()
    skip = set(sys.stdlib_module_names) | {package, "__future__", "torch", "monai", "numpy"}
    modules: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    requirements = {}
    for module in sorted(modules - skip):
        for distribution in distributions.get(module, []):
            requirements[distribution] = importlib.metadata.version(distribution)
    return dict(sorted(requirements.items()))


def _rewrite_metadata(path: Path, requirements: dict[str, str]) -> None:
    metadata = json.loads(path.read_text(encoding="utf-8"))
    required = dict(metadata.get("required_packages_version", {}))
    required.pop("lesionseg", None)
    # the version the bundle was written for wins where both name a package
    metadata["required_packages_version"] = {**requirements, **required}
    path.write_text(json.dumps(metadata, indent=4) + "\n", encoding="utf-8")


def _copy_bundle_files(bundle: Path, output: Path, package: str) -> None:
    for item in sorted(bundle.iterdir()):
        if item.name.startswith(".") or item.name in _RUN_OUTPUTS:
            continue
        if item.is_file():
            shutil.copy2(item, output / item.name)
        elif item.name in ("configs", "docs"):
            shutil.copytree(item, output / item.name, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        else:
            logger.info("left out %s (not part of a bundle's definition)", item)
    for config in sorted((output / "configs").iterdir()):
        if config.suffix in (".yaml", ".yml", ".json"):
            config.write_text(_rewrite(config.read_text(encoding="utf-8"), package), encoding="utf-8")


def _write_large_files(bundle: Path, output: Path, weights_url: str | None) -> list[str]:
    weights = bundle / "models" / "model.pt"
    if not weights.is_file():
        logger.warning(
            "%s has no models/model.pt: the export has no weights and no large_files.yml (train the bundle first "
            "for a model-zoo submission)",
            bundle,
        )
        return []
    if weights_url is None:
        logger.warning("no --weights-url: large_files.yml names a placeholder URL; upload %s and put its URL there", weights)
    entry = {"path": "models/model.pt", "url": weights_url or WEIGHTS_URL_PLACEHOLDER, "hash_val": _md5(weights), "hash_type": "md5"}
    with open(output / "large_files.yml", "w", encoding="utf-8") as stream:
        yaml.safe_dump({"large_files": [entry]}, stream, sort_keys=False)
    for other in sorted((bundle / "models").iterdir()):
        if other != weights:
            logger.info("left out %s (only models/model.pt is listed in large_files.yml)", other)
    return [entry["path"]]


def _zip(folder: Path) -> Path:
    """``<folder>.zip`` holding ``<folder name>/...``, the layout of the model zoo's bundle archives."""
    archive = folder.with_name(folder.name + ".zip")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as stream:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stream.write(path, Path(folder.name) / path.relative_to(folder))
    return archive


def export_bundle(
    bundle: str | Path,
    output: str | Path,
    weights_url: str | None = None,
    make_zip: bool = False,
    package: str = VENDORED_PACKAGE,
) -> Path:
    """Write a self-contained model-zoo bundle of ``bundle`` to the new folder ``output``.

    Args:
        bundle: one of this project's bundle folders (``configs/metadata.json`` and ``configs/inference.*``).
        output: the folder to create; it must not exist or be empty. Its name is the bundle's name in the zoo.
        weights_url: where ``models/model.pt`` will be downloaded from, written into ``large_files.yml``.
        make_zip: also write ``<output>.zip`` (the folder's contents under ``<output name>/``).
        package: the name of the vendored code package.

    Returns:
        ``output``, or the zip file with ``make_zip``.

    Raises:
        FileNotFoundError: ``bundle`` is not a bundle folder.
        FileExistsError: ``output`` exists and is not empty.
        ValueError: a file of the export exceeds :data:`MAX_FILE_BYTES`.
    """
    bundle, output = Path(bundle).resolve(), Path(output).resolve()
    for required in ("configs/metadata.json",):
        if not (bundle / required).is_file():
            raise FileNotFoundError(f"{bundle}: no {required} (is this a MONAI bundle folder?)")
    if not any((bundle / "configs" / f"inference{s}").is_file() for s in (".yaml", ".json")):
        raise FileNotFoundError(f"{bundle}: no configs/inference.yaml or configs/inference.json")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} exists and is not an empty folder; choose a new one")
    if output == bundle or bundle in output.parents:
        raise ValueError(f"{output} is inside the bundle {bundle}; write the export elsewhere")
    output.mkdir(parents=True, exist_ok=True)

    _copy_bundle_files(bundle, output, package)
    vendored = _vendor(output / package, package)
    requirements = vendored_requirements(vendored, package)
    _rewrite_metadata(output / "configs" / "metadata.json", requirements)
    large = _write_large_files(bundle, output, weights_url)
    readme = output / "docs" / "README.md"
    if readme.is_file():
        with open(readme, "a", encoding="utf-8") as stream:
            stream.write(
                f"\n## Bundle code\n\n`{package}/` is `lesionseg` {lesionseg.__version__} (less its command line), "
                f"vendored by `lesionseg export-bundle`, so this bundle runs without `lesionseg` installed. "
                f"It needs {', '.join(f'{k}=={v}' for k, v in requirements.items()) or 'no further packages'} "
                "beside MONAI and PyTorch. Weights: `python -m monai.bundle download_large_files` fetches the files "
                "`large_files.yml` lists.\n"
            )

    too_large = [p for p in output.rglob("*") if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]
    if too_large:
        raise ValueError(f"{output}: files over the model zoo's 25 MB: {[str(p) for p in too_large]}")
    logger.info(
        "exported %s to %s: %d vendored modules in %s/, large files %s",
        bundle.name,
        output,
        len(vendored),
        package,
        large or "none",
    )
    if make_zip:
        archive = _zip(output)
        logger.info("wrote %s", archive)
        return archive
    return output

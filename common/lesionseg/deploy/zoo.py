"""A MONAI model-zoo bundle folder (and zip) that runs without ``lesionseg`` installed.

The model zoo's bundles carry their own Python code in a ``scripts/`` package at the bundle root, which the
configs reach as ``scripts.x.y`` (MONAI puts the bundle root on ``sys.path`` when a workflow runs, the zoo's
tests append it themselves, and ``python -m monai.bundle`` run from the bundle root finds it as the current
folder). :func:`export_bundle` makes such a bundle from one of this project's bundles:

- only what defines a bundle is copied: the configs (``configs/**/*.yaml|yml|json|conf``), the model card and
  its pictures (``docs/**/*.md|txt|png|jpg|jpeg|svg|gif``) and the licence files at the top
  (``LICENSE*``, ``NOTICE*``). What a run writes into the bundle (``models/``, ``eval/``, ``easy_hard/``,
  ``training_state.pt``, logs, exported ``.ts``/``.onnx`` models, caches) and any other stray file is left
  out, with a warning for each stray file;
- a symbolic link among those files is copied as the file it points to when that lies inside the bundle; one
  pointing outside the bundle makes the export fail with an error naming the link (its target could be any
  private file, which would then be published). A symbolic link among the left-out files is not followed.
  ``models/model.pt`` is only read for its MD5 (below), so it may be a link to weights stored elsewhere;
- ``scripts/`` is the ``lesionseg`` package, less its command line (``cli``) and this export code
  (``deploy``), with every ``lesionseg.`` import rewritten to ``scripts.``; the configs' ``lesionseg.``
  dotted paths and ``$import lesionseg`` lines are rewritten the same way. It carries
  :mod:`lesionseg.workflows` (``scripts.workflows.predictor.load_predictor``, ``...bundle.run_workflow``);
- ``configs/metadata.json`` loses its ``lesionseg`` requirement and lists instead the third-party packages
  the vendored code imports, with the installed versions;
- weights (``models/model.pt``, which is 218 MB for DC-Net) never go into the folder: they are listed in
  ``large_files.yml`` (path, URL, MD5), which ``python -m monai.bundle download_large_files`` and the zoo's
  CI read. The URL is where the weights will be uploaded (``weights_url``); no file of the export may
  exceed the zoo's 25 MB.

The export is built in a hidden folder beside ``output`` and renamed to ``output`` once it is complete and
checked, so a failed export (an error above, a full disk) leaves no folder behind; ``--zip`` never replaces an
existing archive.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import yaml

import lesionseg
from lesionseg.utils.files import replacing, reraise_naming

__all__ = ["MAX_FILE_BYTES", "VENDORED_PACKAGE", "BundleLinkError", "export_bundle", "vendored_requirements"]

logger = logging.getLogger(__name__)

#: the model zoo's limit for a file in a bundle's folder
MAX_FILE_BYTES = 25 * 1024 * 1024
#: the package name the zoo's bundles use for their own code
VENDORED_PACKAGE = "scripts"
#: lesionseg parts a bundle does not run: the command line and this export code
_NOT_VENDORED = {"cli", "deploy", "__main__.py", "__pycache__"}
#: the folders a bundle's runs write into (checkpoints, logs and predictions, TaiChiNet's easy/hard parts)
_RUN_OUTPUTS = {"models", "eval", "easy_hard", "scripts", "__pycache__"}
#: the files that define a bundle: by folder, the file name suffixes; at the top, the file name prefixes
_BUNDLE_FILES = {
    "configs": (".yaml", ".yml", ".json", ".conf"),
    "docs": (".md", ".txt", ".png", ".jpg", ".jpeg", ".svg", ".gif"),
}
_TOP_LEVEL_PREFIXES = ("LICENSE", "NOTICE")
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


def _rewrite_metadata(path: Path, requirements: dict[str, str], source: Path) -> None:
    """Rewrite the export's ``metadata.json`` at ``path``, copied from ``source`` (named in errors)."""
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metadata, dict):
            raise ValueError(f"a JSON object was expected, found {type(metadata).__name__}")
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{source}: not a valid bundle metadata file ({error})") from None
    required = dict(metadata.get("required_packages_version", {}))
    required.pop("lesionseg", None)
    # the version the bundle was written for wins where both name a package
    metadata["required_packages_version"] = {**requirements, **required}
    path.write_text(json.dumps(metadata, indent=4) + "\n", encoding="utf-8")


class BundleLinkError(ValueError):
    """A symbolic link in a bundle that points outside it (or nowhere); the message names the link."""


def _inside(bundle: Path, path: Path) -> Path:
    """``path`` with its links resolved, which must lie inside ``bundle``."""
    resolved = path.resolve()
    if resolved != bundle and bundle not in resolved.parents:
        raise BundleLinkError(
            f"{path}: symbolic link to {resolved}, outside the bundle {bundle}; refusing to export it (its "
            "target would be published with the bundle). Copy the file into the bundle if it belongs there."
        )
    if not resolved.exists():
        raise BundleLinkError(f"{path}: symbolic link to {resolved}, which does not exist")
    return resolved


def _bundle_files(bundle: Path) -> list[tuple[Path, Path]]:
    """(source file with links resolved, path relative to the bundle) of every file the export copies.

    Raises:
        BundleLinkError: one of them, or a folder above it, is a link pointing outside ``bundle``.
    """
    files = []
    for item in sorted(bundle.iterdir()):
        if item.is_file() and not item.name.startswith(".") and item.name.startswith(_TOP_LEVEL_PREFIXES):
            files.append((_inside(bundle, item), Path(item.name)))
        elif item.name in _BUNDLE_FILES and item.is_dir():
            folder = _inside(bundle, item)
            for root, dirs, names in os.walk(folder):  # links to folders are listed in dirs, not followed
                root_path = Path(root)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
                for name in sorted(dirs):
                    if (root_path / name).is_symlink():
                        _inside(bundle, root_path / name)  # outside: refused; inside: it is there already
                        logger.warning("left out %s (a linked folder; link the files instead)", root_path / name)
                for name in sorted(names):
                    path = root_path / name
                    relative = Path(item.name) / path.relative_to(folder)
                    if name.startswith(".") or not name.lower().endswith(_BUNDLE_FILES[item.name]):
                        logger.warning("left out %s (not part of a bundle's definition)", bundle / relative)
                        continue
                    files.append((_inside(bundle, path), relative))
        elif item.name in _RUN_OUTPUTS or item.name.startswith("."):
            logger.info("left out %s (written by runs, not part of a bundle's definition)", item)
        else:
            logger.warning("left out %s (not part of a bundle's definition)", item)
    return files


def _copy_bundle_files(bundle: Path, output: Path, package: str) -> None:
    for source, relative in _bundle_files(bundle):
        target = output / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)  # the content: a link inside the bundle becomes a plain file
        shutil.copystat(source, target)
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
        logger.warning(
            "no --weights-url: large_files.yml names a placeholder URL; upload %s and put its URL there", weights
        )
    entry = {
        "path": "models/model.pt",
        "url": weights_url or WEIGHTS_URL_PLACEHOLDER,
        "hash_val": _md5(weights),
        "hash_type": "md5",
    }
    with open(output / "large_files.yml", "w", encoding="utf-8") as stream:
        yaml.safe_dump({"large_files": [entry]}, stream, sort_keys=False)
    for other in sorted((bundle / "models").iterdir()):
        if other != weights:
            logger.info("left out %s (only models/model.pt is listed in large_files.yml)", other)
    return [entry["path"]]


def _zip(folder: Path, archive: Path) -> Path:
    """``archive`` holding ``<folder name>/...``, the layout of the model zoo's bundle archives."""
    with replacing(archive) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as stream:
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
        FileExistsError: ``output`` exists and is not empty, or ``make_zip`` and ``<output>.zip`` exists.
        BundleLinkError: a file of the bundle's definition is a link pointing outside it (a ``ValueError``).
        ValueError: a file of the export exceeds :data:`MAX_FILE_BYTES`.
        OSError: writing failed (e.g. no space left), naming ``output``; nothing is left behind.
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
    archive = output.with_name(output.name + ".zip")
    if make_zip and os.path.lexists(archive):
        raise FileExistsError(f"{archive} exists; choose a new output name or move the old archive away")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; the export gets the usual permissions
        large, vendored, requirements = _export_into(bundle, staging, weights_url, package)
        os.replace(staging, output)  # atomic; an empty output folder is replaced as well
        staging = None
    except OSError as error:
        reraise_naming(error, output)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "exported %s to %s: %d vendored modules in %s/, large files %s",
        bundle.name,
        output,
        len(vendored),
        package,
        large or "none",
    )
    if make_zip:
        _zip(output, archive)
        logger.info("wrote %s", archive)
        return archive
    return output


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _export_into(
    bundle: Path, output: Path, weights_url: str | None, package: str
) -> tuple[list[str], list[Path], dict[str, str]]:
    """Write the export of ``bundle`` to the empty folder ``output`` and check it (see :func:`export_bundle`).

    Returns:
        the large files listed, the vendored modules and the third-party requirements.
    """
    _copy_bundle_files(bundle, output, package)
    vendored = _vendor(output / package, package)
    requirements = vendored_requirements(vendored, package)
    _rewrite_metadata(output / "configs" / "metadata.json", requirements, bundle / "configs" / "metadata.json")
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

    too_large = [p.relative_to(output) for p in output.rglob("*") if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]
    if too_large:
        raise ValueError(f"{bundle}: files over the model zoo's 25 MB in its export: {[str(p) for p in too_large]}")
    return large, vendored, requirements

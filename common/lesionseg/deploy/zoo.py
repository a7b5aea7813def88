"""A MONAI model-zoo bundle folder (and zip) that runs without ``lesionseg`` installed.

The model zoo's bundles carry their own Python code in a ``scripts/`` package at the bundle root, which the
configs reach as ``scripts.x.y`` (MONAI puts the bundle root on ``sys.path`` when a workflow runs, the zoo's
tests append it themselves, and ``python -m monai.bundle`` run from the bundle root finds it as the current
folder). :func:`export_bundle` makes such a bundle from one of this project's bundles, laid out as a pull
request to the zoo adds it: ``<output>/models/<name>/`` (the bundle) and ``<output>/ci/unit_tests/test_<name>.py``
(its unit test), so ``<output>`` may be a checkout of the zoo itself. ``<name>`` follows the zoo's naming
advice (task and data, e.g. ``breast_ultrasound_dcnet_segmentation``, :data:`ZOO_BUNDLES`):

- only what defines a bundle is copied: the configs (``configs/**/*.yaml|yml|json|conf``), the model card and
  its pictures (``docs/**/*.md|txt|png|jpg|jpeg|svg|gif``) and the licence files at the top
  (``LICENSE*``, ``NOTICE*``). What a run writes into the bundle (``models/``, ``eval/``, ``easy_hard/``,
  ``training_state.pt``, logs, exported ``.ts``/``.onnx`` models, caches) and any other stray file is left
  out, with a warning for each stray file. ``docs/data_license.txt`` (the terms of the data the weights were
  trained on, which the zoo asks for) must be there;
- a symbolic link among those files is copied as the file it points to when that lies inside the bundle; one
  pointing outside the bundle makes the export fail with an error naming the link (its target could be any
  private file, which would then be published). A symbolic link among the left-out files is not followed.
  ``models/model.pt`` is only read for its MD5 (below), so it may be a link to weights stored elsewhere;
- ``scripts/`` is the ``lesionseg`` package, less its command line (``cli``) and this export code
  (``deploy``), with every ``lesionseg.`` import rewritten to ``scripts.``; the configs' ``lesionseg.``
  dotted paths and ``$import lesionseg`` lines are rewritten the same way. It carries
  :mod:`lesionseg.workflows` (``scripts.workflows.predictor.load_predictor``, ``...bundle.run_workflow``).
  Each module is then formatted with isort and black under the zoo's settings (:func:`format_for_zoo`): the
  rename moves ``scripts`` imports from the first-party section into the third-party one, where the zoo's
  isort wants them;
- ``configs/metadata.json`` loses its ``lesionseg`` requirement and lists instead the third-party packages
  the vendored code imports, with the installed versions;
- ``docs/README.md`` keeps only the commands that work in the export (:func:`export_readme`); a warning names
  the sections of the zoo's model-card template it lacks (:data:`ZOO_README_SECTIONS`);
- weights (``models/model.pt``, which is 218 MB for DC-Net) never go into the folder: they are listed in
  ``large_files.yml`` (path, URL, MD5), which ``python -m monai.bundle download_large_files`` and the zoo's
  CI read. The URL is where the weights will be uploaded (``weights_url``, by default the bundle's line of
  ``hosted_weights.yml`` beside the bundles: :mod:`lesionseg.deploy.release`); no file of the export may
  exceed the zoo's 25 MB. A bundle without ``models/model.pt`` is refused unless ``no_weights`` is given
  (the zoo's ``verify_bundle.py`` fails such a bundle even in its ``min`` mode).

The bundle is built in a hidden folder beside its destination and renamed into place once it is complete and
checked, so a failed export (an error above, a full disk) leaves no folder behind; no existing file is ever
replaced (not the bundle folder, the unit test or, with ``--zip``, the archive).
"""

from __future__ import annotations

import ast
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
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

import lesionseg
from lesionseg.deploy.release import HOSTED_WEIGHTS, check_recorded_weights, file_md5, hosted_weights_url
from lesionseg.deploy.zoo_unit_test import render_unit_test
from lesionseg.utils.files import replacing, reraise_naming

__all__ = [
    "MAX_FILE_BYTES",
    "VENDORED_PACKAGE",
    "ZOO_BUNDLES",
    "ZOO_README_SECTIONS",
    "BundleLinkError",
    "ZooBundle",
    "export_bundle",
    "export_readme",
    "format_for_zoo",
    "missing_readme_sections",
    "vendored_requirements",
]

logger = logging.getLogger(__name__)


def _small_workflows() -> dict:
    return {"image_size": [32, 32], "num_workers": 0, "batch_size": 2}


@dataclass(frozen=True)
class ZooBundle:
    """A bundle's name in the model zoo, what its metadata adds there, and the settings of its unit test.

    Attributes:
        name: the folder name, ``models/<name>`` in the zoo (letters, digits and underscores).
        supported_apps: added to the metadata's ``supported_apps`` (app -> version it was tested with).
        test_overrides: config id -> value for every workflow of the unit test (tiny images and network).
        test_train_overrides: config id -> value added for its training and evaluation.
        test_output_ids: the config ids of the folders its workflows write into (each goes to a temporary one).
    """

    name: str
    supported_apps: dict = field(default_factory=dict)
    test_overrides: dict = field(default_factory=_small_workflows)
    test_train_overrides: dict = field(default_factory=lambda: {"max_epochs": 1})
    test_output_ids: tuple = ("ckpt_dir", "output_dir")


#: MONAI Label (the schema's example key for ``supported_apps``) with the version both bundles were served
#: with (tests/monailabel, .ci/monailabel-env.sh)
MONAI_LABEL = {"monai-label": "0.8.5"}
#: this project's bundles (by folder name) in the zoo, named after the zoo's advice (data and task, as in
#: ``spleen_ct_segmentation``); their unit tests train a network 8 to 16 times narrower on 32x32 images
ZOO_BUNDLES = {
    "dcnet_bundle": ZooBundle(
        name="breast_ultrasound_dcnet_segmentation",
        supported_apps=MONAI_LABEL,
        test_overrides={**_small_workflows(), "network_def#features": [4, 8, 16, 32, 64]},
    ),
    "taichinet_bundle": ZooBundle(
        name="breast_ultrasound_taichinet_segmentation",
        supported_apps=MONAI_LABEL,
        test_overrides={**_small_workflows(), "network_def#features": [2, 4, 8, 16, 32]},
        # two epochs, one for each step of the easy-to-hard strategy, after a tiny U-Net++ preparation
        test_train_overrides={
            "max_epochs": 2,
            "prepare_overrides": {**_small_workflows(), "network_def#features": [4, 4, 8, 8, 16, 4], "max_epochs": 1},
        },
        test_output_ids=("ckpt_dir", "output_dir", "prepare_dir"),
    ),
}
#: a zoo bundle name: a Python identifier (its unit test is the module ``test_<name>``), so never a path
_ZOO_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: the sections of the zoo's model-card template (model-zoo docs/readme_template.md), lower case, without the
#: bold marks and "(Optional)". The first six are required there; the issue that asked for a zoo-ready export
#: also wants Limitations and Citation Info, which the template marks optional
ZOO_README_SECTIONS = (
    "authors",
    "tags",
    "model description",
    "data",
    "performance",
    "system configuration",
    "limitations",
    "citation info",
)
#: the zoo's code-format settings: its setup.cfg ([isort] profile black, line_length 120, known_first_party
#: models), pyproject.toml ([tool.black] line-length 120, target-version py37-py39) and runtests.sh
#: (black --skip-magic-trailing-comma); its CI runs isort, black and flake8 on every .py file
ZOO_LINE_LENGTH = 120
ZOO_BLACK_TARGETS = ("py37", "py38", "py39")
#: the export's data licence file, which the zoo asks for when the data has licence conditions
DATA_LICENSE = "docs/data_license.txt"

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


def _formatters():
    """isort and black, or an error that says how to install them."""
    try:
        import black
        import isort
    except ImportError as error:
        raise ModuleNotFoundError(
            f"export-bundle formats the bundle's code with isort and black, as the model zoo's CI checks it, and "
            f"{error.name} is not installed: pip install black isort (or lesionseg's `zoo` extra)"
        ) from None
    return black, isort


def format_for_zoo(text: str, path: str | Path, package: str = VENDORED_PACKAGE) -> str:
    """``text``, a Python module, with its imports sorted by isort and its code formatted by black, under the
    model zoo's settings (:data:`ZOO_LINE_LENGTH`, :data:`ZOO_BLACK_TARGETS`, isort's black profile).

    ``package`` (the vendored code) is placed among the third-party imports, where the zoo's isort puts it: the
    zoo's root, where isort looks for first-party code, has no folder of that name.

    Raises:
        ModuleNotFoundError: isort or black is not installed.
        ValueError: black cannot parse ``text`` for the zoo's target versions; the message names ``path``.
    """
    black, isort = _formatters()
    config = isort.Config(
        profile="black", line_length=ZOO_LINE_LENGTH, known_first_party=["models"], known_third_party=[package]
    )
    text = isort.code(text, config=config)
    targets = {black.TargetVersion[name.upper()] for name in ZOO_BLACK_TARGETS}
    mode = black.Mode(target_versions=targets, line_length=ZOO_LINE_LENGTH, magic_trailing_comma=False)
    try:
        return black.format_str(text, mode=mode)
    except black.InvalidInput as error:
        raise ValueError(f"{path}: black cannot format it for Python {', '.join(ZOO_BLACK_TARGETS)}: {error}") from None


#: a command that needs the lesionseg project rather than the bundle: its command line, its benchmark and test
#: scripts; at the start of a line or code span, after a comment mark and environment assignments
_PROJECT_COMMAND = re.compile(
    r"^\s*(?:#\s*)?(?:\w+=\S*\s+)*"
    r"(?:lesionseg\s|python3?\s+-m\s+lesionseg\b|(?:python3?\s+-m\s+)?lesionseg\.cli\b"
    r"|python3?\s+(?:benchmarks|tests)/|(?:python3?\s+-m\s+)?pytest\b)"
)
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
#: what an inline project command becomes in the export's model card
_PROJECT_ONLY = " (a lesionseg command, not part of this bundle)"


def _filter_code_block(lines: list[str]) -> list[str]:
    """The lines of a fenced block less its project commands, with their ``\\`` continuation lines and the
    comment lines just above them (which describe them)."""
    kept: list[str] = []
    skipping = False
    for line in lines:
        if skipping:
            skipping = line.rstrip().endswith("\\")
            continue
        if _PROJECT_COMMAND.match(line):
            while kept and kept[-1].lstrip().startswith("#"):
                kept.pop()
            skipping = line.rstrip().endswith("\\")
            continue
        kept.append(line)
    return kept


def export_readme(text: str, source_name: str, name: str, package: str = VENDORED_PACKAGE) -> str:
    """The model card ``text`` of the bundle folder ``source_name`` as it reads in its export ``name``.

    - Fenced code blocks lose the commands that need the lesionseg project (its command line, e.g.
      ``lesionseg crossval`` or ``check-data``, and its ``benchmarks/`` and ``tests/`` scripts); a block left
      with no command (only comments and blank lines) is dropped.
    - Such a command in a code span of the text is marked as one the bundle does not include.
    - ``bundles/<source_name>`` (the folder in the project) becomes ``<name>`` and dotted ``lesionseg.`` paths
      ``<package>.`` (where the bundle's code is).
    """
    out: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            if block is None:
                block = [line]
                continue
            body = _filter_code_block(block[1:])
            if any(item.strip() and not item.lstrip().startswith("#") for item in body):
                out.extend([block[0], *body, line])
            block = None
            continue
        if block is not None:
            block.append(line)
            continue
        out.append(
            _CODE_SPAN.sub(
                lambda m: m.group(0) + _PROJECT_ONLY if _PROJECT_COMMAND.match(m.group(2)) else m.group(0), line
            )
        )
    if block is not None:  # an unclosed fence: kept as it was
        out.extend(block)
    text = "".join(out).replace(f"bundles/{source_name}", name)
    return _DOTTED.sub(package, text)


def missing_readme_sections(text: str) -> list[str]:
    """The sections of :data:`ZOO_README_SECTIONS` that no heading of the markdown ``text`` starts with."""
    headings = []
    for line in text.splitlines():
        if line.startswith("#"):
            heading = re.sub(r"\(optional\)", "", line.lstrip("#").replace("*", "").lower())
            headings.append(" ".join(heading.split()))
    missing = []
    for section in ZOO_README_SECTIONS:
        # "Citation" alone names the template's "Citation Info" as well
        names = (section, "citation") if section == "citation info" else (section,)
        if not any(h == n or h.startswith(n + " ") for h in headings for n in names):
            missing.append(section)
    return missing


def _vendor(destination: Path, package: str) -> list[Path]:
    """Copy lesionseg (less :data:`_NOT_VENDORED`) to ``destination`` with its imports rewritten, each module
    formatted for the zoo (:func:`format_for_zoo`)."""
    source = Path(lesionseg.__file__).resolve().parent
    written = []
    for path in sorted(source.rglob("*.py")):
        relative = path.relative_to(source)
        if relative.parts[0] in _NOT_VENDORED or "__pycache__" in relative.parts:
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        code = format_for_zoo(_rewrite(path.read_text(encoding="utf-8"), package), path, package)
        target.write_text(code, encoding="utf-8")
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


def _rewrite_metadata(
    path: Path, requirements: dict[str, str], source: Path, supported_apps: dict[str, str] | None = None
) -> None:
    """Rewrite the export's ``metadata.json`` at ``path``, copied from ``source`` (named in errors); the apps of
    ``supported_apps`` are added to its ``supported_apps`` where it does not name them already."""
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
    if supported_apps:
        metadata["supported_apps"] = {**supported_apps, **metadata.get("supported_apps", {})}
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
    if not weights.is_file():  # export_bundle refused this unless no_weights was given
        logger.warning(
            "%s has no models/model.pt: the export has no weights and no large_files.yml; the model zoo's "
            "verify_bundle.py fails it (train the bundle first for a model-zoo submission)",
            bundle,
        )
        return []
    if weights_url is None:
        logger.warning(
            "no --weights-url and no URL for %s in %s: large_files.yml names a placeholder URL; upload %s and put "
            "its URL in %s",
            bundle.name,
            bundle.parent / HOSTED_WEIGHTS,
            weights,
            bundle.parent / HOSTED_WEIGHTS,
        )
    entry = {
        "path": "models/model.pt",
        "url": weights_url or WEIGHTS_URL_PLACEHOLDER,
        "hash_val": file_md5(weights),
        "hash_type": "md5",
    }
    with open(output / "large_files.yml", "w", encoding="utf-8") as stream:
        yaml.safe_dump({"large_files": [entry]}, stream, sort_keys=False)
    for other in sorted((bundle / "models").iterdir()):
        if other != weights:
            logger.info("left out %s (only models/model.pt is listed in large_files.yml)", other)
    return [entry["path"]]


def _zip(folder: Path, archive: Path, root: str) -> Path:
    """``archive`` (new: never replaced) holding ``<root>/...`` with the files of ``folder``, the layout of the
    model zoo's bundle archives."""
    with replacing(archive, exclusive=True) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as stream:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    stream.write(path, Path(root) / path.relative_to(folder))
    return archive


def zoo_bundle(bundle: str | Path, name: str | None = None) -> ZooBundle:
    """The :class:`ZooBundle` of the bundle folder ``bundle``: :data:`ZOO_BUNDLES`'s entry for its folder name,
    renamed to ``name`` when given; a bundle without an entry needs ``name`` and gets the default test settings.

    Raises:
        ValueError: ``name`` is not a valid zoo bundle name, or none is given and none is known.
    """
    known = ZOO_BUNDLES.get(Path(bundle).name)
    if name is None:
        if known is None:
            raise ValueError(
                f"{bundle}: no model-zoo name is known for this bundle folder; give one with --name, e.g. "
                "<body part>_<modality>_<network>_<task> as in breast_ultrasound_dcnet_segmentation"
            )
        return known
    if not _ZOO_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r}: not a model-zoo bundle name (letters, digits and underscores, starting with a letter; it is "
            "the bundle's folder and its unit test's module name)"
        )
    return ZooBundle(name=name) if known is None else replace(known, name=name)


def export_bundle(
    bundle: str | Path,
    output: str | Path,
    weights_url: str | None = None,
    make_zip: bool = False,
    package: str = VENDORED_PACKAGE,
    name: str | None = None,
    no_weights: bool = False,
) -> Path:
    """Write a self-contained model-zoo bundle of ``bundle`` to ``<output>/models/<name>`` and its unit test to
    ``<output>/ci/unit_tests/test_<name>.py``, the paths a pull request to the zoo adds.

    Args:
        bundle: one of this project's bundle folders (``configs/metadata.json``, ``configs/inference.*`` and
            ``docs/data_license.txt``; ``models/model.pt`` unless ``no_weights``).
        output: the zoo's root: a checkout of the model zoo, or any folder (created if needed). Only new files
            are written into it.
        weights_url: where ``models/model.pt`` will be downloaded from, written into ``large_files.yml``;
            default: the bundle's URL in ``hosted_weights.yml`` beside it
            (:func:`~lesionseg.deploy.release.hosted_weights_url`).
        make_zip: also write ``<output>/<name>.zip`` (the bundle folder's contents under ``<name>/``).
        package: the name of the vendored code package.
        name: the bundle's name in the zoo; default: :data:`ZOO_BUNDLES`'s name for the bundle folder.
        no_weights: export a bundle without ``models/model.pt`` (then without ``large_files.yml``), e.g. to try
            the export before training; the zoo's CI fails such a bundle.

    Returns:
        the bundle folder, or the zip file with ``make_zip``.

    Raises:
        FileNotFoundError: ``bundle`` is not a bundle folder, or lacks ``docs/data_license.txt``, or
            ``models/model.pt`` without ``no_weights``.
        FileExistsError: ``<output>/models/<name>`` exists and is not an empty folder, the unit test exists,
            or ``make_zip`` and ``<output>/<name>.zip`` exists.
        BundleLinkError: a file of the bundle's definition is a link pointing outside it (a ``ValueError``).
        ValueError: ``name`` is missing or invalid, or a file of the export exceeds :data:`MAX_FILE_BYTES`.
        RecordedWeightsError: ``models/model.pt`` is not the checkpoint whose metrics ``configs/metadata.json``
            records, or ``hosted_weights.yml`` is malformed (a ``ValueError``).
        ModuleNotFoundError: isort or black, which format the bundle's code, is not installed.
        OSError: writing failed (e.g. no space left), naming the file; nothing is left behind.
    """
    bundle, root = Path(bundle).resolve(), Path(output).resolve()
    for required in ("configs/metadata.json",):
        if not (bundle / required).is_file():
            raise FileNotFoundError(f"{bundle}: no {required} (is this a MONAI bundle folder?)")
    if not any((bundle / "configs" / f"inference{s}").is_file() for s in (".yaml", ".json")):
        raise FileNotFoundError(f"{bundle}: no configs/inference.yaml or configs/inference.json")
    if not (bundle / DATA_LICENSE).is_file():
        raise FileNotFoundError(
            f"{bundle}: no {DATA_LICENSE}; the model zoo asks for the licence of the data the weights were "
            "trained on (BUSI: CC BY 4.0, with its citation). Add it to the bundle and export again"
        )
    if not no_weights and not (bundle / "models" / "model.pt").is_file():
        raise FileNotFoundError(
            f"{bundle}: no models/model.pt; the model zoo's CI (verify_bundle.py) fails a bundle without weights. "
            "Train the bundle first, or give --no-weights to export it without them"
        )
    if (bundle / "models" / "model.pt").is_file():
        check_recorded_weights(bundle, bundle / "models" / "model.pt")
    weights_url = weights_url or hosted_weights_url(bundle)
    zoo = zoo_bundle(bundle, name)
    destination = root / "models" / zoo.name
    unit_test = root / "ci" / "unit_tests" / f"test_{zoo.name}.py"
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(f"{destination} exists and is not an empty folder; choose another --name or --output")
    if destination == bundle or bundle in destination.parents or destination in bundle.parents:
        raise ValueError(f"{root}: the export and the bundle {bundle} would overlap; write the export elsewhere")
    if os.path.lexists(unit_test):
        raise FileExistsError(f"{unit_test} exists; choose another --name or --output")
    archive = root / f"{zoo.name}.zip"
    if make_zip and os.path.lexists(archive):
        raise FileExistsError(f"{archive} exists; choose a new output name or move the old archive away")
    _formatters()  # before any work: the code cannot be exported without them
    staging = None
    test_written = zip_written = False
    failing = destination  # the path an OSError is reported with
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{zoo.name}.", suffix=".tmp", dir=destination.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; the export gets the usual permissions
        large, vendored, requirements = _export_into(bundle, staging, weights_url, package, zoo)
        test_text = render_unit_test(zoo.name, zoo.test_overrides, zoo.test_train_overrides, zoo.test_output_ids)
        test_text = format_for_zoo(test_text, unit_test, package)
        failing = unit_test
        _write_new(unit_test, test_text)
        test_written, failing = True, archive if make_zip else destination
        if make_zip:  # from the staging folder, before the export is in place: a failed archive leaves nothing
            _zip(staging, archive, destination.name)
            zip_written, failing = True, destination
        os.replace(staging, destination)  # atomic; an empty destination folder is replaced as well
        staging = None
    except OSError as error:
        _remove_partial_export(unit_test if test_written else None, archive if zip_written else None)
        reraise_naming(error, failing)
    except BaseException:
        _remove_partial_export(unit_test if test_written else None, archive if zip_written else None)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "exported %s to %s (unit test %s): %d vendored modules in %s/, large files %s",
        bundle.name,
        destination,
        unit_test,
        len(vendored),
        package,
        large or "none",
    )
    if make_zip:
        logger.info("wrote %s", archive)
        return archive
    return destination


def _remove_partial_export(unit_test: Path | None, archive: Path | None) -> None:
    """Remove what a failed export wrote besides its staging folder."""
    for path in (unit_test, archive):
        if path is not None:
            path.unlink(missing_ok=True)


def _write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, which must not exist (it is never replaced); a failed write leaves nothing."""
    with replacing(path, exclusive=True, suffix=".tmp") as temporary:
        temporary.write_text(text, encoding="utf-8")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _export_into(
    bundle: Path, output: Path, weights_url: str | None, package: str, zoo: ZooBundle
) -> tuple[list[str], list[Path], dict[str, str]]:
    """Write the export of ``bundle`` to the empty folder ``output`` and check it (see :func:`export_bundle`).

    Returns:
        the large files listed, the vendored modules and the third-party requirements.
    """
    _copy_bundle_files(bundle, output, package)
    vendored = _vendor(output / package, package)
    requirements = vendored_requirements(vendored, package)
    metadata = bundle / "configs" / "metadata.json"
    _rewrite_metadata(output / "configs" / "metadata.json", requirements, metadata, zoo.supported_apps)
    large = _write_large_files(bundle, output, weights_url)
    readme = output / "docs" / "README.md"
    if readme.is_file():
        text = export_readme(readme.read_text(encoding="utf-8"), bundle.name, zoo.name, package)
        text = text.rstrip("\n") + (
            f"\n\n## Bundle code\n\n`{package}/` is `lesionseg` {lesionseg.__version__} (less its command line), "
            f"vendored by `lesionseg export-bundle`, so this bundle runs without `lesionseg` installed. "
            f"It needs {', '.join(f'{k}=={v}' for k, v in requirements.items()) or 'no further packages'} "
            "beside MONAI and PyTorch. Weights: `python -m monai.bundle download_large_files` fetches the files "
            f"`large_files.yml` lists. The model zoo's unit test of this bundle is `ci/unit_tests/test_{zoo.name}.py` "
            "in the zoo (it trains, evaluates and runs inference on a few synthetic images, on the CPU).\n"
        )
        readme.write_text(text, encoding="utf-8")
        missing = missing_readme_sections(text)
        if missing:
            logger.warning(
                "%s lacks sections of the model zoo's model-card template: %s", bundle / "docs" / "README.md", missing
            )
    else:
        logger.warning("%s has no docs/README.md, which the model zoo expects", bundle)

    too_large = [p.relative_to(output) for p in output.rglob("*") if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]
    if too_large:
        raise ValueError(f"{bundle}: files over the model zoo's 25 MB in its export: {[str(p) for p in too_large]}")
    return large, vendored, requirements

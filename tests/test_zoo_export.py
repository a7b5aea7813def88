"""``lesionseg export-bundle`` against what a pull request to the MONAI model zoo must pass, offline.

The zoo's rules, reproduced from its repository (Project-MONAI/model-zoo, dev at dfae206d):

- code format: ``runtests.sh --codeformat`` runs ``isort --check``, ``black --skip-magic-trailing-comma
  --check`` and ``flake8`` (with flake8-bugbear, -comprehensions, -executable and pep8-naming from
  requirements-dev.txt) over the whole zoo, with the settings of its setup.cfg and pyproject.toml
  (:data:`ZOO_SETUP_CFG`, :data:`ZOO_PYPROJECT`); its pre-commit hooks refuse files over 1024 kB;
- CONTRIBUTING.md: a unit test ``ci/unit_tests/test_<bundle name>.py`` (run by ``ci/unit_tests/runner.py``),
  ``docs/data_license.txt`` for data with licence terms, names with task and data type, large files in
  ``large_files.yml``; docs/readme_template.md: the model card's sections;
- the metadata schema: ``supported_apps`` maps an app (e.g. ``monai-label``) to a version.

The zoo's own tools run where they are installed (the ``test`` extra installs them); ruff's equivalents of
its lint and import-order rules always run (:func:`test_exported_code_passes_ruffs_equivalent_of_the_zoo_rules`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

from lesionseg.cli import main
from lesionseg.deploy.release import file_md5, recorded_md5
from lesionseg.deploy.zoo import (
    ZOO_BUNDLES,
    export_bundle,
    export_readme,
    missing_readme_sections,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"dcnet": ROOT / "bundles" / "dcnet_bundle", "taichinet": ROOT / "bundles" / "taichinet_bundle"}
ZOO_NAMES = {
    "dcnet": "breast_ultrasound_dcnet_segmentation",
    "taichinet": "breast_ultrasound_taichinet_segmentation",
}
FORMATTERS = find_spec("black") is not None and find_spec("isort") is not None
needs_formatters = pytest.mark.skipif(
    not FORMATTERS, reason="export-bundle formats with black and isort (the test extra installs them)"
)

#: the zoo's setup.cfg sections that its flake8 and isort read (comments left out)
ZOO_SETUP_CFG = """\
[flake8]
select = B,C,E,F,N,P,T4,W,B9
max_line_length = 120
ignore =
    E203
    E501
    E741
    W503
    W504
    C408
    N812
    B023
    B905
    B028
    B907
    C419
per_file_ignores = __init__.py: F401, __main__.py: F401
exclude = *.pyi,.git,.eggs,monai/_version.py,versioneer.py,venv,.venv,_version.py

[isort]
known_first_party = models
profile = black
line_length = 120
skip = .git, .eggs, venv, .venv, versioneer.py, _version.py, conf.py
skip_glob = *.pyi
"""
#: the zoo's pyproject.toml section that black reads
ZOO_PYPROJECT = """\
[tool.black]
line-length = 120
target-version = ['py37', 'py38', 'py39']
include = '\\.pyi?$'
"""
#: the zoo's commands (runtests.sh), run from its root
ZOO_FORMAT_COMMANDS = {
    "isort": ["-m", "isort", "--check", "."],
    "black": ["-m", "black", "--skip-magic-trailing-comma", "--check", "."],
    "flake8": ["-m", "flake8", ".", "--count", "--statistics"],
}
#: what each zoo tool needs: the tool and, for flake8, the plugins that give the selected B, C4 and N codes
ZOO_TOOL_MODULES = {
    "isort": ["isort"],
    "black": ["black"],
    "flake8": ["flake8", "bugbear", "flake8_comprehensions", "pep8ext_naming"],
}
# ruff's rules for the zoo's flake8 selection: pycodestyle E/W, pyflakes F, bugbear B, comprehensions C4,
# pep8-naming N, less the zoo's ignores that ruff has (E203, W503, W504 and B907 are not in ruff; C90 needs a
# max-complexity, which the zoo does not set; P and T4 have no installed plugin there). The zoo ignores E501
# and checks length with B950 at 120 + 10 %: ruff's E501 at 132 columns. Import order (isort) at 120.
RUFF_LINT = [
    "check", "--isolated", "--no-cache", "--line-length", "132", "--select", "E,W,F,B,C4,N",
    "--ignore", "E741,C408,N812,B023,B905,B028,C419", "--per-file-ignores", "__init__.py:F401",
]
RUFF_ISORT = [
    "check", "--isolated", "--no-cache", "--line-length", "120", "--select", "I",
    "--config", "lint.isort.known-first-party = ['models']", "--config", "lint.isort.detect-same-package = false",
]
RUFF_FORMAT = [
    "format", "--check", "--isolated", "--no-cache", "--line-length", "120", "--target-version", "py37",
    "--config", "format.skip-magic-trailing-comma = true",
]
#: the zoo's pre-commit hook check-added-large-files --maxkb=1024
PRE_COMMIT_MAX_BYTES = 1024 * 1024


def bundle_copy(source: Path, parent: Path, weights_bytes: int | None = 1024, data_license: bool = True) -> Path:
    """The bundle's definition (no run outputs) in ``parent/<its folder name>``, with a ``models/model.pt`` of
    ``weights_bytes`` random bytes and a ``docs/data_license.txt`` (the bundle's own where it has one).

    Where the bundle records a trained checkpoint (``lesionseg record-weights``), export refuses other
    weights; the stand-in then takes the recorded checkpoint's place, its MD5 in the copy's metadata."""
    destination = parent / source.name
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("models", "eval", "easy_hard", "__pycache__"))
    if weights_bytes is not None:
        (destination / "models").mkdir()
        (destination / "models" / "model.pt").write_bytes(os.urandom(weights_bytes))
        metadata_path = destination / "configs" / "metadata.json"
        metadata = json.loads(metadata_path.read_text())
        if recorded_md5(destination) is not None:
            metadata["eval_metrics"]["model_md5"] = file_md5(destination / "models" / "model.pt")
            metadata_path.write_text(json.dumps(metadata, indent=4) + "\n")
    licence = destination / "docs" / "data_license.txt"
    if data_license and not licence.is_file():
        licence.write_text("BUSI: CC BY 4.0 (a stand-in written by the test)\n")
    if not data_license:
        licence.unlink(missing_ok=True)
    return destination


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def exported(request, tmp_path_factory):
    """Each bundle exported into a fresh model-zoo root: (kind, zoo root, bundle folder, source copy)."""
    if not FORMATTERS:
        pytest.skip("export-bundle formats with black and isort (the test extra installs them)")
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"zoo_{kind}")
    source = bundle_copy(BUNDLES[kind], tmp / "source")
    zoo = tmp / "model-zoo"
    destination = export_bundle(source, zoo, weights_url=(source / "models" / "model.pt").as_uri())
    return kind, zoo, destination, source


# ------------------------------------------------------------------------------------- (a) code format


@pytest.mark.parametrize("tool", sorted(ZOO_FORMAT_COMMANDS))
def test_exported_code_passes_the_zoos_format_ci(exported, tool, tmp_path):
    for module in ZOO_TOOL_MODULES[tool]:
        if find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the test extra installs it)")
    zoo = shutil.copytree(exported[1], tmp_path / "model-zoo", ignore=shutil.ignore_patterns("__pycache__"))
    (zoo / "setup.cfg").write_text(ZOO_SETUP_CFG)
    (zoo / "pyproject.toml").write_text(ZOO_PYPROJECT)
    python_files = sorted(str(p.relative_to(zoo)) for p in zoo.rglob("*.py"))
    assert len(python_files) > 40 and any(f.startswith("ci/unit_tests/") for f in python_files), python_files
    done = subprocess.run(
        [sys.executable, *ZOO_FORMAT_COMMANDS[tool]], cwd=zoo, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]


def _ruff() -> str:
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.is_file() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (the test extra installs it)")
    return found


@needs_formatters
def test_exported_code_passes_ruffs_equivalent_of_the_zoo_rules(exported):
    _, zoo, _, _ = exported
    for arguments in (RUFF_LINT, RUFF_ISORT, RUFF_FORMAT):
        done = subprocess.run([_ruff(), *arguments, "."], cwd=zoo, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"ruff {' '.join(arguments)}:\n{done.stdout[-6000:]}{done.stderr[-3000:]}"


def test_export_refuses_clearly_without_black_or_isort(tmp_path, monkeypatch, capsys):
    source = bundle_copy(BUNDLES["dcnet"], tmp_path / "source")
    monkeypatch.setitem(sys.modules, "black", None)  # import black raises ImportError
    assert main(["export-bundle", "--bundle", str(source), "--output", str(tmp_path / "zoo")]) == 1
    err = capsys.readouterr().err
    assert "isort and black" in err and "black is not installed" in err and "pip install" in err, err
    assert not (tmp_path / "zoo").exists()


# ----------------------------------------------------------------- (b) unit test, (c) names, (d) metadata


@needs_formatters
def test_export_is_laid_out_as_a_zoo_pull_request(exported):
    kind, zoo, destination, _ = exported
    name = ZOO_NAMES[kind]
    assert destination == zoo / "models" / name
    unit_test = zoo / "ci" / "unit_tests" / f"test_{name}.py"
    assert sorted(str(p.relative_to(zoo)) for p in zoo.iterdir()) == ["ci", "models"]
    assert [p.name for p in unit_test.parent.iterdir()] == [unit_test.name]
    text = unit_test.read_text()
    assert f'BUNDLE_NAME = "{name}"' in text and "def test_order(" in text and "ConfigWorkflow(" in text
    assert "def test_train_eval_config(self)" in text and "def test_infer_config(self)" in text
    # the bundle the zoo's verify_bundle.py looks for, and nothing the pre-commit hooks refuse
    for required in ("LICENSE", "configs/metadata.json", "configs/inference.yaml", "large_files.yml"):
        assert (destination / required).is_file(), required
    too_large = [p for p in zoo.rglob("*") if p.is_file() and p.stat().st_size > PRE_COMMIT_MAX_BYTES]
    assert not too_large
    # pre-commit's pretty-format-json --indent=4 --no-sort-keys would change nothing
    metadata = (destination / "configs" / "metadata.json").read_text()
    assert metadata == json.dumps(json.loads(metadata), indent=4) + "\n"


@needs_formatters
def test_export_lists_monai_label_in_supported_apps(exported):
    _, _, destination, source = exported
    metadata = json.loads((destination / "configs" / "metadata.json").read_text())
    assert metadata["supported_apps"]["monai-label"] == "0.8.5"
    original = json.loads((source / "configs" / "metadata.json").read_text())
    assert {k: v for k, v in metadata.items() if k not in ("supported_apps", "required_packages_version")} == {
        k: v for k, v in original.items() if k not in ("supported_apps", "required_packages_version")
    }


def test_zoo_names_are_proposed_and_a_name_can_be_chosen(tmp_path, capsys):
    assert {kind: ZOO_BUNDLES[path.name].name for kind, path in BUNDLES.items()} == ZOO_NAMES
    source = bundle_copy(BUNDLES["dcnet"], tmp_path / "source")
    unknown = bundle_copy(BUNDLES["dcnet"], tmp_path / "other" / "x").rename(tmp_path / "other" / "my_bundle")
    for bad in ("../escape", "a/b", "1st", "with-dash", ""):
        assert main(["export-bundle", "--bundle", str(source), "-o", str(tmp_path / "zoo"), "--name", bad]) == 1
        assert "not a model-zoo bundle name" in capsys.readouterr().err
    assert main(["export-bundle", "--bundle", str(unknown), "-o", str(tmp_path / "zoo")]) == 1
    err = capsys.readouterr().err
    assert f"{unknown.resolve()}: no model-zoo name is known" in err and "--name" in err, err
    assert not (tmp_path / "zoo").exists()


@needs_formatters
def test_export_with_a_chosen_name_into_a_zoo_checkout_writes_only_new_files(tmp_path, capsys):
    source = bundle_copy(BUNDLES["dcnet"], tmp_path / "source")
    zoo = tmp_path / "model-zoo"
    (zoo / "ci" / "unit_tests").mkdir(parents=True)
    (zoo / "ci" / "unit_tests" / "test_other.py").write_text("# another bundle's test\n")
    (zoo / "models" / "other").mkdir(parents=True)
    arguments = ["export-bundle", "--bundle", str(source), "-o", str(zoo), "--name", "us_dcnet_seg", "--zip"]
    assert main(arguments) == 0
    assert (zoo / "models" / "us_dcnet_seg" / "configs" / "metadata.json").is_file()
    assert (zoo / "ci" / "unit_tests" / "test_us_dcnet_seg.py").is_file()
    assert (zoo / "us_dcnet_seg.zip").is_file()
    assert (zoo / "ci" / "unit_tests" / "test_other.py").read_text() == "# another bundle's test\n"
    capsys.readouterr()
    # the same export again: every path is taken, nothing is replaced
    before = {p: p.read_bytes() for p in zoo.rglob("*") if p.is_file()}
    assert main(arguments) == 1
    assert "exists" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in zoo.rglob("*") if p.is_file()} == before
    # only the unit test is in the way: refused before anything is written
    shutil.rmtree(zoo / "models" / "us_dcnet_seg")
    (zoo / "us_dcnet_seg.zip").unlink()
    assert main(arguments[:-1]) == 1
    assert "test_us_dcnet_seg.py exists" in capsys.readouterr().err
    assert not (zoo / "models" / "us_dcnet_seg").exists()


# ---------------------------------------------------------------------------- (e) commands in the model card

CARD = """\
# A bundle

Check a dataset first with `lesionseg check-data DIR`; train with `python -m monai.bundle run`.
The network is `lesionseg.networks.nets.DCNet`.

```bash
cd bundles/dcnet_bundle
# 1. train
python -m monai.bundle run --config_file configs/train.yaml --dataset_dir /data/busi
#    5-fold cross-validation:
#    lesionseg crossval --bundle . --dataset-dir /data/busi --folds 5 \\
#        --output /tmp/cv
OMP_NUM_THREADS=1 lesionseg check-data /data/busi
# the comparison of the model card's table,
# on the grouped split
python benchmarks/busi_accuracy.py --epochs 12
```

```bash
lesionseg split /data/busi -o fold0.json
```
"""


def test_export_readme_keeps_only_the_commands_of_the_export():
    text = export_readme(CARD, "dcnet_bundle", "breast_ultrasound_dcnet_segmentation")
    assert text == """\
# A bundle

Check a dataset first with `lesionseg check-data DIR` (a lesionseg command, not part of this bundle); train \
with `python -m monai.bundle run`.
The network is `scripts.networks.nets.DCNet`.

```bash
cd breast_ultrasound_dcnet_segmentation
# 1. train
python -m monai.bundle run --config_file configs/train.yaml --dataset_dir /data/busi
```

"""


@needs_formatters
def test_exported_model_card_gives_only_commands_that_work_in_the_export(exported):
    _, _, destination, source = exported
    text = (destination / "docs" / "README.md").read_text()
    in_block, commands = False, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
        elif in_block and line.strip():
            commands.append(line)
    assert commands, "the exported model card lost its commands"
    assert not [c for c in commands if "lesionseg " in c or "benchmarks/" in c or "tests/" in c], commands
    source_text = (source / "docs" / "README.md").read_text()
    if "lesionseg crossval" in source_text or "check-data" in source_text:
        for line in text.splitlines():
            for command in ("lesionseg crossval", "lesionseg check-data"):
                if f"`{command}" in line:
                    assert "(a lesionseg command, not part of this bundle)" in line, line
    assert f"bundles/{source.name}" not in text


# ------------------------------------------------------------------------ (f) weights, (g) data licence, card


@needs_formatters
def test_export_without_weights_fails_unless_no_weights(tmp_path, capsys):
    source = bundle_copy(BUNDLES["taichinet"], tmp_path / "source", weights_bytes=None)
    zoo = tmp_path / "zoo"
    assert main(["export-bundle", "--bundle", str(source), "--output", str(zoo)]) == 1
    err = capsys.readouterr().err
    assert f"{source.resolve()}: no models/model.pt" in err and "--no-weights" in err, err
    assert not zoo.exists()
    assert main(["export-bundle", "--bundle", str(source), "--output", str(zoo), "--no-weights"]) == 0
    destination = zoo / "models" / ZOO_NAMES["taichinet"]
    assert (destination / "configs" / "metadata.json").is_file()
    assert not (destination / "large_files.yml").exists() and not (destination / "models").exists()


def test_export_without_a_data_licence_fails_clearly(tmp_path, capsys):
    source = bundle_copy(BUNDLES["dcnet"], tmp_path / "source", data_license=False)
    assert main(["export-bundle", "--bundle", str(source), "--output", str(tmp_path / "zoo")]) == 1
    err = capsys.readouterr().err
    assert f"{source.resolve()}: no docs/data_license.txt" in err and "CC BY 4.0" in err, err
    assert not (tmp_path / "zoo").exists()


@needs_formatters
def test_export_ships_the_data_licence(exported):
    _, _, destination, source = exported
    assert (destination / "docs" / "data_license.txt").read_bytes() == (
        source / "docs" / "data_license.txt"
    ).read_bytes()
    assert yaml.safe_load((destination / "large_files.yml").read_text())["large_files"][0]["path"] == "models/model.pt"


def test_missing_readme_sections_reads_the_zoo_templates_headings():
    template = (
        "# Title\n### **Authors**\nx\n### **Tags**\n## **Model Description**\n## **Data**\n#### **Preprocessing**\n"
        "## **Performance**\n## **System Configuration**\n## **Limitations** (Optional)\n"
        "## **Citation Info** (Optional)\n"
    )
    assert missing_readme_sections(template) == []
    assert missing_readme_sections("# T\n## Authors\n## Tags\n## Citation\n") == [
        "model description", "data", "performance", "system configuration", "limitations"
    ]


@pytest.mark.parametrize("kind", sorted(BUNDLES))
def test_repository_bundles_are_ready_for_the_zoo(kind):
    """The project's own bundles carry what the export needs: the data licence and a model card with the
    zoo template's sections (the model-card rewrite of issue 17 provides both)."""
    bundle = BUNDLES[kind]
    assert (bundle / "docs" / "data_license.txt").is_file(), f"{bundle}: no docs/data_license.txt"
    assert missing_readme_sections((bundle / "docs" / "README.md").read_text()) == []


# ------------------------------------------------------------------- (b) the shipped unit test, run offline


def _site_packages() -> list[str]:
    return sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


@pytest.mark.slow
@needs_formatters
def test_shipped_unit_test_passes_offline_on_cpu_without_lesionseg(exported, tmp_path):
    """The export's ``ci/unit_tests/test_<name>.py`` run as the zoo's runner runs it (unittest, its
    ``test_order``), in a Python that cannot import lesionseg (``-I -S``: no .pth of an editable install)."""
    kind, zoo, destination, _ = exported
    unit_test = zoo / "ci" / "unit_tests" / f"test_{ZOO_NAMES[kind]}.py"
    before = sorted(str(p.relative_to(destination)) for p in destination.rglob("*"))
    runner = (
        "import sys, runpy\n"
        f"sys.path[:0] = {_site_packages()!r}\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('lesionseg') is None, 'lesionseg is importable'\n"
        f"sys.argv = [{str(unit_test)!r}, '-v']\n"
        f"runpy.run_path({str(unit_test)!r}, run_name='__main__')\n"
    )
    environment = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", runner],
        cwd=tmp_path,
        env={**environment, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "Ran 2 tests" in done.stderr and "OK" in done.stderr, done.stderr[-3000:]
    after = sorted(str(p.relative_to(destination)) for p in destination.rglob("*") if "__pycache__" not in p.parts)
    assert after == [p for p in before if "__pycache__" not in p], "the unit test wrote into the bundle"

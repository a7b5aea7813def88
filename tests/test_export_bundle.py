"""``lesionseg export-bundle``: the model-zoo bundle it writes, and that bundle run where lesionseg is not
installed, through what the zoo's CI checks (see ``zoo_checks.py``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from monai.bundle import download_large_files
from test_zoo_export import bundle_copy, needs_formatters

from lesionseg.cli import main
from lesionseg.data.phantoms import write_phantom_dataset
from lesionseg.deploy.zoo import MAX_FILE_BYTES, export_bundle

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"dcnet": ROOT / "bundles" / "dcnet_bundle", "taichinet": ROOT / "bundles" / "taichinet_bundle"}
SCHEMA = ROOT.parent / "shared" / "schemas" / "meta_schema_20240725.json"
# tiny widths, 32x32 images, one epoch each, no worker processes
TINY = {
    "dcnet": {"network_def#features": [4, 8, 16, 32, 64]},
    "taichinet": {"network_def#features": [2, 4, 8, 16, 32]},
}
TRAIN = {
    "dcnet": {"max_epochs": 1, "batch_size": 2, "num_workers": 0},
    "taichinet": {
        "max_epochs": 2,
        "batch_size": 2,
        "num_workers": 0,
        "prepare_overrides": {
            "image_size": [32, 32],
            "network_def#features": [4, 4, 8, 8, 16, 4],
            "num_workers": 0,
            "batch_size": 4,
            "max_epochs": 1,
        },
    },
}


def _bundle_copy(source: Path, parent: Path, weights_bytes: int | None) -> Path:
    """The bundle's definition (no run outputs) in ``parent/<its folder name>``, with a ``models/model.pt`` of
    that size and a ``docs/data_license.txt`` (see ``test_zoo_export.bundle_copy``)."""
    return bundle_copy(source, parent, weights_bytes=weights_bytes)


@needs_formatters
def test_export_lists_large_weights_and_vendors_the_code(tmp_path):
    source = _bundle_copy(BUNDLES["dcnet"], tmp_path / "source", weights_bytes=MAX_FILE_BYTES + 1024)
    weights = source / "models" / "model.pt"
    url = weights.as_uri()  # a file:// URL, so the download below stays offline
    archive = export_bundle(source, tmp_path / "zoo", name="breast_us_dcnet", weights_url=url, make_zip=True)
    out = tmp_path / "zoo" / "models" / "breast_us_dcnet"

    assert archive == tmp_path / "zoo" / "breast_us_dcnet.zip"
    assert not (out / "models").exists(), "the weights must not be copied into the bundle folder"
    assert max(p.stat().st_size for p in out.rglob("*") if p.is_file()) <= MAX_FILE_BYTES
    entry = yaml.safe_load((out / "large_files.yml").read_text())["large_files"]
    assert entry == [
        {"path": "models/model.pt", "url": url, "hash_val": hashlib.md5(weights.read_bytes()).hexdigest(),
         "hash_type": "md5"}
    ]
    # MONAI's own downloader (the zoo's CI uses it) fetches the listed file and checks its MD5
    download_large_files(bundle_path=str(out))
    assert (out / "models" / "model.pt").read_bytes() == weights.read_bytes()
    (out / "models" / "model.pt").unlink()
    (out / "models").rmdir()

    # no lesionseg import or dotted path left in the configs (comments may still name the project)
    for config in (out / "configs").glob("*.yaml"):
        text = config.read_text()
        assert "lesionseg." not in text and "import lesionseg" not in text, config
    train = (out / "configs" / "train.yaml").read_text()
    assert "_target_: scripts.networks.nets.DCNet" in train and "$import scripts\n" in train
    assert (out / "scripts" / "networks" / "blocks" / "dcp.py").is_file()
    assert not (out / "scripts" / "cli").exists() and not (out / "scripts" / "deploy").exists()
    # the workflows layer ships: a zoo user loads a Predictor or runs a workflow from the export alone
    probe = (
        "import scripts.workflows.predictor as p, scripts.workflows.bundle as b; "
        "print(p.Predictor.__module__, b.run_workflow.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=out, env={**os.environ, "PYTHONPATH": str(out)},
                          capture_output=True, text=True)
    assert done.stdout.split() == ["scripts.workflows.predictor", "scripts.workflows.bundle"], done.stderr[-2000:]
    for module in (out / "scripts").rglob("*.py"):
        assert "import lesionseg" not in module.read_text() and "from lesionseg" not in module.read_text(), module
    metadata = json.loads((out / "configs" / "metadata.json").read_text())
    required = metadata["required_packages_version"]
    assert "lesionseg" not in required and {"scikit-image", "pillow", "pytorch-ignite", "scipy"} <= set(required)
    assert metadata["version"] in metadata["changelog"]

    # the zip holds the folder's files under the bundle's name
    with zipfile.ZipFile(archive) as stream:
        names = set(stream.namelist())
    files = {f"breast_us_dcnet/{p.relative_to(out).as_posix()}" for p in out.rglob("*") if p.is_file()}
    assert names == files


def test_export_refuses_a_used_output_and_a_non_bundle(tmp_path):
    source = _bundle_copy(BUNDLES["dcnet"], tmp_path / "source", weights_bytes=1024)
    used = tmp_path / "zoo" / "models" / "breast_ultrasound_dcnet_segmentation"
    used.mkdir(parents=True)
    (used / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export_bundle(source, tmp_path / "zoo")
    assert (used / "keep.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="configs/metadata.json"):
        export_bundle(tmp_path, tmp_path / "out")
    assert main(["export-bundle", "--bundle", str(tmp_path), "--output", str(tmp_path / "out2")]) == 1


def _isolated_python_sees_no_lesionseg() -> list[str]:
    """The site-packages folders to hand to ``python -I -S`` (read without their ``.pth`` files)."""
    return sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


@pytest.mark.slow
@needs_formatters
@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_exported_bundle_passes_zoo_checks_without_lesionseg(name, tmp_path):
    if not SCHEMA.is_file():
        pytest.skip(f"model-zoo schema not found at {SCHEMA}")
    data = write_phantom_dataset(tmp_path / "data", num_images=8, seed=1, size=(48, 64), progress=False)
    source = _bundle_copy(BUNDLES[name], tmp_path / "source", weights_bytes=None)
    out = tmp_path / "zoo" / "models" / f"{name}_ultrasound"
    arguments = ["--bundle", str(source), "--output", str(tmp_path / "zoo"), "--name", f"{name}_ultrasound"]
    assert main(["export-bundle", *arguments, "--no-weights"]) == 0
    spec = {
        "bundle": str(out),
        "site_packages": _isolated_python_sees_no_lesionseg(),
        "schema": str(SCHEMA),
        "dataset_dir": str(data),
        "overrides": {"image_size": [32, 32], **TINY[name]},
        "train_overrides": TRAIN[name],
        "net_overrides": TINY[name],
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    environment = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(ROOT / "tests" / "zoo_checks.py"), str(spec_file)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["lesionseg_loaded"] is False
    assert report["network_module"].startswith("scripts.networks.nets")
    assert report["epochs"] == TRAIN[name]["max_epochs"]
    assert report["torchscript_output_shape"] == [1, 1, 32, 48]
    assert len(report["masks"]) == 8
    assert "models/model.pt" in report["files"] and "models/verify_model.ts" in report["files"]


def _exported_files(out: Path) -> set[str]:
    """The export's files, less the vendored code."""
    files = (p.relative_to(out) for p in out.rglob("*") if p.is_file())
    return {path.as_posix() for path in files if path.parts[0] != "scripts"}


@needs_formatters
def test_export_copies_only_what_defines_the_bundle(tmp_path, caplog):
    source = _bundle_copy(BUNDLES["dcnet"], tmp_path / "source", weights_bytes=1024)
    definition = {
        p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file() and "models" not in p.parts
    }
    strays = [
        "training_state.pt", "train.log", "nohup.out", "model.ts", "model.onnx", "models/training_state.pt",
        "models/model.ts", "eval/per_image.csv", "eval/events.out.tfevents.1", "configs/train.yaml.bak",
        "configs/.train.yaml.swp", "configs/__pycache__/x.pyc", "docs/.cache/x", "cache/data.npz", ".git/config",
    ]
    for stray in strays:
        (source / stray).parent.mkdir(parents=True, exist_ok=True)
        (source / stray).write_bytes(b"stray")
    (source / "docs" / "card.md").symlink_to("README.md")  # a link inside the bundle: copied as the file
    with caplog.at_level("WARNING", logger="lesionseg.deploy.zoo"):
        out = export_bundle(source, tmp_path / "zoo", name="breast_us_dcnet")
    assert _exported_files(out) == definition | {"large_files.yml", "docs/card.md"}
    assert not (out / "docs" / "card.md").is_symlink()
    assert (out / "docs" / "card.md").read_text() == (source / "docs" / "README.md").read_text()
    assert "training_state.pt (not part of a bundle's definition)" in caplog.text
    assert "train.yaml.bak (not part of a bundle's definition)" in caplog.text


@needs_formatters
@pytest.mark.parametrize(
    "link, target_kind",
    [("docs/notes.md", "file"), ("configs/extra.yaml", "file"), ("docs/figures", "folder"), ("LICENSE", "file")],
)
def test_export_refuses_a_link_out_of_the_bundle(tmp_path, capsys, link, target_kind):
    source = _bundle_copy(BUNDLES["dcnet"], tmp_path / "source", weights_bytes=None)
    private = tmp_path / "private"
    private.mkdir()
    (private / "id_rsa.md").write_text("SECRET KEY")
    link_path = source / link
    link_path.unlink(missing_ok=True)
    link_path.symlink_to(private / "id_rsa.md" if target_kind == "file" else private)
    out = tmp_path / "zoo" / "models" / "breast_ultrasound_dcnet_segmentation"
    assert main(["export-bundle", "--bundle", str(source), "--output", str(tmp_path / "zoo"), "--no-weights"]) == 1
    err = capsys.readouterr().err
    assert f"{link_path}: symbolic link to {private}" in err and "outside the bundle" in err, err
    assert not out.exists() and list(out.parent.iterdir()) == []


@needs_formatters
def test_export_leaves_out_stray_links_without_following_them(tmp_path):
    source = _bundle_copy(BUNDLES["dcnet"], tmp_path / "source", weights_bytes=None)
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.txt").write_text("SECRET KEY")
    (source / "data").symlink_to(private)  # e.g. a dataset linked into the bundle folder
    (source / "eval").symlink_to(private)
    out = export_bundle(source, tmp_path / "zoo", no_weights=True)
    assert not any("SECRET KEY" in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())
    assert not (out / "data").exists() and not (out / "eval").exists()


def test_export_zip_never_replaces_an_existing_archive(tmp_path):
    source = _bundle_copy(BUNDLES["dcnet"], tmp_path / "source", weights_bytes=1024)
    (tmp_path / "zoo").mkdir()
    archive = tmp_path / "zoo" / "breast_us_dcnet.zip"
    archive.write_bytes(b"someone else's archive")
    with pytest.raises(FileExistsError, match="breast_us_dcnet.zip exists"):
        export_bundle(source, tmp_path / "zoo", name="breast_us_dcnet", make_zip=True)
    assert archive.read_bytes() == b"someone else's archive"
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["breast_us_dcnet.zip"]


@needs_formatters
def test_a_failed_archive_leaves_no_export_and_a_rerun_succeeds(tmp_path, monkeypatch):
    """The archive is written before the export is put in place: a full disk while zipping leaves nothing that
    would block the rerun (an export folder, its unit test, part of an archive)."""
    import lesionseg.deploy.zoo as zoo

    source = _bundle_copy(BUNDLES["dcnet"], tmp_path / "source", weights_bytes=None)
    written = zoo._zip

    def full_disk(folder, archive, root):  # replacing() removes its temporary file: no part of an archive stays
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zoo, "_zip", full_disk)
    with pytest.raises(OSError, match="breast_us_dcnet.zip"):
        export_bundle(source, tmp_path / "zoo", name="breast_us_dcnet", make_zip=True, no_weights=True)
    left = sorted(p.relative_to(tmp_path / "zoo").as_posix() for p in (tmp_path / "zoo").rglob("*") if p.is_file())
    assert left == [], left
    monkeypatch.setattr(zoo, "_zip", written)
    archive = export_bundle(source, tmp_path / "zoo", name="breast_us_dcnet", make_zip=True, no_weights=True)
    with zipfile.ZipFile(archive) as stream:
        names = stream.namelist()
    assert "breast_us_dcnet/configs/metadata.json" in names and all(n.startswith("breast_us_dcnet/") for n in names)
    assert (tmp_path / "zoo" / "models" / "breast_us_dcnet" / "configs" / "metadata.json").is_file()


@needs_formatters
def test_export_names_a_broken_metadata_file(tmp_path, capsys):
    source = _bundle_copy(BUNDLES["dcnet"], tmp_path / "source", weights_bytes=None)
    (source / "configs" / "metadata.json").write_text('{"version": "0.1",')
    out = tmp_path / "zoo" / "models" / "breast_ultrasound_dcnet_segmentation"
    assert main(["export-bundle", "--bundle", str(source), "--output", str(tmp_path / "zoo"), "--no-weights"]) == 1
    err = capsys.readouterr().err.strip()
    metadata = source / "configs" / "metadata.json"
    assert err.startswith(f"lesionseg export-bundle: {metadata}: not a valid bundle metadata file"), err
    assert not out.exists() and list(out.parent.iterdir()) == []

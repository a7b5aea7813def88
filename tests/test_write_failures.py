"""Writing fails (disk full, read-only folder): the commands say so in one line that names the file or folder,
exit with 1, and leave no half-written file where a good one stood (lesionseg.utils.files).

The tests run as root, for whom ``chmod`` blocks nothing, so the failures are injected: :func:`_failing_disk`
replaces ``open`` (which Python, PIL, matplotlib, ``zipfile`` and ``shutil`` all write through) for the files
under one folder, by a file whose writes fail once a byte budget is spent, as a full disk does (ENOSPC from
``write``, with no file name), or whose opening fails as on a read-only file system (EROFS).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
from pathlib import Path

import pytest
from test_zoo_export import bundle_copy, needs_formatters

from lesionseg.cli import main
from lesionseg.data.datalist import write_datalist
from lesionseg.data.grouping import save_groups
from lesionseg.metrics.tables import write_summary_json
from lesionseg.utils.files import describe_os_error, replacing

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--size", "40", "48"]


class _FullFile:
    """A real file object whose ``write`` stores what fits in the shared budget and then fails (ENOSPC)."""

    def __init__(self, file, budget: list[int]) -> None:
        self._file, self._budget = file, budget

    def write(self, data):
        fits = max(0, min(len(data), self._budget[0]))
        self._budget[0] -= fits
        if fits < len(data):
            self._file.write(data[:fits])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __iter__(self):
        return iter(self._file)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._file.close()
        return False


def _failing_disk(monkeypatch, folder: Path, budget: int = 0, error: int = errno.ENOSPC) -> None:
    """From now on, files opened for writing under ``folder`` fail: ENOSPC after ``budget`` bytes over all of
    them, or ``error`` (e.g. EROFS) at opening when it is not ENOSPC."""
    real_open = io.open
    remaining = [budget]
    folder = folder.resolve()

    def fake_open(file, mode="r", *args, **kwargs):
        writing = isinstance(file, (str, os.PathLike)) and any(flag in mode for flag in "wax+")
        if writing and folder in Path(os.path.abspath(file)).parents:
            if error != errno.ENOSPC:
                raise OSError(error, os.strerror(error), str(file))
            return _FullFile(real_open(file, mode, *args, **kwargs), remaining)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------------------ the helper


def test_replacing_keeps_the_old_file_and_names_the_target_when_the_disk_fills(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text('{"dice": 0.8}\n')
    _failing_disk(monkeypatch, tmp_path, budget=5)
    with pytest.raises(OSError) as raised:
        with replacing(target) as temporary:
            temporary.write_text('{"dice": 0.9, "more": "text than fits"}\n')
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert describe_os_error(raised.value) == f"{target}: No space left on device (free some space or write elsewhere)"
    assert _snapshot(tmp_path) == {"summary.json": b'{"dice": 0.8}\n'}, (
        "the old file must stay whole, no temporary left"
    )


def test_metrics_summary_datalist_and_groups_keep_the_previous_file_on_a_full_disk(tmp_path, monkeypatch):
    summary, datalist, groups = tmp_path / "summary.json", tmp_path / "datalist.json", tmp_path / "groups.json"
    write_summary_json({"dice": 0.5}, summary)
    write_datalist(datalist, {"training": [{"image": str(tmp_path / "a.png")}]})
    save_groups(groups, [["a", "b"]])
    before = _snapshot(tmp_path)
    _failing_disk(monkeypatch, tmp_path, budget=3)
    with pytest.raises(OSError, match="No space left"):
        write_summary_json({"dice": 0.75, "n": 10}, summary)
    with pytest.raises(OSError, match="No space left"):
        write_datalist(datalist, {"training": [{"image": str(tmp_path / "b.png")}] * 3})
    with pytest.raises(OSError, match="No space left") as raised:
        save_groups(groups, [["a", "b"], ["c", "d"]])
    assert raised.value.filename == str(groups)
    assert _snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------- the commands


def test_phantoms_on_a_full_disk_keeps_the_previous_dataset_and_says_so(tmp_path, monkeypatch, capsys):
    output = tmp_path / "phantoms"
    assert main(["phantoms", str(output), "--num", "4", "--seed", "0", *SMALL]) == 0
    before = _snapshot(output)
    capsys.readouterr()
    _failing_disk(monkeypatch, output, budget=3000)  # a few images fit, then the disk is full
    assert main(["phantoms", str(output), "--num", "6", "--seed", "1", *SMALL, "--overwrite"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line == f"lesionseg phantoms: {output}: No space left on device (free some space or write elsewhere)"
    assert _snapshot(output) == before, "the previous dataset must be kept whole, with nothing half-written"


def test_phantoms_into_a_read_only_folder_leaves_nothing(tmp_path, monkeypatch, capsys):
    output = tmp_path / "new"
    _failing_disk(monkeypatch, tmp_path, error=errno.EROFS)
    assert main(["phantoms", str(output), "--num", "2", *SMALL]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"lesionseg phantoms: {output}: Read-only file system"), line
    assert not output.exists()


def test_split_on_a_full_disk_keeps_the_previous_datalist(tiny_busi, tmp_path, monkeypatch, capsys):
    output = tmp_path / "split" / "datalist.json"
    assert main(["split", str(tiny_busi), "-o", str(output), "--groups", "none"]) == 0
    before = _snapshot(output.parent)
    capsys.readouterr()
    _failing_disk(monkeypatch, output.parent, budget=100)
    assert main(["split", str(tiny_busi), "-o", str(output), "--groups", "none", "--seed", "3", "--overwrite"]) == 1
    assert _one_line(capsys.readouterr().err) == (
        f"lesionseg split: {output}: No space left on device (free some space or write elsewhere)"
    )
    assert _snapshot(output.parent) == before


def test_split_refuses_to_write_over_the_datalist_it_splits(tiny_busi, tmp_path, capsys):
    datalist = tmp_path / "datalist.json"
    assert main(["split", str(tiny_busi), "-o", str(datalist), "--groups", "none"]) == 0
    before = datalist.read_bytes()
    capsys.readouterr()
    assert main(["split", str(datalist), "-o", str(datalist), "--groups", "none", "--seed", "5", "--overwrite"]) == 1
    assert "is the datalist being split" in _one_line(capsys.readouterr().err)
    assert datalist.read_bytes() == before


@needs_formatters
@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES])
def test_export_bundle_that_cannot_write_leaves_no_folder(tmp_path, monkeypatch, capsys, error):
    bundle = bundle_copy(ROOT / "bundles" / "dcnet_bundle", tmp_path / "source", weights_bytes=None)
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    _failing_disk(monkeypatch, zoo, budget=20_000, error=error)
    assert main(["export-bundle", "--bundle", str(bundle), "--output", str(zoo), "--no-weights"]) == 1
    line = _one_line(capsys.readouterr().err)
    output = zoo / "models" / "breast_ultrasound_dcnet_segmentation"
    assert line.startswith(f"lesionseg export-bundle: {output}: {os.strerror(error)}"), line
    assert list(output.parent.iterdir()) == [], "no half-written export and no temporary folder may be left"
    assert not (zoo / "ci").exists()


def test_a_read_error_is_one_line_too(tmp_path, monkeypatch, capsys):
    """main turns any OSError a subcommand lets through into one line (here: reading the dataset fails)."""
    source = tmp_path / "datalist.json"
    source.write_text(json.dumps({"training": []}))

    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(source))

    monkeypatch.setattr("lesionseg.cli.check_data.inspect_dataset", unreadable)
    assert main(["check-data", str(source)]) == 1
    assert _one_line(capsys.readouterr().err) == (
        f"lesionseg check-data: {source}: Permission denied (check the permissions of the file and its folder)"
    )


def test_epoch_log_on_a_full_disk_leaves_no_broken_line(tmp_path, monkeypatch):
    """A run that resumes after the disk was full appends clean lines: the log stays readable."""
    from ignite.engine import Engine

    from lesionseg.engines.training_log import EpochLog, read_epoch_log

    path = tmp_path / "train" / "epochs.jsonl"
    trainer = Engine(lambda engine, batch: [{"loss": 0.5}])
    EpochLog(path).attach(trainer)
    trainer.run([0], max_epochs=1)
    with monkeypatch.context() as patch:
        _failing_disk(patch, tmp_path, budget=10)
        with pytest.raises(OSError, match="No space left"):
            trainer.run([0], max_epochs=2)
    resumed = Engine(lambda engine, batch: [{"loss": 0.25}])  # once there is space again, as a resumed run
    EpochLog(path).attach(resumed)
    resumed.load_state_dict({"epoch": 2, "max_epochs": 3, "epoch_length": 1})
    resumed.run([0])
    assert [record["epoch"] for record in read_epoch_log(path)] == [1, 3]


def test_examples_in_the_helpers_docstrings_run():
    import doctest

    from lesionseg.utils import files

    assert doctest.testmod(files, raise_on_error=False).failed == 0


def test_replacing_keeps_the_suffix_writers_choose_the_format_by(tmp_path):
    import nibabel
    import numpy as np

    target = tmp_path / ("a long case name " * 12 + "_mask.nii.gz")
    with replacing(target) as temporary:
        assert temporary.name.endswith(".nii.gz") and len(temporary.name) < 255
        nibabel.save(nibabel.Nifti1Image(np.zeros((2, 3), np.uint8), np.eye(4)), temporary)
    assert nibabel.load(target).shape == (2, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_replacing_passes_an_error_without_errno_through_unchanged(tmp_path):
    error = FileNotFoundError("model.pt: not found")
    with pytest.raises(FileNotFoundError) as raised:
        with replacing(tmp_path / "out.json"):
            raise error
    assert raised.value is error and raised.value.__cause__ is None
    assert list(tmp_path.iterdir()) == []


def test_replacing_exclusive_never_replaces_a_file_and_names_it(tmp_path):
    target = tmp_path / "test_bundle.py"
    with replacing(target, exclusive=True, suffix=".tmp") as temporary:
        assert temporary.name.startswith(".test_bundle.py.") and temporary.name.endswith(".tmp")
        temporary.write_text("first\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_bundle.py"]
    with pytest.raises(FileExistsError) as raised:
        with replacing(target, exclusive=True) as temporary:
            temporary.write_text("second\n")
    assert raised.value.filename == str(target)
    assert _snapshot(tmp_path) == {"test_bundle.py": b"first\n"}, "the file must stay, no temporary left"


def test_replacing_durable_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    synced = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    def replace(source, destination):
        synced.append("rename")
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with replacing(target, durable=True) as temporary:
        temporary.write_bytes(b"new")
    assert synced == [str(temporary.resolve()), "rename", str(tmp_path.resolve())]
    assert target.read_bytes() == b"new"
    synced.clear()
    with replacing(target) as temporary:
        temporary.write_bytes(b"newer")
    assert synced == ["rename"], "only durable writes pay for fsync"

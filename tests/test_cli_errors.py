"""Errors raised through the command line use its words: the option a user typed (``--overwrite``,
``--size``, ``--fold``), not the library's parameter (``overwrite=True``, ``PhantomConfig.height``,
``num_folds``), and they come before any work is done."""

from __future__ import annotations

from pathlib import Path

import pytest

from lesionseg.cli import main
from lesionseg.data.phantoms import write_phantom_dataset


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_phantom_dataset(
        tmp_path_factory.mktemp("data") / "p", num_images=8, seed=0, size=(32, 32), progress=False
    )


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(
    "options, words",
    [
        (["--folds", "3"], "--folds and --fold go together"),
        (["--fold", "1"], "--folds and --fold go together"),
        (["--folds", "3", "--fold", "5"], "--fold: need 0 to 2 with --folds 3, got 5"),
        (["--folds", "1", "--fold", "0"], "--folds: need at least 2 folds, got 1"),
        (["--val-fraction", "2"], "--val-fraction: need a fraction in [0, 1), got 2.0"),
        (["--val-fraction", "nan"], "--val-fraction: need a fraction in [0, 1), got nan"),
        (["--test-fraction", "-0.1"], "--test-fraction: need a fraction in [0, 1), got -0.1"),
        (["--test-fraction", "0.9"], "--val-fraction 0.2 and --test-fraction 0.9 leave no training data"),
    ],
)
def test_split_names_the_option_not_the_parameter(phantoms, tmp_path, capsys, options, words):
    output = tmp_path / "datalist.json"
    assert main(["split", str(phantoms), "-o", str(output), "--groups", "none", *options]) == 1
    err = _error(capsys)
    assert words in err, err
    assert "num_folds" not in err and "val_fraction" not in err and "test_fraction" not in err
    assert not output.exists()


def test_phantoms_size_error_names_the_option(tmp_path, capsys):
    assert main(["phantoms", str(tmp_path / "out"), "--size", "8", "8"]) == 1
    assert _error(capsys).startswith("error: --size 8 8: ")
    assert not (tmp_path / "out").exists()


def test_demo_checks_its_arguments_and_bundle_before_writing_anything(tmp_path, capsys):
    output = tmp_path / "demo"
    for option in (["--epochs", "0"], ["--num-images", "4"]):
        with pytest.raises(SystemExit):
            main(["demo", "--output", str(output), *option])
        assert f"argument {option[0]}: need a whole number >=" in capsys.readouterr().err
    assert main(["demo", "--output", str(output), "--bundle", str(tmp_path / "no_bundle")]) == 1
    err = capsys.readouterr().err.strip()
    missing = "no configs/train.yaml or configs/train.json (is this a MONAI bundle?)"
    assert err == f"lesionseg demo: {tmp_path / 'no_bundle'}: {missing}"
    assert not output.exists(), "nothing may be written before the bundle is found"


def test_phantoms_contact_sheet_never_replaces_a_file_unless_overwrite(tmp_path, capsys):
    picture = tmp_path / "scan.png"
    picture.write_bytes(b"someone's picture")
    argv = ["phantoms", str(tmp_path / "out"), "--num", "2", "--size", "32", "32", "--contact-sheet", str(picture)]
    assert main(argv) == 1
    assert _error(capsys) == f"error: {picture}: exists; choose another file or pass --overwrite"
    assert picture.read_bytes() == b"someone's picture" and not (tmp_path / "out").exists()
    assert main([*argv, "--overwrite"]) == 0
    assert picture.read_bytes().startswith(b"\x89PNG")

"""The ``lesionseg`` command: every subcommand is registered and explains itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lesionseg import __version__
from lesionseg.cli import SUBCOMMANDS, build_parser, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name.replace("_", "-") in text


@pytest.mark.parametrize("name", [name.replace("_", "-") for name in SUBCOMMANDS])
def test_each_subcommand_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) > 3


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: lesionseg" in capsys.readouterr().out


def test_every_subcommand_runs_something():
    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"][0].choices
    assert all(callable(sub.get_default("func")) for sub in actions.values())


def test_python_dash_m_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "lesionseg", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"lesionseg {__version__}"


def test_check_data_on_a_missing_folder_fails_with_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["check-data", str(missing)]) != 0
    captured = capsys.readouterr()
    assert str(missing) in captured.out + captured.err

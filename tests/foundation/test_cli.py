"""CLI basics through newsmtl.cli.main (no subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest

import newsmtl
from newsmtl.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "newsmtl %s" % newsmtl.__version__


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage: newsmtl" in out
    assert "schemas" in out
    assert "--version" in out


def test_missing_option_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas"]) == 2
    assert "--out" in capsys.readouterr().err


def test_unknown_command_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert "no-such-command" in capsys.readouterr().err


def test_schemas_into_a_file_path_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    assert main(["schemas", "--out", str(blocker)]) != 0
    assert str(blocker) in capsys.readouterr().err

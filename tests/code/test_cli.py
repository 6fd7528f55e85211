"""The command surface of ../shared/CLI.md: every command answers --help, and generated files are current."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tftmon.cli import main


@pytest.mark.parametrize("command", [[], ["generate"], ["validate"], ["contract"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_generated_contract_files_are_current() -> None:
    result = CliRunner().invoke(main, ["contract", "--markdown", "--expectations", "--check", "--root", str(ROOT)])
    assert result.exit_code == 0, result.output


def test_contract_check_flags_a_stale_doc(tmp_path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "DATA_CONTRACT.md").write_text("old\n")
    result = CliRunner().invoke(main, ["contract", "--markdown", "--check", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "stale" in result.output


def test_generate_rejects_a_too_short_interval(tmp_path) -> None:
    result = CliRunner().invoke(main, ["generate", "--interval", "1s", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "5s or more" in result.output

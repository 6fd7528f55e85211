"""The command surface of ../shared/CLI.md: every command answers --help, defaults come from the configs, errors
are one line naming what is wrong, and generated files are current."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import click
import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tftmon.cli import main
from tftmon.config import EvaluationConfig, Scenario, ServiceConfig, SimulationConfig, TrainConfig
from tftmon.ops import jobs
from tftmon.serve.lifeline import SERVER_PID_ENV


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and subcommand below `group`, with the words that invoke it."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


#: `tftmon ...` -> (the words after tftmon, the command), for the group itself and every (sub)command.
HELP_CASES = {" ".join(("tftmon", *words)): (words, command) for words, command in [((), main), *_commands(main)]}


@pytest.mark.parametrize("case", sorted(HELP_CASES))
def test_every_command_has_help(case: str) -> None:
    words, command = HELP_CASES[case]
    result = CliRunner().invoke(main, [*words, "--help"])
    assert result.exit_code == 0, result.output
    description = (command.help or "").strip()
    assert description, f"`{case}` has no description"
    assert description.split()[0] in result.output


def test_help_defaults_are_the_config_defaults() -> None:
    generate = CliRunner().invoke(main, ["generate", "--help"]).output
    assert f"(default {SimulationConfig.model_fields['hours'].default})" in generate
    assert f"[{'|'.join(get_args(Scenario))}]" in generate
    train = CliRunner().invoke(main, ["train", "--help"]).output
    assert f"(default {TrainConfig.model_fields['max_epochs'].default})" in train


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Jobs replaced by recorders: the CLI's parsing is tested without simulating or training."""
    calls: dict[str, Any] = {}

    def run_generate(config: SimulationConfig, out: Path, progress: bool = True) -> dict:
        calls["generate"] = config
        return {"rows": 1, "fleet": []}

    def run_train(path: Path, config: TrainConfig, eval_config: EvaluationConfig) -> dict:
        calls["train"] = (config, eval_config)
        return {"summary": "", "version": "1", "run_id": "r"}

    monkeypatch.setattr(jobs, "run_generate", run_generate)
    monkeypatch.setattr(jobs, "run_train", run_train)
    return calls


def test_left_out_options_keep_the_config_defaults(captured: dict[str, Any], tmp_path: Path) -> None:
    assert CliRunner().invoke(main, ["generate", "--out", str(tmp_path)]).exit_code == 0
    assert captured["generate"] == SimulationConfig()
    assert CliRunner().invoke(main, ["train", str(tmp_path)]).exit_code == 0
    assert captured["train"] == (TrainConfig(), EvaluationConfig())


def test_train_options_reach_the_nested_model_config(captured: dict[str, Any], tmp_path: Path) -> None:
    argv = ["train", str(tmp_path), "--hidden-size", "8", "--max-epochs", "2", "--devices", "2", "--holdout-hours", "9"]
    assert CliRunner().invoke(main, argv).exit_code == 0
    config, eval_config = captured["train"]
    assert (config.model.hidden_size, config.max_epochs, config.devices) == (8, 2, "2")
    assert eval_config.holdout_hours == 9


def test_a_bad_value_is_one_line_naming_the_field(captured: dict[str, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", str(tmp_path), "--max-epochs", "0"])
    assert result.exit_code == 2 and "train" not in captured
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert error == ["Error: invalid TrainConfig: max_epochs: Input should be greater than or equal to 1"]
    assert "Traceback" not in result.output


def test_an_unknown_option_lists_the_valid_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", str(tmp_path), "--max-epoch", "1"])
    assert result.exit_code == 2
    assert "No such option '--max-epoch'" in result.output
    assert "Valid options: --targets, --max-epochs, --max-batches-per-epoch," in result.output


def test_serve_becomes_bentoml_with_the_service_config_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The options and the server's pid reach BentoML's environment, and only its: the caller's (a test, or
    anything else that runs the command in-process) keeps none of them."""
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setenv("TFTMON_SERVICE_HOST", "0.0.0.0")
    assert CliRunner().invoke(main, ["serve"]).exit_code == 0
    assert CliRunner().invoke(main, ["serve", "--port", "3100"]).exit_code == 0
    port = str(ServiceConfig.model_fields["port"].default)
    head = [sys.executable, "-m", "bentoml", "serve", "tftmon.serve.service:Tftmon"]
    assert [(path, argv) for path, argv, _ in calls] == [
        (sys.executable, [*head, "--host", "0.0.0.0", "--port", port]),
        (sys.executable, [*head, "--host", "0.0.0.0", "--port", "3100"]),
    ]
    assert calls[1][2][SERVER_PID_ENV] == str(os.getpid()) and SERVER_PID_ENV not in os.environ


def test_serve_refuses_a_bad_service_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "execve", lambda path, argv, env: pytest.fail("must not start"))
    monkeypatch.setenv("TFTMON_SERVICE_PORT", "http")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert "Error: invalid ServiceConfig: port: Input should be a valid integer" in result.output


def test_generated_contract_files_are_current() -> None:
    result = CliRunner().invoke(main, ["contract", "--markdown", "--expectations", "--check", "--root", str(ROOT)])
    assert result.exit_code == 0, result.output


def test_contract_check_flags_a_stale_doc(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "DATA_CONTRACT.md").write_text("old\n")
    result = CliRunner().invoke(main, ["contract", "--markdown", "--check", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "stale" in result.output


def test_generate_rejects_a_too_short_interval(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["generate", "--interval", "1s", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "5s or more" in result.output

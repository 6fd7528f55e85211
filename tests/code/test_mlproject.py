"""Every MLproject entry point, with its default parameters, expands to a command our CLI accepts; empty
parameters mean the config defaults; a misspelt parameter fails naming itself and the valid options.

The commands are expanded by MLflow's own code and by bash exactly as `mlflow run` does, then parsed (not run)
by click; where a test runs a command, the job is replaced by a recorder.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from mlflow.projects._project_spec import load_project

from tests.conftest import ROOT
from tftmon.cli import main
from tftmon.config import EvaluationConfig, SimulationConfig, TrainConfig
from tftmon.ops import jobs

ENTRY_POINTS = load_project(str(ROOT))._entry_points


def _argv(name: str, parameters: dict[str, str], tmp_path: Path) -> list[str]:
    """The argv bash makes of an entry point's command with these -P parameters (quotes removed, $(...) run).

    MLflow appends a parameter the entry point does not declare as `--name value`.
    """
    command = ENTRY_POINTS[name].compute_command(parameters, str(tmp_path))
    done = subprocess.run(["bash", "-c", f"set -- {command}; printf '%s\\0' \"$@\""], capture_output=True, check=True)
    argv = done.stdout.decode().split("\0")[:-1]
    assert argv[0] == "tftmon"
    return argv[1:]


def _parse(argv: list[str]) -> click.Context:
    """Parse a command line as `tftmon` would (group settings included), without running it."""
    group = main.make_context("tftmon", argv[:1])
    command = main.get_command(group, argv[0])
    assert command is not None, f"MLproject calls unknown command {argv[0]}"
    return command.make_context(argv[0], argv[1:], parent=group)


def test_the_documented_entry_points_exist() -> None:
    assert {"generate", "validate", "train", "evaluate", "promote"} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_default_parameters_parse(name: str, tmp_path: Path) -> None:
    _parse(_argv(name, {}, tmp_path))  # raises click.UsageError/BadParameter on a bad default


def test_empty_parameters_mean_the_config_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run_generate(config: SimulationConfig, out: Path, progress: bool) -> dict[str, Any]:
        seen["generate"] = config
        return {"rows": 1, "fleet": []}

    def run_train(path: Path, config: TrainConfig, eval_config: EvaluationConfig) -> dict[str, Any]:
        seen["train"] = (config, eval_config)
        return {"summary": "", "version": "1", "run_id": "r"}

    monkeypatch.setattr(jobs, "run_generate", run_generate)
    monkeypatch.setattr(jobs, "run_train", run_train)
    for name, parameters in (("generate", {"out": str(tmp_path / "out")}), ("train", {"path": str(tmp_path)})):
        result = CliRunner().invoke(main, _argv(name, parameters, tmp_path))
        assert result.exit_code == 0, result.output
    assert seen == {"generate": SimulationConfig(), "train": (TrainConfig(), EvaluationConfig())}


def test_a_misspelt_parameter_names_itself_and_the_valid_options(tmp_path: Path) -> None:
    argv = _argv("train", {"max_epoch": "1"}, tmp_path)
    assert argv[-2:] == ["--max_epoch", "1"]
    with pytest.raises(click.NoSuchOption) as caught:
        _parse(argv)
    message = caught.value.format_message()
    assert message.startswith("No such option '--max-epoch'. (Did you mean one of: ")
    train = main.get_command(click.Context(main), "train")
    assert train is not None
    options = [opt for param in train.params if isinstance(param, click.Option) for opt in param.opts]
    assert all(opt in message for opt in options)


def test_an_undeclared_parameter_reaches_its_option(tmp_path: Path) -> None:
    """Any `tftmon` option works as -P in snake_case, declared in MLproject or not."""
    ctx = _parse(_argv("train", {"holdout_hours": "40", "max_epochs": "2"}, tmp_path))
    assert (ctx.params["holdout_hours"], ctx.params["max_epochs"]) == ("40", "2")

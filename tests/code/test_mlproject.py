"""Every MLproject entry point, with its default parameters, expands to a command our CLI accepts.

The commands are expanded by bash exactly as `mlflow run` does, then parsed (not run) by click.
"""

from __future__ import annotations

import subprocess

import click
import pytest
from mlflow.projects._project_spec import load_project

from tests.conftest import ROOT
from tftmon.cli import main

ENTRY_POINTS = load_project(str(ROOT))._entry_points


def _argv(command: str) -> list[str]:
    """The argv bash makes of an entry point's command line (quotes removed, $(...) expanded)."""
    done = subprocess.run(["bash", "-c", f"set -- {command}; printf '%s\\0' \"$@\""], capture_output=True, check=True)
    return done.stdout.decode().split("\0")[:-1]


def test_the_documented_entry_points_exist() -> None:
    assert {"generate", "validate", "train", "evaluate", "promote"} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_default_parameters_parse(name: str, tmp_path) -> None:
    argv = _argv(ENTRY_POINTS[name].compute_command({}, str(tmp_path)))
    assert argv[0] == "tftmon"
    command = main.get_command(click.Context(main), argv[1])
    assert command is not None, f"MLproject entry point {name} calls unknown command {argv[1]}"
    command.make_context(argv[1], argv[2:])  # raises click.UsageError/BadParameter on a bad default

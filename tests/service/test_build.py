"""`bentoml build` succeeds offline, asks for CPU torch (never a CUDA lock), and bentofile.yaml's package
list stays the project's own dependency list."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from tests.conftest import ROOT

CPU_TORCH = "torch==2.13.0+cpu"


def test_bentofile_packages_are_cpu_torch_plus_the_project_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    packages = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["python"]["packages"]
    expected = [CPU_TORCH, *(d for d in project if not d.startswith("torch"))]
    assert packages == expected, "bentofile.yaml python.packages drifted from pyproject.toml dependencies"


def test_bento_builds_with_cpu_torch(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    done = subprocess.run(
        [sys.executable, "-m", "bentoml", "build"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    requirements = next((tmp_path / "bentoml" / "bentos" / "tftmon").glob("*/env/python/requirements.txt"))
    lines = requirements.read_text().splitlines()
    assert CPU_TORCH in lines
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert any(line.startswith("pytorch-forecasting") for line in lines)
    assert not any("nvidia" in line or "cu12" in line for line in lines)

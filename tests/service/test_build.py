"""`bentoml build` from pyproject.toml succeeds offline and the bento asks for CPU torch, never a CUDA lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_bento_builds_with_cpu_torch_and_the_project_dependencies(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    done = subprocess.run(
        [sys.executable, "-m", "bentoml", "build"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    requirements = next((tmp_path / "bentoml" / "bentos" / "tftmon").glob("*/env/python/requirements.txt"))
    lines = requirements.read_text().splitlines()
    assert "torch==2.13.0+cpu" in lines
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert any(line.startswith("pytorch-forecasting") for line in lines)
    assert not any("nvidia" in line or "cu12" in line for line in lines)

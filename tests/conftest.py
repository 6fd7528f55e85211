"""Shared fixtures: a real, throw-away MLflow store per test session (sqlite in a tmp dir); and what a test
that drives a Debian binary does without it (skip locally, fail in CI)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The tiny promoted model and real services, shared by tests/service and tests/dashboard.
pytest_plugins = ("tests.serving",)


def in_ci() -> bool:
    """CI=true, as CI services set it: there a missing system binary fails its tests instead of skipping them."""
    return os.environ.get("CI", "").lower() == "true"


def missing_binaries_reason(binaries: tuple[str, ...], packages: str) -> str | None:
    """Why tests that run `binaries` (looked up on PATH) cannot run here, in one line naming the Debian
    `packages` to install; None when every binary is there."""
    missing = [name for name in binaries if shutil.which(name) is None]
    if not missing:
        return None
    return (
        f"{', '.join(missing)} not installed: apt-get install {packages} (`make test` installs them when it runs "
        "as root on Debian, as .ci/run does)"
    )


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite tracking store and artifact root, selected through the environment like a user would."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TFTMON_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()

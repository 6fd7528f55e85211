"""Shared fixtures: a real, throw-away MLflow store per test session (sqlite in a tmp dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The tiny promoted model and real services, shared by tests/service and tests/dashboard.
pytest_plugins = ("tests.serving",)


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

"""Run resolution on a real sqlite store: `mlflow run`'s run is resumed, stages nest under it."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from tftmon.ops import tracking


def test_standalone_job_gets_its_own_run_in_the_tftmon_experiment(mlflow_store: str) -> None:
    with tracking.job_run("generate") as run:
        pass
    experiment = MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.name == "tftmon"
    assert experiment.artifact_location.endswith("mlartifacts")
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"


def test_mlflow_run_is_resumed_and_stages_nest_without_ending_it(
    mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient()
    launched = client.create_run(client.create_experiment("launched-by-mlflow-run"))
    monkeypatch.setenv("MLFLOW_RUN_ID", launched.info.run_id)
    with tracking.job_run("train") as run:
        assert run.info.run_id == launched.info.run_id
        with tracking.job_run("validate") as child:
            mlflow.log_metric("validation_success", 1.0)
        assert client.get_run(launched.info.run_id).info.status == "RUNNING"
    child_run = client.get_run(child.info.run_id)
    assert child.info.run_id != launched.info.run_id
    assert child_run.data.tags["mlflow.parentRunId"] == launched.info.run_id
    assert child_run.data.metrics["validation_success"] == 1.0
    assert client.get_run(launched.info.run_id).info.status == "FINISHED"

"""A fleet that reports only some metrics: CPU and memory, no `state` (real telemetry), trained, evaluated,
registered and promoted through the gate on a real MLflow store; and a model of one metric alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.model.conftest import periodic_fleet, tiny_config
from tftmon.config import EvaluationConfig, SimulationConfig
from tftmon.contract import CPU_USER, MEM_USED, METRIC, METRICS, PROFILE, SERVER_ID, SERVER_NAME, TIMESTAMP
from tftmon.data.simulate import simulate
from tftmon.data.validate import validate_path
from tftmon.evaluation.backtest import NO_INCIDENT_LABELS
from tftmon.model.network import explain, forecast, load_model, save_model
from tftmon.model.train import fit
from tftmon.ops import registry
from tftmon.ops.jobs import run_train

SUBSET = [CPU_USER, MEM_USED]
EVAL = EvaluationConfig(holdout_hours=10, calibration_origins=50)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """CPU user + memory of a tiny simulated fleet, as a collector would export them, and a version trained
    on it with the default targets (the metrics the data has)."""
    root = tmp_path_factory.mktemp("subset")
    previous = mlflow.get_tracking_uri()  # process-wide: left pointing here, it would leak into later modules
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("TFTMON_ARTIFACT_ROOT", str(root / "mlartifacts"))
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        fleet = simulate(SimulationConfig(servers=7, hours=40, seed=3))
        data = root / "cpu_mem.parquet"
        fleet[[TIMESTAMP, SERVER_NAME, SERVER_ID, PROFILE, *SUBSET]].to_parquet(data, index=False)
        outcome = run_train(data, tiny_config(max_epochs=1, max_batches_per_epoch=4), EVAL)
        yield {"root": root, "data": data, **outcome}
    mlflow.set_tracking_uri(previous)


def test_subset_dataset_validates_strictly(trained: dict) -> None:
    report = validate_path(trained["data"], strict=True)
    assert report.success and report.suite == "telemetry", report.to_text()


def test_model_forecasts_the_metrics_the_data_has(trained: dict) -> None:
    model = load_model(registry.version_files(trained["version"]))
    assert list(model.config.targets) == SUBSET and model.training_info["targets"] == SUBSET
    signature = mlflow.models.get_model_info(f"models:/tftmon/{trained['version']}").signature
    required = {spec.name for spec in signature.inputs.inputs if spec.required}
    assert required == {TIMESTAMP, SERVER_NAME, *SUBSET}


def test_evaluation_without_state_says_there_are_no_incident_scores(trained: dict) -> None:
    assert NO_INCIDENT_LABELS in trained["summary"]
    metrics = MlflowClient().get_run(trained["run_id"]).data.metrics
    assert {f"eval_mase_1h_{m}" for m in SUBSET} <= set(metrics)
    assert not [k for k in metrics if k.startswith("eval_warning_")]
    assert not [k for k in metrics if k.startswith("eval_mase_") and k.endswith(tuple(set(METRICS) - set(SUBSET)))]
    assert {f"eval_mase_1h_{b}" for b in ("last_value", "seasonal_naive", "linear_drift")} <= set(metrics)


def test_subset_version_passes_the_promotion_gate(trained: dict) -> None:
    report = registry.promote(trained["version"], reason="subset test")
    assert report.passed, report.to_text()
    assert registry.production_version() == trained["version"]


def test_the_gate_compares_a_champion_of_other_metrics_on_the_ones_both_forecast(trained: dict) -> None:
    cpu_only = trained["root"] / "cpu.parquet"
    pd.read_parquet(trained["data"]).drop(columns=[MEM_USED]).to_parquet(cpu_only, index=False)
    champion = run_train(cpu_only, tiny_config(max_epochs=1, max_batches_per_epoch=4), EVAL)["version"]
    registry.promote(champion, force=True, reason="a CPU-only champion")
    report = registry.gate(trained["version"])
    assert f"on the metrics both forecast ({CPU_USER})" in report.checks["champion"], report.to_text()
    registry.promote(trained["version"], force=True, reason="test")


def test_a_model_of_one_metric_trains_forecasts_saves_and_explains(tmp_path: Path) -> None:
    fleet = periodic_fleet(servers=3, days=1.5)[[TIMESTAMP, SERVER_NAME, CPU_USER]]
    model, _ = fit(fleet, tiny_config(max_epochs=1, max_batches_per_epoch=3))
    assert list(model.config.targets) == [CPU_USER]
    history = fleet[fleet[TIMESTAMP] > fleet[TIMESTAMP].max() - pd.Timedelta(hours=3)]
    first = forecast(model, history)
    assert set(first[METRIC]) == {CPU_USER} and np.isfinite(first["p50"]).all()
    save_model(model, tmp_path / "model")
    again = forecast(load_model(tmp_path / "model"), history)
    pd.testing.assert_frame_equal(first, again)
    one = history[history[SERVER_NAME] == history[SERVER_NAME].iloc[0]]
    assert sum(explain(model, one).encoder_variables.values()) == pytest.approx(1.0)

"""The training pipeline on a real MLflow store: train, register, gate, promote, roll back, load fresh.

One tiny fleet and two tiny trained versions are shared by the module (training dominates the cost).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.model.conftest import tiny_config
from tftmon.config import EvaluationConfig, SimulationConfig
from tftmon.contract import CPU_PARTS, MODEL_STEP, PREDICTION_STEPS, QUANTILE_NAMES, SERVER_NAME, TIMESTAMP
from tftmon.data.simulate import write_dataset
from tftmon.io import METRICS_FILE, read_metrics
from tftmon.model.network import forecast, load_model
from tftmon.model.pyfunc import to_model_input
from tftmon.ops import registry
from tftmon.ops.jobs import TrainingRefused, run_train

EVAL = EvaluationConfig(holdout_hours=10, calibration_origins=50)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A sqlite tracking store, a small simulated fleet, and two registered versions trained on it."""
    root = tmp_path_factory.mktemp("pipeline")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("TFTMON_ARTIFACT_ROOT", str(root / "mlartifacts"))
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        data = root / "fleet"
        write_dataset(SimulationConfig(servers=7, hours=40, seed=3), data, progress=False)
        first = run_train(data, tiny_config(max_epochs=1, max_batches_per_epoch=4), EVAL)
        second = run_train(data, tiny_config(max_epochs=1, max_batches_per_epoch=4, seed=7), EVAL)
        yield {"root": root, "data": data, "first": first, "second": second}


def test_training_run_logs_params_metrics_artifacts_and_a_version(store: dict) -> None:
    client = MlflowClient()
    run = client.get_run(store["first"]["run_id"])
    assert run.info.status == "FINISHED"
    assert {"train.model.hidden_size", "data_sha256", "data_rows", "eval.holdout_start"} <= set(run.data.params)
    assert "val_loss" in run.data.metrics and "samples_per_second" in run.data.metrics
    assert np.isfinite(run.data.metrics[registry.SCORE_METRIC])
    assert {"eval_mase_ratio_1h", "eval_mase_1h_cpu_user_pct", "eval_warning_recall_linear_drift"} <= set(
        run.data.metrics
    )
    assert not [key for key in run.data.metrics if " " in key or "MAPE" in key]
    assert run.info.run_name.startswith("train fleet · hidden 8")
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["fleet"]
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.safetensors", "config.json", "training_info.json", "server_mapping.json"} <= files
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/summary.md" in evaluation and "evaluation/plots" in evaluation
    version = client.get_model_version("tftmon", store["first"]["version"])
    assert version.run_id == run.info.run_id
    model_info = mlflow.models.get_model_info(f"models:/tftmon/{version.version}")
    assert model_info.signature is not None and model_info.saved_input_example_info is not None
    assert "<!-- training -->" in version.description and "| target | measured |" in version.description
    assert client.get_registered_model("tftmon").description.startswith("Temporal Fusion Transformer")


def test_registered_pyfunc_predicts_exactly_what_the_model_does(store: dict) -> None:
    version = store["first"]["version"]
    history = read_metrics(store["data"]).groupby(SERVER_NAME).tail(40)
    direct = forecast(load_model(registry.version_files(version)), history)
    via_pyfunc = registry.load_version(version).predict(to_model_input(history))
    pd.testing.assert_frame_equal(direct.reset_index(drop=True), via_pyfunc.reset_index(drop=True))


def test_promoted_model_loads_in_a_fresh_process_and_forecasts_the_future(store: dict) -> None:
    registry.promote(store["first"]["version"], reason="test")
    script = """
import json, sys
import mlflow, numpy as np, pandas as pd
from tftmon.model.pyfunc import to_model_input
from tftmon.model.smoke import smoke_history
history = smoke_history(["ppweb001", "ppdb001", "never-seen-host-1", "never-seen-host-2"], hours=3)
model = mlflow.pyfunc.load_model("models:/tftmon@production")
out = model.predict(to_model_input(history))
last = history.groupby("server_name")["timestamp"].max().dt.floor("5min")
first = out[out["step"] == 1].groupby("server_name")["timestamp"].min()
print(json.dumps({
    "servers": sorted(out["server_name"].unique()),
    "ids": out.groupby("server_name")["server_id"].first().to_dict(),
    "steps": int(out["step"].max()),
    "finite": bool(np.isfinite(out[["p10", "p50", "p90"]].to_numpy()).all()),
    "aligned": bool(((first - last) == pd.Timedelta("5min")).all()),
}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=store["root"])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["servers"] == ["never-seen-host-1", "never-seen-host-2", "ppdb001", "ppweb001"]
    assert result["ids"]["never-seen-host-1"] != result["ids"]["never-seen-host-2"]
    assert result["steps"] == PREDICTION_STEPS
    assert result["finite"] and result["aligned"]


def _register_copy(store: dict, edit) -> str:
    """Register a copy of version 1's model directory after `edit(directory)` broke it."""
    source = registry.version_files(store["first"]["version"])
    broken = store["root"] / f"broken-{len(list(store['root'].glob('broken-*')))}"
    shutil.copytree(source, broken)
    edit(broken)
    example = read_metrics(store["data"]).groupby(SERVER_NAME).tail(24).head(24)
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("tftmon").experiment_id):
        return registry.register(broken, json.loads((broken / "config.json").read_text())["targets"], example, {})


def test_a_candidate_without_its_mapping_is_refused_and_production_untouched(store: dict) -> None:
    registry.promote(store["first"]["version"], reason="test")
    version = _register_copy(store, lambda d: (d / "server_mapping.json").unlink())
    with pytest.raises(registry.PromotionRefused, match=r"server_mapping\.json"):
        registry.promote(version)
    assert registry.production_version() == store["first"]["version"]


def test_a_candidate_for_another_contract_is_refused(store: dict) -> None:
    def old_contract(directory: Path) -> None:
        info = json.loads((directory / "training_info.json").read_text())
        info["contract_version"] = "1.4.0"
        (directory / "training_info.json").write_text(json.dumps(info))

    registry.promote(store["first"]["version"], reason="test")
    version = _register_copy(store, old_contract)
    with pytest.raises(registry.PromotionRefused, match=r"contract 1\.4\.0"):
        registry.promote(version)
    assert registry.production_version() == store["first"]["version"]


def test_weights_that_do_not_load_are_refused(store: dict) -> None:
    registry.promote(store["first"]["version"], reason="test")
    version = _register_copy(store, lambda d: (d / "model.safetensors").write_bytes(b"not weights"))
    with pytest.raises(registry.PromotionRefused, match="weights do not load"):
        registry.promote(version)
    assert registry.production_version() == store["first"]["version"]


def test_worse_candidate_needs_force_and_rollback_restores_the_champion(store: dict) -> None:
    first, second = store["first"]["version"], store["second"]["version"]
    registry.promote(first, reason="test")
    champion_score = registry.version_score(first)
    run_id = MlflowClient().get_model_version("tftmon", second).run_id
    MlflowClient().log_metric(run_id, registry.SCORE_METRIC, champion_score * 2, step=99)
    with pytest.raises(registry.PromotionRefused, match="worse than champion"):
        registry.promote(second)
    assert registry.production_version() == first

    registry.promote(second, force=True, reason="test forced")
    assert registry.production_version() == second
    tags = MlflowClient().get_model_version("tftmon", second).tags
    assert tags["promotion_reason"] == "test forced" and tags["promoted_by"] and tags["promoted_at"]
    assert MlflowClient().get_model_version("tftmon", second).current_stage == "Production"

    assert registry.rollback() == first
    assert registry.production_version() == first
    assert str(MlflowClient().get_model_version_by_alias("tftmon", registry.PRODUCTION).version) == first


def test_training_is_refused_on_invalid_data(store: dict, tmp_path: Path) -> None:
    frame = read_metrics(store["data"])
    frame.loc[frame.index[:5], CPU_PARTS[0]] = 130.0
    bad = tmp_path / "bad"
    bad.mkdir()
    frame.to_parquet(bad / METRICS_FILE)
    versions_before = len(MlflowClient().search_model_versions("name='tftmon'"))
    with pytest.raises(TrainingRefused, match=CPU_PARTS[0]):
        run_train(bad, tiny_config(), EVAL)
    assert len(MlflowClient().search_model_versions("name='tftmon'")) == versions_before
    failed = mlflow.search_runs(experiment_names=["tftmon"], filter_string="tags.`tftmon.refused` = 'invalid data'")
    assert (failed["status"] == "FAILED").all() and len(failed) == 1


def test_forecast_quantiles_are_ordered(store: dict) -> None:
    history = read_metrics(store["data"]).groupby(SERVER_NAME).tail(30)
    out = registry.load_version(store["first"]["version"]).predict(to_model_input(history))
    p10, p50, p90 = (out[q].to_numpy() for q in QUANTILE_NAMES)
    assert (p10 <= p50).all() and (p50 <= p90).all()
    assert (out.groupby(SERVER_NAME)[TIMESTAMP].min() > history.groupby(SERVER_NAME)[TIMESTAMP].max()).all()
    assert (out.groupby([SERVER_NAME, "metric"])[TIMESTAMP].diff().dropna() == pd.Timedelta(MODEL_STEP)).all()

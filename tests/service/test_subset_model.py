"""The real service with a model of a subset of the metrics (CPU user and memory, no state): forecasts of
exactly those metrics, a 4xx naming a target metric a request leaves out, metrics the model does not use
accepted, and the live path (/feed, /predictions/current, /servers/{name}/history) on the same rows."""

from __future__ import annotations

import os
from collections.abc import Iterator

import mlflow
import pandas as pd
import pytest
import requests

from tests.service.test_service import _wait, assert_clean_error, conforming, recent, rows
from tests.serving import ADMIN_TOKEN, FEED, FEED_TOKEN, TINY, Served, register_version, store_env
from tftmon.contract import CPU_USER, MEM_USED, PROFILE, SERVER_NAME, STATE, TIMESTAMP
from tftmon.serve.schemas import CurrentPredictions, FeedResponse, LiveStatus, PredictResponse

SUBSET = [CPU_USER, MEM_USED]


@pytest.fixture(scope="module")
def subset_history(fleet_history: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The shared simulated fleet as a fleet reporting only CPU user and memory would export it (a long CSV
    with contract metric names), through `tftmon ingest`: the end-to-end path of real telemetry."""
    from tftmon.config import IngestConfig
    from tftmon.data.ingest import Mapping, ingest_files
    from tftmon.io import read_metrics

    root = tmp_path_factory.mktemp("subset_ingest")
    long = fleet_history.melt([TIMESTAMP, SERVER_NAME], SUBSET, var_name="metric", value_name="value")
    long.rename(columns={SERVER_NAME: "server"}).to_csv(
        root / "export.csv", index=False, date_format="%Y-%m-%dT%H:%M:%SZ"
    )
    ingest_files(root / "export.csv", Mapping(), IngestConfig(), root / "dataset", progress=False)
    ingested = read_metrics(root / "dataset")
    assert set(ingested.columns) >= {TIMESTAMP, SERVER_NAME, PROFILE, *SUBSET} and STATE not in ingested.columns
    return ingested[[TIMESTAMP, SERVER_NAME, PROFILE, *SUBSET]]


@pytest.fixture(scope="module")
def subset_service(tmp_path_factory: pytest.TempPathFactory, subset_history: pd.DataFrame) -> Iterator[Served]:
    """A tiny model of the two metrics, promoted in a store of its own and served."""
    from tftmon.model.network import save_model
    from tftmon.model.train import fit
    from tftmon.ops import registry

    root = tmp_path_factory.mktemp("subset_store")
    env = store_env(root)
    saved = {k: os.environ.get(k) for k in env}
    previous = mlflow.get_tracking_uri()  # process-wide: left pointing here, it would leak into later modules
    os.environ.update(env)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    served = None
    try:
        model, _ = fit(subset_history, TINY)
        assert list(model.config.targets) == SUBSET
        save_model(model, root / "model_dir")
        registry.promote(register_version(root / "model_dir", subset_history), force=True, reason="subset tests")
        served = Served({**env, "TFTMON_ADMIN_TOKEN": ADMIN_TOKEN, "TFTMON_FEED_TOKEN": FEED_TOKEN}, root / "serve.log")
        served.wait_ready()
        yield served
    finally:
        if served is not None:
            served.stop()
        mlflow.set_tracking_uri(previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _servers(history: pd.DataFrame, n: int) -> list[str]:
    return sorted(history[SERVER_NAME].unique())[:n]


def test_predict_reports_exactly_the_models_metrics(subset_service: Served, subset_history: pd.DataFrame) -> None:
    status = conforming(requests.get(f"{subset_service.url}/status", timeout=5), LiveStatus)
    assert status["model_targets"] == SUBSET
    history = recent(subset_history, _servers(subset_history, 2))
    response = requests.post(f"{subset_service.url}/predict", json={"rows": rows(history)}, timeout=60)
    for record in conforming(response, PredictResponse)["predictions"]:
        assert {m for by_metric in record["horizons"].values() for m in by_metric} == set(SUBSET)
        assert set(record["path"]) == set(SUBSET)
        assert record["metric"] in (None, "cpu_user_pct", MEM_USED)  # risk judges only what the model forecasts


def test_metrics_the_model_does_not_use_are_accepted(
    subset_service: Served, fleet_history: pd.DataFrame, subset_history: pd.DataFrame
) -> None:
    every = recent(fleet_history, _servers(fleet_history, 1)).drop(columns=[STATE, "server_id"])
    response = requests.post(f"{subset_service.url}/predict", json={"rows": rows(every)}, timeout=60)
    (record,) = conforming(response, PredictResponse)["predictions"]
    assert set(record["path"]) == set(SUBSET)


def test_a_request_missing_a_target_metric_names_it_once(subset_service: Served, subset_history: pd.DataFrame) -> None:
    history = recent(subset_history, _servers(subset_history, 2)).drop(columns=[MEM_USED])
    for endpoint in ("/predict", "/feed"):
        response = requests.post(f"{subset_service.url}{endpoint}", json={"rows": rows(history)}, headers=FEED,
                                 timeout=30)  # fmt: skip
        body = assert_clean_error(response, 422)
        (problem,) = body["problems"]
        assert problem["field"] == f"rows[*].{MEM_USED}" and problem["count"] == len(history)
        assert MEM_USED in problem["rule"] and f"add {MEM_USED} to every row" in problem["fix"]


def test_feed_then_current_predictions(subset_service: Served, subset_history: pd.DataFrame) -> None:
    servers = _servers(subset_history, 2)
    live = recent(subset_history, servers, hours=1.5)
    for _, tick in live.groupby(TIMESTAMP):
        response = requests.post(f"{subset_service.url}/feed", json={"rows": rows(tick)}, headers=FEED, timeout=10)
        conforming(response, FeedResponse)
    current = _wait(f"{subset_service.url}/predictions/current", lambda b: len(b["predictions"]) >= len(servers))
    CurrentPredictions.model_validate(current)
    assert {p["server_name"] for p in current["predictions"]} == set(servers)
    for record in current["predictions"]:
        assert set(record["path"]) == set(SUBSET)
    history = requests.get(f"{subset_service.url}/servers/{servers[0]}/history", timeout=10).json()
    assert set(history["metrics"]) == set(SUBSET)

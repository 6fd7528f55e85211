"""`tftmon drift` (issue 12): a tiny promoted model, the same fleet simulated with 5 servers added and 2 retired,
checked from a dataset and from a real running service; the bands and the fleet classification on their own."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from click.testing import CliRunner

from tests.serving import ADMIN_TOKEN, FEED, FEED_TOKEN, FLEET, Served
from tftmon.cli import main
from tftmon.config import DriftConfig, Settings
from tftmon.contract import METRICS, OFFLINE_AFTER, PROFILE, SUNSET_AFTER, SUNSET_CANDIDATE_AFTER
from tftmon.data.simulate import build_fleet, write_dataset
from tftmon.evaluation.shift import shift_scores
from tftmon.ops.drift import (
    DriftError,
    check_drift,
    combined_priority,
    compare_fleets,
    drift_priority,
    exit_code,
    unknown_rate_level,
)
from tftmon.ops.tracking import DATASET_PATH_TAG

#: The fleet the tiny model was trained on, 2.75 days later: 5 servers added, 2 retired. Long enough for the
#: forecast-error backtest (2.5 days).
DRIFTED = FLEET.model_copy(update={"hours": 66, "add_servers": 5, "retire_servers": 2})
QUIET = DriftConfig(progress_bar=False)


def test_priority_bands_exit_codes_and_the_unknown_rate_rule() -> None:
    assert [drift_priority(p) for p in (0, 9.9, 10, 19.9, 20, 35, 35.1, 100)] == [
        "none", "none", "low", "low", "medium", "medium", "high", "high",
    ]  # fmt: skip
    assert [exit_code(p) for p in ("none", "low", "medium", "high")] == [0, 1, 2, 3]
    assert [unknown_rate_level(r) for r in (0, 0.049, 0.05, 0.15, 0.151)] == [
        "fine", "fine", "warning", "warning", "critical",
    ]  # fmt: skip
    assert combined_priority("none", "critical") == "medium"
    assert combined_priority("high", "critical") == "high"
    assert combined_priority("low", "warning") == "low"
    assert combined_priority("low", None) == "low"


def test_servers_are_classified_by_silence() -> None:
    now = pd.Timestamp("2026-02-01", tz="UTC")
    minute = timedelta(minutes=1)
    last_seen = pd.Series(
        {
            "ppweb001": now,
            "ppweb002": now - OFFLINE_AFTER + minute,  # still active
            "ppweb003": now - OFFLINE_AFTER,
            "ppdb001": now - SUNSET_CANDIDATE_AFTER,
            "ppdb002": now - SUNSET_AFTER,
            "ppml0001": now,  # new
            "ppml0002": now - SUNSET_AFTER - minute,  # new once, long gone: neither new nor retired
        }
    )
    known = ["ppweb001", "ppweb002", "ppweb003", "ppdb001", "ppdb002", "ppcon01"]
    fleet = compare_fleets(known, last_seen, now)
    assert fleet.active == ["ppml0001", "ppweb001", "ppweb002"]
    assert fleet.new_servers == ["ppml0001"]
    assert fleet.offline == ["ppweb003"]
    assert fleet.sunset_candidates == ["ppdb001"]
    assert fleet.sunset == ["ppcon01", "ppdb002", "ppml0002"]
    assert fleet.retired == ["ppcon01", "ppdb002"]
    assert fleet.drift_pct == pytest.approx(100 * 3 / 6)


def test_shift_scores_single_out_the_metric_that_moved() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    reference = pd.DataFrame({m: rng.normal(40, 5, n) for m in METRICS} | {PROFILE: ["database"] * n})
    recent = reference.sample(frac=1, random_state=2, ignore_index=True)
    recent["mem_used_pct"] += 10  # two training spreads
    recent["swap_used_pct"] = 0.0
    reference["swap_used_pct"] = 0.0  # constant in training: no spread, KS still scores it
    scores = shift_scores(reference, recent, sample_size=2000)
    top = scores.iloc[0]
    assert (top["metric"], top["profile"]) == ("mem_used_pct", "database")
    assert top["shift"] == pytest.approx(2, rel=0.15) and top["ks"] > 0.6
    rest = scores[scores["metric"] != "mem_used_pct"]
    assert rest["shift"].max() < 0.2 and rest["ks"].max() < 0.1
    swap = scores.set_index("metric").loc["swap_used_pct"]
    assert np.isnan(swap["shift"]) and swap["ks"] == 0


@pytest.fixture(scope="module")
def datasets(model_store: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The training fleet on disk, recorded on the model's training run as `tftmon train` records it, and the
    drifted fleet."""
    root = tmp_path_factory.mktemp("drift")
    mlflow.set_tracking_uri(model_store["env"]["MLFLOW_TRACKING_URI"])  # the shared store, whatever ran before
    paths = {"trained": root / "trained", "drifted": root / "drifted"}
    write_dataset(FLEET, paths["trained"], progress=False)
    write_dataset(DRIFTED, paths["drifted"], progress=False)
    client = mlflow.MlflowClient()
    run_id = client.get_model_version(Settings().tftmon_model_name, model_store["version"]).run_id
    client.set_tag(run_id, DATASET_PATH_TAG, str(paths["trained"].resolve()))
    return paths


def _fleet_change() -> tuple[list[str], list[str]]:
    before = {s.name for s in build_fleet(FLEET)}
    after = {s.name for s in build_fleet(DRIFTED)}
    return sorted(after - before), sorted(before - after)


def test_drift_reports_exactly_the_added_and_retired_servers(model_store: dict, datasets: dict[str, Path]) -> None:
    added, retired = _fleet_change()
    assert len(added) == 5 and len(retired) == 2
    report = check_drift(QUIET.model_copy(update={"forecast_error": True}), data=datasets["drifted"])

    assert report.fleet.new_servers == added and report.fleet.retired == retired and report.fleet.sunset == retired
    assert report.fleet.offline == report.fleet.sunset_candidates == []
    assert report.fleet.known == len(model_store["servers"]) == 7
    assert len(report.fleet.active) == 10 and set(added) <= set(report.fleet.active)
    assert report.fleet.drift_pct == pytest.approx(100 * 7 / 7)
    assert report.priority == report.fleet_priority == "high" and exit_code(report.priority) == 3
    assert report.model_version == model_store["version"] and report.model_age_days >= 0
    assert report.unknown_rate is None  # no service given

    # Data drift against the training data the run recorded, per metric and profile of the kept servers.
    assert {row["metric"] for row in report.shifts} == set(METRICS)
    kept_profiles = {s.profile for s in build_fleet(FLEET) if s.name not in retired}
    assert {row["profile"] for row in report.shifts} == kept_profiles
    assert all(0 <= row["ks"] <= 1 for row in report.shifts)
    assert report.forecast_error is not None and np.isfinite(report.forecast_error.recent_mase)
    assert report.forecast_error.evaluation_mase is None  # the fixture's run logged no evaluation

    # The check is a run of the monitoring experiment, with the numbers a chart needs.
    run = mlflow.get_run(report.run_id)
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.name == Settings().tftmon_monitoring_experiment == "tftmon-monitoring"
    metrics = run.data.metrics
    assert (metrics["drift_pct"], metrics["new"], metrics["sunset"], metrics["offline"]) == (100, 5, 2, 0)
    assert metrics["priority"] == 3 and "model_age_days" in metrics and "recent_mase" in metrics
    assert {f"ks_{m}" for m in METRICS} <= set(metrics) and "shift_cpu_idle_pct" in metrics
    assert run.data.tags["tftmon.priority"] == "high"

    text = report.to_text()
    assert "HIGH (exit code 3)" in text and all(name in text for name in added + retired)


def test_cli_prints_json_and_exits_with_the_priority(model_store: dict, datasets: dict[str, Path]) -> None:
    argv = ["drift", str(datasets["drifted"]), "--json", "--no-track", "--no-progress"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 3, result.output
    body = json.loads(result.output)
    assert body["priority"] == "high" and body["exit_code"] == 3 and len(body["new_servers"]) == 5
    assert body["run_id"] is None and body["forecast_error"] is None

    missing = CliRunner().invoke(main, ["drift", str(datasets["drifted"] / "nowhere"), "--no-track"])
    assert missing.exit_code == 4 and "tftmon generate" in missing.output
    nothing = CliRunner().invoke(main, ["drift"])
    assert nothing.exit_code == 4 and "--service" in nothing.output


@pytest.fixture(scope="module")
def drift_service(model_store: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A service of its own: the shared one's live windows belong to tests/service."""
    env = {**model_store["env"], "TFTMON_ADMIN_TOKEN": ADMIN_TOKEN, "TFTMON_FEED_TOKEN": FEED_TOKEN}
    with Served(env, tmp_path_factory.mktemp("drift-service") / "serve.log") as served:
        yield served


@pytest.mark.slow  # a service of its own: bentoml serve starts in 15-60 s on 2 busy cores
def test_drift_from_the_live_service(drift_service: Served, datasets: dict[str, Path]) -> None:
    from tftmon.io import read_metrics

    url = drift_service.url
    with pytest.raises(DriftError, match="no live servers"):
        check_drift(QUIET, service_url=url)
    frame = read_metrics(datasets["drifted"]).drop(columns=["state", "server_id"])
    recent = frame[frame["timestamp"] > frame["timestamp"].max() - pd.Timedelta(hours=1.5)]
    rows = json.loads(recent.to_json(orient="records", date_format="iso"))
    assert requests.post(f"{url}/feed", json={"rows": rows}, headers=FEED, timeout=30).status_code == 200
    deadline = time.monotonic() + 60
    while requests.get(f"{url}/status", timeout=5).json()["unknown_rate"] == 0 and time.monotonic() < deadline:
        time.sleep(0.3)

    added, retired = _fleet_change()
    report = check_drift(QUIET, service_url=url)
    assert report.fleet.new_servers == added and report.fleet.retired == retired and len(report.fleet.active) == 10
    assert report.source == f"{url} (live view)" and report.shifts == []
    # The live loop forecast 10 servers, 5 of them unknown: a critical rate.
    assert report.unknown_rate == pytest.approx(0.5) and report.unknown_level == "critical"
    assert report.priority == "high" and any("needs a telemetry dataset" in note for note in report.notes)
    assert mlflow.get_run(report.run_id).data.metrics["unknown_rate"] == pytest.approx(0.5)

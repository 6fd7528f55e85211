"""The real service over HTTP: every endpoint, bad input, live feed -> cache -> alerts, hot reload, admin."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from pydantic import BaseModel

from tests.service.conftest import ADMIN_TOKEN, FEED, FEED_TOKEN, Served, register_version
from tftmon.alerting import TRANSITION_KINDS
from tftmon.config import SimulationConfig
from tftmon.contract import HORIZONS, METRICS, PREDICTION_STEPS, QUANTILE_NAMES, SERVER_ID, SERVER_NAME, STATE
from tftmon.data.simulate import simulate
from tftmon.serve.schemas import (
    ActiveAlerts,
    AlertHistory,
    CurrentPredictions,
    ErrorResponse,
    ExplainResponse,
    FeedResponse,
    Fleet,
    FleetHistory,
    Health,
    PredictResponse,
    ReloadResponse,
    ServerHistory,
    Status,
)

ENDPOINTS = ("/health", "/status", "/predict", "/feed", "/predictions/current", "/alerts/active", "/alerts/history",
             "/fleet", "/fleet/history", "/servers/{server_name}/history", "/explain/{server_name}", "/admin/reload",
             "/metrics")  # fmt: skip


def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Contract frame -> JSON rows as a client sends them (no state, no server_id)."""
    clean = frame.drop(columns=[STATE, SERVER_ID], errors="ignore")
    return json.loads(clean.to_json(orient="records", date_format="iso"))


def recent(history: pd.DataFrame, servers: list[str], hours: float = 1.5) -> pd.DataFrame:
    picked = history[history[SERVER_NAME].isin(servers)]
    return picked[picked["timestamp"] > picked["timestamp"].max() - pd.Timedelta(hours=hours)]


def conforming(response: requests.Response, model: type[BaseModel], status: int = 200) -> dict[str, Any]:
    """The response's JSON, after checking the status and that the body is what the endpoint's response
    model (the published schema) says."""
    assert response.status_code == status, response.text
    body = response.json()
    model.model_validate(body)
    return body


def assert_clean_error(response: requests.Response, status: int) -> dict[str, Any]:
    assert "Traceback" not in response.text
    body = conforming(response, ErrorResponse, status)
    assert body["error"]
    return body


def test_openapi_lists_every_endpoint(service: Served) -> None:
    paths = requests.get(f"{service.url}/docs.json", timeout=10).json()["paths"]
    assert set(ENDPOINTS) <= set(paths)


def test_health_and_status(service: Served, model_store: dict) -> None:
    assert conforming(requests.get(f"{service.url}/health", timeout=5), Health) == {
        "status": "ok", "model_loaded": True}  # fmt: skip
    status = conforming(requests.get(f"{service.url}/status", timeout=5), Status)
    assert status["model_version"] == model_store["version"]
    assert status["servers_known"] == len(model_store["servers"])
    assert status["contract_version"] and status["loaded_at"] and status["uptime_seconds"] > 0


def test_predict_known_and_unknown_servers(service: Served, fleet_history: pd.DataFrame, model_store: dict) -> None:
    known = model_store["servers"][:2]
    history = recent(fleet_history, known)
    # Two strangers with the same profile and the same data: two forecasts, never merged.
    strangers = [recent(fleet_history, known[:1]).assign(server_name=name) for name in ("ppdb901", "ppdb902")]
    body = {"rows": rows(pd.concat([history, *strangers]))}
    result = conforming(requests.post(f"{service.url}/predict", json=body, timeout=60), PredictResponse)
    by_name = {p["server_name"]: p for p in result["predictions"]}
    assert set(by_name) == {*known, "ppdb901", "ppdb902"}
    assert [by_name[n]["cold_start"] for n in (*known, "ppdb901", "ppdb902")] == [False, False, True, True]
    record = by_name[known[0]]
    assert record["model_version"] == model_store["version"] == result["model_version"]
    assert set(record["horizons"]) == set(HORIZONS)
    assert set(record["horizons"]["8h"]) == set(METRICS)
    assert set(record["horizons"]["1h"][METRICS[0]]) == set(QUANTILE_NAMES)
    assert len(record["path"][METRICS[0]]["p50"]) == PREDICTION_STEPS
    assert 0 <= record["risk"] <= 1 and record["severity"] in {"healthy", "warning", "critical"}
    assert pd.Timestamp(record["prediction_time"]) == history["timestamp"].max().floor("5min")
    status = requests.get(f"{service.url}/status", timeout=5).json()
    assert status["unknown_servers"] >= 2 and status["unknown_rate"] > 0


def test_predict_resamples_any_interval(service: Served) -> None:
    fast = simulate(SimulationConfig(fleet=[("ppweb950", None)], hours=1.3, interval="10s", seed=5))
    response = requests.post(f"{service.url}/predict", json={"rows": rows(fast), "include_path": False}, timeout=60)
    assert "path" not in conforming(response, PredictResponse)["predictions"][0]


def _one_row(fleet_history: pd.DataFrame) -> dict[str, Any]:
    return rows(fleet_history.head(1))[0]


#: A broken row: (change, the field named, words of the rule, words of the fix).
BAD_ROWS = {
    "missing column": (lambda r: r.pop(METRICS[0]), METRICS[0], "Field required", f"add {METRICS[0]}"),
    "unknown column": (lambda r: r.update(bogus=1.0), "bogus", "unknown column", "remove them"),
    "deprecated column": (lambda r: r.update(cpu_pct=5.0), "cpu_pct", "deprecated", "send cpu_user_pct"),
    "refused state": (lambda r: r.update(state="healthy"), "state", "ground truth", "remove state"),
    "wrong type": (lambda r: r.update({METRICS[0]: "high"}), METRICS[0], "valid number", "JSON number"),
    "int as float": (lambda r: r.update(uptime_days=2.5), "uptime_days", "integer", "whole JSON number"),
    "out of range": (lambda r: r.update({METRICS[0]: 140.0}), METRICS[0], "less than or equal", "at most 100"),
    "negative": (lambda r: r.update(net_in_mb_s=-1.0), "net_in_mb_s", "greater than or equal", "at least 0"),
    "bad profile": (lambda r: r.update(profile="mainframe"), "profile", "Input should be", "leave profile out"),
    "bad hostname": (lambda r: r.update(server_name="web 01; drop"), "server_name", "pattern", "hostname"),
    "bad timestamp": (lambda r: r.update(timestamp="yesterday"), "timestamp", "datetime", "ISO 8601"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_rows_are_4xx_with_field_rule_fix(service: Served, fleet_history: pd.DataFrame, case: str) -> None:
    change, field, rule, fix = BAD_ROWS[case]
    row = _one_row(fleet_history)
    change(row)
    for endpoint in ("/predict", "/feed"):
        body = assert_clean_error(
            requests.post(f"{service.url}{endpoint}", json={"rows": [row]}, headers=FEED, timeout=10), 422
        )
        (problem,) = body["problems"]
        assert (problem["field"], problem["count"], problem["rows"]) == (f"rows[*].{field}", 1, [0])
        assert rule in problem["rule"] and fix in problem["fix"], problem
        assert body["error"] == f"1 problem in the request: rows[*].{field}: {problem['rule']}, 1 row"


def test_the_same_problem_in_every_row_is_said_once(service: Served, fleet_history: pd.DataFrame) -> None:
    """1,080 rows that all send the derived server_id: one problem with its count, not 1,080 copies."""
    payload = [{**row, "server_id": "0123456789abcdef"} for row in rows(fleet_history.head(1080))]
    assert len(payload) == 1080
    body = assert_clean_error(requests.post(f"{service.url}/predict", json={"rows": payload}, timeout=30), 422)
    assert body["problems"] == [
        {"field": "rows[*].server_id", "rule": "server_id is derived from server_name by the service (SHA-256)",
         "fix": "remove server_id from every row", "count": 1080, "rows": [0, 1, 2, 3, 4]}
    ]  # fmt: skip
    assert body["error"] == f"1 problem in the request: rows[*].server_id: {body['problems'][0]['rule']}, 1080 rows"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_inf_refused(service: Served, fleet_history: pd.DataFrame, literal: str) -> None:
    row = _one_row(fleet_history)
    row[METRICS[0]] = "__X__"
    text = json.dumps({"rows": [row]}).replace('"__X__"', literal)
    response = requests.post(f"{service.url}/predict", data=text, headers={"Content-Type": "application/json"},
                             timeout=10)  # fmt: skip
    body = assert_clean_error(response, 422)
    (problem,) = body["problems"]
    assert "finite" in problem["rule"] and (problem["field"], problem["rows"]) == (f"rows[*].{METRICS[0]}", [0])


@pytest.mark.parametrize(
    ("data", "expected"),
    [("", "body"), ("{not json", "JSON"), ("[]", "body"), ('{"rows": []}', "rows")],
    ids=["empty", "malformed", "array", "no rows"],
)
def test_malformed_bodies(service: Served, data: str, expected: str) -> None:
    response = requests.post(f"{service.url}/predict", data=data, headers={"Content-Type": "application/json"},
                             timeout=10)  # fmt: skip
    body = assert_clean_error(response, 422)
    assert expected in json.dumps(body["problems"])


def test_too_little_history(service: Served, fleet_history: pd.DataFrame, model_store: dict) -> None:
    short = recent(fleet_history, model_store["servers"][:1], hours=0.4)
    body = assert_clean_error(requests.post(f"{service.url}/predict", json={"rows": rows(short)}, timeout=30), 422)
    assert "too little history" in body["error"] and "1 h" in body["fix"]


def test_too_fast_samples(service: Served) -> None:
    fast = simulate(SimulationConfig(fleet=[("ppweb951", None)], hours=0.05, interval="5s"))
    payload = rows(fast)
    for i, row in enumerate(payload):  # 2 s apart
        row["timestamp"] = (pd.Timestamp("2026-01-05T00:00:00Z") + pd.Timedelta(seconds=2 * i)).isoformat()
    body = assert_clean_error(requests.post(f"{service.url}/predict", json={"rows": payload}, timeout=10), 422)
    assert "minimum interval" in body["error"]


def test_request_limits(service: Served, fleet_history: pd.DataFrame) -> None:
    row = _one_row(fleet_history)
    many_servers = [{**row, "server_name": f"ppgen{i:03d}"} for i in range(21)]
    body = assert_clean_error(requests.post(f"{service.url}/predict", json={"rows": many_servers}, timeout=10), 422)
    assert "21 servers" in body["problems"][0]["rule"] and "split the request" in body["problems"][0]["fix"]
    too_many_rows = [row] * 3001
    body = assert_clean_error(
        requests.post(f"{service.url}/feed", json={"rows": too_many_rows}, headers=FEED, timeout=30), 422
    )
    assert "3000" in body["problems"][0]["fix"]


def _wait(url: str, ready: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(url, timeout=10).json()
        if ready(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.3)


def test_feed_then_current_predictions_then_alerts(service: Served, fleet_history: pd.DataFrame) -> None:
    live = recent(fleet_history, sorted(fleet_history[SERVER_NAME].unique())[:3], hours=1.5)
    for _, tick in live.groupby("timestamp"):
        conforming(
            requests.post(f"{service.url}/feed", json={"rows": rows(tick)}, headers=FEED, timeout=10), FeedResponse
        )
    warming = fleet_history[fleet_history[SERVER_NAME] == fleet_history[SERVER_NAME].iloc[0]].tail(2)
    feed = requests.post(
        f"{service.url}/feed", json={"rows": rows(warming.assign(server_name="ppetl950"))}, headers=FEED, timeout=10
    )
    assert conforming(feed, FeedResponse)["accepted"] == 2
    again = conforming(
        requests.post(f"{service.url}/feed", json={"rows": rows(tick)}, headers=FEED, timeout=10), FeedResponse
    )
    assert again["ignored_stale"] == len(tick)  # already seen: not appended twice

    def ready(body: dict[str, Any]) -> bool:
        return len(body["predictions"]) >= 3 and any(w["server_name"] == "ppetl950" for w in body["warming_up"])

    current = _wait(f"{service.url}/predictions/current", ready)
    CurrentPredictions.model_validate(current)
    assert {p["server_name"] for p in current["predictions"]} >= set(live[SERVER_NAME])
    warm = next(w for w in current["warming_up"] if w["server_name"] == "ppetl950")
    assert warm["need_steps"] > 0 and warm["need_minutes"] == 5 * warm["need_steps"]
    # Served from the cache: the same body until the next refresh, no model run per GET.
    assert requests.get(f"{service.url}/predictions/current", timeout=5).json()["computed_at"] == current["computed_at"]

    alerts = conforming(requests.get(f"{service.url}/alerts/active", timeout=5), ActiveAlerts)
    assert set(alerts["counts"]) == {"warning", "critical"}
    for alert in alerts["alerts"]:
        assert alert["severity"] in {"warning", "critical"} and alert["since"] and alert["model_version"]
        assert "raised_at" not in alert and not [k for k in alert if k.startswith("_")]  # data time only
        assert alert["value_quantile"] == "p50" and alert["probability_word"] in alert["reason"]
    history = conforming(requests.get(f"{service.url}/alerts/history", timeout=5), AlertHistory)["transitions"]
    assert len(history) >= len(alerts["alerts"])
    assert {t["kind"] for t in history} <= set(TRANSITION_KINDS)
    assert all("at" not in t for t in history)  # data time only (data_time)
    metrics = requests.get(f"{service.url}/metrics", timeout=5).text
    for name in ("tftmon_predictions_total", "tftmon_http_requests_total", "tftmon_http_request_seconds_bucket",
                 "tftmon_unknown_servers", "tftmon_model_info", "tftmon_alerts_active"):  # fmt: skip
        assert name in metrics, name


def test_fleet_history_and_explanation_of_live_servers(service: Served) -> None:
    """What the dashboard reads beyond the forecasts (after the feed test above made servers live)."""
    current = requests.get(f"{service.url}/predictions/current", timeout=5).json()
    forecast = current["predictions"][0]
    name = forecast["server_name"]
    fleet = conforming(requests.get(f"{service.url}/fleet", timeout=5), Fleet)["servers"]
    by_name = {s["server_name"]: s for s in fleet}
    assert by_name[name]["warming_up"] is False and by_name["ppetl950"]["warming_up"] is True

    summaries = conforming(requests.get(f"{service.url}/fleet/history", timeout=5), FleetHistory)["summaries"]
    last = summaries[-1]
    assert last["servers"] == len(current["predictions"]) and sum(last["counts"].values()) == last["servers"]
    assert sum(p["servers"] for p in last["by_profile"].values()) == last["servers"]

    past = conforming(requests.get(f"{service.url}/servers/{name}/history", timeout=5), ServerHistory)
    assert set(past["metrics"]) == set(METRICS) and len(past["timestamps"]) == len(past["metrics"]["cpu_idle_pct"])
    assert pd.Timestamp(past["timestamps"][-1]) == pd.Timestamp(forecast["prediction_time"])  # what it read

    why = conforming(requests.get(f"{service.url}/explain/{name}", timeout=30), ExplainResponse)
    assert why["model_version"] == forecast["model_version"]
    for group in ("static_variables", "encoder_variables", "decoder_variables"):
        weights = [v["importance"] for v in why[group]]
        assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1, abs=1e-3)
    assert sum(a["weight"] for a in why["attention"]) == pytest.approx(1, abs=1e-3)
    assert why["attention"][-1]["minutes_before"] == 0

    for path in ("explain", "servers"):
        suffix = "/history" if path == "servers" else ""
        assert (
            "warming up"
            in assert_clean_error(requests.get(f"{service.url}/{path}/ppetl950{suffix}", timeout=5), 409)["error"]
        )
        assert (
            "POST /feed"
            in assert_clean_error(requests.get(f"{service.url}/{path}/ppnobody001{suffix}", timeout=5), 404)["fix"]
        )


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_admin_rejects_missing_or_wrong_token(service: Served, headers: dict[str, str]) -> None:
    assert_clean_error(requests.post(f"{service.url}/admin/reload", headers=headers, timeout=10), 401)


def test_hot_reload_while_a_client_keeps_calling(service: Served, fleet_history: pd.DataFrame,
                                                 model_store: dict) -> None:  # fmt: skip
    from tftmon.ops import registry

    body = {"rows": rows(recent(fleet_history, model_store["servers"][:2])), "include_path": False}
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            response = requests.post(f"{service.url}/predict", json=body, timeout=60)
            answers.append((response.status_code, response.json().get("model_version")))

    old = model_store["version"]
    new = register_version(model_store["model_dir"], fleet_history)
    registry.promote(new, force=True, reason="hot reload test")
    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(1.0)
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        reload = conforming(requests.post(f"{service.url}/admin/reload", headers=auth, timeout=120), ReloadResponse)
        assert reload | {"loaded_at": None} == {
            "previous_version": old,
            "model_version": new,
            "changed": True,
            "loaded_at": None,
        }
        time.sleep(1.5)
    finally:
        stop.set()
        thread.join()
    assert answers and all(code == 200 for code, _ in answers), answers
    assert {v for _, v in answers} <= {old, new} and answers[-1][1] == new
    assert requests.get(f"{service.url}/status", timeout=5).json()["model_version"] == new
    again = conforming(requests.post(f"{service.url}/admin/reload", headers=auth, timeout=60), ReloadResponse)
    assert again["changed"] is False


def test_without_model_or_token(bare_service: Served, fleet_history: pd.DataFrame) -> None:
    url = bare_service.url
    assert requests.get(f"{url}/health", timeout=5).json() == {"status": "ok", "model_loaded": False}
    body = assert_clean_error(requests.post(f"{url}/predict", json={"rows": rows(fleet_history.head(3))}, timeout=10),
                              503)  # fmt: skip
    assert "tftmon promote" in body["fix"]
    # Live windows are as long as the model's encoder: without a model there is nothing to size them by.
    feed = {"rows": rows(fleet_history.head(3))}
    body = assert_clean_error(requests.post(f"{url}/feed", json=feed, headers=FEED, timeout=10), 503)
    assert "tftmon promote" in body["fix"]
    body = assert_clean_error(requests.post(f"{url}/feed", json=feed, timeout=10), 401)  # a token of its own
    assert "TFTMON_FEED_TOKEN" in body["fix"]
    body = assert_clean_error(
        requests.post(f"{url}/admin/reload", headers={"Authorization": "Bearer anything"}, timeout=10), 403
    )
    assert "TFTMON_ADMIN_TOKEN" in body["fix"]
    assert requests.get(f"{url}/status", timeout=5).json()["model_version"] is None


def test_schemathesis_finds_no_server_error(service: Served, tmp_path: Path) -> None:
    """Property-based calls of every operation in the published spec (bounded): never a 5xx, and every
    body is what the spec says that status answers."""
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{service.url}/docs.json", "--checks",
         "not_a_server_error,response_schema_conformance", "--max-examples", "15", "--phases", "examples,fuzzing",
         "--no-color"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_feeder_streams_simulator_ticks(service: Served) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tftmon.cli", "feed", "--url", service.url, "--servers", "3", "--scenario", "critical",
         "--backfill-hours", "1.2", "--ticks", "20", "--speed", "3000", "--control-port", "0"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TFTMON_FEED_TOKEN": FEED_TOKEN},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    # The back-fill: 5-min ticks from 1.2 h ago (floored to the grid) through the first at or after 5 min ago,
    # 15 or 16 of them as the clock falls; then the 20 live ones.
    sent = re.search(r"sent (\d+) ticks for 3 servers", result.stdout)
    assert sent is not None, result.stdout
    assert int(sent.group(1)) in {15 + 20, 16 + 20}, result.stdout
    status = requests.get(f"{service.url}/status", timeout=5).json()
    assert status["servers_live"] >= 3

"""Each refresh of the dashboard draws one forecast of the service, never one forecast's severities beside the
next one's alerts (issue 31, item 15).

The service may forecast anew between any two of the dashboard's reads. The real service cannot be made to
do that at a chosen moment, so these tests replay scripted forecasts over HTTP at chosen moments: the
payloads are validated by the service's own response models (tftmon.serve.schemas), and the replay moves
to its next forecast right after answering a given endpoint, as a forecast landing between two reads does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.test_app import APP
from tests.dashboard.test_views import payload, prediction, reason
from tftmon.contract import CONTRACT_VERSION, CPU_IOWAIT, probability_word
from tftmon.dashboard import views
from tftmon.dashboard.client import ServiceClient, Unavailable
from tftmon.risk import SEVERITY_BANDS
from tftmon.serve.schemas import ActiveAlerts, CurrentPredictions, Health, LiveStatus

EARLIER, FIRST, SECOND = "2026-03-02T11:50:00+00:00", "2026-03-02T12:00:00+00:00", "2026-03-02T12:05:00+00:00"


def record(name: str, profile: str, risk: float, at: str, level: str | None = None) -> dict[str, Any]:
    """A server's forecast at data time `at`, crossing `level` of its I/O wait 40 min ahead if given."""
    drivers = (reason(CPU_IOWAIT, profile, level),) if level else ()
    return {**prediction(name, profile, risk, CPU_IOWAIT if level else None, drivers), "prediction_time": at}


def alert(forecast: dict[str, Any], since: str) -> dict[str, Any]:
    """The alert the service's AlertBook keeps from a forecast above healthy (tftmon.serve.alerts)."""
    return {
        "server_name": forecast["server_name"], "profile": forecast["profile"], "severity": forecast["severity"],
        "risk": forecast["risk"], "metric": forecast["metric"], "probability": 0.64,
        "probability_word": probability_word(0.64), "minutes_ahead": 40, "prediction_time": forecast["prediction_time"],
        "predicted_for": (pd.Timestamp(forecast["prediction_time"]) + pd.Timedelta(minutes=40)).isoformat(),
        "value": 42.0, "value_quantile": "p50", "reached_by_quantile": "p90", "reason": forecast["reason"],
        "since": since, "paging": forecast["severity"] == "critical", "model_version": "3",
    }  # fmt: skip


@dataclass
class Forecast:
    """What the service answers between two of its forecasts: /predictions/current, /alerts/active, /status."""

    predictions: dict[str, Any]
    alerts: dict[str, Any]
    status: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        computed_at = self.predictions["computed_at"]
        self.alerts = {**self.alerts, "computed_at": computed_at}
        self.status = {
            "model_name": "tftmon", "model_version": "3", "contract_version": CONTRACT_VERSION,
            "model_contract_version": CONTRACT_VERSION, "model_targets": [CPU_IOWAIT], "loaded_at": EARLIER,
            "uptime_seconds": 60.0, "servers_known": 3, "servers_live": 3, "servers_warming_up": 0,
            "unknown_servers": 0, "unknown_rate": 0.0, "unknown_rate_window_seconds": 3600.0,
            "last_prediction_time": computed_at, "live_forecast_failures": 0, "servers_failing": {},
        }  # fmt: skip
        CurrentPredictions.model_validate(self.predictions)  # what the service could answer, no more
        ActiveAlerts.model_validate(self.alerts)
        LiveStatus.model_validate(self.status)


def two_forecasts() -> list[Forecast]:
    """ppdb001 escalates from warning to critical and ppweb002 rises to warning between the two; ppml003's
    forecast is healthy in both, its critical alert from an earlier forecast held by the service."""
    held = alert(record("ppml003", "ml_compute", 0.8, EARLIER, "critical"), EARLIER)
    forecasts = []
    for at, db, web in ((FIRST, (0.5, "high"), (0.1, None)), (SECOND, (0.8, "critical"), (0.5, "high"))):
        fleet = [record("ppdb001", "database", db[0], at, db[1]), record("ppweb002", "web_api", web[0], at, web[1]),
                 record("ppml003", "ml_compute", 0.1, at)]  # fmt: skip
        alerts = sorted(
            [alert(f, FIRST) for f in fleet if f["severity"] != "healthy"] + [held],
            key=lambda a: (-a["risk"], a["server_name"]),
        )  # worst first, as the service ranks them
        counts = {s: sum(a["severity"] == s for a in alerts) for s in ("warning", "critical")}
        forecasts.append(Forecast({**payload(*fleet), "computed_at": at}, {"counts": counts, "alerts": alerts}))
    return forecasts


class Replay:
    """The service's read endpoints on a local port, answering `forecasts` in order: it moves to the next
    right after answering a path of `advance_after` (the last one it keeps answering)."""

    def __init__(self, forecasts: list[Forecast], *advance_after: str) -> None:
        self.forecasts, self.advance_after, self.index = forecasts, advance_after, 0
        self.reads: list[str] = []
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = replay.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._lock = threading.Lock()

    def answer(self, path: str) -> tuple[int, Any]:
        with self._lock:
            self.reads.append(path)
            forecast = self.forecasts[self.index]
            bodies = {"/health": Health(model_loaded=True).model_dump(), "/status": forecast.status,
                      "/predictions/current": forecast.predictions, "/alerts/active": forecast.alerts}  # fmt: skip
            if path in self.advance_after:
                self.index = min(self.index + 1, len(self.forecasts) - 1)
        if path in bodies:
            return 200, bodies[path]
        return 404, {"error": f"{path} is not replayed", "fix": "read the current predictions"}


@pytest.fixture
def replay() -> Iterator[Any]:
    started: list[Replay] = []

    def start(forecasts: list[Forecast], *advance_after: str) -> Replay:
        service = Replay(forecasts, *advance_after)
        threading.Thread(target=service.server.serve_forever, daemon=True).start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.server.shutdown()
        service.server.server_close()


def open_tab(tab: str, url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TFTMON_DASHBOARD_SERVICE_URL", url)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["tab"] = tab
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_overview_counts_and_lists_one_forecast(replay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service forecasts anew right after answering the predictions: the alerts the page reads next are
    the next forecast's. The tiles and the alert list must still count the same forecast."""
    service = replay(two_forecasts(), "/predictions/current")
    at = open_tab("Overview", service.url, monkeypatch)
    tiles = {m.label: int(m.value) for m in at.metric}
    rows = at.dataframe[0].value
    assert f"**Active alerts** ({len(rows)})" in [m.value for m in at.markdown]
    for band in SEVERITY_BANDS[1:]:  # each server above healthy has its alert, of its forecast's severity
        assert tiles[band.severity.value.capitalize()] == (rows["severity"] == band.severity.value).sum()
    assert tiles == {"Servers forecast": 3, "Healthy": 2, "Warning": 1, "Critical": 0, "Warming up": 0}
    assert rows["severity"].tolist() == ["critical (held)", "warning"]  # worst first, as the service ranks them
    assert rows["forecast now"].tolist() == ["healthy", "warning"]
    assert "held:" not in rows["alert"].iloc[1] and "ppml003 is forecast healthy now" in rows["alert"].iloc[0]
    assert any("1 held" in c.value for c in at.caption)


def test_top_servers_cards_say_what_their_rows_say(replay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's card (its alert) and its row (its forecast) come from one forecast: a critical card beside
    a warning row was the next forecast's alert beside this one's forecast."""
    service = replay(two_forecasts(), "/predictions/current")
    at = open_tab("Top Servers", service.url, monkeypatch)
    ranked = at.dataframe[0].value.set_index("server_name")
    assert ranked.loc["ppdb001", "severity"] == "warning"
    assert at.subheader[0].value.startswith("ppdb001: warning")
    assert not at.error  # a critical alert would be an error box: there is none in this forecast
    (card,) = at.warning
    assert card.value.startswith("I/O wait on ppdb001 reaching") and "in about 40 min" in card.value
    (held,) = [i.value for i in at.info if "ppml003" in i.value]
    assert "held: the forecast from 11:50 UTC said so" in held


def test_a_forecast_between_the_two_reads_is_read_again(replay: Any) -> None:
    """The service forecast after answering the alerts: the predictions are newer, so the alerts are read
    again and both are the newer forecast's."""
    service = replay(two_forecasts(), "/alerts/active")
    predictions, alerts = ServiceClient(service.url).current()
    assert predictions["computed_at"] == alerts["computed_at"] == SECOND
    assert service.reads == ["/alerts/active", "/predictions/current", "/alerts/active"]
    snapshot = views.Snapshot.from_payloads(predictions, alerts)
    assert views.severity_counts(snapshot.forecasts.table)["critical"] == 1
    assert snapshot.alert_rows()["severity"].tolist() == ["critical", "critical (held)", "warning"]


def test_a_service_that_always_forecasts_between_reads_is_said_in_words(replay: Any) -> None:
    first, second = two_forecasts()
    many = [  # twenty forecasts, a minute apart
        Forecast({**f.predictions, "computed_at": (pd.Timestamp(FIRST) + pd.Timedelta(minutes=i)).isoformat()},
                 f.alerts)
        for i, f in enumerate([first, second] * 10)
    ]  # fmt: skip
    service = replay(many, "/alerts/active", "/predictions/current")
    with pytest.raises(Unavailable) as failed:
        ServiceClient(service.url).current(tries=3)
    assert "forecast anew during each of 3 reads" in failed.value.message and "tftmon feed --speed" in failed.value.fix
    with pytest.raises(ValueError, match="two forecasts"):
        views.Snapshot.from_payloads(many[0].predictions, many[1].alerts)

"""The service's state classes on their own: model slot, rolling windows, alert hysteresis, unknown-server rate."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from tests.synthetic import paths_frame
from tftmon.alerting import PageRule
from tftmon.contract import PROFILE, SERVER_NAME
from tftmon.model.network import load_model
from tftmon.model.smoke import SmokeTestFailed
from tftmon.risk import ALERT_THRESHOLD_KEY, LEGACY_ALERT_THRESHOLD_KEY, AlertCalibration
from tftmon.serve.alerts import RAISED_WALL, AlertBook
from tftmon.serve.live import LiveFleet, LiveWindows, LoadedModel, ModelSlot, UnknownTracker, utcnow


def ticks(name: str, start: str, count: int, every: str = "5min") -> pd.DataFrame:
    """One server's raw ticks, every metric 1.0, no profile or state (the window infers the profile)."""
    return paths_frame([name], count, start=start, every=every, default=1.0, state=None, profile=False)


def test_windows_are_bounded_and_report_warm_up() -> None:
    windows = LiveWindows(max_servers=2, max_bytes=1 << 30)
    windows.set_history_steps(12)
    result = windows.append(pd.concat([ticks("ppweb001", "2026-01-05", 100), ticks("ppdb001", "2026-01-05", 3)]))
    assert result.accepted == 103
    assert windows.append(ticks("ppweb001", "2026-01-05", 5)).ignored_stale == 5  # not newer: dropped
    history, warming = windows.snapshot(history_steps=12)
    assert set(history[SERVER_NAME]) == {"ppweb001"} and len(history) == 13  # encoder + 1 steps kept
    assert history[PROFILE].iloc[0] == "web_api"
    assert warming == [{"server_name": "ppdb001", "have_steps": 3, "need_steps": 9, "need_minutes": 45}]
    assert windows.append(ticks("ppetl001", "2026-01-05", 1)).refused_servers == ["ppetl001"]
    # 5 s ticks for a day: rows stay bounded by the span, not by what was sent.
    windows.append(ticks("ppdb001", "2026-01-06", 17280, every="5s"))
    history, _ = windows.snapshot(history_steps=12)
    assert (history[SERVER_NAME] == "ppdb001").sum() <= 13 * 60 + 1


def record(name: str, severity: str, risk: float, origin: str = "2026-01-05T00:00:00+00:00") -> dict:
    return {"server_name": name, "profile": "web_api", "severity": severity, "risk": risk, "metric": "cpu_iowait_pct",
            "reason": "r", "prediction_time": origin, "model_version": "1", "_value": 35.0, "_quantile": "p50",
            "_probability": 0.6, "_minutes_ahead": 40}  # fmt: skip


def test_alerts_raise_escalate_and_resolve_with_hysteresis() -> None:
    book = AlertBook(history=3, resolve_after=2)
    now = utcnow()
    book.update([record("a", "warning", 0.4)], now)
    book.update([record("a", "critical", 0.8, "2026-01-05T00:05:00+00:00")], now)
    assert book.active["a"]["since"] == "2026-01-05T00:00:00+00:00" and book.counts() == {"warning": 0, "critical": 1}
    assert book.active["a"]["predicted_for"] == "2026-01-05T00:45:00+00:00"
    book.update([record("a", "healthy", 0.0)], now)
    assert "a" in book.active  # one healthy forecast does not resolve (no flapping)
    book.update([record("a", "warning", 0.5)], now)
    book.update([record("a", "healthy", 0.0)], now)
    book.update([record("a", "healthy", 0.0)], now)
    assert "a" not in book.active
    assert [t["kind"] for t in book.history] == ["raised", "escalated", "resolved"]


def test_an_active_alert_keeps_one_clock_and_names_its_values_quantile() -> None:
    book = AlertBook(history=10, resolve_after=1)
    wall = pd.Timestamp("2030-06-01 08:00", tz="UTC").to_pydatetime()  # far from the data's clock
    book.update([record("a", "warning", 0.4)], wall)
    book.update([record("a", "critical", 0.8, "2026-01-05T00:05:00+00:00")], wall + pd.Timedelta(minutes=5))
    [alert] = book.sorted_active()
    assert alert["since"] == "2026-01-05T00:00:00+00:00"  # the forecast that raised it
    assert alert["prediction_time"] == "2026-01-05T00:05:00+00:00"  # the forecast it shows
    assert alert["predicted_for"] == "2026-01-05T00:45:00+00:00"
    assert (alert["value"], alert["value_quantile"], alert["reached_by_quantile"]) == (35.0, "p50", "p50")
    assert (alert["probability"], alert["probability_word"]) == (0.6, "about as likely as not")
    served = json.dumps(alert, default=str)
    assert "2030" not in served and "raised_at" not in alert  # no wall-clock time in the object
    assert not [key for key in alert if key.startswith("_")]
    assert book.active["a"][RAISED_WALL] == wall  # kept privately, for Alertmanager's startsAt
    assert all(set(t) >= {"data_time"} and "at" not in t for t in book.history)
    assert "2030" not in json.dumps(list(book.history), default=str)


def test_an_alert_pages_by_the_models_rule() -> None:
    book = AlertBook(history=20, resolve_after=5)
    rule = PageRule(persist=2, window=3, clear_after=2)
    minutes = iter(range(0, 500, 5))

    def forecast(severity: str) -> bool:
        origin = (pd.Timestamp("2026-01-05", tz="UTC") + pd.Timedelta(minutes=next(minutes))).isoformat()
        book.update([record("a", severity, 0.8 if severity == "critical" else 0.4, origin)], utcnow(), rule)
        return bool(book.active["a"]["paging"])

    assert [forecast(s) for s in ("critical", "warning", "warning")] == [False, False, False]  # a blip
    assert [forecast(s) for s in ("critical", "critical", "warning", "critical")] == [False, True, True, True]
    assert [forecast(s) for s in ("warning", "warning")] == [True, False]  # two calm forecasts clear it
    assert [t["kind"] for t in book.history if "page" in t["kind"]] == ["paged", "page cleared"]


def test_unknown_rate_over_a_window() -> None:
    tracker = UnknownTracker(window_seconds=10, max_names=1)
    known = frozenset({"ppweb001"})
    assert tracker.record(["ppweb001", "x1", "x2"], known, now=0.0) == 2
    assert np.isclose(tracker.rate(now=1.0), 2 / 3) and len(tracker.names) == 1  # bounded memory
    tracker.record(["ppweb001"], known, now=20.0)
    assert tracker.rate(now=20.0) == 0.0


def test_a_versions_alert_threshold_is_read_once_per_load(model_store: dict, caplog: pytest.LogCaptureFixture) -> None:
    model = load_model(model_store["model_dir"])
    fitted = LoadedModel("1", model, utcnow())
    assert fitted.calibration == AlertCalibration.from_info(model.training_info)
    old = load_model(model_store["model_dir"])
    old.training_info[LEGACY_ALERT_THRESHOLD_KEY] = old.training_info.pop(ALERT_THRESHOLD_KEY, 0.073)
    legacy = LoadedModel("2", old, utcnow())
    with caplog.at_level(logging.WARNING, logger="tftmon.risk"):
        assert legacy.calibration == legacy.calibration == AlertCalibration()
    assert caplog.text.count("trained again") == 1  # once per loaded version, not per forecast


def test_reload_keeps_the_old_model_when_the_new_one_fails_the_smoke_test(model_store: dict) -> None:
    good = LoadedModel("1", load_model(model_store["model_dir"]), utcnow())
    broken = load_model(model_store["model_dir"])
    with torch.no_grad():
        next(broken.network.parameters()).fill_(float("nan"))
    candidates = iter([good, LoadedModel("2", broken, utcnow())])
    slot = ModelSlot(lambda: next(candidates))
    assert slot.reload() == (None, good)
    with pytest.raises(SmokeTestFailed, match=r"version 2: no finite forecast for \d+ of \d+ servers"):
        slot.reload()
    assert slot.current is good


def test_one_bad_server_never_stops_the_live_refresh(model_store: dict, fleet_history: pd.DataFrame) -> None:
    slot = ModelSlot(lambda: LoadedModel("1", load_model(model_store["model_dir"]), utcnow()))
    loaded = slot.reload()[1]
    assert loaded is not None
    windows = LiveWindows(max_servers=10, max_bytes=1 << 30)
    windows.set_history_steps(loaded.history_steps)
    names = sorted(fleet_history[SERVER_NAME].unique())[:3]
    windows.append(fleet_history[fleet_history[SERVER_NAME].isin(names)].groupby(SERVER_NAME).tail(40))
    fleet = LiveFleet(slot, windows, AlertBook(10, 2), UnknownTracker(60, 10), every_seconds=1)
    real = slot.forecast

    def breaks_on_one(model: LoadedModel, history: pd.DataFrame) -> pd.DataFrame:
        if names[1] in set(history[SERVER_NAME]):
            raise OverflowError("bad timestamps")
        return real(model, history)

    slot.forecast = breaks_on_one  # type: ignore[method-assign]
    assert fleet.refresh(now=0.0)
    assert [p["server_name"] for p in fleet.cache["predictions"]] == [names[0], names[2]]
    assert fleet.failures == 1 and fleet.failing == {names[1]: "OverflowError: bad timestamps"}


def test_a_forecast_whose_data_stopped_coming_is_marked_stale_with_its_age(
    model_store: dict, fleet_history: pd.DataFrame
) -> None:
    slot = ModelSlot(lambda: LoadedModel("1", load_model(model_store["model_dir"]), utcnow()))
    loaded = slot.reload()[1]
    assert loaded is not None
    windows = LiveWindows(max_servers=10, max_bytes=1 << 30)
    windows.set_history_steps(loaded.history_steps)
    names = sorted(fleet_history[SERVER_NAME].unique())[:2]
    windows.append(fleet_history[fleet_history[SERVER_NAME].isin(names)].groupby(SERVER_NAME).tail(40))
    fleet = LiveFleet(slot, windows, AlertBook(10, 2), UnknownTracker(60, 10), every_seconds=1, stale_after_seconds=900)
    assert fleet.refresh(now=0.0)
    newest = max(ts for _, _, ts, _ in windows.servers())
    fresh = pd.Timestamp(newest, unit="ns", tz="UTC").to_pydatetime() + pd.Timedelta(minutes=10)
    assert fleet.stale(fresh) == {}
    generation = fleet.generation
    fleet.restamp(fresh + pd.Timedelta(minutes=10))  # no new data for 20 min: every forecast is stale, aged
    assert fleet.generation == generation + 1
    assert set(fleet.stale(fresh + pd.Timedelta(minutes=10))) == set(names)
    for prediction in fleet.cache["predictions"]:
        assert prediction["stale"] and prediction["data_age_seconds"] >= 1200


def test_explanation_reads_the_forecasts_own_inputs(model_store: dict) -> None:
    """The cache keeps the history at the model step (not the raw 5 s window, twice the memory): forecast
    and explanation from it are those of the raw window, bit for bit."""
    from tftmon.config import SimulationConfig
    from tftmon.data.simulate import simulate

    slot = ModelSlot(lambda: LoadedModel("1", load_model(model_store["model_dir"]), utcnow()))
    loaded = slot.reload()[1]
    assert loaded is not None
    raw = simulate(SimulationConfig(servers=2, hours=1.5, interval="5s", seed=5)).drop(columns=["state"])
    windows = LiveWindows(max_servers=10, max_bytes=1 << 30)
    windows.set_history_steps(loaded.history_steps)
    windows.append(raw)
    fleet = LiveFleet(slot, windows, AlertBook(10, 2), UnknownTracker(60, 10), every_seconds=1)
    assert fleet.refresh(now=0.0)
    history, _ = windows.snapshot(loaded.history_steps)
    assert len(fleet.inputs) < len(history) / 50  # 5-min bins of 5 s ticks
    quantiles = ["p10", "p50", "p90"]
    np.testing.assert_array_equal(
        slot.forecast(loaded, fleet.inputs)[quantiles].to_numpy(), slot.forecast(loaded, history)[quantiles].to_numpy()
    )
    name = history[SERVER_NAME].iloc[0]
    binned, rows = fleet.inputs[fleet.inputs[SERVER_NAME] == name], history[history[SERVER_NAME] == name]
    assert slot.explain(loaded, binned) == slot.explain(loaded, rows)
    summary = fleet.summaries[-1]
    assert summary["servers"] == 2 and sum(summary["counts"].values()) == 2

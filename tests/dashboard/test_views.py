"""The dashboard's data shaping, without Streamlit or a service: payloads as the service's schemas shape them,
reasons as tftmon.risk words them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tftmon.contract import (
    CPU_IDLE,
    CPU_IOWAIT,
    MEM_USED,
    PREDICTION_STEPS,
    PROFILE_NAMES,
    QUANTILE_NAMES,
    probability_word,
)
from tftmon.dashboard import views
from tftmon.risk import CPU_USED, RISK_METRICS_BY_KEY, SEVERITY_BANDS, reasons, severity_of

ORIGIN = "2026-03-02T12:00:00+00:00"


def reason(key: str, profile: str, level: str, minutes: int = 40) -> str:
    """A driver sentence exactly as risk.py words it."""
    levels = dict(zip(("elevated", "high", "critical"), RISK_METRICS_BY_KEY[key].levels(profile), strict=True))
    row = {"risk_metric": key, "profile": profile, "level": level, "threshold": levels[level],
           "minutes_ahead": minutes, "probability": 0.64, "value": levels[level] + 1.0, "quantile": "p90"}  # fmt: skip
    return str(reasons(pd.DataFrame([row])).iloc[0])


def prediction(name: str, profile: str, risk: float, metric: str | None = None, drivers: tuple[str, ...] = (),
               path: dict[str, np.ndarray] | None = None) -> dict[str, Any]:  # fmt: skip
    """One record of /predictions/current; `path` per metric as [quantile, step]."""
    severity = str(severity_of(risk))
    return {
        "server_name": name, "profile": profile, "prediction_time": ORIGIN, "cold_start": False,
        "model_version": "3", "risk": risk, "alert_score": risk, "severity": severity,
        "severity_label": severity.capitalize(), "colour": "#000", "metric": metric,
        "reason": drivers[0] if drivers else "nothing crosses", "drivers": list(drivers), "horizons": {},
        "step_minutes": 5,
        "path": {m: dict(zip(QUANTILE_NAMES, q.tolist(), strict=True)) for m, q in (path or {}).items()},
    }  # fmt: skip


def payload(*records: dict[str, Any], warming: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"model_version": "3", "computed_at": ORIGIN, "predictions": list(records), "warming_up": warming or []}


def flat(p10: float, p50: float, p90: float) -> np.ndarray:
    return np.array([[p10], [p50], [p90]]) * np.ones(PREDICTION_STEPS)


def test_forecasts_keep_one_row_per_server_and_paths_as_arrays() -> None:
    body = payload(
        prediction("ppweb002", "web_api", 0.1, path={CPU_IOWAIT: flat(1, 2, 3)}),
        prediction("ppdb001", "database", 0.8, CPU_IOWAIT, (reason(CPU_IOWAIT, "database", "critical"),)),
        warming=[{"server_name": "ppetl950", "have_steps": 2, "need_steps": 10, "need_minutes": 50}],
    )
    forecasts = views.Forecasts.from_payload(body)
    assert forecasts.table["server_name"].tolist() == ["ppdb001", "ppweb002"]
    assert forecasts.ranked()["server_name"].tolist() == ["ppdb001", "ppweb002"]
    assert forecasts.table["metric_label"].tolist() == ["I/O wait", "none"]
    assert forecasts.paths["ppweb002"][CPU_IOWAIT].shape == (len(QUANTILE_NAMES), PREDICTION_STEPS)
    assert "path" not in forecasts.records["ppweb002"]
    assert forecasts.data_time() == pd.Timestamp(ORIGIN)
    assert forecasts.warming["still_needs"].tolist() == ["50 min more history (2 of 12 steps of 5 min)"]
    assert views.severity_counts(forecasts.table) == {"healthy": 1, "warning": 0, "critical": 1}


def test_an_empty_fleet_is_empty_tables_not_errors() -> None:
    forecasts = views.Forecasts.from_payload(payload())
    assert forecasts.table.empty and forecasts.warming.empty and forecasts.data_time() is None
    assert views.severity_counts(forecasts.table) == {b.severity.value: 0 for b in SEVERITY_BANDS}
    assert views.heatmap_grid(forecasts.table).cells.empty


def test_risk_distribution_bins_never_straddle_a_band() -> None:
    risks = np.linspace(0, 1, 101)
    table = pd.DataFrame({"risk": risks, "severity": severity_of(risks)})
    bins = views.risk_distribution(table)
    assert bins["servers"].sum() == len(risks)
    assert not bins.duplicated(["risk_from"]).any()  # one severity per bin
    assert (bins["severity"] == severity_of(bins["risk_from"].to_numpy())).all()


def test_heatmap_has_one_cell_per_server_grouped_by_profile_at_900_servers() -> None:
    rng = np.random.default_rng(0)
    names = [f"pp{PROFILE_NAMES[i % len(PROFILE_NAMES)][:3]}{i:04d}" for i in range(900)]
    profiles = [PROFILE_NAMES[i % len(PROFILE_NAMES)] for i in range(900)]
    table = pd.DataFrame({"server_name": names, "profile": profiles, "risk": rng.uniform(size=900)})
    grid = views.heatmap_grid(table, selected=names[5])
    cells = grid.cells
    assert len(cells) == 900 and grid.columns == 40
    assert not cells.duplicated(["column", "row"]).any() and set(cells["row"]) <= set(grid.rows)
    assert cells["selected"].sum() == 1 and cells.loc[cells["selected"], "server_name"].item() == names[5]
    labelled = [r for r in grid.rows if views.HIDDEN not in r]
    assert labelled == [f"{p} ({profiles.count(p)})" for p in PROFILE_NAMES]  # the contract's profile order
    assert len(grid.rows) * 18 < 700  # readable at a glance: 900 cells in well under a screen's height
    # A cell keeps its place when risks change: position depends on name and profile only.
    again = views.heatmap_grid(table.assign(risk=rng.uniform(size=900)))
    assert cells[["server_name", "column", "row"]].equals(again.cells[["server_name", "column", "row"]])


def test_driver_keys_follow_risks_own_sentences() -> None:
    drivers = (reason(CPU_IOWAIT, "database", "critical"), reason(MEM_USED, "database", "high"),
               reason(CPU_USED, "database", "elevated"))  # fmt: skip
    assert views.driver_keys({"metric": CPU_IOWAIT, "drivers": drivers}) == [CPU_IOWAIT, MEM_USED]
    assert views.driver_keys({"metric": CPU_IOWAIT, "drivers": drivers}, limit=3) == [CPU_IOWAIT, MEM_USED, CPU_USED]
    assert views.driver_keys({"metric": None, "drivers": []}) == list(views.QUIET_METRICS)


def test_fan_shows_cpu_as_used_with_the_profiles_levels_from_the_last_observation() -> None:
    idle = flat(20, 30, 45)  # idle p10/p50/p90 -> used p10 = 100 - 45, p50 = 70, p90 = 80
    forecasts = views.Forecasts.from_payload(payload(prediction("ppml0001", "ml_compute", 0.5, path={CPU_IDLE: idle})))
    times = pd.date_range(end=ORIGIN, periods=12, freq="5min").map(pd.Timestamp.isoformat).tolist()
    history = {"timestamps": times, "metrics": {CPU_IDLE: [40.0] * 11 + [None]}}
    fan = views.fan(forecasts, "ppml0001", CPU_USED, history)
    assert fan is not None and fan.label == "CPU used" and fan.percent
    assert fan.past["value"].iloc[0] == 60.0 and np.isnan(fan.past["value"].iloc[-1])  # used = 100 - idle; gap kept
    assert fan.future[["p10", "p50", "p90"]].iloc[-1].tolist() == [55.0, 70.0, 80.0]
    assert fan.future["time"].iloc[0] == pd.Timestamp(ORIGIN) + pd.Timedelta(minutes=5)
    assert fan.levels["value"].tolist() == list(RISK_METRICS_BY_KEY[CPU_USED].levels("ml_compute"))
    assert views.fan(forecasts, "ppml0001", CPU_IOWAIT, history) is None  # not forecast by this model

    later = [*times, (pd.Timestamp(ORIGIN) + pd.Timedelta(minutes=5)).isoformat()]  # read after a newer forecast
    observed = {"timestamps": later, "metrics": {CPU_IDLE: [40.0] * 12 + [10.0]}}
    joined = views.fan(forecasts, "ppml0001", CPU_USED, observed)
    assert joined is not None
    assert joined.future.iloc[0][["p10", "p50", "p90"]].tolist() == [60.0] * 3  # the band starts at the last point
    assert joined.future["time"].iloc[0] == pd.Timestamp(ORIGIN) and joined.past["time"].max() == pd.Timestamp(ORIGIN)


@pytest.mark.parametrize(
    ("p90", "probability", "quantile", "said"),
    [(70, 0.95, "p90", "very likely (95 %), p90 reaches it"),
     (60, 0.4, "p90", "about as likely as not (40 %), p90 reaches it"),
     (14, 0.04, "p98", "very unlikely (4 %), p98 reaches it, above the chart's p10–p90 band"),
     (14, 0.04, None, "very unlikely (4 %), above the chart's p10–p90 band")],
)  # fmt: skip
def test_alert_in_plain_words_with_the_profiles_threshold_and_its_probability(
    p90: float, probability: float, quantile: str | None, said: str
) -> None:
    critical = RISK_METRICS_BY_KEY[CPU_IOWAIT].levels("database")[2]
    assert critical == 50
    path = flat(1, 2, 3)
    path[:, 7] = (5, 10, p90)  # step 8: 40 min ahead
    forecasts = views.Forecasts.from_payload(payload(prediction("ppdb007", "database", 0.8, path={CPU_IOWAIT: path})))
    alert = {"server_name": "ppdb007", "profile": "database", "metric": CPU_IOWAIT, "probability": probability,
             "reached_by_quantile": quantile, "minutes_ahead": 40,
             "reason": reason(CPU_IOWAIT, "database", "critical")}  # fmt: skip
    sentence = views.alert_sentence(alert, forecasts)
    assert sentence == f"I/O wait on ppdb007 reaching 50 % in about 40 min: {said}"
    assert probability_word(probability) in sentence and f"({round(probability * 100)} %)" in sentence


def test_alert_on_cpu_reads_used_from_idle() -> None:
    idle = flat(1.0, 1.5, 3.0)  # used: p10 = 97, p50 = 98.5, p90 = 99 against ml_compute's critical 98
    forecasts = views.Forecasts.from_payload(payload(prediction("ppml0001", "ml_compute", 0.8, path={CPU_IDLE: idle})))
    alert = {"server_name": "ppml0001", "profile": "ml_compute", "metric": CPU_USED, "minutes_ahead": 5,
             "probability": 0.7, "reached_by_quantile": "p90",
             "reason": reason(CPU_USED, "ml_compute", "critical", minutes=5)}  # fmt: skip
    assert views.alert_sentence(alert, forecasts) == (
        "CPU used on ppml0001 reaching 98 % in about 5 min: likely (70 %), p90 reaches it"
    )


def test_alert_without_a_probability_is_its_reason_never_a_bare_may_rise() -> None:
    alert = {"server_name": "ppdb007", "profile": "database", "metric": CPU_IOWAIT, "minutes_ahead": 40,
             "reason": reason(CPU_IOWAIT, "database", "critical")}  # fmt: skip
    forecasts = views.Forecasts.from_payload(payload(prediction("ppdb007", "database", 0.8)))
    sentence = views.alert_sentence(alert, forecasts)
    assert sentence == f"ppdb007: {alert['reason']}" and "(64 %)" in sentence


def test_alert_without_a_level_falls_back_to_the_reason() -> None:
    alert = {"server_name": "ppweb001", "profile": "web_api", "metric": None, "reason": "something"}
    forecasts = views.Forecasts.from_payload(payload(prediction("ppweb001", "web_api", 0.5)))
    assert views.alert_sentence(alert, forecasts) == "ppweb001: something"


def test_a_held_alert_says_which_forecast_said_it_and_that_the_current_one_is_healthy() -> None:
    """The service holds an alert until healthy forecasts in a row: its crossing is an older forecast's, so
    beside the current (healthy) forecast it says so, and reads no band off the current forecast."""
    path = flat(1, 2, 3)
    alert = {"server_name": "ppdb007", "profile": "database", "metric": CPU_IOWAIT, "probability": 0.04,
             "reached_by_quantile": "p98", "minutes_ahead": 40, "prediction_time": "2026-03-02T11:50:00+00:00",
             "reason": reason(CPU_IOWAIT, "database", "critical")}  # fmt: skip
    healthy = views.Forecasts.from_payload(payload(prediction("ppdb007", "database", 0.1, path={CPU_IOWAIT: path})))
    assert views.held(alert, healthy)
    assert views.alert_sentence(alert, healthy) == (
        "I/O wait on ppdb007 reaching 50 % in about 40 min: very unlikely (4 %), p98 reaches it (held: the "
        "forecast from 11:50 UTC said so; ppdb007 is forecast healthy now, and the alert resolves after healthy "
        "forecasts in a row)"
    )
    gone = views.Forecasts.from_payload(payload())
    assert views.held(alert, gone) and "ppdb007 has no current forecast" in views.alert_sentence(alert, gone)
    warning = views.Forecasts.from_payload(payload(prediction("ppdb007", "database", 0.5, path={CPU_IOWAIT: path})))
    assert not views.held(alert, warning) and "held" not in views.alert_sentence(alert, warning)


@pytest.mark.parametrize(("minutes", "text"), [(0, "0 min"), (40, "40 min"), (60, "1 h"), (125, "2 h 5 min")])
def test_when(minutes: int, text: str) -> None:
    assert views.when(minutes) == text


def test_ago_in_words() -> None:
    now = pd.Timestamp("2026-03-02T12:00:00Z")
    assert views.ago(None, now) == "unknown"
    assert views.ago("2026-03-02T11:59:40Z", now) == "just now"
    assert views.ago("2026-03-02T10:30:00Z", now) == "1 h 30 min ago"
    assert views.ago("2026-02-20T12:00:00Z", now) == "10 days ago"
    assert views.ago("2026-03-02T14:00:00Z", now) == "2 h ahead of this clock"


def test_fleet_trends_and_transitions_over_time() -> None:
    summary = {
        "computed_at": ORIGIN, "data_time": ORIGIN, "model_version": "3", "servers": 3, "warming_up": 0,
        "counts": {"healthy": 2, "warning": 1, "critical": 0}, "mean_risk": 0.2, "max_risk": 0.4,
        "alerts": {"warning": 1, "critical": 0},
        "by_profile": {"database": {"servers": 3, "mean_risk": 0.2, "max_risk": 0.4,
                                    "counts": {"healthy": 2, "warning": 1, "critical": 0}}},
    }  # fmt: skip
    trends = views.fleet_trends([summary, {**summary, "computed_at": "2026-03-02T12:05:00+00:00"}])
    assert trends["severities"]["servers"].sum() == 6
    assert trends["risk"]["measure"].tolist() == ["mean", "max"] * 2
    assert trends["profiles"]["profile"].unique().tolist() == ["database"]
    assert all(len(f) == 0 for f in views.fleet_trends([]).values())

    moves = [{"kind": "resolved", "server_name": "ppdb001", "severity": "healthy", "previous_severity": "warning",
              "metric": None, "reason": "", "data_time": "2026-03-02T12:10:00+00:00"},
             {"kind": "raised", "server_name": "ppdb001", "severity": "warning", "previous_severity": "healthy",
              "metric": CPU_IOWAIT, "reason": "r", "data_time": ORIGIN}]  # fmt: skip
    frame = views.transitions(moves)
    assert frame["kind"].tolist() == ["raised", "resolved"] and frame["metric_label"].tolist() == ["I/O wait", "none"]
    assert (frame["at"] == frame["data_time"]).all()  # one clock: the timeline is in data time


def test_importances_name_risk_metrics_and_show_idle_as_used() -> None:
    frame = views.importances([{"name": "hour_sin", "importance": 0.2}, {"name": CPU_IDLE, "importance": 0.5},
                               {"name": CPU_IOWAIT, "importance": 0.3}])  # fmt: skip
    assert frame["label"].tolist() == ["CPU used (100 − idle)", "I/O wait", "Time of day"]
    weights = views.attention([{"minutes_before": 5, "weight": 0.7}, {"minutes_before": 0, "weight": 0.3}])
    assert weights["minutes_before"].tolist() == [0, 5]


def test_source_problems_say_what_is_wrong_with_live_data_and_alert_delivery() -> None:
    assert views.source_problems({"prometheus": None, "alertmanager": None}) == []
    status = {
        "prometheus": {
            "last_error": {"at": "2026-01-01T00:00:00+00:00", "message": "cannot reach Prometheus at http://p:9090"},
            "consecutive_failures": 3,
            "last_success_at": None,
            "hosts_missing_metrics": {"ppdb001": ["mem_used_pct"]},
        },
        "servers_stale": {"ppdb001": 1200.0, "ppweb002": 960.0},
        "alertmanager": {"http://am:9093": {"state": "down", "pending": 2, "last_error": {"error": "refused"}}},
    }
    problems = views.source_problems(status)
    assert len(problems) == 4
    assert "3 in a row" in problems[0] and "never" in problems[0] and "http://p:9090" in problems[0]
    assert "ppdb001 (no mem_used_pct)" in problems[1]
    assert "2 forecasts are stale" in problems[2] and "ppdb001" in problems[2] and "1 more" in problems[2]
    assert "http://am:9093" in problems[3] and "2 waiting" in problems[3]


def test_importances_show_operators_names_and_group_the_models_internals() -> None:
    """Issue 31, item 17: no `cpu_idle_pct_center`, `_scale`, `dow_sin` or `relative_time_idx` beside friendly
    names: calendar cycles are one input, the model's own scaling and position inputs one group, and what
    each internal means is listed on its own."""
    static = [
        {"name": "profile", "importance": 0.4},
        {"name": "cpu_idle_pct_center", "importance": 0.3},
        {"name": "cpu_idle_pct_scale", "importance": 0.2},
        {"name": "mem_used_pct_center", "importance": 0.1},
    ]
    known = [{"name": "dow_sin", "importance": 0.1}, {"name": "dow_cos", "importance": 0.15},
             {"name": "hour_sin", "importance": 0.3}, {"name": "is_weekend", "importance": 0.05},
             {"name": "relative_time_idx", "importance": 0.25}, {"name": "cpu_iowait_pct_24h_ago", "importance": 0.15},
             {"name": "net_in_mb_s", "importance": 0.0}]  # fmt: skip
    frame = views.importances(static)
    assert frame["label"].tolist() == [views.INTERNALS, "Server profile"]
    assert frame["importance"].tolist() == pytest.approx([0.6, 0.4])
    assert frame["variables"].iloc[0] == "cpu_idle_pct_center, cpu_idle_pct_scale, mem_used_pct_center"
    frame = views.importances(known)
    assert dict(zip(frame["label"], frame["importance"], strict=True)) == pytest.approx({
        "Time of day": 0.3, "Model internals (scaling, position)": 0.25, "Day of week": 0.25,
        "I/O wait, 24 h earlier": 0.15, "Weekend": 0.05, "Network ingress": 0.0})  # fmt: skip
    for group in (static, known):
        assert not {v["name"] for v in group} & set(views.importances(group)["label"])  # no variable name shown
    listed = views.internals(static)
    assert listed["variable"].tolist() == ["cpu_idle_pct_center", "cpu_idle_pct_scale", "mem_used_pct_center"]
    assert listed["meaning"].tolist() == ["CPU used (100 − idle): its level over the history window",
                                          "CPU used (100 − idle): its spread over the history window",
                                          "Memory: its level over the history window"]  # fmt: skip
    assert views.model_input("encoder_length").label == "encoder_length"  # unknown: shown as it is, not hidden

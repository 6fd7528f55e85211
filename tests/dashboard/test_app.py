"""Every tab of the Streamlit app (AppTest) against the live stack of conftest.py: a real service with the tiny
promoted model, the real feeder and its scenario control; then the service down, and the service without a
model. What is asserted is what the page says and the data its charts carry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import requests
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT
from tests.dashboard.conftest import SERVERS, WARMING, Stack
from tests.serving import Served, free_port
from tftmon.contract import PREDICTION_STEPS
from tftmon.dashboard.app import SELECTED, SETTINGS, TABS
from tftmon.dashboard.client import ServiceClient, Unavailable
from tftmon.risk import RISK_METRICS_BY_KEY, SEVERITY_BANDS

APP = ROOT / "tftmon" / "dashboard" / "app.py"


@pytest.fixture
def dashboard(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A function that opens the app on a tab, against the given service (and feeder) URLs."""

    def open_tab(tab: str, service_url: str, feeder_url: str = "http://127.0.0.1:9", **state: Any) -> AppTest:
        monkeypatch.setenv("TFTMON_DASHBOARD_SERVICE_URL", service_url)
        monkeypatch.setenv("TFTMON_DASHBOARD_FEEDER_URL", feeder_url)
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.query_params["tab"] = tab
        for key, value in state.items():
            at.session_state[key] = value
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        assert [t.label for t in at.tabs] == list(TABS)
        return at

    yield open_tab


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "error", "warning", "info", "success")
                     for e in at.get(kind))  # fmt: skip


def test_overview_counts_every_server_and_says_what_warming_servers_need(stack: Stack, dashboard: Any) -> None:
    at = dashboard("Overview", stack.url)
    status = stack.get("/status")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Servers forecast"] == str(SERVERS)
    assert sum(int(metrics[b.severity.value.capitalize()]) for b in SEVERITY_BANDS) == SERVERS
    assert metrics["Warming up"] == "1"
    page = texts(at)
    assert f"**Model version:** {status['model_version']}" in page
    assert "Data time of the last forecast:** 20" in page and "Unknown-server rate" in page
    warming = at.dataframe[-1].value
    assert warming["server_name"].tolist() == [WARMING]
    assert "more history" in warming["still_needs"].iloc[0]
    assert not at.error and not at.warning  # no banner: the service is up with a model


def chart_data(element: Any) -> list[pd.DataFrame]:
    """The data sets a chart element sends to the browser (Arrow IPC streams)."""
    return [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in element.proto.datasets]


def specs(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")]


def test_heatmap_has_one_cell_per_server_in_the_one_severity_scale(stack: Stack, dashboard: Any) -> None:
    names = sorted(p["server_name"] for p in stack.get("/predictions/current")["predictions"])
    at = dashboard("Heatmap", stack.url, **{SELECTED: names[3]})
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    (cells,) = chart_data(chart)
    assert sorted(cells["server_name"]) == names and len(names) == SERVERS
    assert cells.loc[cells["selected"], "server_name"].tolist() == [names[3]]
    assert spec["encoding"]["color"]["scale"] == {"domain": [b.severity.value for b in SEVERITY_BANDS],
                                                  "range": [b.colour for b in SEVERITY_BANDS]}  # fmt: skip
    assert [p["name"] for p in spec["params"]] == ["server"] and chart.proto.selection_mode == ["server"]
    tips = {t["field"] for t in spec["encoding"]["tooltip"]}
    assert {"server_name", "profile", "risk", "metric_label", "reason"} <= tips
    assert f"**Selected: {names[3]}**" in texts(at)


def test_top_servers_rank_by_risk_with_fan_charts_and_the_profiles_levels(stack: Stack, dashboard: Any) -> None:
    at = dashboard("Top Servers", stack.url)
    ranked = at.dataframe[0].value
    assert ranked["risk"].is_monotonic_decreasing and len(ranked) == SERVERS
    top = ranked["server_name"].iloc[0]
    assert at.subheader[0].value.startswith(f"{top}: ")
    fans = [e for e in at.get("vega_lite_chart") if json.loads(e.proto.spec)["title"].endswith(f" on {top}")]
    assert fans, "no fan chart for the worst server"
    profile = ranked["profile"].iloc[0]
    for element in fans:
        spec = json.loads(element.proto.spec)
        assert [layer["mark"]["type"] for layer in spec["layer"]] == ["area", "line", "line", "rule", "text"]
        assert spec["layer"][0]["encoding"]["y2"]["field"] == "p90"  # the band: p10 to p90
        label = spec["title"].removesuffix(f" on {top}")
        assert label != "CPU idle"
        band, history, levels = chart_data(element)
        risk_metric = next(r for r in RISK_METRICS_BY_KEY.values() if r.label == label)
        assert levels["value"].tolist() == list(risk_metric.levels(profile))
        assert len(band) == PREDICTION_STEPS + 1 and (band["p10"] <= band["p90"]).all()
        assert len(history) > 1 and history["time"].max() == band["time"].min()  # the past runs into the band


def test_selection_carries_across_tabs_and_refreshes(stack: Stack, dashboard: Any) -> None:
    at = dashboard("Explain", stack.url)
    last = at.selectbox[0].options[-1]  # the least risky: not among the top servers
    at.selectbox[0].select(last).run()
    assert at.session_state[SELECTED] == last and f"**{last}**" in texts(at)
    at.query_params["tab"] = "Top Servers"
    at.run()
    assert at.subheader[0].value.startswith(f"{last} (selected)")
    at.query_params["tab"] = "Explain"
    at.run()  # and again: a refresh keeps it
    assert at.selectbox[0].value == last


def test_explain_draws_the_models_own_importances_and_attention(stack: Stack, dashboard: Any) -> None:
    at = dashboard("Explain", stack.url)
    name = at.selectbox[0].value
    body = stack.get(f"/explain/{name}")
    titles = [s["title"] for s in specs(at)]
    assert titles == ["History inputs (encoder)", "Known future inputs (decoder)", "Static inputs",
                      "Attention over the history"]  # fmt: skip
    encoder, decoder, static, attention = (chart_data(e)[0] for e in at.get("vega_lite_chart"))
    # The feeder moves the forecast on every few seconds: the variables are the served ones, the weights
    # those of a forecast (each group sums to 1, largest first), the history bins those the model read.
    for frame, group in ((encoder, "encoder_variables"), (decoder, "decoder_variables"), (static, "static_variables")):
        covered = [name for names in frame["variables"] for name in names.split(", ")]
        assert sorted(covered) == sorted(v["name"] for v in body[group])  # each variable in one bar
        assert not set(covered) & set(frame["label"])  # by operators' names: no cpu_idle_pct_center, dow_sin
        assert frame["importance"].sum() == pytest.approx(1.0, abs=1e-4)
        assert frame["importance"].is_monotonic_decreasing
    (internal,) = (d.value for d in at.dataframe)  # the model's internals, each with what it means
    assert set(internal["variable"]) == {"relative_time_idx"} | {
        v["name"] for v in body["static_variables"] if v["name"].endswith(("_center", "_scale"))
    }
    assert sorted(attention["minutes_before"]) == sorted(a["minutes_before"] for a in body["attention"])


def test_historical_plots_fleet_summaries(stack: Stack, dashboard: Any) -> None:
    at = dashboard("Historical", stack.url)
    summaries = stack.get("/fleet/history")["summaries"]
    assert summaries
    titles = [s["title"] for s in specs(at)]
    assert titles[:4] == ["Servers by forecast severity", "Fleet risk (mean and max)",  # left column
                          "Active alerts", "Mean risk by profile"]  # fmt: skip
    severities = chart_data(at.get("vega_lite_chart")[0])[0]
    assert severities.groupby("time")["servers"].sum().max() == SERVERS


def test_advanced_shows_the_model_and_switches_the_feeders_scenario(stack: Stack, dashboard: Any) -> None:
    at = dashboard("Advanced", stack.url, stack.feeder_url)
    status = at.table[0].value["value"]
    assert status["model_version"] == str(stack.get("/status")["model_version"])
    (raw,) = at.expander  # one server's raw record, closed (open, it was ~8,300 px of JSON; issue 31, item 17)
    assert not raw.proto.expanded and raw.json[0].proto.max_expand_depth == 1
    assert json.loads(raw.json[0].proto.body)["server_name"] == at.selectbox(key="raw_server").value
    assert "Feeder scenario: **degrading**" in texts(at)
    try:
        at.button(key="scenario_critical").click().run()
        assert requests.get(f"{stack.feeder_url}/scenario", timeout=5).json()["scenario"] == "critical"
        assert "now runs the critical scenario" in texts(at)
    finally:
        requests.post(f"{stack.feeder_url}/scenario", json={"scenario": "degrading"}, timeout=5)


def test_settings_apply_to_the_session_and_bad_values_are_named(stack: Stack, dashboard: Any) -> None:
    at = dashboard("Advanced", stack.url)
    at.number_input[0].set_value(30.0)
    at.button[0].click().run()  # Apply
    assert at.session_state[SETTINGS].refresh_seconds == 30.0
    at.text_input[0].set_value("not a url")
    at.button[0].click().run()
    assert "service_url" in at.error[0].value and at.session_state[SETTINGS].service_url == stack.url


def test_feeder_unreachable_is_said_in_words(stack: Stack, dashboard: Any) -> None:
    at = dashboard("Advanced", stack.url, f"http://127.0.0.1:{free_port()}")
    at.button(key="scenario_healthy").click().run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert warnings and all("not reachable" in w and "tftmon feed" in w for w in warnings)


@pytest.mark.parametrize("tab", TABS)
def test_service_down_is_a_banner_with_the_fix_on_every_tab(dashboard: Any, tab: str) -> None:
    at = dashboard(tab, f"http://127.0.0.1:{free_port()}")
    (banner,) = at.error
    assert "The service is not reachable" in banner.value and "`tftmon serve`" in banner.value
    assert "Traceback" not in texts(at)


def test_service_without_a_model_says_how_to_get_one(bare_service: Served, dashboard: Any) -> None:
    at = dashboard("Overview", bare_service.url)
    (banner,) = at.warning
    assert "no model loaded" in banner.value and "`tftmon promote`" in banner.value
    assert "No live forecasts yet" in texts(at)


def test_client_errors_carry_the_services_fix(stack: Stack) -> None:
    client = ServiceClient(stack.url)
    with pytest.raises(Unavailable) as missing:
        client.explain("ppnothere001")
    assert missing.value.status == 404 and "POST /feed" in missing.value.fix
    with pytest.raises(Unavailable) as warming:
        client.explain(WARMING)
    assert warming.value.status == 409 and "more minutes of history" in warming.value.fix

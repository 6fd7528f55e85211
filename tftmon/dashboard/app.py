"""The tftmon dashboard: six tabs over the service's HTTP API (`tftmon dashboard` runs it).

The tabs live in one fragment that reruns every refresh interval, so the page refreshes without jumping
and keeps the open tab (in the URL: ?tab=Heatmap) and the selected server (session state). Tabs are lazy:
only the open one reads and draws. The current predictions and the active alerts come from a background
poller (poller.py) as one snapshot of one forecast, which every view of a run reads; the other reads are
cached per refresh tick. Both are shared by every browser session, so clicking around between refreshes
costs no request, and no page waits for the 25 MB of a 900-server fleet.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from tftmon.config import error_text
from tftmon.contract import CONTRACT_VERSION
from tftmon.dashboard import charts, views
from tftmon.dashboard.client import NO_MODEL, SCENARIOS, FeederClient, ServiceClient, Unavailable
from tftmon.dashboard.poller import Poller
from tftmon.dashboard.settings import DashboardSettings
from tftmon.risk import SEVERITY_BANDS

TABS = ("Overview", "Heatmap", "Top Servers", "Historical", "Explain", "Advanced")
#: Session-state keys: the dashboard's settings, and the server selected on the heatmap or a picker.
SETTINGS, SELECTED = "dashboard_settings", "selected_server"
#: Transitions drawn on the timeline (the table below it lists them all).
TIMELINE_SERVERS = 40
TRANSITION_COLUMNS = ["at", "server_name", "kind", "previous_severity", "severity", "metric_label", "reason"]
#: Levels of a raw record's JSON shown open: its fields, not its horizons' quantiles.
RAW_JSON_DEPTH = 1


# ---------------------------------------------------------------------------------------------
# Reads: one per endpoint and refresh tick, shared across sessions
# ---------------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=64, ttl=3600)
def _read(url: str, timeout: float, endpoint: str, tick: int | str | None, server: str | None = None) -> Any:
    """One read per refresh tick, or per forecast (`tick` its computed_at) for what a forecast explains."""
    client = ServiceClient(url, timeout)
    read = getattr(client, endpoint)
    return read() if server is None else read(server)


@st.cache_resource(show_spinner=False, max_entries=8)
def _snapshots(url: str, timeout: float, every: float) -> Poller[views.Snapshot]:
    """The current predictions and alerts of one forecast, re-read in the background when the service
    forecast anew: the version is the `computed_at` of the (small) active alerts, which the service stamps
    with the forecast they come from, as it stamps the predictions."""
    client = ServiceClient(url, timeout)
    return Poller(
        lambda: client.alerts()["computed_at"],
        lambda: views.Snapshot.from_payloads(*client.current()),
        every,
    )


@dataclass(frozen=True)
class Page:
    """One run of the live fragment: the settings, the refresh tick and how the service answered /health."""

    settings: DashboardSettings
    tick: int
    health: dict[str, Any] | None
    down: Unavailable | None

    def read(self, endpoint: str) -> Any:
        return _read(self.settings.service_url, self.settings.timeout_seconds, endpoint, self.tick)

    def read_server(self, endpoint: str, server: str) -> Any:
        """A server's history or explanation, read once per forecast: it matches the forecast drawn."""
        settings, forecast = self.settings, self.forecasts.computed_at
        return _read(settings.service_url, settings.timeout_seconds, endpoint, forecast, server)

    @cached_property
    def snapshot(self) -> views.Snapshot:
        """One forecast's predictions and alerts per run, whatever the poller reads meanwhile: every view of
        the run reads this one."""
        settings = self.settings
        return _snapshots(settings.service_url, settings.timeout_seconds, settings.refresh_seconds).latest()

    @property
    def forecasts(self) -> views.Forecasts:
        return self.snapshot.forecasts


def _settings() -> DashboardSettings:
    if SETTINGS not in st.session_state:
        st.session_state[SETTINGS] = DashboardSettings()
    settings: DashboardSettings = st.session_state[SETTINGS]
    return settings


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _problem(exc: Unavailable) -> None:
    st.warning(f"{exc.message}.  \n**Fix:** {exc.fix}.")


def _server_picker(label: str, names: list[str], key: str) -> str | None:
    """A server picker that starts at the selected server and, when changed, selects for every tab."""
    if not names:
        return None
    current = st.session_state.get(SELECTED)
    st.session_state[key] = current if current in names else names[0]

    def remember() -> None:
        st.session_state[SELECTED] = st.session_state[key]

    choice: str = st.selectbox(label, names, key=key, on_change=remember)
    return choice


# ---------------------------------------------------------------------------------------------
# Tabs
# ---------------------------------------------------------------------------------------------


def overview(page: Page) -> None:
    snapshot, status = page.snapshot, page.read("status")
    forecasts = snapshot.forecasts
    table, now = forecasts.table, _now()
    counts = views.severity_counts(table)
    columns = st.columns(5)
    columns[0].metric("Servers forecast", len(table), help="Live servers with a forecast")
    for column, band in zip(columns[1:4], SEVERITY_BANDS, strict=True):
        column.metric(band.severity.value.capitalize(), counts[band.severity.value],
                      help=f"Servers whose current forecast is {band.severity.value}: {band.label}")  # fmt: skip
    columns[4].metric("Warming up", len(forecasts.warming), help="Live servers with too little history yet")
    data_time = forecasts.data_time()
    version = f"{status['model_version'] or 'none'} (loaded {views.ago(status['loaded_at'], now)})"
    if forecasts.model_version not in (None, status["model_version"]):
        version += f"; the forecasts shown are version {forecasts.model_version}'s until the next forecast"
    facts = {
        "Model version": version,
        "Contract": f"service {status['contract_version']}, model {status['model_contract_version'] or '–'}, "
        f"dashboard {CONTRACT_VERSION}",
        "Data time of the last forecast": "none yet"
        if data_time is None
        else f"{data_time:%Y-%m-%d %H:%M} UTC ({views.ago(data_time.isoformat(), now)}; "
        f"computed {views.ago(forecasts.computed_at, now)})",
        "Unknown-server rate": f"{status['unknown_rate']:.1%} of predictions in the last "
        f"{views.when(status['unknown_rate_window_seconds'] / 60)} ({status['unknown_servers']} unknown servers)",
    }
    st.markdown("  \n".join(f"**{k}:** {v}" for k, v in facts.items()))
    if table.empty:
        st.info("No live forecasts yet: feed metrics to the service, e.g. `tftmon feed --scenario degrading`.")
    else:
        left, right = st.columns(2)
        with left:
            st.markdown("**Risk distribution**")
            st.altair_chart(charts.risk_distribution(views.risk_distribution(table)))
        with right:
            st.markdown(f"**Active alerts** ({len(snapshot.alerts)})")
            if snapshot.alerts:
                st.dataframe(snapshot.alert_rows(), hide_index=True, height=260)
            else:
                st.caption("None: no server's forecast crosses a warning or critical level.")
            held = snapshot.held_alerts()
            if held:
                st.caption(
                    f"{held} held: {'its server is' if held == 1 else 'their servers are'} forecast healthy now, "
                    "and an alert resolves only after healthy forecasts in a row (so a server hovering at a "
                    "level does not flap); the tiles count current forecasts."
                )
    if len(forecasts.warming):
        st.markdown(f"**Warming up** ({len(forecasts.warming)}): no forecast until a server has the model's window")
        st.dataframe(forecasts.warming[["server_name", "still_needs"]], hide_index=True)


def _on_click() -> None:
    """A heatmap click selects that server for every tab (a click on empty space keeps the selection)."""
    picked = st.session_state["heatmap"]["selection"].get(charts.SELECTION) or []
    if picked and isinstance(picked[0], dict) and picked[0].get("server_name"):
        st.session_state[SELECTED] = picked[0]["server_name"]


def heatmap(page: Page) -> None:
    forecasts = page.forecasts
    if forecasts.table.empty:
        st.info("No live forecasts yet: the heatmap fills as servers are fed and forecast.")
        return
    selected = st.session_state.get(SELECTED)
    grid = views.heatmap_grid(forecasts.table, selected)
    st.caption(
        f"{len(forecasts.table)} servers by profile; hover for why, click to select for Top Servers and Explain."
    )
    st.altair_chart(
        charts.heatmap(grid), on_select=_on_click, selection_mode=charts.SELECTION, key="heatmap", width="content"
    )
    if selected in forecasts.records:
        record = forecasts.records[selected]
        st.markdown(
            f"**Selected: {selected}** ({record['profile']}): {record['severity_label']} "
            f"(risk {record['risk']:.2f}).  \n{record['reason']}"
        )


def top_servers(page: Page) -> None:
    forecasts = page.forecasts
    if forecasts.table.empty:
        st.info("No live forecasts yet.")
        return
    ranked = forecasts.ranked()
    alerts = {a["server_name"]: a for a in page.snapshot.alerts}
    risk = st.column_config.ProgressColumn("risk", min_value=0.0, max_value=1.0, format="%.2f", color="gray")
    st.dataframe(
        ranked.head(20)[["server_name", "profile", "risk", "severity", "metric_label", "reason"]],
        hide_index=True,
        column_config={"risk": risk, "metric_label": "driving metric"},
    )
    shown = ranked["server_name"].head(page.settings.top_servers).tolist()
    selected = st.session_state.get(SELECTED)
    if selected in forecasts.records and selected not in shown:
        shown.insert(0, selected)
    for name in shown:
        record = forecasts.records[name]
        marker = " (selected)" if name == selected else ""
        st.subheader(f"{name}{marker}: {record['severity']}, risk {record['risk']:.2f}", divider="gray")
        alert = alerts.get(name)
        if alert is None:
            st.caption(f"No active alert. {record['reason']}")
        elif views.held(alert, forecasts):
            st.info(views.alert_sentence(alert, forecasts))
        elif alert["severity"] == "critical":
            st.error(views.alert_sentence(alert, forecasts))
        else:
            st.warning(views.alert_sentence(alert, forecasts))
        try:
            history = page.read_server("server_history", name)
        except Unavailable as exc:
            history = None
            st.caption(f"No history to draw: {exc.message}")
        keys = views.driver_keys(record)
        for column, key in zip(st.columns(len(keys)), keys, strict=True):
            fan = views.fan(forecasts, name, key, history)
            if fan is None:
                column.caption(f"{views.metric_label(key)}: not forecast by this model")
            else:
                column.altair_chart(charts.fan_chart(fan))


def historical(page: Page) -> None:
    trends = views.fleet_trends(page.read("fleet_history")["summaries"])
    if trends["risk"].empty:
        st.info("No fleet history yet: the service keeps one summary per live forecast.")
    else:
        left, right = st.columns(2)
        left.altair_chart(charts.severity_area(trends["severities"]))
        right.altair_chart(charts.alert_lines(trends["alerts"]))
        left.altair_chart(charts.risk_lines(trends["risk"], "measure", "risk", "Fleet risk (mean and max)"))
        right.altair_chart(charts.risk_lines(trends["profiles"], "profile", "mean_risk", "Mean risk by profile"))
    transitions = views.transitions(page.read("alert_history")["transitions"])
    if transitions.empty:
        st.caption("No alert was raised, escalated or resolved yet.")
        return
    recent = transitions["server_name"].drop_duplicates(keep="last").tail(TIMELINE_SERVERS)
    st.altair_chart(charts.transition_timeline(transitions[transitions["server_name"].isin(recent)]))
    if transitions["server_name"].nunique() > TIMELINE_SERVERS:
        st.caption(f"The timeline shows the {TIMELINE_SERVERS} servers with the latest transitions; the table all.")
    st.dataframe(transitions.iloc[::-1][TRANSITION_COLUMNS], hide_index=True, column_config={"metric_label": "metric"})


def explain(page: Page) -> None:
    forecasts = page.forecasts
    name = _server_picker("Server", forecasts.ranked()["server_name"].tolist(), key="explain_server")
    if name is None:
        st.info("No live forecasts yet: nothing to explain.")
        return
    try:
        body = page.read_server("explain", name)
    except Unavailable as exc:
        _problem(exc)
        return
    st.markdown(
        f"Why the model forecast **{name}** ({body['profile']}) as it did, from {body['prediction_time']} "
        f"(model version {body['model_version']}): the TFT's own variable selection weights and attention "
        "(`interpret_output` on the inputs of the current forecast), not an estimate by the dashboard."
    )
    groups = (("encoder_variables", "History inputs (encoder)"), ("decoder_variables", "Known future inputs (decoder)"),
              ("static_variables", "Static inputs"))  # fmt: skip
    for column, (group, title) in zip(st.columns(3), groups, strict=True):
        column.altair_chart(charts.importance_chart(views.importances(body[group]), title))
    st.altair_chart(charts.attention_chart(views.attention(body["attention"])))
    internal = pd.concat([views.internals(body[group]).assign(inputs=title) for group, title in groups],
                         ignore_index=True)  # fmt: skip
    if len(internal):
        with st.expander(f"{views.INTERNALS}: what the {len(internal)} inputs of that bar are"):
            st.caption(
                "The model reads each metric relative to its own recent level and spread, and where a step lies "
                "in its window: inputs it derives itself, grouped as one bar above."
            )
            st.dataframe(internal[["inputs", "meaning", "variable", "importance"]], hide_index=True,
                         column_config={"importance": st.column_config.NumberColumn(format="percent")})  # fmt: skip


def advanced(page: Page) -> None:
    settings = page.settings
    with st.form("settings_form"):
        st.markdown("**Settings** (this browser session)")
        url = st.text_input("Service URL", settings.service_url)
        feeder_url = st.text_input("Feeder control URL", settings.feeder_url)
        refresh = st.number_input("Refresh every (seconds)", 1.0, 3600.0, float(settings.refresh_seconds), step=1.0)
        top = st.number_input("Top servers with fan charts", 1, 20, settings.top_servers)
        if st.form_submit_button("Apply"):
            changes = {"service_url": url.strip(), "feeder_url": feeder_url.strip(), "refresh_seconds": refresh,
                       "top_servers": top}  # fmt: skip
            try:
                st.session_state[SETTINGS] = DashboardSettings(**{**settings.model_dump(), **changes})
            except ValidationError as exc:
                st.error(error_text(exc))
            else:
                st.rerun()  # the whole app: the fragment's refresh interval is set when it is declared
    status = None if page.down is not None else page.read("status")
    source = (status or {}).get("prometheus")
    if source is not None:  # live data comes from Prometheus: there is no simulator scenario to switch
        st.markdown(
            f"**Live source**: Prometheus at {source['url']}: {source['hosts']} hosts in the last pull, "
            f"{source['failed_pulls']} of {source['pulls']} pulls failed, last good pull "
            f"{source['last_success_at'] or 'never'}"
        )
    else:
        scenario_control(settings)
    if status is None:
        return
    st.markdown("**Model and service** (`/status`)")
    st.table(pd.DataFrame({"field": list(status), "value": [str(v) for v in status.values()]}).set_index("field"))
    forecasts = page.forecasts
    st.markdown(
        f"**Raw JSON of the current predictions**: one server below (without its per-step path); all of them at "
        f"[{settings.service_url}/predictions/current]({settings.service_url}/predictions/current)."
    )
    name = _server_picker("Server", sorted(forecasts.records), key="raw_server")
    if name is not None:  # one record's horizons are thousands of pixels of JSON: closed until asked for
        with st.expander(f"{name}'s forecast as the service serves it"):
            st.json(forecasts.records[name], expanded=RAW_JSON_DEPTH)


def scenario_control(settings: DashboardSettings) -> None:
    """The feeder's demo scenario: three buttons, and what the feeder says it runs now."""
    st.markdown("**Demo scenario** (the live feeder)")
    feeder = FeederClient(settings.feeder_url)
    for column, scenario in zip(st.columns(len(SCENARIOS)), SCENARIOS, strict=True):
        if column.button(scenario.capitalize(), key=f"scenario_{scenario}", width="stretch"):
            try:
                feeder.set_scenario(scenario)
            except Unavailable as exc:
                _problem(exc)
            else:
                st.success(f"The feeder now runs the {scenario} scenario: watch the heatmap over the next model steps.")
    try:
        current = feeder.scenario()
    except Unavailable as exc:
        _problem(exc)
    else:
        st.caption(f"Feeder scenario: **{current['scenario']}** since {current.get('since', '?')}")


#: Each tab's drawing, and whether it needs the service's answers.
DRAW: dict[str, tuple[Callable[[Page], None], bool]] = {
    "Overview": (overview, True),
    "Heatmap": (heatmap, True),
    "Top Servers": (top_servers, True),
    "Historical": (historical, True),
    "Explain": (explain, True),
    "Advanced": (advanced, False),
}


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def banner(page: Page) -> None:
    """Why there is nothing to show, and the command that fixes it; never a traceback or a blank page."""
    url = page.settings.service_url
    if page.down is not None:
        st.error(
            f"**The service is not reachable**: {page.down.message}.  \n"
            f"**Fix:** {page.down.fix}, then reload this page."
        )
    elif page.health is not None and not page.health.get("model_loaded"):
        st.warning(
            f"**The service at {url} has no model loaded**: no forecasts until it has one.  \n**Fix:** {NO_MODEL}."
        )
    if page.down is None:
        with contextlib.suppress(Unavailable):
            for problem in views.source_problems(page.read("status")):
                st.warning(problem)


def live() -> None:
    """The refreshing part of the page: header, banner and the open tab."""
    settings = _settings()
    tick = int(time.time() // settings.refresh_seconds)
    try:
        health, down = _read(settings.service_url, settings.timeout_seconds, "health", tick), None
    except Unavailable as exc:
        health, down = None, exc
    page = Page(settings, tick, health, down)
    st.caption(
        f"Service {settings.service_url} · refreshed {_now():%H:%M:%S} UTC, every {settings.refresh_seconds:g} s"
    )
    banner(page)
    for tab, name in zip(st.tabs(TABS, key="tab", on_change="rerun", bind="query-params"), TABS, strict=True):
        if not tab.open:
            continue
        draw, needs_service = DRAW[name]
        with tab:
            if needs_service and down is not None:
                st.info("Nothing to show while the service is not reachable (see above).")
                continue
            try:
                draw(page)
            except Unavailable as exc:
                _problem(exc)


def main() -> None:
    st.set_page_config(page_title="tftmon", layout="wide")
    st.markdown("#### tftmon: where the fleet is heading")
    try:
        settings = _settings()
    except ValidationError as exc:
        st.error(
            f"The dashboard's settings are invalid: {error_text(exc)}.  \n"
            "**Fix:** correct the TFTMON_DASHBOARD_* variables."
        )
        return
    st.fragment(live, run_every=settings.refresh_seconds)()


if __name__ == "__main__":  # Streamlit runs the script as __main__; tests import its names
    main()

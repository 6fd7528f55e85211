"""The service's JSON shaped into the tables the dashboard draws: pure functions, tested without Streamlit.

Everything about severity, colour, thresholds and the CPU-used rule comes from `tftmon.risk` and the
contract, never re-typed here, so the dashboard shows what the service scored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tftmon.contract import (
    COLUMNS_BY_NAME,
    CPU_IDLE,
    METRICS,
    PROFILE,
    PROFILE_NAMES,
    QUANTILE_NAMES,
    STEP_MINUTES,
    probability_text,
)
from tftmon.risk import (
    CPU_USED,
    CPU_USER_RISK,
    LEVEL_NAMES,
    RISK_METRICS,
    RISK_METRICS_BY_KEY,
    SEVERITY_BANDS,
    RiskMetric,
    Severity,
    colour_of,
)

SEVERITIES: tuple[str, ...] = tuple(b.severity.value for b in SEVERITY_BANDS)
#: Risk metrics a fan chart shows for a server whose forecast crosses nothing.
QUIET_METRICS: tuple[str, ...] = (RISK_METRICS[0].key, CPU_USED)
#: The fleet table's columns: a forecast's scalars (the records keep the rest).
TABLE_COLUMNS = ["server_name", "profile", "risk", "severity", "metric", "metric_label", "reason", "prediction_time"]


def _utc(values: Any) -> Any:
    return pd.to_datetime(values, utc=True, format="ISO8601")


def when(minutes: float) -> str:
    """40 min, 1 h, 2 h 5 min: how far ahead, as an operator says it."""
    hours, mins = divmod(round(minutes), 60)
    if hours == 0:
        return f"{mins} min"
    return f"{hours} h" if mins == 0 else f"{hours} h {mins} min"


def ago(moment: str | None, now: pd.Timestamp) -> str:
    """How long ago an ISO time was, in words; a time ahead of `now` says so (a feeder faster than the clock)."""
    if not moment:
        return "unknown"
    minutes = (now - _utc(moment)).total_seconds() / 60

    def span(m: float) -> str:
        return when(m) if m < 48 * 60 else f"{m / 1440:.0f} days"

    if minutes <= -1:
        return f"{span(-minutes)} ahead of this clock"
    return "just now" if minutes < 1 else f"{span(minutes)} ago"


def metric_label(key: object) -> str:
    """A risk metric's operator name (I/O wait, CPU used, ...); "none" where nothing drives the risk."""
    if not isinstance(key, str):  # None, or NaN once pandas holds it
        return "none"
    risk_metric = RISK_METRICS_BY_KEY.get(key)
    return key if risk_metric is None else risk_metric.label


# ---------------------------------------------------------------------------------------------
# Current predictions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forecasts:
    """/predictions/current: one row per server for the fleet views, each server's per-step path kept as a
    float32 array [quantile, step] per metric (as Python lists, 900 servers' paths take over 100 MB)."""

    #: Wall-clock time the service computed them (ISO), None before its first forecast.
    computed_at: str | None
    #: The model version that forecast them (None before the first forecast).
    model_version: str | None
    table: pd.DataFrame
    paths: dict[str, dict[str, np.ndarray]]
    records: dict[str, dict[str, Any]]
    warming: pd.DataFrame

    @classmethod
    def from_payload(cls, body: dict[str, Any]) -> Forecasts:
        records, paths = {}, {}
        for prediction in body.get("predictions", []):
            name = prediction["server_name"]
            path = prediction.get("path") or {}
            paths[name] = {m: np.array([by_q[q] for q in QUANTILE_NAMES], dtype=np.float32) for m, by_q in path.items()}
            records[name] = {k: v for k, v in prediction.items() if k != "path"}
        table = pd.DataFrame(list(records.values()), columns=TABLE_COLUMNS)
        table["metric_label"] = [metric_label(m) for m in table["metric"]]
        table["prediction_time"] = _utc(table["prediction_time"])
        table["risk"] = table["risk"].astype(float)
        return cls(
            computed_at=body.get("computed_at"),
            model_version=body.get("model_version"),
            table=table.sort_values("server_name", ignore_index=True),
            paths=paths,
            records=records,
            warming=warming_table(body.get("warming_up", [])),
        )

    def ranked(self) -> pd.DataFrame:
        """Servers worst first (ties by name, so the order holds still between refreshes)."""
        return self.table.sort_values(["risk", "server_name"], ascending=[False, True], ignore_index=True)

    def data_time(self) -> pd.Timestamp | None:
        """The newest forecast origin: the data time the fleet's forecasts start from."""
        return None if self.table.empty else self.table["prediction_time"].max()


@dataclass(frozen=True)
class Snapshot:
    """One forecast of the service: the fleet's predictions and the alerts that forecast left active (the
    same `computed_at`). Every view of one refresh reads one snapshot, so the severity tiles, the alert list
    and a server's card count the same forecast, never one beside the next."""

    forecasts: Forecasts
    #: /alerts/active's alerts, worst first.
    alerts: list[dict[str, Any]]

    @classmethod
    def from_payloads(cls, predictions: dict[str, Any], alerts: dict[str, Any]) -> Snapshot:
        if predictions.get("computed_at") != alerts.get("computed_at"):
            raise ValueError(
                f"predictions computed at {predictions.get('computed_at')} and alerts computed at "
                f"{alerts.get('computed_at')} are two forecasts: read both of one (ServiceClient.current)"
            )
        return cls(Forecasts.from_payload(predictions), list(alerts.get("alerts", [])))

    def alert_rows(self) -> pd.DataFrame:
        """The active alerts in plain words, with the severity each server's current forecast has; a held
        alert says so (its severity is its forecast's, not the current one's: see `held`)."""
        forecasts = self.forecasts
        return pd.DataFrame(
            {
                "alert": [alert_sentence(a, forecasts) for a in self.alerts],
                "severity": [f"{a['severity']} (held)" if held(a, forecasts) else a["severity"] for a in self.alerts],
                "forecast now": [
                    forecasts.records.get(a["server_name"], {}).get("severity", "no forecast") for a in self.alerts
                ],
            },
            columns=["alert", "severity", "forecast now"],
        )

    def held_alerts(self) -> int:
        return sum(held(a, self.forecasts) for a in self.alerts)


def held(alert: dict[str, Any], forecasts: Forecasts) -> bool:
    """Whether the service holds the alert although the server's current forecast is healthy (or it has
    none): an alert resolves only after healthy forecasts in a row, so a server hovering at a level does not
    flap. A forecast above healthy always refreshes its server's alert, so only these alerts differ from it."""
    record = forecasts.records.get(alert["server_name"])
    return record is None or record["severity"] == Severity.HEALTHY.value


def warming_table(warming: list[dict[str, Any]]) -> pd.DataFrame:
    """Servers without a forecast yet and what each still needs, in words."""
    frame = pd.DataFrame(warming, columns=["server_name", "have_steps", "need_steps", "need_minutes"])
    frame["still_needs"] = [
        f"{when(m)} more history ({have} of {have + need} steps of {STEP_MINUTES} min)"
        for m, have, need in zip(frame["need_minutes"], frame["have_steps"], frame["need_steps"], strict=True)
    ]
    return frame.sort_values("server_name", ignore_index=True)


def severity_counts(table: pd.DataFrame) -> dict[str, int]:
    """Servers per severity, healthy first (every severity present, zero when none)."""
    counts = table["severity"].value_counts()
    return {s: int(counts.get(s, 0)) for s in SEVERITIES}


def risk_distribution(table: pd.DataFrame, bins: int = 20) -> pd.DataFrame:
    """Servers per risk bin and severity (a bin straddles no band edge when 0.3 and 0.7 are bin edges)."""
    index = np.minimum(np.floor(table["risk"].to_numpy() * bins), bins - 1).astype(int)
    frame = pd.DataFrame({"bin": index, "severity": table["severity"].to_numpy()})
    counted = frame.groupby(["bin", "severity"]).size().rename("servers").reset_index()
    counted["risk_from"] = counted["bin"] / bins
    counted["risk_to"] = (counted["bin"] + 1) / bins
    return counted[["risk_from", "risk_to", "severity", "servers"]]


# ---------------------------------------------------------------------------------------------
# Heatmap
# ---------------------------------------------------------------------------------------------

#: Row keys holding this character are spacers or continuation rows: the axis shows no label for them.
HIDDEN = "#"


@dataclass(frozen=True)
class HeatmapGrid:
    """Every server a cell: grouped by profile (contract order), by name within a profile so a cell never
    moves between refreshes. `rows` is the y domain, top first: each profile's first row is labelled
    with the profile and its server count, and an empty spacer row separates profiles."""

    cells: pd.DataFrame
    rows: list[str]
    columns: int


def heatmap_columns(servers: int) -> int:
    """Cells per row: a near-square block for small fleets, at most 40 across (900 servers: 40 x ~25)."""
    return max(8, min(40, math.ceil(math.sqrt(servers) * 1.6)))


def heatmap_grid(table: pd.DataFrame, selected: str | None = None, columns: int | None = None) -> HeatmapGrid:
    """The fleet table laid out as cells, the selected server's flagged (the chart outlines it)."""
    columns = columns or heatmap_columns(len(table))
    known = [p for p in PROFILE_NAMES if p in set(table["profile"])]
    order = known + sorted(set(table["profile"]) - set(known))
    parts, rows = [], []
    for i, profile in enumerate(order):
        group = table[table["profile"] == profile].sort_values("server_name")
        position = np.arange(len(group))
        keys = [f"{profile} ({len(group)})", *(f"{profile}{HIDDEN}{r}" for r in range(1, -(-len(group) // columns)))]
        if i:
            rows.append(f"{HIDDEN}{i}")
        rows += keys
        parts.append(group.assign(column=position % columns, row=[keys[r] for r in position // columns]))
    cells = pd.concat(parts, ignore_index=True) if parts else table.assign(column=0, row="")
    cells["selected"] = cells["server_name"] == selected
    return HeatmapGrid(cells, rows, columns)


# ---------------------------------------------------------------------------------------------
# Fan charts
# ---------------------------------------------------------------------------------------------


def driver_keys(record: dict[str, Any], limit: int = 2) -> list[str]:
    """The risk metrics behind a server's risk, worst first: its driving metric, then those its drivers
    (risk's own sentences, each starting with the metric's label) name; two quiet ones when none crosses,
    among the metrics the record's model forecasts (a model of some metrics has no fan for the others)."""
    keys = [record["metric"]] if record.get("metric") in RISK_METRICS_BY_KEY else []
    for driver in record.get("drivers") or []:
        for risk_metric in RISK_METRICS_BY_KEY.values():
            if driver.startswith(f"{risk_metric.label} ≥") and risk_metric.key not in keys:
                keys.append(risk_metric.key)
    return (keys or _quiet_keys(record))[:limit]


def _quiet_keys(record: dict[str, Any]) -> list[str]:
    """QUIET_METRICS where the model forecasts them, else the risk metrics it does forecast."""
    forecast = {m for by_metric in (record.get("horizons") or {}).values() for m in by_metric}
    if not forecast:
        return list(QUIET_METRICS)
    # CPU user stands in for CPU used only where idle is not forecast, as risk judges it (risk.CPU_USER_RISK).
    judged = [
        k
        for k, r in RISK_METRICS_BY_KEY.items()
        if r.source in forecast and (r is not CPU_USER_RISK or CPU_IDLE not in forecast)
    ]
    return [k for k in QUIET_METRICS if k in judged] or judged or list(QUIET_METRICS)


@dataclass(frozen=True)
class Fan:
    """One metric of one server: the recent history the model read, the p10–p90 band and p50 to 8 h,
    and the profile's levels (elevated, high, critical) from risk.py; CPU as used = 100 − idle."""

    server_name: str
    key: str
    label: str
    unit: str
    past: pd.DataFrame  # time, value
    future: pd.DataFrame  # time, p10, p50, p90
    levels: pd.DataFrame  # level, value, text, colour

    @property
    def percent(self) -> bool:
        return self.unit.strip() == "%"

    @property
    def title(self) -> str:
        return f"{self.label} on {self.server_name}"


def _observed(risk_metric: RiskMetric, values: list[float | None]) -> np.ndarray:
    observed = np.array([np.nan if v is None else v for v in values], dtype=float)
    return 100.0 - observed if risk_metric.complement else observed


def _bands(forecasts: Forecasts, server_name: str, risk_metric: RiskMetric) -> np.ndarray | None:
    """The risk metric's p10, p50, p90 per step [3, step], CPU as used: idle's quantiles swap (used p10 =
    100 - idle p90); None when the model does not forecast it."""
    path = forecasts.paths.get(server_name, {}).get(risk_metric.source)
    if path is None:
        return None
    return 100.0 - path[::-1].astype(float) if risk_metric.complement else path.astype(float)


def fan(forecasts: Forecasts, server_name: str, key: str, history: dict[str, Any] | None) -> Fan | None:
    """The fan chart's data, or None when the model does not forecast the metric. `history` may be newer
    than the forecast (the service refreshed between the two reads): it is drawn up to the forecast's origin."""
    risk_metric = RISK_METRICS_BY_KEY[key]
    bands = _bands(forecasts, server_name, risk_metric)
    if bands is None:
        return None
    low, mid, high = bands
    record = forecasts.records[server_name]
    origin = _utc(record["prediction_time"])
    step = pd.Timedelta(minutes=record.get("step_minutes", STEP_MINUTES))
    future = pd.DataFrame({"time": origin + step * np.arange(1, len(mid) + 1), "p10": low, "p50": mid, "p90": high})
    past = pd.DataFrame({"time": pd.Series([], dtype="datetime64[ns, UTC]"), "value": pd.Series([], dtype=float)})
    if history is not None and risk_metric.source in history.get("metrics", {}):
        past = pd.DataFrame(
            {
                "time": _utc(history["timestamps"]),
                "value": _observed(risk_metric, history["metrics"][risk_metric.source]),
            }
        )
        past = past[past["time"] <= origin]  # a history read after a newer forecast: up to this one's origin
        last = past.dropna()
        if len(last) and last["time"].iloc[-1] == origin:  # the band starts where the history ends
            value = float(last["value"].iloc[-1])
            start = pd.DataFrame({"time": [origin], "p10": [value], "p50": [value], "p90": [value]})
            future = pd.concat([start, future], ignore_index=True)
    thresholds = risk_metric.levels(record["profile"])
    colours = ["#9e9e9e", "#9e9e9e", colour_of("critical")]
    levels = pd.DataFrame(
        {
            "level": list(LEVEL_NAMES),
            "value": list(thresholds),
            "text": [f"{n} {v:g}{risk_metric.unit}" for n, v in zip(LEVEL_NAMES, thresholds, strict=True)],
            "colour": colours,
        }
    )
    return Fan(server_name, key, risk_metric.label, risk_metric.unit, past, future, levels)


def _beyond_band(bands: np.ndarray | None, step: int, threshold: float) -> bool:
    """Whether the fan chart's p10–p90 band stays below the level at the crossing's step: the crossing is
    then read from quantiles the chart does not draw (the model's p95, p98)."""
    return bands is not None and 1 <= step <= bands.shape[1] and bool(bands[-1, step - 1] < threshold)


def alert_sentence(alert: dict[str, Any], forecasts: Forecasts) -> str:
    """An active alert in plain words, its probability in the contract's words with the %:
    "I/O wait on ppdb007 reaching 50 % in about 10 min: very unlikely (4 %), p98 reaches it, above the
    chart's p10–p90 band".

    The level is the one risk's reason names ("critical for database"), its threshold read from risk.py's
    table for the server's profile; the probability and the quantile reaching the level are the alert's;
    the band is the server's forecast at that step, as the fan chart draws it. Without a probability, the
    reason itself. A held alert (`held`) says which forecast said it and that the current one is healthy:
    its crossing is that older forecast's, not the one the fleet table and the fan charts show.
    """
    risk_metric = RISK_METRICS_BY_KEY.get(alert.get("metric") or "")
    server, reason = alert["server_name"], alert.get("reason", "")
    level = next((name for name in LEVEL_NAMES if f"({name} for " in reason), None)
    probability = alert.get("probability")
    is_held = held(alert, forecasts)
    if risk_metric is None or level is None or probability is None:
        sentence = f"{server}: {reason}"
    else:
        threshold = risk_metric.levels(alert["profile"])[LEVEL_NAMES.index(level)]
        minutes = int(alert.get("minutes_ahead") or 0)
        soon = "now" if minutes <= 0 else f"in about {when(minutes)}"
        quantile = alert.get("reached_by_quantile")
        reached = f", {quantile} reaches it" if quantile else ""
        bands = None if is_held else _bands(forecasts, server, risk_metric)  # a held alert's forecast is gone
        beyond = _beyond_band(bands, minutes // STEP_MINUTES, threshold)
        band = ", above the chart's p10–p90 band" if beyond else ""
        sentence = (
            f"{risk_metric.label} on {server} reaching {threshold:g}{risk_metric.unit} {soon}: "
            f"{probability_text(probability)}{reached}{band}"
        )
    if not is_held:
        return sentence
    now = "has no current forecast" if server not in forecasts.records else "is forecast healthy now"
    return (
        f"{sentence} (held: the forecast from {_utc(alert['prediction_time']):%H:%M} UTC said so; {server} {now}, "
        "and the alert resolves after healthy forecasts in a row)"
    )


# ---------------------------------------------------------------------------------------------
# History of the fleet and of alerts
# ---------------------------------------------------------------------------------------------


def fleet_trends(summaries: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """/fleet/history as long tables over wall-clock time: servers per severity (`severities`), active
    alerts per severity (`alerts`), fleet mean and max risk (`risk`) and mean risk per profile (`profiles`)."""
    severities, alerts, risk, profiles = [], [], [], []
    for summary in summaries:
        time = summary["computed_at"]
        severities += [{"time": time, "severity": s, "servers": summary["counts"].get(s, 0)} for s in SEVERITIES]
        alerts += [{"time": time, "severity": s, "alerts": n} for s, n in summary.get("alerts", {}).items()]
        risk += [{"time": time, "measure": m, "risk": summary[f"{m}_risk"]} for m in ("mean", "max")]
        profiles += [
            {"time": time, "profile": p, "mean_risk": part["mean_risk"], "max_risk": part["max_risk"],
             "servers": part["servers"]}
            for p, part in summary.get("by_profile", {}).items()
        ]  # fmt: skip
    frames = {
        "severities": pd.DataFrame(severities, columns=["time", "severity", "servers"]),
        "alerts": pd.DataFrame(alerts, columns=["time", "severity", "alerts"]),
        "risk": pd.DataFrame(risk, columns=["time", "measure", "risk"]),
        "profiles": pd.DataFrame(profiles, columns=["time", "profile", "mean_risk", "max_risk", "servers"]),
    }
    for frame in frames.values():
        frame["time"] = _utc(frame["time"])
    return frames


def transitions(history: list[dict[str, Any]]) -> pd.DataFrame:
    """Alert transitions (raised, escalated, resolved), oldest first, with the metric's operator name. They
    carry data time only (`data_time`, the forecast's origin); `at`, the time the timeline and table show,
    is that data time."""
    columns = ["data_time", "server_name", "kind", "severity", "previous_severity", "metric", "reason"]
    frame = pd.DataFrame(history, columns=columns)
    frame["data_time"] = _utc(frame["data_time"])
    frame.insert(0, "at", frame["data_time"])
    frame["metric_label"] = [metric_label(m) for m in frame["metric"]]
    return frame.sort_values("at", kind="stable", ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Explanations
# ---------------------------------------------------------------------------------------------

#: The model's inputs by their operator names: risk metrics as risk.py names them, idle CPU as what it means
#: for used CPU, other metrics by the first words of the contract's description ("Kernel CPU").
_METRIC_LABELS = (
    {m: COLUMNS_BY_NAME[m].description.split(";")[0].split(":")[0].rstrip(".") for m in METRICS}
    | {r.source: r.label for r in RISK_METRICS if not r.complement}
    | {CPU_IDLE: "CPU used (100 − idle)"}
)
#: Calendar inputs: sine and cosine of one cycle are one input to an operator.
_CALENDAR = {"hour": "Time of day", "dow": "Day of week"}
_CALENDAR_INPUT = re.compile(r"^(?P<cycle>hour|dow)_(?:sin|cos)$")
#: A metric's value the same time of an earlier day (the model's seasonal inputs).
_SEASONAL_INPUT = re.compile(rf"^(?P<metric>{'|'.join(METRICS)})_(?P<hours>\d+)h_ago$")
#: What the model derives for itself: each metric's level and spread over the window it normalises the
#: metric by, and a step's position in the window. One group on the charts; listed on their own.
_TARGET_SCALE = re.compile(rf"^(?P<metric>{'|'.join(METRICS)})_(?P<part>center|scale)$")
_SCALE_MEANING = {"center": "its level over the history window", "scale": "its spread over the history window"}
RELATIVE_TIME = "relative_time_idx"
INTERNALS = "Model internals (scaling, position)"


@dataclass(frozen=True)
class Input:
    """A model input as an operator reads it: its name, and whether it is one of the model's internals
    (with what it means)."""

    label: str
    internal: bool = False
    meaning: str = ""


def model_input(name: str) -> Input:
    """An input variable of the TFT by an operator's name; a name it does not know is shown as it is."""
    if name in _METRIC_LABELS:
        return Input(_METRIC_LABELS[name])
    if name == PROFILE:
        return Input("Server profile")
    if name == "is_weekend":
        return Input("Weekend")
    if match := _CALENDAR_INPUT.match(name):
        return Input(_CALENDAR[match["cycle"]])
    if match := _SEASONAL_INPUT.match(name):
        return Input(f"{_METRIC_LABELS[match['metric']]}, {match['hours']} h earlier")
    if match := _TARGET_SCALE.match(name):
        return Input(INTERNALS, True, f"{_METRIC_LABELS[match['metric']]}: {_SCALE_MEANING[match['part']]}")
    if name == RELATIVE_TIME:
        return Input(INTERNALS, True, "the step's position in the history and forecast window")
    return Input(name)


def importances(variables: list[dict[str, Any]]) -> pd.DataFrame:
    """Variable importances by operator's name, largest first: the inputs one name covers (sine and cosine
    of the hour, the model's internals) summed, with the variables each bar covers (`variables`)."""
    frame = pd.DataFrame(variables, columns=["name", "importance"])
    frame["label"] = [model_input(n).label for n in frame["name"]]
    grouped = frame.groupby("label", sort=False).agg(importance=("importance", "sum"), variables=("name", ", ".join))
    return grouped.reset_index().sort_values("importance", ascending=False, ignore_index=True)


def internals(variables: list[dict[str, Any]]) -> pd.DataFrame:
    """The model's internal inputs of one group, each with what it means, largest first."""
    rows = [
        {"variable": v["name"], "meaning": found.meaning, "importance": v["importance"]}
        for v in variables
        if (found := model_input(v["name"])).internal
    ]
    frame = pd.DataFrame(rows, columns=["variable", "meaning", "importance"])
    return frame.sort_values("importance", ascending=False, ignore_index=True)


def attention(weights: list[dict[str, Any]]) -> pd.DataFrame:
    """Attention of the first forecast step over the history, by minutes before the forecast origin."""
    return pd.DataFrame(weights, columns=["minutes_before", "weight"]).sort_values("minutes_before", ignore_index=True)


def source_problems(status: dict[str, Any]) -> list[str]:
    """What /status says is wrong with where live data comes from and where alerts go, one sentence each
    (markdown), worst first: a Prometheus that does not answer, hosts left out, stale forecasts, an
    Alertmanager that does not take alerts."""
    problems: list[str] = []
    source = status.get("prometheus") or {}
    error = source.get("last_error")
    if error:
        problems.append(
            f"**Prometheus pulls fail** ({source.get('consecutive_failures', 0)} in a row, last good pull "
            f"{source.get('last_success_at') or 'never'}): {error['message']}"
        )
    missing = source.get("hosts_missing_metrics") or {}
    if missing:
        named = ", ".join(f"{host} (no {', '.join(metrics)})" for host, metrics in list(missing.items())[:5])
        problems.append(f"**{len(missing)} hosts are not forecast**: they lack metrics the model reads: {named}")
    stale = status.get("servers_stale") or {}
    if stale:
        worst = max(stale, key=lambda name: stale[name])
        problems.append(
            f"**{len(stale)} forecasts are stale**: no new data for {when(stale[worst] / 60)} on {worst}"
            + (f" and {len(stale) - 1} more" if len(stale) > 1 else "")
        )
    for url, sink in (status.get("alertmanager") or {}).items():
        if sink.get("state") in ("down", "refusing") and sink.get("last_error"):
            problems.append(
                f"**Alerts are not reaching Alertmanager** at {url} ({sink['state']}, {sink.get('pending', 0)} "
                f"waiting): {sink['last_error']['error']}"
            )
    return problems

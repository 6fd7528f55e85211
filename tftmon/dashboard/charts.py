"""The dashboard's Altair charts, one function per chart; severity colours come from risk.py's one scale.

Charts are built from the tables of `views` and know nothing of HTTP or Streamlit. Times are drawn in
UTC, the contract's zone, whatever the browser's own zone is.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from tftmon.alerting import TRANSITION_KINDS
from tftmon.dashboard.views import HIDDEN, SEVERITIES, Fan, HeatmapGrid
from tftmon.risk import SEVERITY_BANDS

#: The heatmap's view name, and the name of its click selection (what Streamlit reports back).
HEATMAP = "heatmap"
SELECTION = "server"
#: Forecast (band, p50) and observed history colours: neutral, so only severities are green/yellow/red.
FORECAST = "#1565c0"
OBSERVED = "#424242"
#: Colours of series (profiles, mean/max): none green, yellow or red, which mean severity here.
SERIES = ["#1565c0", "#6a1b9a", "#00838f", "#5d4037", "#616161", "#ad1457", "#283593", "#90a4ae"]
#: Pixels per heatmap cell: 900 servers fit 40 x 25 cells in 720 x 560 px.
CELL = 18


#: Charts fill their column's width; a chart's height is its plot's, legends and titles come on top of it.
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")
#: Points on a line: small, so a week of summaries stays a line.
POINT = alt.OverlayMarkDef(size=12)
#: A fan chart's level labels: their font size, and the pixels from one label's baseline to the next.
LEVEL_FONT, LEVEL_GAP = 10, 12


def severity_scale(severities: tuple[str, ...] = SEVERITIES) -> alt.Scale:
    """healthy / warning / critical (or some of them) in risk.py's colours."""
    colours = {b.severity.value: b.colour for b in SEVERITY_BANDS}
    return alt.Scale(domain=list(severities), range=[colours[s] for s in severities])


def _time(field: str = "time", title: str = "time (UTC)") -> alt.X:
    axis = alt.Axis(format="%H:%M", tickMinStep=60_000)  # minutes at most: no repeated labels
    return alt.X(f"{field}:T", title=title, scale=alt.Scale(type="utc"), axis=axis)


def _time_tip(field: str, title: str) -> alt.Tooltip:
    return alt.Tooltip(f"{field}:T", title=title, format="%Y-%m-%d %H:%M UTC", formatType="utc")


def heatmap(grid: HeatmapGrid) -> alt.Chart:
    """One cell per server coloured by severity, profiles stacked; a click selects the server. Drawn as
    SVG (900 rects are light), so every cell is an element a browser test can count."""
    pick = alt.selection_point(name=SELECTION, fields=["server_name"], on="click")
    data = grid.cells[["server_name", "profile", "risk", "severity", "metric_label", "reason", "column", "row",
                       "selected"]]  # fmt: skip
    return (
        alt.Chart(data, name=HEATMAP)
        .mark_rect(cursor="pointer")
        .encode(
            x=alt.X("column:O", axis=None, scale=alt.Scale(domain=list(range(grid.columns)))),
            y=alt.Y(
                "row:O",
                scale=alt.Scale(domain=grid.rows),
                axis=alt.Axis(
                    title=None,
                    ticks=False,
                    domain=False,
                    labelLimit=220,
                    labelExpr=f"indexof(datum.label, '{HIDDEN}') >= 0 ? '' : datum.label",
                ),
            ),
            color=alt.Color("severity:N", scale=severity_scale(), legend=alt.Legend(title=None, orient="top")),
            stroke=alt.condition("datum.selected", alt.value("#000000"), alt.value("#ffffff")),
            strokeWidth=alt.condition("datum.selected", alt.value(3), alt.value(1)),
            tooltip=[
                alt.Tooltip("server_name:N", title="server"),
                alt.Tooltip("profile:N"),
                alt.Tooltip("risk:Q", format=".2f"),
                alt.Tooltip("severity:N"),
                alt.Tooltip("metric_label:N", title="driving metric"),
                alt.Tooltip("reason:N"),
            ],
        )
        .add_params(pick)
        .properties(
            width=grid.columns * CELL,
            height=len(grid.rows) * CELL,
            autosize=alt.AutoSizeParams(type="pad"),  # width is the cells' area: the labels are added to it
            usermeta={"embedOptions": {"renderer": "svg"}},
        )
    )


def risk_distribution(frame: pd.DataFrame) -> alt.Chart:
    """Servers per risk bin, coloured by the severity band the bin lies in."""
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("risk_from:Q", bin="binned", scale=alt.Scale(domain=[0, 1]), title="risk"),
            x2="risk_to:Q",
            y=alt.Y("servers:Q", title="servers"),
            color=alt.Color("severity:N", scale=severity_scale(), legend=None),
            tooltip=[alt.Tooltip("risk_from:Q", title="risk from"), alt.Tooltip("risk_to:Q", title="to"), "servers:Q"],
        )
        .properties(height=200, autosize=FIT_WIDTH)
    )


def fan_chart(fan: Fan, height: int = 230) -> alt.LayerChart:
    """History, then the p50 forecast with its p10–p90 band to 8 h, and the profile's levels as rules.

    Percentages keep a 0–100 axis; other metrics span the data and at least the lowest level, and levels
    above that are clipped rather than flattening the chart.
    """
    unit = fan.unit.strip()
    if fan.percent:
        domain = (0.0, 100.0)
    else:
        top = max(fan.future["p90"].max(), fan.past["value"].max(skipna=True) if len(fan.past) else 0.0)
        domain = (0.0, float(max(top, fan.levels["value"].min()) * 1.1))
    scale = alt.Scale(domain=list(domain))
    y_title = f"{fan.label} ({unit})" if unit else fan.label
    x = _time()
    band = (
        alt.Chart(fan.future)
        .mark_area(opacity=0.25, color=FORECAST, clip=True)
        .encode(
            x=x,
            y=alt.Y("p10:Q", scale=scale, title=y_title),
            y2="p90:Q",
            tooltip=[
                _time_tip("time", "time"),
                alt.Tooltip("p10:Q", format=".1f"),
                alt.Tooltip("p50:Q", format=".1f"),
                alt.Tooltip("p90:Q", format=".1f"),
            ],
        )
    )
    median = alt.Chart(fan.future).mark_line(color=FORECAST, strokeDash=[6, 3], clip=True).encode(x=x, y="p50:Q")
    past = alt.Chart(fan.past).mark_line(color=OBSERVED, clip=True).encode(x=x, y="value:Q")
    levels = fan.levels.assign(label_at=label_positions(fan.levels["value"].tolist(), domain, height))
    rules = (
        alt.Chart(levels)
        .mark_rule(strokeDash=[3, 3], clip=True)
        .encode(y="value:Q", color=alt.Color("colour:N", scale=None), tooltip=[alt.Tooltip("text:N", title="level")])
    )
    labels = (
        alt.Chart(levels)
        .mark_text(align="left", baseline="bottom", dx=3, dy=-2, fontSize=LEVEL_FONT, clip=True)
        .encode(y="label_at:Q", x=alt.value(2), text="text:N", color=alt.Color("colour:N", scale=None))
    )
    layers = [band, median, past, rules, labels]
    return alt.LayerChart(layer=layers).properties(title=fan.title, height=height, autosize=FIT_WIDTH)


def label_positions(values: list[float], domain: tuple[float, float], height: int) -> list[float]:
    """Where each level's label sits (data units; the label is drawn just above): at its level, but pushed
    apart to LEVEL_GAP px where levels lie close (90, 95 and 98 % are 7 px apart at 230 px), and down below
    the plot's top where the highest would be cut off. A level above the axis keeps its place: it is clipped,
    as its rule is."""
    low, high = domain
    gap = LEVEL_GAP * (high - low) / height
    shown = sorted((v, i) for i, v in enumerate(values) if low <= v <= high)
    positions = list(values)
    placed: list[float] = []
    for value, _ in shown:  # upwards: each at least a gap above the one below
        placed.append(value if not placed else max(value, placed[-1] + gap))
    for k in reversed(range(len(placed))):  # downwards from the top: each within the plot, a gap below the next
        ceiling = high - gap if k == len(placed) - 1 else placed[k + 1] - gap
        placed[k] = min(placed[k], ceiling)
    for (_, index), position in zip(shown, placed, strict=True):
        positions[index] = position
    return positions


def importance_chart(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Variable importance (sums to 1 over the group) by operator's name, largest on top."""
    return (
        alt.Chart(frame)
        .mark_bar(color=FORECAST)
        .encode(
            x=alt.X("importance:Q", axis=alt.Axis(format="%"), title="importance"),
            y=alt.Y("label:N", sort="-x", title=None, axis=alt.Axis(labelOverlap=False, labelLimit=200)),
            tooltip=[
                alt.Tooltip("label:N", title="input"),
                alt.Tooltip("variables:N", title="model variables"),
                alt.Tooltip("importance:Q", format=".1%"),
            ],
        )
        .properties(title=title, height=alt.Step(20), autosize=FIT_WIDTH)
    )


def attention_chart(frame: pd.DataFrame) -> alt.Chart:
    """Where in the history the model looked for its first forecast step (newest at the right)."""
    return (
        alt.Chart(frame)
        .mark_line(point=POINT, color=FORECAST)
        .encode(
            x=alt.X("minutes_before:Q", scale=alt.Scale(reverse=True), title="minutes before the forecast origin"),
            y=alt.Y("weight:Q", axis=alt.Axis(format="%"), title="attention"),
            tooltip=["minutes_before:Q", alt.Tooltip("weight:Q", format=".1%")],
        )
        .properties(title="Attention over the history", height=200, autosize=FIT_WIDTH)
    )


def severity_area(frame: pd.DataFrame) -> alt.Chart:
    """Servers per severity over time, stacked (healthy at the bottom)."""
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return (
        alt.Chart(frame.assign(order=frame["severity"].map(order)))
        .mark_area()
        .encode(
            x=_time(),
            y=alt.Y("servers:Q", stack=True, title="servers"),
            color=alt.Color("severity:N", scale=severity_scale(), legend=alt.Legend(orient="top", title=None)),
            order="order:Q",
            tooltip=[_time_tip("time", "time"), "severity:N", "servers:Q"],
        )
        .properties(title="Servers by forecast severity", height=200, autosize=FIT_WIDTH)
    )


def alert_lines(frame: pd.DataFrame) -> alt.Chart:
    """Active alerts per severity over time (after the alert book's hysteresis)."""
    return (
        alt.Chart(frame)
        .mark_line(point=POINT, interpolate="step-after")
        .encode(
            x=_time(),
            y=alt.Y("alerts:Q", title="active alerts"),
            color=alt.Color(
                "severity:N", scale=severity_scale(SEVERITIES[1:]), legend=alt.Legend(orient="top", title=None)
            ),
            tooltip=[_time_tip("time", "time"), "severity:N", "alerts:Q"],
        )
        .properties(title="Active alerts", height=200, autosize=FIT_WIDTH)
    )


def _band_rules() -> alt.Chart:
    edges = pd.DataFrame(
        {"risk": [b.lower for b in SEVERITY_BANDS[1:]], "colour": [b.colour for b in SEVERITY_BANDS[1:]]}
    )
    return alt.Chart(edges).mark_rule(strokeDash=[3, 3]).encode(y="risk:Q", color=alt.Color("colour:N", scale=None))


def risk_lines(frame: pd.DataFrame, series: str, value: str, title: str) -> alt.LayerChart:
    """Risk over time per series (fleet mean/max, or a profile's mean), with the band edges drawn."""
    lines = (
        alt.Chart(frame)
        .mark_line(point=POINT)
        .encode(
            x=_time(),
            y=alt.Y(f"{value}:Q", scale=alt.Scale(domain=[0, 1]), title="risk"),
            color=alt.Color(
                f"{series}:N", scale=alt.Scale(range=SERIES), legend=alt.Legend(orient="right", title=None)
            ),
            tooltip=[_time_tip("time", "time"), f"{series}:N", alt.Tooltip(f"{value}:Q", format=".2f")],
        )
    )
    return alt.LayerChart(layer=[_band_rules(), lines]).properties(title=title, height=200, autosize=FIT_WIDTH)


def transition_timeline(frame: pd.DataFrame) -> alt.Chart:
    """Alert transitions as a timeline: one row per server, a mark per raise, escalation or resolution."""
    return (
        alt.Chart(frame)
        .mark_point(filled=True, size=90)
        .encode(
            x=_time("at"),
            y=alt.Y("server_name:N", title=None),
            color=alt.Color("severity:N", scale=severity_scale(), legend=alt.Legend(orient="top", title="severity")),
            shape=alt.Shape(
                "kind:N",
                scale=alt.Scale(domain=list(TRANSITION_KINDS)),
                legend=alt.Legend(orient="top", title=None),
            ),
            tooltip=[
                _time_tip("at", "at"),
                "server_name:N",
                "kind:N",
                "previous_severity:N",
                "severity:N",
                alt.Tooltip("metric_label:N", title="metric"),
                "reason:N",
            ],
        )
        .properties(title="Alert transitions", height=22 * frame["server_name"].nunique(), autosize=FIT_WIDTH)
    )

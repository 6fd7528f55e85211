"""The dashboard's charts as the browser gets them (Vega-Lite specs and their data), without Streamlit."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.dashboard.test_views import flat, payload, prediction
from tftmon.contract import CPU_IDLE, LOAD_AVERAGE
from tftmon.dashboard import charts, views
from tftmon.risk import CPU_USED, RISK_METRICS_BY_KEY

HEIGHT = 230


def level_labels(chart: Any) -> list[tuple[str, float, float]]:
    """Each level label of a fan chart: its text, its level and where it is drawn (px up from the plot's
    bottom), read from the spec: the text layer's y field over the chart's y domain."""
    spec = chart.to_dict()
    (text,) = [layer for layer in spec["layer"] if layer["mark"]["type"] == "text"]
    low, high = spec["layer"][0]["encoding"]["y"]["scale"]["domain"]
    rows = spec["datasets"][text["data"]["name"]]
    field = text["encoding"]["y"]["field"]
    return [(r["text"], r["value"], (r[field] - low) / (high - low) * HEIGHT) for r in rows]


@pytest.mark.parametrize(
    ("profile", "key", "path"),
    [("ml_compute", CPU_USED, {CPU_IDLE: flat(1, 3, 8)}),  # 90, 95, 98 %: 12 and 7 px apart on 0–100 %
     ("database", CPU_USED, {CPU_IDLE: flat(20, 40, 60)}),
     ("web_api", LOAD_AVERAGE, {LOAD_AVERAGE: flat(1, 2, 30)})],
)  # fmt: skip
def test_fan_chart_level_labels_never_overlap_and_stay_in_the_plot(profile: str, key: str, path: Any) -> None:
    """Issue 31, item 17: labels of levels near 100 % were drawn on top of each other."""
    forecasts = views.Forecasts.from_payload(payload(prediction("ppsrv001", profile, 0.5, path=path)))
    fan = views.fan(forecasts, "ppsrv001", key, None)
    assert fan is not None
    labels = level_labels(charts.fan_chart(fan, height=HEIGHT))
    assert [t for t, _, _ in labels] == fan.levels["text"].tolist()
    drawn = sorted(px for _, value, px in labels if px <= HEIGHT)  # a level above the axis is clipped with its rule
    assert drawn, "no level on the axis"
    assert all(b - a >= charts.LEVEL_FONT for a, b in itertools.pairwise(drawn))
    assert drawn[-1] + charts.LEVEL_FONT <= HEIGHT  # the top label is not cut off by the plot's edge
    domain = charts.fan_chart(fan, height=HEIGHT).to_dict()["layer"][0]["encoding"]["y"]["scale"]["domain"]
    for _, value, px in labels:  # each label stays by its own rule: at most two labels' height away
        if px <= HEIGHT:
            assert abs(px - (value - domain[0]) / (domain[1] - domain[0]) * HEIGHT) <= 2 * charts.LEVEL_GAP
    assert fan.levels["value"].tolist() == list(RISK_METRICS_BY_KEY[key].levels(profile))

"""Risk scoring pinned on hand-made forecasts: what operators must see, and properties that must hold."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tftmon import contract as c
from tftmon.contract import FORECAST_COLUMNS
from tftmon.risk import (
    ALERT_THRESHOLD_KEY,
    CPU_USED,
    LEGACY_ALERT_THRESHOLD_KEY,
    SEVERITY_BANDS,
    AlertCalibration,
    Severity,
    _ascending,
    colour_of,
    exceedance,
    metric_risk,
    score,
    severity_of,
    threshold_table,
)

IOWAIT = "cpu_iowait_pct"
MEMORY = "mem_used_pct"
ORIGIN = pd.Timestamp("2026-01-05 12:00", tz="UTC")
HEALTHY = {IOWAIT: 2.0, c.CPU_IDLE: 70.0, "mem_used_pct": 40.0, "swap_used_pct": 0.0, "disk_usage_pct": 50.0,
           "load_average": 2.0, "back_close_wait": 5.0, "front_close_wait": 5.0}  # fmt: skip


def forecast(
    server: str = "ppweb001", overrides: dict[str, dict[str, np.ndarray | float]] | None = None
) -> pd.DataFrame:
    """A flat healthy 8 h forecast for one server; overrides[metric][quantile] replaces a path."""
    steps = np.arange(1, c.PREDICTION_STEPS + 1)
    parts = []
    for metric in c.METRICS:
        base = HEALTHY.get(metric, 10.0)
        cols = {q: np.full(steps.size, base, dtype=float) for q in c.QUANTILE_NAMES}
        for q, path in (overrides or {}).get(metric, {}).items():
            cols[q] = np.broadcast_to(np.asarray(path, dtype=float), steps.shape).copy()
        parts.append(
            pd.DataFrame(
                {
                    c.SERVER_NAME: server,
                    c.PROFILE: c.profile_of(server),
                    "origin": ORIGIN,
                    "step": steps,
                    c.TIMESTAMP: ORIGIN + steps * c.MODEL_STEP,
                    "metric": metric,
                    **cols,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[list(FORECAST_COLUMNS)]


def jump(value: float, at_step: int, base: float = HEALTHY[IOWAIT]) -> np.ndarray:
    """A path at `base` that jumps to `value` from step `at_step` on."""
    steps = np.arange(1, c.PREDICTION_STEPS + 1)
    return np.where(steps >= at_step, value, base)


def iowait(server: str, quantiles: dict[str, np.ndarray | float]) -> pd.Series:
    return score(forecast(server, {IOWAIT: quantiles})).iloc[0]


def test_severity_scale_is_defined_once_with_plain_labels_and_colours() -> None:
    assert [b.lower for b in SEVERITY_BANDS] == [0.0, 0.3, 0.7]
    assert severity_of(0.0) is Severity.HEALTHY
    assert severity_of(0.2999) is Severity.HEALTHY
    assert severity_of(0.3) is Severity.WARNING
    assert severity_of(0.6999) is Severity.WARNING
    assert severity_of(0.7) is Severity.CRITICAL
    assert list(severity_of(np.array([0.1, 0.5, 0.9]))) == ["healthy", "warning", "critical"]
    assert len({colour_of(s) for s in Severity}) == 3


def test_flat_healthy_forecast_is_healthy_with_no_driver() -> None:
    row = score(forecast()).iloc[0]
    assert row["risk"] == 0.0
    assert row["severity"] == "healthy"
    assert pd.isna(row["metric"])
    assert "No metric" in row["reason"]


def test_drivers_list_each_server_origins_notable_metrics_worst_first() -> None:
    hot = {IOWAIT: {q: jump(40, 6) for q in c.QUANTILE_NAMES}, "mem_used_pct": {q: jump(99.9, 60, 40) for q in
           c.QUANTILE_NAMES}, "disk_usage_pct": {q: jump(99.9, 90, 50) for q in c.QUANTILE_NAMES}}  # fmt: skip
    later = forecast("ppweb001", hot).assign(origin=ORIGIN + pd.Timedelta(hours=1))
    both = pd.concat([forecast("ppweb002"), later, forecast("ppweb001")], ignore_index=True)
    rows = score(both, drivers=2).set_index([c.SERVER_NAME, "origin"])

    busy = rows.loc[("ppweb001", ORIGIN + pd.Timedelta(hours=1))]
    texts = busy["drivers"].split("; ")
    assert len(texts) == 2 and texts[0] == busy["reason"]
    assert texts[0].startswith("I/O wait") and texts[1].startswith("Memory")
    assert rows.loc[("ppweb001", ORIGIN), "drivers"] == ""
    assert rows.loc[("ppweb002", ORIGIN), "drivers"] == ""
    assert len(score(later)["drivers"].iloc[0].split("; ")) == 3


def test_likely_iowait_crossing_within_30_min_is_critical_and_explained() -> None:
    row = iowait("ppweb001", {"p10": jump(31, 6), "p50": jump(34, 6), "p90": jump(40, 6)})
    assert row["severity"] == "critical"
    assert row["metric"] == IOWAIT
    assert row["quantile"] == "p10"  # the lowest quantile reaching it: even the p10 does
    assert row["probability"] == pytest.approx(1.0)
    assert row["minutes_ahead"] == 30
    assert row["reason"] == (
        "I/O wait ≥ 30 % (critical for web_api) in 30 min: very likely (100 %), p50 34 %, p10 reaches it"
    )


def test_a_reason_says_the_word_the_percent_when_and_which_quantile_each_value_is() -> None:
    # A database's I/O wait: critical at 50 %; from 40 min ahead only the p90 reaches it (p50 20, p90 100).
    row = iowait("ppdb001", {"p10": 5.0, "p50": 20.0, "p90": jump(100, 8)})
    assert row["level"] == "critical" and row["minutes_ahead"] == 40
    assert row["probability"] == pytest.approx(0.1 + 0.4 * 50 / 80)  # above p90, and the share up to it
    assert row["reason"] == (
        "I/O wait ≥ 50 % (critical for database) in 40 min: about as likely as not (35 %), p50 20 %, p90 reaches it"
    )
    assert "; " not in row["reason"]  # score joins a server's reasons with "; "


def test_probability_is_read_between_quantiles() -> None:
    row = iowait("ppweb001", {"p10": jump(25, 8), "p50": jump(34, 8), "p90": jump(40, 8)})
    per = metric_risk(forecast("ppweb001", {IOWAIT: {"p10": jump(25, 8), "p50": jump(34, 8), "p90": jump(40, 8)}}))
    io = per[per["risk_metric"] == IOWAIT].iloc[0]
    # Critical is 30 %: a linear CDF between p10 = 25 and p50 = 34 puts 0.1 + 0.4 × 5/9 below it.
    assert io["probability"] == pytest.approx(1 - (0.1 + 0.4 * 5 / 9))
    assert io["level"] == "critical"
    assert row["severity"] == "warning"


def test_more_quantiles_sharpen_the_probability() -> None:
    three = exceedance(np.array([20.0, 25.0, 29.0]), np.array([0.1, 0.5, 0.9]), np.array(30.0))
    five = exceedance(np.array([18.0, 20.0, 25.0, 29.0, 36.0]), np.array([0.02, 0.1, 0.5, 0.9, 0.98]), np.array(30.0))
    assert three == 0.0  # above the last quantile nothing is assumed
    assert five == pytest.approx(1 - (0.9 + 0.08 / 7))
    assert exceedance(np.array([np.nan, np.nan, np.nan]), np.array([0.1, 0.5, 0.9]), np.array(30.0)) == 0.0


def test_calibration_moves_where_critical_starts_not_the_bands() -> None:
    path = {"p10": jump(25, 8), "p50": jump(34, 8), "p90": jump(40, 8)}
    plain = score(forecast("ppweb001", {IOWAIT: path})).iloc[0]
    calibrated = score(forecast("ppweb001", {IOWAIT: path}), calibration=AlertCalibration(0.4)).iloc[0]
    assert plain["raw"] == calibrated["raw"]
    assert plain["severity"] == "warning"
    assert calibrated["severity"] == "critical"
    assert AlertCalibration(0.4).risk(np.array([0.0, 0.4, 1.0])) == pytest.approx([0.0, 0.7, 1.0])
    assert AlertCalibration.from_info({ALERT_THRESHOLD_KEY: 0.4}) == AlertCalibration(0.4)
    assert AlertCalibration.from_info({}) == AlertCalibration()
    with pytest.raises(ValueError, match="alert threshold"):
        AlertCalibration(0.0)


def test_a_threshold_fitted_on_the_old_score_is_not_applied_to_the_new_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tftmon.risk"):
        assert AlertCalibration.from_info({LEGACY_ALERT_THRESHOLD_KEY: 0.073}) == AlertCalibration()
    assert "tftmon < 0.18" in caplog.text and "trained again" in caplog.text


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.7])
def test_a_server_parked_above_an_elevated_line_is_a_warning_however_low_the_threshold(threshold: float) -> None:
    # A database's memory at 87 %, just above its elevated line (85 %), far from critical (97 %).
    parked = forecast("ppdb006", {MEMORY: {q: 87.0 for q in c.QUANTILE_NAMES}})
    row = score(parked, calibration=AlertCalibration(threshold)).iloc[0]
    assert row["severity"] == "warning"
    assert row["level"] == "elevated"
    assert row["risk"] == pytest.approx(0.9 * 0.4)  # memory's weight × the elevated level's score
    assert row["raw"] == 0.0  # no critical crossing: nothing to alert on


def test_the_alert_score_is_the_likeliest_critical_crossing_of_any_metric() -> None:
    # I/O wait surely elevated drives the risk; memory may reach its critical level (95 %) at 30 min.
    both = forecast(
        "ppweb001",
        {IOWAIT: {q: 15.0 for q in c.QUANTILE_NAMES}, MEMORY: {"p10": jump(80, 6, 40), "p50": jump(90, 6, 40),
                                                               "p90": jump(100, 6, 40)}},
    )  # fmt: skip
    per = metric_risk(both).set_index("risk_metric")
    row = score(both).iloc[0]
    assert row["metric"] == IOWAIT and row["level"] == "elevated" and row["risk"] == pytest.approx(0.4)
    assert row["raw"] == per.loc[MEMORY, "raw"] > 0
    assert per.loc[IOWAIT, "raw"] == 0.0
    alerting = score(both, calibration=AlertCalibration(per.loc[MEMORY, "raw"])).iloc[0]
    assert alerting["severity"] == "critical" and alerting["metric"] == MEMORY


def test_same_crossing_later_scores_lower() -> None:
    soon = iowait("ppweb001", {"p50": jump(34, 6), "p90": jump(40, 6)})
    hour = iowait("ppweb001", {"p50": jump(34, 12), "p90": jump(40, 12)})
    late = iowait("ppweb001", {"p50": jump(34, 96), "p90": jump(40, 96)})
    assert soon["risk"] > hour["risk"] > late["risk"] > 0
    assert late["minutes_ahead"] == 480
    assert late["severity"] == "warning"


def test_p90_only_crossing_scores_below_p50_and_p10() -> None:
    p90 = iowait("ppweb001", {"p90": jump(34, 3)})
    p50 = iowait("ppweb001", {"p50": jump(34, 3), "p90": jump(34, 3)})
    p10 = iowait("ppweb001", {"p10": jump(34, 3), "p50": jump(34, 3), "p90": jump(34, 3)})
    assert p90["risk"] < p50["risk"] < p10["risk"]
    assert p90["quantile"] == "p90"
    assert p90["severity"] == "healthy"
    assert p10["severity"] == "critical"


def test_database_tolerates_iowait_a_web_server_is_flagged_for() -> None:
    path = {"p10": 30.0, "p50": 32.0, "p90": 34.0}
    web = iowait("ppweb001", path)
    db = iowait("ppdb001", path)
    assert web["severity"] == "critical"
    assert db["severity"] != "critical"
    assert db["risk"] < web["risk"]


def test_compute_node_is_flagged_for_less_iowait() -> None:
    path = {"p10": 18.0, "p50": 20.0, "p90": 22.0}
    assert iowait("ppml0001", path)["risk"] > iowait("ppweb001", path)["risk"]


def test_cpu_is_judged_as_used_from_idle() -> None:
    # idle 3 % = 97 % used: critical for a web server; the idle p90 is the used p10.
    frame = forecast("ppweb001", {c.CPU_IDLE: {"p10": 1.0, "p50": 3.0, "p90": 4.0}})
    row = score(frame).iloc[0]
    assert row["metric"] == CPU_USED
    assert row["quantile"] == "p10"  # used p10 = 100 - idle p90 = 96: at or above 95
    assert row["value"] == pytest.approx(97.0)
    assert row["severity"] == "critical"
    assert row["reason"].startswith("CPU used ≥ 95 % (critical for web_api) in 5 min: very likely (100 %), p50 97 %")
    # A high idle (an idle machine) is not a risk.
    assert score(forecast("ppweb001", {c.CPU_IDLE: {q: 99.0 for q in c.QUANTILE_NAMES}})).iloc[0]["risk"] == 0


def test_several_servers_and_origins_score_independently() -> None:
    bad = forecast("ppweb002", {IOWAIT: {"p10": 35.0, "p50": 40.0, "p90": 45.0}})
    later = forecast("ppweb001").assign(origin=ORIGIN + pd.Timedelta(hours=1))
    out = score(pd.concat([forecast("ppweb001"), bad, later]))
    assert len(out) == 3
    by = out.set_index([c.SERVER_NAME, "origin"])["severity"]
    assert by[("ppweb002", ORIGIN)] == "critical"
    assert by[("ppweb001", ORIGIN)] == "healthy"


def test_unknown_profile_falls_back_to_generic_thresholds() -> None:
    frame = forecast("mystery01", {IOWAIT: {"p10": 31.0, "p50": 32.0, "p90": 35.0}}).assign(profile="not_a_profile")
    assert score(frame).iloc[0]["severity"] == "critical"


def test_threshold_table_covers_every_profile() -> None:
    table = threshold_table()
    assert set(table[c.PROFILE]) == set(c.PROFILE_NAMES)
    assert (table["elevated"] < table["high"]).all() and (table["high"] < table["critical"]).all()
    io = table[table["risk_metric"] == IOWAIT].set_index(c.PROFILE)
    assert tuple(io.loc["web_api", ["elevated", "high", "critical"]]) == (10, 20, 30)


paths = st.lists(st.floats(0, 100, allow_nan=False), min_size=c.PREDICTION_STEPS, max_size=c.PREDICTION_STEPS)


@settings(max_examples=25, deadline=None)
@given(
    base=paths,
    bump=st.lists(st.floats(0, 50, allow_nan=False), min_size=c.PREDICTION_STEPS, max_size=c.PREDICTION_STEPS),
    metric=st.sampled_from([IOWAIT, "mem_used_pct", "swap_used_pct", "disk_usage_pct", "back_close_wait"]),
    quantile=st.sampled_from(c.QUANTILE_NAMES),
    server=st.sampled_from(["ppweb001", "ppdb001", "ppml0001"]),
)
def test_raising_a_forecast_never_lowers_risk(base, bump, metric, quantile, server) -> None:
    before = forecast(server, {metric: {quantile: np.array(base)}})
    after = forecast(server, {metric: {quantile: np.array(base) + np.array(bump)}})
    assert score(after).iloc[0]["risk"] >= score(before).iloc[0]["risk"]


@settings(max_examples=15, deadline=None)
@given(base=paths, drop=st.floats(0, 50))
def test_lowering_idle_never_lowers_risk(base, drop) -> None:
    before = forecast("ppweb001", {c.CPU_IDLE: {"p50": np.array(base)}})
    after = forecast("ppweb001", {c.CPU_IDLE: {"p50": np.array(base) - drop}})
    assert score(after).iloc[0]["risk"] >= score(before).iloc[0]["risk"]


def test_risk_stays_in_unit_interval_per_metric() -> None:
    frame = forecast("ppweb001", {m: {q: 1e6 for q in c.QUANTILE_NAMES} for m in c.METRICS if m != c.CPU_IDLE})
    per = metric_risk(frame)
    assert per["risk"].between(0, 1).all()
    assert score(frame).iloc[0]["risk"] == pytest.approx(1.0)


def test_scores_a_900_server_fleet_one_row_per_server() -> None:
    """A whole fleet in one call (its speed is measured by benchmarks/bench_service.py, not asserted here)."""
    one = forecast("ppweb001", {IOWAIT: {"p50": jump(34, 20)}})
    names = np.array([c.PROFILES[i % len(c.PROFILES)].hostname(i) for i in range(900)], dtype=object)
    fleet = pd.concat([one] * 900, ignore_index=True)
    fleet[c.SERVER_NAME] = np.repeat(names, len(one))
    fleet[c.PROFILE] = np.repeat([c.profile_of(n) for n in names], len(one))
    out = score(fleet)
    assert sorted(out[c.SERVER_NAME]) == sorted(names)
    web = out[out[c.PROFILE] == "web_api"]
    assert (web["metric"] == IOWAIT).all() and (web["minutes_ahead"] > 0).all()


def _plain_exceedance(values: np.ndarray, levels: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """exceedance as one expression per quantile interval, a fresh array per operation: the reference."""
    q = np.asarray(levels, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        below = np.where(threshold >= values[0], q[0], 0.0) + np.where(threshold > values[-1], 1.0 - q[-1], 0.0)
        for i in range(len(q) - 1):
            width = values[i + 1] - values[i]
            frac = np.where(width > 0, (threshold - values[i]) / width, (threshold >= values[i + 1]).astype(float))
            below = below + (q[i + 1] - q[i]) * np.clip(frac, 0.0, 1.0)
    return np.where(np.isnan(values).any(axis=0), 0.0, 1.0 - below)


def test_in_place_exceedance_is_bit_identical_to_the_plain_expression() -> None:
    rng = np.random.default_rng(3)
    values = np.sort(rng.normal(20, 10, size=(len(c.MODEL_QUANTILES), 40, 3, 96)).round(), axis=0)  # ties: flat steps
    values[:, 0, 0, :5] = np.nan
    values[:, 1, 1] = 25.0  # every quantile equal
    levels = np.array(c.MODEL_QUANTILES)
    per_metric = np.stack([levels, 1.0 - levels[::-1], levels])  # [metric, quantile], as risk metrics have them
    thresholds = rng.choice([10.0, 20.0, 25.0, 30.0], size=(3, 40, 3, 1))  # [level, group, metric, 1]
    args = (values[:, None], per_metric.T[:, None, None, :, None], thresholds)
    assert exceedance(*args).tobytes() == _plain_exceedance(*args).tobytes()
    one = (np.array([20.0, 25.0, 29.0]), np.array([0.1, 0.5, 0.9]), np.array(27.0))
    assert exceedance(*one) == _plain_exceedance(*one)


def test_quantiles_in_order_are_kept_and_others_sorted_as_np_sort_sorts_them() -> None:
    ordered = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [0.0, 0.0, 5.0]])
    assert _ascending(ordered) is ordered  # a model's forecast: nothing to sort
    for row in ([3.0, 1.0, 2.0], [np.nan, 1.0, 2.0], [0.0, -0.0, 1.0], [-0.0, 0.0, 1.0]):
        rows = np.vstack([ordered, row])
        assert _ascending(rows).tobytes() == np.sort(rows, axis=1).tobytes()


def test_row_order_and_rows_outside_the_cube_do_not_change_risk() -> None:
    later = forecast("ppdb001").assign(origin=ORIGIN + c.MODEL_STEP)
    fleet = pd.concat([forecast("ppweb001", {IOWAIT: {"p50": jump(34, 20)}}), forecast("ppdb001"), later])
    fleet = fleet.reset_index(drop=True)
    outside = pd.concat(
        [fleet.head(3).assign(metric="not_a_metric"), fleet.head(3).assign(step=c.PREDICTION_STEPS + 1)]
    )
    shuffled = pd.concat([fleet, outside]).sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(metric_risk(shuffled), metric_risk(fleet), check_exact=True)
    pd.testing.assert_frame_equal(score(shuffled), score(fleet), check_exact=True)

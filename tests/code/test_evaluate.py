"""Evaluation pinned on synthetic series whose answers are known by hand."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import paths_frame
from tftmon import contract as c
from tftmon.config import EvaluationConfig
from tftmon.contract import FORECAST_COLUMNS, ORIGIN
from tftmon.evaluation.actuals import origins
from tftmon.evaluation.backtest import (
    COMPARISON_THRESHOLDS_KEY,
    FITTED_HERE,
    FITTED_WITH_MODEL,
    UNCALIBRATED,
    EvaluationResults,
    evaluate,
    fit_band_scale,
    stored_calibrations,
)
from tftmon.evaluation.baselines import (
    BASELINES,
    LAST_VALUE,
    LINEAR_DRIFT,
    ORACLE,
    SEASONAL_NAIVE,
    baseline_forecast,
    baselines,
)
from tftmon.evaluation.incidents import (
    PairedWarnings,
    episodes,
    fit_threshold,
    incident_scores,
    paired_warnings,
    warning_curve,
    without_sign,
)
from tftmon.evaluation.metrics import (
    aggregate,
    cold_start_gap,
    metrics_table,
    pinball,
    ratio_to_best_baseline,
    seasonal_scale,
)
from tftmon.evaluation.report import plot_fan, plot_mase_by_horizon, save_figure, summary_markdown, write_plots
from tftmon.risk import ALERT_THRESHOLD_KEY

START = pd.Timestamp("2026-01-05", tz="UTC")
DAY = 288
USER = "cpu_user_pct"
IOWAIT = "cpu_iowait_pct"


def actuals(servers: dict[str, dict[str, np.ndarray]], n: int, state: np.ndarray | None = None) -> pd.DataFrame:
    """Contract-shaped 5-min frame: every metric 10 unless a server's dict gives its path."""
    return paths_frame(servers, n, start=START, state="healthy" if state is None else state)


def origin_at(server: str, steps: int) -> pd.DataFrame:
    return pd.DataFrame({c.SERVER_NAME: [server], "origin": [START + steps * c.MODEL_STEP]})


def p50_path(forecast: pd.DataFrame, metric: str) -> np.ndarray:
    return forecast[forecast["metric"] == metric].sort_values("step")["p50"].to_numpy()


# ----------------------------------------------------------------------------------- baselines


def test_baselines_on_a_constant_series_repeat_the_constant() -> None:
    frame = actuals({"ppweb001": {}}, 2 * DAY)
    for method in BASELINES:
        fc = baseline_forecast(frame, origin_at("ppweb001", DAY + 50), method)
        assert list(fc.columns) == list(FORECAST_COLUMNS)
        assert len(fc) == len(c.METRICS) * c.PREDICTION_STEPS
        assert np.allclose(fc["p50"], 10.0)
        assert fc["p10"].isna().all()  # no calibration -> no band


def test_baselines_on_a_linear_ramp() -> None:
    n, slope, at = 2 * DAY, 0.1, DAY + 60
    frame = actuals({"ppweb001": {USER: slope * np.arange(n)}}, n)
    h = np.arange(1, c.PREDICTION_STEPS + 1)
    last = p50_path(baseline_forecast(frame, origin_at("ppweb001", at), LAST_VALUE), USER)
    drift = p50_path(baseline_forecast(frame, origin_at("ppweb001", at), LINEAR_DRIFT), USER)
    seasonal = p50_path(baseline_forecast(frame, origin_at("ppweb001", at), SEASONAL_NAIVE), USER)
    assert np.allclose(last, slope * at)
    assert np.allclose(drift, slope * (at + h))
    assert np.allclose(seasonal, slope * (at + h - DAY))


def test_linear_drift_is_clipped_to_the_contract_range() -> None:
    n = 2 * DAY
    frame = actuals({"ppweb001": {USER: np.minimum(2.0 * np.arange(n) - 300, 100)}}, n)
    drift = p50_path(baseline_forecast(frame, origin_at("ppweb001", 195), LINEAR_DRIFT), USER)
    assert drift.max() == 100.0


def test_seasonal_naive_is_exact_on_a_daily_sine() -> None:
    n = 3 * DAY
    sine = 50 + 20 * np.sin(2 * np.pi * np.arange(n) / DAY)
    frame = actuals({"ppdb001": {IOWAIT: sine}}, n)
    at = DAY + 100
    fc = p50_path(baseline_forecast(frame, origin_at("ppdb001", at), SEASONAL_NAIVE), IOWAIT)
    assert np.allclose(fc, sine[at + 1 : at + 1 + c.PREDICTION_STEPS])


def test_calibrated_baselines_have_an_ordered_band() -> None:
    rng = np.random.default_rng(1)
    n = 4 * DAY
    frame = actuals({"ppweb001": {USER: 40 + rng.normal(0, 3, n)}, "ppweb002": {USER: 40 + rng.normal(0, 3, n)}}, n)
    at = origins(frame, START + timedelta(days=3), "1h")
    out = baselines(frame, at, holdout_start=START + timedelta(days=3))
    for fc in out.values():
        user = fc[fc["metric"] == USER]
        assert user[["p10", "p50", "p90"]].notna().all().all()
        assert (user["p10"] <= user["p50"]).all() and (user["p50"] <= user["p90"]).all()
        assert (user["p90"] - user["p10"]).mean() > 1


def test_origins_need_a_full_future_and_skip_gaps() -> None:
    n = 2 * DAY
    frame = actuals({"ppweb001": {}, "ppweb002": {}}, n)
    gap = (frame[c.SERVER_NAME] == "ppweb002") & (frame[c.TIMESTAMP] == START + timedelta(hours=30))
    frame = frame[~gap]
    out = origins(frame, START + timedelta(days=1), "1h")
    web1 = out[out[c.SERVER_NAME] == "ppweb001"]["origin"]
    # From 24:00 on every hour while 96 future bins exist: the last bin is 47:55, so the last origin is 39:00.
    assert web1.min() == START + timedelta(hours=24)
    assert web1.max() == START + timedelta(hours=39)
    assert len(web1) == 16
    web2 = out[out[c.SERVER_NAME] == "ppweb002"]["origin"]
    assert START + timedelta(hours=24) not in set(web2)  # its future crosses the gap at 30:00
    assert START + timedelta(hours=31) in set(web2)


# ----------------------------------------------------------------------------------- metrics


def test_pinball_by_hand() -> None:
    assert pinball(np.array([10.0]), np.array([8.0]), 0.9)[0] == pytest.approx(1.8)
    assert pinball(np.array([10.0]), np.array([12.0]), 0.9)[0] == pytest.approx(0.2)
    assert pinball(np.array([10.0]), np.array([12.0]), 0.5)[0] == pytest.approx(1.0)


def _ramp_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A ramp (seasonal-naive scale 28.8) and a forecast off by +2.88 with a band [y − 1, y + 5]."""
    n = 3 * DAY
    frame = actuals({"ppweb001": {USER: 0.1 * np.arange(n)}}, n)
    at = origins(frame, START + timedelta(days=2), "1h")
    fc = baseline_forecast(frame, at, LAST_VALUE)
    fc = fc[fc["metric"] == USER].copy()
    truth = 0.1 * ((fc["timestamp"] - START) / c.MODEL_STEP).to_numpy()
    fc["p50"], fc["p10"], fc["p90"] = truth + 2.88, truth - 1, truth + 5
    return frame, fc


def test_mae_mase_pinball_coverage_width_by_hand() -> None:
    frame, fc = _ramp_case()
    scale = seasonal_scale(frame, START + timedelta(days=2))
    assert scale.set_index("metric").loc[USER, "scale"] == pytest.approx(28.8)
    table = metrics_table({"tft": fc}, frame, START + timedelta(days=2))
    assert list(table.columns) == [
        "model",
        "metric",
        "horizon",
        "n",
        "mae",
        "mase",
        "quantile_loss",
        "coverage",
        "width",
    ]
    assert list(table["horizon"]) == list(c.HORIZONS)
    row = table.iloc[0]
    assert row["mae"] == pytest.approx(2.88)
    assert row["mase"] == pytest.approx(0.1)
    assert row["quantile_loss"] == pytest.approx((0.1 * 1 + 0.5 * 2.88 + 0.1 * 5) / 3)
    assert row["coverage"] == 1.0
    assert row["width"] == pytest.approx(6.0)


def test_upto_mode_averages_over_steps_up_to_the_horizon() -> None:
    frame, fc = _ramp_case()
    fc = fc.assign(p50=fc["p50"] + np.where(fc["step"] <= 3, 10.0, 0.0))
    cfg = EvaluationConfig(horizon_mode="upto")
    table = metrics_table({"tft": fc}, frame, START + timedelta(days=2), config=cfg).set_index("horizon")
    assert table.loc["30min", "mae"] == pytest.approx(2.88 + 10 * 3 / 6)
    at = metrics_table({"tft": fc}, frame, START + timedelta(days=2)).set_index("horizon")
    assert at.loc["30min", "mae"] == pytest.approx(2.88)


def test_zero_scale_borrows_from_servers_of_the_same_metric() -> None:
    n = 2 * DAY
    flat = actuals({"ppweb001": {}, "ppweb002": {USER: 0.1 * np.arange(n)}}, n)
    scale = seasonal_scale(flat, START + timedelta(days=2)).set_index(["server_name", "metric"])["scale"]
    assert scale[("ppweb001", USER)] == pytest.approx(28.8)  # flat series -> median of positive scales
    assert np.isnan(scale[("ppweb001", IOWAIT)])  # flat everywhere -> undefined, left out of MASE


def test_a_nearly_flat_series_borrows_its_peers_scale_instead_of_dividing_by_its_own() -> None:
    """Swap that moved once by a hundredth of a point: its own scale would make one later jump dwarf every
    other metric's MASE."""
    n = 2 * DAY
    blip = np.zeros(n)
    blip[n // 2 :] = 0.01
    ramps = {name: {USER: 0.1 * np.arange(n)} for name in ("ppweb002", "ppweb003")}
    frame = actuals({"ppweb001": {USER: blip}, **ramps}, n)
    scale = seasonal_scale(frame, START + timedelta(days=2)).set_index(["server_name", "metric"])["scale"]
    assert scale[("ppweb001", USER)] == pytest.approx(28.8)
    own = seasonal_scale(frame, START + timedelta(days=2), EvaluationConfig(negligible_scale=0.0))
    own = own.set_index(["server_name", "metric"])
    assert own.loc[("ppweb001", USER), "scale"] == pytest.approx(0.01)


def test_ratio_to_best_baseline_and_cold_start_gap() -> None:
    agg = pd.DataFrame(
        {
            "model": ["tft", LAST_VALUE, SEASONAL_NAIVE] * 3,
            "horizon": np.repeat(list(c.HORIZONS), 3),
            "mase": [0.8, 1.0, 2.0, 0.9, 1.5, 1.2, 1.0, 2.0, 1.25],
            "coverage": 0.8,
        }
    )
    ratio = ratio_to_best_baseline(agg, "tft").set_index("horizon")
    assert ratio.loc["30min", "ratio"] == pytest.approx(0.8)
    assert ratio.loc["1h", "best_baseline"] == SEASONAL_NAIVE
    assert ratio.loc["8h", "ratio"] == pytest.approx(0.8)
    table = pd.DataFrame(
        {
            "model": "tft",
            "metric": USER,
            "horizon": np.repeat(list(c.HORIZONS), 2),
            "seen": [True, False] * 3,
            "mase": [1.0, 1.1, 1.0, 1.2, 1.0, 1.0],
            "coverage": 0.8,
        }
    )
    gap = cold_start_gap(table, "tft").set_index("horizon")["gap"]
    assert list(gap.round(6)) == [0.1, 0.2, 0.0]


# ----------------------------------------------------------------------------------- incidents


def _timeline() -> tuple[pd.DataFrame, pd.DataFrame]:
    """ppweb001: incidents 10:00–10:30 and 19:15–19:30; ppweb002: none. Hourly origins 00:00–23:00."""
    n = DAY
    t = START + np.arange(n) * c.MODEL_STEP
    state = np.full(n, "healthy", dtype=object)
    state[(t >= START + timedelta(hours=10)) & (t < START + timedelta(hours=10, minutes=30))] = c.INCIDENT_STATE
    state[(t >= START + timedelta(hours=19, minutes=15)) & (t < START + timedelta(hours=19, minutes=30))] = (
        c.INCIDENT_STATE
    )
    web1 = actuals({"ppweb001": {}}, n, state)
    web2 = actuals({"ppweb002": {}}, n)
    hours = START + pd.to_timedelta(np.arange(24), unit="h")
    raised = {("ppweb001", 1), ("ppweb001", 9), ("ppweb001", 10), ("ppweb001", 19), ("ppweb002", 5)}
    alert_frame = pd.DataFrame(
        [
            {c.SERVER_NAME: s, "origin": h, "alert": (s, i) in raised}
            for s in ("ppweb001", "ppweb002")
            for i, h in enumerate(hours)
        ]
    )
    return pd.concat([web1, web2], ignore_index=True), alert_frame


def test_episodes_are_contiguous_runs_and_a_gap_splits_them() -> None:
    frame, _ = _timeline()
    eps = episodes(frame)
    assert list(eps["start"]) == [START + timedelta(hours=10), START + timedelta(hours=19, minutes=15)]
    assert list(eps["end"]) == [START + timedelta(hours=10, minutes=30), START + timedelta(hours=19, minutes=30)]
    holed = frame[frame[c.TIMESTAMP] != START + timedelta(hours=10, minutes=10)]
    assert len(episodes(holed)) == 3


def test_incident_scores_by_hand() -> None:
    frame, alert_frame = _timeline()
    s = incident_scores(alert_frame, episodes(frame), lead=timedelta(minutes=30))
    assert (s.episodes, s.warned, s.recall) == (2, 1, 0.5)  # 10:00 warned at 09:00; 19:15 only 15 min ahead
    assert s.median_lead_min == pytest.approx((60 + 15) / 2)
    assert (s.alerts, s.alerts_during, s.true_alerts, s.false_alarms) == (5, 1, 2, 2)
    assert s.precision == pytest.approx(0.5)
    assert s.server_days == pytest.approx(2.0)
    assert s.false_alarms_per_server_day == pytest.approx(1.0)
    shorter = incident_scores(alert_frame, episodes(frame), lead=timedelta(minutes=15))
    assert shorter.recall == 1.0


def test_paired_warnings_count_only_the_episodes_the_two_disagree_on() -> None:
    frame, alert_frame = _timeline()
    eps = episodes(frame)
    first = incident_scores(alert_frame, eps)  # warns of 10:00 (at 09:00), misses 19:15
    late = alert_frame.assign(alert=alert_frame["alert"] | (alert_frame["origin"] == START + timedelta(hours=18)))
    second = incident_scores(late.assign(alert=late["alert"] & (late["origin"] != START + timedelta(hours=9))), eps)
    assert (first.warned, second.warned) == (1, 1)  # same recall, different episodes
    paired = paired_warnings(first, second)
    assert (paired.only_first, paired.only_second) == (1, 1)
    assert paired_warnings(first, first) == PairedWarnings(0, 0)
    with pytest.raises(ValueError, match="same episodes"):
        paired_warnings(first, incident_scores(alert_frame, eps.iloc[:1]))
    # Exact two-sided sign test: 5–0 is 2 / 2**5, 10–1 is 2 · 12 / 2**11; an even split is 1.
    assert PairedWarnings(5, 0).p_value == pytest.approx(0.0625)
    assert PairedWarnings(1, 10).p_value == pytest.approx(24 / 2048)
    assert PairedWarnings(3, 3).p_value == PairedWarnings(0, 0).p_value == 1.0


def test_an_episode_whose_last_chance_to_warn_came_after_the_last_origin_is_not_counted() -> None:
    """Origins stop a whole forecast before the data ends: an episode then is not missed, just not asked about."""
    frame, alert_frame = _timeline()
    late = pd.DataFrame(
        {
            c.SERVER_NAME: ["ppweb002"],
            "start": [START + timedelta(hours=23, minutes=40)],
            "end": [START + timedelta(days=1)],
        }
    )
    eps = pd.concat([episodes(frame), late], ignore_index=True)
    raw = alert_frame.assign(raw=alert_frame["alert"].astype(float))
    # Its last chance to warn 30 min ahead is 23:10, after the last origin (23:00): left out, as from the curve.
    s = incident_scores(alert_frame, eps, lead=timedelta(minutes=30))
    assert (s.episodes, s.warned) == (2, 1)
    assert warning_curve(raw, eps, lead=timedelta(minutes=30), thresholds=np.array([0.5]))["recall"].item() == 0.5
    # 45 min ahead its last chance (22:55) precedes the 23:00 origin: asked about, and missed.
    s = incident_scores(alert_frame, eps, lead=timedelta(minutes=45))
    assert (s.episodes, s.warned) == (3, 1)
    assert without_sign(alert_frame, eps, frame, lead=timedelta(minutes=45)) == 3


def test_episodes_whose_ramp_had_not_begun_at_any_early_enough_origin_show_no_sign() -> None:
    frame, alert_frame = _timeline()
    web1, t = frame[c.SERVER_NAME] == "ppweb001", frame[c.TIMESTAMP]

    def ramp(start: timedelta, end: timedelta) -> pd.DataFrame:
        ramped = frame.copy()
        ramped.loc[web1 & (t >= START + start) & (t < START + end), c.STATE] = c.PRECURSOR_STATE
        return ramped

    lead = timedelta(minutes=30)
    assert without_sign(alert_frame, episodes(frame), frame, lead=lead) == 2  # no ramp at all
    # 10:00 ramps from 08:40, seen at the 09:00 origin; 19:15's origins 30 min–8 h ahead end at 18:00
    assert without_sign(alert_frame, episodes(frame), ramp(timedelta(hours=8, minutes=40), timedelta(hours=10)),
                        lead=lead) == 1  # fmt: skip
    too_late = ramp(timedelta(hours=18, minutes=5), timedelta(hours=19, minutes=15))
    assert without_sign(alert_frame, episodes(frame), too_late, lead=lead) == 2
    in_time = ramp(timedelta(hours=18), timedelta(hours=19, minutes=15))
    assert without_sign(alert_frame, episodes(frame), in_time, lead=lead) == 1


# ----------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def backtest() -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Four servers × 4 days of daily sines with an incident; a 'tft' forecast = truth + noise, banded."""
    rng = np.random.default_rng(7)
    n = 4 * DAY
    tt = np.arange(n)
    servers = {}
    for i, name in enumerate(["ppweb001", "ppweb002", "ppdb001", "ppml0001"]):
        sine = 30 + 10 * np.sin(2 * np.pi * (tt + 30 * i) / DAY)
        servers[name] = {USER: sine + rng.normal(0, 1, n), IOWAIT: 5 + 0.2 * sine, c.CPU_IDLE: 100 - sine - 10}
    state = np.full(n, "healthy", dtype=object)
    state[3 * DAY + 100 : 3 * DAY + 106] = c.INCIDENT_STATE
    frame = actuals(servers, n, state)
    holdout = START + timedelta(days=3)
    at = origins(frame, holdout, "2h")
    tft = baseline_forecast(frame, at, SEASONAL_NAIVE)
    noise = rng.normal(0, 0.5, len(tft))
    tft["p50"] = tft["p50"] + noise
    tft["p10"], tft["p90"] = tft["p50"] - 2, tft["p50"] + 2
    return tft, frame, holdout


@pytest.fixture(scope="module")
def results(backtest) -> EvaluationResults:
    tft, frame, holdout = backtest
    return evaluate(tft, frame, holdout, seen_servers=["ppweb001", "ppdb001"])


def test_evaluate_end_to_end_and_summary(results) -> None:
    res = results
    assert set(res.metrics["model"]) == {"tft", *BASELINES}
    assert set(res.ratio["horizon"]) == set(c.HORIZONS)
    assert res.cold_start is not None and len(res.cold_start) == 3
    assert res.incidents is not None
    text = summary_markdown(res)
    for target in ("0.85 × best baseline", "coverage in 75%–85%", "MASE ≤ seen + 15%", "incident recall ≥ 0.8"):
        assert target in text
    assert "PASS" in text or "FAIL" in text
    assert aggregate(res.metrics)["mase"].between(0, 100).all()  # float noise on a periodic series is no scale


def test_plots_write_small_non_empty_pngs(backtest, results, tmp_path) -> None:
    tft, frame, _ = backtest
    res = results
    paths = write_plots(res, tft, frame, tmp_path / "plots", servers=2)
    assert [p.name for p in paths[:2]] == ["mase_by_horizon.png", "recall_vs_false_alarms.png"]
    assert len(paths) == 4
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert 1_000 < len(data) < 500_000
    fan = plot_fan(tft, frame, [("ppweb001", c.CPU_IDLE)])
    assert "CPU used" in fan.axes[0].get_title()
    # A model of none of the preferred metrics (real telemetry, CPU user only) gets fan charts of its own.
    only_user = tft[tft[c.METRIC] == USER]
    assert write_plots(res, only_user, frame, tmp_path / "user", servers=1)[-1].name == "fan_ppdb001.png"
    assert save_figure(plot_mase_by_horizon(res.aggregate), tmp_path / "bars.png").stat().st_size > 0


# ------------------------------------------------------------------------- alert thresholds, side by side


def _raw(scores: dict[tuple[str, str], float]) -> pd.DataFrame:
    return pd.DataFrame(
        [{c.SERVER_NAME: s, ORIGIN: pd.Timestamp(t, tz="UTC"), "raw": r} for (s, t), r in scores.items()]
    )


def test_fit_threshold_is_the_lowest_within_the_false_alarm_budget() -> None:
    eps = pd.DataFrame({c.SERVER_NAME: ["a"], "start": [pd.Timestamp("2026-01-05 12:00", tz="UTC")],
                        "end": [pd.Timestamp("2026-01-05 12:30", tz="UTC")]})  # fmt: skip
    hours = [f"2026-01-05 {h:02d}:00" for h in range(24)]
    # Server a scores 0.9 ahead of its incident (true alarms) and 0.5 once long after; b scores 0.3 and 0.6.
    scores = {("a", t): (0.9 if "06:00" <= t[11:] < "12:00" else 0.1) for t in hours}
    scores[("a", "2026-01-05 22:00")] = 0.5
    scores.update({("b", t): 0.3 for t in hours})
    scores[("b", "2026-01-05 03:00")] = 0.6
    raw = _raw(scores)
    # 48 hourly origins = 2 server-days: a budget of 1 per server-day allows 2 false alarms (0.6 and 0.5).
    assert fit_threshold(raw, eps, budget=1.0, every=timedelta(hours=1)).threshold == pytest.approx(0.3, abs=1e-9)
    assert fit_threshold(raw, eps, budget=0.5, every=timedelta(hours=1)).threshold == pytest.approx(0.5, abs=1e-9)
    assert fit_threshold(raw, eps, budget=0.1, every=timedelta(hours=1)).threshold == pytest.approx(0.6, abs=1e-9)
    assert fit_threshold(raw, eps, budget=100, every=timedelta(hours=1)).threshold == 0.05  # the floor
    curve = warning_curve(raw, eps, lead=timedelta(minutes=30), thresholds=np.array([0.2, 0.55, 0.95]))
    assert curve["recall"].tolist() == [1.0, 1.0, 0.0]
    assert curve["false_alarms_per_server_day"].tolist() == pytest.approx([25 / 2, 1 / 2, 0.0])


def test_warnings_are_compared_side_by_side_with_the_oracle_as_ceiling(results) -> None:
    table = results.warnings.table.set_index("forecaster")
    assert list(table.index) == ["tft", *BASELINES, ORACLE]
    # The baselines' and the oracle's thresholds were fitted before the held-out period; the model's was given.
    assert set(results.warnings.calibrations) == {"tft", *BASELINES, ORACLE}
    assert (table["within_budget"] == (table["false_alarms_per_server_day"] <= 1.0)).all()
    assert (table["episodes"] == table.loc["tft", "episodes"]).all()
    assert results.warnings.winner in ["tft", *BASELINES]
    assert results.warnings.calibrations["tft"].threshold == pytest.approx(0.7)
    assert table["threshold_fitted_on"].to_dict() == {
        "tft": UNCALIBRATED,
        **dict.fromkeys([*BASELINES, ORACLE], FITTED_HERE),
    }
    # The fixture's incidents (one per server) come out of the blue: no history could warn of them.
    assert results.warnings.without_sign == table.loc["tft", "episodes"] == 4
    summary = summary_markdown(results)
    assert "4 of the 4 episodes showed no sign in time" in summary
    assert "## Incident early warning, side by side" in summary
    assert "oracle (ceiling)" in summary
    assert "Paired on the same episodes, `tft` against `" in summary
    assert "`threshold_fitted_on` says where each threshold was fitted" in summary


def test_thresholds_stored_with_the_model_score_every_forecaster(backtest, results) -> None:
    """A model carries its own threshold and the others' fitted at its validation origins: every forecaster
    is then scored at those, none is refitted on the evaluated data; a model carrying only its own leaves
    the others to be fitted on the data."""
    tft, frame, holdout = backtest
    stored = {"last_value": 0.9, "seasonal_naive": 0.8, "linear_drift": 0.6, ORACLE: 0.5}
    info = {ALERT_THRESHOLD_KEY: 0.3, COMPARISON_THRESHOLDS_KEY: stored}
    with_model = evaluate(tft, frame, holdout, calibrations=stored_calibrations(info, "tft"))
    assert "Every threshold was fitted at the same origins" in summary_markdown(with_model)
    table = with_model.warnings.table.set_index("forecaster")
    assert table["threshold"].to_dict() == pytest.approx({"tft": 0.3, **stored})
    assert set(table["threshold_fitted_on"]) == {FITTED_WITH_MODEL}
    own_only = evaluate(tft, frame, holdout, calibrations=stored_calibrations({ALERT_THRESHOLD_KEY: 0.3}, "tft"))
    refitted = own_only.warnings.table.set_index("forecaster")
    assert refitted.loc["tft", "threshold_fitted_on"] == FITTED_WITH_MODEL
    assert (
        refitted["threshold"].drop("tft").to_dict()
        == results.warnings.table.set_index("forecaster")["threshold"].drop("tft").to_dict()
    )


def test_conformal_band_scale_restores_nominal_coverage() -> None:
    """A band half as wide as the noise covers far less than 80 %; the fitted factor brings it to ~80 %."""
    rng = np.random.default_rng(3)
    n = 3 * DAY
    truth = 50 + rng.normal(0, 2.0, n)
    frame = actuals({"ppweb001": {USER: truth}}, n)
    at = origins(frame, START, "1h")
    forecast = baseline_forecast(frame, at, LAST_VALUE)
    forecast["p50"] = 50.0
    forecast["p10"], forecast["p90"] = 49.0, 51.0
    scale = fit_band_scale(forecast, frame)
    assert set(scale) == set(c.METRICS) and all(len(v) == c.PREDICTION_STEPS for v in scale.values())
    factor = np.array(scale[USER])
    assert np.median(factor) == pytest.approx(2.56, rel=0.15)  # 0.8 quantile of |N(0, 2)| / 1
    rows = forecast[forecast["metric"] == USER]
    y = truth[(((rows[c.TIMESTAMP] - START) / c.MODEL_STEP).astype(int)).to_numpy()]
    covered = np.abs(y - 50.0) <= factor[rows["step"].to_numpy() - 1]
    assert covered.mean() == pytest.approx(0.8, abs=0.03)

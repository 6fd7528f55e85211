"""Backtests: forecast origins in a held-out period, a forecaster run from each, and the whole evaluation.

Every number is compared with what a simple rule would have achieved on the same data (see
tftmon.evaluation.baselines) at the same origins; pure functions over DataFrames, no MLflow here (jobs log
what these return).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tftmon.alerting import PAGE_RULE_KEY
from tftmon.config import EvaluationConfig
from tftmon.contract import (
    FORECAST_COLUMNS,
    METRIC,
    METRICS,
    MODEL_STEP,
    ORIGIN,
    PREDICTION_STEPS,
    QUANTILE_NAMES,
    QUANTILES,
    SERVER_NAME,
    STATE,
    STEP,
    TIMESTAMP,
    quantile_name,
    to_utc,
)
from tftmon.evaluation.actuals import Actuals, origins
from tftmon.evaluation.baselines import BASELINES, ORACLE, baselines, residual_bands
from tftmon.evaluation.incidents import (
    IncidentScores,
    PageScores,
    alerts,
    episodes,
    fit_threshold,
    incident_scores,
    page_scores,
    warning_curve,
    without_sign,
)
from tftmon.evaluation.metrics import (
    aggregate,
    cold_start_gap,
    metrics_table,
    ratio_to_best_baseline,
    ratio_to_peer,
)
from tftmon.evaluation.peer import PEER, PeerModel, peer_forecast
from tftmon.risk import ALERT_THRESHOLD_KEY, AlertCalibration

if TYPE_CHECKING:
    from tftmon.model.network import ForecastModel


log = logging.getLogger(__name__)

#: Key in a model's training_info.json: the baselines' and the oracle's alert thresholds, fitted on the same
#: validation origins as the model's own, so any later evaluation compares every forecaster fitted alike.
COMPARISON_THRESHOLDS_KEY = "comparison_critical_alert_thresholds"


def holdout_start(frame: pd.DataFrame, hours: float) -> pd.Timestamp:
    """Where the held-out period starts: `hours` before the data's last timestamp."""
    return pd.Timestamp(frame[TIMESTAMP].max()) - pd.Timedelta(hours=hours)


@dataclass(frozen=True)
class Forecaster:
    """Something that forecasts from recent history (the model's encoder window and one bin more)."""

    predict: Callable[[pd.DataFrame], pd.DataFrame]
    history_steps: int

    @property
    def history(self) -> timedelta:
        return self.history_steps * MODEL_STEP


def model_forecaster(model: ForecastModel) -> Forecaster:
    """The model as a backtest forecaster: the history it reads (and one bin more) in, its forecast out."""
    from tftmon.model.network import forecast

    return Forecaster(lambda history: forecast(model, history), model.config.history_steps + 1)


def backtest(forecaster: Forecaster, frame: pd.DataFrame, at: pd.DataFrame) -> pd.DataFrame:
    """Run a forecaster from every origin in `at` (server_name, origin), seeing only data up to it.

    One call per distinct origin covers all its servers; each call gets the forecaster's history before
    the origin, never anything after it.
    """
    parts = []
    ts = frame[TIMESTAMP]
    origin: Any  # a UTC timestamp; pandas-stubs types a groupby key as any scalar
    for origin, servers in at.groupby(ORIGIN)[SERVER_NAME]:
        seen = frame[frame[SERVER_NAME].isin(servers) & (ts <= origin) & (ts > origin - forecaster.history)]
        part = forecaster.predict(seen)
        part[ORIGIN] = origin
        parts.append(part)
    if not parts:
        raise ValueError("no forecast origins: the held-out period is shorter than one full forecast")
    return pd.concat(parts, ignore_index=True)


def step_alerts(
    forecasts: Callable[[pd.DataFrame], Mapping[str, pd.DataFrame]],
    at: pd.DataFrame,
    calibrations: Mapping[str, AlertCalibration],
    chunk: timedelta = timedelta(hours=1),
) -> dict[str, pd.DataFrame]:
    """Each forecaster's alerts (`alerts`: server_name, origin, raw, risk, severity, alert) at the origins
    of `at`, `forecasts` called on one `chunk` of origins at a time and only its scores kept: forecasts at
    every model step over days (the service's cadence) would not fit in memory at once."""
    parts: dict[str, list[pd.DataFrame]] = {}
    bins = (at[ORIGIN] - at[ORIGIN].min()) // pd.Timedelta(chunk)
    for _, piece in at.groupby(bins, sort=True):
        for name, forecast in forecasts(piece).items():
            parts.setdefault(name, []).append(alerts(forecast, calibrations.get(name, AlertCalibration())))
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}


def run(forecaster: Forecaster, frame: pd.DataFrame, holdout: pd.Timestamp, config: EvaluationConfig) -> pd.DataFrame:
    """The forecaster from every `origin_every` origin of the held-out period."""
    return backtest(forecaster, frame, origins(frame, holdout, config.origin_every))


def fit_origins(actuals: pd.DataFrame, holdout_start: pd.Timestamp, config: EvaluationConfig) -> pd.DataFrame:
    """Validation origins for fitting alert thresholds: every `alert_fit_every` over the `alert_fit_hours`
    whose whole forecast (and so whose incident labels) ends before the held-out period."""
    horizon = PREDICTION_STEPS * MODEL_STEP
    end = pd.Timestamp(holdout_start) - horizon
    before = actuals[actuals[TIMESTAMP] < pd.Timestamp(holdout_start)]
    at = origins(before, end - pd.Timedelta(hours=config.alert_fit_hours), config.alert_fit_every)
    return at[at[ORIGIN] <= end].reset_index(drop=True)


def fit_band_scale(predictions: pd.DataFrame, actuals: pd.DataFrame) -> dict[str, list[float]]:
    """Per metric and step, the factor that stretches the p10–p90 band about p50 to cover 80 % of the
    actuals at these (validation) origins: split-conformal calibration of the model's bands.

    Score per row = |actual − p50| over the half-band on the actual's side; the factor is that score's
    0.8 quantile (clipped to 0.2–10 so a degenerate band cannot explode).
    """
    lo, mid, hi = QUANTILE_NAMES
    act = Actuals(actuals)
    metric = act.metric_codes(predictions[METRIC])
    values = act.get(act.code_of(predictions[SERVER_NAME]), act.index_of(predictions[TIMESTAMP]))
    y = values[np.arange(len(predictions)), np.maximum(metric, 0)]
    p10, p50, p90 = (predictions[name].to_numpy(dtype=float) for name in (lo, mid, hi))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(y >= p50, (y - p50) / (p90 - p50), (p50 - y) / (p50 - p10))
    score = np.where(np.abs(y - p50) == 0, 0.0, score)
    scores = pd.DataFrame({METRIC: predictions[METRIC].to_numpy(), STEP: predictions[STEP].to_numpy(), "s": score})
    scores = scores[(metric >= 0) & ~np.isnan(y)]
    factor = scores.groupby([METRIC, STEP])["s"].quantile(QUANTILES[-1] - QUANTILES[0]).clip(0.2, 10.0)
    wide = factor.unstack(STEP).reindex(columns=range(1, PREDICTION_STEPS + 1)).ffill(axis=1).fillna(1.0)
    return {str(m): [round(float(v), 4) for v in row] for m, row in wide.iterrows()}


def calibrate(
    model: ForecastModel,
    frame: pd.DataFrame,
    holdout: pd.Timestamp,
    config: EvaluationConfig,
    peer: PeerModel | None = None,
) -> AlertCalibration | None:
    """Fit the model's bands and alert threshold on its forecasts at `fit_origins` (before `holdout`) and
    store both in its training_info; returns the alert calibration (None without incident labels).

    The bands first (split-conformal, `fit_band_scale`), then the threshold on the widened forecasts,
    which are exactly what the model serves from then on. The baselines' and the oracle's thresholds are
    fitted at the same origins and stored too, so an evaluation on any fleet compares all of them fitted
    alike (`stored_calibrations`). A model calibrated before is fitted anew from its raw forecasts.
    """
    from tftmon.model.network import BAND_SCALE_KEY, band_scale, widen_bands

    # Fitted on raw forecasts, anew.
    for key in (BAND_SCALE_KEY, ALERT_THRESHOLD_KEY, COMPARISON_THRESHOLDS_KEY, PAGE_RULE_KEY):
        model.training_info.pop(key, None)
    forecaster = model_forecaster(model)
    at = fit_origins(frame, holdout, config)
    at = at[at[ORIGIN] >= frame[TIMESTAMP].min() + forecaster.history]  # a full encoder window behind each
    if len(at) == 0:
        log.warning(
            "too little data to calibrate bands and alert threshold (need %g h + one forecast before the "
            "held-out period); the model keeps its raw bands and the default threshold",
            config.alert_fit_hours,
        )
        return None
    predictions = backtest(forecaster, frame, at)
    model.training_info[BAND_SCALE_KEY] = fit_band_scale(predictions, frame)
    if STATE not in frame:
        return None
    quantiles = model.config.quantiles
    names = [quantile_name(q) for q in quantiles]
    targets = list(model.config.targets)
    scale = band_scale(model.training_info, targets, PREDICTION_STEPS)
    assert scale is not None
    rows = scale[pd.Categorical(predictions[METRIC], categories=targets).codes, predictions[STEP].to_numpy() - 1]
    predictions[names] = widen_bands(predictions[names].to_numpy(dtype=float), quantiles, rows)
    alert = fit_threshold(alerts(predictions), episodes(frame), budget=config.alert_budget, every=config.origin_every)
    model.training_info[ALERT_THRESHOLD_KEY] = alert.threshold
    model.training_info[PAGE_RULE_KEY] = asdict(config.page_rule)
    others = fit_thresholds(only_metrics(frame, targets), at, holdout, config, peer)
    model.training_info[COMPARISON_THRESHOLDS_KEY] = {name: cal.threshold for name, cal in others.items()}
    return alert


def only_metrics(actuals: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """`actuals` without the contract metrics outside `metrics`: baselines then forecast (and alert on) what
    the model forecasts, no more, so they compare like with like."""
    keep = set(metrics)
    return actuals.drop(columns=[m for m in METRICS if m in actuals.columns and m not in keep])


def fit_thresholds(
    actuals: pd.DataFrame,
    at: pd.DataFrame,
    holdout_start: pd.Timestamp,
    config: EvaluationConfig,
    peer: PeerModel | None = None,
) -> dict[str, AlertCalibration]:
    """Each baseline's, the oracle's and the peer's (when given) alert threshold at the validation origins
    `at` (before `holdout_start`), for the false-alarm budget: the rule the model's own threshold is fitted by."""
    fit = baselines(actuals, at, holdout_start=holdout_start, config=config, oracle=True)
    if peer is not None:
        fit[PEER] = peer_forecast(peer, actuals, at)
    eps = episodes(actuals)
    return {
        name: fit_threshold(alerts(forecast), eps, budget=config.alert_budget, every=config.origin_every)
        for name, forecast in fit.items()
    }


def stored_calibrations(info: dict[str, Any], model: str) -> dict[str, AlertCalibration]:
    """The thresholds a model's training_info carries: its own (the one it serves with) under `model`, and
    the baselines' and the oracle's fitted at the same origins, where it has them."""
    others = info.get(COMPARISON_THRESHOLDS_KEY) or {}
    return {model: AlertCalibration.from_info(info), **{k: AlertCalibration(float(v)) for k, v in others.items()}}


#: Where a forecaster's threshold in the side-by-side table was fitted.
FITTED_WITH_MODEL = "model's validation origins"
FITTED_HERE = "this data, before its held-out period"
UNCALIBRATED = "none: the uncalibrated critical band"


def ranked(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of a warning table best first: within the false-alarm budget, then most recall, then fewest
    false alarms."""
    return table.sort_values(["within_budget", "recall", "false_alarms_per_server_day"], ascending=[False, False, True])


@dataclass
class WarningComparison:
    """Incident early warning of every forecaster through the same risk scale and alert rule."""

    #: One row per forecaster: threshold, threshold_fitted_on, episodes, warned, recall, median_lead_min,
    #: precision, false_alarms_per_server_day, within_budget.
    table: pd.DataFrame
    #: forecaster, threshold, recall, false_alarms_per_server_day as the threshold sweeps.
    curves: pd.DataFrame
    scores: dict[str, IncidentScores]
    calibrations: dict[str, AlertCalibration]
    #: The forecaster (oracle excluded) with the highest recall within the false-alarm budget.
    winner: str | None
    #: Eligible episodes whose ramp had not begun at any origin early enough to warn (`without_sign`): none
    #: of the forecasters reading history can warn of those.
    without_sign: int = 0


def compare_warnings(
    forecasts: dict[str, pd.DataFrame],
    actuals: pd.DataFrame,
    holdout_start: pd.Timestamp,
    config: EvaluationConfig,
    calibrations: Mapping[str, AlertCalibration] | None = None,
) -> WarningComparison:
    """Score each forecaster's critical alerts on the held-out origins of its forecast.

    `calibrations` are the thresholds fitted with the model on its validation origins (its own, and the
    baselines' and the oracle's at the same origins: `stored_calibrations`). A forecaster without one gets
    its threshold fitted here by `fit_thresholds` on `fit_origins` of this data before the held-out period,
    for the same false-alarm budget, never on the held-out data; anything else without one alerts at the
    uncalibrated critical band. The table says which was used.
    """
    fitted = dict(calibrations or {})
    origin = dict.fromkeys(fitted, FITTED_WITH_MODEL)
    eps = episodes(actuals)
    missing = [name for name in forecasts if name not in fitted and name in (*BASELINES, ORACLE)]
    at = fit_origins(actuals, holdout_start, config) if missing else pd.DataFrame()
    if missing and len(at) == 0:
        log.warning(
            "no validation origins to fit the thresholds of %s (need %g h + one forecast before the held-out "
            "period): they alert at the uncalibrated critical band",
            ", ".join(missing), config.alert_fit_hours,
        )  # fmt: skip
    elif missing:
        here = fit_thresholds(actuals, at, holdout_start, config)
        fitted.update({name: here[name] for name in missing})
        origin.update(dict.fromkeys(missing, FITTED_HERE))
    rows, curves, scores = [], [], {}
    for name, forecast in forecasts.items():
        calibration = fitted.get(name, AlertCalibration())
        flagged = alerts(forecast, calibration)
        inc = incident_scores(flagged, eps, lead=config.warning_lead)
        scores[name] = inc
        curves.append(warning_curve(flagged, eps, lead=config.warning_lead).assign(forecaster=name))
        rows.append(
            {
                "forecaster": name,
                "threshold": calibration.threshold,
                "threshold_fitted_on": origin.get(name, UNCALIBRATED),
                "episodes": inc.episodes,
                "warned": inc.warned,
                "recall": inc.recall,
                "median_lead_min": inc.median_lead_min,
                "precision": inc.precision,
                "false_alarms_per_server_day": inc.false_alarms_per_server_day,
                "within_budget": bool(inc.false_alarms_per_server_day <= config.target_false_alarms),
            }
        )
    table = pd.DataFrame(rows)
    best = ranked(table[table["forecaster"] != ORACLE])
    winner = str(best.iloc[0]["forecaster"]) if len(best) and best.iloc[0]["within_budget"] else None
    calibrations_used = {name: fitted.get(name, AlertCalibration()) for name in forecasts}
    # One row per server × origin, the same for every forecaster (they run from the same origins).
    unseen = without_sign(flagged, eps, actuals, lead=config.warning_lead)
    return WarningComparison(table, pd.concat(curves, ignore_index=True), scores, calibrations_used, winner, unseen)


@dataclass
class EvaluationResults:
    model: str
    config: EvaluationConfig
    metrics: pd.DataFrame
    aggregate: pd.DataFrame
    ratio: pd.DataFrame
    cold_start: pd.DataFrame | None = None
    warnings: WarningComparison | None = None
    #: The model against the strong practical peer (`ratio_to_peer`), when one was evaluated.
    peer: pd.DataFrame | None = None
    #: Every forecaster's pages (operator units) from forecasts at every model step, when replayed.
    pages: dict[str, PageScores] | None = None

    @property
    def incidents(self) -> IncidentScores | None:
        """The model's own incident scores."""
        return None if self.warnings is None else self.warnings.scores[self.model]

    @property
    def incidents_skipped(self) -> str | None:
        """Why there are no incident scores (data without the simulator's labels), or None when scored."""
        return None if self.warnings is not None else NO_INCIDENT_LABELS


#: What an evaluation says instead of incident scores when the data has no `state` (real telemetry).
NO_INCIDENT_LABELS = f"not measured: the data has no {STATE} column (real telemetry carries no incident labels)"


def evaluate(
    forecast: pd.DataFrame,
    actuals: pd.DataFrame,
    holdout_start: pd.Timestamp | str,
    *,
    model: str = "tft",
    seen_servers: Iterable[str] | None = None,
    config: EvaluationConfig | None = None,
    calibrations: Mapping[str, AlertCalibration] | None = None,
    peer: pd.DataFrame | None = None,
) -> EvaluationResults:
    """Backtest a model's tidy forecast: baselines at the same origins, metrics, cold start, and incident
    early warning side by side with the baselines and the oracle.

    `calibrations`: alert thresholds fitted with the model (`stored_calibrations`); the model without one
    alerts at the uncalibrated scale, a baseline without one is fitted on this data. Incident scores
    need the simulator's `state` column in `actuals`; without it (real telemetry) they are skipped and the
    summary says so. Accuracy covers the forecast's metrics, for the model and the baselines alike.
    """
    cfg = config or EvaluationConfig()
    missing = set(FORECAST_COLUMNS) - set(forecast.columns)
    if missing:
        raise ValueError(f"forecast lacks columns {sorted(missing)}")
    start = to_utc(holdout_start)
    actuals = only_metrics(actuals, forecast[METRIC].unique())
    at = forecast[[SERVER_NAME, ORIGIN]].drop_duplicates()
    others = baselines(actuals, at, holdout_start=start, config=cfg, oracle=STATE in actuals)
    if peer is not None:
        others[PEER] = peer
    accuracy = {model: forecast, **{name: fc for name, fc in others.items() if name != ORACLE}}
    table = metrics_table(accuracy, actuals, start, config=cfg)
    agg = aggregate(table)
    cold = None
    seen = None if seen_servers is None else set(seen_servers)
    if seen is not None and set(at[SERVER_NAME]) - seen:
        split = metrics_table({model: forecast}, actuals, start, seen_servers=seen, config=cfg)
        cold = cold_start_gap(split, model)
    warnings = None
    if STATE in actuals:
        warnings = compare_warnings({model: forecast, **others}, actuals, start, cfg, calibrations)
    versus = None if peer is None else ratio_to_peer(table, model, PEER)
    return EvaluationResults(model, cfg, table, agg, ratio_to_best_baseline(agg, model), cold, warnings, versus)


def evaluate_model(
    model: ForecastModel,
    frame: pd.DataFrame,
    holdout: pd.Timestamp,
    config: EvaluationConfig,
    peer: PeerModel | None = None,
) -> tuple[pd.DataFrame, EvaluationResults]:
    """A model backtested on `frame` from `holdout` on (`run`) and scored (`evaluate`) at the alert thresholds
    it carries, beside the peer where given, its servers never trained on counted as cold starts; then every
    forecaster replayed at every model step for pages (`replay_pages`). Returns its forecasts and the results."""
    forecaster = model_forecaster(model)
    predictions = run(forecaster, frame, holdout, config)
    at = predictions[[SERVER_NAME, ORIGIN]].drop_duplicates()
    targets = list(model.config.targets)
    calibrations = stored_calibrations(model.training_info, "tft")
    results = evaluate(
        predictions,
        frame,
        holdout,
        seen_servers=model.training_info.get("servers"),
        config=config,
        calibrations=calibrations,
        peer=None if peer is None else peer_forecast(peer, only_metrics(frame, targets), at),
    )
    if STATE in frame and config.page_hours > 0:
        results.pages = replay_pages(forecaster, targets, frame, holdout, config, calibrations, peer)
    return predictions, results


def replay_pages(
    forecaster: Forecaster,
    targets: Iterable[str],
    frame: pd.DataFrame,
    holdout: pd.Timestamp,
    config: EvaluationConfig,
    calibrations: Mapping[str, AlertCalibration],
    peer: PeerModel | None = None,
    model: str = "tft",
) -> dict[str, PageScores]:
    """Alerts as an on-call gets them: the model, the baselines, the oracle and the peer forecast at every
    model step of the held-out period's first `config.page_hours` (the service's cadence), each one's alerts
    turned into pages by the service's rule (`config.page_rule`) and scored in operator units (`page_scores`)."""
    actuals = only_metrics(frame, targets)
    at = origins(frame, holdout, MODEL_STEP)
    at = at[at[ORIGIN] < pd.Timestamp(holdout) + pd.Timedelta(hours=config.page_hours)]
    if len(at) == 0:
        return {}
    bands = residual_bands(actuals, holdout, config)

    def forecasts(chunk: pd.DataFrame) -> dict[str, pd.DataFrame]:
        out = {model: backtest(forecaster, frame, chunk)}
        out.update(baselines(actuals, chunk, config=config, oracle=True, bands=bands))
        if peer is not None:
            out[PEER] = peer_forecast(peer, actuals, chunk)
        return out

    flagged = step_alerts(forecasts, at, calibrations)
    eps = episodes(frame)
    return {name: page_scores(f, eps, config.page_rule, lead=config.warning_lead) for name, f in flagged.items()}

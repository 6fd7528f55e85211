"""Honest accuracy: the model's forecasts against plain baselines at the same origins, plus incident warnings.

The predecessor claimed "88 %" without measuring anything. Here every number is defined in a docstring
and compared with what a simple rule would have achieved on the same data:

- baselines (same tidy format as the model, see tftmon.risk.FORECAST_COLUMNS): last value, seasonal
  naive (one day earlier), linear drift (Prometheus `predict_linear` over the last hour);
- per metric and horizon: MAE, MASE, pinball loss, p10–p90 coverage and width;
- cold start: the same table for servers seen vs unseen in training;
- incident early warning: critical alerts from tftmon.risk against the simulator's incident episodes.

Pure functions over DataFrames; no MLflow here (jobs log what these return).
"""

from __future__ import annotations

import io as _bytes_io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tftmon.config import EvaluationConfig
from tftmon.contract import (
    COLUMNS_BY_NAME,
    CPU_IDLE,
    CPU_IOWAIT,
    HORIZONS,
    INCIDENT_STATE,
    MEM_USED,
    METRICS,
    MODEL_STEP,
    PREDICTION_STEPS,
    PROFILE,
    QUANTILE_NAMES,
    QUANTILES,
    SERVER_NAME,
    STATE,
    TIMESTAMP,
    profile_of,
)
from tftmon.io import write_bytes_atomic
from tftmon.risk import FORECAST_COLUMNS, METRIC, ORIGIN, STEP, Severity, score

MODEL = "model"
HORIZON = "horizon"
SEEN = "seen"
LAST_VALUE = "last_value"
SEASONAL_NAIVE = "seasonal_naive"
LINEAR_DRIFT = "linear_drift"
BASELINES: tuple[str, ...] = (LAST_VALUE, SEASONAL_NAIVE, LINEAR_DRIFT)
#: What operators look at first: the bottleneck signal, CPU, memory.
FAN_CHART_METRICS: tuple[str, ...] = (CPU_IOWAIT, CPU_IDLE, MEM_USED)
P10, P50, P90 = QUANTILE_NAMES
_LOWER = np.array([COLUMNS_BY_NAME[m].min if COLUMNS_BY_NAME[m].min is not None else -np.inf for m in METRICS])
_UPPER = np.array([COLUMNS_BY_NAME[m].max if COLUMNS_BY_NAME[m].max is not None else np.inf for m in METRICS])


# ---------------------------------------------------------------------------------------------
# Fast lookup of actual values by (server, time step), shared by baselines, scoring and scales
# ---------------------------------------------------------------------------------------------


class _Actuals:
    """Actual metrics keyed by (server, integer step since the first timestamp), looked up in bulk.

    A sorted key array and searchsorted instead of a dense server×time grid: the fleet may hold servers
    with very different spans, and missing bins must stay missing (NaN), never be filled.
    """

    def __init__(self, actuals: pd.DataFrame) -> None:
        self.t0 = actuals[TIMESTAMP].min()
        self.servers = pd.Index(np.sort(actuals[SERVER_NAME].unique()))
        code = self.servers.get_indexer(actuals[SERVER_NAME])
        tidx = self.index_of(actuals[TIMESTAMP])
        self.span = int(tidx.max()) + 1 + PREDICTION_STEPS
        keys = code.astype(np.int64) * self.span + tidx
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.values = actuals[list(METRICS)].to_numpy(dtype=float)[order]
        self.profiles = actuals.groupby(SERVER_NAME)[PROFILE].first().reindex(self.servers).to_numpy()

    def index_of(self, timestamps: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        delta = (pd.DatetimeIndex(timestamps) - self.t0) / pd.Timedelta(MODEL_STEP)
        return np.round(np.asarray(delta, dtype=float)).astype(np.int64)

    def code_of(self, servers: pd.Series | np.ndarray) -> np.ndarray:
        return self.servers.get_indexer(pd.Index(servers))

    def get(self, code: np.ndarray, tidx: np.ndarray) -> np.ndarray:
        """Values [n, metric] at (code, tidx); NaN where the server is unknown or the bin is missing."""
        code, tidx = np.broadcast_arrays(np.asarray(code), np.asarray(tidx))
        valid = (code >= 0) & (tidx >= 0) & (tidx < self.span)
        keys = np.where(valid, code.astype(np.int64) * self.span + tidx, -1)
        pos = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        found = valid & (self.keys[pos] == keys)
        out = np.where(found[..., None], self.values[pos], np.nan)
        return out


# ---------------------------------------------------------------------------------------------
# Origins and baselines
# ---------------------------------------------------------------------------------------------


def origins(frame: pd.DataFrame, holdout_start: pd.Timestamp | str, every: timedelta | str = "1h") -> pd.DataFrame:
    """Forecast origins in the held-out period: per server, every `every` from `holdout_start` on, where
    the origin bin itself and all PREDICTION_STEPS future bins are observed (so every horizon is scored
    on the same origins). Returns columns server_name, profile, origin.
    """
    start = pd.Timestamp(holdout_start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    every_steps = int(pd.Timedelta(every) / pd.Timedelta(MODEL_STEP))
    if every_steps < 1:
        raise ValueError(f"origin spacing {every} is shorter than the model step {MODEL_STEP}")
    act = _Actuals(frame)
    first = act.index_of(pd.DatetimeIndex([start]))[0]
    last = act.span - PREDICTION_STEPS - 1
    grid = np.arange(max(first, 0), last - PREDICTION_STEPS + 1, every_steps)
    if grid.size == 0:
        return pd.DataFrame({SERVER_NAME: [], PROFILE: [], ORIGIN: pd.DatetimeIndex([], tz="UTC")})
    code = np.repeat(np.arange(len(act.servers)), grid.size)
    tidx = np.tile(grid, len(act.servers))
    window = tidx[:, None] + np.arange(PREDICTION_STEPS + 1)
    # Observed = the bin exists; any metric value counts (a NaN metric inside a row is the validator's job).
    present = ~np.isnan(act.get(np.repeat(code, PREDICTION_STEPS + 1), window.ravel())).all(axis=-1)
    keep = present.reshape(len(code), PREDICTION_STEPS + 1).all(axis=1)
    return pd.DataFrame(
        {
            SERVER_NAME: act.servers.to_numpy()[code[keep]],
            PROFILE: act.profiles[code[keep]],
            ORIGIN: act.t0 + tidx[keep] * pd.Timedelta(MODEL_STEP),
        }
    )


def backtest(
    forecaster: Callable[[pd.DataFrame], pd.DataFrame],
    frame: pd.DataFrame,
    at: pd.DataFrame,
    history: timedelta,
) -> pd.DataFrame:
    """Run a forecaster from every origin in `at` (server_name, origin), seeing only data up to it.

    One call per distinct origin covers all its servers; each call gets `history` of data before the
    origin (the model's encoder window), never anything after it.
    """
    parts = []
    for origin, servers in at.groupby(ORIGIN)[SERVER_NAME]:
        ts = frame[TIMESTAMP]
        seen = frame[frame[SERVER_NAME].isin(servers) & (ts <= origin) & (ts > origin - history)]
        part = forecaster(seen)
        part[ORIGIN] = origin
        parts.append(part)
    if not parts:
        raise ValueError("no forecast origins: the held-out period is shorter than one full forecast")
    return pd.concat(parts, ignore_index=True)


def _point_baseline(
    act: _Actuals, code: np.ndarray, tidx: np.ndarray, method: str, cfg: EvaluationConfig
) -> np.ndarray:
    """p50 of one baseline: [origin, step, metric], clipped to the contract's ranges."""
    horizon = np.arange(1, PREDICTION_STEPS + 1)
    if method == LAST_VALUE:
        pred = np.repeat(act.get(code, tidx)[:, None, :], PREDICTION_STEPS, axis=1)
    elif method == SEASONAL_NAIVE:
        # The same time of day one period earlier; for steps beyond one period it repeats the last period.
        back = cfg.seasonal_steps * np.ceil(horizon / cfg.seasonal_steps).astype(np.int64)
        pred = act.get(code[:, None], tidx[:, None] + horizon - back)
    elif method == LINEAR_DRIFT:
        x = np.arange(-cfg.drift_steps + 1, 1, dtype=float)
        y = act.get(code[:, None], tidx[:, None] + x.astype(np.int64))  # [n, window, metric]
        w = ~np.isnan(y)
        n = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            xm = (w * x[None, :, None]).sum(axis=1) / n
            ym = np.nansum(y, axis=1) / n
            dx = np.where(w, x[None, :, None] - xm[:, None, :], 0.0)
            slope = (dx * np.nan_to_num(y - ym[:, None, :])).sum(axis=1) / (dx**2).sum(axis=1)
        slope = np.where(n >= 2, slope, np.nan)
        pred = ym[:, None, :] + slope[:, None, :] * (horizon[None, :, None] - xm[:, None, :])
    else:
        raise ValueError(f"unknown baseline {method!r}; choose one of {BASELINES}")
    return np.clip(pred, _LOWER, _UPPER)


def _tidy(keys: pd.DataFrame, quantiles: np.ndarray) -> pd.DataFrame:
    """[origin, step, metric, quantile] -> the tidy forecast format."""
    n, s, m = quantiles.shape[:3]
    origin = np.repeat(keys[ORIGIN].to_numpy(), m * s)
    step = np.tile(np.arange(1, s + 1), n * m)
    out = pd.DataFrame(
        {
            SERVER_NAME: np.repeat(keys[SERVER_NAME].to_numpy(), m * s),
            PROFILE: np.repeat(keys[PROFILE].to_numpy(), m * s),
            ORIGIN: origin,
            STEP: step,
            TIMESTAMP: pd.DatetimeIndex(origin) + pd.to_timedelta(step * MODEL_STEP),
            METRIC: np.tile(np.repeat(np.asarray(METRICS, dtype=object), s), n),
        }
    )
    flat = quantiles.transpose(0, 2, 1, 3).reshape(n * m * s, -1)
    for i, name in enumerate(QUANTILE_NAMES):
        out[name] = flat[:, i]
    return out


def baseline_forecast(
    actuals: pd.DataFrame,
    at: pd.DataFrame,
    method: str,
    *,
    calibration: pd.DataFrame | None = None,
    config: EvaluationConfig | None = None,
) -> pd.DataFrame:
    """A baseline's forecast in the tidy format at the (server_name, origin) pairs of `at`.

    p50 is the baseline itself (clipped to contract ranges). p10/p90 are p50 plus the 10 %/90 %
    quantiles of the baseline's own residuals at the `calibration` origins (the training part), pooled
    per profile × metric × step (per server would need far more origins than a backtest has); without
    `calibration` they are NaN and interval metrics (pinball, coverage, width) are NaN for it.
    """
    cfg = config or EvaluationConfig()
    act = _Actuals(actuals)
    keys = at[[SERVER_NAME, ORIGIN]].drop_duplicates().reset_index(drop=True)
    code = act.code_of(keys[SERVER_NAME])
    keys[PROFILE] = np.where(code >= 0, act.profiles[np.maximum(code, 0)], keys[SERVER_NAME].map(profile_of))
    p50 = _point_baseline(act, code, act.index_of(keys[ORIGIN]), method, cfg)
    lo = hi = np.full_like(p50, np.nan)
    if calibration is not None and len(calibration):
        lo, hi = _residual_band(act, calibration, method, cfg, keys[PROFILE].to_numpy())
    quantiles = np.stack([np.clip(p50 + lo, _LOWER, _UPPER), p50, np.clip(p50 + hi, _LOWER, _UPPER)], axis=-1)
    return _tidy(keys, quantiles)


def _residual_band(
    act: _Actuals, calibration: pd.DataFrame, method: str, cfg: EvaluationConfig, profiles: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Residual q10/q90 per profile × step × metric, broadcast to the rows of `profiles`."""
    cal = calibration[[SERVER_NAME, ORIGIN]].drop_duplicates()
    if len(cal) > cfg.calibration_origins:
        cal = cal.iloc[np.linspace(0, len(cal) - 1, cfg.calibration_origins).astype(int)]
    code = act.code_of(cal[SERVER_NAME])
    tidx = act.index_of(cal[ORIGIN])
    pred = _point_baseline(act, code, tidx, method, cfg)
    truth = act.get(code[:, None], tidx[:, None] + np.arange(1, PREDICTION_STEPS + 1))
    resid = truth - pred
    cal_prof = act.profiles[np.maximum(code, 0)]
    with np.errstate(all="ignore"):
        pooled = np.nanquantile(resid, [QUANTILES[0], QUANTILES[-1]], axis=0)
    lo = np.repeat(pooled[0][None], len(profiles), axis=0)
    hi = np.repeat(pooled[1][None], len(profiles), axis=0)
    for prof in np.unique(profiles):
        mine = cal_prof == prof
        if mine.sum() >= 10:  # too few origins of a profile -> keep the fleet-wide band
            band = np.nanquantile(resid[mine], [QUANTILES[0], QUANTILES[-1]], axis=0)
            lo[profiles == prof], hi[profiles == prof] = band[0], band[1]
    return lo, hi


def baselines(
    actuals: pd.DataFrame, at: pd.DataFrame, *, holdout_start: pd.Timestamp | None = None,
    config: EvaluationConfig | None = None,
) -> dict[str, pd.DataFrame]:  # fmt: skip
    """All baselines at the origins of `at`; with `holdout_start` their bands are calibrated on origins
    before it (every `config.origin_every`, the full future also before the hold-out)."""
    cfg = config or EvaluationConfig()
    calibration = None
    if holdout_start is not None:
        train = actuals[actuals[TIMESTAMP] < pd.Timestamp(holdout_start)]
        if len(train):
            calibration = origins(train, train[TIMESTAMP].min() + cfg.seasonal_steps * MODEL_STEP, cfg.origin_every)
    return {m: baseline_forecast(actuals, at, m, calibration=calibration, config=cfg) for m in BASELINES}


# ---------------------------------------------------------------------------------------------
# Accuracy metrics
# ---------------------------------------------------------------------------------------------


def pinball(y: np.ndarray, pred: np.ndarray, q: float) -> np.ndarray:
    """Quantile (pinball) loss of one quantile: q·(y − ŷ) above, (1 − q)·(ŷ − y) below."""
    diff = y - pred
    return np.maximum(q * diff, (q - 1) * diff)


def seasonal_scale(actuals: pd.DataFrame, holdout_start: pd.Timestamp | str, period: int = 288) -> pd.DataFrame:
    """MASE denominators: in-sample MAE of the seasonal-naive forecast |y_t − y_{t−period}| per
    server × metric over the training part (timestamps before `holdout_start`).

    A zero (below 1e-9 of the series' level) or missing scale (a flat series, e.g. swap always 0, or a
    server unseen in training) is replaced by the median positive scale of that metric over servers of
    the same profile, else over the fleet; if that is also missing the scale stays NaN and those rows drop out of MASE.
    Returns columns server_name, profile, metric, scale.
    """
    act = _Actuals(actuals)
    train = actuals[actuals[TIMESTAMP] < pd.Timestamp(holdout_start)]
    code = act.code_of(train[SERVER_NAME])
    tidx = act.index_of(train[TIMESTAMP])
    y = train[list(METRICS)].to_numpy(dtype=float)
    err = np.abs(y - act.get(code, tidx - period))
    wide = pd.DataFrame(err, columns=list(METRICS)).groupby(code).mean()
    # Float noise on an exactly periodic series is not a scale: below 1e-9 of the level counts as zero.
    level = pd.DataFrame(np.abs(y), columns=list(METRICS)).groupby(code).mean()
    wide = wide.where(wide > 1e-9 * np.maximum(level, 1.0), 0.0)
    wide = wide.reindex(np.arange(len(act.servers)))
    wide.index = act.servers
    long = wide.rename_axis(SERVER_NAME).melt(ignore_index=False, var_name=METRIC, value_name="scale").reset_index()
    long[PROFILE] = act.profiles[act.code_of(long[SERVER_NAME])]
    return _fill_scale(long)


def _fill_scale(scale: pd.DataFrame) -> pd.DataFrame:
    positive = scale["scale"].where(scale["scale"] > 0)
    by_profile = positive.groupby([scale[PROFILE], scale[METRIC]]).transform("median")
    by_metric = positive.groupby(scale[METRIC]).transform("median")
    out = scale.copy()
    out["scale"] = positive.fillna(by_profile).fillna(by_metric)
    return out[[SERVER_NAME, PROFILE, METRIC, "scale"]]


def _attach_scale(rows: pd.DataFrame, scale: pd.DataFrame) -> np.ndarray:
    """Scale per forecast row; servers absent from `scale` take their profile's (then the fleet's) median."""
    keyed = scale.set_index([SERVER_NAME, METRIC])["scale"]
    found = keyed.reindex(pd.MultiIndex.from_frame(rows[[SERVER_NAME, METRIC]])).to_numpy()
    by_profile = scale.groupby([PROFILE, METRIC])["scale"].median()
    by_metric = scale.groupby(METRIC)["scale"].median()
    prof = by_profile.reindex(pd.MultiIndex.from_frame(rows[[PROFILE, METRIC]])).to_numpy()
    fleet = by_metric.reindex(rows[METRIC]).to_numpy()
    return np.where(np.isnan(found), np.where(np.isnan(prof), fleet, prof), found)


def _horizon_rows(forecast: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Rows scored for each horizon: exactly its step ("at") or all steps up to it ("upto")."""
    parts = []
    for name, step in HORIZONS.items():
        mask = forecast[STEP] == step if mode == "at" else forecast[STEP] <= step
        parts.append(forecast.loc[mask].assign(**{HORIZON: name}))
    return pd.concat(parts, ignore_index=True)


def score_rows(forecast: pd.DataFrame, actuals: pd.DataFrame, scale: pd.DataFrame, *, mode: str = "at") -> pd.DataFrame:
    """Per forecast row and horizon: actual, abs_error, scaled_error, quantile_loss, covered, width.

    quantile_loss = mean over p10/p50/p90 of the pinball loss; covered = p10 ≤ actual ≤ p90; rows whose
    actual is missing are dropped.
    """
    rows = _horizon_rows(forecast, mode)
    act = _Actuals(actuals)
    metric = pd.Categorical(rows[METRIC], categories=METRICS).codes
    values = act.get(act.code_of(rows[SERVER_NAME]), act.index_of(rows[TIMESTAMP]))
    y = values[np.arange(len(rows)), np.maximum(metric, 0)]
    rows["actual"] = np.where(metric >= 0, y, np.nan)
    rows = rows[rows["actual"].notna()].reset_index(drop=True)
    y = rows["actual"].to_numpy()
    preds = rows[list(QUANTILE_NAMES)].to_numpy(dtype=float)
    rows["abs_error"] = np.abs(y - rows[P50].to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):
        rows["scaled_error"] = rows["abs_error"] / _attach_scale(rows, scale)
    rows["quantile_loss"] = np.mean([pinball(y, preds[:, i], q) for i, q in enumerate(QUANTILES)], axis=0)
    rows["covered"] = np.where(np.isnan(preds).any(axis=1), np.nan, (preds[:, 0] <= y) & (y <= preds[:, -1]))
    rows["width"] = preds[:, -1] - preds[:, 0]
    return rows


def metrics_table(
    forecasts: dict[str, pd.DataFrame],
    actuals: pd.DataFrame,
    holdout_start: pd.Timestamp | str,
    *,
    seen_servers: Iterable[str] | None = None,
    config: EvaluationConfig | None = None,
) -> pd.DataFrame:
    """Tidy accuracy table: model, metric, horizon, [seen,] n, mae, mase, quantile_loss, coverage, width.

    Each horizon is scored at exactly its step (config.horizon_mode "at", default) or averaged over steps
    1..horizon ("upto"). mae = mean |actual − p50|; mase = mean over rows of |actual − p50| / scale of
    that server × metric (`seasonal_scale`), i.e. < 1 beats the in-sample seasonal naive; quantile_loss
    = mean pinball over the three quantiles (metric units); coverage = share of actuals within p10–p90
    (nominal 0.8); width = mean p90 − p10. With `seen_servers`, a boolean `seen` column splits servers
    seen in training from the rest (cold start).
    """
    cfg = config or EvaluationConfig()
    scale = seasonal_scale(actuals, holdout_start, cfg.seasonal_steps)
    seen = None if seen_servers is None else set(seen_servers)
    parts = []
    for name, forecast in forecasts.items():
        rows = score_rows(forecast, actuals, scale, mode=cfg.horizon_mode)
        rows[MODEL] = name
        if seen is not None:
            rows[SEEN] = rows[SERVER_NAME].isin(seen)
        parts.append(rows)
    rows = pd.concat(parts, ignore_index=True)
    by = [MODEL, METRIC, HORIZON] + ([SEEN] if seen is not None else [])
    table = rows.groupby(by, sort=False).agg(
        n=("abs_error", "size"),
        mae=("abs_error", "mean"),
        mase=("scaled_error", "mean"),
        quantile_loss=("quantile_loss", "mean"),
        coverage=("covered", "mean"),
        width=("width", "mean"),
    )
    return _order(table.reset_index())


def _order(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out[HORIZON] = pd.Categorical(out[HORIZON], categories=list(HORIZONS), ordered=True)
    sort = [MODEL, HORIZON] + ([METRIC] if METRIC in out else []) + ([SEEN] if SEEN in out else [])
    out = out.sort_values(sort, kind="stable").reset_index(drop=True)
    out[HORIZON] = out[HORIZON].astype(str)
    return out


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Per model × horizon (× seen): MASE and coverage averaged over metrics (only scale-free numbers
    are averaged; MAE in different units is not)."""
    by = [MODEL, HORIZON] + ([SEEN] if SEEN in table else [])
    out = table.groupby(by, sort=False).agg(
        mase=("mase", "mean"), coverage=("coverage", "mean"), metrics=(METRIC, "nunique")
    )
    return _order(out.reset_index())


def ratio_to_best_baseline(agg: pd.DataFrame, model: str = "tft") -> pd.DataFrame:
    """Per horizon: the model's mean MASE / the lowest mean MASE among baselines (< 1 = model better)."""
    base = agg[agg[MODEL].isin(BASELINES)]
    best = base.loc[base.groupby(HORIZON)["mase"].idxmin(), [HORIZON, MODEL, "mase"]]
    best = best.rename(columns={MODEL: "best_baseline", "mase": "best_baseline_mase"})
    mine = agg.loc[agg[MODEL] == model, [HORIZON, "mase"]]
    out = mine.merge(best, on=HORIZON, how="left")
    out["ratio"] = out["mase"] / out["best_baseline_mase"]
    return _order(out.assign(**{MODEL: model}))[[HORIZON, "mase", "best_baseline", "best_baseline_mase", "ratio"]]


def cold_start_gap(table: pd.DataFrame, model: str = "tft") -> pd.DataFrame:
    """Per horizon: mean MASE over metrics for seen and unseen servers and gap = unseen / seen − 1."""
    if SEEN not in table:
        raise ValueError("the table has no 'seen' column; build it with metrics_table(..., seen_servers=...)")
    agg = aggregate(table[table[MODEL] == model])
    wide = agg.pivot(index=HORIZON, columns=SEEN, values="mase").reindex(list(HORIZONS))
    out = pd.DataFrame({HORIZON: wide.index, "mase_seen": wide.get(True), "mase_unseen": wide.get(False)})
    out = out.reset_index(drop=True)
    out["gap"] = out["mase_unseen"] / out["mase_seen"] - 1
    return out


# ---------------------------------------------------------------------------------------------
# Incident early warning
# ---------------------------------------------------------------------------------------------


def episodes(actuals: pd.DataFrame) -> pd.DataFrame:
    """Incident episodes: maximal runs of consecutive 5-min bins in INCIDENT_STATE per server.

    A missing bin ends a run. Returns server_name, start (first bin), end (last bin + one step, exclusive).
    """
    frame = actuals[[SERVER_NAME, TIMESTAMP, STATE]].sort_values([SERVER_NAME, TIMESTAMP], kind="stable")
    inc = (frame[STATE] == INCIDENT_STATE).to_numpy()
    same = (frame[SERVER_NAME] == frame[SERVER_NAME].shift()).to_numpy()
    adjacent = (frame[TIMESTAMP].diff() == pd.Timedelta(MODEL_STEP)).to_numpy()
    prev_inc = np.concatenate([[False], inc[:-1]])
    starts = inc & ~(same & adjacent & prev_inc)
    run = np.cumsum(starts)
    inc_rows = frame[inc].assign(run=run[inc])
    out = inc_rows.groupby("run").agg(
        **{SERVER_NAME: (SERVER_NAME, "first"), "start": (TIMESTAMP, "first"), "end": (TIMESTAMP, "last")}
    )
    out["end"] = out["end"] + pd.Timedelta(MODEL_STEP)
    return out.reset_index(drop=True)


def alerts(forecast: pd.DataFrame) -> pd.DataFrame:
    """Per server × origin of a forecast: risk, severity and alert (severity critical, via tftmon.risk).

    The alert is taken as raised at the origin (the last observed bin the forecast was made from).
    """
    scored = score(forecast)
    scored["alert"] = scored["severity"] == Severity.CRITICAL.value
    return scored[[SERVER_NAME, ORIGIN, "risk", "severity", "alert"]]


@dataclass
class IncidentScores:
    """Incident early-warning numbers; the exact definitions are in `incident_scores`."""

    lead: timedelta
    horizon: timedelta
    episodes: int
    warned: int
    recall: float
    median_lead_min: float
    alerts: int
    alerts_during: int
    true_alerts: int
    precision: float
    false_alarms: int
    server_days: float
    false_alarms_per_server_day: float
    per_episode: pd.DataFrame = field(repr=False)


def incident_scores(
    alert_frame: pd.DataFrame,
    episode_frame: pd.DataFrame,
    *,
    lead: timedelta = timedelta(minutes=30),
    horizon: timedelta = PREDICTION_STEPS * MODEL_STEP,
) -> IncidentScores:
    """Score critical alerts against incident episodes.

    `alert_frame`: one row per evaluated server × origin with a boolean `alert` (see `alerts`); the
    origins with alert False matter too: they define when a warning was possible and the server-days.

    - eligible episode: at least one evaluated origin of its server lies in [start − horizon,
      start − lead] (the system had a chance to warn in time); others are left out.
    - warned: an alert on that server at t with start − horizon ≤ t ≤ start − lead.
      recall = warned / eligible.
    - lead of an eligible episode = start − its earliest alert in [start − horizon, start);
      median_lead_min = median over episodes with any such alert (minutes; NaN when none).
    - an alert at t is `during` an episode when start ≤ t < end (the incident is already on: neither
      an early warning nor a false alarm; excluded below); otherwise it is true when an episode of its
      server starts in (t, t + horizon], else a false alarm.
      precision = true / (alerts − during).
    - server-days = Σ over servers of (evaluated origins × that server's median origin spacing);
      false_alarms_per_server_day = false alarms / server-days.
    """
    origins_ = alert_frame[[SERVER_NAME, ORIGIN, "alert"]]
    eps = episode_frame.reset_index(drop=True).rename_axis("episode").reset_index()
    pairs = eps.merge(origins_, on=SERVER_NAME, how="inner")
    pairs["before"] = pairs["start"] - pairs[ORIGIN]
    in_window = (pairs["before"] >= lead) & (pairs["before"] <= horizon)
    eligible = pairs.loc[in_window, "episode"].unique()
    warned = pairs.loc[in_window & pairs["alert"], "episode"].unique()
    early = pairs[pairs["alert"] & (pairs["before"] > pd.Timedelta(0)) & (pairs["before"] <= horizon)]
    lead_by_episode = early.groupby("episode")["before"].max()
    per_episode = eps.assign(
        eligible=eps["episode"].isin(eligible),
        warned=eps["episode"].isin(warned),
        lead_min=eps["episode"].map(lead_by_episode / pd.Timedelta(minutes=1)),
    )
    leads = per_episode.loc[per_episode["eligible"], "lead_min"].dropna()

    raised = origins_[origins_["alert"]].reset_index(drop=True).rename_axis("alert_id").reset_index()
    cross = raised.merge(eps, on=SERVER_NAME, how="inner")
    during_ids = cross.loc[(cross["start"] <= cross[ORIGIN]) & (cross[ORIGIN] < cross["end"]), "alert_id"].unique()
    ahead = cross["start"] - cross[ORIGIN]
    true_ids = cross.loc[(ahead > pd.Timedelta(0)) & (ahead <= horizon), "alert_id"]
    true_ids = np.setdiff1d(true_ids.unique(), during_ids)
    n_alerts, n_during, n_true = len(raised), len(during_ids), len(true_ids)
    false_alarms = n_alerts - n_during - n_true

    spacing = (
        origins_.sort_values(ORIGIN)
        .groupby(SERVER_NAME)[ORIGIN]
        .agg(lambda s: s.diff().median() if len(s) > 1 else pd.Timedelta(MODEL_STEP))
    )
    count = origins_.groupby(SERVER_NAME).size()
    server_days = float((count * (spacing / pd.Timedelta(days=1))).sum())
    n_eligible, n_warned = int(per_episode["eligible"].sum()), int(per_episode["warned"].sum())
    return IncidentScores(
        lead=lead,
        horizon=horizon,
        episodes=n_eligible,
        warned=n_warned,
        recall=n_warned / n_eligible if n_eligible else float("nan"),
        median_lead_min=float(leads.median()) if len(leads) else float("nan"),
        alerts=n_alerts,
        alerts_during=n_during,
        true_alerts=n_true,
        precision=n_true / (n_alerts - n_during) if n_alerts > n_during else float("nan"),
        false_alarms=false_alarms,
        server_days=server_days,
        false_alarms_per_server_day=false_alarms / server_days if server_days else float("nan"),
        per_episode=per_episode,
    )


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------

_CPU_USED_LABEL = "CPU used = 100 − cpu_idle_pct (%)"


def plot_fan(
    forecast: pd.DataFrame,
    actuals: pd.DataFrame,
    series: Sequence[tuple[str, str]],
    *,
    origin: pd.Timestamp | None = None,
    history: timedelta = timedelta(hours=8),
) -> Figure:
    """Fan charts, one panel per (server, metric): the p10–p90 band and p50 from one origin (the latest
    by default) against the actuals before and after it. Idle CPU is drawn as CPU used, as operators read it.
    """
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 2.4 * len(series)), squeeze=False, sharex=False)
    for ax, (server, metric) in zip(axes[:, 0], series, strict=True):
        fc = forecast[(forecast[SERVER_NAME] == server) & (forecast[METRIC] == metric)]
        at = origin if origin is not None else fc[ORIGIN].max()
        fc = fc[fc[ORIGIN] == at].sort_values(STEP)
        mine = actuals[actuals[SERVER_NAME] == server]
        act = mine[mine[TIMESTAMP].between(at - history, fc[TIMESTAMP].max())].sort_values(TIMESTAMP)
        lo, mid, hi, y = fc[P10].to_numpy(), fc[P50].to_numpy(), fc[P90].to_numpy(), act[metric].to_numpy()
        label = metric
        if metric == CPU_IDLE:
            lo, mid, hi, y, label = 100 - hi, 100 - mid, 100 - lo, 100 - y, _CPU_USED_LABEL
        ax.fill_between(fc[TIMESTAMP], lo, hi, color="tab:blue", alpha=0.25, label="p10–p90")
        ax.plot(fc[TIMESTAMP], mid, color="tab:blue", lw=1.5, label="p50")
        ax.plot(act[TIMESTAMP], y, color="black", lw=1, label="actual")
        ax.axvline(at, color="grey", ls="--", lw=0.8)
        ax.set_title(f"{server} · {label}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_mase_by_horizon(agg: pd.DataFrame) -> Figure:
    """Grouped bars of mean MASE per horizon for the model and each baseline (lower is better; 1 = the
    in-sample seasonal naive)."""
    overall = agg[~agg[SEEN].astype(bool) | agg[SEEN].astype(bool)] if SEEN in agg else agg
    wide = overall.groupby([HORIZON, MODEL], sort=False)["mase"].mean().unstack(MODEL).reindex(list(HORIZONS))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / max(len(wide.columns), 1)
    x = np.arange(len(wide.index))
    for i, name in enumerate(wide.columns):
        ax.bar(x + i * width, wide[name].to_numpy(), width, label=name)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x + width * (len(wide.columns) - 1) / 2, wide.index)
    ax.set_ylabel("mean MASE")
    ax.set_title("MASE by horizon (lower is better)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 80) -> Path:
    """Write a figure as PNG atomically (readers never see half a file) and free it."""
    buffer = _bytes_io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)


# ---------------------------------------------------------------------------------------------
# One evaluation end to end, and its summary
# ---------------------------------------------------------------------------------------------


@dataclass
class EvaluationResults:
    model: str
    config: EvaluationConfig
    metrics: pd.DataFrame
    aggregate: pd.DataFrame
    ratio: pd.DataFrame
    cold_start: pd.DataFrame | None = None
    incidents: IncidentScores | None = None


def evaluate(
    forecast: pd.DataFrame,
    actuals: pd.DataFrame,
    holdout_start: pd.Timestamp | str,
    *,
    model: str = "tft",
    seen_servers: Iterable[str] | None = None,
    config: EvaluationConfig | None = None,
) -> EvaluationResults:
    """Backtest a model's tidy forecast: baselines at the same origins, metrics, cold start, incidents.

    Incident scores need the simulator's `state` column in `actuals`; without it they are skipped.
    """
    cfg = config or EvaluationConfig()
    missing = set(FORECAST_COLUMNS) - set(forecast.columns)
    if missing:
        raise ValueError(f"forecast lacks columns {sorted(missing)}")
    at = forecast[[SERVER_NAME, ORIGIN]].drop_duplicates()
    forecasts = {model: forecast, **baselines(actuals, at, holdout_start=pd.Timestamp(holdout_start), config=cfg)}
    table = metrics_table(forecasts, actuals, holdout_start, config=cfg)
    agg = aggregate(table)
    cold = None
    if seen_servers is not None:
        split = metrics_table({model: forecast}, actuals, holdout_start, seen_servers=seen_servers, config=cfg)
        cold = cold_start_gap(split, model)
    incidents = None
    if STATE in actuals:
        incidents = incident_scores(alerts(forecast), episodes(actuals), lead=cfg.warning_lead)
    return EvaluationResults(model, cfg, table, agg, ratio_to_best_baseline(agg, model), cold, incidents)


def write_plots(
    results: EvaluationResults,
    forecast: pd.DataFrame,
    actuals: pd.DataFrame,
    out_dir: Path,
    *,
    servers: int = 3,
    metrics: Sequence[str] = FAN_CHART_METRICS,
) -> list[Path]:
    """Write mase_by_horizon.png and fan_<server>.png for the first `servers` servers; returns the paths."""
    out_dir = Path(out_dir)
    paths = [save_figure(plot_mase_by_horizon(results.aggregate), out_dir / "mase_by_horizon.png")]
    chosen = [m for m in metrics if m in set(forecast[METRIC])]
    for server in sorted(forecast[SERVER_NAME].unique())[:servers]:
        fig = plot_fan(forecast, actuals, [(server, m) for m in chosen])
        paths.append(save_figure(fig, out_dir / f"fan_{server}.png"))
    return paths


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def _markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = (v if isinstance(v, str) else str(v) if isinstance(v, int | np.integer) else _fmt(v) for v in row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _target_lines(results: EvaluationResults) -> list[str]:
    cfg = results.config
    lines = []
    for row in results.ratio.itertuples(index=False):
        ok = row.ratio <= cfg.target_mase_ratio
        lines.append(
            f"| p50 MASE ≤ {cfg.target_mase_ratio:g} × best baseline ({row.horizon}) | {_fmt(row.ratio)} × "
            f"{row.best_baseline} | {'PASS' if ok else 'FAIL'} | {_fmt(cfg.target_mase_ratio - row.ratio)} margin |"
        )
    lo, hi = cfg.target_coverage
    cover = results.aggregate[results.aggregate[MODEL] == results.model]
    for row in cover.itertuples(index=False):
        ok = lo <= row.coverage <= hi
        margin = min(row.coverage - lo, hi - row.coverage)
        lines.append(
            f"| p10–p90 coverage in {lo:.0%}–{hi:.0%} ({row.horizon}) | {_fmt(row.coverage)} | "
            f"{'PASS' if ok else 'FAIL'} | {_fmt(margin)} margin |"
        )
    if results.cold_start is not None:
        for row in results.cold_start.itertuples(index=False):
            ok = abs(row.gap) <= cfg.target_cold_start_gap
            lines.append(
                f"| cold-start MASE gap ≤ {cfg.target_cold_start_gap:.0%} ({row.horizon}) | {_fmt(row.gap)} | "
                f"{'PASS' if ok else 'FAIL'} | {_fmt(cfg.target_cold_start_gap - abs(row.gap))} margin |"
            )
    else:
        lines.append("| cold-start MASE gap | not measured (no seen/unseen split) | – | – |")
    inc = results.incidents
    if inc is not None:
        lead_min = int(inc.lead / timedelta(minutes=1))
        ok = inc.recall >= cfg.target_recall
        lines.append(
            f"| incident recall ≥ {cfg.target_recall:g} at ≥ {lead_min} min lead | {_fmt(inc.recall)} "
            f"({inc.warned}/{inc.episodes}) | {'PASS' if ok else 'FAIL'} | "
            f"{_fmt(inc.recall - cfg.target_recall)} margin |"
        )
    else:
        lines.append("| incident recall | not measured (no state column) | – | – |")
    return lines


def summary_markdown(results: EvaluationResults) -> str:
    """A readable report: the targets with pass/fail and margin, then the tables behind them."""
    cfg = results.config
    mode = "at exactly the horizon step" if cfg.horizon_mode == "at" else "averaged over steps up to the horizon"
    parts = [
        f"# Evaluation of `{results.model}`",
        "",
        f"Horizons scored {mode}; MASE scaled by each server × metric's in-sample seasonal-naive MAE "
        "(< 1 beats it). Baseline bands come from their own training-part residuals.",
        "",
        "## Targets",
        "",
        "| target | measured | result | by how much |",
        "|---|---|---|---|",
        *_target_lines(results),
        "",
        "## Model vs best baseline (mean MASE over metrics)",
        "",
        _markdown_table(results.ratio),
        "",
        "## Per horizon, all models",
        "",
        _markdown_table(results.aggregate),
    ]
    if results.cold_start is not None:
        parts += ["", "## Cold start (seen vs unseen servers)", "", _markdown_table(results.cold_start)]
    inc = results.incidents
    if inc is not None:
        parts += [
            "",
            "## Incident early warning",
            "",
            f"- episodes (eligible): {inc.episodes}, warned ≥ {int(inc.lead / timedelta(minutes=1))} min ahead: "
            f"{inc.warned} → recall {_fmt(inc.recall)}",
            f"- median lead: {_fmt(inc.median_lead_min, 0)} min",
            f"- alerts: {inc.alerts} ({inc.alerts_during} during an incident), true: {inc.true_alerts} → "
            f"precision {_fmt(inc.precision)}",
            f"- false alarms: {inc.false_alarms} over {_fmt(inc.server_days, 1)} server-days → "
            f"{_fmt(inc.false_alarms_per_server_day)} per server-day",
        ]
    model_rows = results.metrics[results.metrics[MODEL] == results.model]
    parts += ["", f"## `{results.model}` per metric", "", _markdown_table(model_rows.drop(columns=[MODEL]))]
    return "\n".join(parts) + "\n"

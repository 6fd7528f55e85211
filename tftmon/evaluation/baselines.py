"""Plain baselines in the model's tidy forecast format: last value, seasonal naive, linear drift.

Linear drift over the last hour is what Prometheus `predict_linear` alerting does; the oracle (actuals as
forecasts) is the ceiling any forecaster could reach through the same risk scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tftmon.config import EvaluationConfig
from tftmon.contract import (
    METRIC,
    MODEL_STEP,
    ORIGIN,
    PREDICTION_STEPS,
    PROFILE,
    QUANTILE_NAMES,
    QUANTILES,
    SERVER_NAME,
    STEP,
    TIMESTAMP,
    metric_bounds,
    profile_of,
)
from tftmon.evaluation.actuals import Actuals, origins

LAST_VALUE = "last_value"
SEASONAL_NAIVE = "seasonal_naive"
LINEAR_DRIFT = "linear_drift"
BASELINES: tuple[str, ...] = (LAST_VALUE, SEASONAL_NAIVE, LINEAR_DRIFT)
#: Actuals as forecasts: not a baseline but the ceiling, scored beside them.
ORACLE = "oracle"


def _clip(values: np.ndarray, metrics: tuple[str, ...]) -> np.ndarray:
    """Values [..., metric] clipped to each metric's contract range."""
    lower, upper = metric_bounds(metrics)
    return np.clip(values, np.array(lower), np.array(upper))


def _point_baseline(act: Actuals, code: np.ndarray, tidx: np.ndarray, method: str, cfg: EvaluationConfig) -> np.ndarray:
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
    return _clip(pred, act.metrics)


def _tidy(
    keys: pd.DataFrame, quantiles: np.ndarray, metrics: tuple[str, ...], names: Sequence[str] = QUANTILE_NAMES
) -> pd.DataFrame:
    """[origin, step, metric, quantile] -> the tidy forecast format (the actuals' metrics), a column per
    quantile `names`.

    Columns are repeated by `take` on their own arrays: going through NumPy object arrays would make pandas
    parse millions of timestamps and strings back (most of a backtest's baseline time)."""
    n, s, m = quantiles.shape[:3]
    row = np.repeat(np.arange(n), m * s)
    step = np.tile(np.arange(1, s + 1), n * m)
    origin = keys[ORIGIN].array.take(row)
    out = pd.DataFrame(
        {
            SERVER_NAME: keys[SERVER_NAME].array.take(row),
            PROFILE: keys[PROFILE].array.take(row),
            ORIGIN: origin,
            STEP: step,
            TIMESTAMP: origin + step * np.timedelta64(MODEL_STEP),
            METRIC: pd.array(list(metrics), dtype="str").take(np.tile(np.repeat(np.arange(m), s), n)),
        }
    )
    flat = quantiles.transpose(0, 2, 1, 3).reshape(n * m * s, -1)
    for i, name in enumerate(names):
        out[name] = flat[:, i]
    return out


@dataclass(frozen=True)
class Band:
    """A baseline's p10/p90 offsets from p50 [2, step, metric]: its own residuals' 10 %/90 % quantiles,
    fleet-wide and per profile with enough calibration origins."""

    pooled: np.ndarray
    by_profile: dict[str, np.ndarray]

    def at(self, profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper offsets [row, step, metric] for rows of these profiles."""
        out = np.repeat(self.pooled[:, None], len(profiles), axis=1)
        for profile, band in self.by_profile.items():
            out[:, profiles == profile] = band[:, None]
        return out[0], out[1]


def baseline_forecast(
    actuals: pd.DataFrame,
    at: pd.DataFrame,
    method: str,
    *,
    calibration: pd.DataFrame | None = None,
    config: EvaluationConfig | None = None,
    band: Band | None = None,
) -> pd.DataFrame:
    """A baseline's forecast in the tidy format at the (server_name, origin) pairs of `at`.

    p50 is the baseline itself (clipped to contract ranges). p10/p90 are p50 plus the 10 %/90 %
    quantiles of the baseline's own residuals at the `calibration` origins (the training part), pooled
    per profile × metric × step (per server would need far more origins than a backtest has), or the `band`
    fitted so before; without either they are NaN and interval metrics (pinball, coverage, width) are NaN for it.
    """
    cfg = config or EvaluationConfig()
    act = Actuals(actuals)
    keys = at[[SERVER_NAME, ORIGIN]].drop_duplicates().reset_index(drop=True)
    code = act.code_of(keys[SERVER_NAME])
    keys[PROFILE] = np.where(code >= 0, act.profiles[np.maximum(code, 0)], keys[SERVER_NAME].map(profile_of))
    p50 = _point_baseline(act, code, act.index_of(keys[ORIGIN]), method, cfg)
    lo = hi = np.full_like(p50, np.nan)
    if band is None and calibration is not None and len(calibration):
        band = _residual_band(act, calibration, method, cfg)
    if band is not None:
        lo, hi = band.at(keys[PROFILE].to_numpy())
    quantiles = np.stack([_clip(p50 + lo, act.metrics), p50, _clip(p50 + hi, act.metrics)], axis=-1)
    return _tidy(keys, quantiles, act.metrics)


def _residual_band(act: Actuals, calibration: pd.DataFrame, method: str, cfg: EvaluationConfig) -> Band:
    """Residual q10/q90 per step × metric, fleet-wide and per profile with at least 10 origins."""
    cal = calibration[[SERVER_NAME, ORIGIN]].drop_duplicates()
    if len(cal) > cfg.calibration_origins:
        cal = cal.iloc[np.linspace(0, len(cal) - 1, cfg.calibration_origins).astype(int)]
    code = act.code_of(cal[SERVER_NAME])
    tidx = act.index_of(cal[ORIGIN])
    pred = _point_baseline(act, code, tidx, method, cfg)
    truth = act.get(code[:, None], tidx[:, None] + np.arange(1, PREDICTION_STEPS + 1))
    resid = truth - pred
    cal_prof = act.profiles[np.maximum(code, 0)]
    levels = [QUANTILES[0], QUANTILES[-1]]
    with np.errstate(all="ignore"):
        pooled = np.nanquantile(resid, levels, axis=0)
        # A profile with too few origins keeps the fleet-wide band.
        by_profile = {
            str(prof): np.nanquantile(resid[cal_prof == prof], levels, axis=0)
            for prof in np.unique(cal_prof)
            if (cal_prof == prof).sum() >= 10
        }
    return Band(pooled, by_profile)


def oracle_forecast(actuals: pd.DataFrame, at: pd.DataFrame) -> pd.DataFrame:
    """The actual future as a forecast (p10 = p50 = p90): the ceiling of what the risk scale can warn of."""
    act = Actuals(actuals)
    keys = at[[SERVER_NAME, ORIGIN]].drop_duplicates().reset_index(drop=True)
    code = act.code_of(keys[SERVER_NAME])
    keys[PROFILE] = np.where(code >= 0, act.profiles[np.maximum(code, 0)], keys[SERVER_NAME].map(profile_of))
    future = act.get(code[:, None], act.index_of(keys[ORIGIN])[:, None] + np.arange(1, PREDICTION_STEPS + 1))
    return _tidy(keys, np.repeat(future[..., None], len(QUANTILE_NAMES), axis=-1), act.metrics)


def residual_bands(
    actuals: pd.DataFrame, holdout_start: pd.Timestamp, config: EvaluationConfig | None = None
) -> dict[str, Band]:
    """Every baseline's band from its residuals at origins before `holdout_start` (every
    `config.origin_every`, the full future also before it); none when there is no such origin."""
    cfg = config or EvaluationConfig()
    train = actuals[actuals[TIMESTAMP] < pd.Timestamp(holdout_start)]
    if not len(train):
        return {}
    calibration = origins(train, train[TIMESTAMP].min() + cfg.seasonal_steps * MODEL_STEP, cfg.origin_every)
    if not len(calibration):
        return {}
    act = Actuals(actuals)
    return {m: _residual_band(act, calibration, m, cfg) for m in BASELINES}


def baselines(
    actuals: pd.DataFrame,
    at: pd.DataFrame,
    *,
    holdout_start: pd.Timestamp | None = None,
    config: EvaluationConfig | None = None,
    oracle: bool = False,
    bands: Mapping[str, Band] | None = None,
) -> dict[str, pd.DataFrame]:
    """All baselines at the origins of `at` (and the oracle when asked); with `holdout_start` their bands
    are calibrated on origins before it (`residual_bands`), or `bands` fitted so once for many calls."""
    cfg = config or EvaluationConfig()
    if bands is None and holdout_start is not None:
        bands = residual_bands(actuals, holdout_start, cfg)
    out = {m: baseline_forecast(actuals, at, m, config=cfg, band=(bands or {}).get(m)) for m in BASELINES}
    if oracle:
        out[ORACLE] = oracle_forecast(actuals, at)
    return out

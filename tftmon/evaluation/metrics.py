"""Accuracy metrics per metric and horizon: MAE, MASE, pinball loss, p10–p90 coverage and width, cold start."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from tftmon.config import EvaluationConfig
from tftmon.contract import (
    HORIZON,
    HORIZONS,
    METRIC,
    PROFILE,
    QUANTILE_NAMES,
    QUANTILES,
    SERVER_NAME,
    STEP,
    TIMESTAMP,
)
from tftmon.evaluation.actuals import Actuals
from tftmon.evaluation.baselines import BASELINES

MODEL = "model"
SEEN = "seen"
P50 = QUANTILE_NAMES[len(QUANTILE_NAMES) // 2]


def pinball(y: np.ndarray, pred: np.ndarray, q: float) -> np.ndarray:
    """Quantile (pinball) loss of one quantile: q·(y − ŷ) above, (1 − q)·(ŷ − y) below."""
    diff = y - pred
    return np.maximum(q * diff, (q - 1) * diff)


def seasonal_scale(
    actuals: pd.DataFrame, holdout_start: pd.Timestamp | str, config: EvaluationConfig | None = None
) -> pd.DataFrame:
    """MASE denominators: in-sample MAE of the seasonal-naive forecast |y_t − y_{t−period}| per
    server × metric over the training part (timestamps before `holdout_start`), period =
    `config.seasonal_steps`.

    A negligible scale (below `config.negligible_scale` × the metric's median over the fleet: a nearly
    flat series, e.g. swap that moved once by a hundredth of a point) or a missing one (a server unseen in
    training) is replaced by that metric's median over the other servers of the same profile, else over
    the fleet.
    Dividing by a nearly flat series' own scale would let one of its jumps decide the mean over every
    metric. If the metric is flat everywhere the scale stays NaN and those rows drop out of MASE.
    Returns columns server_name, profile, metric, scale.
    """
    cfg = config or EvaluationConfig()
    period = cfg.seasonal_steps
    act = Actuals(actuals)
    train = actuals[actuals[TIMESTAMP] < pd.Timestamp(holdout_start)]
    code = act.code_of(train[SERVER_NAME])
    tidx = act.index_of(train[TIMESTAMP])
    metrics = list(act.metrics)
    y = train[metrics].to_numpy(dtype=float)
    err = np.abs(y - act.get(code, tidx - period))
    wide = pd.DataFrame(err, columns=metrics).groupby(code).mean()
    # Float noise on an exactly periodic series is not a scale: below 1e-9 of the level counts as zero.
    level = pd.DataFrame(np.abs(y), columns=metrics).groupby(code).mean()
    wide = wide.where(wide > 1e-9 * np.maximum(level, 1.0), 0.0)
    wide = wide.reindex(np.arange(len(act.servers)))
    wide.index = act.servers
    long = wide.rename_axis(SERVER_NAME).melt(ignore_index=False, var_name=METRIC, value_name="scale").reset_index()
    long[PROFILE] = act.profiles[act.code_of(long[SERVER_NAME])]
    return _fill_scale(long, cfg.negligible_scale)


def _fill_scale(scale: pd.DataFrame, negligible: float) -> pd.DataFrame:
    positive = scale["scale"].where(scale["scale"] > 0)
    fleet = positive.groupby(scale[METRIC]).transform("median")
    positive = positive.where(positive >= negligible * fleet)
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
    act = Actuals(actuals)
    metric = act.metric_codes(rows[METRIC])
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
    scale = seasonal_scale(actuals, holdout_start, cfg)
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


def ratio_to_peer(table: pd.DataFrame, model: str, peer: str) -> pd.DataFrame:
    """Per horizon: the model's p50 MASE and mean pinball (`quantile_loss`) over the peer's, as geometric
    means of the per-metric ratios (pinball is in each metric's units, so only ratios average), and on how
    many metrics the model is better (< 1 = model better)."""
    wide = table[table[MODEL].isin([model, peer])].pivot_table(
        index=[HORIZON, METRIC], columns=MODEL, values=["mase", "quantile_loss"], aggfunc="mean"
    )
    rows = []
    for horizon, part in wide.groupby(level=0, sort=False):
        row: dict[str, object] = {HORIZON: horizon}
        for value in ("mase", "quantile_loss"):
            ratio = (part[(value, model)] / part[(value, peer)]).replace([np.inf, 0.0], np.nan).dropna()
            row[f"{value}_ratio"] = float(np.exp(np.log(ratio).mean())) if len(ratio) else float("nan")
            row[f"{value}_better"] = f"{int((ratio < 1).sum())}/{len(ratio)}"
        rows.append(row)
    return _order(pd.DataFrame(rows).assign(**{MODEL: model}))[
        [HORIZON, "mase_ratio", "mase_better", "quantile_loss_ratio", "quantile_loss_better"]
    ]

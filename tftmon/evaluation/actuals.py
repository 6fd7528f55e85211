"""Actual metrics looked up in bulk by (server, model step), and the forecast origins they allow."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from tftmon.contract import (
    MODEL_STEP,
    ORIGIN,
    PREDICTION_STEPS,
    PROFILE,
    SERVER_NAME,
    TIMESTAMP,
    present_metrics,
    to_utc,
)


class Actuals:
    """Actual metrics keyed by (server, integer step since the first timestamp), looked up in bulk.

    A sorted key array and searchsorted instead of a dense server×time grid: the fleet may hold servers
    with very different spans, and missing bins must stay missing (NaN), never be filled. The metric axis
    holds the metrics the frame has (`metrics`, contract order): real telemetry carries a subset.
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
        self.metrics = present_metrics(actuals.columns)
        self.values = actuals[list(self.metrics)].to_numpy(dtype=float)[order]
        self.profiles = actuals.groupby(SERVER_NAME)[PROFILE].first().reindex(self.servers).to_numpy()

    def index_of(self, timestamps: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        delta = (pd.DatetimeIndex(timestamps) - self.t0) / pd.Timedelta(MODEL_STEP)
        return np.round(np.asarray(delta, dtype=float)).astype(np.int64)

    def metric_codes(self, metrics: pd.Series) -> np.ndarray:
        """Position of each metric on the metric axis; -1 where the actuals do not have it."""
        return np.asarray(pd.Categorical(metrics, categories=self.metrics).codes)

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


def origins(frame: pd.DataFrame, holdout_start: pd.Timestamp | str, every: timedelta | str = "1h") -> pd.DataFrame:
    """Forecast origins in the held-out period: per server, every `every` from `holdout_start` on, where
    the origin bin itself and all PREDICTION_STEPS future bins are observed (so every horizon is scored
    on the same origins). Returns columns server_name, profile, origin.
    """
    start = to_utc(holdout_start)
    every_steps = int(pd.Timedelta(every) / pd.Timedelta(MODEL_STEP))
    if every_steps < 1:
        raise ValueError(f"origin spacing {every} is shorter than the model step {MODEL_STEP}")
    act = Actuals(frame)
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

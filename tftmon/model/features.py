"""The one feature path shared by training and serving: resample, add time features, build datasets.

The predecessor built features twice (training and inference) and they drifted; here both call
`prepare_frame` and `build_dataset`, and inference only adds future rows (`inference_frame`) so the
model forecasts the steps *after* the last observation instead of re-predicting a window it has seen.

Gaps: resampling leaves bins with no raw samples missing (no row is invented). The datasets allow
missing time steps, so pytorch-forecasting repeats the last observation across a gap inside a window;
`time_idx` is derived from the timestamp, so a gap stays a gap and is never silently closed up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import torch
from pytorch_forecasting import TimeSeriesDataSet
from pytorch_forecasting.data.encoders import EncoderNormalizer, MultiNormalizer, NaNLabelEncoder
from sklearn.preprocessing import StandardScaler

from tftmon.contract import (
    METRICS,
    MIN_RAW_INTERVAL,
    MODEL_STEP,
    PREDICTION_STEPS,
    PROFILE,
    PROFILE_NAMES,
    SERVER_ID,
    SERVER_NAME,
    STEP_NS,
    TIMESTAMP,
    present_metrics,
    profile_of,
    steps,
    to_utc,
)
from tftmon.data.resample import resample_to_model_step
from tftmon.encoding import server_id

TIME_IDX = "time_idx"
GROUP_ID_ENCODER = f"__group_id__{SERVER_ID}"
#: Known-in-advance covariates, all derived from the timestamp (cyclical encodings keep 23:55 next to 00:00).
KNOWN_REALS: tuple[str, ...] = ("hour_sin", "hour_cos", "dow_sin", "dow_cos", "is_weekend")
#: Target value in appended future rows; the model never reads it (a test proves outputs ignore it).
FUTURE_PLACEHOLDER = 0.0
_SEASONAL_COLUMN = re.compile(r"^(?P<target>.+)_(?P<hours>\d+)h_ago$")


class InsufficientHistory(ValueError):
    """A server has less history than the model's encoder needs."""


class SamplesTooFrequent(ValueError):
    """A server's samples come faster than the contract's minimum raw interval."""


class ArrayScaler(StandardScaler, auto_wrap_output_keys=None):  # type: ignore[call-arg]  # sklearn's __init_subclass__
    """StandardScaler that ignores column names.

    pytorch-forecasting fits and transforms scalers with DataFrames but transforms single samples with
    arrays; a plain StandardScaler then warns on every sample drawn. Outputs are always arrays, so
    sklearn's set_output wrapper (a cost on every per-sample call) is left off.
    """

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> ArrayScaler:
        return super().fit(np.asarray(X, dtype=np.float64), y, sample_weight)

    def transform(self, X: Any, copy: bool | None = None) -> np.ndarray:
        """sklearn's arithmetic without its per-call input validation (~0.5 ms): pytorch-forecasting
        transforms every sample's target centre/scale one by one, which made validation most of the
        cost of batching. Inputs sklearn would refuse (shape, infinities) still go through sklearn."""
        X = np.array(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_ or np.isinf(X).any():
            return super().transform(X, copy=copy)
        if self.with_mean:
            X -= self.mean_
        if self.with_std:
            X /= self.scale_
        return X

    def inverse_transform(self, X: Any, copy: bool | None = None) -> np.ndarray:
        return super().inverse_transform(np.asarray(X, dtype=np.float64), copy=copy)


# ---------------------------------------------------------------------------------------------
# Model frame
# ---------------------------------------------------------------------------------------------


def time_idx_of(ts: pd.Series) -> np.ndarray:
    """Model steps since the epoch: a function of the timestamp, never a row counter."""
    return to_utc(ts).to_numpy(dtype="datetime64[ns]").view("int64") // STEP_NS


def add_time_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Add `time_idx` and the known covariates, all computed from `timestamp` alone.

    Hour, minute and weekday come from integer nanoseconds (the values the `.dt` accessors give, at a
    tenth of their cost on a serving request); the new columns join the frame in one concat.
    """
    ns = to_utc(frame[TIMESTAMP]).to_numpy(dtype="datetime64[ns]").view(np.int64)
    minutes = ns // 60_000_000_000
    day = minutes // (24 * 60)
    hour = (minutes // 60 - day * 24) + (minutes % 60) / 60.0
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0, as pandas counts
    dow = weekday + hour / 24.0
    known = {
        TIME_IDX: ns // STEP_NS,
        "hour_sin": np.sin(2 * np.pi * hour / 24.0),
        "hour_cos": np.cos(2 * np.pi * hour / 24.0),
        "dow_sin": np.sin(2 * np.pi * dow / 7.0),
        "dow_cos": np.cos(2 * np.pi * dow / 7.0),
        "is_weekend": (weekday >= 5).astype(np.float64),
    }
    kept = frame.drop(columns=[c for c in known if c in frame.columns])
    return pd.concat([kept, pd.DataFrame(known, index=frame.index)], axis=1)


def resolve_targets(targets: Sequence[str] | None, columns: Iterable[str] = METRICS) -> list[str]:
    """The metrics the data has (`columns`) by default, or a validated subset in contract order."""
    if targets is None:
        present = list(present_metrics(columns))
        if not present:
            raise ValueError(f"the data has no contract metric to forecast; name its columns as {list(METRICS)}")
        return present
    unknown = [t for t in targets if t not in METRICS]
    if unknown or not targets:
        raise ValueError(f"targets {unknown or '[]'} are not contract metrics; choose from {list(METRICS)}")
    return [m for m in METRICS if m in targets]


def seasonal_column(target: str, hours: int) -> str:
    """The known-future input holding `target`'s value `hours` before each step."""
    return f"{target}_{hours}h_ago"


def seasonal_columns(targets: Sequence[str], lag_hours: Sequence[int]) -> list[str]:
    return [seasonal_column(target, hours) for hours in lag_hours for target in targets]


def seasonal_target(column: str, targets: Sequence[str]) -> str | None:
    """The target whose past a seasonal column carries; None for any other column."""
    match = _SEASONAL_COLUMN.match(column)
    return match["target"] if match and match["target"] in targets else None


def add_seasonal_lags(
    rows: pd.DataFrame, source: pd.DataFrame, targets: Sequence[str], lag_hours: Sequence[int]
) -> pd.DataFrame:
    """`rows` with each target's value `lag` before every row, read from `source` (a `prepare_frame`: sorted by
    server, then time) as gaps carry forward (the last bin at or before that moment); NaN where the server's
    history does not reach back that far. One binary search over (server, time) keys per lag."""
    if not lag_hours:
        return rows
    source_codes, servers = pd.factorize(source[SERVER_ID])
    row_codes = pd.Index(servers).get_indexer(rows[SERVER_ID])
    source_time, row_time = source[TIME_IDX].to_numpy(), rows[TIME_IDX].to_numpy()
    lags = [steps(timedelta(hours=hours)) for hours in lag_hours]
    base = min(int(source_time.min()), int(row_time.min()) - max(lags))
    width = max(int(source_time.max()), int(row_time.max())) - base + 1
    keys = source_codes * width + (source_time - base)
    columns: dict[str, np.ndarray] = {}
    for hours, lag in zip(lag_hours, lags, strict=True):
        at = np.searchsorted(keys, row_codes * width + (row_time - lag - base), side="right") - 1
        found = (row_codes >= 0) & (at >= 0) & (source_codes[np.maximum(at, 0)] == row_codes)
        for target in targets:
            values = source[target].to_numpy(dtype=np.float64)[np.maximum(at, 0)]
            columns[seasonal_column(target, hours)] = np.where(found, values, np.nan)
    kept = rows.drop(columns=[c for c in columns if c in rows.columns])
    return pd.concat([kept, pd.DataFrame(columns, index=rows.index)], axis=1)


def seasonal_training_frame(frame: pd.DataFrame, targets: Sequence[str], lag_hours: Sequence[int]) -> pd.DataFrame:
    """A `prepare_frame` with its seasonal lags, less each server's first rows, whose lags reach before its
    history (carried forward, nothing else is missing)."""
    if not lag_hours:
        return frame
    lagged = add_seasonal_lags(frame, frame, targets, lag_hours)
    return lagged.dropna(subset=seasonal_columns(targets, lag_hours)).reset_index(drop=True)


def prepare_frame(df: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """Contract-shaped metrics (any interval) -> the model frame: step bins, ids, profile, time features.

    Missing target values are carried forward within a server; rows still missing (a server's leading
    NaNs) are dropped. `state`, if present, is kept for evaluation but is never a model input. The server
    id is always derived from the name (a given `server_id` column is not trusted: two names sharing one
    would merge two servers into one series).
    """
    missing = [t for t in targets if t not in df.columns]
    if missing:
        raise ValueError(f"metrics {missing} are missing from the data; train on a subset with --targets")
    frame = resample_to_model_step(df)
    codes, names = pd.factorize(frame[SERVER_NAME].astype(str))  # id and profile once per server, not per row
    frame[SERVER_ID] = pd.array([server_id(n) for n in names], dtype="str").take(codes)
    inferred = pd.Series(pd.array([profile_of(n) for n in names], dtype="str").take(codes), index=frame.index)
    frame[PROFILE] = (frame[PROFILE].fillna(inferred) if PROFILE in frame.columns else inferred).astype(str)
    frame = frame.sort_values([SERVER_ID, TIMESTAMP], kind="stable").reset_index(drop=True)
    values = frame[list(targets)].astype(np.float64)
    if values.isna().to_numpy().any():  # history at the model step usually has no gap to carry over
        frame[list(targets)] = values.groupby(frame[SERVER_ID], sort=False).ffill()
        frame = frame.dropna(subset=list(targets)).reset_index(drop=True)
    else:
        frame[list(targets)] = values
    return add_time_features(frame)


def training_dataset(
    frame: pd.DataFrame,
    targets: Sequence[str],
    encoder_steps: int,
    prediction_steps: int = PREDICTION_STEPS,
    lag_hours: Sequence[int] = (),
) -> TimeSeriesDataSet:
    """The training dataset whose fitted parameters every later dataset (validation, serving) reuses.

    Targets are normalised per window by EncoderNormalizer (no per-server statistics, so servers never
    seen in training work); the batches training and serving build may centre them on the recent level
    instead (`center_steps`); target centre/scale go in as static reals so the level is not lost.
    `server_id` is the group id only; `profile` is the only static categorical, pre-fitted on every
    contract profile so the encoder does not depend on which profiles a training set happens to hold.
    Seasonal lags (`seasonal_training_frame`) are known reals left unscaled here: each batch standardises them
    with their target's window scale (`_batch`), so yesterday is read relative to now.
    """
    targets = list(targets)
    seasonal = seasonal_columns(targets, lag_hours)
    # One target is pytorch-forecasting's single-target dataset: its TFT cannot take a list of one.
    return TimeSeriesDataSet(
        frame,
        time_idx=TIME_IDX,
        target=targets if len(targets) > 1 else targets[0],
        group_ids=[SERVER_ID],
        max_encoder_length=encoder_steps,
        min_encoder_length=encoder_steps,
        max_prediction_length=prediction_steps,
        min_prediction_length=prediction_steps,
        static_categoricals=[PROFILE],
        time_varying_known_reals=[*KNOWN_REALS, *seasonal],
        time_varying_unknown_reals=targets,
        target_normalizer=MultiNormalizer([EncoderNormalizer() for _ in targets])
        if len(targets) > 1
        else EncoderNormalizer(),
        categorical_encoders={
            PROFILE: NaNLabelEncoder(add_nan=True).fit(pd.Series(PROFILE_NAMES)),
            SERVER_ID: NaNLabelEncoder(add_nan=True),
            GROUP_ID_ENCODER: NaNLabelEncoder(add_nan=True),
        },
        scalers={**{name: ArrayScaler() for name in _scaled_reals(targets)}, **dict.fromkeys(seasonal)},
        add_relative_time_idx=True,
        add_target_scales=True,
        add_encoder_length=False,
        allow_missing_timesteps=True,
    )


def _scaled_reals(targets: Sequence[str]) -> list[str]:
    """Every real input the dataset standardises: known covariates, relative time, target centre/scale."""
    return [*KNOWN_REALS, "relative_time_idx", *(f"{t}_{s}" for t in targets for s in ("center", "scale"))]


def build_dataset(
    parameters: dict[str, Any], frame: pd.DataFrame, predict: bool, **overrides: Any
) -> TimeSeriesDataSet:
    """Any dataset after training (validation, serving) from the stored training parameters.

    Forecasting starts wherever the frame ends, not after the training data's first prediction.
    """
    if predict:
        overrides.setdefault("min_prediction_idx", None)
    return TimeSeriesDataSet.from_parameters(parameters, frame, predict=predict, stop_randomization=True, **overrides)


def check_interval(history: pd.DataFrame) -> None:
    """Refuse servers whose samples come faster (median gap) than the contract's minimum raw interval.

    The contract sizes everything downstream (request limits, live windows) on that bound; denser data
    is a misconfigured agent or duplicated rows, not a finer signal. Repeated timestamps count once.
    """
    codes, names = pd.factorize(history[SERVER_NAME])
    ts = to_utc(history[TIMESTAMP]).to_numpy(dtype="datetime64[ns]").view(np.int64)
    order = np.lexsort((ts, codes))
    codes, ts = codes[order], ts[order]
    gaps = np.diff(ts)
    distinct = (codes[1:] == codes[:-1]) & (gaps > 0)
    if not distinct.any():
        return
    median = pd.Series(gaps[distinct]).groupby(codes[1:][distinct]).median()
    minimum = MIN_RAW_INTERVAL.total_seconds()
    fast = median[median < minimum * 1e9]
    if len(fast):
        head = fast.head(5)
        pairs = zip(head.index.tolist(), head.tolist(), strict=True)
        detail = ", ".join(f"{names[code]} every {gap / 1e9:g} s" for code, gap in pairs)
        raise SamplesTooFrequent(f"samples come faster than the minimum interval of {minimum:g} s: {detail}")


def encoder_span(history: pd.DataFrame, encoder_steps: int) -> pd.DataFrame:
    """Only the rows a forecast reads, so feature work scales with the encoder, not with what was sent.

    Per server: from the last model-step bin at or before its encoder window's first bin (the bin the
    window carries forward from) to the end, whole bins only. The forecast is the one the full history
    gives: each kept bin aggregates the same samples, every server keeps its earliest row's profile (as
    resampling takes it), and a server too short for the window keeps all its rows, so inference_frame
    refuses it as before.
    """
    ts = to_utc(history[TIMESTAMP]).to_numpy(dtype="datetime64[ns]").view(np.int64)
    bins = ts // STEP_NS
    codes = pd.factorize(history[SERVER_NAME])[0]
    start = pd.Series(bins).groupby(codes).transform("max").to_numpy() - encoder_steps + 1
    anchor = pd.Series(np.where(bins <= start, bins, np.iinfo(np.int64).min)).groupby(codes).transform("max")
    keep = bins >= anchor.to_numpy()
    if keep.all():
        return history
    span = history.loc[keep]
    if PROFILE in history.columns:
        order = np.lexsort((ts, codes))
        earliest = order[np.unique(codes[order], return_index=True)[1]]
        span = span.assign(**{PROFILE: history[PROFILE].to_numpy(dtype=object)[earliest][codes][keep]})
    return span.reset_index(drop=True)


def inference_frame(
    history: pd.DataFrame, targets: Sequence[str], encoder_steps: int, lag_hours: Sequence[int] = ()
) -> pd.DataFrame:
    """History -> per server, its last `encoder_steps` bins on a complete grid, then PREDICTION_STEPS
    future rows (known covariates filled, seasonal lags read from the history, targets FUTURE_PLACEHOLDER).

    Reads only the span of the history the encoder and its longest lag reach. Raises InsufficientHistory
    naming every server whose history spans fewer steps than that.
    """
    lag_steps = max((steps(timedelta(hours=hours)) for hours in lag_hours), default=0)
    need = encoder_steps + lag_steps
    frame = prepare_frame(encoder_span(history, need), targets)
    if frame.empty:
        raise InsufficientHistory("no history: every row lacks a value for some target metric")
    ids = frame[SERVER_ID].to_numpy()
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])  # prepare_frame sorts by server, then time
    last = np.r_[first[1:], len(frame)] - 1
    time_idx = frame[TIME_IDX].to_numpy()
    span = time_idx[last] - time_idx[first] + 1
    short = span < need
    if short.any():
        names = frame[SERVER_NAME].to_numpy()[first][short]
        detail = ", ".join(f"{name} has {n} steps" for name, n in zip(names, span[short], strict=True))
        hours = MODEL_STEP.total_seconds() / 3600
        reach = f": {encoder_steps * hours:g} h of encoder, {max(lag_hours)} h before it" if lag_hours else ""
        raise InsufficientHistory(
            f"too little history: {detail}; the model needs {need} steps of {MODEL_STEP} "
            f"({need * hours:g} h{reach}) per server"
        )
    grid = _forecast_grid(frame, targets, first, last, encoder_steps)
    return add_seasonal_lags(grid, frame, targets, lag_hours)


def _forecast_grid(
    frame: pd.DataFrame, targets: Sequence[str], first: np.ndarray, last: np.ndarray, encoder_steps: int
) -> pd.DataFrame:
    """Each server's window on a complete grid: a missing bin takes the server's last bin before it.

    That is the carry-forward the training dataset applies across gaps; without the grid, a gap at the
    window's first bin would shorten the encoder and the dataset would silently drop the server. One
    binary search over (server, time) keys finds every bin's source row.
    """
    n, length = len(first), encoder_steps + PREDICTION_STEPS
    time_idx = frame[TIME_IDX].to_numpy()
    grid = time_idx[last][:, None] + np.arange(1 - encoder_steps, PREDICTION_STEPS + 1)
    base = time_idx.min()
    width = time_idx.max() - base + 1
    keys = np.repeat(np.arange(n), last - first + 1) * width + (time_idx - base)
    wanted = np.arange(n)[:, None] * width + (grid[:, :encoder_steps] - base)
    source = np.searchsorted(keys, wanted.ravel(), side="right") - 1
    # Object, not Arrow, strings: the dataset's label encoders iterate them element by element.
    columns: dict[str, Any] = {
        column: pd.Series(np.repeat(frame[column].to_numpy(dtype=object)[last], length), dtype=object)
        for column in (SERVER_NAME, SERVER_ID, PROFILE)
    }
    columns[TIMESTAMP] = pd.to_datetime(grid.ravel() * STEP_NS, unit="ns", utc=True)
    for target in targets:
        values = np.full((n, length), FUTURE_PLACEHOLDER)
        values[:, :encoder_steps] = frame[target].to_numpy(dtype=np.float64)[source].reshape(n, encoder_steps)
        columns[target] = values.ravel()
    return add_time_features(pd.DataFrame(columns))


def window_batch(
    dataset: TimeSeriesDataSet, windows: np.ndarray | None = None, center_steps: int | None = None
) -> dict[str, Any]:
    """Windows of a dataset (positions in its index; all by default) as one batch of network input.

    The tensors `dataset.to_dataloader` yields (pytorch-forecasting's per-sample `__getitem__`, then
    `_collate_fn`; tests compare them), built from the dataset's own encoded data with its fitted scalers
    and target normalisers in whole-tensor operations, without the per-sample Python (about 7 ms a window)
    that was most of a forecast's time and half of a training step's. Serving batches every window;
    training draws batches of positions. A step missing inside a window repeats the row before it, as
    `__getitem__` fills gaps. `center_steps`: see `_window_scale` (None: exactly pytorch-forecasting's).
    """
    _check_batchable(dataset)
    index = dataset.index if windows is None else dataset.index.iloc[windows]
    rows = _window_rows(dataset, index, dataset.max_encoder_length + dataset.max_prediction_length)
    layout = _Layout(
        reals=dataset.reals,
        multi_target=dataset.multi_target,
        target_names=dataset.target_names,
        target_normalizers=dataset.target_normalizers,
        scale_real=dataset.transform_values,
        add_relative_time_idx=dataset.add_relative_time_idx,
        add_target_scales=dataset.add_target_scales,
        encoder=dataset.max_encoder_length,
        decoder=dataset.max_prediction_length,
    )
    return _batch(layout, dataset.data, rows, center_steps)


def inference_inputs(
    parameters: dict[str, Any], frame: pd.DataFrame, center_steps: int | None = None
) -> tuple[dict[str, Any], np.ndarray]:
    """The network batch `window_batch(build_dataset(parameters, frame, predict=True))` gives, and each
    window's server id, for an `inference_frame` (complete windows, sorted by server then time).

    `from_parameters` preprocesses row by row in Python (label lookups, index construction), which cost
    more than the network for large fleets; here each server's labels are encoded once and the known
    covariates scaled as whole columns, by the same fitted encoders and scalers. Windows come in the
    dataset's order (by group code: a server unseen in training gets the code pytorch-forecasting's
    encoder appends for it).
    """
    layout = _Layout.from_parameters(parameters)
    length = layout.encoder + layout.decoder
    firsts = np.arange(0, len(frame), length)
    ids = frame[SERVER_ID].to_numpy(dtype=object)
    if len(frame) % length or (ids[firsts][:, None] != ids.reshape(-1, length)).any():
        raise ValueError("inference_inputs takes an inference_frame: whole windows of one server each")
    servers = ids[firsts]
    if (servers[1:] <= servers[:-1]).any():
        raise ValueError("inference_inputs takes an inference_frame: servers sorted by id, each once")
    encoders = parameters["categorical_encoders"]
    # Fitted on a copy, as from_parameters extends the group encoder without touching the stored one.
    codes = np.asarray(deepcopy(encoders[GROUP_ID_ENCODER]).fit(servers, overwrite=False).transform(servers))
    order = np.argsort(codes, kind="stable")
    n_rows = len(frame)
    reals = np.zeros((n_rows, len(layout.reals)))
    for k, name in enumerate(layout.reals):
        if name not in layout.set_per_window:
            reals[:, k] = layout.scale_real(name, frame[name])
    categoricals = np.zeros((n_rows, len(layout.categoricals)), dtype=np.int64)
    for k, name in enumerate(layout.categoricals):
        labels, uniques = pd.factorize(frame[name], use_na_sentinel=False)
        categoricals[:, k] = np.asarray(encoders[name].transform(np.asarray(uniques, dtype=object)))[labels]
    data = {
        "reals": torch.tensor(reals, dtype=torch.float),
        "categoricals": torch.tensor(categoricals, dtype=torch.int64),
        "target": [torch.tensor(frame[t].to_numpy(np.float64), dtype=torch.float) for t in layout.target_names],
        "time": torch.tensor(frame[TIME_IDX].to_numpy(np.int64), dtype=torch.int64),
        "groups": torch.tensor(np.repeat(codes, length)[:, None].astype(np.int64), dtype=torch.int64),
    }
    rows = torch.as_tensor(firsts[order])[:, None] + torch.arange(length)
    return _batch(layout, data, rows, center_steps), servers[order]


@dataclass(frozen=True)
class _Layout:
    """What batching reads from a dataset besides its tensors: the inputs' order, normalisers, lengths."""

    reals: list[str]
    #: Whether targets travel as lists (several) or as single tensors (one), as the network expects.
    multi_target: bool
    target_names: list[str]
    target_normalizers: list[Any]
    scale_real: Callable[[str, Any], np.ndarray]
    add_relative_time_idx: bool
    add_target_scales: bool
    encoder: int
    decoder: int
    categoricals: list[str] = field(default_factory=list)

    @property
    def seasonal(self) -> dict[str, str]:
        """Each seasonal lag's column and the target whose window scale standardises it."""
        found = {name: seasonal_target(name, self.target_names) for name in self.reals}
        return {name: target for name, target in found.items() if target is not None}

    @property
    def set_per_window(self) -> set[str]:
        """Reals every window overwrites, so their per-row values never reach the network."""
        scales = [f"{t}_{s}" for t in self.target_names for s in ("center", "scale")] if self.add_target_scales else []
        return {*self.target_names, *scales, *(["relative_time_idx"] if self.add_relative_time_idx else [])}

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> _Layout:
        """The layout `TimeSeriesDataSet.from_parameters` would give, refusing what batching does not mirror."""
        normalizer = parameters["target_normalizer"]
        target = parameters["target"]
        scalers = parameters["scalers"]

        def scale_real(name: str, values: Any) -> np.ndarray:
            scaler = scalers.get(name)
            frame = values.to_frame() if isinstance(values, pd.Series) else np.asarray(values).reshape(-1, 1)
            return values if scaler is None else np.asarray(scaler.transform(frame)).reshape(-1)

        names = list(target) if isinstance(target, list | tuple) else [target]
        static, known, unknown = (
            list(parameters[k] or [])
            for k in ("static_reals", "time_varying_known_reals", "time_varying_unknown_reals")
        )
        # The inputs TimeSeriesDataSet appends: target centre/scale to the static reals (in preprocessing),
        # relative time to the known reals.
        if parameters["add_target_scales"]:
            static += [f"{t}_{s}" for t in names for s in ("center", "scale") if f"{t}_{s}" not in static]
        if parameters["add_relative_time_idx"] and "relative_time_idx" not in known:
            known.append("relative_time_idx")
        layout = cls(
            reals=[*static, *known, *unknown],
            multi_target=isinstance(target, list | tuple),
            target_names=names,
            target_normalizers=normalizer.normalizers if isinstance(normalizer, MultiNormalizer) else [normalizer],
            scale_real=scale_real,
            add_relative_time_idx=parameters["add_relative_time_idx"],
            add_target_scales=parameters["add_target_scales"],
            encoder=parameters["max_encoder_length"],
            decoder=parameters["max_prediction_length"],
            categoricals=[
                name
                for key in (
                    "static_categoricals",
                    "time_varying_known_categoricals",
                    "time_varying_unknown_categoricals",
                )
                for name in parameters[key] or []
            ],
        )
        _refuse_unsupported(
            {
                "shorter windows": parameters["min_encoder_length"] != layout.encoder
                or parameters["min_prediction_length"] != layout.decoder,
                "lags": bool(parameters["lags"]),
                "weights": parameters["weight"] is not None,
                "encoder length as input": parameters["add_encoder_length"],
                "variable groups": bool(parameters["variable_groups"]),
                "targets not standardised per window": not _standardised_per_window(layout.target_normalizers),
                "covariates not scaled by fitted scalers": any(
                    not isinstance(scalers.get(name), StandardScaler | None)
                    for name in layout.reals
                    if name not in layout.set_per_window
                ),
            }
        )
        return layout


def _batch(layout: _Layout, data: dict[str, Any], rows: torch.Tensor, center_steps: int | None) -> dict[str, Any]:
    """The network batch for windows given as data rows [window, step]: one implementation for both paths."""
    encoder, decoder, reals = layout.encoder, layout.decoder, layout.reals
    starts = rows[:, 0]
    cont = data["reals"][rows]
    cat = data["categoricals"][rows]
    targets = [target[rows] for target in data["target"]]
    if layout.add_relative_time_idx:
        relative = torch.arange(-encoder, decoder, dtype=cont.dtype) / encoder
        cont[..., reals.index("relative_time_idx")] = relative
    target_scale = []
    for name, normalizer, target in zip(layout.target_names, layout.target_normalizers, targets, strict=True):
        scale = _window_scale(target[:, :encoder], center_steps)
        if name in reals:
            cont[..., reals.index(name)] = normalizer.transform(target, target_scale=scale)
        if layout.add_target_scales:
            for k, part in enumerate(("center", "scale")):
                scaled = layout.scale_real(f"{name}_{part}", scale[:, k].numpy())
                cont[..., reals.index(f"{name}_{part}")] = torch.as_tensor(scaled, dtype=cont.dtype)[:, None]
        target_scale.append(scale)
    for column, target in layout.seasonal.items():  # raw values in the data: read relative to this window
        k, normalizer = reals.index(column), layout.target_normalizers[layout.target_names.index(target)]
        cont[..., k] = normalizer.transform(cont[..., k], target_scale=target_scale[layout.target_names.index(target)])
    lengths = torch.full((len(starts),), encoder, dtype=torch.long)

    def shaped(per_target: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        """A list per target, or the one tensor of a single-target dataset (as its loader collates it)."""
        return per_target if layout.multi_target else per_target[0]

    return {
        "encoder_cat": cat[:, :encoder],
        "encoder_cont": cont[:, :encoder],
        "encoder_target": shaped([target[:, :encoder] for target in targets]),
        "encoder_lengths": lengths,
        "decoder_cat": cat[:, encoder:],
        "decoder_cont": cont[:, encoder:],
        "decoder_target": shaped([target[:, encoder:] for target in targets]),
        "decoder_lengths": torch.full_like(lengths, decoder),
        "decoder_time_idx": (data["time"][starts] + encoder)[:, None] + torch.arange(decoder),
        "groups": data["groups"][starts],
        "target_scale": shaped(target_scale),
    }


def per_target(output: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    """A network output as one tensor per target, whether the network has several targets or one."""
    return list(output) if isinstance(output, list | tuple) else [output]


def _window_rows(dataset: TimeSeriesDataSet, index: pd.DataFrame, length: int) -> torch.Tensor:
    """Each window's data row at every step: the last row at or before it, so a gap repeats the row
    before it. One binary search over (series, time) keys; the data is sorted by group, then time."""
    starts = torch.as_tensor(index["index_start"].to_numpy(dtype=np.int64))
    whole = index["index_end"].to_numpy() - index["index_start"].to_numpy() + 1 == length
    if whole.all():
        return starts[:, None] + torch.arange(length)
    time, groups = dataset.data["time"].to(torch.int64), dataset.data["groups"]
    series = torch.cumsum(torch.cat([torch.zeros(1), (groups[1:] != groups[:-1]).any(dim=1)]), 0).to(torch.int64)
    width = int(time.max() - time.min()) + length + 1
    keys = series * width + (time - time.min())
    wanted = keys[starts][:, None] + torch.arange(length)
    return torch.searchsorted(keys, wanted, right=True) - 1


def _window_scale(encoder_target: torch.Tensor, center_steps: int | None = None) -> torch.Tensor:
    """Each window's (centre, scale), exactly as EncoderNormalizer("standard") fits one window at a time;
    with `center_steps`, centred on the mean of the window's last that many steps instead (the scale stays
    the whole window's): the network's zero is then the recent level, not the encoder's mean, so holding
    or extending a ramp is what it learns first (NetworkConfig.center_steps).

    Its fit on a whole batch is not bit-identical: torch reduces one window as a full reduction (float32
    mean, then the squared deviations summed in float64, in order), which gives a constant window a
    rounding-sized spread where the batched reduction gives zero, and a constant window's normalised
    values depend on it. The network was trained on the one-window numbers, so they are reproduced here.
    """
    center = encoder_target.mean(dim=-1)
    deviation = encoder_target.double() - center.double()[:, None]
    squares = torch.cumsum(deviation * deviation, dim=-1)[:, -1]
    std = torch.sqrt(squares / (encoder_target.shape[-1] - 1)).to(encoder_target.dtype)
    if center_steps is not None:
        center = encoder_target[:, -center_steps:].mean(dim=-1)
    return torch.stack([center, std + torch.finfo(encoder_target.dtype).eps], dim=-1)


def _check_batchable(dataset: TimeSeriesDataSet) -> None:
    """window_batch mirrors what training_dataset configures; anything else must not pass silently."""
    length = dataset.max_encoder_length + dataset.max_prediction_length
    _refuse_unsupported(
        {
            "windows shorter than encoder + prediction": not (dataset.index["sequence_length"] == length).all(),
            "length randomisation": dataset.randomize_length is not None,
            "lags": bool(dataset.lagged_variables),
            "weights": dataset.data["weight"] is not None,
            "encoder length as input": dataset.add_encoder_length,
            "targets not standardised per window": not _standardised_per_window(dataset.target_normalizers),
            "covariates normalised per window": any(
                isinstance(dataset.get_transformer(name), EncoderNormalizer)
                for name in dataset.reals
                if name not in dataset.target_names
            ),
        }
    )


def _standardised_per_window(normalizers: Sequence[Any]) -> bool:
    return all(
        isinstance(n, EncoderNormalizer)
        and (n.method, n.center, n.transformation, n.max_length) == ("standard", True, None, None)
        for n in normalizers
    )


def _refuse_unsupported(unsupported: dict[str, bool]) -> None:
    found = [what for what, present in unsupported.items() if present]
    if found:
        raise ValueError(f"window_batch does not build datasets with {', '.join(found)}; use to_dataloader")


# ---------------------------------------------------------------------------------------------
# Dataset parameters as JSON (no pickle): the fitted encoders are written out field by field
# ---------------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, NaNLabelEncoder):
        classes = getattr(value, "classes_", None)
        return {
            "__type__": "NaNLabelEncoder",
            "add_nan": value.add_nan,
            "warn": value.warn,
            "classes": None if classes is None else [[_scalar(k), int(v)] for k, v in classes.items()],
        }
    if isinstance(value, ArrayScaler):
        return {
            "__type__": "ArrayScaler",
            "with_mean": value.with_mean,
            "with_std": value.with_std,
            "mean": value.mean_.tolist(),
            "scale": value.scale_.tolist(),
            "var": value.var_.tolist(),
            "n_samples_seen": int(value.n_samples_seen_),
        }
    if isinstance(value, MultiNormalizer):
        return {"__type__": "MultiNormalizer", "normalizers": [_encode(n) for n in value.normalizers]}
    if isinstance(value, EncoderNormalizer):
        if value.transformation is not None and not isinstance(value.transformation, str):
            raise TypeError("only named EncoderNormalizer transformations can be stored as JSON")
        return {
            "__type__": "EncoderNormalizer",
            "method": value.method,
            "center": value.center,
            "max_length": value.max_length,
            "transformation": value.transformation,
            "method_kwargs": value.method_kwargs,
        }
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"dataset parameter of type {type(value).__name__} cannot be stored as JSON")


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("__type__")
    if kind == "NaNLabelEncoder":
        encoder = NaNLabelEncoder(add_nan=value["add_nan"], warn=value["warn"])
        if value["classes"] is not None:
            encoder.classes_ = {k: v for k, v in value["classes"]}
            encoder.classes_vector_ = np.array(list(encoder.classes_))
        return encoder
    if kind == "ArrayScaler":
        scaler = ArrayScaler(with_mean=value["with_mean"], with_std=value["with_std"])
        scaler.n_features_in_ = len(value["mean"])
        scaler.mean_ = np.array(value["mean"])
        scaler.scale_ = np.array(value["scale"])
        scaler.var_ = np.array(value["var"])
        scaler.n_samples_seen_ = value["n_samples_seen"]
        return scaler
    if kind == "MultiNormalizer":
        return MultiNormalizer([_decode(n) for n in value["normalizers"]])
    if kind == "EncoderNormalizer":
        return EncoderNormalizer(
            method=value["method"],
            center=value["center"],
            max_length=value["max_length"],
            transformation=value["transformation"],
            method_kwargs=value["method_kwargs"],
        )
    return {k: _decode(v) for k, v in value.items()}


def parameters_to_json(parameters: dict[str, Any]) -> dict[str, Any]:
    """Dataset parameters (with fitted encoders and scalers) as plain JSON data."""
    return _encode(parameters)


def parameters_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """Inverse of parameters_to_json: the same encoders and scalers, fitted state included."""
    return _decode(data)

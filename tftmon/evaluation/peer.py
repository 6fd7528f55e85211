"""The strong practical peer: a global LightGBM quantile forecaster, in the model's tidy forecast format.

Plain baselines say whether the TFT learned anything; they do not say whether it was worth its training
time. This is what a forecasting practitioner would try first (the M5 winners' recipe): one global
gradient-boosted model per metric and quantile over every server, the forecast step a feature, on lags,
rolling statistics, yesterday's and last week's value at the target time, the target time's calendar, the
profile and the other metrics' recent values. It forecasts the change from the last value, so one model
fits servers at every level. The evaluation scores it beside the baselines: the TFT must beat it too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd

from tftmon.config import PeerConfig
from tftmon.contract import (
    METRICS,
    MODEL_STEP,
    ORIGIN,
    PREDICTION_STEPS,
    PROFILE,
    PROFILE_NAMES,
    SERVER_NAME,
    STEP_NS,
    TIMESTAMP,
    profile_of,
    quantile_name,
)
from tftmon.evaluation.actuals import Actuals
from tftmon.evaluation.baselines import _clip, _tidy
from tftmon.io import atomic_directory, file_sha256, write_bytes_atomic, write_json_atomic
from tftmon.model.features import KNOWN_REALS, add_time_features, resolve_targets

#: The forecaster's name in evaluation tables.
PEER = "lightgbm"
#: The description of a saved peer, beside one LightGBM text model per booster.
PEER_FILE = "peer.json"
#: Where `tftmon train` keeps the peer inside a model directory, for every later evaluation of the version.
PEER_DIR = "peer"
PEER_FORMAT = "tftmon-lightgbm-peer"
PEER_FORMAT_VERSION = 1

DAY_STEPS = timedelta(days=1) // MODEL_STEP
WEEK_STEPS = 7 * DAY_STEPS
HOUR_STEPS = timedelta(hours=1) // MODEL_STEP
#: History read behind an origin, the origin bin included: yesterday's value at the origin is the oldest.
#: (Last week's value at the target time is read too where the actuals have it; a missing one is NaN.)
HISTORY_STEPS = DAY_STEPS + 1
LAGS: tuple[int, ...] = (1, 2, 3, 6, 12, 24, 36)
WINDOWS: tuple[int, ...] = (12, 36)
SLOPE_STEPS = 12
#: Fewer training rows with a target than this for a metric is an error: no model worth scoring.
MIN_TRAIN_ROWS = 1000
#: Origins per feature chunk: a 37-step window of every metric of 8192 origins is ~35 MB.
CHUNK_ORIGINS = 8192

#: Per target metric and origin; the location statistics relative to the last value (level-free).
OWN_FEATURES: tuple[str, ...] = (
    "last",
    *(f"lag_{k}" for k in LAGS),
    *(f"{stat}_{w}" for w in WINDOWS for stat in ("mean", "std", "min", "max")),
    f"slope_{SLOPE_STEPS}",
    "yesterday_origin",
)
#: The feature layout every booster shares: step, target-time calendar, profile, the target metric's own
#: features, then every forecast metric's last value and 1-h change (the target's own repeat `last` and
#: `lag_12`, so one layout serves every booster).
BASE_FEATURES: tuple[str, ...] = ("step", *KNOWN_REALS, "profile")
PROFILE_FEATURE = "profile"


class PeerNotTrained(ValueError):
    """The training frame is too short or too sparse for the peer: the evaluation goes on without it."""


def feature_names(metrics: Sequence[str]) -> tuple[str, ...]:
    """The peer's feature columns for a model of `metrics`, in the order of its design matrices."""
    return (
        *BASE_FEATURES,
        *OWN_FEATURES,
        "yesterday_target",
        "last_week_target",
        *(f"last__{m}" for m in metrics),
        *(f"change_1h__{m}" for m in metrics),
    )


@dataclass(frozen=True)
class PeerModel:
    """A fitted peer: one LightGBM booster per (metric, quantile), all on the same feature layout."""

    metrics: tuple[str, ...]
    config: PeerConfig
    boosters: dict[tuple[str, float], lightgbm.Booster]
    feature_names: tuple[str, ...]
    history_steps: int


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------


def _origin_features(act: Actuals, cols: np.ndarray, code: np.ndarray, tidx: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per origin: every metric's own features [n, metric, OWN_FEATURES] and the shared last values and
    1-h changes [n, 2 × metric]. Reads only bins at or before each origin; chunked to bound memory."""
    n, m = len(code), len(cols)
    own = np.empty((n, m, len(OWN_FEATURES)))
    cross = np.empty((n, 2 * m))
    back = np.arange(-max(*LAGS, *WINDOWS), 1)
    x = np.arange(-SLOPE_STEPS + 1, 1, dtype=float)
    for lo in range(0, n, CHUNK_ORIGINS):
        part = slice(lo, lo + CHUNK_ORIGINS)
        window = act.get(code[part, None], tidx[part, None] + back)[..., cols]  # [c, step, metric]
        last = window[:, -1]
        feats = [last, *(window[:, -1 - k] - last for k in LAGS)]
        with np.errstate(invalid="ignore", divide="ignore"):
            for width in WINDOWS:
                recent = window[:, -width:]
                count = (~np.isnan(recent)).sum(axis=1)
                mean = np.nansum(recent, axis=1) / count
                std = np.sqrt(np.nansum((recent - mean[:, None]) ** 2, axis=1) / count)
                # fmin/fmax skip NaN without nanmin's all-NaN warning
                feats += [
                    mean - last,
                    std,
                    np.fmin.reduce(recent, axis=1) - last,
                    np.fmax.reduce(recent, axis=1) - last,
                ]
            y = window[:, -SLOPE_STEPS:]
            w = ~np.isnan(y)
            count = w.sum(axis=1)
            xm = (w * x[None, :, None]).sum(axis=1) / count
            ym = np.nansum(y, axis=1) / count
            dx = np.where(w, x[None, :, None] - xm[:, None, :], 0.0)
            slope = (dx * np.nan_to_num(y - ym[:, None, :])).sum(axis=1) / (dx**2).sum(axis=1)
        feats.append(np.where(count >= 2, slope, np.nan))
        feats.append(act.get(code[part], tidx[part] - DAY_STEPS)[:, cols] - last)
        own[part] = np.stack(feats, axis=-1)
        cross[part] = np.concatenate([last, last - window[:, -1 - HOUR_STEPS]], axis=1)
    return own, cross


@dataclass(frozen=True)
class _Rows:
    """Design rows (origin, step): the origin-level blocks and the lookups that depend on the step."""

    origin: np.ndarray  # row -> origin position
    step: np.ndarray  # row -> forecast step
    base: np.ndarray  # [row, BASE_FEATURES]
    own: np.ndarray  # [origin, metric, OWN_FEATURES]
    cross: np.ndarray  # [origin, 2 × metric]
    seasonal: np.ndarray  # [row, metric, 2]: yesterday and last week at the target time, minus the last value

    def matrix(self, j: int, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The design matrix of metric `j` (its position among the model's metrics) at `rows`."""
        origin = self.origin[rows]
        return np.concatenate(
            [self.base[rows], self.own[origin, j], self.seasonal[rows, j], self.cross[origin]], axis=1
        )


def _profile_codes(profiles: np.ndarray) -> np.ndarray:
    """Profiles as LightGBM category codes (positions in PROFILE_NAMES); an unknown one is NaN (missing)."""
    codes = pd.Categorical(profiles, categories=list(PROFILE_NAMES)).codes.astype(float)
    codes[codes < 0] = np.nan
    return codes


def _rows(
    act: Actuals, cols: np.ndarray, code: np.ndarray, tidx: np.ndarray, profile: np.ndarray, steps: np.ndarray
) -> _Rows:
    """Features of every (origin, step in `steps`) row, origin-major."""
    own, cross = _origin_features(act, cols, code, tidx)
    origin = np.repeat(np.arange(len(code)), len(steps))
    step = np.tile(steps, len(code))
    target = tidx[origin] + step
    # The calendar of each distinct target bin once, from the one shared time-feature function.
    bins, inverse = np.unique(target, return_inverse=True)
    stamps = act.t0 + pd.to_timedelta(bins * STEP_NS, unit="ns")
    calendar = add_time_features(pd.DataFrame({TIMESTAMP: stamps}))[list(KNOWN_REALS)].to_numpy(dtype=float)
    base = np.column_stack([step.astype(float), calendar[inverse.ravel()], _profile_codes(profile)[origin]])
    last = own[origin, :, 0]
    seasonal = np.stack(
        [
            act.get(code[origin], target - DAY_STEPS)[:, cols] - last,
            act.get(code[origin], target - WEEK_STEPS)[:, cols] - last,
        ],
        axis=-1,
    )
    return _Rows(origin=origin, step=step, base=base, own=own, cross=cross, seasonal=seasonal)


def _steps(train_steps: Sequence[int]) -> np.ndarray:
    steps = np.array(sorted(set(train_steps)), dtype=np.int64)
    if steps.size == 0 or steps[0] < 1 or steps[-1] > PREDICTION_STEPS:
        raise ValueError(f"PeerConfig.train_steps {tuple(train_steps)} must be steps from 1 to {PREDICTION_STEPS}")
    return steps


def _params(config: PeerConfig) -> dict[str, Any]:
    """LightGBM parameters shared by every booster (dataset and training alike); bagging off, seeded."""
    return {
        "num_leaves": config.leaves,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_rows_in_leaf,
        "max_bin": config.bins,
        "feature_fraction": 0.9,
        "bagging_fraction": 1.0,
        "bagging_freq": 0,
        "num_threads": config.threads or 0,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }


# ---------------------------------------------------------------------------------------------
# Fit and forecast
# ---------------------------------------------------------------------------------------------


def _training_origins(act: Actuals, every: timedelta) -> tuple[np.ndarray, np.ndarray]:
    """Per server, origins every `every` with a day of history behind and a whole forecast ahead within
    the server's span (the bins themselves may be missing: rows without a target are dropped later)."""
    every_steps = every // MODEL_STEP
    if every_steps < 1:
        raise ValueError(f"PeerConfig.origin_every {every} is shorter than the model step {MODEL_STEP}")
    servers = np.arange(len(act.servers))
    first = act.keys[np.searchsorted(act.keys, servers * act.span)] - servers * act.span
    last = act.keys[np.searchsorted(act.keys, (servers + 1) * act.span) - 1] - servers * act.span
    grids = [np.arange(a + DAY_STEPS, b - PREDICTION_STEPS + 1, every_steps) for a, b in zip(first, last, strict=True)]
    code = np.repeat(servers, [len(g) for g in grids])
    return code, np.concatenate(grids) if grids else np.empty(0, dtype=np.int64)


def _resolve_metrics(metrics: Sequence[str] | None, present: tuple[str, ...]) -> tuple[str, ...]:
    """The metrics to fit, by the training path's own rule (`resolve_targets`), each of them in the frame."""
    chosen = resolve_targets(metrics, present)
    absent = [m for m in chosen if m not in present]
    if absent:
        raise ValueError(f"metrics {absent} are missing from the training frame")
    return tuple(chosen)


def fit_peer(frame: pd.DataFrame, config: PeerConfig | None = None, metrics: Sequence[str] | None = None) -> PeerModel:
    """Fit one quantile booster per metric and quantile on `frame` (5-min steps, cut before any held-out
    period): rows are training origins × `config.train_steps`, at most `config.max_rows` per metric."""
    cfg = config or PeerConfig()
    act = Actuals(frame)
    chosen = _resolve_metrics(metrics, act.metrics)
    cols = np.array([act.metrics.index(m) for m in chosen])
    steps = _steps(cfg.train_steps)
    code, tidx = _training_origins(act, cfg.origin_every)
    if code.size == 0:
        raise PeerNotTrained(
            f"no training origin: the peer needs servers with at least {DAY_STEPS + PREDICTION_STEPS} steps "
            f"({(DAY_STEPS + PREDICTION_STEPS) * MODEL_STEP}) of data"
        )
    rows = _rows(act, cols, code, tidx, act.profiles[code], steps)
    target = act.get(code[rows.origin], tidx[rows.origin] + rows.step)[:, cols]
    target -= rows.own[rows.origin, :, 0]
    names = feature_names(chosen)
    params = _params(cfg)
    rng = np.random.default_rng(cfg.seed)
    boosters: dict[tuple[str, float], lightgbm.Booster] = {}
    for j, metric in enumerate(chosen):
        keep = np.flatnonzero(~np.isnan(target[:, j]))
        if keep.size < MIN_TRAIN_ROWS:
            raise PeerNotTrained(
                f"{metric}: only {keep.size} training rows with a target (at least {MIN_TRAIN_ROWS}); give the "
                "peer a longer or wider training frame, or leave the metric out"
            )
        if keep.size > cfg.max_rows:
            keep = np.sort(rng.choice(keep, cfg.max_rows, replace=False))
        # One binned dataset per metric, built once and shared by its quantiles' boosters.
        data = lightgbm.Dataset(
            rows.matrix(j, keep),
            label=target[keep, j],
            feature_name=list(names),
            categorical_feature=[PROFILE_FEATURE],
            params=params,
            free_raw_data=True,
        )
        for q in cfg.quantiles:
            boosters[(metric, q)] = lightgbm.train(
                {**params, "objective": "quantile", "alpha": q}, data, num_boost_round=cfg.trees
            )
    return PeerModel(metrics=chosen, config=cfg, boosters=boosters, feature_names=names, history_steps=HISTORY_STEPS)


def _knots(peer: PeerModel) -> np.ndarray:
    """The steps predicted; the others are interpolated. The trained steps plus the first and last: the
    trees only split the step between trained ones, so at other steps they would give a staircase."""
    return np.union1d(_steps(peer.config.train_steps), [1, PREDICTION_STEPS])


def _interpolation(knots: np.ndarray) -> np.ndarray:
    """Weights [step 1..PREDICTION_STEPS, knot] of the linear interpolation between the knots (which hold
    the first and last step)."""
    steps = np.arange(1, PREDICTION_STEPS + 1)
    hi = np.clip(np.searchsorted(knots, steps), 1, len(knots) - 1)
    lo = hi - 1
    weight = (steps - knots[lo]) / (knots[hi] - knots[lo])
    out = np.zeros((PREDICTION_STEPS, len(knots)))
    out[steps - 1, lo] = 1 - weight
    out[steps - 1, hi] += weight
    return out


def peer_forecast(peer: PeerModel, actuals: pd.DataFrame, at: pd.DataFrame) -> pd.DataFrame:
    """The peer's forecast in the tidy format at the (server_name, origin) pairs of `at`, reading only the
    actuals at or before each origin. Steps between the knots are linear between the predicted changes."""
    act = Actuals(actuals)
    absent = [m for m in peer.metrics if m not in act.metrics]
    if absent:
        raise ValueError(f"the actuals lack metrics {absent} the peer reads; it was fit on {list(peer.metrics)}")
    cols = np.array([act.metrics.index(m) for m in peer.metrics])
    keys = at[[SERVER_NAME, ORIGIN]].drop_duplicates().reset_index(drop=True)
    code = act.code_of(keys[SERVER_NAME])
    keys[PROFILE] = np.where(code >= 0, act.profiles[np.maximum(code, 0)], keys[SERVER_NAME].map(profile_of))
    tidx = act.index_of(keys[ORIGIN])
    n, m, knots = len(keys), len(peer.metrics), _knots(peer)
    if n == 0:
        raise ValueError("`at` holds no (server_name, origin) pair to forecast")
    rows = _rows(act, cols, code, tidx, keys[PROFILE].to_numpy(), knots)
    last = rows.own[:, :, 0]
    quantiles = peer.config.quantiles
    change = np.empty((n, len(knots), m, len(quantiles)))
    threads = peer.config.threads or 0
    for j, metric in enumerate(peer.metrics):
        design = rows.matrix(j)
        for k, q in enumerate(quantiles):
            pred = peer.boosters[(metric, q)].predict(design, num_threads=threads)
            change[:, :, j, k] = np.asarray(pred).reshape(n, len(knots))
    # Every step from the knots in one matrix product: a tenth of the time of indexing both neighbours.
    full = np.matmul(_interpolation(knots), change.reshape(n, len(knots), m * len(quantiles)))
    full = full.reshape(n, PREDICTION_STEPS, m, len(quantiles))
    full += last[:, None, :, None]
    full.sort(axis=-1)  # per row, so the quantiles never cross
    for k in range(len(quantiles)):
        full[..., k] = _clip(full[..., k], peer.metrics)
    return _tidy(keys, full, peer.metrics, [quantile_name(q) for q in quantiles])


# ---------------------------------------------------------------------------------------------
# Save and load: JSON and LightGBM's text models, no pickle
# ---------------------------------------------------------------------------------------------


def _booster_file(metric: str, q: float) -> str:
    return f"{metric}.{quantile_name(q)}.txt"


def save_peer(peer: PeerModel, path: Path) -> None:
    """Write `peer` as a directory, atomically: peer.json and one LightGBM text model per booster (each
    with its SHA-256 in peer.json, so a damaged file is refused on load rather than half-read)."""
    with atomic_directory(Path(path)) as tmp:
        boosters = []
        for (metric, q), booster in peer.boosters.items():
            name = _booster_file(metric, q)
            write_bytes_atomic(tmp / name, booster.model_to_string().encode())
            boosters.append({"metric": metric, "quantile": q, "file": name, "sha256": file_sha256(tmp / name)})
        write_json_atomic(
            tmp / PEER_FILE,
            {
                "format": PEER_FORMAT,
                "format_version": PEER_FORMAT_VERSION,
                "forecaster": PEER,
                "metrics": list(peer.metrics),
                "quantiles": list(peer.config.quantiles),
                "history_steps": peer.history_steps,
                "feature_names": list(peer.feature_names),
                "config": peer.config.model_dump(mode="json"),
                "boosters": boosters,
            },
        )


def load_peer(path: Path) -> PeerModel:
    """Read a directory `save_peer` wrote; anything missing, damaged or written for another layout is a
    ValueError naming the file and what is wrong."""
    path = Path(path)
    spec_file = path / PEER_FILE
    try:
        spec = json.loads(spec_file.read_text())
    except FileNotFoundError:
        raise ValueError(f"{spec_file}: missing; {path} is not a saved LightGBM peer (save_peer writes one)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{spec_file}: not readable JSON ({exc})") from exc

    def bad(what: str, file: Path = spec_file) -> ValueError:
        return ValueError(f"{file}: {what}")

    if not isinstance(spec, dict) or spec.get("format") != PEER_FORMAT:
        raise bad(f"not a {PEER_FORMAT} description")
    if spec.get("format_version") != PEER_FORMAT_VERSION:
        raise bad(f"format version {spec.get('format_version')!r}; this tftmon reads {PEER_FORMAT_VERSION}")
    try:
        metrics = tuple(spec["metrics"])
        quantiles = tuple(float(q) for q in spec["quantiles"])
        history = int(spec["history_steps"])
        names = tuple(spec["feature_names"])
        config = PeerConfig.model_validate(spec["config"])
        entries = [(str(e["metric"]), float(e["quantile"]), str(e["file"]), str(e["sha256"])) for e in spec["boosters"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"malformed ({type(exc).__name__}: {exc})") from exc
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise bad(f"metrics {unknown or '[]'} are not contract metrics")
    if quantiles != config.quantiles:
        raise bad(f"quantiles {quantiles} differ from its config's {config.quantiles}")
    if history != HISTORY_STEPS or names != feature_names(metrics):
        raise bad("written for another feature layout (history steps or feature names differ); fit the peer again")
    expected = {(m, q) for m in metrics for q in quantiles}
    if sorted((m, q) for m, q, _, _ in entries) != sorted(expected):
        raise bad(f"boosters must be one per metric and quantile {sorted(expected)}")
    boosters: dict[tuple[str, float], lightgbm.Booster] = {}
    for metric, q, name, sha in entries:
        file = path / name
        if Path(name).name != name:
            raise bad(f"booster file name {name!r} is not a plain file name")
        if not file.is_file():
            raise bad(f"missing (the {metric} {quantile_name(q)} booster)", file)
        if file_sha256(file) != sha:
            raise bad(f"damaged: its SHA-256 differs from the one in {PEER_FILE}", file)
        try:
            booster = lightgbm.Booster(model_str=file.read_text())
        except Exception as exc:  # LightGBM raises its own error types for unparsable models
            raise bad(f"not a LightGBM text model ({exc})", file) from exc
        if tuple(booster.feature_name()) != names:
            raise bad(f"its features differ from those in {PEER_FILE}", file)
        boosters[(metric, q)] = booster
    return PeerModel(metrics=metrics, config=config, boosters=boosters, feature_names=names, history_steps=history)

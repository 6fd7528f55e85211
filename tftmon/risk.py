"""Risk and severity from the model's forecast distribution: one scale, defined once, explained in words.

Risk is computed from the forecast quantiles only (never from a heuristic on history), per server and
forecast origin. For each risk metric the question is "how likely does it reach which level, how soon":

    term(level, step) = weight(metric) × level score × P(metric ≥ level at step) × soonness(step)

P is read from every quantile the forecast carries (the model's p2…p98, a baseline's p10/p50/p90) as a
piecewise-linear distribution (`exceedance`).

- level: elevated 0.4, high 0.65, critical 1.0 against per-profile thresholds (RISK_METRICS below).
- soonness: 1.0 up to 30 min, 0.9 at 1 h, 0.75 at 8 h (contract.HORIZONS), log-linear in between.
- weight: I/O wait 1.0 (the most telling bottleneck) down to 0.75 for CLOSE_WAIT counts.

Only a critical level can make a server critical. The critical level's largest term is the alert score
(`raw`), and the forecaster's `AlertCalibration` maps it so that the raw score at which its alerts should
fire (fitted on validation origins for a chosen false-alarm budget) lands on the critical band's lower
bound. The elevated and high terms stay as they are: at most 0.65, so they can make a server a warning,
never critical. A server parked just above an elevated line is a warning to watch, not an alert to act on,
however low a forecaster's fitted threshold. Risk is the largest term, so the reason shown to an operator
is exactly the term that produced the number (no invented explanations). So "critical" means "the alert
fired", not "likely": its label (SEVERITY_BANDS) says so in a sentence an on-call can repeat, and a reason
says how probable in the contract's words beside the % (contract.probability_text: "very unlikely (4 %)"),
how soon, and which forecast quantile each value is.

Uncalibrated, a certain critical crossing of I/O wait within 30 min scores 1.0, the same at 8 h 0.75, a
50 % one within 30 min 0.5.
Raising any forecast quantile (or lowering idle CPU) can only raise a probability, hence never lowers risk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import TypeVar

import numpy as np
import pandas as pd

from tftmon.contract import (
    BACK_CLOSE_WAIT,
    CPU_IDLE,
    CPU_IOWAIT,
    CPU_USER,
    DISK_USAGE,
    FALLBACK_PROFILE,
    FORECAST_COLUMNS,
    FRONT_CLOSE_WAIT,
    HORIZONS,
    LOAD_AVERAGE,
    MEM_USED,
    METRIC,
    METRICS,
    ORIGIN,
    PREDICTION_STEPS,
    PROFILE,
    PROFILE_NAMES,
    SERVER_NAME,
    STEP,
    STEP_MINUTES,
    SWAP_USED,
    probability_text,
    quantile_columns,
    quantile_name,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# The severity scale: defined once, used by risk, alerts, evaluation and the dashboard
# ---------------------------------------------------------------------------------------------


class Severity(StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class SeverityBand:
    severity: Severity
    #: Lowest risk in this band (inclusive).
    lower: float
    #: Dashboard colour (green / yellow / red).
    colour: str
    #: What an operator should read it as.
    label: str


SEVERITY_BANDS: tuple[SeverityBand, ...] = (
    SeverityBand(
        Severity.HEALTHY, 0.0, "#2e7d32",
        "Healthy: nothing to watch — no level is forecast to be reached within 8 h with the probability and "
        "soonness a warning needs",
    ),
    SeverityBand(
        Severity.WARNING, 0.3, "#f9a825",
        "Warning: watch this server — within 8 h an elevated or high level is at least as likely as not to be "
        "reached, or a critical one may be, below the probability that fires the alert",
    ),
    SeverityBand(
        Severity.CRITICAL, 0.7, "#c62828",
        "Critical: the alert fired — a critical level may be reached within 8 h, with at least the probability "
        "this model alerts at (set low to warn early: it can be under 10 %); act before it is reached",
    ),
)  # fmt: skip
SEVERITY_COLOURS: dict[Severity, str] = {b.severity: b.colour for b in SEVERITY_BANDS}
SEVERITY_LABELS: dict[Severity, str] = {b.severity: b.label for b in SEVERITY_BANDS}
_BAND_LOWERS = np.array([b.lower for b in SEVERITY_BANDS[1:]])
_BAND_NAMES = np.array([b.severity.value for b in SEVERITY_BANDS], dtype=object)


def severity_of(risk: float | np.ndarray | pd.Series) -> Severity | np.ndarray:
    """Map risk to severity: healthy < 0.3 ≤ warning < 0.7 ≤ critical (vectorised for arrays)."""
    values = np.asarray(risk, dtype=float)
    bands = np.searchsorted(_BAND_LOWERS, values, side="right")
    if values.ndim == 0:
        return Severity(_BAND_NAMES[int(bands)])
    return _BAND_NAMES[bands]


def colour_of(severity: str) -> str:
    """Dashboard colour of a severity (accepts the enum or its plain value)."""
    return SEVERITY_COLOURS[Severity(severity)]


# ---------------------------------------------------------------------------------------------
# Thresholds: per risk metric, per profile (elevated, high, critical)
# ---------------------------------------------------------------------------------------------

Levels = tuple[float, float, float]
LEVEL_NAMES: tuple[str, ...] = ("elevated", "high", "critical")
#: Score of reaching each level; index 0 = below elevated.
LEVEL_SCORES = np.array([0.0, 0.4, 0.65, 1.0])
#: Soonness at each contract horizon, shortest first; steps before the first horizon count as 1.0.
SOONNESS_AT_HORIZONS: tuple[float, ...] = (1.0, 0.9, 0.75)
if len(SOONNESS_AT_HORIZONS) != len(HORIZONS):
    raise RuntimeError("SOONNESS_AT_HORIZONS must match the contract's horizons")


_V = TypeVar("_V")


def _known_profiles(table: dict[str, _V]) -> dict[str, _V]:
    unknown = set(table) - set(PROFILE_NAMES)
    if unknown:
        raise RuntimeError(f"risk table names unknown profiles {sorted(unknown)}")
    return table


#: Load average is judged per core, but telemetry carries no core count: nominal cores per profile, with
#: per-core levels high enough that a healthy host twice the nominal size is not flagged even when busy
#: (its load per nominal core reaches 2 only at full CPU; CPU used is the direct saturation signal, load
#: adds run-queue pressure on top).
ASSUMED_CORES: dict[str, int] = _known_profiles(
    {
        "web_api": 16,
        "ml_compute": 64,
        "database": 32,
        "data_ingest": 24,
        "risk_analytics": 48,
        "generic": 8,
        "conductor_mgmt": 16,
    }
)
LOAD_PER_CORE: Levels = (2.0, 3.0, 4.0)


def _per_core(cores: int) -> Levels:
    elevated, high, critical = LOAD_PER_CORE
    return (elevated * cores, high * cores, critical * cores)


@dataclass(frozen=True)
class RiskMetric:
    """A quantity risk is judged on, derived from one contract metric."""

    source: str
    label: str
    unit: str
    weight: float
    default: Levels
    by_profile: dict[str, Levels]
    #: Judged as 100 - source (CPU used from idle): quantiles swap (used p10 = 100 - idle p90).
    complement: bool = False

    @property
    def key(self) -> str:
        return CPU_USED if self.complement else self.source

    def levels(self, profile: str) -> Levels:
        return self.by_profile.get(profile, self.default)


CPU_USED = "cpu_used_pct"
_CONNECTIONS: Levels = (50.0, 100.0, 200.0)
_WEB_CONNECTIONS = _known_profiles({"web_api": (100.0, 250.0, 500.0)})
# Per risk metric: (elevated, high, critical) by default and for the profiles that differ.
RISK_METRICS: tuple[RiskMetric, ...] = (
    RiskMetric(
        CPU_IOWAIT, "I/O wait", " %", 1.0, (10.0, 20.0, 30.0),
        _known_profiles(
            {"database": (20.0, 35.0, 50.0), "data_ingest": (15.0, 25.0, 40.0), "ml_compute": (5.0, 10.0, 20.0)}
        ),
    ),
    RiskMetric(
        CPU_IDLE, "CPU used", " %", 0.85, (80.0, 90.0, 95.0),
        _known_profiles({"ml_compute": (90.0, 95.0, 98.0), "risk_analytics": (90.0, 95.0, 98.0)}),
        complement=True,
    ),
    RiskMetric(
        MEM_USED, "Memory", " %", 0.9, (80.0, 90.0, 95.0),
        _known_profiles({p: (85.0, 92.0, 97.0) for p in ("database", "ml_compute", "risk_analytics")}),
    ),
    RiskMetric(SWAP_USED, "Swap", " %", 0.8, (10.0, 30.0, 50.0), {}),
    RiskMetric(DISK_USAGE, "Disk", " %", 0.9, (80.0, 90.0, 95.0), {}),
    RiskMetric(
        LOAD_AVERAGE, "Load average", "", 0.8, _per_core(ASSUMED_CORES[FALLBACK_PROFILE]),
        {p: _per_core(n) for p, n in ASSUMED_CORES.items()},
    ),
    RiskMetric(BACK_CLOSE_WAIT, "Back-end CLOSE_WAIT", "", 0.75, _CONNECTIONS, _WEB_CONNECTIONS),
    RiskMetric(FRONT_CLOSE_WAIT, "Front-end CLOSE_WAIT", "", 0.75, _CONNECTIONS, _WEB_CONNECTIONS),
)  # fmt: skip
#: CPU used where a model does not forecast idle but forecasts user CPU (a fleet reporting one CPU figure,
#: e.g. a CloudWatch CPUUtilization export named cpu_user_pct): user is a part of used (used = user + sys
#: + iowait), so user reaching a CPU-used level means used reaches it too. Judged on CPU used's levels and
#: weight, labelled as what it is; risk from it can be understated (sys and iowait unseen), never overstated.
CPU_USER_RISK = RiskMetric(CPU_USER, "CPU user", " %", 0.85, RISK_METRICS[1].default, RISK_METRICS[1].by_profile)
RISK_METRICS_BY_KEY: dict[str, RiskMetric] = {r.key: r for r in (*RISK_METRICS, CPU_USER_RISK)}


def threshold_table() -> pd.DataFrame:
    """All thresholds as a tidy table (risk metric, profile, elevated, high, critical) for docs and UIs."""
    rows = [
        {"risk_metric": r.key, "label": r.label, PROFILE: p, **dict(zip(LEVEL_NAMES, r.levels(p), strict=True))}
        for r in RISK_METRICS
        for p in PROFILE_NAMES
    ]
    return pd.DataFrame(rows)


def _soonness(n_steps: int) -> np.ndarray:
    """Weight of a crossing at each step 1..n_steps: flat to 30 min, then log-linear between horizons."""
    anchors = np.array(sorted(HORIZONS.values()), dtype=float)
    return np.interp(np.log(np.arange(1, n_steps + 1)), np.log(anchors), np.asarray(SOONNESS_AT_HORIZONS))


@dataclass(frozen=True)
class _Plan:
    """The risk metrics a forecast's metrics allow, as arrays: risk uses only what the model forecasts."""

    metrics: tuple[RiskMetric, ...]
    thresholds: np.ndarray  # [profile, risk metric, level]
    weights: np.ndarray
    source_index: np.ndarray  # position of each risk metric's source on the cube's metric axis
    complement: np.ndarray


@lru_cache(maxsize=32)
def risk_plan(forecast_metrics: frozenset[str]) -> _Plan:
    """The risk metrics whose source the forecast carries; CPU used from idle, else from user
    (CPU_USER_RISK) when only user CPU is forecast. Profiles' levels of other metrics are not used."""
    chosen: list[RiskMetric] = []
    for r in RISK_METRICS:
        if r.source in forecast_metrics:
            chosen.append(r)
        elif r.complement and CPU_USER in forecast_metrics:
            chosen.append(CPU_USER_RISK)
    return _Plan(
        metrics=tuple(chosen),
        thresholds=np.array([[r.levels(p) for r in chosen] for p in PROFILE_NAMES]).reshape(len(PROFILE_NAMES), -1, 3),
        weights=np.array([r.weight for r in chosen], dtype=float),
        source_index=np.array([METRICS.index(r.source) for r in chosen], dtype=np.int64),
        complement=np.array([r.complement for r in chosen], dtype=bool),
    )


# ---------------------------------------------------------------------------------------------
# Calibration: where a forecaster's raw score becomes critical
# ---------------------------------------------------------------------------------------------

CRITICAL_RISK = next(b.lower for b in SEVERITY_BANDS if b.severity is Severity.CRITICAL)
if LEVEL_SCORES[-2] * max(r.weight for r in RISK_METRICS_BY_KEY.values()) >= CRITICAL_RISK:
    raise RuntimeError("a level below critical must not reach the critical band: only critical levels alert")


@dataclass(frozen=True)
class AlertCalibration:
    """The alert score (the critical level's term) at which a forecaster's alert (severity critical) fires.

    Fitted on validation origins before any held-out period (tftmon.evaluation.incidents.fit_threshold) and
    stored with the model; the alert score is mapped piecewise-linearly so that 0 -> 0, `threshold` -> the
    critical band's lower bound and 1 -> 1. The bands themselves never move, so "critical" means "alert" for
    every calibrated forecaster, and the default (threshold = CRITICAL_RISK) leaves scores unchanged.
    """

    threshold: float = CRITICAL_RISK

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"alert threshold {self.threshold} must be in (0, 1]")

    def risk(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated risk of raw scores (vectorised, monotone)."""
        return np.interp(raw, [0.0, self.threshold, 1.0], [0.0, CRITICAL_RISK, 1.0])

    @classmethod
    def from_info(cls, info: dict[str, object] | None) -> AlertCalibration:
        """The calibration stored in a model's training_info.json (ALERT_THRESHOLD_KEY), else the default.

        A threshold under LEGACY_ALERT_THRESHOLD_KEY was fitted on a score every level fed, so it cannot
        serve the alert score: such a model alerts at the uncalibrated band until it is trained again.
        """
        info = info or {}
        value = info.get(ALERT_THRESHOLD_KEY)
        if isinstance(value, int | float):
            return cls(float(value))
        if LEGACY_ALERT_THRESHOLD_KEY in info:
            log.warning(
                "the model's alert threshold was fitted by tftmon < 0.18 on another score; it alerts at the "
                "uncalibrated critical band (%g) until trained again (tftmon train / tftmon retrain)",
                CRITICAL_RISK,
            )
        return cls()


#: Key of the fitted threshold in a model's training_info.json.
ALERT_THRESHOLD_KEY = "critical_alert_threshold"
#: Where older models keep a threshold fitted on the score of every level, not the alert score.
LEGACY_ALERT_THRESHOLD_KEY = "alert_threshold"


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

#: Groups (server × origin) scored at once: bounds memory on long backtests.
_CHUNK = 1024


def _cube(forecast: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, frozenset[str]]:
    """Tidy forecast -> (one row per server×origin, quantile levels, values [quantile, group, metric, step],
    the contract metrics the forecast carries).

    Every quantile column present is used (contract.quantile_columns). The step axis ends at the longest
    step present, so short forecasts (the next hour, one step) score in proportion to their length.
    Groups are numbered from integer codes, not by grouping the rows' strings: a 900-server forecast
    has 1.2 million rows.
    """
    missing = set(FORECAST_COLUMNS) - set(forecast.columns)
    if missing:
        raise ValueError(f"forecast lacks columns {sorted(missing)}; expected {list(FORECAST_COLUMNS)}")
    columns = quantile_columns(forecast.columns)
    name_codes = pd.factorize(forecast[SERVER_NAME], sort=True)[0]
    origin_codes, origins = pd.factorize(forecast[ORIGIN], sort=True)
    if (name_codes < 0).any() or (origin_codes < 0).any():
        raise ValueError("forecast has rows without a server name or an origin")
    pair = name_codes.astype(np.int64) * len(origins) + origin_codes
    # Rows come in runs of one server×origin (as forecasts lay them out): the runs are numbered, sorted by
    # (server, origin) as the groups are; each group's identity from its first row.
    starts = np.flatnonzero(_run_starts(pair))
    _, first_run, run_group = np.unique(pair[starts], return_index=True, return_inverse=True)
    group = np.repeat(run_group, np.diff(np.r_[starts, len(pair)]))
    keys = forecast[[SERVER_NAME, ORIGIN, PROFILE]].iloc[starts[first_run]].reset_index(drop=True)
    metric_codes, metric_names = pd.factorize(forecast[METRIC])
    metric = np.array([METRICS.index(m) if m in METRICS else -1 for m in metric_names] + [-1])[metric_codes]
    step = forecast[STEP].to_numpy(dtype=np.int64)
    ok = (metric >= 0) & (step >= 1) & (step <= PREDICTION_STEPS)
    n_steps = int(step[ok].max(initial=1))
    n_cells = len(keys) * len(METRICS) * n_steps
    # Whole rows of quantiles are scattered (not one strided scatter per quantile); rows outside the cube
    # (a metric not in the contract, a step out of range) land in a spare last cell, dropped.
    cell = np.where(ok, (group * len(METRICS) + metric) * n_steps + step - 1, n_cells)
    by_cell = np.full((n_cells + 1, len(columns)), np.nan)
    by_cell[cell] = _ascending(forecast[list(columns.values())].to_numpy(dtype=float))
    cube = by_cell[:-1].T.reshape(len(columns), len(keys), len(METRICS), n_steps)
    return keys, np.array(list(columns)), cube, frozenset(m for m in metric_names if m in METRICS)


def _ascending(values: np.ndarray) -> np.ndarray:
    """Each row's quantiles in ascending order, as np.sort orders them: quantile heads are trained
    independently and may cross, a distribution needs them ordered.

    A model's forecast arrives ordered already (network.forecast sorts crossed rows), and sorting 1.2
    million rows of nine is most of building the cube, so ordered rows are kept as they are, unless a
    row holds -0.0: the only value equal to another with other bits (0.0), which np.sort may swap.
    """
    ordered = (values[:, 1:] >= values[:, :-1]).all()  # False wherever a NaN is (np.sort moves NaN last)
    if ordered and not (np.signbit(values) & (values == 0)).any():
        return values
    return np.sort(values, axis=1)


def exceedance(values: np.ndarray, levels: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """P(X ≥ threshold) from quantile forecasts: `values` [quantile, ...] ascending, at `levels`
    [quantile] (or [quantile, ...], broadcast against the values: risk metrics with levels of their own).

    The CDF is linear between the quantiles; beyond the outermost ones nothing is assumed (below the
    lowest quantile the level is reached for certain, above the highest never), so raising any quantile
    never lowers the probability. A NaN forecast (a metric the model does not forecast) gives 0.
    Each quantile interval adds its share in place (`out=`): the arithmetic of one expression per
    interval, without a fresh array per operation.
    """
    q = np.asarray(levels, dtype=float)
    shape = np.broadcast_shapes(values.shape[1:], np.shape(threshold), q.shape[1:])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        below = np.where(threshold >= values[0], q[0], 0.0) + np.where(threshold > values[-1], 1.0 - q[-1], 0.0)
        frac, reached = np.empty(shape), np.empty(shape, dtype=bool)
        for i in range(len(q) - 1):
            width = values[i + 1] - values[i]
            np.divide(np.subtract(threshold, values[i], out=frac), width, out=frac)
            flat = ~(width > 0)  # a step where two quantiles meet (or a NaN); rare in a model's forecast
            if flat.any():
                np.copyto(frac, np.greater_equal(threshold, values[i + 1], out=reached), where=flat)
            np.clip(frac, 0.0, 1.0, out=frac)
            below += np.multiply(frac, q[i + 1] - q[i], out=frac)
    return np.where(np.isnan(values).any(axis=0), 0.0, 1.0 - below)


def _profile_codes(profiles: pd.Series) -> np.ndarray:
    codes = pd.Categorical(profiles, categories=PROFILE_NAMES).codes
    return np.where(codes < 0, PROFILE_NAMES.index(FALLBACK_PROFILE), codes)


def _risk_values(cube: np.ndarray, levels: np.ndarray, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Risk-metric forecasts [quantile, group, risk metric, step] ascending, and each one's levels
    [risk metric, quantile]: CPU used = 100 - idle, so its quantiles are idle's reversed (p10 = 100 - p90)."""
    values = cube[:, :, plan.source_index, :].copy()
    values[:, :, plan.complement, :] = 100.0 - values[::-1][:, :, plan.complement, :]
    per_metric = np.where(plan.complement[:, None], 1.0 - levels[::-1][None, :], levels[None, :])
    return values, per_metric


def _metric_risk_chunk(
    keys: pd.DataFrame, levels: np.ndarray, cube: np.ndarray, calibration: AlertCalibration, plan: _Plan
) -> dict[str, np.ndarray]:
    values, metric_levels = _risk_values(cube, levels, plan)  # [q, g, r, s], [r, q]
    thresholds = plan.thresholds[_profile_codes(keys[PROFILE])]  # [g, r, level]
    _, n_g, n_r, n_s = values.shape
    # Every risk metric and level in one call, [level, g, r, s]: steps innermost, where numpy's loops are long.
    by_level = exceedance(
        values[:, None], metric_levels.T[:, None, None, :, None], thresholds.transpose(2, 0, 1)[..., None]
    )
    prob = np.moveaxis(by_level, 0, -1)  # [g, r, s, level]
    term = prob * LEVEL_SCORES[1:] * _soonness(n_s)[:, None] * plan.weights[:, None, None]  # [g, r, s, level]
    raw = term[..., -1].max(axis=-1)  # the alert score: the critical level's term
    term[..., -1] = calibration.risk(term[..., -1])
    flat = term.reshape(n_g, n_r, -1)
    best = flat.argmax(axis=-1)  # first (soonest, then lowest level) of the highest scores
    step_idx, level_idx = np.divmod(best, len(LEVEL_NAMES))
    g_idx, r_idx = np.indices(best.shape)
    p = prob[g_idx, r_idx, step_idx, level_idx]
    crossed = p > 0
    threshold = thresholds[g_idx, r_idx, level_idx]
    at_step = values[:, g_idx, r_idx, step_idx]  # [q, g, r]
    reaching = at_step >= threshold[None]
    # The lowest quantile at or above the level (quantiles ascend, so all above it are too): "p75 reaches
    # it" says at least 25 % likely; the highest would always be the top quantile.
    low_q = np.where(reaching.any(axis=0), reaching.argmax(axis=0), -1)
    names = np.asarray([quantile_name(x) for x in levels], dtype=object)
    median = np.abs(levels - 0.5).argmin()
    return {
        "raw": raw,
        "risk": np.take_along_axis(flat, best[..., None], axis=-1)[..., 0],
        "probability": np.where(crossed, p, 0.0),
        "value": np.where(crossed, at_step[median], np.nan),
        "quantile": np.where(crossed & (low_q >= 0), names[np.maximum(low_q, 0)], ""),
        STEP: np.where(crossed, step_idx + 1, 0),
        "level": np.where(crossed, np.asarray(LEVEL_NAMES, dtype=object)[level_idx], ""),
        "threshold": np.where(crossed, threshold, np.nan),
    }


def metric_risk(forecast: pd.DataFrame, calibration: AlertCalibration | None = None) -> pd.DataFrame:
    """Risk of every risk metric for every server×origin, with what drove it (the explainable terms).

    risk = max over levels and steps of weight × level score × P(metric ≥ level at that step) × soonness(step),
    with P read from every forecast quantile (`exceedance`) and the critical level's terms calibrated; raw =
    the critical level's largest term uncalibrated (the alert score). Columns: server_name, profile, origin,
    risk_metric, raw, risk, probability, value (the p50 of the risk metric, CPU used not idle, at the driving
    step), quantile (the lowest quantile reaching the level there, '' if only the tails' extension does),
    step, minutes_ahead, level, threshold.
    `value`/`threshold` are NaN, `level` empty and `step` 0 when no level can be reached.
    """
    calibration = calibration or AlertCalibration()
    keys, levels, cube, forecast_metrics = _cube(forecast)
    plan = risk_plan(forecast_metrics)
    parts = [
        _metric_risk_chunk(keys.iloc[a : a + _CHUNK], levels, cube[:, a : a + _CHUNK], calibration, plan)
        for a in range(0, len(keys), _CHUNK)
    ] if plan.metrics else []  # fmt: skip
    n_r = len(plan.metrics)
    out = pd.DataFrame(
        {
            SERVER_NAME: np.repeat(keys[SERVER_NAME].to_numpy(), n_r),
            PROFILE: np.repeat(keys[PROFILE].to_numpy(), n_r),
            ORIGIN: np.repeat(keys[ORIGIN].to_numpy(), n_r),
            "risk_metric": np.tile(np.array([r.key for r in plan.metrics], dtype=object), len(keys)),
            **{name: np.concatenate([part[name].ravel() for part in parts]) for name in parts[0]},
        }
        if parts
        else {}
    )
    if not parts:
        return pd.DataFrame(columns=[SERVER_NAME, PROFILE, ORIGIN, "risk_metric", "raw", "risk", "probability",
                                     "value", "quantile", STEP, "minutes_ahead", "level", "threshold"])  # fmt: skip
    out["minutes_ahead"] = out[STEP] * STEP_MINUTES
    return out


def _when(minutes: int) -> str:
    hours, mins = divmod(minutes, 60)
    if hours == 0:
        return f"{mins} min"
    return f"{hours} h" if mins == 0 else f"{hours} h {mins} min"


def reasons(per_metric: pd.DataFrame) -> pd.Series:
    """Plain-language reason per crossed row of `metric_risk` (missing where its value is missing).

    E.g. "I/O wait ≥ 50 % (critical for database) in 25 min: very unlikely (4 %), p50 21 %, p98 reaches
    it": the level, when, how probable in the contract's words with the % (contract.probability_text), the
    forecast median (p50) at that step and the lowest forecast quantile that reaches the level there
    (left out when none does). Never "; ": score joins a server's reasons with it. One f-string per
    row: a request scores a few hundred rows at most, where a dozen whole-column string operations
    cost several times more.
    """
    metric = {k: (r.label, r.unit) for k, r in RISK_METRICS_BY_KEY.items()}
    columns = ("risk_metric", "threshold", "level", PROFILE, "minutes_ahead", "probability", "value", "quantile")
    text = [
        None
        if value != value  # NaN
        else f"{metric[key][0]} ≥ {threshold:g}{metric[key][1]} ({level} for {profile}) in {_when(minutes)}: "
        f"{probability_text(probability)}, p50 {round(value)}{metric[key][1]}"
        f"{f', {quantile} reaches it' if quantile else ''}"
        for key, threshold, level, profile, minutes, probability, value, quantile in zip(
            *(per_metric[c].tolist() for c in columns), strict=True
        )
    ]
    return pd.Series(text, index=per_metric.index, dtype="str")


NO_RISK_REASON = "No metric is forecast to reach an elevated level in the next 8 h"
NO_RISK_METRIC_REASON = "Not judged: the model forecasts none of the metrics risk is judged on"


def _run_starts(*columns: np.ndarray) -> np.ndarray:
    """True at each row whose value in any of `columns` differs from the row before (and at the first)."""
    starts = np.zeros(len(columns[0]), dtype=bool)
    starts[:1] = True
    for column in columns:
        starts[1:] |= column[1:] != column[:-1]
    return starts


def score(forecast: pd.DataFrame, *, calibration: AlertCalibration | None = None, drivers: int = 3) -> pd.DataFrame:
    """One row per server×origin: risk, severity, colour and why.

    Columns: server_name, profile, origin, raw (the largest alert score of any risk metric: what an alert
    threshold is fitted on), risk, severity, colour, metric (the driving risk metric),
    probability, value, quantile, minutes_ahead, level, threshold, reason (plain language), drivers (up to `drivers`
    risk metrics above healthy, worst first, '; '-joined reasons). Reasons are built only for rows that
    are not healthy-with-no-crossing, so scoring a large healthy fleet stays cheap.
    """
    per_metric = metric_risk(forecast, calibration)
    judged = len(per_metric) > 0 or len(forecast) == 0
    if not judged:  # the model forecasts no metric risk is judged on: every server healthy, and said why
        keys = forecast[[SERVER_NAME, ORIGIN, PROFILE]].drop_duplicates([SERVER_NAME, ORIGIN])
        per_metric = keys.sort_values([SERVER_NAME, ORIGIN], kind="stable").assign(
            risk_metric=None, raw=0.0, risk=0.0, probability=0.0, value=np.nan, quantile="",
            **{STEP: 0, "minutes_ahead": 0}, level="", threshold=np.nan,
        )  # fmt: skip
    # Each server×origin's rows are consecutive (metric_risk's layout): rank them worst first, ties in
    # metric order, with one stable sort instead of pandas' sort, groupby and reindex.
    names, origins = per_metric[SERVER_NAME].to_numpy(), per_metric[ORIGIN].to_numpy()
    group = np.cumsum(_run_starts(names, origins)) - 1
    ranked = np.lexsort((-per_metric["risk"].to_numpy(), group))
    ranked_group = group[ranked]
    first = np.flatnonzero(_run_starts(ranked_group))
    rank = np.arange(len(ranked)) - np.repeat(first, np.diff(np.r_[first, len(ranked)]))
    top = per_metric.iloc[ranked[first]].reset_index(drop=True).rename(columns={"risk_metric": METRIC})
    top["raw"] = np.maximum.reduceat(per_metric["raw"].to_numpy()[ranked], first) if len(ranked) else 0.0
    crossed = top[STEP].to_numpy() > 0
    reason = np.full(len(top), NO_RISK_REASON if judged else NO_RISK_METRIC_REASON, dtype=object)
    reason[crossed] = reasons(top[crossed].rename(columns={METRIC: "risk_metric"})).to_numpy(dtype=object)
    notable = ranked[(per_metric["risk"].to_numpy()[ranked] >= SEVERITY_BANDS[1].lower) & (rank < drivers)]
    driving: list[list[str]] = [[] for _ in range(len(top))]
    for g, text in zip(group[notable], reasons(per_metric.iloc[notable]), strict=True):
        driving[g].append(text)
    severity = severity_of(top["risk"].to_numpy())
    top = top.assign(
        severity=severity,
        colour=pd.array([SEVERITY_COLOURS[Severity(s)] for s in severity], dtype="str"),
        reason=pd.array(reason, dtype="str"),
        drivers=pd.array(["; ".join(texts) for texts in driving], dtype="str"),
        **{METRIC: top[METRIC].where(crossed, None)},
    )
    columns = [SERVER_NAME, PROFILE, ORIGIN, "raw", "risk", "severity", "colour", METRIC, "probability", "value",
               "quantile", "minutes_ahead", "level", "threshold", "reason", "drivers"]  # fmt: skip
    return top[columns]

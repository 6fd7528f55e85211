"""Risk and severity from the model's quantile forecasts: one scale, defined once, explained in words.

Risk is computed from the forecast quantiles only (never from a heuristic on history), per server and
forecast origin. For each risk metric the question is "which quantile crosses which level, how soon":

    metric risk = weight(metric) × level(value) × likelihood(quantile) × soonness(step)

maximised over quantiles and steps; the server's risk is the largest metric risk, so the reason shown to
an operator is exactly the term that produced the number (no invented explanations).

- level: elevated 0.4, high 0.65, critical 1.0 against per-profile thresholds (THRESHOLDS below).
- likelihood: p10 crossing = very likely (1.0), p50 = likely (0.85), p90 = possible (0.5).
- soonness: 1.0 up to 30 min, 0.9 at 1 h, 0.75 at 8 h (contract.HORIZONS), log-linear in between.
- weight: I/O wait 1.0 (the most telling bottleneck) down to 0.75 for CLOSE_WAIT counts.

So a p50 critical crossing within 30 min of I/O wait scores 0.85 (critical), the same at 8 h 0.64
(warning), a p90-only critical crossing within 30 min 0.5 (warning). Raising any forecast value (or
lowering idle CPU) can only raise a level, hence never lowers risk.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from tftmon.contract import (
    BACK_CLOSE_WAIT,
    CPU_IDLE,
    CPU_IOWAIT,
    DISK_USAGE,
    FALLBACK_PROFILE,
    FRONT_CLOSE_WAIT,
    HORIZONS,
    LOAD_AVERAGE,
    MEM_USED,
    METRICS,
    MODEL_STEP,
    PREDICTION_STEPS,
    PROFILE,
    PROFILE_NAMES,
    QUANTILE_NAMES,
    SERVER_NAME,
    SWAP_USED,
    TIMESTAMP,
)

# Columns of the tidy forecast format (contract metrics are in METRIC, quantiles in QUANTILE_NAMES).
ORIGIN = "origin"
STEP = "step"
METRIC = "metric"
FORECAST_COLUMNS: tuple[str, ...] = (SERVER_NAME, PROFILE, ORIGIN, STEP, TIMESTAMP, METRIC, *QUANTILE_NAMES)

STEP_MINUTES = int(MODEL_STEP.total_seconds() // 60)

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
    SeverityBand(Severity.HEALTHY, 0.0, "#2e7d32", "Healthy: nothing expected to need attention"),
    SeverityBand(Severity.WARNING, 0.3, "#f9a825", "Warning: watch this server, trouble is possible"),
    SeverityBand(Severity.CRITICAL, 0.7, "#c62828", "Critical: act now, trouble is likely soon"),
)
SEVERITY_COLOURS: dict[Severity, str] = {b.severity: b.colour for b in SEVERITY_BANDS}
SEVERITY_LABELS: dict[Severity, str] = {b.severity: b.label for b in SEVERITY_BANDS}
_BAND_LOWERS = np.array([b.lower for b in SEVERITY_BANDS[1:]])
_BAND_NAMES = np.array([b.severity.value for b in SEVERITY_BANDS], dtype=object)


def severity_of(risk: float | np.ndarray | pd.Series) -> Severity | np.ndarray:
    """Map risk to severity: healthy < 0.3 ≤ warning < 0.7 ≤ critical (vectorised for arrays)."""
    if np.ndim(risk) == 0:
        return Severity(_BAND_NAMES[np.searchsorted(_BAND_LOWERS, float(risk), side="right")])
    return _BAND_NAMES[np.searchsorted(_BAND_LOWERS, np.asarray(risk, dtype=float), side="right")]


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
#: How likely a crossing is, by which quantile crosses (ordered like QUANTILE_NAMES).
LIKELIHOOD = np.array([1.0, 0.85, 0.5])
#: Soonness at each contract horizon, shortest first; steps before the first horizon count as 1.0.
SOONNESS_AT_HORIZONS: tuple[float, ...] = (1.0, 0.9, 0.75)
if len(LIKELIHOOD) != len(QUANTILE_NAMES) or len(SOONNESS_AT_HORIZONS) != len(HORIZONS):
    raise RuntimeError("LIKELIHOOD / SOONNESS_AT_HORIZONS must match the contract's quantiles / horizons")


def _known_profiles(table: dict[str, Levels]) -> dict[str, Levels]:
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
RISK_METRICS_BY_KEY: dict[str, RiskMetric] = {r.key: r for r in RISK_METRICS}


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


_THRESHOLDS = np.array([[r.levels(p) for r in RISK_METRICS] for p in PROFILE_NAMES])  # [profile, metric, level]
_WEIGHTS = np.array([r.weight for r in RISK_METRICS])
_SOURCE_INDEX = np.array([METRICS.index(r.source) for r in RISK_METRICS])
_COMPLEMENT = np.array([r.complement for r in RISK_METRICS])


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def _cube(forecast: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Tidy forecast -> (one row per server×origin, values [quantile, group, metric, step]) without loops.

    The step axis ends at the longest step present, so short forecasts (the next hour, one step) score
    in proportion to their length rather than always as PREDICTION_STEPS.
    """
    missing = set(FORECAST_COLUMNS) - set(forecast.columns)
    if missing:
        raise ValueError(f"forecast lacks columns {sorted(missing)}; expected {list(FORECAST_COLUMNS)}")
    group = forecast.groupby([SERVER_NAME, ORIGIN], sort=True).ngroup().to_numpy()
    keys = forecast[[SERVER_NAME, ORIGIN, PROFILE]].drop_duplicates([SERVER_NAME, ORIGIN])
    keys = keys.sort_values([SERVER_NAME, ORIGIN]).reset_index(drop=True)
    metric = pd.Categorical(forecast[METRIC], categories=METRICS).codes
    step = forecast[STEP].to_numpy(dtype=np.int64)
    ok = (metric >= 0) & (step >= 1) & (step <= PREDICTION_STEPS)
    n_steps = int(step[ok].max(initial=1))
    cube = np.full((len(QUANTILE_NAMES), len(keys), len(METRICS), n_steps), np.nan)
    values = forecast[list(QUANTILE_NAMES)].to_numpy(dtype=float)
    cube[:, group[ok], metric[ok], step[ok] - 1] = values[ok].T
    return keys, cube


def _profile_codes(profiles: pd.Series) -> np.ndarray:
    codes = pd.Categorical(profiles, categories=PROFILE_NAMES).codes
    return np.where(codes < 0, PROFILE_NAMES.index(FALLBACK_PROFILE), codes)


def metric_risk(forecast: pd.DataFrame) -> pd.DataFrame:
    """Risk of every risk metric for every server×origin, with what drove it (the explainable terms).

    Columns: server_name, profile, origin, risk_metric, risk, value, quantile, step, minutes_ahead, level,
    threshold. `value` is the forecast of the risk metric (CPU used, not idle) at the driving step and
    quantile; `value`/`threshold` are NaN, `quantile`/`level` empty and `step` 0 when nothing reaches an
    elevated level.
    """
    keys, cube = _cube(forecast)
    values = cube[:, :, _SOURCE_INDEX, :]  # [q, g, r, s]
    # CPU used = 100 - idle; its p10 is 100 - idle's p90, so reverse the quantile axis too.
    values[:, :, _COMPLEMENT, :] = 100.0 - values[::-1][:, :, _COMPLEMENT, :]
    thresholds = _THRESHOLDS[_profile_codes(keys[PROFILE])]  # [g, r, level]
    level = (values[..., None] >= thresholds[None, :, :, None, :]).sum(axis=-1)  # NaN compares False
    score = LEVEL_SCORES[level] * _soonness(values.shape[-1])  # [q, g, r, s]
    best_step = score.argmax(axis=-1)  # first step with the highest score
    best = np.take_along_axis(score, best_step[..., None], axis=-1)[..., 0] * LIKELIHOOD[:, None, None]
    best_q = best.argmax(axis=0)  # [g, r]; ties go to the surer (lower) quantile
    g_idx, r_idx = np.indices(best_q.shape)
    step_idx = best_step[best_q, g_idx, r_idx]
    risk = best[best_q, g_idx, r_idx] * _WEIGHTS
    lvl = level[best_q, g_idx, r_idx, step_idx]
    crossed = lvl > 0
    n_g, n_r = best_q.shape
    out = pd.DataFrame(
        {
            SERVER_NAME: np.repeat(keys[SERVER_NAME].to_numpy(), n_r),
            PROFILE: np.repeat(keys[PROFILE].to_numpy(), n_r),
            ORIGIN: np.repeat(keys[ORIGIN].to_numpy(), n_r),
            "risk_metric": np.tile(np.array([r.key for r in RISK_METRICS], dtype=object), n_g),
            "risk": risk.ravel(),
            "value": np.where(crossed, values[best_q, g_idx, r_idx, step_idx], np.nan).ravel(),
            "quantile": np.where(crossed, np.asarray(QUANTILE_NAMES, dtype=object)[best_q], "").ravel(),
            STEP: np.where(crossed, step_idx + 1, 0).ravel(),
            "level": np.where(crossed, np.asarray(("", *LEVEL_NAMES), dtype=object)[lvl], "").ravel(),
            "threshold": np.where(
                crossed, np.take_along_axis(thresholds, np.maximum(lvl - 1, 0)[..., None], axis=-1)[..., 0], np.nan
            ).ravel(),
        }
    )
    out["minutes_ahead"] = out[STEP] * STEP_MINUTES
    return out


def _when(minutes: int) -> str:
    hours, mins = divmod(minutes, 60)
    if hours == 0:
        return f"{mins} min"
    return f"{hours} h" if mins == 0 else f"{hours} h {mins} min"


def reasons(per_metric: pd.DataFrame) -> pd.Series:
    """Plain-language reason per crossed row of `metric_risk`, built column-wise (no per-row Python).

    E.g. "I/O wait p50 reaches 34 % in 40 min (critical ≥ 30 % for web_api)".
    """
    key = per_metric["risk_metric"]
    unit = key.map({r.key: r.unit for r in RISK_METRICS})
    when = per_metric["minutes_ahead"].map({m: _when(m) for m in per_metric["minutes_ahead"].unique()})
    value = per_metric["value"].round().astype("Int64").astype(str)
    threshold = per_metric["threshold"].map(lambda t: f"{t:g}")
    return (
        key.map({r.key: r.label for r in RISK_METRICS}) + " " + per_metric["quantile"] + " reaches " + value + unit
        + " in " + when + " (" + per_metric["level"] + " ≥ " + threshold + unit + " for " + per_metric[PROFILE] + ")"
    )  # fmt: skip


NO_RISK_REASON = "No metric is forecast to reach an elevated level in the next 8 h"


def score(forecast: pd.DataFrame, *, drivers: int = 3) -> pd.DataFrame:
    """One row per server×origin: risk, severity, colour and why.

    Columns: server_name, profile, origin, risk, severity, colour, metric (the driving risk metric),
    value, quantile, minutes_ahead, level, threshold, reason (plain language), drivers (up to `drivers`
    risk metrics above healthy, worst first, '; '-joined reasons). Reasons are built only for rows that
    are not healthy-with-no-crossing, so scoring a large healthy fleet stays cheap.
    """
    per_metric = metric_risk(forecast)
    per_metric = per_metric.sort_values([SERVER_NAME, ORIGIN, "risk"], ascending=[True, True, False], kind="stable")
    top = per_metric.groupby([SERVER_NAME, ORIGIN], sort=False).head(1).reset_index(drop=True)
    top = top.rename(columns={"risk_metric": METRIC})
    top["severity"] = severity_of(top["risk"].to_numpy())
    top["colour"] = top["severity"].map(lambda s: SEVERITY_COLOURS[Severity(s)])
    top["reason"] = NO_RISK_REASON
    crossed = top[STEP] > 0
    if crossed.any():
        top.loc[crossed, "reason"] = reasons(top.loc[crossed].rename(columns={METRIC: "risk_metric"}))
    top.loc[~crossed, METRIC] = None
    notable = per_metric[per_metric["risk"] >= SEVERITY_BANDS[1].lower]
    notable = notable.groupby([SERVER_NAME, ORIGIN], sort=False).head(drivers)
    top["drivers"] = ""
    if len(notable):
        text = reasons(notable).groupby([notable[SERVER_NAME], notable[ORIGIN]], sort=False).agg("; ".join)
        idx = pd.MultiIndex.from_frame(top[[SERVER_NAME, ORIGIN]])
        top["drivers"] = text.reindex(idx).fillna("").to_numpy()
    columns = [SERVER_NAME, PROFILE, ORIGIN, "risk", "severity", "colour", METRIC, "value", "quantile",
               "minutes_ahead", "level", "threshold", "reason", "drivers"]  # fmt: skip
    return top[columns]

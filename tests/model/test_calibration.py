"""The simulator and risk scoring calibrated against each other, through an oracle forecast.

The oracle forecasts the simulator's own future (p10 = p50 = p90 = the actual value): no model can do
better, so what it scores is the ceiling of every incident metric. If the oracle did not call a simulated
critical_issue critical, no forecaster could ever raise a critical alert before an incident. So: incidents
must score critical, the ~2 h heavy_load ramps must rise through warning before them, and normal hours
(healthy, idle, morning_spike) must stay healthy. The shares pinned here were measured on these fleets
(numbers in the comments) and carry a margin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tftmon.config import SimulationConfig
from tftmon.contract import (
    FORECAST_COLUMNS,
    HORIZONS,
    INCIDENT_STATE,
    METRIC,
    METRICS,
    MODEL_STEP,
    ORIGIN,
    PROFILE,
    PROFILE_NAMES,
    QUANTILE_NAMES,
    SERVER_NAME,
    STATE,
    STATES,
    STEP,
    TIMESTAMP,
    steps,
)
from tftmon.data.resample import resample_to_model_step
from tftmon.data.simulate import simulate
from tftmon.risk import Severity, score

NORMAL_STATES = STATES[:3]  # healthy, idle, morning_spike
MORNING_SPIKE, HEAVY_LOAD = STATES[2], STATES[3]
HOUR = HORIZONS["1h"]
#: An early warning must come at least this many steps before the incident starts.
LEAD = steps(pd.Timedelta(minutes=30))


def oracle(bins: pd.DataFrame, origins: np.ndarray, horizon: int) -> pd.DataFrame:
    """The perfect forecast in risk's tidy format: from each origin (a row position in `bins`, which holds
    every server's bins in time order) the next `horizon` bins of that server, actual values as all
    quantiles."""
    server = bins[SERVER_NAME].to_numpy()
    ts = bins[TIMESTAMP].to_numpy()
    ahead = np.arange(1, horizon + 1)
    target = (origins[:, None] + ahead).ravel()
    origin_of = np.repeat(origins, horizon)
    assert (server[target] == server[origin_of]).all(), "a forecast must not run into the next server"
    assert (ts[target] - ts[origin_of] == np.tile(ahead, len(origins)) * MODEL_STEP).all(), "bins must be gapless"
    n_metrics = len(METRICS)
    values = bins[list(METRICS)].to_numpy(dtype=float)[target].ravel()
    frame = pd.DataFrame(
        {
            SERVER_NAME: np.repeat(server[target], n_metrics),
            PROFILE: np.repeat(bins[PROFILE].to_numpy()[target], n_metrics),
            ORIGIN: np.repeat(ts[origin_of], n_metrics),
            STEP: np.repeat(np.tile(ahead, len(origins)), n_metrics),
            TIMESTAMP: np.repeat(ts[target], n_metrics),
            METRIC: np.tile(np.asarray(METRICS, dtype=object), len(target)),
            **{q: values for q in QUANTILE_NAMES},
        }
    )
    return frame[list(FORECAST_COLUMNS)]


def scored_bins(config: SimulationConfig) -> pd.DataFrame:
    """Simulated 5-min bins, each with the severity of a one-step oracle forecast of it (the origin is the
    bin before; a server's first bin has none) and where it sits in its state run."""
    bins = resample_to_model_step(simulate(config)).reset_index(drop=True)
    server = bins[SERVER_NAME].to_numpy()
    origins = np.flatnonzero(server[1:] == server[:-1])
    scored = score(oracle(bins, origins, 1))
    assert (scored[ORIGIN].to_numpy() == bins[TIMESTAMP].to_numpy()[origins]).all()
    bins["severity"] = None
    bins.loc[origins + 1, "severity"] = scored["severity"].to_numpy()
    state = bins[STATE].to_numpy()
    bins["run_start"] = np.r_[True, (state[1:] != state[:-1]) | (server[1:] != server[:-1])]
    return bins


def incident_starts(bins: pd.DataFrame, before: int, after: int) -> np.ndarray:
    """Row positions where a critical_issue episode starts with `before` bins of the same server before it
    and `after` bins after it."""
    server = bins[SERVER_NAME].to_numpy()
    starts = np.flatnonzero(bins["run_start"].to_numpy() & (bins[STATE].to_numpy() == INCIDENT_STATE))
    starts = starts[(starts >= before) & (starts + after < len(bins))]
    return starts[(server[starts - before] == server[starts]) & (server[starts + after] == server[starts])]


def share(severity: pd.Series, *levels: Severity) -> float:
    return float(severity.isin([s.value for s in levels]).mean())


@pytest.fixture(scope="module")
def week() -> pd.DataFrame:
    """A week of an 18-server fleet (every profile): 288 critical_issue bins in 43 episodes."""
    return scored_bins(SimulationConfig(servers=18, hours=7 * 24, seed=42))


@pytest.fixture(scope="module")
def incidents() -> pd.DataFrame:
    """Every server of a 28-server fleet forced through ramp -> 30 min critical -> recovery: each profile's
    incident signature, at night (low background activity: the hardest case)."""
    config = SimulationConfig(
        servers=28, hours=4.5, scenario="critical", scenario_fraction=1.0, scenario_start_hours=1.0, seed=42
    )
    return scored_bins(config)


def test_oracle_calls_simulated_incidents_critical(week: pd.DataFrame) -> None:
    crit = week[week[STATE] == INCIDENT_STATE]["severity"]
    assert len(crit) >= 200
    assert share(crit, Severity.CRITICAL) >= 0.93  # measured 0.972 (seeds 1-7: 0.95-0.99); was 0.108
    assert share(crit, Severity.HEALTHY) == 0


def test_every_profile_has_an_incident_signature_that_reaches_critical(incidents: pd.DataFrame) -> None:
    crit = incidents[incidents[STATE] == INCIDENT_STATE]
    by_profile = crit.groupby(PROFILE)["severity"].apply(share, Severity.CRITICAL)
    assert set(by_profile.index) == set(PROFILE_NAMES)
    # measured: database 0.87 (iowait dips under 50 % at night), data_ingest 0.89, the rest 1.0
    assert (by_profile >= 0.75).all(), by_profile.to_dict()
    assert share(crit["severity"], Severity.CRITICAL) >= 0.9  # measured 0.964


def test_oracle_keeps_normal_hours_healthy(week: pd.DataFrame) -> None:
    normal = week[week[STATE].isin(NORMAL_STATES) & week["severity"].notna()]
    assert len(normal) > 30_000
    # measured 0.0041 (seeds 1-7: 0.002-0.008): CLOSE_WAIT and iowait cascading from a troubled upstream
    assert 1 - share(normal["severity"], Severity.HEALTHY) < 0.015
    assert share(normal["severity"], Severity.CRITICAL) < 0.001  # measured 0
    morning = normal[normal[STATE] == MORNING_SPIKE]["severity"]
    assert 1 - share(morning, Severity.HEALTHY) < 0.03  # measured 0 (seeds 1-7: up to 0.017)


def test_ramps_rise_through_warning_before_an_incident(week: pd.DataFrame) -> None:
    """The lead-up a forecaster can see: mostly warning by the end of the ramp, rarely critical before."""
    starts = incident_starts(week, before=steps(pd.Timedelta(hours=2)), after=0)
    severity = week["severity"].to_numpy()
    last_15_min = pd.Series(severity[(starts[:, None] - np.arange(1, 4)).ravel()])
    assert share(last_15_min, Severity.WARNING, Severity.CRITICAL) >= 0.85  # measured 0.91
    assert share(last_15_min, Severity.WARNING) >= 0.55  # measured 0.66 (critical 0.26)
    at_lead = pd.Series(severity[starts - LEAD])
    assert share(at_lead, Severity.WARNING, Severity.CRITICAL) >= 0.6  # measured 0.70 at 30 min before
    heavy = week[week[STATE] == HEAVY_LOAD]["severity"]
    assert share(heavy, Severity.CRITICAL) < 0.08  # measured 0.030
    assert share(heavy, Severity.WARNING, Severity.CRITICAL) >= 0.3  # measured 0.40: ramps start healthy


@pytest.mark.parametrize("fleet", ["week", "incidents"])
def test_oracle_early_warning_ceiling(fleet: str, request: pytest.FixtureRequest) -> None:
    """Share of incidents a perfect 1 h forecast alerts critical at least 30 min ahead: the ceiling of a
    model's early-warning recall. From origin start - 30 min the hour ahead holds the first 30 min of the
    incident, so the ceiling is set by how reliably incidents score critical, not by the ramp."""
    bins: pd.DataFrame = request.getfixturevalue(fleet)
    starts = incident_starts(bins, before=HOUR, after=HOUR - LEAD)
    assert len(starts) >= 25
    window = np.arange(LEAD, HOUR + 1)  # origins from start - 1 h to start - 30 min
    origins = (starts[:, None] - window).ravel()
    severity = score(oracle(bins, origins, HOUR))["severity"].to_numpy()
    # score sorts by (server, origin): put each episode's origins back together
    order = np.lexsort((bins[TIMESTAMP].to_numpy()[origins], bins[SERVER_NAME].to_numpy()[origins]))
    by_origin = np.empty(len(origins), dtype=object)
    by_origin[order] = severity
    warned = (by_origin.reshape(len(starts), len(window)) == Severity.CRITICAL.value).any(axis=1)
    assert warned.mean() >= 0.95  # measured 1.0 on both fleets
